"""Strict reader and writer for the IDX files that MNIST and Fashion-MNIST are published in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the values in C
order.  The magic number is two zero bytes, a type code (0x08 = unsigned byte, the only type these
data sets use) and the number of dimensions: 0x00000803 for a stack of images, 0x00000801 for a
vector of labels.  Files may be gzip-compressed (as published) or raw; the reader tells them apart
by the gzip magic bytes, not by the file name.

The reader is deliberately strict: a truncated download, a file cut short or padded, a bad gzip
stream or a wrong header raises :class:`IdxFormatError` naming the file, instead of silently
yielding fewer images or garbage.
"""
from __future__ import annotations

# Imported under another name: ``gzip`` is also write_idx's keyword argument.
import gzip as _gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = ["IdxFormatError", "read_idx", "write_idx", "decode_idx", "encode_idx"]

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_TYPE_CODE = 0x08
HEADER_PREFIX_SIZE = 4  # two zero bytes, type code, number of dimensions
# Small enough that a single corrupt header cannot make us allocate an absurd array.
MAX_DIMENSIONS = 8


class IdxFormatError(ValueError):
    """An IDX file is corrupt, truncated, or not the kind of IDX file that was expected.

    ``path`` is the offending file (or ``None`` for in-memory data); the message names it too.
    """

    def __init__(self, path: Optional[PathLike], problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = "IDX data" if path is None else f"IDX file {str(path)!r}"
        super().__init__(f"{where}: {problem}")


def read_idx(path: PathLike, *, ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a writable ``uint8`` array.

    ``ndim`` (3 for images, 1 for labels), when given, is checked against the header, so an
    image file passed where labels are expected is caught here.
    """
    try:
        blob = Path(path).read_bytes()
    except IsADirectoryError:
        raise IdxFormatError(path, "is a directory, not a file") from None
    return decode_idx(blob, ndim=ndim, source=path)


def decode_idx(blob: bytes, *, ndim: Optional[int] = None,
               source: Optional[PathLike] = None) -> np.ndarray:
    """Decode the bytes of an IDX file (gzip-compressed or raw); ``source`` names it in errors."""
    if blob[:2] == GZIP_MAGIC:
        blob = _gunzip_strictly(blob, source)
    return _parse_idx(blob, ndim, source)


def _gunzip_strictly(blob: bytes, source: Optional[PathLike]) -> bytes:
    """Decompress every gzip member; reject a truncated stream, bad CRC or trailing junk.

    ``gzip.decompress`` would silently accept trailing zero bytes, so zlib is driven directly.
    Several concatenated members are valid gzip (pigz and friends write them) and are accepted.
    """
    parts = []
    rest = blob
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper
        try:
            parts.append(inflater.decompress(rest))
        except zlib.error as exc:
            raise IdxFormatError(source, f"corrupt gzip data ({exc})") from None
        if not inflater.eof:
            raise IdxFormatError(source, "gzip stream is truncated (file cut short?)")
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if rest[:2] != GZIP_MAGIC:
            raise IdxFormatError(source, f"{len(rest)} unexpected bytes after the gzip stream")


def _parse_idx(data: bytes, ndim: Optional[int], source: Optional[PathLike]) -> np.ndarray:
    if len(data) < HEADER_PREFIX_SIZE:
        raise IdxFormatError(source, f"only {len(data)} bytes, too short for an IDX header")
    zero0, zero1, type_code, file_ndim = data[:HEADER_PREFIX_SIZE]
    magic = int.from_bytes(data[:HEADER_PREFIX_SIZE], "big")
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(source, f"bad magic number 0x{magic:08x}: not an IDX file")
    if type_code != UBYTE_TYPE_CODE:
        raise IdxFormatError(
            source, f"magic number 0x{magic:08x} has type code 0x{type_code:02x}; only unsigned "
                    f"byte data (0x{UBYTE_TYPE_CODE:02x}) is supported")
    if not 1 <= file_ndim <= MAX_DIMENSIONS:
        raise IdxFormatError(source, f"magic number 0x{magic:08x} declares {file_ndim} dimensions")
    if ndim is not None and file_ndim != ndim:
        expected = 0x800 + ndim
        raise IdxFormatError(
            source, f"magic number 0x{magic:08x} declares {file_ndim}-dimensional data; expected "
                    f"0x{expected:08x} ({ndim}-dimensional)")
    header_size = HEADER_PREFIX_SIZE + 4 * file_ndim
    if len(data) < header_size:
        raise IdxFormatError(source, f"header is cut short ({len(data)} of {header_size} bytes)")
    shape = struct.unpack(f">{file_ndim}I", data[HEADER_PREFIX_SIZE:header_size])
    expected_bytes = math.prod(shape)  # exact: a corrupt header cannot overflow it
    actual_bytes = len(data) - header_size
    if actual_bytes < expected_bytes:
        raise IdxFormatError(
            source, f"truncated: header says shape {shape} ({expected_bytes} bytes of data) but "
                    f"only {actual_bytes} bytes follow")
    if actual_bytes > expected_bytes:
        raise IdxFormatError(
            source, f"{actual_bytes - expected_bytes} unexpected trailing bytes after the "
                    f"{expected_bytes} bytes of data that shape {shape} calls for")
    # frombuffer over immutable bytes is read-only; copy so callers may modify the array,
    # as they can DLfS's arrays.
    return np.frombuffer(data, np.uint8, expected_bytes, header_size).reshape(shape).copy()


def encode_idx(array: np.ndarray) -> bytes:
    """The raw (uncompressed) IDX bytes of an unsigned-byte array."""
    array = _as_ubyte(array)
    if not 1 <= array.ndim <= MAX_DIMENSIONS:
        raise ValueError(f"IDX needs 1 to {MAX_DIMENSIONS} dimensions, got {array.ndim}")
    header = bytes([0, 0, UBYTE_TYPE_CODE, array.ndim]) + struct.pack(f">{array.ndim}I",
                                                                      *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: PathLike, array: np.ndarray, gzip: bool = True) -> Path:
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


def _as_ubyte(array) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("IDX unsigned-byte data must lie in 0..255")
        return array.astype(np.uint8)
    raise TypeError(f"IDX unsigned-byte data must be an integer array, got dtype {array.dtype}")
