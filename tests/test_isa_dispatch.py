"""The GEMM kernels are compiled once per x86 level (generic, AVX2, AVX-512) and chosen at run time.
Nothing compiled with a level's flags may run on a CPU without that level: the compiler may use
the level's instructions anywhere in that file (clang 14 turned the workspace-size arithmetic of
the AVX-512 file into ``vpminsq``, an illegal instruction on every AVX2 CPU).

The machine running the tests may well have AVX-512, so the check runs the installed tinyconv
under ``qemu-x86_64`` (Debian package ``qemu-user``), which emulates a CPU model without it: the
interpreter, NumPy and tinyconv all run emulated, and an instruction the model lacks kills the
child with SIGILL. The whole chain of a training step runs there on every level the model offers
(``tinyconv._core.set_isa``), and its results are checked against ``tinyconv.reference``.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import tinyconv

QEMU = shutil.which("qemu-x86_64")

# Emulated CPU models and the levels each must offer: Haswell has AVX2 + FMA but no AVX-512;
# Nehalem has neither (SSE4.2), so only the generic kernels may run.
CPU_MODELS = {"Haswell": {"avx2", "generic"}, "Nehalem": {"generic"}}

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tinyconv
    from tinyconv import _core, functional as F, reference as R

    expected = set(sys.argv[1].split(","))
    available = _core.config()["available_isas"].split(",")
    print("compiler:", _core.config()["compiler"], "levels:", available, flush=True)
    assert set(available) == expected, f"emulated CPU offers {available}, expected {sorted(expected)}"

    rng = np.random.default_rng(0)

    def close(got, want, dtype):
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max(initial=0))))

    for isa in available:
        _core.set_isa(isa)
        for dtype in (np.float32, np.float64):
            # Shapes that reach each convolution path: the flat stride-1 one (channels >= 8 and
            # >= 16, several images a canvas and a partial last block), a strided one (stride
            # phases on the canvas), and a 1x1 filter.
            for (n, c, hw, fn, k, stride, pad) in [(17, 8, 6, 16, 3, 1, 1), (3, 16, 9, 8, 3, 2, 1), (2, 3, 5, 4, 1, 1, 0)]:
                x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
                W = rng.standard_normal((fn, c, k, k)).astype(dtype)
                b = rng.standard_normal(fn).astype(dtype)
                y = F.conv2d_forward(x, W, b, stride, pad)
                close(y, R.conv2d_forward(x, W, b, stride, pad), dtype)
                dout = rng.standard_normal(y.shape).astype(dtype)
                for got, want in zip(F.conv2d_backward(dout, x, W, stride, pad), R.conv2d_backward(dout, x, W, stride, pad)):
                    close(got, want, dtype)
            # Batch norm's runs are compiled for the GEMM's level too (leaf_isa.h).
            gamma, beta = rng.standard_normal(fn).astype(dtype), rng.standard_normal(fn).astype(dtype)
            stats = (np.zeros(fn, dtype), np.ones(fn, dtype))
            z, mean, invstd = F.batch_norm2d_forward(y, gamma, beta, *stats, train=True, momentum=0.1, eps=1e-5, relu=True)
            close(z, R.batch_norm2d_forward(y, gamma, beta, np.zeros(fn, dtype), np.ones(fn, dtype), train=True, momentum=0.1, eps=1e-5, relu=True)[0], dtype)
            F.batch_norm2d_backward(rng.standard_normal(z.shape).astype(dtype), y, gamma, mean, invstd, train=True, relu_output=z)
            pooled, argmax = F.max_pool2d_forward(y, 2, 2, 2)
            F.max_pool2d_backward(pooled, argmax, y.shape)
            F.avg_pool2d_backward(F.avg_pool2d_forward(y, 2, 2, 2), y.shape, 2, 2, 2)
            for (m, kk, nn) in [(16, 16, 16), (100, 300, 10), (130, 257, 70)]:  # small path and packed path
                a = rng.standard_normal((m, kk)).astype(dtype)
                bb = rng.standard_normal((kk, nn)).astype(dtype)
                close(F.gemm(a, bb), R.gemm(a, bb), dtype)
                close(F.gemm(a, bb.T.copy(), trans_b=True), R.gemm(a, bb), dtype)
            x = rng.standard_normal((4, 50)).astype(dtype)
            W = rng.standard_normal((50, 10)).astype(dtype)
            close(F.affine_forward(x, W, np.zeros(10, dtype)), R.affine_forward(x, W, np.zeros(10, dtype)), dtype)
        print("ok", isa, flush=True)
    """
)


def qemu_or_skip() -> str:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the ISA levels checked here are x86-64 ones")
    if tinyconv.config()["sanitizers"]:
        # The instruction sets are the same as in the ordinary build; but AddressSanitizer's shadow
        # memory, mapped inside the emulated process, is backed by real memory under qemu-user
        # (the child was killed for memory at 23 GB).
        pytest.skip("a sanitizer build under qemu-user needs its shadow memory in real memory")
    if QEMU is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-x86_64 is missing, and CI=true: install the Debian package qemu-user")
        pytest.skip("qemu-x86_64 is not installed (Debian package qemu-user)")
    return QEMU


@pytest.mark.parametrize("cpu", sorted(CPU_MODELS))
def test_every_level_runs_on_an_emulated_cpu_without_avx512(cpu):
    qemu = qemu_or_skip()
    levels = ",".join(sorted(CPU_MODELS[cpu]))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("TINYCONV_ISA", None)
    result = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, "-W", "error", "-c", CHILD, levels],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    # qemu's own warnings (CPU features its emulator lacks and leaves out) are not the child's.
    stderr = "\n".join(
        line for line in result.stderr.splitlines() if not line.startswith("qemu-x86_64: warning")
    )
    report = f"exit code {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert result.returncode != -signal.SIGILL and "Illegal instruction" not in result.stderr, (
        f"illegal instruction on an emulated {cpu}: code built for a level this CPU lacks ran\n{report}"
    )
    assert result.returncode == 0, report
    for level in CPU_MODELS[cpu]:
        assert f"ok {level}" in result.stdout, report
