"""Issue 24's done-when search, inside a memory cgroup: an image folder of 20,000 JPEGs (256x256,
10 classes) searched at 224 px, the `digits` space, batch 32, 2 trials at a time, then 4 at a time
(with 0.5 CPU per trial, so that the 2 CPUs here would allow 4 and memory is what limits), in a
cgroup whose memory limit is 8 GiB, every other memory setting at its default (budget.max_memory
from the machine, eval_batch_size 512 followed by memory).

To finish on 2 busy cores, each trial trains 1 epoch of 2 steps per regime, measures training
loss on 256 images (train_eval_images) and validates on 2% of the folder (400 images): these set
how many steps and evaluation chunks a trial takes, not how large each one is, so they do not
lower a trial's peak memory.

The search runs as its own process placed in a new child of this process's memory cgroup (v1
memory.limit_in_bytes or v2 memory.max; root is needed to make one); the cgroup's peak usage
(v1 memory.max_usage_in_bytes, v2 memory.peak) and its OOM kills (memory.oom_control /
memory.events) are read when the search ends. Writes benchmarks/results/memory_search.csv.

    python benchmarks/bench_memory_search.py [--dir /work/memdata] [--concurrency 2 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from synthetic_images import write_folder

REPO = Path(__file__).resolve().parents[1]
SEARCH = "import sys; from nas.cli import main; sys.exit(main(sys.argv[1:]))"
GiB = 2 ** 30


def search_config(name: str, folder: Path, cache: Path, out: Path, concurrency: int) -> dict:
    return {
        "name": name,
        "space": "digits",
        "trial": {"data": "imagefolder", "data_path": str(folder), "resolution": 224,
                  "val_fraction": 0.02, "cache_dir": str(cache),
                  "train": {"epochs": 1, "batch_size": 32, "steps_per_epoch": 2,
                            "train_eval_images": 256}},
        "num_trials": concurrency,
        "resources": {"cpus_per_trial": 1.0 if concurrency <= 2 else 0.5,
                      "max_concurrent_trials": concurrency},
        "out_dir": str(out),
        "keep_weights": False,
    }


class MemoryCgroup:
    """A child of this process's memory cgroup with a memory limit (v1 or v2)."""

    def __init__(self, name: str, limit: int):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                self.v2, base = False, Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                break
        else:
            path = next(line.split(":", 2)[2] for line in
                        Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
            self.v2, base = True, Path("/sys/fs/cgroup") / path.lstrip("/")
        self.path = base / name
        self.path.mkdir()
        limit_file = "memory.max" if self.v2 else "memory.limit_in_bytes"
        (self.path / limit_file).write_text(str(limit))

    def enter(self) -> None:
        """Move the calling process in (for a child's preexec_fn)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text().split()[0])

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError as exc:
            print(f"cgroup {self.path} left in place: {exc}", flush=True)


def run(config: dict, work: Path, limit: int) -> dict:
    path = work / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = work / f"{config['name']}.log"
    group = MemoryCgroup(f"hnas-{config['name']}-{os.getpid()}", limit)
    started = time.perf_counter()
    try:
        with open(log, "w") as output:
            code = subprocess.run([sys.executable, "-c", SEARCH, "search", str(path)], cwd=work,
                                  stdout=output, stderr=subprocess.STDOUT,
                                  preexec_fn=group.enter,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
        seconds = time.perf_counter() - started
        peak, kills = group.peak(), group.oom_kills()
    finally:
        time.sleep(2)  # Ray's processes leave with the driver
        group.remove()
    runs = sorted(Path(config["out_dir"]).glob(f"*-{config['name']}*"))
    records = [json.loads(p.read_text()) for p in sorted((runs[-1] / "trials").glob("*.json"))] \
        if runs else []
    trained = [r for r in records if r["status"] != "rejected"]
    lines = [line for line in log.read_text().splitlines() if line.startswith("memory:")]
    return {
        "search": config["name"], "max_concurrent_trials": config["resources"]["max_concurrent_trials"],
        "exit_code": code, "seconds": round(seconds),
        "cgroup_limit_gib": round(limit / GiB, 2), "cgroup_peak_gib": round(peak / GiB, 2),
        "oom_kills": kills,
        "trained": len(trained),
        "completed": sum(r["status"] == "completed" for r in trained),
        "failed": sum(r["status"] == "failed" for r in trained),
        "rejected_over_memory": sum(r["status"] == "rejected"
                                    and "memory" in (r.get("rejection") or "") for r in records),
        "priced_peaks_gib": " ".join(f"{r['cost']['memory']['peak_bytes'] / GiB:.2f}"
                                     for r in trained if "memory" in r["cost"]),
        "observed_peaks_gib": " ".join(f"{r['metrics'].get('memory_peak_bytes', float('nan')) / GiB:.2f}"
                                       for r in trained),
        "eval_chunks": " ".join(str(r["cost"]["memory"]["eval_chunk"])
                                for r in trained if "memory" in r["cost"]),
        "memory_lines": " | ".join(lines),
        "log": str(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/work/memdata")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--limit-gib", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory_search.csv"))
    args = parser.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    folder = write_folder(work / "jpegs20k", args.images)
    rows = []
    for n in args.concurrency:
        config = search_config(f"mem{n}", folder, work / "cache", work / "runs", n)
        row = run(config, work, int(args.limit_gib * GiB))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    with open(out, "w", newline="") as f:
        f.write(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs; "
                f"{args.images} JPEGs at 224 px, digits space, batch 32, cgroup "
                f"{args.limit_gib} GiB\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
