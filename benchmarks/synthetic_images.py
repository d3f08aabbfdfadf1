"""A learnable image folder for the data benchmarks: `root/<class>/<n>.jpg`, square JPEGs of
random noise over a class-dependent colour and stripe pattern (a model can tell the classes apart,
and no two files are alike). Written in parallel worker processes; an existing complete folder is
reused.

    python benchmarks/synthetic_images.py DIR --images 20000 [--classes 10] [--side 256]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHUNK = 250


def class_pattern(label: int, classes: int, side: int) -> np.ndarray:
    """(side, side, 3) float: a hue per class and stripes whose angle and period depend on it."""
    hue = 2 * np.pi * label / classes
    colour = 128 + 80 * np.array([np.cos(hue), np.cos(hue - 2.1), np.cos(hue + 2.1)])
    ys, xs = np.mgrid[0:side, 0:side]
    angle = np.pi * label / classes
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / (8 + 3 * label))
    return colour[None, None, :] + 40 * stripes[:, :, None]


def _write_chunk(root: str, start: int, count: int, classes: int, side: int) -> int:
    patterns = [class_pattern(label, classes, side) for label in range(classes)]
    rng = np.random.default_rng(start)
    for n in range(start, start + count):
        label = n % classes
        noise = rng.normal(0, 30, (side, side, 3))
        image = np.clip(patterns[label] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(root, f"class{label:02d}", f"{n:06d}.jpg"), quality=85)
    return count


def write_folder(root: str | Path, images: int, classes: int = 10, side: int = 256,
                 workers: int | None = None) -> Path:
    """Write (or reuse, when it already holds `images` files) the folder; returns its path."""
    root = Path(root)
    if root.is_dir() and sum(1 for _ in root.glob("*/*.jpg")) == images:
        return root
    for label in range(classes):
        (root / f"class{label:02d}").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        jobs = [pool.submit(_write_chunk, str(root), start, min(CHUNK, images - start), classes, side)
                for start in range(0, images, CHUNK)]
        written = sum(job.result() for job in jobs)
    print(f"wrote {written:,} {side}x{side} JPEGs in {time.perf_counter() - started:.0f} s -> {root}",
          flush=True)
    return root


def linked_subset(source: Path, target: Path, count: int) -> Path:
    """A folder of the first `count` images of `source` (hard links: its own listing, no copies)."""
    if target.is_dir() and sum(1 for _ in target.glob("*/*.jpg")) == count:
        return target
    shutil.rmtree(target, ignore_errors=True)
    for file in sorted(source.glob("*/*.jpg"), key=lambda f: f.name)[:count]:
        (target / file.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(file, target / file.parent.name / file.name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args()
    write_folder(args.root, args.images, args.classes, args.side)


if __name__ == "__main__":
    main()
