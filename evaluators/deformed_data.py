"""A large training set made from a small one: every image a random affine deformation of a real
training image (rotation, scale, shear, shift), as infiMNIST makes millions of digits from MNIST.

It stands in for the paper's large-data regime (JFT) on a machine that has only a small data set:
with many more distinct images than a small model can memorise, and each seen about once, the fit
a layout reaches is limited by the model rather than by memorisation, and training loss tracks the
loss on deformations it never saw as it does on JFT. Generated once, seeded, on [0, 1] pixels and
held in memory as float32 (normalised per batch like every split); the margin a deformation
uncovers is black.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evaluators.data import DataError, ImageData, ImageSplit


@dataclass(frozen=True)
class Deformation:
    """Ranges of the random affine map applied to each image: rotation and shear in degrees
    (uniform in +-), scale factor (uniform in [1 - scale, 1 + scale]), shift as a fraction of the
    side (uniform in +-).

    Clutter, for a regime that no layout can fit to zero loss (as none fits JFT): `clutter`
    fragments per image, each a square window `clutter_size` x the side wide, at a random place,
    cut from another deformed training image of any class and laid over the image (pixel-wise
    maximum, as in cluttered MNIST); some images become truly ambiguous. `noise`: the std of
    Gaussian pixel noise added last (pixels clipped to [0, 1]). Both 0: plain deformations."""

    rotation: float = 15.0
    """Rotation, degrees (uniform in +-)."""
    scale: float = 0.15
    """Scale factor, uniform in [1 - scale, 1 + scale]."""
    shear: float = 10.0
    """Shear, degrees (uniform in +-)."""
    shift: float = 0.1
    """Shift, a fraction of the side (uniform in +-)."""
    clutter: int = 0
    """Fragments of other deformed training images laid over each image (0: none)."""
    clutter_size: float = 0.4
    """A fragment's side, a fraction of the image's."""
    noise: float = 0.0
    """Std of the Gaussian pixel noise added last (pixels on [0, 1]; 0: none)."""

    def __post_init__(self) -> None:
        for name in ("rotation", "scale", "shear", "shift", "noise"):
            if not getattr(self, name) >= 0:
                raise DataError(f"deformation.{name}: must be >= 0, got {getattr(self, name)}")
        if self.scale >= 1:
            raise DataError(f"deformation.scale: must be below 1, got {self.scale}")
        if isinstance(self.clutter, bool) or not isinstance(self.clutter, int) or self.clutter < 0:
            raise DataError(f"deformation.clutter: must be an integer >= 0, got {self.clutter!r}")
        if not 0 < self.clutter_size <= 1:
            raise DataError(f"deformation.clutter_size: must be in (0, 1], got {self.clutter_size}")


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


def add_clutter(images: torch.Tensor, pool: torch.Tensor, generator: torch.Generator,
                deformation: Deformation) -> torch.Tensor:
    """(N, C, R, R) -> (N, C, R, R): `deformation.clutter` fragments laid over each image, each a
    square window of a randomly drawn image of `pool` (deformed like the rest) at a random place;
    then the pixel noise. Pixels are on [0, 1] with a black (0) background."""
    n, _, height, width = images.shape
    side = max(1, round(deformation.clutter_size * min(height, width)))
    rows = torch.arange(height).view(1, 1, height, 1)
    cols = torch.arange(width).view(1, 1, 1, width)
    out = images
    for _ in range(deformation.clutter):
        other = deform(pool[torch.randint(len(pool), (n,), generator=generator)], generator,
                       deformation)
        top = torch.randint(height - side + 1, (n,), generator=generator).view(n, 1, 1, 1)
        left = torch.randint(width - side + 1, (n,), generator=generator).view(n, 1, 1, 1)
        window = ((rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side))
        out = torch.maximum(out, other * window.to(images.dtype))
    if deformation.noise > 0:
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype) * deformation.noise
        out = (out + noise).clamp(0, 1)
    return out


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
        moved = deform(images[picked], generator, deformation, fill)
        if deformation.clutter or deformation.noise:
            moved = add_clutter(moved, images, generator, deformation)
        out[start:start + len(picked)] = moved
    return out, labels[source].clone()


def deformed_data(data: ImageData, per_class: int, seed: int = 0,
                  deformation: Deformation = Deformation()) -> ImageData:
    """The large-data regime: `per_class` deformations per class of the real training images
    replace the training set; validation set and normalisation stay those of `data`."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"deformed_data: per_class must be a positive integer, got {per_class!r}")
    x, y = deformed_images(data.train.images(), data.train_y, per_class, seed, deformation)
    return dataclasses.replace(data, train=ImageSplit.in_memory(x, y),
                               name=f"{data.name}[deformed {per_class}/class]")
