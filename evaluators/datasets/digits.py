"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images of 0-9, no download."""

from __future__ import annotations

import torch

from evaluators.datasets.raw import DataInfo, RawImages, resize_square

CLASS_NAMES = tuple(str(n) for n in range(10))


def describe_digits() -> DataInfo:
    return DataInfo("digits", CLASS_NAMES, in_channels=1, flip_invariant=False)


def read_digits(resolution: int) -> RawImages:
    """All 1,797 digits, bilinearly resized from 8x8 to `resolution`, one channel.

    Digits are not mirror-symmetric (a flipped 2 is not a 2), so `flip_invariant` is False.
    """
    from sklearn.datasets import load_digits  # here: scikit-learn takes seconds to import

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target).long()
    names = tuple(str(int(n)) for n in bunch.target_names)
    return RawImages(resize_square(images, resolution), labels, names, flip_invariant=False)
