"""The fast C++ kernels against the plain C++ loops kept beside them (``tinyconv._core.reference``),
at every GEMM instruction-set level this CPU runs.

Tolerances: float64 rtol 1e-10, float32 rtol 1e-4 (summation order differs between the blocked
kernels and the loops, nothing else).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyconv
from tinyconv import _core

ISAS = tinyconv.config()["available_isas"].split(",")
TOL = {np.float64: {"rtol": 1e-10, "atol": 1e-10}, np.float32: {"rtol": 1e-4, "atol": 1e-4}}


@contextlib.contextmanager
def using_isa(name):
    before = tinyconv.config()["isa"]
    _core.set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(before)


@st.composite
def conv_case(draw):
    n, c, fn = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    fh, fw = draw(st.integers(1, h + 2 * ph)), draw(st.integers(1, w + 2 * pw))
    seed = draw(st.integers(0, 2**31))
    return (n, c, h, w, fn, fh, fw, sh, sw, ph, pw, seed)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=conv_case())
def test_conv_and_im2col_match_loops(isa, dtype, case):
    with using_isa(isa):
        check_conv_and_im2col(dtype, case)


@st.composite
def flat_conv_case(draw):
    """Stride-1 convolutions on the flat path (see conv.cpp): images up to 24x24 (one or several
    to a canvas), kernels 1..5 (1x1 only with padding, else it is the pointwise path), batches
    that leave partial blocks and canvases, and channel counts on both sides of the switch to dx
    as a transposed convolution (8)."""
    n, c, fn = (
        draw(st.integers(1, 6)),
        draw(st.sampled_from([1, 2, 3, 5, 8, 9, 12])),
        draw(st.integers(1, 9)),
    )
    h, w = draw(st.integers(10, 24)), draw(st.integers(10, 24))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if fh == fw == 1 and ph == pw == 0:
        ph = 1
    seed = draw(st.integers(0, 2**31))
    return (n, c, h, w, fn, fh, fw, 1, 1, ph, pw, seed)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=flat_conv_case())
def test_flat_stride1_conv_matches_loops(isa, dtype, case):
    with using_isa(isa):
        check_conv_and_im2col(dtype, case)
        n, c, h, w, fn, fh, fw, sh, sw, ph, pw, seed = case
        rng = np.random.default_rng(seed + 1)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        W = rng.standard_normal((fn, c, fh, fw)).astype(dtype)
        dout = rng.standard_normal((n, fn, h + 2 * ph - fh + 1, w + 2 * pw - fw + 1)).astype(dtype)
        _, dw_want, db_want = _core.reference.conv2d_backward(dout, x, W, sh, sw, ph, pw)
        dx, dw, db = _core.conv2d_backward(dout, x, W, sh, sw, ph, pw, False)
        assert dx is None
        np.testing.assert_allclose(dw, dw_want, **TOL[dtype])
        np.testing.assert_allclose(db, db_want, **TOL[dtype])


@pytest.mark.parametrize("channels", [3, 9])  # dx folded back, and dx as a transposed convolution
@pytest.mark.parametrize("later_batch", [4, 20, 1])
def test_nothing_leaks_from_an_earlier_call_through_the_scratch(channels, later_batch):
    """The per-thread buffers persist across calls: a NaN left there by an earlier call (here a
    whole batch of NaN images) must not reach a later call's results, whatever shape of block
    (a full block of 16 small images first, a partial one after)."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((8, channels, 3, 3))
    poisoned = np.full((32, channels, 8, 8), np.nan)
    _core.conv2d_backward(rng.standard_normal((32, 8, 8, 8)), poisoned, W, 1, 1, 1, 1)
    _core.conv2d_forward(poisoned, W, np.zeros(8), 1, 1, 1, 1)
    x = rng.standard_normal((later_batch, channels, 8, 8))
    dout = rng.standard_normal((later_batch, 8, 8, 8))
    for got, want in zip(
        _core.conv2d_backward(dout, x, W, 1, 1, 1, 1),
        _core.reference.conv2d_backward(dout, x, W, 1, 1, 1, 1),
    ):
        np.testing.assert_allclose(got, want, **TOL[np.float64])
    np.testing.assert_allclose(
        _core.conv2d_forward(x, W, np.ones(8), 1, 1, 1, 1),
        _core.reference.conv2d_forward(x, W, np.ones(8), 1, 1, 1, 1),
        **TOL[np.float64],
    )


def check_conv_and_im2col(dtype, case):
    n, c, h, w, fn, fh, fw, sh, sw, ph, pw, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((fn, c, fh, fw)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    args = (sh, sw, ph, pw)
    y = _core.conv2d_forward(x, W, b, *args)
    np.testing.assert_allclose(y, _core.reference.conv2d_forward(x, W, b, *args), **TOL[dtype])
    # The fused ReLU epilogue: exactly the ReLU of the same kernel's output, on every path.
    np.testing.assert_array_equal(
        _core.conv2d_forward(x, W, b, *args, relu=True), _core.relu_forward(y)
    )
    dout = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(
        _core.conv2d_backward(dout, x, W, *args), _core.reference.conv2d_backward(dout, x, W, *args)
    ):
        np.testing.assert_allclose(got, want, **TOL[dtype])
    col = _core.im2col(x, fh, fw, *args)
    np.testing.assert_array_equal(col, _core.reference.im2col(x, fh, fw, *args))
    np.testing.assert_allclose(
        _core.col2im(col, n, c, h, w, fh, fw, *args),
        _core.reference.col2im(col, n, c, h, w, fh, fw, *args),
        **TOL[dtype],
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=conv_case(), ties=st.booleans())
def test_pooling_matches_loops(dtype, case, ties):
    n, c, h, w, _, fh, fw, sh, sw, ph, pw, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, (n, c, h, w)) if ties else rng.standard_normal((n, c, h, w))).astype(
        dtype
    )
    args = (fh, fw, sh, sw, ph, pw)
    np.testing.assert_allclose(
        _core.avg_pool2d_forward(x, *args),
        _core.reference.avg_pool2d_forward(x, *args),
        **TOL[dtype],
    )
    if ph < fh and pw < fw:
        y, idx = _core.max_pool2d_forward(x, *args)
        y_ref, idx_ref = _core.reference.max_pool2d_forward(x, *args)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(
    m=st.integers(1, 80) | st.sampled_from([1, 97, 300]),
    n=st.integers(1, 80) | st.sampled_from([1, 129, 520]),
    k=st.integers(0, 80) | st.sampled_from([1, 257, 600]),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    beta=st.sampled_from([0.0, 1.0, -0.5]),
    seed=st.integers(0, 2**31),
)
@pytest.mark.parametrize("isa", ISAS)
def test_gemm_matches_loops(isa, dtype, m, n, k, trans_a, trans_b, beta, seed):
    with using_isa(isa):
        check_gemm(dtype, m, n, k, trans_a, trans_b, beta, seed)


def check_gemm(dtype, m, n, k, trans_a, trans_b, beta, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    got = _core.gemm(a, b, c, 1.25, beta, trans_a, trans_b)
    want = _core.reference.gemm(a, b, c, 1.25, beta, trans_a, trans_b)
    scale = max(1.0, np.sqrt(k))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


def test_isa_levels_are_reported_and_selectable():
    info = tinyconv.config()
    assert info["isa"] in ISAS
    assert "generic" in ISAS
    with pytest.raises(ValueError, match="isa"):
        _core.set_isa("sse9000")


def test_kernels_are_right_when_the_runtime_grants_fewer_threads():
    """OMP_THREAD_LIMIT=1 makes every team smaller than the thread count asked for: work split
    by team must still cover every image (checked in a child, as the limit is read at start-up)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import numpy as np, tinyconv
        from tinyconv import _core
        tinyconv.set_num_threads(4)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((9, 3, 8, 8)); W = rng.standard_normal((4, 3, 3, 3))
        b = rng.standard_normal(4); d = rng.standard_normal((9, 4, 8, 8))
        args = (1, 1, 1, 1)
        for got, want in zip(_core.conv2d_backward(d, x, W, *args), _core.reference.conv2d_backward(d, x, W, *args)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(_core.conv2d_forward(x, W, b, *args), _core.reference.conv2d_forward(x, W, b, *args),
                                   rtol=1e-10, atol=1e-10)
        print("ok")
        """
    )
    env = dict(__import__("os").environ, OMP_THREAD_LIMIT="1")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
