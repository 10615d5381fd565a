"""The C++ kernels on the architectures and compilers this machine does not run: ``tools/cross_check.sh``
builds them through CMakeLists.txt (``TINYCONV_KERNEL_CHECK=ON``) for AArch64 (with the NEON GEMM level) and runs ``tools/kernel_check.cpp``
under ``qemu-aarch64`` against the reference loops, compiles and links them for Windows with
MinGW-w64 (``-fopenmp``), and checks that MSVC, whose ``/openmp`` is OpenMP 2.0, sees no newer
OpenMP construct. The check is about the sources, not the installed build.

Needs ``cmake`` and the Debian packages ``g++-aarch64-linux-gnu``, ``qemu-user``,
``g++-mingw-w64-x86-64`` and ``clang`` (``.ci/run`` installs them): skipped without them, failed without them under ``CI=true``.
"""

from __future__ import annotations

import os
import pathlib
import platform
import shutil
import subprocess

import pytest

import tinyconv

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "cross_check.sh"
TOOLS = {
    "cmake": "cmake",
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
    "qemu-aarch64": "qemu-user",
    "x86_64-w64-mingw32-g++": "g++-mingw-w64-x86-64",
    "clang": "clang",
}


def test_kernels_cross_compiled_for_aarch64_and_windows():
    if not SCRIPT.exists():
        pytest.skip(
            "tools/cross_check.sh is not here (tests run outside the source tree, e.g. against a wheel)"
        )
    if tinyconv.config()["sanitizers"]:
        pytest.skip(
            "the cross builds do not depend on the installed module; not repeated under the sanitizers"
        )
    if os.environ.get("TINYCONV_CROSS_CHECK_DONE") == "1":
        pytest.skip(
            "TINYCONV_CROSS_CHECK_DONE=1: this CI run already ran the cross check (it does not depend on the build)"
        )
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the cross toolchains are the Debian x86-64 packages")
    missing = sorted(package for tool, package in TOOLS.items() if shutil.which(tool) is None)
    if missing:
        message = f"cross toolchains missing (Debian packages {', '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI=true: .ci/run installs them")
        pytest.skip(message)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900, env=env
    )
    report = f"exit code {result.returncode}\nstdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, report
    # Each stage said it ran: both AArch64 runs (GCC, clang) offered the NEON level and found no
    # mismatch.
    assert result.stdout.count("kernel_check: GEMM levels neon,generic") == 2, report
    assert result.stdout.count(", 0 failed;") == 2, report
    assert "cross_check: all passed" in result.stdout, report
