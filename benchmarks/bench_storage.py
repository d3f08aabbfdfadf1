"""Run storage: what keeping a run in S3 (moto's S3-compatible server on 127.0.0.1) costs against
local disk, side by side in one run.

    python benchmarks/bench_storage.py [--trials 8] [--epochs 3] [--repeats 2]

1. The storage operations a search makes, each timed on both: writing a trial record (as every
   epoch does), copying a trial's weights into the run (the driver's copy of Tune's checkpoint),
   and reading every record back (what `show`/`report` and the progress line do).
2. The same search twice per round, local then S3, `--repeats` rounds, with one Ray started once:
   `--trials` trials of `--epochs` epochs through the real searcher, callbacks (records,
   TensorBoard, progress) and Tune checkpoints of real weights, but an idle trainable (no
   training), so that the difference is the storage. Extra wall time per trial =
   (best S3 search - best local search) / trials.
The server runs on loopback: a real bucket adds its network round trips to every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import FAKE_CREDENTIALS, MotoS3  # noqa: E402  (the tests' loopback server)


def idle_trainable(config: dict) -> None:
    """Reports every epoch and a final checkpoint of the architecture's real (untrained) weights,
    as the real trainable does, without training."""
    import tempfile
    from pathlib import Path

    import ray
    import torch
    from ray import tune

    from nas.searcher import DIVERGED_KEY, FAILED_KEY, FINAL_KEY
    from nas.trainable import NODE_KEY, WEIGHTS_FILE
    from search_spaces.architecture import Architecture
    from search_spaces.model import build_model

    epochs = config["trial"]["train"]["epochs"]
    node = ray.get_runtime_context().get_node_id()
    for epoch in range(1, epochs + 1):
        row = {"epoch": float(epoch), "gap": 0.1 / epoch, "fit_full": 0.5, "val_acc": 0.5,
               "train_loss_full": 1.0, FINAL_KEY: float(epoch == epochs), DIVERGED_KEY: 0.0,
               FAILED_KEY: 0.0, NODE_KEY: node}
        if epoch < epochs:
            tune.report(row)
            continue
        state = build_model(Architecture.from_dict(config["arch"])).state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / WEIGHTS_FILE)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(tmp))


def timed(call, repeat: int) -> float:
    """Median seconds of `call()` over `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def storage_operations(locations: dict[str, str], folder: Path) -> dict[str, dict[str, float]]:
    import pyarrow.fs
    import torch

    from results.run_directory import RunDirectory, new_record
    from search_spaces.model import build_model
    from search_spaces.space import default_space

    arch = default_space().replace(resolution=16).smallest()[0]
    weights = folder / "model.pt"
    torch.save(build_model(arch).state_dict(), weights)
    history = [{"epoch": float(e), **{f"metric_{i}": 0.5 for i in range(20)}} for e in (1, 2, 3)]
    record = new_record("t0", 0, "running", arch.to_dict(), arch.arch_id, arch.layout,
                        {"params": 1, "flops": 1, "resolution": 16}, 3, history=history)
    out: dict[str, dict[str, float]] = {}
    for kind, location in locations.items():
        store = RunDirectory(location, writer=True)
        for i in range(20):
            store.write_record({**record, "trial_id": f"t{i}", "number": i})
        reader = RunDirectory(location)
        # the checkpoint Tune uploads, and the driver's copy of it into RUN/weights
        source_fs, source = pyarrow.fs.LocalFileSystem(), str(weights)
        if kind == "S3":
            store.storage.upload("ray/checkpoint/model.pt", weights)
            source_fs, source = store.storage.remote.fs, store.storage.remote.path(
                "ray/checkpoint/model.pt")
        out[kind] = {
            "write a trial record": timed(lambda: store.write_record(record), 30),
            f"copy weights into the run ({weights.stat().st_size / 2**20:.1f} MiB)":
                timed(lambda: store.save_weights("t0", source, source_fs), 10),
            "read 20 records back (show, report)": timed(reader.read_records, 10),
        }
    return out


def searches(locations: dict[str, str], trials: int, epochs: int, repeats: int,
             folder: Path) -> dict[str, list[float]]:
    import ray

    from nas.config import SearchConfig
    from nas.search import search
    from results.storage import join

    config = SearchConfig.from_dict({
        "name": "bench", "space": "digits", "num_trials": trials,
        "trial": {"data": "digits", "resolution": 16, "train": {"epochs": epochs}},
        "budget": {"max_flops": 2_500_000}, "scheduler": {"name": "none"},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2}})
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    walls: dict[str, list[float]] = {kind: [] for kind in locations}
    try:
        for round_ in range(repeats):
            for kind, location in locations.items():
                summary = search(config, run_dir=join(location, f"search-{round_}"),
                                 trainable=idle_trainable)
                assert summary.counts["completed"] == trials, summary.counts
                walls[kind].append(summary.data["wall_time_s"])
    finally:
        ray.shutdown()
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (local, S3) searches")
    args = parser.parse_args()
    os.environ.update(FAKE_CREDENTIALS)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["HYBRID_NAS_RUN_CACHE"] = str(folder / "cache")
        server = MotoS3(folder)
        try:
            locations = {"local": str(folder / "local"), "S3": server.uri("bench")}
            ops = storage_operations({k: f"{v}-ops" if k == "local" else
                                      server.uri("bench-ops") for k, v in locations.items()}, folder)
            walls = searches(locations, args.trials, args.epochs, args.repeats, folder)
        finally:
            server.close()

    print("storage operation (median)                     local        S3      extra")
    for name in ops["local"]:
        local, s3 = ops["local"][name] * 1e3, ops["S3"][name] * 1e3
        print(f"  {name:<44} {local:7.1f} ms {s3:7.1f} ms {s3 - local:+8.1f} ms")
    best = {kind: min(values) for kind, values in walls.items()}
    per_trial = (best["S3"] - best["local"]) / args.trials
    print(f"search of {args.trials} trials x {args.epochs} epochs, idle trainable, 2 at a time "
          f"(best of {args.repeats}; all: " + ", ".join(
              f"{k} {' / '.join(f'{w:.1f}' for w in v)} s" for k, v in walls.items()) + ")")
    print(f"  local {best['local']:.1f} s, S3 {best['S3']:.1f} s: "
          f"{per_trial:+.2f} s per trial for S3 ({best['S3'] / best['local']:.2f}x the wall time)")


if __name__ == "__main__":
    main()
