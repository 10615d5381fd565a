"""tinyconv: a small, fast convolutional-network library with the API of
*Deep Learning from Scratch* and a C++17/OpenMP compute core.

Quick tour::

    import tinyconv
    tinyconv.show_config()              # version, compiler, OpenMP, SIMD level, threads
    from tinyconv.util import im2col    # DLfS's common/util.py, compiled
    from tinyconv import functional as F
    y = F.conv2d_forward(x, W, b, stride=1, pad=1)
"""

from __future__ import annotations

import os as _os
from typing import TypedDict, cast

from . import _core
from ._validate import as_positive_int as _as_positive_int

__version__: str = _core.config()["version"]

# More threads than this is a mistake, not a machine (OpenMP would try to start them all).
_MAX_THREADS = 4096

__all__ = [
    "BuildConfig",
    "__version__",
    "config",
    "get_num_threads",
    "set_num_threads",
    "show_config",
]


class BuildConfig(TypedDict):
    """What :func:`config` returns."""

    version: str
    compiler: str
    openmp: str
    openmp_runtime: str
    num_procs: int
    num_threads: int
    isa: str
    available_isas: str
    simd_bits: int
    baseline_simd_bits: int
    sanitizers: str


# Whether the thread count was chosen (set_num_threads or OMP_NUM_THREADS) rather than left at the
# OpenMP default; a data-parallel Trainer replaces only the default with its per-rank share.
_threads_chosen = "OMP_NUM_THREADS" in _os.environ


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in every kernel from now on (process-wide). The initial value is the
    OpenMP default: ``OMP_NUM_THREADS`` if set, else the number of cores. Results do not depend on
    it: every kernel gives bitwise identical output for any thread count."""
    global _threads_chosen
    _core.set_num_threads(_as_positive_int(n, "n", maximum=_MAX_THREADS))
    _threads_chosen = True


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return int(_core.get_num_threads())


def config() -> BuildConfig:
    """Build and runtime facts as a dict: version, compiler, openmp, openmp_runtime (the library
    the threads come from: gomp, omp, ...; empty in a single-threaded build), num_procs, num_threads,
    isa (the GEMM micro-kernel level in use), available_isas, simd_bits, baseline_simd_bits,
    sanitizers (empty, or the sanitizers of a test build: .ci/sanitize)."""
    # The compiled module builds this dict; BuildConfig lists its keys and their types.
    return cast(BuildConfig, dict(_core.config()))


def _openmp_line(info: BuildConfig) -> str:
    if not info["openmp_runtime"]:
        return f"{info['openmp']}: every kernel runs single-threaded"
    return f"{info['openmp']}, runtime {info['openmp_runtime']}"


def show_config() -> None:
    """Print :func:`config` in a readable form."""
    info = config()
    lines = [
        f"tinyconv {info['version']}",
        f"  compiler:        {info['compiler']}",
        f"  OpenMP:          {_openmp_line(info)}",
        f"  threads:         {info['num_threads']} (of {info['num_procs']} processors)",
        f"  GEMM kernel ISA: {info['isa']} ({info['simd_bits']}-bit SIMD); runnable here: {info['available_isas']}",
        f"  other kernels:   {info['baseline_simd_bits']}-bit SIMD (portable baseline build)",
    ]
    print("\n".join(lines))
