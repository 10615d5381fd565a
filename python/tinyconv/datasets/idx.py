"""Strict reader and writer for the IDX files that MNIST and Fashion-MNIST are published in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the values in C
order.  The magic number is two zero bytes, a type code (0x08 = unsigned byte, the only type these
data sets use) and the number of dimensions: 0x00000803 for a stack of images, 0x00000801 for a
vector of labels.  Files may be gzip-compressed (as published) or raw; the reader tells them apart
by the gzip magic bytes, not by the file name.

The reader is deliberately strict: a truncated download, a file cut short or padded, a bad gzip
stream or a wrong header raises :class:`IdxFormatError` naming the file, instead of silently
yielding fewer images or garbage.

It is also bounded: the header is read (and decompressed) first and checked -- magic number, a
type code from the format's specification, 1 to 4 dimensions, at most ``MAX_PAYLOAD_BYTES`` of
data -- and then exactly the number of bytes the header claims, plus one to detect trailing data,
is read or decompressed.  A small crafted file cannot make the reader inflate gigabytes, and
nothing is held in memory beyond that claim and one chunk of input.
"""

from __future__ import annotations

# Imported under another name: ``gzip`` is also write_idx's keyword argument.
import gzip as _gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import numpy.typing as npt

from .._typing import Array, ArrayLike

__all__ = ["IdxFormatError", "decode_idx", "encode_idx", "read_idx", "write_idx"]

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_TYPE_CODE = 0x08
# Every type code of the IDX specification (yann.lecun.com/exdb/mnist), for the error messages:
# the reader supports unsigned bytes only, the one type MNIST and Fashion-MNIST use.
IDX_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "short, 2 bytes",
    0x0C: "int, 4 bytes",
    0x0D: "float, 4 bytes",
    0x0E: "double, 8 bytes",
}
HEADER_PREFIX_SIZE = 4  # two zero bytes, type code, number of dimensions
# Image stacks have 3 dimensions and label vectors 1; 4 leaves room for colour images.
MAX_DIMENSIONS = 4
# The most data a header may claim. MNIST's largest file holds 47 MB; 1 GiB admits any data set
# of this kind while a crafted header (or a gzip bomb behind it) cannot make the reader
# allocate or inflate more.
MAX_PAYLOAD_BYTES = 1 << 30
READ_CHUNK_BYTES = 1 << 20


class IdxFormatError(ValueError):
    """An IDX file is corrupt, truncated, or not the kind of IDX file that was expected.

    ``path`` is the offending file (or ``None`` for in-memory data); the message names it too.
    """

    def __init__(self, path: PathLike | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = "IDX data" if path is None else f"IDX file {str(path)!r}"
        super().__init__(f"{where}: {problem}")


def read_idx(path: PathLike, *, ndim: int | None = None) -> Array:
    """Read an IDX file (gzip-compressed or raw) into a writable ``uint8`` array.

    ``ndim`` (3 for images, 1 for labels), when given, is checked against the header, so an
    image file passed where labels are expected is caught here.
    """
    if Path(path).is_dir():  # open() says only "Permission denied" on Windows
        raise IdxFormatError(path, "is a directory, not a file")
    with open(path, "rb") as handle:
        return _decode_stream(handle, ndim, path)


def decode_idx(blob: bytes, *, ndim: int | None = None, source: PathLike | None = None) -> Array:
    """Decode the bytes of an IDX file (gzip-compressed or raw); ``source`` names it in errors."""
    return _decode_stream(io.BytesIO(blob), ndim, source)


def _decode_stream(handle: BinaryIO, ndim: int | None, source: PathLike | None) -> Array:
    start = handle.read(len(GZIP_MAGIC))
    reader = (
        _GunzipReader(handle, start, source) if start == GZIP_MAGIC else _RawReader(handle, start)
    )
    prefix = reader.read(HEADER_PREFIX_SIZE)
    if len(prefix) < HEADER_PREFIX_SIZE:
        raise IdxFormatError(source, f"only {len(prefix)} bytes, too short for an IDX header")
    file_ndim = _check_magic(prefix, ndim, source)
    header_size = HEADER_PREFIX_SIZE + 4 * file_ndim
    dims = reader.read(4 * file_ndim)
    if len(dims) < 4 * file_ndim:
        raise IdxFormatError(
            source, f"header is cut short ({HEADER_PREFIX_SIZE + len(dims)} of {header_size} bytes)"
        )
    shape: tuple[int, ...] = struct.unpack(f">{file_ndim}I", dims)
    expected_bytes = math.prod(shape)  # exact (Python ints): a crafted header cannot overflow it
    # An empty array must still have a shape NumPy can represent: (2**32-1, 0, 2**32-1, 2**32-1)
    # holds no bytes, but its other dimensions multiply past what an array may span.
    if math.prod(max(d, 1) for d in shape) > MAX_PAYLOAD_BYTES and expected_bytes == 0:
        raise IdxFormatError(
            source,
            f"header claims shape {shape}: empty, but its other dimensions "
            f"multiply past {MAX_PAYLOAD_BYTES:,}",
        )
    if expected_bytes > MAX_PAYLOAD_BYTES:
        raise IdxFormatError(
            source,
            f"header claims shape {shape}, {expected_bytes:,} bytes of "
            f"data; at most {MAX_PAYLOAD_BYTES:,} are accepted",
        )
    # One byte more than claimed: finding it means the file is longer than its header says.
    payload = reader.read(expected_bytes + 1)
    if len(payload) < expected_bytes:
        raise IdxFormatError(
            source,
            f"truncated: header says shape {shape} ({expected_bytes} bytes of data) but "
            f"only {len(payload)} bytes follow",
        )
    if len(payload) > expected_bytes:
        raise IdxFormatError(
            source,
            f"unexpected trailing bytes after the {expected_bytes} bytes of data that "
            f"shape {shape} calls for",
        )
    # A bytearray, so the array is writable (callers may modify it, as they can DLfS's arrays).
    return np.frombuffer(payload, np.uint8, expected_bytes).reshape(shape)


def _check_magic(prefix: bytes | bytearray, ndim: int | None, source: PathLike | None) -> int:
    """The number of dimensions the magic number declares, after checking all of it."""
    zero0, zero1, type_code, file_ndim = prefix
    magic = int.from_bytes(prefix, "big")
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(source, f"bad magic number 0x{magic:08x}: not an IDX file")
    if type_code != UBYTE_TYPE_CODE:
        kind = (
            f"{IDX_TYPE_NAMES[type_code]} data"
            if type_code in IDX_TYPE_NAMES
            else "not a type of the IDX format"
        )
        raise IdxFormatError(
            source,
            f"magic number 0x{magic:08x} has type code 0x{type_code:02x} ({kind}); only "
            f"unsigned byte data (0x{UBYTE_TYPE_CODE:02x}) is supported",
        )
    if not 1 <= file_ndim <= MAX_DIMENSIONS:
        raise IdxFormatError(
            source,
            f"magic number 0x{magic:08x} declares {file_ndim} dimensions; "
            f"1 to {MAX_DIMENSIONS} are supported",
        )
    if ndim is not None and file_ndim != ndim:
        expected = 0x800 + ndim
        raise IdxFormatError(
            source,
            f"magic number 0x{magic:08x} declares {file_ndim}-dimensional data; expected "
            f"0x{expected:08x} ({ndim}-dimensional)",
        )
    return file_ndim


class _RawReader:
    """Reads an uncompressed file: ``read(n)`` returns n bytes, fewer only at its end."""

    def __init__(self, handle: BinaryIO, start: bytes):
        self._handle = handle
        self._pending = start  # bytes read ahead to look for the gzip magic

    def read(self, size: int) -> bytearray:
        out = bytearray(self._pending[:size])
        self._pending = self._pending[size:]
        while len(out) < size:
            chunk = self._handle.read(min(size - len(out), READ_CHUNK_BYTES))
            if not chunk:
                break
            out += chunk
        return out


class _GunzipReader:
    """Decompresses a gzip file on demand: ``read(n)`` inflates no more than n bytes, and returns
    fewer only at the end of the last member.  A truncated stream, bad CRC or trailing junk
    raises :class:`IdxFormatError`.

    ``gzip.decompress`` would silently accept trailing zero bytes (and inflate everything at
    once), so zlib is driven directly.  Several concatenated members are valid gzip (pigz and
    friends write them) and are read one after another.
    """

    def __init__(self, handle: BinaryIO, start: bytes, source: PathLike | None):
        self._handle = handle
        self._source = source
        self._input = start  # compressed bytes not yet given to the inflater
        self._inflater = self._new_inflater()
        self._finished = False  # the last member ended and nothing follows it

    @staticmethod
    def _new_inflater() -> zlib._Decompress:
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper

    def _read_input(self) -> bytes:
        return self._handle.read(READ_CHUNK_BYTES)

    def read(self, size: int) -> bytearray:
        out = bytearray()
        while len(out) < size and not self._finished:
            if self._inflater.eof:
                self._start_next_member()
                continue
            if not self._input:
                self._input = self._read_input()
            try:
                # With no input left this still flushes what the inflater holds back.
                chunk = self._inflater.decompress(self._input, size - len(out))
            except zlib.error as exc:
                raise IdxFormatError(self._source, f"corrupt gzip data ({exc})") from None
            exhausted = not self._input
            self._input = self._inflater.unconsumed_tail
            out += chunk
            if exhausted and not chunk and not self._inflater.eof:
                raise IdxFormatError(self._source, "gzip stream is truncated (file cut short?)")
        return out

    def _start_next_member(self) -> None:
        # Everything fed past the member's end is in unused_data (zlib leaves a copy of it in
        # unconsumed_tail too, so self._input is not added again).
        rest = self._inflater.unused_data
        while len(rest) < len(GZIP_MAGIC):
            more = self._read_input()
            if not more:
                break
            rest += more
        if not rest:
            self._finished = True
        elif rest[: len(GZIP_MAGIC)] != GZIP_MAGIC:
            raise IdxFormatError(self._source, "unexpected bytes after the gzip stream")
        else:
            self._inflater, self._input = self._new_inflater(), rest


def encode_idx(array: ArrayLike) -> bytes:
    """The raw (uncompressed) IDX bytes of an unsigned-byte array."""
    values = _as_ubyte(array)
    if not 1 <= values.ndim <= MAX_DIMENSIONS:
        raise ValueError(f"IDX needs 1 to {MAX_DIMENSIONS} dimensions, got {values.ndim}")
    header = bytes([0, 0, UBYTE_TYPE_CODE, values.ndim]) + struct.pack(
        f">{values.ndim}I", *values.shape
    )
    data: bytes = np.ascontiguousarray(values).tobytes()
    return header + data


def write_idx(path: PathLike, array: ArrayLike, gzip: bool = True) -> Path:
    """Write ``array`` (values 0..255) as an IDX file, gzip-compressed unless ``gzip=False``.

    Compressed output is reproducible: no file name or time stamp goes into the gzip header.
    Returns the path written.
    """
    raw = encode_idx(array)
    path = Path(path)
    path.write_bytes(_gzip_reproducibly(raw) if gzip else raw)
    return path


def _gzip_reproducibly(raw: bytes) -> bytes:
    return _gzip.compress(raw, compresslevel=9, mtime=0)


def _as_ubyte(array: ArrayLike) -> npt.NDArray[np.uint8]:
    values = np.asarray(array)
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_ or np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError("IDX unsigned-byte data must lie in 0..255")
        return values.astype(np.uint8)
    raise TypeError(f"IDX unsigned-byte data must be an integer array, got dtype {values.dtype}")
