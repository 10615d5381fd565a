"""Reading and writing parameter files and training checkpoints, safely.

Two formats, both readable by plain NumPy/pickle code:

* **Pickle** (``.pkl``, ``.pickle``, ``.p``): a plain ``dict`` mapping names (``"W1"``, ``"b1"``, ...)
  to NumPy arrays, exactly what *Deep Learning from Scratch* (DLfS) writes with
  ``pickle.dump(params, f)`` and reads with ``pickle.load`` -- so files move freely between DLfS
  and tinyconv in both directions.
* **NPZ** (any other suffix): ``numpy.savez``'s zip of ``.npy`` files, read with
  ``allow_pickle=False``.

Reading never executes code from the file. A pickle can name any importable function and call it
(``os.system`` included), so pickles are read with :class:`RestrictedUnpickler`, which resolves
only the handful of NumPy and standard-library names that array and container reconstruction
need, and refuses everything else with :class:`UnsafePickleError` *before* anything is called.
The format of a file is told from its first bytes, not from its name.

Writing is atomic: data goes to a temporary file in the destination's directory, which is flushed,
``fsync``-ed and then renamed over the destination with ``os.replace``. A crash or an exception
halfway through a save leaves the previous file untouched.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Dict, Iterator, Mapping, Union

import numpy as np

__all__ = [
    "ParamsFileError",
    "UnsafePickleError",
    "RestrictedUnpickler",
    "PICKLE_PROTOCOL",
    "PICKLE_SUFFIXES",
    "atomic_write",
    "safe_pickle_load",
    "safe_pickle_loads",
    "load_pickle_file",
    "save_params",
    "read_params",
    "save_pickle",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Protocol 4 is readable by every Python 3 since 3.4 (DLfS's code included) and handles large
#: arrays; it is the default protocol of the Pythons DLfS targets.
PICKLE_PROTOCOL = 4
#: Suffixes (lower-case) that :func:`save_params` writes as a pickle; anything else is NPZ.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".p")

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


class ParamsFileError(ValueError):
    """A parameter or checkpoint file is unreadable: truncated, corrupt, of the wrong structure, or
    not matching the network it is loaded into. The message names the file and, where one is to
    blame, the offending key and shapes."""


class UnsafePickleError(ParamsFileError, pickle.UnpicklingError):
    """A pickle asked for a global (a function or class) outside the allow-list: it may try to
    run code, so it was refused before anything from it was called."""


# ----------------------------------------------------------------------------------------------
# Restricted unpickling


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol 0-2 pickles use to rebuild ``bytes`` (the
    raw data of an array among them). Only the latin-1 round trip is accepted."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"_codecs.encode is allowed only for latin-1 text, got encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_globals() -> Dict[tuple, Any]:
    # Take the reconstruction functions from NumPy's own reduce output instead of importing them
    # by module path: the path moved from numpy.core to numpy._core in NumPy 2, and importing
    # numpy.core there emits a DeprecationWarning.
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0.0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    table: Dict[tuple, Any] = {}
    for module in ("numpy.core", "numpy._core"):
        table[(f"{module}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{module}.multiarray", "scalar")] = scalar
        # Protocol 5 pickles (the default from Python 3.14 on) rebuild arrays from a buffer.
        table[(f"{module}.numeric", "_frombuffer")] = frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


_ALLOWED_GLOBALS: Dict[tuple, Any] = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only plain containers (dict, list, tuple, str, numbers, bytes),
    ``OrderedDict`` and NumPy arrays, dtypes and scalars.

    Every other global -- ``os.system``, ``builtins.eval``, any class -- raises
    :class:`UnsafePickleError` when the pickle names it, so nothing it would call ever runs.
    ``encoding="latin1"`` reads NumPy arrays pickled by Python 2, as NumPy recommends.
    """

    def __init__(self, file: IO[bytes]):
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only NumPy arrays and plain containers "
                "may appear in a tinyconv parameter file (this pickle may try to run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent ids in a parameter file")


def safe_pickle_load(file: IO[bytes]) -> Any:
    """``pickle.load`` restricted to arrays and plain containers (see :class:`RestrictedUnpickler`)."""
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


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on normal exit flush, fsync and
    atomically rename it to ``path``. On an exception the temporary file is removed and ``path`` is
    left as it was (absent, or the previous complete file)."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
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
    ``numpy.ndarray`` in the arrays' own dtypes (DLfS's ``load_params`` reads it as is). Any other
    name gets an uncompressed NPZ archive, written under exactly that name (no ``.npz`` is added).
    """
    arrays: Dict[str, np.ndarray] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be str, got {key!r}")
        # np.array (not asarray): a private copy, so the file holds a consistent snapshot even if
        # the caller updates the arrays from another thread while this is written.
        arrays[key] = np.array(value)
    if _is_pickle_name(path):
        save_pickle(arrays, path)
    else:
        with atomic_write(path) as handle:
            np.savez(handle, **arrays)


def _check_arrays(data: Any, source: str) -> Dict[str, np.ndarray]:
    if not isinstance(data, dict):
        raise ParamsFileError(f"{source}: expected a dict of arrays, found {type(data).__name__}")
    arrays: Dict[str, np.ndarray] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ParamsFileError(f"{source}: parameter names must be strings, found {key!r}")
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise ParamsFileError(f"{source}: {key!r} is a {type(value).__name__}, not an array")
        if value.dtype.kind not in "biuf":
            raise ParamsFileError(f"{source}: {key!r} has dtype {value.dtype}, expected real numbers")
        arrays[key] = value
    return arrays


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    try:
        # Our own handle: np.load(path) leaks its file when the zip directory is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ParamsFileError(f"{path}: truncated or corrupt NPZ file ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # zlib.error and friends from a damaged member
        raise ParamsFileError(f"{path}: truncated or corrupt NPZ file ({type(exc).__name__}: {exc})") from exc
    return data


def load_pickle_file(path: PathLike) -> Any:
    """Read a pickle with :class:`RestrictedUnpickler`; truncation and corruption become
    :class:`ParamsFileError` naming the file."""
    name = os.fspath(path)
    with open(name, "rb") as handle:
        try:
            return safe_pickle_load(handle)
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{name}: {exc}") from None
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as exc:
            raise ParamsFileError(f"{name}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from exc


def read_params(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a parameter file written by :func:`save_params` or by DLfS (``pickle.dump`` of a dict
    of arrays) into a dict of arrays. The format is recognised from the file's first bytes.

    Raises ``FileNotFoundError`` for a missing file, :class:`UnsafePickleError` for a pickle that
    names anything but arrays and containers, and :class:`ParamsFileError` for anything else that
    is wrong with the file. Checking the arrays against a network is the network's job.
    """
    name = os.fspath(path)
    with open(name, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise ParamsFileError(f"{name}: the file is empty")
    if head in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        data: Any = _read_npz(name)
    else:
        data = load_pickle_file(name)
    return _check_arrays(data, name)

