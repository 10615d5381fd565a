"""Finding a data set's files on disk, and downloading them when they are nowhere to be found.

A ``data_dir`` given explicitly is the only place looked in: the four files must be directly
inside it, and if any is missing :class:`IncompleteDataDirError` names the missing ones (nothing
else is searched and nothing is downloaded, so a typo never silently reads another copy).

Without ``data_dir``, places are searched in this order; the first one holding all four files
wins:

1. ``$TINYCONV_DATA/<name>/`` (``<name>`` is ``mnist`` or ``fashion-mnist``);
2. the user cache, ``<cache>/tinyconv/<name>/``: ``platformdirs.user_cache_dir("tinyconv")`` when
   platformdirs is installed, else ``$XDG_CACHE_HOME/tinyconv`` or ``~/.cache/tinyconv``;
3. system locations where OS packages put them (Debian's ``dataset-fashion-mnist``);
4. a download into the user cache, from each mirror in turn (only the files missing there).

A place holding none of the files is passed over quietly.  A place holding some but not all of
them is passed over with a :class:`DatasetLocationWarning` that names it and the missing files
(unless it is the cache and the download completes it), so a half-copied directory is never
mistaken silently for an absent one.

Each file may be gzip-compressed (``train-images-idx3-ubyte.gz``) or not (``...-ubyte``).

Downloads go through nothing but the standard library (an ``urlopen`` that tests replace),
check every file's SHA-256 before it gets its final name, and write atomically (temporary file in
the same directory, fsync, ``os.replace``), so an interrupted or corrupt download never leaves a
file that a later call would trust.  A download is refused as soon as it announces or delivers
more bytes than its file can hold (:attr:`IdxFileSpec.max_download_bytes`).  When everything fails, one :class:`DatasetNotFoundError`
lists each place looked in, each URL tried with the reason, and the ways to fix it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from .._typing import PathLike
from ._catalog import MIRRORS, SYSTEM_DIRS, DatasetSpec, IdxFileSpec, get_spec

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "ENV_VAR",
    "DatasetLocationWarning",
    "DatasetNotFoundError",
    "IncompleteDataDirError",
    "Location",
    "dataset_locations",
    "download_missing",
    "download_verified",
    "find_files",
    "user_cache_dir",
]

ENV_VAR = "TINYCONV_DATA"
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 16
# For download_verified callers that do not know the file: more than any data set file here.
DEFAULT_MAX_DOWNLOAD_BYTES = 64 << 20

log = logging.getLogger(__name__)

# Replaceable, so tests can serve files from 127.0.0.1 and never touch the real mirrors.
urlopen: Callable[..., Any] = urllib.request.urlopen


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says where we looked and
    what to do.  ``attempts`` holds ``(url, reason)`` for each download tried."""

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.attempts = list(attempts)


class IncompleteDataDirError(DatasetNotFoundError):
    """An explicitly given ``data_dir`` lacks some of the data set's files (``missing``, their
    published names); nothing else was searched."""

    def __init__(self, message: str, directory: Path, missing: Sequence[str]):
        super().__init__(message)
        self.directory = directory
        self.missing = tuple(missing)


class DatasetLocationWarning(UserWarning):
    """A place on the search path held only some of a data set's files and was passed over."""


@dataclass(frozen=True)
class Location:
    """One place a data set may be read from, as reported by :func:`dataset_locations`."""

    source: str  # "data_dir", "TINYCONV_DATA", "cache" or "system"
    path: Path
    files: dict[str, Path]  # role -> file found there (gz or raw)
    missing: tuple[str, ...]  # published names of the files not found there

    @property
    def complete(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        if self.complete:
            return f"{self.source}: {self.path} (all files present)"
        if not self.path.exists():
            return f"{self.source}: {self.path} (no such directory)"
        if not self.path.is_dir():
            return f"{self.source}: {self.path} (not a directory)"
        return f"{self.source}: {self.path} (missing {', '.join(self.missing)})"


def user_cache_dir() -> Path:
    """``<user cache>/tinyconv``: where downloads are kept (see the module docstring)."""
    try:
        import platformdirs
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
        return base / "tinyconv"
    return Path(platformdirs.user_cache_dir("tinyconv", appauthor=False))


def dataset_locations(name: str, data_dir: PathLike | None = None) -> list[Location]:
    """Every place :func:`load_mnist`-style loaders look for data set ``name``, in search order,
    each with the files found there: only ``data_dir`` when it is given, else the search path
    (``$TINYCONV_DATA`` is left out when unset)."""
    return _locations(get_spec(name), data_dir)


def _locations(spec: DatasetSpec, data_dir: PathLike | None = None) -> list[Location]:
    if data_dir is not None:
        return [_inspect(spec, "data_dir", _data_dir_path(data_dir))]
    places: list[tuple[str, Path]] = []
    env_root = os.environ.get(ENV_VAR)
    if env_root:
        places.append((ENV_VAR, Path(env_root).expanduser() / spec.name))
    places.append(("cache", user_cache_dir() / spec.name))
    places.extend(("system", path) for path in SYSTEM_DIRS.get(spec.name, ()))
    return [_inspect(spec, source, path) for source, path in places]


def _data_dir_path(data_dir: object) -> Path:
    if isinstance(data_dir, bytes) or not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str or os.PathLike), got {data_dir!r}")
    text = os.fspath(data_dir)
    if not text or "\0" in text:
        raise ValueError(f"data_dir must be a directory path, got {text!r}")
    return Path(text).expanduser()


def _inspect(spec: DatasetSpec, source: str, directory: Path) -> Location:
    files: dict[str, Path] = {}
    missing = []
    for file_spec in spec.files:
        found = _existing_file(directory, file_spec)
        if found is None:
            missing.append(file_spec.filename)
        else:
            files[file_spec.role] = found
    return Location(source, directory, files, tuple(missing))


def _existing_file(directory: Path, file_spec: IdxFileSpec) -> Path | None:
    for name in (file_spec.filename, file_spec.raw_filename):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def find_files(
    spec: DatasetSpec, data_dir: PathLike | None = None, *, download: bool = True
) -> dict[str, Path]:
    """role -> path of each of the data set's files: all from ``data_dir`` when it is given
    (else :class:`IncompleteDataDirError`), otherwise from the first complete place on the search
    path, downloading into the cache if none is complete.  Raises :class:`DatasetNotFoundError`
    when that fails; warns (:class:`DatasetLocationWarning`) about partial places passed over."""
    if data_dir is not None:
        (location,) = _locations(spec, data_dir)
        if not location.complete:
            raise _incomplete_data_dir(spec, location)
        return location.files
    locations = _locations(spec)
    for index, location in enumerate(locations):
        if location.complete:
            _warn_about_partial_places(spec, locations[:index], location.path)
            return location.files
    if not download:
        raise _not_found(spec, locations, attempts=[], download_note="not tried (download=False)")
    cache = user_cache_dir() / spec.name
    attempts = download_missing(spec, cache)
    location = _inspect(spec, "cache", cache)
    if location.complete:
        _warn_about_partial_places(spec, [loc for loc in locations if loc.source != "cache"], cache)
        return location.files
    raise _not_found(spec, locations, attempts, download_note=f"into {cache}, from each mirror")


def _incomplete_data_dir(spec: DatasetSpec, location: Location) -> IncompleteDataDirError:
    directory = location.path
    if not directory.exists():
        problem = "does not exist"
    elif not directory.is_dir():
        problem = "is not a directory"
    elif len(location.missing) == len(spec.files):
        problem = f"holds none of its {len(spec.files)} files"
    else:
        problem = f"lacks {', '.join(location.missing)}"
    return IncompleteDataDirError(
        f"The {spec.title} data set cannot be read from data_dir {str(directory)!r}: the directory "
        f"{problem}. It needs {', '.join(f.filename for f in spec.files)} (each may also be "
        f"uncompressed, without .gz). A data_dir given explicitly is the only place looked in; "
        f"leave it out to search the usual places and download.",
        directory,
        location.missing,
    )


def _warn_about_partial_places(
    spec: DatasetSpec, passed_over: Sequence[Location], chosen: Path
) -> None:
    for location in passed_over:
        if location.files:  # some files, but not all (complete places are never passed over)
            warnings.warn(
                DatasetLocationWarning(
                    f"{spec.title}: passed over {location.source} {location.path}, which lacks "
                    f"{', '.join(location.missing)}; reading the data set from {chosen} instead"
                ),
                stacklevel=5,
            )  # the caller of load_mnist / load_fashion_mnist


def download_missing(
    spec: DatasetSpec,
    dest: Path,
    mirrors: Sequence[str] | None = None,
    opener: Callable[..., Any] | None = None,
) -> list[tuple[str, str]]:
    """Download into ``dest`` each of the data set's files that is not there yet, trying the
    mirrors in order.  Returns ``(url, reason)`` for every failed attempt; files that could not
    be had from any mirror are simply absent from ``dest`` afterwards.

    A mirror that cannot be reached at all (no route, DNS failure, time-out) is not asked for
    the remaining files: offline, that would only multiply the waiting and the error lines.
    """
    mirrors = list(MIRRORS.get(spec.name, ()) if mirrors is None else mirrors)
    opener = opener or urlopen
    attempts: list[tuple[str, str]] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [(str(dest), f"cannot create the cache directory ({_reason(exc)})")]
    unreachable = set()
    for file_spec in spec.files:
        if _existing_file(dest, file_spec) is not None:
            continue
        live_mirrors = [base for base in mirrors if base not in unreachable]
        if not live_mirrors:
            attempts.append((file_spec.filename, "not tried: no mirror could be reached"))
            continue
        for base in live_mirrors:
            url = base.rstrip("/") + "/" + file_spec.filename
            try:
                download_verified(
                    url,
                    dest / file_spec.filename,
                    file_spec.gz_sha256,
                    opener,
                    max_bytes=file_spec.max_download_bytes,
                )
                break
            except Exception as exc:
                attempts.append((url, _reason(exc)))
                log.info("download of %s failed: %s", url, attempts[-1][1])
                if _is_connection_failure(exc):
                    unreachable.add(base)
    return attempts


def _is_connection_failure(exc: BaseException) -> bool:
    """True when the server was never reached (as opposed to an HTTP error or bad data)."""
    if isinstance(exc, urllib.error.HTTPError):
        return False
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout))


class ChecksumMismatch(ValueError):
    """The bytes received are not the published file."""


class IncompleteDownload(OSError):
    """The server sent fewer (or more) bytes than it announced."""


class DownloadTooLarge(OSError):
    """The server announced or sent more bytes than the file can hold."""


def download_verified(
    url: str,
    target: Path,
    sha256: str,
    opener: Callable[..., Any] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> Path:
    """Fetch ``url`` to ``target`` if its SHA-256 is ``sha256``; never leave a partial file.

    The bytes go to a temporary file beside ``target`` (same file system, so the final
    ``os.replace`` is atomic), which is fsynced and only then renamed; on any failure it is
    removed.  More than ``max_bytes`` (announced in Content-Length, or received) stops the
    download with :class:`DownloadTooLarge` before the excess is written.
    """
    opener = opener or urlopen
    handle, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, opener(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            status = getattr(response, "status", 200)
            if status != 200:  # urllib raises for errors already; a plain opener might not
                raise OSError(f"HTTP status {status}")
            total = _content_length(response)
            if total is not None and total > max_bytes:
                raise DownloadTooLarge(
                    f"the server announces {total:,} bytes; the file cannot be "
                    f"larger than {max_bytes:,}"
                )
            received = 0
            with _ProgressBar(total, target.name, url) as advance:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    if received + len(chunk) > max_bytes:
                        raise DownloadTooLarge(
                            f"more than {max_bytes:,} bytes received; the file cannot be that large"
                        )
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
            # http.client's read(n) just returns b"" when the server hangs up early; say so
            # plainly rather than leaving it to the checksum.
            if total is not None and received != total:
                raise IncompleteDownload(f"connection closed after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(f"SHA-256 mismatch: got {digest.hexdigest()}, expected {sha256}")
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(target.parent)
    return target


def _content_length(response: object) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _ProgressBar:
    """A tqdm bar when tqdm is installed and stderr is a terminal; a one-line note on a
    terminal without tqdm; nothing otherwise (logs and CI output stay clean)."""

    def __init__(self, total: int | None, label: str, url: str):
        self.bar: tqdm[Any] | None = None
        self.total, self.label, self.url = total, label, url

    def __enter__(self) -> Callable[[int], object]:
        if not _stderr_is_terminal():
            return lambda n: None
        try:
            from tqdm import tqdm
        except ImportError:
            print(f"Downloading {self.url} ...", file=sys.stderr, flush=True)
            return lambda n: None
        bar = self.bar = tqdm(
            total=self.total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=self.label,
            leave=False,
        )
        return bar.update

    def __exit__(self, *exc_info: object) -> Literal[False]:
        if self.bar is not None:
            self.bar.close()
        return False


def _stderr_is_terminal() -> bool:
    try:
        stderr = getattr(sys, "stderr", None)  # None under pythonw, whatever typeshed says
        return stderr is not None and bool(stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; POSIX only (Windows cannot open directories)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    if isinstance(exc, (ChecksumMismatch, IncompleteDownload, DownloadTooLarge)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _not_found(
    spec: DatasetSpec,
    locations: Sequence[Location],
    attempts: Sequence[tuple[str, str]],
    download_note: str,
) -> DatasetNotFoundError:
    names = ", ".join(f.filename for f in spec.files)
    cache = user_cache_dir() / spec.name
    headline = f"The {spec.title} data set was not found"
    headline += " and could not be downloaded." if attempts else "."
    lines = [
        headline,
        f"It consists of 4 files: {names} (each may also be uncompressed, without .gz).",
        "",
        "Looked in, in this order:",
    ]
    for location in locations:
        if location.source == "cache" and not os.environ.get(ENV_VAR):
            lines.append(f"  - {ENV_VAR}: not set")  # in its place in the search order
        lines.append(f"  - {location.describe()}")
    if attempts:
        lines += ["", f"Tried to download {download_note}:"]
        lines += [f"  - {url}: {reason}" for url, reason in attempts]
    else:
        lines += ["", f"Download: {download_note}."]
    lines += [
        "",
        "To fix it, do one of these:",
        "  - pass data_dir='/path/to/dir' with the 4 files directly inside it;",
        f"  - set {ENV_VAR}=/path/to/root and put the 4 files in /path/to/root/{spec.name}/;",
        f"  - copy the 4 files into the cache directory {cache}/;",
    ]
    if SYSTEM_DIRS.get(spec.name):
        lines.append(
            f"  - on Debian or Ubuntu: sudo apt-get install dataset-{spec.name} "
            f"(installs them into {SYSTEM_DIRS[spec.name][0]}/);"
        )
    lines += [
        "  - connect to the internet and call again (each file is checked against its "
        "published SHA-256);",
        "  - or, to get going offline, use tinyconv.datasets.load_sample(): 6,000 "
        "Fashion-MNIST images shipped with tinyconv.",
    ]
    return DatasetNotFoundError("\n".join(lines), attempts)
