"""The regularizers DeiT trains attention with on little data, on batches of tensors on the trial's
device: Mixup and CutMix (a batch mixed with itself reversed, labels mixed in the same proportion:
soft targets), and random erasing. Every draw is seeded: per-image draws from the trial's torch
generator, the one mixing proportion per batch from a numpy generator seeded from it. (Stochastic
depth is a property of the model: `search_spaces.blocks.drop_path`.)

As in timm's `Mixup` (mode "batch", DeiT's setting) and `RandomErasing` (mode "pixel").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixed:
    """A mixed batch: `images` (B, C, H, W) = lam * images + (1 - lam) * images reversed along the
    batch (Mixup), or a box of the reversed batch pasted in (CutMix, lam = the share of pixels
    kept); `lam` is the weight of each image's own label."""

    images: torch.Tensor
    lam: float


class BatchMixer:
    """Mixup (`mixup_alpha` > 0) and/or CutMix (`cutmix_alpha` > 0) of whole batches: lam ~
    Beta(alpha, alpha) once per batch; with both on, CutMix is used with probability
    `switch_prob`. Pairs are image i and image B-1-i (timm's "batch" mode)."""

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, switch_prob: float,
                 seed_from: torch.Generator):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("BatchMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob = switch_prob
        # One proportion per batch, drawn on the host (Beta has no torch.Generator sampler); seeded
        # by a draw from the trial's generator, so the trial's seed fixes it.
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=seed_from))
        self.rng = np.random.default_rng(seed)

    def __call__(self, images: torch.Tensor) -> Mixed:
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or
                                                self.rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(self.rng.beta(alpha, alpha))
        if use_cutmix:
            return cutmix(images, lam, self.rng)
        return Mixed(images * lam + images.flip(0) * (1.0 - lam), lam)


def cutmix(images: torch.Tensor, lam: float, rng: np.random.Generator) -> Mixed:
    """Paste a box of the reversed batch into every image: the box covers about 1 - lam of the
    image, centred uniformly, clipped at the borders; the returned lam is the share of pixels
    actually kept (timm's correction)."""
    height, width = images.shape[-2:]
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images.flip(0)[:, :, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return Mixed(mixed, kept)


def mix_targets(targets: torch.Tensor, lam: float, num_classes: int) -> torch.Tensor:
    """Targets of a mixed batch: lam * own + (1 - lam) * the reversed batch's, as (B, num_classes)
    probabilities (each row sums to 1). `targets`: (B,) class indices or (B, num_classes)
    probabilities."""
    if targets.dim() == 1:
        targets = F.one_hot(targets, num_classes).float()
    return targets * lam + targets.flip(0) * (1.0 - lam)


def random_erasing(images: torch.Tensor, probability: float, generator: torch.Generator,
                   min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3,
                   attempts: int = 10) -> torch.Tensor:
    """With `probability`, replace one random rectangle of each image by normal noise (the images
    are normalised: noise of the data's own scale), as timm's RandomErasing(mode="pixel"): area a
    uniform share in [min_area, max_area], log aspect ratio uniform in +-log(1/min_aspect), the
    first of `attempts` draws that fits the image. (B, C, H, W) -> (B, C, H, W), a new tensor;
    one batched set of draws, no host round trip."""
    batch, channels, height, width = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, attempts, device=device, generator=generator)

    erase = torch.rand(batch, device=device, generator=generator) < probability  # (B,)
    area = uniform(min_area, max_area) * (height * width)
    aspect = torch.exp(uniform(math.log(min_aspect), -math.log(min_aspect)))
    box_h = torch.sqrt(area * aspect).round().long()  # (B, attempts)
    box_w = torch.sqrt(area / aspect).round().long()
    fits = (box_h < height) & (box_w < width) & (box_h > 0) & (box_w > 0)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # the first attempt that fits (0 if none)
    erase &= fits.gather(1, first).squeeze(1)
    box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)  # (B,)
    top = (torch.rand(batch, device=device, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(batch, device=device, generator=generator) * (width - box_w + 1)).long()
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (B, H, W)
    mask = mask[:, None]  # (B, 1, H, W)
    noise = torch.randn(images.shape, device=device, generator=generator, dtype=images.dtype)
    return torch.where(mask, noise, images)
