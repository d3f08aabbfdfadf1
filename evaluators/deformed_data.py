"""A large training set made from a small one: every image a random affine deformation of a real
training image (rotation, scale, shear, shift), as infiMNIST makes millions of digits from MNIST.

It stands in for the paper's large-data regime (JFT) on a machine that has only a small data set:
with many more distinct images than a small model can memorise, and each seen about once, the fit
a layout reaches is limited by the model rather than by memorisation, and training loss tracks the
loss on deformations it never saw as it does on JFT. Generated once, seeded, on the tensors
`evaluators.data` already holds (normalised); the margin a deformation uncovers is black.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evaluators.data import DataError, ImageData


@dataclass(frozen=True)
class Deformation:
    """Ranges of the random affine map applied to each image: rotation and shear in degrees
    (uniform in +-), scale factor (uniform in [1 - scale, 1 + scale]), shift as a fraction of the
    side (uniform in +-)."""

    rotation: float = 15.0
    scale: float = 0.15
    shear: float = 10.0
    shift: float = 0.1


def deform(images: torch.Tensor, generator: torch.Generator,
           deformation: Deformation = Deformation(), fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(N, C, R, R) -> (N, C, R, R): each image under its own random affine map; uncovered
    pixels take `fill` (a value, or one per channel)."""
    n = images.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(deformation.rotation))
    shear = uniform(math.radians(deformation.shear))
    scale = 1 + uniform(deformation.scale)
    shift = uniform(deformation.shift * 2), uniform(deformation.shift * 2)  # grid spans [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos / scale, (-sin + torch.tan(shear) * cos) / scale, shift[0]], dim=1),
        torch.stack([sin / scale, (cos + torch.tan(shear) * sin) / scale, shift[1]], dim=1),
    ], dim=1).to(images.dtype)  # (N, 2, 3): output coordinates -> input coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    fill = torch.as_tensor(fill, dtype=images.dtype).reshape(1, -1, 1, 1)
    moved = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return moved + fill


def deformed_images(images: torch.Tensor, labels: torch.Tensor, per_class: int, seed: int,
                    deformation: Deformation = Deformation(), fill: torch.Tensor | float = 0.0,
                    chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` deformed images of each class, each made from a real image of that class drawn
    at random (seeded), labels kept."""
    generator = torch.Generator().manual_seed(seed)
    sources = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        sources.append(members[torch.randint(len(members), (per_class,), generator=generator)])
    source = torch.cat(sources)
    out = torch.empty((len(source),) + tuple(images.shape[1:]), dtype=images.dtype)
    for start in range(0, len(source), chunk):
        picked = source[start:start + chunk]
        out[start:start + len(picked)] = deform(images[picked], generator, deformation, fill)
    return out, labels[source].clone()


def black(data: ImageData) -> torch.Tensor:
    """The normalised value of a black pixel, per channel."""
    return -torch.tensor(data.mean) / torch.tensor(data.std)


def deformed_data(data: ImageData, per_class: int, seed: int = 0,
                  deformation: Deformation = Deformation()) -> ImageData:
    """The large-data regime: `per_class` deformations per class of the real training images
    replace the training set; validation set and normalisation stay those of `data`."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"deformed_data: per_class must be a positive integer, got {per_class!r}")
    x, y = deformed_images(data.train_x, data.train_y, per_class, seed, deformation,
                           fill=black(data))
    return dataclasses.replace(data, train_x=x.contiguous(), train_y=y,
                               name=f"{data.name}[deformed {per_class}/class]")
