"""Build (or check) the Fashion-MNIST sample shipped in ``data/fashion-mnist-sample/``.

Run from the repository root, with Debian's ``dataset-fashion-mnist`` package installed::

    PYTHONPATH=python python -m tinyconv.datasets._make_sample           # rebuild, then verify
    PYTHONPATH=python python -m tinyconv.datasets._make_sample --check   # verify only

Recipe (deterministic, no randomness): from the full Fashion-MNIST files, keep the first 500
images of each class in the training set and the first 100 of each class in the test set, in
their original order; write them as gzip IDX files with the published names.

Verification: the source files' decompressed SHA-256 must equal the published ones (so the
sample is cut from genuine Fashion-MNIST), the shipped files must decode to exactly the recipe's
selection, be class-balanced, and stay small.  The digests printed at the end are the ones
``tests/test_datasets.py`` pins.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._typing import Array
from ._catalog import FASHION_MNIST, SYSTEM_DIRS, IdxFileSpec
from ._loaders import SAMPLE_DIR, load_arrays
from .idx import encode_idx, write_idx

TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100
NUM_CLASSES = 10
MAX_SAMPLE_BYTES = 3 * 1024 * 1024
DEBIAN_COPYRIGHT = Path("/usr/share/doc/dataset-fashion-mnist/copyright")


def first_per_class(labels: Array, per_class: int) -> Array:
    """Indices of the first ``per_class`` examples of each class, in ascending order."""
    chosen = []
    for label in range(NUM_CLASSES):
        indices = np.flatnonzero(labels == label)[:per_class]
        if len(indices) < per_class:
            raise ValueError(f"class {label} has only {len(indices)} examples")
        chosen.append(indices)
    return np.sort(np.concatenate(chosen))


def select_sample(full: dict[str, Array]) -> dict[str, Array]:
    """The recipe: the sample's four arrays, cut from the full data set's four arrays."""
    train = first_per_class(full["train_labels"], TRAIN_PER_CLASS)
    test = first_per_class(full["test_labels"], TEST_PER_CLASS)
    return {
        "train_images": full["train_images"][train],
        "train_labels": full["train_labels"][train],
        "test_images": full["test_images"][test],
        "test_labels": full["test_labels"][test],
    }


def array_digest(array: Array) -> str:
    """SHA-256 of an array's IDX encoding (header + data): pins shape, dtype and content, and
    does not depend on how zlib happened to compress it."""
    return hashlib.sha256(encode_idx(array)).hexdigest()


def read_genuine(source: Path) -> dict[str, Array]:
    """The full data set from ``source``, after checking it against the published payload
    SHA-256s (Debian recompresses the .gz files, so their own hashes cannot be compared)."""
    paths = {f.role: _find(source, f) for f in FASHION_MNIST.files}
    full = load_arrays(FASHION_MNIST, paths)
    for file_spec in FASHION_MNIST.files:
        digest = array_digest(full[file_spec.role])
        if digest != file_spec.payload_sha256:
            raise SystemExit(
                f"{paths[file_spec.role]}: decompressed SHA-256 {digest} is not the "
                f"published {file_spec.payload_sha256}; not genuine Fashion-MNIST"
            )
    return full


def _find(source: Path, file_spec: IdxFileSpec) -> Path:
    for name in (file_spec.filename, file_spec.raw_filename):
        if (source / name).is_file():
            return source / name
    raise SystemExit(
        f"{source / file_spec.filename} not found; "
        "install it with: apt-get install dataset-fashion-mnist"
    )


def write_sample(sample: dict[str, Array], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for file_spec in FASHION_MNIST.files:
        write_idx(target / file_spec.filename, sample[file_spec.role], gzip=True)
    # The MIT licence requires its notice to travel with the data: ship Debian's copyright file
    # (Zalando's notice and the licence text) verbatim.
    shutil.copyfile(DEBIAN_COPYRIGHT, target / "LICENSE")


def verify(expected: dict[str, Array], target: Path) -> None:
    shipped = load_arrays(FASHION_MNIST, {f.role: target / f.filename for f in FASHION_MNIST.files})
    for role, array in expected.items():
        if shipped[role].shape != array.shape or not np.array_equal(shipped[role], array):
            raise SystemExit(f"{target}: {role} differs from the recipe's selection")
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        counts = np.bincount(shipped[f"{split}_labels"], minlength=NUM_CLASSES)
        if not np.all(counts == per_class):
            raise SystemExit(f"{split} labels are not balanced: {counts.tolist()}")
    size = sum((target / f.filename).stat().st_size for f in FASHION_MNIST.files)
    if size > MAX_SAMPLE_BYTES:
        raise SystemExit(f"sample takes {size} bytes, more than {MAX_SAMPLE_BYTES}")
    if not (target / "LICENSE").is_file():
        raise SystemExit(f"{target / 'LICENSE'} is missing")
    print(f"OK: {target} holds the recipe's selection ({size:,} bytes compressed)")
    for file_spec in FASHION_MNIST.files:
        print(
            f"  {file_spec.role:13s} {shipped[file_spec.role].shape!s:16s} "
            f"array SHA-256 {array_digest(shipped[file_spec.role])}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=SYSTEM_DIRS["fashion-mnist"][0],
        help="directory with the full Fashion-MNIST files (default: %(default)s)",
    )
    parser.add_argument(
        "--target",
        type=Path,
        default=SAMPLE_DIR,
        help="where the sample goes (default: the package's data directory)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only verify the existing sample against the recipe"
    )
    args = parser.parse_args(argv)
    sample = select_sample(read_genuine(args.source))
    if not args.check:
        write_sample(sample, args.target)
    verify(sample, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
