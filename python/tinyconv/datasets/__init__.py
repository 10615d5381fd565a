"""Data sets for tinyconv: MNIST, Fashion-MNIST and a small Fashion-MNIST sample shipped inside.

The loaders return ``(x_train, t_train), (x_test, t_test)`` with the conventions of *Deep
Learning from Scratch*'s ``dataset/mnist.py``::

    from tinyconv.datasets import load_mnist, load_sample
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)
    (x_train, t_train), (x_test, t_test) = load_sample(flatten=False)   # offline, 6,000 images

Files are read from ``data_dir`` when it is given (and only from there: a missing file is an
error naming it); otherwise they are searched for in ``$TINYCONV_DATA/<name>``, the user cache and
known system locations (Debian's ``dataset-fashion-mnist``), and downloaded from several mirrors
with size limits and SHA-256 checks.  :func:`dataset_locations` tells where each would be read
from.

This subpackage needs only NumPy (no compiled code); ``platformdirs`` and ``tqdm`` are used when
installed.
"""

from __future__ import annotations

from ._catalog import FASHION_MNIST_CLASSES
from ._fetch import (
    ENV_VAR,
    DatasetLocationWarning,
    DatasetNotFoundError,
    IncompleteDataDirError,
    Location,
    dataset_locations,
    user_cache_dir,
)
from ._loaders import SAMPLE_DIR, load_fashion_mnist, load_mnist, load_sample
from .idx import IdxFormatError, read_idx, write_idx

__all__ = [
    "ENV_VAR",
    "FASHION_MNIST_CLASSES",
    "SAMPLE_DIR",
    "DatasetLocationWarning",
    "DatasetNotFoundError",
    "IdxFormatError",
    "IncompleteDataDirError",
    "Location",
    "dataset_locations",
    "load_fashion_mnist",
    "load_mnist",
    "load_sample",
    "read_idx",
    "user_cache_dir",
    "write_idx",
]
