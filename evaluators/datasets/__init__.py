"""Readers for the image data sets a trial can train on.

`digits` is read into memory (`RawImages`, float32 in [0, 1]); `cifar10` and `imagefolder` are
decoded once into the on-disk cache (`cache.py`: memory-mapped uint8 arrays, shared by every
process on the machine). `evaluators.data` splits, converts channels and normalises; the readers
only read.
"""

from evaluators.datasets.raw import DataError, DataInfo, DataNotFoundError, RawImages

__all__ = ["DataError", "DataInfo", "DataNotFoundError", "RawImages"]
