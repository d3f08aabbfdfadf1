"""A class-per-folder tree of .png/.jpg images in a local directory.

Expected layout (one sub-folder per class, named after it; classes sorted by name)::

    PATH/<class>/<image>.png|.jpg|.jpeg

or, with a validation split of your own, the same tree twice: PATH/train/<class>/... and
PATH/val/<class>/... . Images of any size are resized (bilinear) to the requested square side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError, RawImages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _class_dirs(root: Path) -> list[Path]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: {root} has no class folders; expected "
                        f"{root}/<class>/<image>{'|'.join(IMAGE_SUFFIXES)}")
    return classes


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DataError(f"imagefolder: class folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def _read_image(path: Path, resolution: int, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode).resize((resolution, resolution), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"imagefolder: cannot read image {path} ({exc})") from None
    return array[:, :, None] if array.ndim == 2 else array  # (R, R, C)


def _read_tree(root: Path, resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    mode = {1: "L", 3: "RGB"}[channels]
    images, labels = [], []
    classes = _class_dirs(root)
    for label, folder in enumerate(classes):
        for file in _image_files(folder):
            images.append(_read_image(file, resolution, mode))
            labels.append(label)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return stacked.contiguous(), torch.tensor(labels, dtype=torch.int64), tuple(c.name for c in classes)


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


def read_imagefolder(path: str | Path, resolution: int, channels: int = 3) -> RawImages:
    """Every image under `path`, as `channels` (1: grey, 3: RGB) at `resolution` x `resolution`."""
    if channels not in (1, 3):
        raise DataError(f"imagefolder: in_channels must be 1 or 3, got {channels}")
    train_root, val_root = _split_roots(Path(path))
    x, y, names = _read_tree(train_root, resolution, channels)
    if val_root is None:
        return RawImages(x, y, names)
    vx, vy, _ = _read_tree(val_root, resolution, channels)
    return RawImages(x, y, names, vx, vy)
