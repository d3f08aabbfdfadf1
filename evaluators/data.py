"""Image data for trials: load a data set into memory as normalised tensors, and cut the
small-data regime out of it.

Data sets: `digits` (scikit-learn's 1,797 real 8x8 handwritten digits, bundled, the default),
`cifar10` (the python-pickle batches in a local directory), `imagefolder` (a class-per-folder tree
of .png/.jpg in a local directory). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluators.datasets.cifar10 import describe_cifar10, read_cifar10
from evaluators.datasets.digits import describe_digits, read_digits
from evaluators.datasets.imagefolder import describe_imagefolder, read_imagefolder
from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError, RawImages

DATASET_NAMES = ("digits", "cifar10", "imagefolder")
_LUMA = torch.tensor([0.299, 0.587, 0.114])

__all__ = ["DATASET_NAMES", "DataError", "DataInfo", "DataNotFoundError", "ImageData", "describe_data",
           "load_data", "small_data"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """A data set in memory, split and normalised.

    train_x/val_x: (N, C, R, R) float32, normalised per channel with the training set's mean and
    std (`mean`, `std`, in [0, 1] pixel units). train_y/val_y: (N,) int64 class indices.
    The tensors are shared, never modified in place.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    in_channels: int
    class_names: tuple[str, ...]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_invariant: bool = True  # may augmentation mirror images left-right (False for digits)?

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])

    def __repr__(self) -> str:
        return (f"ImageData({self.name!r}, train={len(self.train_y)}, val={len(self.val_y)}, "
                f"classes={self.num_classes}, shape={tuple(self.train_x.shape[1:])})")


def describe_data(name: str = "digits", path: str | Path | None = None) -> DataInfo:
    """Class names and channels of a data set without decoding its images (what a search driver
    needs to shape its space). Raises DataError for a data set a classifier cannot be trained on
    (fewer than two classes), DataNotFoundError for a missing one."""
    _check_name(name, path)
    if name == "digits":
        info = describe_digits()
    elif name == "cifar10":
        info = describe_cifar10(path)
    else:
        info = describe_imagefolder(path)
    _require_two_classes(name, path, info.class_names)
    return info


def load_data(name: str = "digits", resolution: int = 32, path: str | Path | None = None,
              val_fraction: float = 0.2, seed: int = 0, in_channels: int | None = None) -> ImageData:
    """Read data set `name` at `resolution` x `resolution` and split it into train/validation.

    The split is stratified and fixed by `seed` (a data set with its own validation split, an
    image folder with train/ and val/, keeps it). `in_channels` converts grey <-> RGB when the
    architecture wants another channel count (None: the data set's own).
    """
    raw = _read(name, resolution, path, in_channels)
    _require_two_classes(name, path, raw.class_names)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if raw.val_images is None:
        train_idx, val_idx = _stratified_split(raw.labels, val_fraction, seed)
        train_x, train_y = raw.images[train_idx], raw.labels[train_idx]
        val_x, val_y = raw.images[val_idx], raw.labels[val_idx]
    else:
        train_x, train_y, val_x, val_y = raw.images, raw.labels, raw.val_images, raw.val_labels
    if in_channels is not None:
        train_x, val_x = _to_channels(train_x, in_channels), _to_channels(val_x, in_channels)
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    shift, scale = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    return ImageData(
        train_x=((train_x - shift) / scale).contiguous(), train_y=train_y.contiguous(),
        val_x=((val_x - shift) / scale).contiguous(), val_y=val_y.contiguous(),
        num_classes=len(raw.class_names), in_channels=int(train_x.shape[1]),
        class_names=raw.class_names, name=name,
        mean=tuple(mean.tolist()), std=tuple(std.tolist()), flip_invariant=raw.flip_invariant)


def small_data(data: ImageData, per_class: int | None = None, fraction: float | None = None,
               seed: int = 0) -> ImageData:
    """The small-data ("generalization") regime: `per_class` training images of each class, or a
    `fraction` of each class (at least one), chosen by `seed`. Validation set and normalisation
    are those of `data`, so both regimes are scored on the same images."""
    if (per_class is None) == (fraction is None):
        raise DataError("small_data: give exactly one of per_class or fraction")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int)
                                  or per_class < 1):
        raise DataError(f"small_data: per_class must be a positive integer, got {per_class!r}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise DataError(f"small_data: fraction must be in (0, 1], got {fraction!r}")
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in range(data.num_classes):
        members = torch.nonzero(data.train_y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = per_class if per_class is not None else max(1, round(fraction * len(members)))
        keep.append(members[:count])
    idx = torch.sort(torch.cat(keep)).values
    size = f"{per_class}/class" if per_class is not None else f"{fraction:g}"
    return dataclasses.replace(data, train_x=data.train_x[idx].contiguous(),
                               train_y=data.train_y[idx].contiguous(), name=f"{data.name}[{size}]")


def _read(name: str, resolution: int, path: str | Path | None, in_channels: int | None) -> RawImages:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"resolution must be a positive integer, got {resolution!r}")
    if in_channels not in (None, 1, 3):
        raise DataError(f"in_channels must be 1 or 3, got {in_channels!r}")
    _check_name(name, path)
    if name == "digits":
        return read_digits(resolution)
    if name == "cifar10":
        return read_cifar10(path, resolution)
    return read_imagefolder(path, resolution, channels=in_channels or 3)


def _check_name(name: str, path: str | Path | None) -> None:
    if name not in DATASET_NAMES:
        raise DataError(f"unknown data set {name!r} (known: {list(DATASET_NAMES)})")
    if name != "digits" and path is None:
        raise DataError(f"data set {name!r} is read from a local directory: give its path")


def _require_two_classes(name: str, path: str | Path | None, class_names: tuple[str, ...]) -> None:
    if len(class_names) < 2:
        where = f" in {path}" if path is not None else ""
        raise DataError(f"{name}: found {len(class_names)} class{where} "
                        f"({', '.join(class_names) or 'none'}); a classifier needs at least 2")


def _stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a seeded shuffle; the first round(val_fraction * n) go to validation (at least
    one when the class has two or more images)."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(max(1, round(val_fraction * len(members))), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        return (images * _LUMA.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    raise DataError(f"cannot convert {have}-channel images to {channels} channels")
