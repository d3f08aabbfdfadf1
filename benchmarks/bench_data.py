"""The data path at 224 px, side by side in one run: (1) the first decode of an image folder into
the data cache against a start from the cache; (2) images/s of the input pipeline (gather from
the mapped uint8 array, normalise, augment) against images/s the trainer consumes for a small
model and a CoAtNet-0; (3) a trial worker's resident and shared memory against the data set's size.

Images are generated (benchmarks/synthetic_images.py: 256x256 JPEGs, 10 classes) under --dir and
reused there. The pipeline and trainers are timed interleaved, in shuffled order each round, and
the medians compared (the machine is shared). Memory: two worker processes per size map the same
cache entry at once; each loads the data, trains a few steps and evaluates every image, sampling
its own /proc/self/smaps_rollup for the peaks.

    python benchmarks/bench_data.py [--dir DIR] [--images 2000] [--sizes 500 2000 8000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from evaluators.augment import Augment
from evaluators.batches import BatchLoader
from evaluators.data import load_data, prepare_data
from evaluators.trainer import TrainConfig, Trainer, channels_last
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.presets import get_preset
from synthetic_images import linked_subset, write_folder

RESOLUTION = 224
REPO = Path(__file__).resolve().parents[1]


def small_arch() -> Architecture:
    """The kind of network a CPU search at 224 px trains (the search memory benchmark's): an 8x8
    patch stem and C-C-T stages, ~25 MFLOPs; the smaller the model, the more the input costs."""
    return Architecture(Stem("patch", 32, patch_size=8),
                        (Stage("C", 1, 32, stride=1), Stage("C", 1, 48), Stage("T", 1, 96, head_size=32)),
                        resolution=RESOLUTION, in_channels=3, num_classes=10)


def startup(folder: Path, cache: Path, workers: int | None) -> tuple[float, float]:
    """Seconds of load_data with an empty cache (decodes) and then again (maps the entry)."""
    shutil.rmtree(cache, ignore_errors=True)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        load_data("imagefolder", RESOLUTION, path=folder, cache_dir=cache, decode_workers=workers)
        times.append(time.perf_counter() - started)
    return times[0], times[1]


def throughput(folder: Path, cache: Path, threads: int, rounds: int) -> dict[str, float]:
    """images/s: the input pipeline alone (batches of 32) and the trainer's optimiser steps."""
    torch.set_num_threads(threads)
    data = load_data("imagefolder", RESOLUTION, path=folder, cache_dir=cache)
    loader, augment = BatchLoader(data.mean, data.std), Augment(RESOLUTION // 8, flip=True)
    generator = torch.Generator().manual_seed(0)

    def pipeline(batches: int = 4, batch: int = 32) -> tuple[int, float]:
        started = time.perf_counter()
        for _ in range(batches):
            positions = torch.randint(0, len(data.train), (batch,), generator=generator)
            x, _ = loader.load(data.train, positions)
            channels_last(augment(x, generator))
        return batches * batch, time.perf_counter() - started

    trainers = {"small model": Trainer(small_arch(), data,
                                       TrainConfig(batch_size=32, threads=threads, device="cpu")),
                "CoAtNet-0": Trainer(get_preset("coatnet-0", resolution=RESOLUTION, num_classes=10), data,
                                     TrainConfig(batch_size=8, threads=threads, device="cpu"))}

    def trainer_step(trainer: Trainer) -> tuple[int, float]:
        return trainer.batch_size, trainer.train_steps(1)[1]

    runners = {"input pipeline": pipeline,
               **{name: (lambda t=trainer: trainer_step(t)) for name, trainer in trainers.items()}}
    for run in runners.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    order = random.Random(0)
    for _ in range(rounds):
        names = list(runners)
        order.shuffle(names)
        for name in names:
            images, seconds = runners[name]()
            rates[name].append(images / seconds)
    return {name: statistics.median(r) for name, r in rates.items()}


WORKER = """
import json, sys, threading, time
import torch
torch.set_num_threads(1)
from evaluators.data import load_data
from evaluators.trainer import TrainConfig, Trainer
from search_spaces.architecture import Architecture, Stage, Stem

FIELDS = ("Rss", "Pss_Anon", "Pss_File", "Anonymous", "Shared_Clean")
def rollup():
    values = {}
    for line in open("/proc/self/smaps_rollup"):
        name, _, rest = line.partition(":")
        if name in FIELDS:
            values[name] = int(rest.split()[0])
    return values

peak, running = {}, True
def sample():
    while running:
        for k, v in rollup().items():
            peak[k] = max(v, peak.get(k, 0))
        time.sleep(0.05)

arch = Architecture(Stem("patch", 32, patch_size=16), (Stage("C", 1, 32, stride=1),), resolution=224,
                    in_channels=3, num_classes=10)
threading.Thread(target=sample, daemon=True).start()
data = load_data("imagefolder", 224, path=sys.argv[1], cache_dir=sys.argv[2])
trainer = Trainer(arch, data, TrainConfig(epochs=1, steps_per_epoch=4, batch_size=32, eval_batch_size=64))
trainer.run_epoch()  # 4 steps, then every training and validation image through the model
running = False
time.sleep(0.1)
print(json.dumps(peak))
"""


def worker_memory(folder: Path, cache: Path) -> list[dict[str, int]]:
    """Peak smaps_rollup fields (kB) of two workers running at once on the same entry."""
    prepare_data("imagefolder", RESOLUTION, folder, cache_dir=cache)  # decoded before, not measured
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", WORKER, str(folder), str(cache)]
    workers = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True) for _ in range(2)]
    return [json.loads(w.communicate()[0].splitlines()[-1]) for w in workers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where the generated images and caches live (default: a temp dir)")
    parser.add_argument("--images", type=int, default=2000,
                        help="images for the start-up and throughput parts")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the timed trainers")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: every CPU)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-data-"))
    source = write_folder(work / "source", max(args.sizes + [args.images]))
    folder = linked_subset(source, work / f"folder{args.images}", args.images)

    first, cached = startup(folder, work / "startup-cache", args.workers)
    print(f"\n{args.images:,} JPEGs of 256x256 at {RESOLUTION} px, {os.cpu_count()} CPUs")
    print(f"start-up: first load (decode into the cache) {first:.1f} s, cached load {cached:.3f} s "
          f"({first / cached:,.0f}x faster)")

    rates = throughput(folder, work / "startup-cache", args.threads, args.rounds)
    pipeline = rates.pop("input pipeline")
    print(f"\nimages/s, {args.threads} torch thread(s), medians of {args.rounds} shuffled rounds:")
    print(f"  input pipeline (gather uint8, normalise, crop+flip): {pipeline:8.0f} images/s")
    for name, rate in rates.items():
        print(f"  trainer, {name:12}: {rate:8.1f} images/s   pipeline / trainer = {pipeline / rate:6.1f}x")

    print("\nper worker, two workers at once on one entry (peaks, MB): data size -> anonymous "
          "(Pss_Anon), mapped cache pages (Pss_File; Shared_Clean), RSS; old design's float32 copy")
    for size in args.sizes:
        subset = linked_subset(source, work / f"folder{size}", size)
        readings = worker_memory(subset, work / "memory-cache")
        float_mb = size * 3 * RESOLUTION ** 2 * 4 / 2 ** 20
        cache_mb = size * 3 * RESOLUTION ** 2 / 2 ** 20
        for n, r in enumerate(readings):
            print(f"  {size:6,} images (cache {cache_mb:6.0f} MB), worker {n}: "
                  f"anon {r['Pss_Anon'] / 1024:6.0f}  "
                  f"file {r['Pss_File'] / 1024:6.0f} (shared {r['Shared_Clean'] / 1024:6.0f})  "
                  f"rss {r['Rss'] / 1024:6.0f}   float32 in memory would be {float_mb:6.0f}")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
