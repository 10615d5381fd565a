"""What machine the benchmarks run on, and how many threads each library may use.

Thread counts are set for all three libraries before each pass:

* tinyconv: ``tinyconv.set_num_threads(n)``;
* PyTorch: ``torch.set_num_threads(n)``;
* NumPy's BLAS (OpenBLAS for the wheels): ``threadpoolctl`` when it is installed; otherwise the
  ``openblas_set_num_threads`` entry point of the OpenBLAS library that NumPy loaded, found
  through ctypes (what threadpoolctl does, Linux only); otherwise nothing can be changed once
  NumPy is loaded, and :func:`preset_blas_threads_env` -- called by ``run.py`` before it imports
  NumPy when a single thread count is given -- has put ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``
  in the environment instead. The method used is recorded in the results.

This module imports nothing heavy at import time, so ``run.py`` can use it before NumPy.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import platform
import re
from typing import Callable

# Names OpenBLAS builds give their thread-count setter (plain, 64-bit interface, SciPy's wheels).
_OPENBLAS_SETTERS = (
    "openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "scipy_openblas_set_num_threads64_",
)
_BLAS_ENV_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name, e.g. ``AMD EPYC 7B13`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def machine_slug(model: str | None = None, cores: int | None = None) -> str:
    """A short file-name-safe label: CPU vendor and model plus the core count, e.g.
    ``amd-epyc-7b13-2c`` or ``intel-xeon-platinum-8375c-8c``."""
    model = cpu_model() if model is None else model
    cores = available_cores() if cores is None else cores
    cleaned = re.sub(r"\((r|tm|c)\)", " ", model, flags=re.IGNORECASE)
    cleaned = re.sub(r"@.*$", " ", cleaned)  # clock speed
    cleaned = re.sub(r"\b(cpu|processor|\d+-core)\b", " ", cleaned, flags=re.IGNORECASE)
    words = re.findall(r"[a-z0-9]+", cleaned.lower())[:4]
    return "-".join([*words, f"{cores}c"]) if words else f"cpu-{cores}c"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): a busy machine shows
    here, and explains a noisy run."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def today() -> str:
    return datetime.date.today().isoformat()


def parse_thread_counts(text: str | None) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; ``None`` -> every core."""
    if text is None:
        return [available_cores()]
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(f"--threads needs positive integers separated by commas, got {text!r}")
    return counts


def preset_blas_threads_env(counts: list[int]) -> None:
    """Before NumPy is imported: with a single thread count, tell OpenBLAS through the
    environment, in case neither threadpoolctl nor the ctypes route works later. (With several
    counts the environment cannot follow the passes, so it is left alone.)"""
    if len(counts) == 1:
        for variable in _BLAS_ENV_VARIABLES:
            os.environ[variable] = str(counts[0])


def _loaded_openblas_paths() -> list[str]:
    """Files of the OpenBLAS libraries mapped into this process (Linux ``/proc/self/maps``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {
                line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line
            }
    except OSError:
        return []
    return sorted(paths)


def _openblas_setters() -> dict[str, Callable[[int], None]]:
    setters = {}
    for path in _loaded_openblas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in _OPENBLAS_SETTERS:
            setter = getattr(library, symbol, None)
            if setter is not None:
                setters[f"{os.path.basename(path)}:{symbol}"] = setter
                break
    return setters


class BlasThreads:
    """Sets the thread count of the BLAS under NumPy; ``method`` says how (or that it cannot)."""

    def __init__(self) -> None:
        import numpy  # noqa: F401  (the BLAS must be loaded before it can be found)

        self._threadpoolctl = None
        self._setters: dict[str, Callable[[int], None]] = {}
        try:
            import threadpoolctl

            self._threadpoolctl = threadpoolctl
            self.method = "threadpoolctl"
        except ImportError:
            self._setters = _openblas_setters()
            if self._setters:
                self.method = "ctypes " + ", ".join(self._setters)
            elif any(variable in os.environ for variable in _BLAS_ENV_VARIABLES):
                self.method = (
                    "environment ("
                    + ", ".join(
                        f"{v}={os.environ[v]}" for v in _BLAS_ENV_VARIABLES if v in os.environ
                    )
                    + ")"
                )
            else:
                self.method = "none (BLAS default thread count)"
        self._limits = None

    def set(self, n: int) -> None:
        if self._threadpoolctl is not None:
            self._limits = self._threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        for setter in self._setters.values():
            setter(n)


def library_versions(torch=None, onnxruntime=None) -> dict[str, str | None]:
    """Versions of Python, NumPy and (when they were loaded) PyTorch and ONNX Runtime."""
    import numpy

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": None if torch is None else torch.__version__,
        "onnxruntime": None if onnxruntime is None else onnxruntime.__version__,
    }
