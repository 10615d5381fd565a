"""What tinyconv knows about each data set: file names, checksums, mirrors, system locations.

Checksums, with where they come from (only published values are used; none was made up here):

* ``gz_sha256`` -- SHA-256 of the gzip files exactly as the mirrors serve them, checked on every
  download.  Source: tensorflow/datasets, ``tensorflow_datasets/url_checksums/mnist.txt`` and
  ``.../fashion_mnist.txt`` (which also give the byte sizes used in the comments below); the same
  values appear in Keras's and many other projects' download code.
* ``payload_sha256`` -- SHA-256 of the *decompressed* IDX bytes.  Repackagers recompress the
  files (Debian's ``dataset-fashion-mnist`` strips the file name from the gzip header, so its .gz
  hashes differ from upstream), but the payload stays the same; this is how the tests and
  ``_make_sample`` prove that a local copy is the genuine data.  Fashion-MNIST values: computed
  from the Debian package's files and identical to the values published in several public
  projects next to Zalando's own .gz MD5s.  MNIST values: as published in several public
  projects alongside the gz SHA-256 values above (not recomputed here: no copy of MNIST was at
  hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "MIRRORS",
    "MNIST",
    "SYSTEM_DIRS",
    "DatasetSpec",
    "IdxFileSpec",
    "get_spec",
]


@dataclass(frozen=True)
class IdxFileSpec:
    """One of a data set's four files."""

    role: str  # "train_images", "train_labels", "test_images" or "test_labels"
    filename: str  # the published gzip name; the uncompressed name drops ".gz"
    gz_sha256: str
    payload_sha256: str | None
    count: int  # images or labels in the full data set

    @property
    def raw_filename(self) -> str:
        return self.filename[: -len(".gz")]

    @property
    def ndim(self) -> int:
        return 3 if self.role.endswith("images") else 1

    @property
    def payload_bytes(self) -> int:
        """Size of the uncompressed IDX file: header, then one byte per pixel or label."""
        header = 4 + 4 * self.ndim
        return header + self.count * (28 * 28 if self.ndim == 3 else 1)

    @property
    def max_download_bytes(self) -> int:
        """The most a download of this file may deliver: deflate never grows data by more than
        5 bytes per 16 KiB block (stored blocks), plus the gzip header (with a file name) and
        trailer; 64 KiB of slack covers both with room to spare."""
        return self.payload_bytes + self.payload_bytes // 1000 + (64 << 10)


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # short name, also the sub-directory in the cache and in $TINYCONV_DATA
    title: str  # for messages
    files: tuple[IdxFileSpec, ...]

    def file(self, role: str) -> IdxFileSpec:
        return next(f for f in self.files if f.role == role)


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    files=(
        IdxFileSpec(
            "train_images",
            "train-images-idx3-ubyte.gz",  # 9,912,422 bytes
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            60000,
        ),
        IdxFileSpec(
            "train_labels",
            "train-labels-idx1-ubyte.gz",  # 28,881 bytes
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            60000,
        ),
        IdxFileSpec(
            "test_images",
            "t10k-images-idx3-ubyte.gz",  # 1,648,877 bytes
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            10000,
        ),
        IdxFileSpec(
            "test_labels",
            "t10k-labels-idx1-ubyte.gz",  # 4,542 bytes
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            10000,
        ),
    ),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files=(
        IdxFileSpec(
            "train_images",
            "train-images-idx3-ubyte.gz",  # 26,421,880 bytes
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            60000,
        ),
        IdxFileSpec(
            "train_labels",
            "train-labels-idx1-ubyte.gz",  # 29,515 bytes
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60000,
        ),
        IdxFileSpec(
            "test_images",
            "t10k-images-idx3-ubyte.gz",  # 4,422,102 bytes
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            10000,
        ),
        IdxFileSpec(
            "test_labels",
            "t10k-labels-idx1-ubyte.gz",  # 5,148 bytes
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10000,
        ),
    ),
)

# Label i of Fashion-MNIST names FASHION_MNIST_CLASSES[i] (from Zalando's README).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}

# Base URLs tried in this order; a file's URL is base + file name.  Module-level and mutable so
# that tests (and users behind a private mirror) can replace them.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
        "http://yann.lecun.com/exdb/mnist/",  # the original home, often down
    ],
    "fashion-mnist": [
        # HTTP only (an S3 website endpoint); the SHA-256 check is what makes it safe.
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}

# Directories where operating-system packages install the files.
SYSTEM_DIRS: dict[str, list[Path]] = {
    "mnist": [],  # no Debian/Ubuntu package ships MNIST
    # Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (the four .gz files, recompressed).
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"unknown data set {name!r}; known: {known}") from None
