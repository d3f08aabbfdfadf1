"""Decode image files into the rows of an on-disk uint8 array, in parallel worker processes,
with a progress line and the images/s printed.

Workers write their rows straight into the memory-mapped array (no pixels travel between
processes) and send back only each image's per-channel sums. On Linux the workers are forked, as
torch's DataLoader does by default: they only run PIL and numpy, and need no `__main__` guard in
the caller's script (spawned workers would re-run an unguarded one).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from evaluators.datasets.raw import DataError

CHUNK = 64  # files per task: small enough for a smooth progress line, large enough to be cheap
PARALLEL_FROM = 4 * CHUNK  # fewer files than this are decoded in the calling process


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pixel_sums(images: np.ndarray) -> np.ndarray:
    """(B, R, R, C) uint8 -> (B, 2, C) int64: per image and channel, the sum of the values and
    of their squares (exact integers)."""
    flat = images.reshape(len(images), -1, images.shape[-1]).astype(np.int64)
    return np.stack([flat.sum(axis=1), (flat * flat).sum(axis=1)], axis=1)


class Progress:
    """`what: [#####.....] 45% 9,000/20,000 images, 812 images/s` on stderr: redrawn in place on
    a terminal, a line every `every_s` seconds otherwise; `finish` prints the total rate."""

    def __init__(self, total: int, what: str, every_s: float | None = None, stream=None):
        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s if every_s is not None else (0.5 if self.tty else 10.0)
        self.done, self.started = 0, time.perf_counter()
        self.processes = 1  # the most decoding processes used
        self._shown = self.started

    def advance(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self._shown >= self.every_s:
            self._shown = now
            self._print(self._line(now), end="\r" if self.tty else "\n")

    def finish(self, note: str = "") -> float:
        """Print the closing line; returns the seconds taken."""
        seconds = time.perf_counter() - self.started
        rate = self.done / seconds if seconds > 0 else float("inf")
        self._print(f"{self.what}: decoded {self.done:,} images in {seconds:.1f} s "
                    f"({rate:,.0f} images/s, {self.processes} process{'es' if self.processes > 1 else ''})"
                    f"{note}", end="\n")
        return seconds

    def _line(self, now: float) -> str:
        share = self.done / max(1, self.total)
        bar = "#" * round(20 * share) + "." * (20 - round(20 * share))
        rate = self.done / max(1e-9, now - self.started)
        return (f"{self.what}: [{bar}] {100 * share:3.0f}% {self.done:,}/{self.total:,} images, "
                f"{rate:,.0f} images/s")

    def _print(self, text: str, end: str) -> None:
        print(("\r" if self.tty else "") + text, end=end, file=self.stream, flush=True)


def decode_into(images_path: Path, files: Sequence[str | Path], decode: Callable[[str | Path], np.ndarray],
                workers: int, skip_unreadable: bool, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Decode `files` into rows 0..N-1 of the .npy uint8 array at `images_path`.

    `decode(path)` returns one (R, R, C) uint8 image or raises DataError naming the file; it must
    be picklable (a module-level function or a functools.partial of one). Returns the per-image
    sums (N, 2, C) and the kept flags (N,). An unreadable file raises its DataError (the first in
    file order), or with `skip_unreadable` leaves a zero row marked not kept.
    """
    chunks = [(start, list(files[start:start + CHUNK])) for start in range(0, len(files), CHUNK)]
    channels = np.load(images_path, mmap_mode="r").shape[-1]
    sums = np.zeros((len(files), 2, channels), np.int64)
    kept = np.ones(len(files), bool)
    if workers <= 1 or len(files) < PARALLEL_FROM:
        results = (_decode_chunk(images_path, start, chunk, decode) for start, chunk in chunks)
        _collect(results, chunks, sums, kept, skip_unreadable, progress)
        return sums, kept
    processes = min(workers, len(chunks))
    progress.processes = max(progress.processes, processes)
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [pool.submit(_decode_chunk, images_path, start, chunk, decode) for start, chunk in chunks]
        try:
            _collect((future.result() for future in futures), chunks, sums, kept, skip_unreadable, progress)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return sums, kept


def _collect(results, chunks, sums: np.ndarray, kept: np.ndarray, skip_unreadable: bool,
             progress: Progress) -> None:
    """Chunk results in file order into `sums` and `kept`; the first failure raises unless skipped."""
    for (start, chunk), (chunk_sums, failures) in zip(chunks, results):
        sums[start:start + len(chunk)] = chunk_sums
        for offset, message in failures:
            if not skip_unreadable:
                raise DataError(f"{message}; set trial.skip_corrupt: true to leave unreadable images out")
            kept[start + offset] = False
        progress.advance(len(chunk))


def _decode_chunk(images_path: Path, start: int, files: list[str | Path],
                  decode: Callable[[str | Path], np.ndarray]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Worker task: decode `files` into rows start.. of the array; (sums, [(offset, error)])."""
    images = np.load(images_path, mmap_mode="r+")
    sums = np.zeros((len(files), 2, images.shape[-1]), np.int64)
    failures = []
    for offset, path in enumerate(files):
        try:
            image = decode(path)
        except DataError as exc:
            failures.append((offset, str(exc)))
            continue
        images[start + offset] = image
        sums[offset] = pixel_sums(image[None])[0]
    images.flush()
    del images
    return sums, failures
