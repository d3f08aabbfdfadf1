"""The on-disk data cache: a data set decoded once into memory-mappable uint8 arrays that every
process on the machine maps (the operating system keeps one copy of the pages for all of them).

One entry per (data set folder, its file list with sizes and mtimes, resolution, channels)::

    CACHE_DIR/<kind>-<folder>-<path hash>-<R>px-<C>ch-<content hash>/
        meta.json            written last: the entry is complete when it names this key
        files.json           the source files behind the key, and the file of every row
        <split>-images.npy   (N, R, R, C) uint8, channels last
        <split>-labels.npy   (N,) int64
        <split>-sums.npy     (N, 2, C) int64: per image and channel, the sum of the pixel values
                             and of their squares (any subset's mean/std without reading pixels)
        <split>-kept.npy     (N,) bool: False where an unreadable file was skipped

An entry is built in `<entry>.tmp-<pid>` under an exclusive lock (`<entry>.lock`, released by the
kernel if the builder dies), its files fsynced, meta.json written last, then the folder is renamed
into place: a killed build leaves only a temp folder, which is never read and is removed by the
next build. Only JSON and raw .npy arrays (read with allow_pickle=False) live here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from evaluators.datasets.raw import DataError

CACHE_ENV = "HYBRID_NAS_CACHE"
FORMAT_VERSION = 1
META_FILE = "meta.json"
FILES_FILE = "files.json"
SPLITS = ("train", "val")


def default_cache_dir() -> Path:
    """$HYBRID_NAS_CACHE if set, else ~/.cache/hybrid-nas/data."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "hybrid-nas" / "data"


@dataclass(frozen=True)
class CacheKey:
    """What an entry is a decoding of. sources: (path relative to root, size, mtime_ns) of every
    file read; any change to one of them (or to the list) makes a new entry."""

    kind: str
    root: Path
    resolution: int
    channels: int
    sources: tuple[tuple[str, int, int], ...]

    def digest(self) -> str:
        text = json.dumps([FORMAT_VERSION, self.kind, str(self.root), self.resolution, self.channels,
                           self.sources], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def family(self) -> str:
        """The entry name without the content hash: entries of one folder at one size and depth."""
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.root.name)[:40] or "root"
        where = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]
        return f"{self.kind}-{folder}-{where}-{self.resolution}px-{self.channels}ch"

    @property
    def entry_name(self) -> str:
        return f"{self.family}-{self.digest()[:16]}"


def file_stat(path: Path, root: Path) -> tuple[str, int, int]:
    """(path relative to root, size, mtime_ns): one source of a key."""
    stat = path.stat()
    return (path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True, eq=False)
class CachedSplit:
    """One split of an entry, memory-mapped read-only (see the module docstring for shapes)."""

    images: np.ndarray
    labels: np.ndarray
    sums: np.ndarray
    kept: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class CachedData:
    """A complete entry: its folder, class names, splits ("train", and "val" when the data set
    has its own), the source files left out as unreadable, and whether this call built it."""

    path: Path
    class_names: tuple[str, ...]
    splits: dict[str, CachedSplit]
    skipped: tuple[str, ...]
    built: bool
    meta: dict[str, Any]

    def files(self) -> dict[str, Any]:
        """files.json: {"sources": [[file, size, mtime_ns], ...], "rows": {split: [file, ...]}}."""
        return json.loads((self.path / FILES_FILE).read_text())


class CacheWriter:
    """Fills a temp entry folder: one images array per split (decoders write its rows), then the
    labels, sums and kept flags, then `commit` writes meta.json."""

    def __init__(self, folder: Path, key: CacheKey):
        self.folder, self.key = folder, key
        self._splits: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, list[str]] = {}

    def images_path(self, split: str) -> Path:
        return self.folder / f"{split}-images.npy"

    def create_images(self, split: str, count: int) -> Path:
        """Allocate the (count, R, R, C) uint8 array of `split` on disk; returns its path."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        shape = (count, self.key.resolution, self.key.resolution, self.key.channels)
        array = np.lib.format.open_memmap(self.images_path(split), mode="w+", dtype=np.uint8, shape=shape)
        del array
        return self.images_path(split)

    def finish_split(self, split: str, labels: np.ndarray, sums: np.ndarray, kept: np.ndarray,
                     rows: list[str] | None = None) -> None:
        """Labels (N,), per-image sums (N, 2, C) and kept flags (N,) of a split whose images are
        written; `rows`: the source file of each row (image folders)."""
        count = len(labels)
        if sums.shape != (count, 2, self.key.channels) or kept.shape != (count,):
            raise ValueError(f"{split}: {count} labels but sums {sums.shape} and kept {kept.shape}")
        np.save(self.folder / f"{split}-labels.npy", labels.astype(np.int64))
        np.save(self.folder / f"{split}-sums.npy", sums.astype(np.int64))
        np.save(self.folder / f"{split}-kept.npy", kept.astype(bool))
        pixels = max(1, int(kept.sum())) * self.key.resolution ** 2
        mean, std = channel_mean_std(sums[kept].sum(axis=0), pixels)
        self._splits[split] = {"count": count, "kept": int(kept.sum()), "mean": list(mean), "std": list(std)}
        if rows is not None:
            self._rows[split] = rows

    def commit(self, class_names: tuple[str, ...], skipped: list[str], decode_seconds: float) -> None:
        """Flush every file to disk, then write meta.json (the mark of a complete entry)."""
        if "train" not in self._splits:
            raise ValueError("a cache entry needs a train split")
        files = {"sources": [list(s) for s in self.key.sources], "rows": self._rows}
        (self.folder / FILES_FILE).write_text(json.dumps(files))
        for path in self.folder.iterdir():
            _fsync(path)
        meta = {"format": FORMAT_VERSION, "key": self.key.digest(), "kind": self.key.kind,
                "root": str(self.key.root), "resolution": self.key.resolution,
                "channels": self.key.channels, "class_names": list(class_names),
                "splits": self._splits, "skipped": skipped, "sources": len(self.key.sources),
                "decode_seconds": round(decode_seconds, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        temp = self.folder / (META_FILE + ".tmp")
        temp.write_text(json.dumps(meta, indent=1))
        _fsync(temp)
        temp.rename(self.folder / META_FILE)
        _fsync(self.folder)


def channel_mean_std(total: np.ndarray, pixels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std on [0, 1] pixels from summed uint8 values: `total` is
    (2, C), the sums of the values and of their squares over `pixels` pixels per channel."""
    total = np.asarray(total, dtype=np.float64)  # exact: the sums stay below 2**53
    mean = total[0] / pixels
    variance = (total[1] - total[0] * mean) / max(1, pixels - 1)
    std = np.sqrt(np.maximum(variance, 0.0)) / 255.0
    return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in std)


def open_entry(folder: Path, key: CacheKey, built: bool = False) -> CachedData | None:
    """The entry in `folder` if it is complete and is a decoding of `key`, else None."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or meta.get("key") != key.digest():
        return None
    shape = (key.resolution, key.resolution, key.channels)
    splits = {}
    try:
        for split in meta["splits"]:
            images = np.load(folder / f"{split}-images.npy", mmap_mode="r", allow_pickle=False)
            parts = [np.load(folder / f"{split}-{name}.npy", mmap_mode="r", allow_pickle=False)
                     for name in ("labels", "sums", "kept")]
            count = meta["splits"][split]["count"]
            if images.shape != (count,) + shape or images.dtype != np.uint8 or \
                    any(len(part) != count for part in parts):
                return None
            splits[split] = CachedSplit(images, *parts)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if "train" not in splits:
        return None
    return CachedData(folder, tuple(meta["class_names"]), splits, tuple(meta.get("skipped", ())),
                      built, meta)


Build = Callable[["CacheWriter"], tuple[tuple[str, ...], list[str]]]  # -> (class names, skipped files)


def cached_data(key: CacheKey, cache_dir: str | Path, build: Build) -> CachedData:
    """The complete entry for `key` under `cache_dir`, built first when there is none.

    `build(writer)` fills the entry and returns (class names, skipped files). Concurrent callers
    on one machine wait for a single builder; a failed or killed build leaves nothing that a
    later call would read.
    """
    cache_dir = Path(cache_dir).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"data cache: cannot create cache directory {cache_dir} ({exc}); "
                        f"set trial.cache_dir or ${CACHE_ENV}") from None
    entry = cache_dir / key.entry_name
    found = open_entry(entry, key)
    if found is not None:
        return found
    with _exclusive(cache_dir / f"{key.entry_name}.lock"):
        found = open_entry(entry, key)  # built by another process while this one waited
        if found is not None:
            return found
        _remove_leftovers(cache_dir, key)
        temp = cache_dir / f"{key.entry_name}.tmp-{os.getpid()}"
        temp.mkdir()
        try:
            started = time.perf_counter()
            writer = CacheWriter(temp, key)
            class_names, skipped = build(writer)
            writer.commit(class_names, skipped, time.perf_counter() - started)
            temp.rename(entry)
            _fsync(cache_dir)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    found = open_entry(entry, key, built=True)
    if found is None:
        raise DataError(f"data cache: entry {entry} was written but cannot be read back")
    return found


def _remove_leftovers(cache_dir: Path, key: CacheKey) -> None:
    """Under the entry's lock: temp folders of killed builds of this entry, an incomplete entry of
    this key, and complete entries of an earlier state of the same folder (stale: it changed).
    A process still mapping a removed entry keeps reading it until it unmaps it."""
    for path in cache_dir.glob(f"{key.family}-*"):
        building_another = ".tmp-" in path.name and not path.name.startswith(f"{key.entry_name}.tmp-")
        if path.is_dir() and not building_another:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
