"""Anonymous memory of whole searches: image folders of several sizes (256x256 JPEGs, 10 classes,
searched at 224 px, 2 trials at a time) against the built-in digits search, in one run.

Each search runs as its own process (`hybrid-nas search CONFIG`, a fresh data cache, so the folder
searches include decoding it). Every 0.5 s the script reads /proc/<pid>/smaps_rollup of every
process in the search's tree (the driver, its decoding workers, Ray's GCS, raylet and trial
workers) and sums Pss_Anon: anonymous memory with pages shared between processes counted once
(RssAnon is summed too, for reference). The peak of that sum is the search's anonymous memory.
The folder searches use a small inline space and few steps per epoch so that they finish in
minutes; the default trial trains both regimes (small-data and full) per trial.

    python benchmarks/bench_data_search_memory.py [--dir DIR] [--sizes 2000 20000] [--no-digits]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from nas.config import default_config
from synthetic_images import linked_subset, write_folder

REPO = Path(__file__).resolve().parents[1]
SEARCH = "import sys; from nas.cli import main; sys.exit(main(sys.argv[1:]))"


def folder_search(name: str, folder: Path, cache: Path, out: Path) -> dict:
    """A 224 px search over `folder`: 4 small networks (8x8 patch stem, 3 stages), 2 epochs of 5
    steps of 32 images in each regime, 2 trials at a time."""
    return {
        "name": name,
        "space": {
            "resolution": 224, "in_channels": 3, "num_classes": 10,
            "rules": {"conv_before_attention": True},
            "stem": {"kind": ["patch"], "width": [32], "patch_size": [8]},  # 28x28 after the stem
            "stages": [
                {"block": ["C"], "depth": [1, 1], "width": [32], "stride": 1},
                {"block": ["C", "T"], "depth": [1, 1], "width": [48, 64], "head_size": [16], "stride": 2},
                {"block": ["C", "T"], "depth": [1, 1], "width": [96], "head_size": [32], "stride": 2},
            ],
        },
        "trial": {"data": "imagefolder", "data_path": str(folder), "resolution": 224, "val_fraction": 0.02,
                  "small_per_class": 20, "cache_dir": str(cache),
                  "train": {"epochs": 2, "batch_size": 32, "steps_per_epoch": 5, "warmup_epochs": 0.5,
                            "train_eval_images": 256, "eval_batch_size": 64}},
        "num_trials": 4,
        "sampler": {"name": "tpe", "seed": 0, "startup_trials": 4},
        "scheduler": {"name": "none"},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
        "out_dir": str(out), "keep_weights": False,
    }


def tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def role(pid: int, root: int) -> str:
    """What a process of the search is: the driver, its decoding workers (forked from it),
    a Ray trial worker, or one of Ray's own processes."""
    if pid == root:
        return "driver"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if parent == root and command == Path(f"/proc/{root}/cmdline").read_bytes():
            return "decoders"
    except OSError:
        return "ray"
    return "trials" if command.startswith(b"ray::") else "ray"


def anonymous_kb(pids: list[int], root: int) -> dict[str, int]:
    """Sums over `pids` (kB): Pss_Anon (also per role) and Anonymous (= RssAnon)."""
    sums = {"pss_anon": 0, "rss_anon": 0}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Pss_Anon:"):
                sums["pss_anon"] += int(line.split()[1])
                name = role(pid, root)
                sums[name] = sums.get(name, 0) + int(line.split()[1])
            elif line.startswith("Anonymous:"):
                sums["rss_anon"] += int(line.split()[1])
    return sums


def run_search(config: dict, work: Path, log: Path) -> dict:
    """Run one search to its end, sampling its tree; returns peaks (kB), seconds and process count."""
    path = work / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    with open(log, "w") as output:
        search = subprocess.Popen([sys.executable, "-c", SEARCH, "search", str(path)], cwd=work,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        peak = {"pss_anon": 0, "rss_anon": 0, "processes": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                pids = tree(search.pid)
                for name, value in {**anonymous_kb(pids, search.pid), "processes": len(pids)}.items():
                    peak[name] = max(peak.get(name, 0), value)
                done.wait(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            code = search.wait()
        except BaseException:  # interrupted: stop the search and the Ray processes it started
            os.killpg(search.pid, signal.SIGTERM)
            raise
        finally:
            done.set()
            sampler.join()
    if code != 0:
        raise SystemExit(f"search {config['name']} failed (exit {code}); see {log}")
    return {**peak, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where the images, caches and runs go (default: a temp dir)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--no-digits", action="store_true", help="skip the built-in digits search")
    args = parser.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-search-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    source = write_folder(work / "source", max(args.sizes))
    results = {}
    if not args.no_digits:
        digits = default_config().to_dict()
        digits["out_dir"] = str(work / "runs")
        results["digits (built-in)"] = run_search(digits, work, work / "digits.log")
    for size in sorted(args.sizes):
        folder = source if size == max(args.sizes) else linked_subset(source, work / f"folder{size}", size)
        cache = work / f"cache{size}"
        shutil.rmtree(cache, ignore_errors=True)
        config = folder_search(f"folder{size}", folder, cache, work / "runs")
        results[f"{size:,} JPEGs at 224 px"] = run_search(config, work, work / f"folder{size}.log")
    print(f"\npeak anonymous memory of the search's process tree (sum of Pss_Anon; RssAnon), "
          f"{os.cpu_count()} CPUs:")
    base = results.get("digits (built-in)")
    for name, r in results.items():
        extra = f"  {(r['pss_anon'] - base['pss_anon']) / 2 ** 20:+.2f} GiB vs digits" if base else ""
        roles = ", ".join(f"{k} {r[k] / 1024:.0f}" for k in ("driver", "decoders", "trials", "ray") if k in r)
        print(f"  {name:22} {r['pss_anon'] / 2 ** 20:6.2f} GiB ({r['rss_anon'] / 2 ** 20:5.2f})  "
              f"{r['processes']:3d} processes  {r['seconds']:5.0f} s{extra}\n"
              f"  {'':22} peaks by role, MB: {roles}")
    sizes = sorted(args.sizes)
    if len(sizes) >= 2:
        small, large = (results[f"{s:,} JPEGs at 224 px"]["pss_anon"] for s in (sizes[0], sizes[-1]))
        per_image = (large - small) * 1024 / (sizes[-1] - sizes[0])
        print(f"  growth {sizes[0]:,} -> {sizes[-1]:,} images: {(large - small) / 1024:+.0f} MB "
              f"({per_image:,.0f} bytes/image); at that rate 200,000 images add "
              f"{per_image * (200000 - sizes[-1]) / 2 ** 20:+.0f} MB to the {sizes[-1]:,}-image figure")
    print(f"logs and runs: {work}")


if __name__ == "__main__":
    main()
