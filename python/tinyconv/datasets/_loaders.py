"""``load_mnist``, ``load_fashion_mnist`` and ``load_sample``, with DLfS's return conventions.

*Deep Learning from Scratch*'s ``dataset/mnist.py`` returns
``(x_train, t_train), (x_test, t_test)`` where

* images are ``uint8`` of shape ``(N, 784)``; ``normalize=True`` turns them into ``float32``
  divided by 255.0; ``flatten=False`` reshapes them to ``(N, 1, 28, 28)``;
* labels are ``uint8`` of shape ``(N,)``; ``one_hot_label=True`` turns them into ``(N, 10)``
  one-hot rows of DLfS's dtype, ``float64`` (it builds them with ``np.zeros((X.size, 10))``).

These loaders reproduce that exactly (same dtypes, same float32 arithmetic), so code written for
the book runs unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._typing import Array, PathLike
from ._catalog import FASHION_MNIST, MNIST, DatasetSpec, IdxFileSpec
from ._fetch import find_files
from .idx import IdxFormatError, read_idx

__all__ = ["SAMPLE_DIR", "load_arrays", "load_fashion_mnist", "load_mnist", "load_sample"]

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)

# The sample ships as ordinary package data, unzipped, so a plain path works (wheels are
# installed unpacked; tinyconv's compiled core rules out zip imports anyway).
SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "fashion-mnist-sample"

Split = tuple[Array, Array]


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: PathLike | None = None,
    download: bool = True,
) -> tuple[Split, Split]:
    """MNIST as ``(x_train, t_train), (x_test, t_test)``, exactly like DLfS's ``load_mnist``.

    Files are read from ``data_dir`` when it is given, and from there only: if any of the four
    is missing, :class:`~tinyconv.datasets.IncompleteDataDirError` names it.  Otherwise they are
    looked for in ``$TINYCONV_DATA/mnist`` and the user cache, then downloaded (unless
    ``download=False``) with size limits and SHA-256 checks; a place on that path holding only
    some of the files is passed over with a :class:`~tinyconv.datasets.DatasetLocationWarning`.
    See :func:`tinyconv.datasets.dataset_locations`.  Raises
    :class:`~tinyconv.datasets.DatasetNotFoundError` listing what was tried and how to fix it.
    """
    return _load(MNIST, normalize, flatten, one_hot_label, data_dir, download)


def load_fashion_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: PathLike | None = None,
    download: bool = True,
) -> tuple[Split, Split]:
    """Fashion-MNIST, same conventions and search as :func:`load_mnist` (``fashion-mnist``
    sub-directories; also ``/usr/share/datasets/fashion-mnist`` from Debian's
    ``dataset-fashion-mnist`` package).  Class names: ``FASHION_MNIST_CLASSES``."""
    return _load(FASHION_MNIST, normalize, flatten, one_hot_label, data_dir, download)


def load_sample(
    normalize: bool = True, flatten: bool = True, one_hot_label: bool = False
) -> tuple[Split, Split]:
    """A real subset of Fashion-MNIST shipped inside tinyconv: 5,000 training images (500 per
    class) and 1,000 test images (100 per class).  Needs no download; same return convention
    as :func:`load_mnist`.  See ``data/fashion-mnist-sample/README.md`` for its provenance."""
    paths = {f.role: SAMPLE_DIR / f.filename for f in FASHION_MNIST.files}
    arrays = load_arrays(FASHION_MNIST, paths)
    return _dlfs_convention(arrays, normalize, flatten, one_hot_label)


def _load(
    spec: DatasetSpec,
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    data_dir: PathLike | None,
    download: bool,
) -> tuple[Split, Split]:
    paths = find_files(spec, data_dir, download=download)
    return _dlfs_convention(load_arrays(spec, paths), normalize, flatten, one_hot_label)


def load_arrays(spec: DatasetSpec, paths: dict[str, Path]) -> dict[str, Array]:
    """Read and cross-check the four files: ``uint8`` images ``(N, 28, 28)``, labels ``(N,)``
    in 0..9, as many labels as images.  Errors name the offending file."""
    arrays = {}
    for file_spec in spec.files:
        path = paths[file_spec.role]
        array = read_idx(path, ndim=file_spec.ndim)
        _check_contents(file_spec, path, array)
        arrays[file_spec.role] = array
    for split in ("train", "test"):
        n_images = len(arrays[f"{split}_images"])
        n_labels = len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise IdxFormatError(
                paths[f"{split}_labels"],
                f"{n_labels} labels, but {paths[f'{split}_images']} holds {n_images} images",
            )
    return arrays


def _check_contents(file_spec: IdxFileSpec, path: Path, array: Array) -> None:
    if file_spec.ndim == 3 and array.shape[1:] != IMAGE_SHAPE:
        raise IdxFormatError(
            path,
            f"images are {array.shape[1]}x{array.shape[2]} pixels; "
            f"expected {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}",
        )
    if file_spec.ndim == 1 and array.size and array.max() >= NUM_CLASSES:
        raise IdxFormatError(path, f"label {int(array.max())} found; labels must be 0..9")


def _dlfs_convention(
    arrays: dict[str, Array], normalize: bool, flatten: bool, one_hot_label: bool
) -> tuple[Split, Split]:
    def images(x: Array) -> Array:
        # DLfS keeps images as (N, 784) rows (spelled out: -1 cannot be inferred when N is 0)
        x = x.reshape(len(x), IMAGE_SHAPE[0] * IMAGE_SHAPE[1])
        if normalize:
            # Exactly DLfS's arithmetic: cast to float32, then divide in place by 255.0.
            x = x.astype(np.float32)
            x /= 255.0
        if not flatten:
            x = x.reshape(len(x), 1, *IMAGE_SHAPE)
        return x

    def labels(t: Array) -> Array:
        if one_hot_label:
            return np.eye(NUM_CLASSES)[t]  # float64, as DLfS's np.zeros((N, 10))
        return t

    return (
        (images(arrays["train_images"]), labels(arrays["train_labels"])),
        (images(arrays["test_images"]), labels(arrays["test_labels"])),
    )
