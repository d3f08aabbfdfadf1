"""CIFAR-10 from its python-pickle batches in a local directory (never downloaded).

Expected layout (the official `cifar-10-python.tar.gz`, extracted)::

    PATH/data_batch_1 ... data_batch_5   (or PATH/cifar-10-batches-py/data_batch_1 ...)
    PATH/batches.meta                    (optional: class names)

Validation comes from the training batches (`evaluators.data` splits them by `val_fraction`);
`test_batch` is never read, so a search cannot tune itself on the test set. The batches are read
once into the data cache (`evaluators.datasets.cache`) at the trial's resolution and channels.

The batches are pickles, and a plain `pickle.load` would run whatever code a file names. They are
read with an unpickler that only rebuilds the plain containers and numpy arrays a CIFAR batch
holds and refuses everything else.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluators.datasets.cache import CacheKey, CacheWriter, file_stat
from evaluators.datasets.decode import Progress, pixel_sums
from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError, resize_square

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
DEFAULT_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")
SIDE = 32
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 weights of R, G, B in grey
RESIZE_CHUNK = 1000  # images resized at a time (bounded memory at any resolution)

# The only globals a CIFAR batch pickle needs: numpy array reconstruction, and `_codecs.encode`
# which protocol-2 pickles written by Python 3 use for bytes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_batch_file(path: Path) -> dict[str, Any]:
    """Unpickle one batch file as data only; keys decoded to str. Raises DataError if corrupt."""
    try:
        data = _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except FileNotFoundError:
        raise DataNotFoundError(f"cifar10: missing batch file {path}") from None
    except Exception as exc:  # truncated, not a pickle, or a pickle naming forbidden code
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"cifar10: {path} holds a {type(data).__name__}, expected a dict batch")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = load_batch_file(path)
    missing = {"data", "labels"} - set(batch)
    if missing:
        raise DataError(f"cifar10: {path} lacks key(s) {sorted(missing)}, expected 'data' and 'labels'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise DataError(f"cifar10: {path} 'data' is {data.dtype}{list(data.shape)}, "
                        f"expected uint8 [N, {3 * SIDE * SIDE}]")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"cifar10: {path} has {labels.shape} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DataError(f"cifar10: {path} has labels outside 0..9")
    return data, labels.astype(np.int64)


def _batch_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataNotFoundError(f"cifar10: directory {path} does not exist; expected the extracted "
                                f"CIFAR-10 python batches ({', '.join(TRAIN_BATCHES)})")
    for candidate in (path, path / "cifar-10-batches-py"):
        if all((candidate / name).is_file() for name in TRAIN_BATCHES):
            return candidate
    missing = [name for name in TRAIN_BATCHES if not (path / name).is_file()]
    raise DataNotFoundError(f"cifar10: {path} lacks {', '.join(missing)}; expected the extracted "
                            f"CIFAR-10 python batches in it or in {path / 'cifar-10-batches-py'}")


def _class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return DEFAULT_CLASS_NAMES
    names = load_batch_file(meta).get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"cifar10: {meta} 'label_names' should list 10 class names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def describe_cifar10(path: str | Path) -> DataInfo:
    """Class names (batches.meta, else CIFAR-10's own) after checking the batches are there."""
    return DataInfo("cifar10", _class_names(_batch_dir(Path(path))), in_channels=3)


def cifar10_key(path: str | Path, resolution: int, channels: int = 3) -> CacheKey:
    """The cache key of the training batches (and batches.meta) at `resolution` and `channels`."""
    folder = _batch_dir(Path(path)).resolve()
    names = TRAIN_BATCHES + (("batches.meta",) if (folder / "batches.meta").is_file() else ())
    return CacheKey("cifar10", folder, resolution, channels,
                    tuple(file_stat(folder / name, folder) for name in names))


def build_cifar10(key: CacheKey, writer: CacheWriter) -> tuple[tuple[str, ...], list[str]]:
    """The 50,000 training images (all five data batches) into `writer`'s entry: resized to the
    key's resolution (bilinear, antialiased when shrinking) and converted to grey when it asks
    for one channel, a batch file at a time. Returns (class names, no skipped files)."""
    arrays = [_batch_arrays(key.root / name) for name in TRAIN_BATCHES]
    progress = Progress(sum(len(labels) for _, labels in arrays), f"cifar10 {key.root} at {key.resolution}px")
    images = np.load(writer.create_images("train", progress.total), mmap_mode="r+")
    start = 0
    for data, labels in arrays:
        for offset in range(0, len(labels), RESIZE_CHUNK):
            chunk = data[offset:offset + RESIZE_CHUNK].reshape(-1, 3, SIDE, SIDE)
            images[start:start + len(chunk)] = _converted(chunk, key.resolution, key.channels)
            start += len(chunk)
            progress.advance(len(chunk))
    images.flush()
    sums = np.concatenate([pixel_sums(images[i:i + RESIZE_CHUNK])
                           for i in range(0, len(images), RESIZE_CHUNK)])
    labels = np.concatenate([labels for _, labels in arrays])
    writer.finish_split("train", labels, sums, np.ones(len(labels), bool))
    del images
    progress.finish(f" into {writer.folder.parent}")
    return _class_names(key.root), []


def _converted(chunk: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """(B, 3, 32, 32) uint8 -> (B, R, R, channels) uint8, rounded from float resizing/luma."""
    if resolution == SIDE and channels == 3:
        return chunk.transpose(0, 2, 3, 1)
    images = resize_square(torch.from_numpy(chunk).float().div_(255.0), resolution)
    if channels == 1:
        images = (images * LUMA.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return images.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
