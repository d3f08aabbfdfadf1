"""CIFAR-10 from its python-pickle batches in a local directory (never downloaded).

Expected layout (the official `cifar-10-python.tar.gz`, extracted)::

    PATH/data_batch_1 ... data_batch_5   (or PATH/cifar-10-batches-py/data_batch_1 ...)
    PATH/batches.meta                    (optional: class names)

Validation comes from the training batches (`evaluators.data` splits them by `val_fraction`);
`test_batch` is never read, so a search cannot tune itself on the test set.

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

from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError, RawImages, resize_square

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
DEFAULT_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")
SIDE = 32

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


def read_cifar10(path: str | Path, resolution: int) -> RawImages:
    """The 50,000 training images (all five data batches), resized to `resolution`, 3 channels."""
    folder = _batch_dir(Path(path))
    arrays = [_batch_arrays(folder / name) for name in TRAIN_BATCHES]
    data = np.concatenate([a for a, _ in arrays])
    labels = torch.from_numpy(np.concatenate([b for _, b in arrays]))
    images = torch.from_numpy(data).view(-1, 3, SIDE, SIDE).float().div_(255.0)
    return RawImages(resize_square(images, resolution), labels, _class_names(folder))
