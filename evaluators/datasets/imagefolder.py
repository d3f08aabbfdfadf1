"""A class-per-folder tree of .png/.jpg images in a local directory.

Expected layout (one sub-folder per class, named after it; classes sorted by name)::

    PATH/<class>/<image>.png|.jpg|.jpeg

or, with a validation split of your own, the same tree twice: PATH/train/<class>/... and
PATH/val/<class>/... . Images of any size are resized (bilinear) to the requested square side and
decoded once into the data cache (`evaluators.datasets.cache`), in parallel worker processes.
"""

from __future__ import annotations

import functools
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from evaluators.datasets.cache import CacheKey, CacheWriter
from evaluators.datasets.decode import Progress, decode_into
from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = {1: "L", 3: "RGB"}


def _class_dirs(root: Path) -> list[Path]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: {root} has no class folders; expected "
                        f"{root}/<class>/<image>{'|'.join(IMAGE_SUFFIXES)}")
    return classes


def _image_files(folder: Path) -> list[os.DirEntry]:
    """The folder's images in name order (one stat each, through os.scandir)."""
    with os.scandir(folder) as entries:
        files = sorted((e for e in entries if e.is_file() and not e.name.startswith(".")
                        and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES), key=lambda e: e.name)
    if not files:
        raise DataError(f"imagefolder: class folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def read_image(path: str | Path, resolution: int, mode: str) -> np.ndarray:
    """One image as (R, R, C) uint8: converted to `mode` ("L" or "RGB"), resized bilinearly.
    Raises DataError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode).resize((resolution, resolution), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"imagefolder: cannot read image {path} ({exc})") from None
    return array[:, :, None] if array.ndim == 2 else array


def _split_roots(root: Path) -> tuple[Path, Path | None]:
    """(training tree, validation tree or None) after checking the folder exists and that a
    train/ + val/ pair names the same classes."""
    if not root.is_dir():
        raise DataNotFoundError(f"imagefolder: directory {root} does not exist; expected "
                                f"{root}/<class>/<image>{'|'.join(IMAGE_SUFFIXES)}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        names = [c.name for c in _class_dirs(root / "train")]
        val_names = [c.name for c in _class_dirs(root / "val")]
        if val_names != names:
            raise DataError(f"imagefolder: {root}/val classes {val_names} differ from "
                            f"{root}/train classes {names}")
        return root / "train", root / "val"
    return root, None


def describe_imagefolder(path: str | Path) -> DataInfo:
    """Class names from the folder listing (no image is opened)."""
    train_root, _ = _split_roots(Path(path))
    return DataInfo("imagefolder", tuple(c.name for c in _class_dirs(train_root)), in_channels=3)


@dataclass(frozen=True)
class FolderListing:
    """Every image file of a tree (its path relative to `root`) and its label, per split
    ("train", and "val" for a train/ + val/ tree), and the cache key they make at a resolution
    and channel count. Plain strings: a listing of 200,000 files stays small."""

    root: Path
    class_names: tuple[str, ...]
    splits: dict[str, tuple[tuple[str, int], ...]]
    key: CacheKey


def list_imagefolder(path: str | Path, resolution: int, channels: int = 3) -> FolderListing:
    """List (never open) the images under `path`; the key covers every file's size and mtime."""
    if channels not in MODES:
        raise DataError(f"imagefolder: in_channels must be 1 or 3, got {channels}")
    root = Path(path).resolve()
    train_root, val_root = _split_roots(root)
    splits, sources = {}, []
    names: tuple[str, ...] = ()
    for split, tree in (("train", train_root), ("val", val_root)):
        if tree is None:
            continue
        classes = _class_dirs(tree)
        names = names or tuple(c.name for c in classes)
        prefix = tree.relative_to(root).as_posix()
        files = []
        for label, folder in enumerate(classes):
            for entry in _image_files(folder):
                stat = entry.stat()
                relative = posixpath.normpath(posixpath.join(prefix, folder.name, entry.name))
                files.append((relative, label))
                sources.append((relative, stat.st_size, stat.st_mtime_ns))
        splits[split] = tuple(files)
    key = CacheKey("imagefolder", root, resolution, channels, tuple(sources))
    return FolderListing(root, names, splits, key)


def build_imagefolder(listing: FolderListing, writer: CacheWriter, workers: int,
                      skip_unreadable: bool) -> tuple[tuple[str, ...], list[str]]:
    """Decode every listed image into `writer`'s entry; returns (class names, skipped files)."""
    key = listing.key
    decode = functools.partial(read_image, resolution=key.resolution, mode=MODES[key.channels])
    total = sum(len(files) for files in listing.splits.values())
    where = f"imagefolder {listing.root} at {key.resolution}px"
    progress = Progress(total, where)
    skipped: list[str] = []
    for split, files in listing.splits.items():
        rows = [relative for relative, _ in files]
        images = writer.create_images(split, len(files))
        sums, kept = decode_into(images, [os.path.join(listing.root, row) for row in rows], decode,
                                 workers, skip_unreadable, progress)
        skipped += [row for row, ok in zip(rows, kept) if not ok]
        writer.finish_split(split, np.array([label for _, label in files], np.int64), sums, kept, rows)
    note = f"; skipped {len(skipped)} unreadable (first: {skipped[0]})" if skipped else ""
    progress.finish(f" into {writer.folder.parent}{note}")
    return listing.class_names, skipped
