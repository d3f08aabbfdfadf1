"""Batches of images for the trainer: rows gathered from a pixel array (memory-mapped uint8, or
float32 in memory for small data sets), moved to the trial's device, converted and normalised
there. A trial's memory holds a batch at a time, whatever the data set's size.

On CUDA the rows are gathered into pinned host buffers (two, used in turn) and copied with
non_blocking=True, as uint8 (a quarter of the bytes of float32): the copy of one batch overlaps
the computation of the previous one, and the conversion runs on the GPU. Batches come out
channels-last in memory, the layout the models run in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

Positions = np.ndarray | torch.Tensor | Sequence[int]


@dataclass(frozen=True, eq=False)
class ImageSplit:
    """Some rows of a pixel array, with their labels.

    pixels: (M, R, R, C), uint8 (0..255, usually memory-mapped from the data cache) or float32
    (0..1). rows: (N,) int64, which rows belong to the split, in order. labels: (N,) int64.
    Splits and subsets share `pixels`; nothing is copied until a batch is gathered.
    """

    pixels: np.ndarray
    rows: np.ndarray
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4 or self.pixels.dtype not in (np.uint8, np.float32):
            raise ValueError(f"pixels must be (M, R, R, C) uint8 or float32, got "
                             f"{self.pixels.dtype}{list(self.pixels.shape)}")
        if len(self.rows) != len(self.labels):
            raise ValueError(f"{len(self.rows)} rows but {len(self.labels)} labels")

    @classmethod
    def in_memory(cls, images: torch.Tensor, labels: torch.Tensor) -> "ImageSplit":
        """A split of (N, C, R, R) float32 images in [0, 1] held in memory (small or generated
        sets: digits, deformations)."""
        pixels = images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
        return cls(pixels, np.arange(len(labels)), labels)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def resolution(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[3])

    def subset(self, positions: Positions) -> "ImageSplit":
        """The split's images at `positions` (indices into this split), same pixel array."""
        positions = _as_numpy(positions)
        return ImageSplit(self.pixels, self.rows[positions], self.labels[torch.from_numpy(positions)])

    def images(self) -> torch.Tensor:
        """Every image of the split, (N, C, R, R) float32 in [0, 1], not normalised (a copy: for
        small splits)."""
        pixels = torch.from_numpy(self.gather(np.arange(len(self)))).permute(0, 3, 1, 2).float()
        return (pixels / 255.0 if self.pixels.dtype == np.uint8 else pixels).contiguous()

    def gather(self, positions: Positions, out: np.ndarray | None = None) -> np.ndarray:
        """(B, R, R, C) pixels of the images at `positions`, copied (into `out` if given)."""
        rows = self.rows[_as_numpy(positions)]
        if out is None:
            return np.asarray(np.take(self.pixels, rows, axis=0))
        return np.take(self.pixels, rows, axis=0, out=out, mode="clip")


class BatchLoader:
    """(images, labels) batches of an `ImageSplit` on `device`: images float32, normalised with
    `mean`/`std` (per channel, on [0, 1] pixels), (B, C, R, R) with channels-last strides."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self._tiled: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._staging = _PinnedStaging() if self.device.type == "cuda" else None

    def load(self, split: ImageSplit, positions: Positions) -> tuple[torch.Tensor, torch.Tensor]:
        positions = _as_numpy(positions)
        if self._staging is None:
            pixels = torch.from_numpy(split.gather(positions))
            labels = split.labels[torch.from_numpy(positions)]
        else:
            pixels, labels = self._staging.to_device(split, positions, self.device)
        return self.normalise(pixels), labels

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, R, R, C) uint8 or float32 pixels, on the device -> normalised (B, C, R, R) float32,
        channels-last: (pixel / 255 - mean) / std, per element as `evaluators.data` always did.
        In place when `pixels` is already a contiguous float32 copy."""
        images = pixels.float().contiguous()
        flat = images.view(len(images), -1)  # (B, R*R*C): mean/std tiled along a long inner
        mean, std = self._tiled_stats(flat.shape[1])  # axis vectorise ~3x better than along C
        if pixels.dtype == torch.uint8:
            flat.div_(255.0)
        flat.sub_(mean).div_(std)
        return images.permute(0, 3, 1, 2)

    def _tiled_stats(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if length not in self._tiled:
            repeats = length // len(self.mean)
            self._tiled[length] = (self.mean.repeat(repeats), self.std.repeat(repeats))
        return self._tiled[length]

    def load_all(self, split: ImageSplit) -> torch.Tensor:
        """Every image of `split` normalised, (N, C, R, R) contiguous: for small data sets only."""
        return self.load(split, np.arange(len(split)))[0].contiguous()


class _PinnedStaging:
    """Two pinned host buffers for pixels and labels, used in turn; a buffer is refilled only once
    the copy that last read it has finished (its CUDA event)."""

    def __init__(self) -> None:
        self.buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None, None]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def to_device(self, split: ImageSplit, positions: np.ndarray, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        slot, self.turn = self.turn, 1 - self.turn
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()
        shape = (len(positions),) + split.pixels.shape[1:]
        dtype = torch.from_numpy(split.pixels[:0]).dtype
        pixels, labels = self._buffers(slot, shape, dtype)
        split.gather(positions, out=pixels.numpy())
        labels.numpy()[:] = split.labels.numpy()[positions]
        on_device = (pixels.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        self.copied[slot] = event
        return on_device

    def _buffers(self, slot: int, shape: tuple[int, ...], dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        size = int(np.prod(shape))
        held = self.buffers[slot]
        if held is None or held[0].dtype != dtype or held[0].numel() < size or held[1].numel() < shape[0]:
            with torch.inference_mode(False):  # plain tensors, refilled in and out of inference mode
                held = (torch.empty(size, dtype=dtype, pin_memory=True),
                        torch.empty(shape[0], dtype=torch.int64, pin_memory=True))
            self.buffers[slot] = held
        return held[0][:size].view(shape), held[1][:shape[0]]


def _as_numpy(positions: Positions) -> np.ndarray:
    if isinstance(positions, torch.Tensor):
        return positions.detach().cpu().numpy().astype(np.int64, copy=False)
    return np.asarray(positions, dtype=np.int64)
