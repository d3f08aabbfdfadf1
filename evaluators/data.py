"""Image data for trials: a data set split into training and validation sets of uint8 pixels
(normalised per batch, on the trial's device, by `evaluators.batches`), and the small-data regime
cut out of it.

Data sets: `digits` (scikit-learn's 1,797 real 8x8 handwritten digits, bundled, the default, held
in memory), `cifar10` (the python-pickle batches in a local directory), `imagefolder` (a
class-per-folder tree of .png/.jpg in a local directory). The last two are decoded once into the
on-disk data cache (`evaluators.datasets.cache`) and memory-mapped from there by every process, so
a process's memory does not grow with the data set. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evaluators.batches import BatchLoader, ImageSplit
from evaluators.datasets.cache import CachedData, cached_data, channel_mean_std, default_cache_dir
from evaluators.datasets.cifar10 import build_cifar10, cifar10_key, describe_cifar10
from evaluators.datasets.decode import default_workers
from evaluators.datasets.digits import describe_digits, read_digits
from evaluators.datasets.imagefolder import build_imagefolder, describe_imagefolder, list_imagefolder
from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError

DATASET_NAMES = ("digits", "cifar10", "imagefolder")

__all__ = ["DATASET_NAMES", "DataError", "DataInfo", "DataNotFoundError", "ImageData", "ImageSplit",
           "describe_data", "load_data", "prepare_data", "small_data"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """A data set split into training and validation images, with the normalisation its trials use.

    train/val: `ImageSplit`s (uint8 pixels, memory-mapped from the data cache; float32 in [0, 1]
    for digits) with int64 labels. mean/std: per channel, of the training split, in [0, 1] pixel
    units; batches are normalised with them as they are loaded. skipped: source files left out as
    unreadable (with `skip_corrupt`).
    """

    train: ImageSplit
    val: ImageSplit
    num_classes: int
    in_channels: int
    class_names: tuple[str, ...]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_invariant: bool = True  # may augmentation mirror images left-right (False for digits)?
    skipped: tuple[str, ...] = ()

    @property
    def resolution(self) -> int:
        return self.train.resolution

    @property
    def train_y(self) -> torch.Tensor:
        return self.train.labels

    @property
    def val_y(self) -> torch.Tensor:
        return self.val.labels

    @property
    def train_x(self) -> torch.Tensor:
        """Every training image normalised, (N, C, R, R) float32, made on each access: for small
        data sets (tests, proxies); trainers load batches instead."""
        return BatchLoader(self.mean, self.std).load_all(self.train)

    @property
    def val_x(self) -> torch.Tensor:
        """Every validation image normalised (see `train_x`)."""
        return BatchLoader(self.mean, self.std).load_all(self.val)

    def __repr__(self) -> str:
        return (f"ImageData({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"classes={self.num_classes}, shape={(self.in_channels, self.resolution, self.resolution)})")


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
              val_fraction: float = 0.2, seed: int = 0, in_channels: int | None = None,
              cache_dir: str | Path | None = None, skip_corrupt: bool = False,
              decode_workers: int | None = None) -> ImageData:
    """Read data set `name` at `resolution` x `resolution` and split it into train/validation.

    The split is stratified and fixed by `seed` (a data set with its own validation split, an
    image folder with train/ and val/, keeps it). `in_channels` converts grey <-> RGB when the
    architecture wants another channel count (None: the data set's own).

    cifar10 and imagefolder come from the data cache in `cache_dir` (None: $HYBRID_NAS_CACHE, else
    ~/.cache/hybrid-nas/data), decoded there first by `decode_workers` processes (None: every CPU)
    if no complete entry matches the files. An unreadable image raises DataError naming it;
    with `skip_corrupt` it is left out and listed in `ImageData.skipped`.
    """
    _check_args(name, path, resolution, in_channels)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if name == "digits":
        return _digits(resolution, val_fraction, seed, in_channels)
    cached = prepare_data(name, resolution, path, in_channels, cache_dir, skip_corrupt, decode_workers)
    _require_two_classes(name, path, cached.class_names)
    if cached.skipped and not skip_corrupt:
        raise DataError(f"{name}: cannot read image {Path(cached.meta['root']) / cached.skipped[0]}"
                        f"{'' if len(cached.skipped) == 1 else f' (and {len(cached.skipped) - 1} more)'}: "
                        f"left out of the cache {cached.path} built with skip_corrupt; "
                        f"set trial.skip_corrupt: true to train without it")
    splits = {}
    for split, part in cached.splits.items():
        rows = np.flatnonzero(part.kept)
        splits[split] = ImageSplit(part.images, rows, torch.from_numpy(np.asarray(part.labels)[rows]))
    train, val = splits["train"], splits.get("val")
    if val is None:
        train_pos, val_pos = _stratified_split(train.labels, val_fraction, seed)
        train, val = train.subset(train_pos), train.subset(val_pos)
    sums = cached.splits["train"].sums
    mean, std = channel_mean_std(np.asarray(sums[train.rows]).sum(axis=0), len(train) * resolution ** 2)
    return ImageData(train=train, val=val, num_classes=len(cached.class_names),
                     in_channels=train.channels, class_names=cached.class_names, name=name,
                     mean=mean, std=tuple(max(s, 1e-6) for s in std), skipped=cached.skipped)


def prepare_data(name: str, resolution: int, path: str | Path | None, in_channels: int | None = None,
                 cache_dir: str | Path | None = None, skip_corrupt: bool = False,
                 decode_workers: int | None = None) -> CachedData:
    """The data cache entry of a cifar10 or imagefolder data set at `resolution` and
    `in_channels`: opened when one matches the files, else decoded first (see `load_data`)."""
    _check_args(name, path, resolution, in_channels)
    if name == "digits":
        raise DataError("digits is held in memory: it has no data cache entry")
    channels = in_channels or 3
    workers = decode_workers or default_workers()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if name == "cifar10":
        key = cifar10_key(path, resolution, channels)
        return cached_data(key, cache_dir, lambda writer: build_cifar10(key, writer))
    listing = list_imagefolder(path, resolution, channels)
    _require_two_classes(name, path, listing.class_names)
    return cached_data(listing.key, cache_dir,
                       lambda writer: build_imagefolder(listing, writer, workers, skip_corrupt))


def _digits(resolution: int, val_fraction: float, seed: int, in_channels: int | None) -> ImageData:
    """Digits in memory as float32 [0, 1] pixels (1,797 small images); normalised per batch like
    the cached data sets, with the mean/std computed as torch computes them in float32."""
    raw = read_digits(resolution)
    train_idx, val_idx = _stratified_split(raw.labels, val_fraction, seed)
    train_x, val_x = raw.images[train_idx], raw.images[val_idx]
    if in_channels == 3:  # digits are grey: copy the channel
        train_x, val_x = train_x.expand(-1, 3, -1, -1).contiguous(), val_x.expand(-1, 3, -1, -1).contiguous()
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    train = ImageSplit.in_memory(train_x, raw.labels[train_idx].contiguous())
    val = ImageSplit.in_memory(val_x, raw.labels[val_idx].contiguous())
    return ImageData(train=train, val=val, num_classes=len(raw.class_names),
                     in_channels=int(train_x.shape[1]), class_names=raw.class_names, name="digits",
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
        members = torch.nonzero(data.train.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = per_class if per_class is not None else max(1, round(fraction * len(members)))
        keep.append(members[:count])
    idx = torch.sort(torch.cat(keep)).values
    size = f"{per_class}/class" if per_class is not None else f"{fraction:g}"
    return dataclasses.replace(data, train=data.train.subset(idx), name=f"{data.name}[{size}]")


def _check_args(name: str, path: str | Path | None, resolution: int, in_channels: int | None) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"resolution must be a positive integer, got {resolution!r}")
    if in_channels not in (None, 1, 3):
        raise DataError(f"in_channels must be 1 or 3, got {in_channels!r}")
    _check_name(name, path)


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
