"""Tests for tinyconv.datasets: the IDX reader/writer, the DLfS loaders, the search order, the
downloader (against a local HTTP server only), the shipped sample and, where installed, the real
Fashion-MNIST from Debian.

No test touches the internet: an autouse fixture empties the mirror lists, points the cache and
system locations at temporary directories and makes any non-loopback URL fail the test.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import sys
import threading
import tracemalloc
import types
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyconv import datasets
from tinyconv.datasets import (
    FASHION_MNIST_CLASSES,
    DatasetLocationWarning,
    DatasetNotFoundError,
    IdxFormatError,
    IncompleteDataDirError,
    _catalog,
    _fetch,
    _loaders,
    _make_sample,
    dataset_locations,
    idx,
    load_fashion_mnist,
    load_mnist,
    load_sample,
    read_idx,
    write_idx,
)
from tinyconv.datasets.idx import decode_idx, encode_idx

# Captured at import, before the autouse fixture patches them.
DEBIAN_FASHION_DIR = _catalog.SYSTEM_DIRS["fashion-mnist"][0]
REAL_USER_CACHE_DIR = _fetch.user_cache_dir
FILE_NAMES = [f.filename for f in _catalog.MNIST.files]


# --------------------------------------------------------------------------- helpers & fixtures


def make_fake_dataset(
    directory: Path, n_train: int = 12, n_test: int = 5, *, compress: bool = True, seed: int = 0
) -> dict:
    """Write a tiny MNIST-shaped data set (4 IDX files) into ``directory``; return its arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for spec in _catalog.MNIST.files:
        name = spec.filename if compress else spec.raw_filename
        write_idx(directory / name, arrays[spec.role], gzip=compress)
    return arrays


def spec_for(directory: Path, base=_catalog.MNIST):
    """A copy of ``base`` whose download checksums are those of the files in ``directory``."""
    files = tuple(
        replace(f, gz_sha256=hashlib.sha256((directory / f.filename).read_bytes()).hexdigest())
        for f in base.files
    )
    return replace(base, files=files)


def dlfs_reference(arrays: dict, normalize: bool, flatten: bool, one_hot_label: bool):
    """DLfS's dataset/mnist.py transformations, transcribed step by step."""
    out = {
        "train_img": arrays["train_images"].reshape(-1, 784),
        "train_label": arrays["train_labels"],
        "test_img": arrays["test_images"].reshape(-1, 784),
        "test_label": arrays["test_labels"],
    }
    if normalize:
        for key in ("train_img", "test_img"):
            out[key] = out[key].astype(np.float32)
            out[key] /= 255.0
    if one_hot_label:
        for key in ("train_label", "test_label"):
            one_hot = np.zeros((out[key].size, 10))
            for idx, row in enumerate(one_hot):
                row[out[key][idx]] = 1
            out[key] = one_hot
    if not flatten:
        for key in ("train_img", "test_img"):
            out[key] = out[key].reshape(-1, 1, 28, 28)
    return (out["train_img"], out["train_label"]), (out["test_img"], out["test_label"])


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache, no system directories, no mirrors, no internet; yields the cache root."""
    cache_root = tmp_path / "user-cache" / "tinyconv"
    monkeypatch.setattr(_fetch, "user_cache_dir", lambda: cache_root)
    monkeypatch.delenv(_fetch.ENV_VAR, raising=False)
    for name in _catalog.DATASETS:
        monkeypatch.setitem(_catalog.SYSTEM_DIRS, name, [])
        monkeypatch.setitem(_catalog.MIRRORS, name, [])
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # so urllib talks to 127.0.0.1 directly

    foreign_urls = []
    real_urlopen = urllib.request.urlopen

    def loopback_only(url, *args, **kwargs):
        if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
            foreign_urls.append(url)
            raise urllib.error.URLError("blocked: tests must not reach the internet")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(_fetch, "urlopen", loopback_only)
    yield cache_root
    assert not foreign_urls, f"a test tried to reach the internet: {foreign_urls}"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: ``bytes`` (200), an int (that status), or
    ``("truncate", bytes)`` (announces the full length, sends half, hangs up)."""

    def do_GET(self):
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path, 404)
        if isinstance(route, int):
            self.send_error(route)
            return
        truncate = isinstance(route, tuple)
        body = route[1] if truncate else route
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
            self.close_connection = True

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (ephemeral port) in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes, server.requests = {}, []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def serve_dataset(
    server, prefix: str, directory: Path, *, corrupt=(), missing=(), truncate=()
) -> str:
    """Route ``prefix/<file>`` to the files of ``directory``; return the mirror's base URL."""
    for name in FILE_NAMES:
        body = (directory / name).read_bytes()
        if name in missing:
            continue
        if name in corrupt:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        server.routes[f"/{prefix}/{name}"] = ("truncate", body) if name in truncate else body
    return f"{server.url}/{prefix}/"


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def leftovers(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- IDX reader/writer


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("shape", [(7, 28, 28), (7,), (2, 3, 4, 5)])
def test_idx_round_trip(tmp_path, compress, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = write_idx(tmp_path / "a.idx", array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == shape
    assert np.array_equal(back, array)
    back[...] = 0  # writable, like DLfS's arrays


@given(
    array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)),
    compress=st.booleans(),
)
def test_idx_round_trip_property(tmp_path_factory, array, compress):
    path = tmp_path_factory.mktemp("idx") / "x"
    write_idx(path, array, gzip=compress)
    assert np.array_equal(read_idx(path, ndim=array.ndim), array)


def test_idx_format_is_detected_by_content_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    raw_named_gz = write_idx(tmp_path / "labels.gz", labels, gzip=False)
    gz_named_raw = write_idx(tmp_path / "labels", labels, gzip=True)
    assert np.array_equal(read_idx(raw_named_gz), labels)
    assert np.array_equal(read_idx(gz_named_raw), labels)


def test_idx_header_layout_matches_the_mnist_spec():
    images = encode_idx(np.zeros((2, 28, 28), np.uint8))
    labels = encode_idx(np.zeros(2, np.uint8))
    assert images[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    assert labels[:8] == bytes.fromhex("0000080100000002")


def test_gzip_output_is_reproducible(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    first = write_idx(tmp_path / "1.gz", array).read_bytes()
    second = write_idx(tmp_path / "2.gz", array).read_bytes()
    assert first == second


def test_concatenated_gzip_members_are_accepted(tmp_path):
    raw = encode_idx(np.arange(50, dtype=np.uint8))
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(raw[:20]) + gzip.compress(raw[20:]))
    assert np.array_equal(read_idx(path), np.arange(50))


def _gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


_LABELS_RAW = encode_idx(np.arange(40, dtype=np.uint8) % 10)
_LABELS_GZ = _gz(_LABELS_RAW)

CORRUPTIONS = {
    "empty file": (b"", "too short"),
    "raw truncated": (_LABELS_RAW[:-1], "truncated"),
    "raw trailing bytes": (_LABELS_RAW + b"\0", "trailing"),
    "header cut short": (_LABELS_RAW[:6], "header is cut short"),
    "wrong magic": (b"\x01" + _LABELS_RAW[1:], "bad magic"),
    "wrong type code": (_LABELS_RAW[:2] + b"\x0d" + _LABELS_RAW[3:], "type code 0x0d"),
    "zero dimensions": (_LABELS_RAW[:3] + b"\x00" + _LABELS_RAW[4:], "declares 0 dimensions"),
    "wrong kind (labels where images are expected)": (_LABELS_RAW, "expected 0x00000803"),
    "gzip truncated": (_LABELS_GZ[:-12], "truncated"),
    "gzip cut inside the header": (_LABELS_GZ[:5], "truncated"),
    "gzip body corrupt": (
        _LABELS_GZ[:12] + bytes([_LABELS_GZ[12] ^ 0xFF]) + _LABELS_GZ[13:],
        "corrupt gzip",
    ),
    "gzip CRC wrong": (_LABELS_GZ[:-8] + b"\0\0\0\0" + _LABELS_GZ[-4:], "corrupt gzip"),
    "gzip trailing junk": (_LABELS_GZ + b"junk", "unexpected bytes after the gzip stream"),
    "gzip trailing zeros": (_LABELS_GZ + b"\0\0\0\0", "unexpected bytes after the gzip stream"),
    "valid gzip of a truncated IDX": (_gz(_LABELS_RAW[:-3]), "truncated"),
    "valid gzip with IDX trailing bytes": (_gz(_LABELS_RAW + b"xy"), "trailing"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_idx_is_rejected_naming_the_file(tmp_path, kind):
    blob, problem = CORRUPTIONS[kind]
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(blob)
    ndim = 3 if "wrong kind" in kind else 1
    with pytest.raises(IdxFormatError, match=problem) as excinfo:
        read_idx(path, ndim=ndim)
    assert str(path) in str(excinfo.value)
    assert excinfo.value.path == path


def test_write_idx_rejects_non_byte_data(tmp_path):
    with pytest.raises(TypeError):
        write_idx(tmp_path / "f", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"must lie in 0\.\.255"):
        write_idx(tmp_path / "f", np.array([0, 256]))
    with pytest.raises(ValueError, match="needs 1 to 4 dimensions, got 0"):
        write_idx(tmp_path / "f", np.array(5))  # 0-d
    assert np.array_equal(read_idx(write_idx(tmp_path / "f", np.array([0, 255]))), [0, 255])


def _header(type_code: int, dims) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


CRAFTED_HEADERS = {
    "five dimensions": (_header(0x08, [1, 1, 1, 1, 1]) + b"\0", "declares 5 dimensions; 1 to 4"),
    "255 dimensions": (_header(0x08, [1] * 255), "declares 255 dimensions"),
    "signed bytes (a spec type)": (
        _header(0x09, [3]) + b"abc",
        r"type code 0x09 \(signed byte data\)",
    ),
    "doubles (a spec type)": (_header(0x0E, [1]) + bytes(8), r"0x0e \(double, 8 bytes data\)"),
    "a code not in the spec": (
        _header(0x42, [1]) + b"\0",
        r"0x42 \(not a type of the IDX format\)",
    ),
    "dims whose product overflows 64 bits": (
        _header(0x08, [2**32 - 1] * 4),
        "at most 1,073,741,824",
    ),
    "more data claimed than accepted": (
        _header(0x08, [2**15, 2**15 + 1]),
        "1,073,774,592 bytes of data; at most",
    ),
    "magic with a non-zero first byte": (b"\x08" + _header(0x08, [1])[1:] + b"\0", "bad magic"),
}


@pytest.mark.parametrize("kind", list(CRAFTED_HEADERS))
@pytest.mark.parametrize("compress", [False, True])
def test_crafted_idx_headers_are_rejected_before_any_data_is_read(kind, compress):
    blob, problem = CRAFTED_HEADERS[kind]
    with pytest.raises(IdxFormatError, match=problem):
        decode_idx(_gz(blob) if compress else blob)


def _gzip_of_zeros(header: bytes, zeros: int) -> bytes:
    """gzip of ``header`` followed by ``zeros`` zero bytes, built without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(header)]
    block = bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(packer.compress(block))
    parts.append(packer.flush())
    return b"".join(parts)


def _peak_bytes_allocated(function) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(IdxFormatError):
            function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gzip_bomb_is_inflated_no_further_than_the_header_claims(tmp_path):
    # 64 KiB of compressed data that inflates to 256 MiB after a header claiming ten labels.
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(_gzip_of_zeros(_header(0x08, [10]), 256 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(
        IdxFormatError, match="unexpected trailing bytes after the 10 bytes"
    ) as excinfo:
        read_idx(path, ndim=1)
    assert str(path) in str(excinfo.value)
    # fae188c inflated all 256 MiB before looking at the header; now at most 11 bytes of payload
    # are asked of zlib, so the peak is one chunk of compressed input, not the expansion.
    assert _peak_bytes_allocated(lambda: read_idx(path, ndim=1)) < 8 << 20


def test_raw_idx_file_is_read_no_further_than_the_header_claims(tmp_path):
    path = tmp_path / "labels"
    with open(path, "wb") as handle:
        handle.write(_header(0x08, [10]) + bytes(10))
        handle.truncate(256 << 20)  # sparse: 256 MiB of zeros after the ten labels
    with pytest.raises(IdxFormatError, match="trailing bytes"):
        read_idx(path)
    assert _peak_bytes_allocated(lambda: read_idx(path)) < 8 << 20


@given(
    array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)),
    members=st.lists(st.integers(0, 400), max_size=3),
    chunk=st.integers(1, 9),
    trailing=st.sampled_from([b"", b"\0", b"\x1f", b"\x1f\x8b", b"junk"]),
)
def test_streamed_gunzip_agrees_with_the_whole_file(array, members, chunk, trailing):
    """Any split into gzip members, read in chunks of any size, gives the array back; anything
    after the last member is an error, even a lone byte that starts like the gzip magic."""
    raw = encode_idx(array)
    cuts = sorted({min(cut, len(raw)) for cut in members} | {0, len(raw)})
    blob = b"".join(_gz(raw[a:b]) for a, b in zip(cuts, cuts[1:]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idx, "READ_CHUNK_BYTES", chunk)
        assert np.array_equal(decode_idx(blob), array)
        if trailing:
            with pytest.raises(IdxFormatError):
                decode_idx(blob + trailing)
        with pytest.raises(IdxFormatError, match="truncated"):
            decode_idx(blob[:-1])
        with pytest.raises(IdxFormatError, match="trailing"):
            decode_idx(_gz(raw + b"x"))


def test_read_idx_gives_a_writable_array_of_the_file(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.arange(12, dtype=np.uint8).reshape(3, 4))
    array = read_idx(path, ndim=2)
    array[0, 0] = 99
    assert array.flags.writeable
    assert read_idx(path)[0, 0] == 0


# --------------------------------------------------------------------------- loader conventions


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot_label", [True, False])
def test_loader_matches_dlfs_conventions(tmp_path, normalize, flatten, one_hot_label):
    arrays = make_fake_dataset(tmp_path / "mnist")
    got = load_mnist(normalize, flatten, one_hot_label, data_dir=tmp_path / "mnist", download=False)
    want = dlfs_reference(arrays, normalize, flatten, one_hot_label)
    for got_split, want_split in zip(got, want):
        for got_array, want_array in zip(got_split, want_split):
            assert got_array.dtype == want_array.dtype
            assert got_array.shape == want_array.shape
            assert np.array_equal(got_array, want_array)
    (x_train, t_train), (x_test, _) = got
    assert x_train.shape[0] == 12
    assert x_test.shape[0] == 5
    assert x_train.dtype == (np.float32 if normalize else np.uint8)
    assert t_train.dtype == (np.float64 if one_hot_label else np.uint8)
    if normalize:
        assert x_train.min() >= 0.0
        assert x_train.max() <= 1.0


def test_uncompressed_files_and_tinyconv_data_env(tmp_path, monkeypatch):
    root = tmp_path / "data-root"
    arrays = make_fake_dataset(root / "fashion-mnist", n_train=10, compress=False)
    monkeypatch.setenv("TINYCONV_DATA", str(root))
    (x_train, t_train), _ = load_fashion_mnist(normalize=False, download=False)
    assert np.array_equal(x_train, arrays["train_images"].reshape(10, 784))
    assert np.array_equal(t_train, arrays["train_labels"])
    # The sub-directory is per data set: MNIST is not found in fashion-mnist/.
    with pytest.raises(DatasetNotFoundError):
        load_mnist(download=False)


def test_search_order(tmp_path, monkeypatch, isolated):
    places = {
        "data_dir": tmp_path / "explicit",
        "env": tmp_path / "env-root" / "mnist",
        "cache": isolated / "mnist",
        "system": tmp_path / "usr-share" / "mnist",
    }
    for n_train, directory in enumerate(places.values(), start=11):
        make_fake_dataset(directory, n_train=n_train)
    monkeypatch.setenv("TINYCONV_DATA", str(tmp_path / "env-root"))
    monkeypatch.setitem(_catalog.SYSTEM_DIRS, "mnist", [places["system"]])

    def train_size(**kwargs):
        return len(load_mnist(download=False, **kwargs)[0][0])

    assert train_size(data_dir=places["data_dir"]) == 11
    assert train_size() == 12
    monkeypatch.delenv("TINYCONV_DATA")
    assert train_size() == 13
    (places["cache"] / "t10k-labels-idx1-ubyte.gz").unlink()  # an incomplete place is skipped ...
    with pytest.warns(DatasetLocationWarning) as warned:  # ... and it says so
        assert train_size() == 14
    assert len(warned) == 1
    assert str(warned[0].message) == (
        f"MNIST: passed over cache {places['cache']}, which lacks t10k-labels-idx1-ubyte.gz; "
        f"reading the data set from {places['system']} instead"
    )
    assert warned[0].filename == __file__  # points at the caller of load_mnist
    monkeypatch.setitem(_catalog.SYSTEM_DIRS, "mnist", [])
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(download=False)
    message = str(excinfo.value)
    assert f"{places['cache']} (missing t10k-labels-idx1-ubyte.gz)" in message
    assert "not tried (download=False)" in message


def test_dataset_locations_reports_each_place_in_order(tmp_path, monkeypatch, isolated):
    make_fake_dataset(tmp_path / "explicit")
    monkeypatch.setenv("TINYCONV_DATA", str(tmp_path / "root"))
    monkeypatch.setitem(_catalog.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "system"])
    locations = dataset_locations("fashion-mnist")
    assert [loc.source for loc in locations] == ["TINYCONV_DATA", "cache", "system"]
    assert [loc.path for loc in locations] == [
        tmp_path / "root" / "fashion-mnist",
        isolated / "fashion-mnist",
        tmp_path / "system",
    ]
    assert [loc.complete for loc in locations] == [False, False, False]
    assert locations[0].missing == tuple(FILE_NAMES)
    # An explicit data_dir is the only place the loaders look, so it is the only one reported.
    (explicit,) = dataset_locations("fashion-mnist", data_dir=tmp_path / "explicit")
    assert (explicit.source, explicit.path, explicit.complete) == (
        "data_dir",
        tmp_path / "explicit",
        True,
    )
    assert set(explicit.files) == {"train_images", "train_labels", "test_images", "test_labels"}
    with pytest.raises(ValueError, match="unknown data set"):
        dataset_locations("cifar10")


def test_a_data_set_without_images_loads_as_empty_arrays(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=0, n_test=0)  # fae188c: ValueError from reshape
    (x_train, t_train), (x_test, _t_test) = load_mnist(data_dir=tmp_path / "d", download=False)
    assert x_train.shape == (0, 784)
    assert t_train.shape == (0,)
    assert x_test.shape == (0, 784)
    (x_train, _), _ = load_mnist(flatten=False, one_hot_label=True, data_dir=tmp_path / "d")
    assert x_train.shape == (0, 1, 28, 28)


def test_corrupt_file_in_a_location_is_an_error_not_skipped(tmp_path):
    make_fake_dataset(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte.gz"):
        load_mnist(data_dir=tmp_path / "d", download=False)


@pytest.mark.parametrize(
    ("defect", "problem"),
    [
        ("label count", "5 labels, but"),
        ("label value", "label 10 found"),
        ("image size", "27x27 pixels"),
    ],
)
def test_inconsistent_files_are_rejected_naming_the_file(tmp_path, defect, problem):
    make_fake_dataset(tmp_path / "d")
    if defect == "label count":
        bad, array = "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8)
    elif defect == "label value":
        bad, array = "t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8)
    else:
        bad, array = "t10k-images-idx3-ubyte.gz", np.zeros((5, 27, 27), np.uint8)
    write_idx(tmp_path / "d" / bad, array)
    with pytest.raises(IdxFormatError, match=problem) as excinfo:
        load_mnist(data_dir=tmp_path / "d", download=False)
    assert str(tmp_path / "d" / bad) in str(excinfo.value)


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (
            "one file missing",
            "the directory lacks t10k-labels-idx1-ubyte.gz. It needs train-images",
        ),
        ("two files missing", "lacks train-labels-idx1-ubyte.gz, t10k-labels-idx1-ubyte.gz"),
        ("empty", "the directory holds none of its 4 files"),
        ("absent", "the directory does not exist"),
        ("a file", "the directory is not a directory"),
    ],
)
def test_explicit_data_dir_missing_files_fails_naming_them(
    tmp_path, http_server, monkeypatch, isolated, setup, problem
):
    # A complete copy in the cache and a working mirror: fae188c silently read (or downloaded)
    # those instead of the directory the caller named.
    make_fake_dataset(isolated / "mnist", n_train=11)
    make_fake_dataset(tmp_path / "published")
    monkeypatch.setitem(
        _catalog.MIRRORS, "mnist", [serve_dataset(http_server, "m", tmp_path / "published")]
    )
    mine = tmp_path / "mine"
    if setup.endswith("missing"):
        make_fake_dataset(mine)
        (mine / "t10k-labels-idx1-ubyte.gz").unlink()
        if setup == "two files missing":
            (mine / "train-labels-idx1-ubyte.gz").unlink()
    elif setup == "empty":
        mine.mkdir()
    elif setup == "a file":
        mine.write_bytes(b"not a directory")
    with pytest.raises(IncompleteDataDirError, match=problem) as excinfo:
        load_mnist(data_dir=mine)
    error = excinfo.value
    assert isinstance(error, DatasetNotFoundError)
    assert error.directory == mine
    assert f"data_dir {str(mine)!r}" in str(error)
    assert "\n" not in str(error)
    assert http_server.requests == []  # nothing downloaded either


def test_explicit_complete_data_dir_wins_without_warnings(tmp_path, monkeypatch, isolated):
    make_fake_dataset(tmp_path / "mine", n_train=7)
    make_fake_dataset(isolated / "mnist", n_train=9)
    (isolated / "mnist" / "train-images-idx3-ubyte.gz").unlink()  # a partial cache is not looked at
    assert len(load_mnist(data_dir=tmp_path / "mine", download=False)[0][0]) == 7


@pytest.mark.parametrize(
    ("data_dir", "error"),
    [("", ValueError), ("a\0b", ValueError), (5, TypeError), (b"/tmp", TypeError)],
)
def test_data_dir_must_be_a_path(data_dir, error):
    with pytest.raises(error, match="data_dir must be"):
        load_mnist(data_dir=data_dir, download=False)


def test_partial_places_on_the_search_path_are_passed_over_with_a_warning(
    tmp_path, monkeypatch, isolated
):
    root = tmp_path / "root"
    make_fake_dataset(root / "mnist", n_train=5)
    (root / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    make_fake_dataset(isolated / "mnist", n_train=6)
    (tmp_path / "root" / "fashion-mnist").mkdir()  # holds nothing: passed over quietly
    monkeypatch.setenv("TINYCONV_DATA", str(root))
    with pytest.warns(
        DatasetLocationWarning,
        match=f"passed over TINYCONV_DATA {root / 'mnist'}, which lacks train-images-idx3-ubyte.gz",
    ):
        assert len(load_mnist(download=False)[0][0]) == 6
    with pytest.raises(DatasetNotFoundError):
        load_fashion_mnist(download=False)  # no warning: the empty directory is just absent


# --------------------------------------------------------------------------- downloading


def test_download_success_verifies_and_caches(tmp_path, http_server, monkeypatch, isolated):
    arrays = make_fake_dataset(tmp_path / "published")
    monkeypatch.setattr(_loaders, "MNIST", spec_for(tmp_path / "published"))
    mirror = serve_dataset(http_server, "mnist", tmp_path / "published")
    monkeypatch.setitem(_catalog.MIRRORS, "mnist", [mirror])

    (x_train, _t_train), (_x_test, t_test) = load_mnist(normalize=False, flatten=False)
    assert np.array_equal(x_train[:, 0], arrays["train_images"])
    assert np.array_equal(t_test, arrays["test_labels"])
    cache = isolated / "mnist"
    assert leftovers(cache) == sorted(FILE_NAMES)  # no temporary files left behind
    for name in FILE_NAMES:
        assert (cache / name).read_bytes() == (tmp_path / "published" / name).read_bytes()
    assert len(http_server.requests) == 4

    load_mnist()  # served from the cache now: no further request
    assert len(http_server.requests) == 4


def test_checksum_failure_falls_back_to_next_mirror(tmp_path, http_server, monkeypatch, isolated):
    make_fake_dataset(tmp_path / "published")
    monkeypatch.setattr(_loaders, "MNIST", spec_for(tmp_path / "published"))
    bad = serve_dataset(
        http_server, "bad", tmp_path / "published", corrupt={"train-images-idx3-ubyte.gz"}
    )
    good = serve_dataset(http_server, "good", tmp_path / "published")
    monkeypatch.setitem(_catalog.MIRRORS, "mnist", [bad, good])

    load_mnist()
    assert http_server.requests == [
        "/bad/train-images-idx3-ubyte.gz",
        "/good/train-images-idx3-ubyte.gz",
        "/bad/train-labels-idx1-ubyte.gz",
        "/bad/t10k-images-idx3-ubyte.gz",
        "/bad/t10k-labels-idx1-ubyte.gz",
    ]
    cached = (isolated / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    assert cached == (tmp_path / "published" / "train-images-idx3-ubyte.gz").read_bytes()
    assert leftovers(isolated / "mnist") == sorted(FILE_NAMES)


def test_all_mirrors_failing_gives_one_clear_error(tmp_path, http_server, monkeypatch, isolated):
    make_fake_dataset(tmp_path / "published")
    monkeypatch.setattr(
        _loaders, "FASHION_MNIST", spec_for(tmp_path / "published", _catalog.FASHION_MNIST)
    )
    monkeypatch.setitem(_catalog.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "usr-share"])
    monkeypatch.setenv("TINYCONV_DATA", str(tmp_path / "root"))
    not_found = serve_dataset(http_server, "gone", tmp_path / "published", missing=set(FILE_NAMES))
    corrupt = serve_dataset(http_server, "corrupt", tmp_path / "published", corrupt=set(FILE_NAMES))
    refused = closed_port_url()
    monkeypatch.setitem(_catalog.MIRRORS, "fashion-mnist", [not_found, corrupt, refused])

    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_fashion_mnist()
    error = excinfo.value
    message = str(error)
    assert error.__cause__ is None
    assert error.__context__ is None
    assert isinstance(error, OSError)
    # every place looked in ...
    for place in (
        tmp_path / "root" / "fashion-mnist",
        isolated / "fashion-mnist",
        tmp_path / "usr-share",
    ):
        assert str(place) in message
    # ... every URL tried, with its reason ...
    assert f"{not_found}train-images-idx3-ubyte.gz: HTTP 404" in message
    assert f"{corrupt}train-images-idx3-ubyte.gz: SHA-256 mismatch" in message
    assert f"{refused}train-images-idx3-ubyte.gz: cannot connect" in message
    assert f"{corrupt}t10k-labels-idx1-ubyte.gz: SHA-256 mismatch" in message
    # the unreachable mirror is not asked again for the other files
    assert f"{refused}train-labels-idx1-ubyte.gz" not in message
    assert len(error.attempts) == 3 + 3 * 2
    # ... and the ways to fix it.
    for remedy in (
        "data_dir=",
        "TINYCONV_DATA=",
        "apt-get install dataset-fashion-mnist",
        f"copy the 4 files into the cache directory {isolated / 'fashion-mnist'}",
        "load_sample()",
    ):
        assert remedy in message
    assert leftovers(isolated / "fashion-mnist") == []  # nothing half-written


def test_offline_stops_after_each_mirror_is_found_unreachable(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(_fetch, "urlopen", offline)
    monkeypatch.setitem(_catalog.MIRRORS, "mnist", ["https://a.invalid/", "https://b.invalid/"])
    with pytest.raises(DatasetNotFoundError, match="no mirror could be reached"):
        load_mnist()
    assert calls == [
        "https://a.invalid/train-images-idx3-ubyte.gz",
        "https://b.invalid/train-images-idx3-ubyte.gz",
    ]


def test_interrupted_download_leaves_no_file(tmp_path, http_server, monkeypatch, isolated):
    make_fake_dataset(tmp_path / "published")
    spec = spec_for(tmp_path / "published")
    mirror = serve_dataset(
        http_server, "mnist", tmp_path / "published", truncate={"train-images-idx3-ubyte.gz"}
    )
    attempts = _fetch.download_missing(spec, isolated / "mnist", [mirror])
    assert [url for url, _ in attempts] == [mirror + "train-images-idx3-ubyte.gz"]
    assert "connection closed after" in attempts[0][1]
    assert "train-images-idx3-ubyte.gz" not in leftovers(isolated / "mnist")
    assert not [name for name in leftovers(isolated / "mnist") if name.endswith(".part")]


def test_download_verified_removes_temp_file_on_any_failure(tmp_path):
    class Response:
        headers: ClassVar[dict[str, str]] = {"Content-Length": "8"}
        chunks: ClassVar[list[bytes | OSError]] = [b"abcd", OSError("connection reset")]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            chunk = self.chunks.pop(0)
            if isinstance(chunk, Exception):
                raise chunk
            return chunk

    target = tmp_path / "file.gz"
    with pytest.raises(OSError, match="connection reset"):
        _fetch.download_verified(
            "http://127.0.0.1/x", target, "0" * 64, opener=lambda url, timeout: Response()
        )
    assert leftovers(tmp_path) == []
    target.write_bytes(b"old")  # a failed download never clobbers an existing file
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        _fetch.download_verified(
            "http://127.0.0.1/x",
            target,
            "0" * 64,
            opener=lambda url, timeout: _bytes_response(b"new"),
        )
    assert leftovers(tmp_path) == ["file.gz"]
    assert target.read_bytes() == b"old"


def test_download_larger_than_the_file_can_be_is_refused(tmp_path):
    body = bytes(1000)
    digest = hashlib.sha256(body).hexdigest()

    class Unannounced(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {}

    with pytest.raises(_fetch.DownloadTooLarge, match=r"announces 1,000 bytes; .* larger than 999"):
        _fetch.download_verified(
            "http://127.0.0.1/a",
            tmp_path / "a",
            digest,
            opener=lambda url, timeout: _bytes_response(body),
            max_bytes=999,
        )
    with pytest.raises(_fetch.DownloadTooLarge, match="more than 999 bytes received"):
        _fetch.download_verified(
            "http://127.0.0.1/b",
            tmp_path / "b",
            digest,
            opener=lambda url, timeout: Unannounced(body),
            max_bytes=999,
        )
    assert leftovers(tmp_path) == []
    _fetch.download_verified(
        "http://127.0.0.1/c",
        tmp_path / "c",
        digest,
        opener=lambda url, timeout: Unannounced(body),
        max_bytes=1000,
    )
    assert leftovers(tmp_path) == ["c"]


def test_each_data_set_file_is_downloaded_within_its_own_size_limit(
    tmp_path, http_server, isolated
):
    labels = _catalog.MNIST.file("test_labels")
    assert labels.max_download_bytes == 10_008 + 10 + (64 << 10)  # 10,000 labels + header
    oversized = bytes(labels.max_download_bytes + 1)
    http_server.routes["/m/t10k-labels-idx1-ubyte.gz"] = oversized
    spec = replace(
        _catalog.MNIST, files=(replace(labels, gz_sha256=hashlib.sha256(oversized).hexdigest()),)
    )
    attempts = _fetch.download_missing(spec, isolated / "mnist", [http_server.url + "/m/"])
    assert attempts == [
        (
            http_server.url + "/m/t10k-labels-idx1-ubyte.gz",
            f"the server announces {len(oversized):,} bytes; the file cannot be "
            f"larger than {labels.max_download_bytes:,}",
        )
    ]
    assert leftovers(isolated / "mnist") == []
    for spec_file in _catalog.MNIST.files + _catalog.FASHION_MNIST.files:
        assert spec_file.max_download_bytes > spec_file.payload_bytes  # real files fit


def _bytes_response(body: bytes):
    class Response(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {"Content-Length": str(len(body))}

    return Response(body)


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    body = b"x" * 200_000
    digest = hashlib.sha256(body).hexdigest()
    opener = lambda url, timeout: _bytes_response(body)  # noqa: E731

    _fetch.download_verified("http://127.0.0.1/a", tmp_path / "a", digest, opener)
    assert capsys.readouterr().err == ""  # not a terminal: silent

    updates = []

    class FakeTqdm:
        def __init__(self, total, **kwargs):
            updates.append(("total", total))

        def update(self, n):
            updates.append(n)

        def close(self):
            updates.append("closed")

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
    monkeypatch.setattr(_fetch, "_stderr_is_terminal", lambda: True)
    _fetch.download_verified("http://127.0.0.1/b", tmp_path / "b", digest, opener)
    assert updates[0] == ("total", len(body))
    assert updates[-1] == "closed"
    assert sum(n for n in updates[1:-1]) == len(body)


def test_user_cache_dir_fallback_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # as if it were not installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert REAL_USER_CACHE_DIR() == tmp_path / "xdg" / "tinyconv"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert REAL_USER_CACHE_DIR() == Path.home() / ".cache" / "tinyconv"


# --------------------------------------------------------------------------- the shipped sample

SAMPLE_DIGESTS = {  # SHA-256 of each array's IDX encoding; see data/fashion-mnist-sample/README.md
    "train_images": "444ed5f7ce17397f236f5eba17dd507d3f6912f04edd3e4f1701cdf82f2cc0c5",
    "train_labels": "35d691216f65485d010cc635af5574a9dc04aa5060de9be64ab6e5cb5ead38e9",
    "test_images": "7cee33c3c6414b1b86c25e665a6c4f41584269de3b7cc9768b1d351922845eef",
    "test_labels": "3128d790775889812b73c4f13923559c8b9e281d112c6ea7862acf60a206a909",
}


def test_sample_shapes_dtypes_and_balance():
    (x_train, t_train), (x_test, t_test) = load_sample()
    assert x_train.shape == (5000, 784)
    assert x_test.shape == (1000, 784)
    assert x_train.dtype == np.float32
    assert t_train.dtype == np.uint8
    assert 0.0 <= x_train.min() < 0.01
    assert 0.99 < x_train.max() <= 1.0
    assert np.bincount(t_train, minlength=10).tolist() == [500] * 10
    assert np.bincount(t_test, minlength=10).tolist() == [100] * 10

    (x_train, t_train), (x_test, t_test) = load_sample(flatten=False, one_hot_label=True)
    assert x_train.shape == (5000, 1, 28, 28)
    assert x_test.shape == (1000, 1, 28, 28)
    assert t_train.shape == (5000, 10)
    assert t_train.dtype == np.float64
    assert np.array_equal(t_train.sum(axis=1), np.ones(5000))


def test_sample_content_is_fixed():
    (x_train, t_train), (x_test, t_test) = load_sample(normalize=False, flatten=False)
    arrays = {
        "train_images": x_train[:, 0],
        "train_labels": t_train,
        "test_images": x_test[:, 0],
        "test_labels": t_test,
    }
    assert {
        role: hashlib.sha256(encode_idx(a)).hexdigest() for role, a in arrays.items()
    } == SAMPLE_DIGESTS


def test_sample_ships_its_licence_and_provenance():
    sample_dir = datasets.SAMPLE_DIR
    assert "Zalando SE" in (sample_dir / "LICENSE").read_text()
    assert "Permission is hereby granted" in (sample_dir / "LICENSE").read_text()
    assert "Recipe" in (sample_dir / "README.md").read_text()
    size = sum((sample_dir / name).stat().st_size for name in FILE_NAMES)
    assert size <= 3 * 1024 * 1024
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


# --------------------------------------------------------------------------- real data (Debian)


def _require_debian_fashion_mnist():
    missing = [name for name in FILE_NAMES if not (DEBIAN_FASHION_DIR / name).is_file()]
    if not missing:
        return
    reason = (
        f"Fashion-MNIST not installed in {DEBIAN_FASHION_DIR} (missing {missing}); "
        "install it with: apt-get install dataset-fashion-mnist"
    )
    if os.environ.get("CI"):
        pytest.fail(f"in CI the real data must be present: {reason}")
    pytest.skip(reason)


def test_real_fashion_mnist_from_debian():
    _require_debian_fashion_mnist()
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist(
        normalize=False, flatten=False, data_dir=DEBIAN_FASHION_DIR, download=False
    )
    assert x_train.shape == (60000, 1, 28, 28)
    assert x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(t_train).tolist() == [6000] * 10
    assert np.bincount(t_test).tolist() == [1000] * 10
    arrays = {
        "train_images": x_train[:, 0],
        "train_labels": t_train,
        "test_images": x_test[:, 0],
        "test_labels": t_test,
    }
    for file_spec in _catalog.FASHION_MNIST.files:  # the genuine, published contents
        assert (
            hashlib.sha256(encode_idx(arrays[file_spec.role])).hexdigest()
            == file_spec.payload_sha256
        )
    # The shipped sample is exactly the documented selection from these files.
    sample = _make_sample.select_sample(arrays)
    (s_train, s_t_train), (s_test, s_t_test) = load_sample(normalize=False, flatten=False)
    assert np.array_equal(sample["train_images"], s_train[:, 0])
    assert np.array_equal(sample["train_labels"], s_t_train)
    assert np.array_equal(sample["test_images"], s_test[:, 0])
    assert np.array_equal(sample["test_labels"], s_t_test)


def test_debian_location_is_searched_by_default(monkeypatch):
    _require_debian_fashion_mnist()
    monkeypatch.setitem(_catalog.SYSTEM_DIRS, "fashion-mnist", [DEBIAN_FASHION_DIR])
    (_, t_train), (_, t_test) = load_fashion_mnist(download=False)
    assert len(t_train) == 60000
    assert len(t_test) == 10000


def test_an_empty_idx_whose_other_dimensions_overflow_is_a_format_error():
    # Found by the fuzzer: shape (0xfb000000, 0, 1, 0x10a03) holds no bytes, yet NumPy cannot
    # represent it; reshape raised a bare ValueError instead of IdxFormatError.
    from tinyconv.datasets.idx import decode_idx

    blob = bytes([0, 0, 8, 4]) + struct.pack(">4I", 0xFB000000, 0, 1, 0x10A03)
    with pytest.raises(IdxFormatError, match="empty"):
        decode_idx(blob)
    assert decode_idx(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 28, 28)).shape == (0, 28, 28)
