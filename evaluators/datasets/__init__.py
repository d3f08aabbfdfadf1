"""Readers for the image data sets a trial can train on.

Each reader returns a `RawImages`: every image already at the requested square resolution,
float32 in [0, 1], plus labels and class names. `evaluators.data` splits, converts channels and
normalises; the readers only read.
"""

from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError, RawImages

__all__ = ["DataError", "DataInfo", "DataNotFoundError", "RawImages"]
