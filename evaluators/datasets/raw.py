"""What the dataset readers share: the errors they raise, what a data set is (`DataInfo`), the
in-memory images of a small one (`RawImages`), and square resizing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class DataError(ValueError):
    """A data set that cannot be read as asked: the message says what was expected where."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data set's directory or one of its files does not exist."""


@dataclass(frozen=True)
class DataInfo:
    """What a data set is, read from its listing or metadata without decoding an image: class
    names (their order is the label order), native channels, and whether mirroring keeps labels."""

    name: str
    class_names: tuple[str, ...]
    in_channels: int
    flip_invariant: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class RawImages:
    """Images of one small data set held in memory (digits), read but not yet split or normalised.

    images: (N, C, R, R) float32 in [0, 1]. labels: (N,) int64 in [0, len(class_names)).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    flip_invariant: bool = True  # may augmentation mirror these images left-right?


def resize_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to (N, C, R, R) (antialiased when shrinking)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    shrinking = resolution < max(images.shape[-2:])
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=shrinking).clamp_(0.0, 1.0)
