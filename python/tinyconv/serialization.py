"""Reading and writing parameter files and training checkpoints, safely.

Three formats:

* **Pickle** (``.pkl``, ``.pickle``, ``.p``): a plain ``dict`` mapping names (``"W1"``, ``"b1"``, ...)
  to NumPy arrays, exactly what *Deep Learning from Scratch* (DLfS) writes with
  ``pickle.dump(params, f)`` and reads with ``pickle.load`` -- so files move freely between DLfS
  and tinyconv in both directions.
* **safetensors** (``.safetensors``): the format of PyTorch and Hugging Face model files, an
  8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
  range, then the raw bytes. Written and read with the NumPy API of the ``safetensors`` package
  (an optional extra: ``pip install tinyconv[safetensors]``), never with torch. Every field of the
  header is checked here first (see :func:`read_params`).
* **NPZ** (any other suffix): ``numpy.savez``'s zip of ``.npy`` files, read with
  ``allow_pickle=False``.

Reading never executes code from the file and never reads memory the file does not hold. A pickle
can name any importable function and call it (``os.system`` included), so pickles are read with
:class:`RestrictedUnpickler`, which interprets the pickle opcodes itself: it builds plain
containers, numbers, strings and numeric NumPy arrays from the file's own bytes, calls nothing the
file names, bounds nesting and object counts, and refuses everything else with
:class:`UnsafePickleError` or :class:`ParamsFileError`. The format of a file is told from its first
bytes, not from its name.

Writing is atomic: data goes to a temporary file in the destination's directory, which is flushed,
``fsync``-ed and then renamed over the destination with ``os.replace``. A crash or an exception
halfway through a save leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Union

import numpy as np

from ._typing import Array
from ._unpickle import ALLOWED_GLOBALS, ParamsFileError, RestrictedUnpickler, UnsafePickleError

__all__ = [
    "ALLOWED_GLOBALS",
    "PICKLE_PROTOCOL",
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIX",
    "ParamsFileError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "atomic_write",
    "load_pickle_file",
    "read_params",
    "remove_stale_temporaries",
    "safe_pickle_load",
    "safe_pickle_loads",
    "save_params",
    "save_pickle",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Protocol 4 is readable by every Python 3 since 3.4 (DLfS's code included) and handles large
#: arrays; it is the default protocol of the Pythons DLfS targets.
PICKLE_PROTOCOL = 4
#: Suffixes (lower-case) that :func:`save_params` writes as a pickle.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".p")
#: The suffix (lower-case) that :func:`save_params` writes as safetensors; anything else is NPZ.
SAFETENSORS_SUFFIX = ".safetensors"

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


# ----------------------------------------------------------------------------------------------
# Restricted unpickling (the machine itself is in _unpickle.py)


def safe_pickle_load(file: IO[bytes]) -> Any:
    """``pickle.load`` restricted to numeric arrays and plain containers (see
    :class:`RestrictedUnpickler`); reads ``file`` to its end."""
    return RestrictedUnpickler(file).load()


def safe_pickle_loads(data: bytes) -> Any:
    """``pickle.loads`` restricted to arrays and plain containers."""
    return safe_pickle_load(io.BytesIO(data))


# ----------------------------------------------------------------------------------------------
# Atomic writes


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable. Not possible on every platform (Windows cannot open a
    # directory), where the rename is still atomic, only not yet flushed.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777  # keep the permissions of the file we replace
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# Temporary files are named ".<target>.<pid>-<random>.tmp", so that a later write can tell the
# leftovers of a killed writer (its process is gone) from a write in progress. Temporaries this
# process is writing right now are listed here, since its own pid is alive by definition.
_LIVE_TEMPORARIES: set[str] = set()
_LIVE_LOCK = threading.Lock()
_TEMP_PATTERN = re.compile(r"(?P<pid>[0-9]+)-[A-Za-z0-9_]+\.tmp")
# Names written before the pid was part of them (".<target>.<8 random characters>.tmp"): stale
# after a while.
_LEGACY_TEMP_PATTERN = re.compile(r"[A-Za-z0-9_]{8}\.tmp")
_LEGACY_TEMP_AGE_S = 600.0


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no cheap, side-effect-free probe (os.kill would terminate it on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists under another user, or cannot tell: leave its file alone
    return True


def _is_stale_temporary(path: str, rest: str) -> bool:
    match = _TEMP_PATTERN.fullmatch(rest)
    if match is not None:
        if _process_alive(int(match.group("pid"))):
            with _LIVE_LOCK:
                return int(match.group("pid")) == os.getpid() and path not in _LIVE_TEMPORARIES
        return True
    if _LEGACY_TEMP_PATTERN.fullmatch(rest) is not None:
        try:
            return time.time() - os.stat(path).st_mtime > _LEGACY_TEMP_AGE_S
        except OSError:
            return False
    return False


def remove_stale_temporaries(path: PathLike) -> list[str]:
    """Delete the temporary files that interrupted writes of ``path`` left behind (a process
    killed mid-save cannot clean up after itself). A temporary is stale when the process that
    wrote it is gone, or when it is this process's and no write of it is in progress. Returns the
    paths removed. :func:`atomic_write` calls this after every successful write and on every
    failure."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    prefix = "." + os.path.basename(target) + "."
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        candidate = os.path.join(directory, name)
        if _is_stale_temporary(candidate, name[len(prefix) :]):
            with contextlib.suppress(OSError):
                os.unlink(candidate)
                removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on normal exit flush, fsync and
    atomically rename it to ``path``. On an exception the temporary file is removed and ``path`` is
    left as it was (absent, or the previous complete file). Either way, temporaries that earlier,
    killed writes of ``path`` left behind are removed (:func:`remove_stale_temporaries`)."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    prefix = "." + os.path.basename(target) + f".{os.getpid()}-"
    fd, tmp_path = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    with _LIVE_LOCK:
        _LIVE_TEMPORARIES.add(tmp_path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, _new_file_mode(target))
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE_TEMPORARIES.discard(tmp_path)
        remove_stale_temporaries(target)
    _fsync_directory(directory)


def save_pickle(obj: Any, path: PathLike) -> None:
    """Pickle ``obj`` to ``path`` atomically (protocol :data:`PICKLE_PROTOCOL`)."""
    with atomic_write(path) as handle:
        pickle.dump(obj, handle, protocol=PICKLE_PROTOCOL)


# ----------------------------------------------------------------------------------------------
# Parameter files


def _is_pickle_name(path: PathLike) -> bool:
    return Path(os.fspath(path)).suffix.lower() in PICKLE_SUFFIXES


def save_params(params: Mapping[str, Any], path: PathLike) -> None:
    """Write a dict of arrays to ``path`` atomically.

    A ``.pkl``/``.pickle``/``.p`` name gets a DLfS-compatible pickle: a plain ``dict`` of
    ``numpy.ndarray`` in the arrays' own dtypes (DLfS's ``load_params`` reads it as is). A
    ``.safetensors`` name gets a safetensors file (float16/32/64, signed and unsigned integers and
    bool arrays; others raise ``TypeError``; needs the ``safetensors`` package). Any other name
    gets an uncompressed NPZ archive, written under exactly that name (no ``.npz`` is added).
    """
    arrays: dict[str, Array] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be str, got {key!r}")
        # np.array (not asarray): a private copy, so the file holds a consistent snapshot even if
        # the caller updates the arrays from another thread while this is written.
        arrays[key] = np.array(value)
    if _is_pickle_name(path):
        save_pickle(arrays, path)
    elif Path(os.fspath(path)).suffix.lower() == SAFETENSORS_SUFFIX:
        _write_safetensors(arrays, path)
    else:
        with atomic_write(path) as handle:
            np.savez(handle, **arrays)


def _check_arrays(data: Any, source: str) -> dict[str, Array]:
    if not isinstance(data, dict):
        raise ParamsFileError(f"{source}: expected a dict of arrays, found {type(data).__name__}")
    arrays: dict[str, Array] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ParamsFileError(f"{source}: parameter names must be strings, found {key!r}")
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise ParamsFileError(f"{source}: {key!r} is a {type(value).__name__}, not an array")
        if value.dtype.kind not in "biuf":
            raise ParamsFileError(
                f"{source}: {key!r} has dtype {value.dtype}, expected real numbers"
            )
        arrays[key] = value
    return arrays


#: An NPZ's members may expand to at most this many times the file's size (or
#: NPZ_MIN_EXPANSION_BYTES, whichever is larger): real parameters compress little, a zip bomb a
#: thousandfold. tinyconv itself writes uncompressed archives.
NPZ_MAX_EXPANSION = 32
NPZ_MIN_EXPANSION_BYTES = 256 * 2**20


def _read_npz(path: str) -> dict[str, Array]:
    try:
        # Our own handle: np.load(path) leaks its file when the zip directory is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            file_size = os.fstat(handle.fileno()).st_size
            # zipfile never inflates a member past its declared size, so bounding the declared
            # sizes bounds the memory and time a hostile archive can make us spend.
            declared = sum(info.file_size for info in archive.zip.infolist())
            limit = max(NPZ_MIN_EXPANSION_BYTES, NPZ_MAX_EXPANSION * file_size)
            if declared > limit:
                raise ParamsFileError(
                    f"{path}: NPZ members claim {declared} bytes uncompressed from a "
                    f"{file_size}-byte file (more than {limit}): refusing a possible zip bomb"
                )
            data = {key: archive[key] for key in archive.files}
    except ParamsFileError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ParamsFileError(
            f"{path}: truncated or corrupt NPZ file ({type(exc).__name__}: {exc})"
        ) from exc
    except Exception as exc:  # zlib.error and friends from a damaged member
        raise ParamsFileError(
            f"{path}: truncated or corrupt NPZ file ({type(exc).__name__}: {exc})"
        ) from exc
    return data


# ----------------------------------------------------------------------------------------------
# safetensors

#: safetensors dtypes that have a NumPy dtype, as stored (little-endian). BF16 and the FP8/FP4
#: types have none, and complex numbers are not parameters: files holding them are refused.
SAFETENSORS_DTYPES: dict[str, np.dtype[Any]] = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_SAFETENSORS_WRITABLE = {dtype.newbyteorder("=") for dtype in SAFETENSORS_DTYPES.values()}
#: The safetensors library's own bound on the JSON header (it refuses longer ones).
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
#: NumPy 1's bound on dimensions (NumPy 2 allows 64).
_MAX_NDIM = 32
_SAFETENSORS_INSTALL = "pip install tinyconv[safetensors]"


def _is_safetensors_head(head: bytes) -> bool:
    """A safetensors file: an 8-byte header length, then a JSON object. No pickle NumPy or DLfS
    writes has ``{`` as its ninth byte (protocol 4 and 5 frames put the high bytes of a frame
    length there, zero below a terabyte)."""
    return len(head) >= 9 and head[8:9] == b"{"


def _safetensors_module(action: str) -> Any:
    try:
        import safetensors.numpy as module
    except ImportError:
        raise ImportError(
            f"{action} a .safetensors file needs the optional 'safetensors' package: "
            f"{_SAFETENSORS_INSTALL}"
        ) from None
    return module


def _write_safetensors(arrays: Mapping[str, Array], path: PathLike) -> None:
    module = _safetensors_module("writing")
    tensors: dict[str, Array] = {}
    for key, value in arrays.items():
        if key == "__metadata__":
            raise ValueError(
                "'__metadata__' is reserved in safetensors files and cannot name a parameter"
            )
        if (
            value.dtype.kind not in "biuf"
            or value.dtype.newbyteorder("=") not in _SAFETENSORS_WRITABLE
        ):
            raise TypeError(
                f"parameter {key!r} has dtype {value.dtype}, which safetensors cannot hold "
                "(float16/32/64, int8..int64, uint8..uint64 and bool can)"
            )
        # The library reads each array as one block from its data pointer: it must be C-contiguous
        # (np.array with order="C" keeps 0-d arrays 0-d, unlike np.ascontiguousarray).
        tensors[key] = value if value.flags.c_contiguous else np.array(value, order="C")
    data = module.save(tensors)
    with atomic_write(path) as handle:
        handle.write(data)


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ParamsFileError(f"the header names {key!r} twice")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _checked_safetensors_header(
    data: bytes, name: str
) -> list[tuple[str, np.dtype[Any], tuple[int, ...]]]:
    """Check the header of the safetensors file ``data`` completely and return ``(key, stored
    dtype, shape)`` per tensor; raises :class:`ParamsFileError` naming the problem."""

    def refuse(problem: str) -> ParamsFileError:
        return ParamsFileError(f"{name}: not a valid safetensors file: {problem}")

    size = len(data)
    if size < 8:
        raise refuse(f"{size} bytes, fewer than the 8-byte header length")
    header_length = int.from_bytes(data[:8], "little")
    if header_length > size - 8:
        raise refuse(
            f"the header length {header_length} runs past the end of the {size}-byte file (truncated?)"
        )
    if header_length > SAFETENSORS_MAX_HEADER_BYTES:
        raise refuse(
            f"the header length {header_length} exceeds {SAFETENSORS_MAX_HEADER_BYTES} bytes"
        )
    try:
        text = data[8 : 8 + header_length].decode("utf-8")
        if not text.startswith("{"):
            raise ValueError("the header does not start with '{'")
        header = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_refuse_constant)
    except ParamsFileError as exc:
        raise refuse(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise refuse(f"the header is not JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise refuse(f"the header is a {type(header).__name__}, not a JSON object")

    metadata = header.get("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise refuse("__metadata__ must map strings to strings")
    data_size = size - 8 - header_length
    tensors = []
    ranges = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        field = f"tensor {key!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            found = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise refuse(
                f"{field} must have exactly the fields dtype, shape and data_offsets, found {found}"
            )
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype_name, str) or dtype_name not in SAFETENSORS_DTYPES:
            raise refuse(
                f"{field} has dtype {dtype_name!r}; tinyconv reads {', '.join(SAFETENSORS_DTYPES)} "
                "(BF16, FP8 and complex tensors have no NumPy parameter dtype: convert them first)"
            )
        if not (
            isinstance(shape, list)
            and len(shape) <= _MAX_NDIM
            and all(type(d) is int and 0 <= d < 2**63 for d in shape)
        ):
            raise refuse(
                f"{field} has shape {str(shape)[:200]}: expected a list of at most {_MAX_NDIM} "
                "integers in [0, 2**63)"
            )
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise refuse(
                f"{field} has data_offsets {str(offsets)[:200]}: expected [begin, end] with "
                f"0 <= begin <= end <= {data_size} (the data after the header)"
            )
        dtype = SAFETENSORS_DTYPES[dtype_name]
        # Python ints: no overflow. NumPy itself must be able to describe the array: the
        # product of the non-zero dimensions in bytes must fit an intp even when a zero makes it empty.
        if math.prod(max(d, 1) for d in shape) * dtype.itemsize >= 2**63:
            raise refuse(f"{field} has shape {shape}, too large for any array")
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise refuse(
                f"{field} is {dtype_name} of shape {shape}, {nbytes} bytes, but data_offsets "
                f"{offsets} span {offsets[1] - offsets[0]}"
            )
        tensors.append((key, dtype, tuple(shape)))
        ranges.append((offsets[0], offsets[1], key))
    # The tensors must tile the data exactly: no overlap (two names sharing bytes), no gap, nothing
    # after the last one (bytes no tensor accounts for).
    position = 0
    for begin, end, key in sorted(ranges):
        if begin != position:
            what = (
                "overlaps the tensor before it"
                if begin < position
                else f"leaves bytes {position}..{begin} unused"
            )
            raise refuse(f"tensor {key!r} (data_offsets [{begin}, {end}]) {what}")
        position = end
    if position != data_size:
        raise refuse(
            f"the tensors cover {position} bytes of data, the file holds {data_size} after the header"
        )
    return tensors


def _read_safetensors(name: str) -> dict[str, Array]:
    # One read: the bytes checked are the bytes loaded, whatever happens to the file meanwhile.
    with open(name, "rb") as handle:
        data = handle.read()
    tensors = _checked_safetensors_header(data, name)
    module = _safetensors_module("reading")
    try:
        loaded = module.load(data)
    except Exception as exc:  # the library's SafetensorError, or anything it did not expect
        raise ParamsFileError(
            f"{name}: the safetensors library refuses the file "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    del data
    if sorted(loaded) != sorted(key for key, _, _ in tensors):
        raise ParamsFileError(
            f"{name}: the safetensors library read other tensors than the header names"
        )
    arrays: dict[str, Array] = {}
    for key, stored, shape in tensors:
        view = loaded.pop(key)  # read-only, over the library's buffer: each is copied, then let go
        if view.shape != shape or view.dtype.itemsize != stored.itemsize:
            raise ParamsFileError(
                f"{name}: the safetensors library read {key!r} as {view.dtype} {view.shape}, "
                f"the header says {stored} {shape}"
            )
        raw = view.view(stored)  # the stored little-endian bytes, whatever the library assumed
        if stored.kind == "b" and raw.view(np.uint8).max(initial=0) > 1:
            raise ParamsFileError(
                f"{name}: tensor {key!r} is BOOL but holds bytes other than 0 and 1"
            )
        arrays[key] = np.array(raw, dtype=stored.newbyteorder("="))
    return arrays


def load_pickle_file(path: PathLike) -> Any:
    """Read a pickle with :class:`RestrictedUnpickler`; truncation and corruption become
    :class:`ParamsFileError` naming the file."""
    name = os.fspath(path)
    with open(name, "rb") as handle:
        return _load_pickle_named(handle, name)


def load_pickle_bytes(data: bytes, name: str) -> Any:
    """:func:`load_pickle_file` for the bytes of a file named ``name`` (read elsewhere: e.g. by
    rank 0 of a data-parallel run and broadcast)."""
    return _load_pickle_named(io.BytesIO(data), name)


def _load_pickle_named(handle: IO[bytes], name: str) -> Any:
    try:
        return safe_pickle_load(handle)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{name}: {exc}") from None
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        UnicodeDecodeError,
    ) as exc:
        raise ParamsFileError(
            f"{name}: truncated or corrupt pickle ({type(exc).__name__}: {exc})"
        ) from exc


def read_params(path: PathLike) -> dict[str, Array]:
    """Read a parameter file written by :func:`save_params`, by DLfS (``pickle.dump`` of a dict
    of arrays) or by any safetensors writer into a dict of arrays. The format is recognised from
    the file's first bytes (zip magic: NPZ; ``{`` after 8 bytes: safetensors; else pickle), not
    from its name.

    A safetensors file is checked whole before any array is made: the header length within the
    file (and at most 100 MB); UTF-8 JSON, an object without repeated names; for each tensor
    exactly the fields dtype, shape and data_offsets; a dtype of F16/F32/F64, I8-I64, U8-U64 or
    BOOL (read as NumPy bool; bytes other than 0 and 1 are refused); a shape of at most 32
    integers; a byte range inside the data whose length is the shape's size times the itemsize;
    the ranges tiling the data exactly (no overlap, gap or trailing bytes), so the arrays total at
    most the file's size. The arrays returned own their memory, in native byte order.

    Raises ``FileNotFoundError`` for a missing file, :class:`UnsafePickleError` for a pickle that
    names anything but arrays and containers, :class:`ParamsFileError` for anything else that
    is wrong with the file, and ``ImportError`` for a valid safetensors file when the
    ``safetensors`` package is not installed. Checking the arrays against a network is the
    network's job.
    """
    name = os.fspath(path)
    with open(name, "rb") as handle:
        head = handle.read(9)
    if not head:
        raise ParamsFileError(f"{name}: the file is empty")
    if head[:4] in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        data: Any = _read_npz(name)
    elif _is_safetensors_head(head):
        data = _read_safetensors(name)
    else:
        data = load_pickle_file(name)
    return _check_arrays(data, name)
