"""Reading and writing parameter files and training checkpoints, safely.

Two formats, both readable by plain NumPy/pickle code:

* **Pickle** (``.pkl``, ``.pickle``, ``.p``): a plain ``dict`` mapping names (``"W1"``, ``"b1"``, ...)
  to NumPy arrays, exactly what *Deep Learning from Scratch* (DLfS) writes with
  ``pickle.dump(params, f)`` and reads with ``pickle.load`` -- so files move freely between DLfS
  and tinyconv in both directions.
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
import os
import pickle
import re
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Mapping, Union

import numpy as np

from ._unpickle import ALLOWED_GLOBALS, ParamsFileError, RestrictedUnpickler, UnsafePickleError

__all__ = [
    "ParamsFileError",
    "UnsafePickleError",
    "RestrictedUnpickler",
    "ALLOWED_GLOBALS",
    "PICKLE_PROTOCOL",
    "PICKLE_SUFFIXES",
    "atomic_write",
    "remove_stale_temporaries",
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
_LIVE_TEMPORARIES: set = set()
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


def remove_stale_temporaries(path: PathLike) -> List[str]:
    """Delete the temporary files that interrupted writes of ``path`` left behind (a process
    killed mid-save cannot clean up after itself). A temporary is stale when the process that
    wrote it is gone, or when it is this process's and no write of it is in progress. Returns the
    paths removed. :func:`atomic_write` calls this after every successful write and on every
    failure."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    prefix = "." + os.path.basename(target) + "."
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        candidate = os.path.join(directory, name)
        if _is_stale_temporary(candidate, name[len(prefix):]):
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


#: An NPZ's members may expand to at most this many times the file's size (or
#: NPZ_MIN_EXPANSION_BYTES, whichever is larger): real parameters compress little, a zip bomb a
#: thousandfold. tinyconv itself writes uncompressed archives.
NPZ_MAX_EXPANSION = 32
NPZ_MIN_EXPANSION_BYTES = 256 * 2**20


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    try:
        # Our own handle: np.load(path) leaks its file when the zip directory is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            file_size = os.fstat(handle.fileno()).st_size
            # zipfile never inflates a member past its declared size, so bounding the declared
            # sizes bounds the memory and time a hostile archive can make us spend.
            declared = sum(info.file_size for info in archive.zip.infolist())
            limit = max(NPZ_MIN_EXPANSION_BYTES, NPZ_MAX_EXPANSION * file_size)
            if declared > limit:
                raise ParamsFileError(f"{path}: NPZ members claim {declared} bytes uncompressed from a "
                                      f"{file_size}-byte file (more than {limit}): refusing a possible zip bomb")
            data = {key: archive[key] for key in archive.files}
    except ParamsFileError:
        raise
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

