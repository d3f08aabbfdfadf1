"""RandAugment on batches of tensors, on the trial's device (DeiT trains with timm's
`rand-m9-mstd0.5-inc1`): each image gets `ops` layers; in each layer it draws one of fifteen
operations (with replacement across layers), applies it with `probability`, at a magnitude drawn
from N(`magnitude`, `magnitude_std`) clipped to [0, 10], with a random sign where the operation
has one. The operations and their ranges at magnitude 10 are timm's "increasing" set:

  AutoContrast, Equalize, Invert, Rotate (+-30 deg), Posterize (4 down to 0 bits kept),
  Solarize (threshold 256 down to 0), SolarizeAdd (+0..110 below 128), Color, Contrast,
  Brightness, Sharpness (blend factor 1 +- 0.9), ShearX/ShearY (+-0.3), TranslateX/Y (+-45%).

The pixel operations act on 0..255 values as PIL's do (Posterize and Equalize on the rounded
values); the geometric ones resample bilinearly and fill with the data set's mean, as DeiT's
`img_mean` fill. Every draw is from the trial's generator, batched: no per-image host work and no
host round trip, so it runs the same on a GPU. Images go in and out normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from search_spaces.fields import FieldError, from_mapping

MAX_MAGNITUDE = 10.0
OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
              "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
              "TranslateX", "TranslateY")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


@dataclass(frozen=True)
class RandAugmentConfig:
    """`train.rand_augment` (DeiT: ops 2, magnitude 9, magnitude_std 0.5, probability 0.5)."""

    ops: int = 2
    """Operations drawn and applied to each image in turn."""
    magnitude: float = 9.0
    """The mean magnitude, on timm's 0-10 scale."""
    magnitude_std: float = 0.5
    """The standard deviation of the magnitude, drawn afresh for each operation."""
    probability: float = 0.5
    """The probability that each drawn operation is applied."""

    def __post_init__(self) -> None:
        if self.ops < 1:
            raise FieldError("train.rand_augment.ops", f"must be >= 1, got {self.ops}")
        if not 0 <= self.magnitude <= MAX_MAGNITUDE:
            raise FieldError("train.rand_augment.magnitude",
                             f"must be in [0, {MAX_MAGNITUDE:g}], got {self.magnitude}")
        if not self.magnitude_std >= 0:
            raise FieldError("train.rand_augment.magnitude_std", f"must be >= 0, got {self.magnitude_std}")
        if not 0 <= self.probability <= 1:
            raise FieldError("train.rand_augment.probability",
                             f"must be in [0, 1], got {self.probability}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RandAugmentConfig":
        return from_mapping(cls, data, "train.rand_augment")


class RandAugment:
    """Batched RandAugment for normalised (B, C, H, W) images of a data set with per-channel
    `mean` and `std` (of [0, 1] pixels)."""

    def __init__(self, config: RandAugmentConfig, mean: Sequence[float], std: Sequence[float]):
        self.config = config
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, C, H, W) normalised -> (B, C, H, W) normalised, a new tensor."""
        if images.device not in self._on_device:  # copied once, not every batch
            self._on_device[images.device] = (self.mean.to(images.device), self.std.to(images.device))
        mean, std = self._on_device[images.device]
        pixels = (images.float() * std + mean) * 255.0  # 0..255, as PIL's images
        for _ in range(self.config.ops):
            choice, level = self.draw(len(images), images.device, generator)
            pixels = apply_layer(pixels, choice, level, mean * 255.0)
        return ((pixels / 255.0 - mean) / std).to(images.dtype)

    def draw(self, batch: int, device: torch.device, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's draws: (B,) operation index, -1 where the layer is skipped; (B,) signed
        level in [-1, 1] (magnitude / 10, times a random sign)."""
        config = self.config

        def uniform() -> torch.Tensor:
            return torch.rand(batch, device=device, generator=generator)

        choice = torch.randint(0, len(OPERATIONS), (batch,), device=device, generator=generator)
        choice = torch.where(uniform() < config.probability, choice, torch.full_like(choice, -1))
        noise = torch.randn(batch, device=device, generator=generator) * config.magnitude_std
        level = ((config.magnitude + noise).clamp(0.0, MAX_MAGNITUDE) / MAX_MAGNITUDE)
        sign = torch.where(uniform() < 0.5, -1.0, 1.0)
        return choice, level * sign


def apply_layer(pixels: torch.Tensor, choice: torch.Tensor, level: torch.Tensor,
                fill: torch.Tensor) -> torch.Tensor:
    """Each image's chosen operation (`choice`: index into OPERATIONS, -1 none) at its signed
    `level`; the unsigned operations use |level|. Every pixel operation is computed for the whole
    batch and selected per image (no data-dependent shapes: nothing waits for the device); the
    geometric ones are one affine resampling with the identity for the other images."""
    strength = level.abs()
    geometric = torch.zeros_like(choice, dtype=torch.bool)
    for name in GEOMETRIC:
        geometric |= choice == OPERATIONS.index(name)
    resampled = _resample(pixels, _affine_matrices(choice, level, pixels.shape[-2:]), fill)
    out = torch.where(geometric[:, None, None, None], resampled, pixels)
    for index, name in enumerate(OPERATIONS):
        if name in GEOMETRIC:
            continue
        chosen = (choice == index)[:, None, None, None]
        out = torch.where(chosen, PIXEL_OPERATIONS[name](pixels, strength, level), out)
    return out


# ---- pixel operations: (B, C, H, W) 0..255 floats, (B,) strength in [0, 1], (B,) signed level ----

def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, pixels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (image - degenerate), clipped to 0..255."""
    return (degenerate + _per_image(factor) * (pixels - degenerate)).clamp(0.0, 255.0)


def _enhance_factor(level: torch.Tensor) -> torch.Tensor:
    """timm's "increasing" enhancement factor: 1 + 0.9 * signed level, at least 0.1."""
    return (1.0 + 0.9 * level).clamp(min=0.1)


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance (ITU-R 601-2, PIL's "L"); one channel is its own grey."""
    if pixels.shape[1] == 1:
        return pixels
    weights = torch.tensor([0.299, 0.587, 0.114], device=pixels.device).view(1, 3, 1, 1)
    return (pixels[:, :3] * weights).sum(dim=1, keepdim=True)


def auto_contrast(pixels: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    """Stretch each channel's range to 0..255 (unchanged where the channel is flat)."""
    low = pixels.amin(dim=(2, 3), keepdim=True)
    high = pixels.amax(dim=(2, 3), keepdim=True)
    span = high - low
    stretched = (pixels - low) * (255.0 / span.clamp(min=1e-6))
    return torch.where(span > 0, stretched, pixels)


def equalize(pixels: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize per channel: a lookup table from the histogram's cumulative counts,
    leaving the last occupied level out; unchanged where the step is 0."""
    batch, channels = pixels.shape[:2]
    levels = pixels.round().clamp(0, 255).long().flatten(2)  # (B, C, HW)
    counts = torch.zeros(batch, channels, 256, device=pixels.device)
    counts.scatter_add_(2, levels, torch.ones_like(levels, dtype=counts.dtype))
    occupied = torch.arange(256, device=pixels.device) * (counts > 0)
    last = counts.gather(2, occupied.argmax(dim=2, keepdim=True))  # count of the top level
    step = torch.div(counts.sum(dim=2, keepdim=True) - last, 255, rounding_mode="floor")
    before = counts.cumsum(dim=2) - counts  # pixels below each level
    table = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1),
                      rounding_mode="floor").clamp(max=255)
    mapped = table.gather(2, levels).view_as(pixels)
    return torch.where((step > 0).unsqueeze(-1), mapped, pixels)


def invert(pixels: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    return 255.0 - pixels


def posterize(pixels: torch.Tensor, strength: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Keep the 4 down to 0 most significant bits (timm: 4 - int(4 * strength))."""
    kept_bits = 4 - (4 * strength).long()
    quantum = _per_image(torch.pow(2.0, 8 - kept_bits.float()))
    return torch.div(pixels.round(), quantum, rounding_mode="floor") * quantum


def solarize(pixels: torch.Tensor, strength: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above a threshold of 256 - int(256 * strength)."""
    threshold = _per_image(256 - (256 * strength).long().clamp(max=256)).float()
    return torch.where(pixels >= threshold, 255.0 - pixels, pixels)


def solarize_add(pixels: torch.Tensor, strength: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Add int(110 * strength) to the pixels below 128."""
    added = _per_image((110 * strength).long()).float()
    return torch.where(pixels < 128, (pixels + added).clamp(max=255.0), pixels)


def color(pixels: torch.Tensor, _: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Saturation: blend with the grey image (identity for one channel)."""
    return _blend(_grey(pixels).expand_as(pixels), pixels, _enhance_factor(level))


def contrast(pixels: torch.Tensor, _: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Blend with a flat image of the mean grey level."""
    mean = _grey(pixels).mean(dim=(1, 2, 3), keepdim=True).add(0.5).floor()
    return _blend(mean.expand_as(pixels), pixels, _enhance_factor(level))


def brightness(pixels: torch.Tensor, _: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Blend with black."""
    return _blend(torch.zeros_like(pixels), pixels, _enhance_factor(level))


def sharpness(pixels: torch.Tensor, _: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, over 13), edges kept."""
    channels = pixels.shape[1]
    kernel = torch.ones(channels, 1, 3, 3, device=pixels.device)
    kernel[:, :, 1, 1] = 5.0
    smooth = F.conv2d(pixels, kernel / 13.0, groups=channels)
    degenerate = pixels.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, pixels, _enhance_factor(level))


PIXEL_OPERATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Posterize": posterize,
    "Solarize": solarize, "SolarizeAdd": solarize_add, "Color": color, "Contrast": contrast,
    "Brightness": brightness, "Sharpness": sharpness,
}


# ---- geometric operations: one affine map per image, output pixel -> input pixel ----------------

def _affine_matrices(choice: torch.Tensor, level: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, 2, 3) maps from output to input pixel coordinates (x right, y down, pixel centres at
    integers): Rotate about the centre by 30 deg x level; ShearX/ShearY by 0.3 x level about the
    top-left corner, as PIL's affine; TranslateX/Y by 45% of the side x level. Identity for the
    other images."""
    height, width = size
    batch = len(choice)
    matrices = torch.zeros(batch, 2, 3, device=level.device)
    matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0

    def pick(name: str) -> torch.Tensor:
        return choice == OPERATIONS.index(name)

    angle = level * math.radians(30.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    rotate = torch.stack([torch.stack([cos, -sin, cx - cos * cx + sin * cy]),
                          torch.stack([sin, cos, cy - sin * cx - cos * cy])]).permute(2, 0, 1)
    matrices = torch.where(pick("Rotate")[:, None, None], rotate, matrices)
    shear = 0.3 * level  # PIL's corner is the pixel edge: half a pixel's shear of offset
    for name, row, column in (("ShearX", 0, 1), ("ShearY", 1, 0)):
        matrices[:, row, column] = torch.where(pick(name), shear, matrices[:, row, column])
        matrices[:, row, 2] = torch.where(pick(name), 0.5 * shear, matrices[:, row, 2])
    matrices[:, 0, 2] = torch.where(pick("TranslateX"), 0.45 * width * level, matrices[:, 0, 2])
    matrices[:, 1, 2] = torch.where(pick("TranslateY"), 0.45 * height * level, matrices[:, 1, 2])
    return matrices


def _resample(pixels: torch.Tensor, matrices: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Each image read through its affine map (bilinear), `fill` (1, C, 1, 1) outside the image."""
    height, width = pixels.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, device=pixels.device, dtype=torch.float32),
                            torch.arange(width, device=pixels.device, dtype=torch.float32),
                            indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, -1, 3)  # (1, HW, 3)
    source = points @ matrices.transpose(1, 2)  # (B, HW, 2) input pixel coordinates
    # grid_sample's coordinates with align_corners=False: -1 and 1 are the outer pixel edges
    scale = torch.tensor([2.0 / width, 2.0 / height], device=pixels.device)
    grid = ((source + 0.5) * scale - 1.0).view(-1, height, width, 2)
    shifted = F.grid_sample(pixels - fill, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    return shifted + fill
