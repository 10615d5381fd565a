"""The NumPy references check each other: naive loops vs im2col-based versions, the worked
examples of *Deep Learning from Scratch* (ch. 7), backward passes as exact adjoints of the
forward passes, and the dtype rule. These tests need only NumPy (no compiled core)."""

from __future__ import annotations

import numpy as np
import pytest
from checks import ATOL_FACTOR, RTOL, abs_of, assert_close, assert_dtype
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, geometries, seeds

from tinyconv import reference as R

F64 = np.dtype(np.float64)
F32 = np.dtype(np.float32)

BOOK_INPUT = np.array(
    [[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], dtype=np.float64
).reshape(1, 1, 4, 4)
BOOK_FILTER = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=np.float64).reshape(1, 1, 3, 3)
POOL_INPUT = np.array(
    [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=np.float64
).reshape(1, 1, 4, 4)


def inner(a, b) -> float:
    """<a, b> in float64."""
    return float(np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)))


def assert_adjoint(lhs: float, rhs: float, magnitude: float) -> None:
    """<A x, y> == <x, A^T y> up to float64 rounding of sums of terms no larger than magnitude."""
    assert abs(lhs - rhs) <= RTOL[F64] * abs(lhs) + ATOL_FACTOR[F64] * magnitude, (lhs, rhs)


# ----------------------------------------------------------------------------------------------
# The book's worked examples, exactly


@pytest.mark.parametrize("conv", [R.conv2d_forward, R.conv2d_naive], ids=["im2col", "naive"])
def test_book_convolution_example(conv):
    y = conv(BOOK_INPUT, BOOK_FILTER, np.zeros(1))
    np.testing.assert_array_equal(y[0, 0], [[15, 16], [6, 15]])
    y_bias = conv(BOOK_INPUT, BOOK_FILTER, np.array([3.0]))
    np.testing.assert_array_equal(y_bias[0, 0], [[18, 19], [9, 18]])


@pytest.mark.parametrize("conv", [R.conv2d_forward, R.conv2d_naive], ids=["im2col", "naive"])
def test_book_convolution_example_with_padding(conv):
    # Figure 7-6: padding 1 keeps the 4x4 size.
    y = conv(BOOK_INPUT, BOOK_FILTER, np.zeros(1), stride=1, pad=1)
    assert y.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(y[0, 0, 1:3, 1:3], [[15, 16], [6, 15]])
    # Top-left output: the window covers the padded corner, so only x[0:2, 0:2] * W[1:3, 1:3].
    assert y[0, 0, 0, 0] == 1 * 1 + 2 * 2 + 0 * 0 + 1 * 2


def test_book_7x7_input_pad_1_stride_2():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 1, 7, 7))
    W = rng.standard_normal((1, 1, 3, 3))
    b = rng.standard_normal(1)
    y = R.conv2d_forward(x, W, b, stride=2, pad=1)
    assert y.shape == (1, 1, 4, 4)
    # The explicit loop, written out here once more.
    xpad = np.pad(x[0, 0], 1)
    expected = np.array(
        [
            [np.sum(xpad[2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * W[0, 0]) + b[0] for j in range(4)]
            for i in range(4)
        ]
    )
    np.testing.assert_allclose(y[0, 0], expected, rtol=RTOL[F64], atol=ATOL_FACTOR[F64] * 100)
    np.testing.assert_allclose(
        R.conv2d_naive(x, W, b, stride=2, pad=1), y, rtol=RTOL[F64], atol=ATOL_FACTOR[F64] * 100
    )


def test_book_im2col_shapes():
    rng = np.random.default_rng(0)
    assert R.im2col(rng.random((1, 3, 7, 7)), 5, 5, stride=1, pad=0).shape == (9, 75)
    assert R.im2col(rng.random((10, 3, 7, 7)), 5, 5, stride=1, pad=0).shape == (90, 75)


def test_book_max_pooling_example():
    for pool in (R.max_pool2d_forward, R.max_pool2d_naive):
        y, argmax = pool(POOL_INPUT, 2, 2, stride=2)
        np.testing.assert_array_equal(y[0, 0], [[6, 8], [3, 4]])
        # Winners: 6 at (1, 1), 8 at (1, 3), 3 at (2, 0), 4 at (3, 3); flat index h * 4 + w.
        np.testing.assert_array_equal(argmax[0, 0], [[5, 7], [8, 15]])
        assert argmax.dtype == np.int64


def test_book_average_pooling_example():
    for pool in (R.avg_pool2d_forward, R.avg_pool2d_naive):
        y = pool(POOL_INPUT, 2, 2, stride=2)
        np.testing.assert_array_equal(y[0, 0], [[3.25, 5.25], [2.0, 2.0]])


def test_max_pool_padding_never_wins_and_ties_go_first():
    x = -np.ones((1, 1, 2, 2))  # all negative: zero padding (as in DLfS) would win; -inf does not
    for pool in (R.max_pool2d_forward, R.max_pool2d_naive):
        y, argmax = pool(x, 2, 2, stride=1, pad=1)
        np.testing.assert_array_equal(y, -np.ones((1, 1, 3, 3)))
        # Every window's real values tie at -1: the first real tap in row-major order wins.
        np.testing.assert_array_equal(argmax[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_max_pool_nan_wins_like_np_argmax():
    x = np.array([[1.0, np.nan, 5.0], [np.nan, -np.inf, 2.0]]).reshape(1, 1, 2, 3)
    for pool in (R.max_pool2d_forward, R.max_pool2d_naive):
        y, argmax = pool(x, 2, 2, stride=1)
        assert np.isnan(y).all()
        np.testing.assert_array_equal(argmax[0, 0], [[1, 1]])  # the first NaN in each window


def test_max_pool_all_minus_inf_window_picks_a_real_tap():
    x = np.full((1, 1, 2, 2), -np.inf)
    for pool in (R.max_pool2d_forward, R.max_pool2d_naive):
        y, argmax = pool(x, 2, 2, stride=1, pad=1)
        assert np.all(y == -np.inf)
        np.testing.assert_array_equal(argmax[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_max_pool_rejects_pad_not_below_pool():
    for pool in (R.max_pool2d_forward, R.max_pool2d_naive):
        with pytest.raises(ValueError, match="pad"):
            pool(np.zeros((1, 1, 4, 4)), 2, 3, stride=1, pad=(2, 0))


# ----------------------------------------------------------------------------------------------
# Naive loops vs im2col-based versions


@given(g=geometries(max_batch=2, max_channels=2, max_size=6), fn=st.integers(1, 3), data=st.data())
def test_conv_naive_matches_im2col(g, fn, data):
    x = data.draw(arrays(g.input_shape, F64))
    W = data.draw(arrays((fn, g.C, g.kh, g.kw), F64))
    b = data.draw(arrays((fn,), F64))
    y = R.conv2d_forward(x, W, b, g.stride, g.pad)
    assert y.shape == (g.N, fn, g.out_h, g.out_w)
    magnitude = R.conv2d_forward(abs_of(x), abs_of(W), abs_of(b), g.stride, g.pad)
    assert_close(y, R.conv2d_naive(x, W, b, g.stride, g.pad), F64, magnitude)


@given(g=geometries(max_batch=2, max_channels=2, max_size=6, pad_below_kernel=True), data=st.data())
def test_max_pool_naive_matches_im2col_exactly(g, data):
    x = data.draw(
        arrays(g.input_shape, F64, style=data.draw(st.sampled_from(["small_ints", "normal"])))
    )
    y, argmax = R.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    y_naive, argmax_naive = R.max_pool2d_naive(x, g.kh, g.kw, g.stride, g.pad)
    assert y.shape == argmax.shape == (g.N, g.C, g.out_h, g.out_w)
    np.testing.assert_array_equal(argmax, argmax_naive)
    np.testing.assert_array_equal(y, y_naive)
    # The winner's value is the maximum.
    planes = np.asarray(x).reshape(g.N, g.C, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(planes, argmax.reshape(g.N, g.C, -1), axis=2).reshape(y.shape), y
    )


@given(g=geometries(max_batch=2, max_channels=2, max_size=6), data=st.data())
def test_avg_pool_naive_matches_im2col(g, data):
    x = data.draw(arrays(g.input_shape, F64))
    y = R.avg_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    magnitude = R.avg_pool2d_forward(abs_of(x), g.kh, g.kw, g.stride, g.pad)
    assert_close(y, R.avg_pool2d_naive(x, g.kh, g.kw, g.stride, g.pad), F64, magnitude)


@given(g=geometries(), seed=seeds())
def test_im2col_entries_follow_the_definition(g, seed):
    x = np.random.default_rng(seed).standard_normal(g.input_shape)
    col = R.im2col(x, g.kh, g.kw, g.stride, g.pad)
    assert col.shape == (g.N * g.out_h * g.out_w, g.C * g.kh * g.kw)
    rng = np.random.default_rng(seed + 1)
    for _ in range(20):  # spot-check entries against the index formula
        n, oh, ow = rng.integers(g.N), rng.integers(g.out_h), rng.integers(g.out_w)
        c, p, q = rng.integers(g.C), rng.integers(g.kh), rng.integers(g.kw)
        h, w = oh * g.sh - g.ph + p, ow * g.sw - g.pw + q
        inside = 0 <= h < g.H and 0 <= w < g.W
        want = x[n, c, h, w] if inside else 0.0
        assert col[(n * g.out_h + oh) * g.out_w + ow, (c * g.kh + p) * g.kw + q] == want


# ----------------------------------------------------------------------------------------------
# Backward passes are the exact adjoints (transposes) of the linear maps in the forward passes


@given(g=geometries(), seed=seeds())
def test_col2im_is_adjoint_of_im2col(g, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    col = rng.standard_normal((g.N * g.out_h * g.out_w, g.C * g.kh * g.kw))
    back = R.col2im(col, g.input_shape, g.kh, g.kw, g.stride, g.pad)
    assert back.shape == g.input_shape
    magnitude = inner(abs_of(R.im2col(x, g.kh, g.kw, g.stride, g.pad)), abs_of(col))
    assert_adjoint(inner(R.im2col(x, g.kh, g.kw, g.stride, g.pad), col), inner(x, back), magnitude)
    # Folding the unfolded image multiplies each pixel by the number of windows covering it.
    coverage = R.col2im(
        R.im2col(np.ones(g.input_shape), g.kh, g.kw, g.stride, g.pad),
        g.input_shape,
        g.kh,
        g.kw,
        g.stride,
        g.pad,
    )
    np.testing.assert_allclose(
        R.col2im(
            R.im2col(x, g.kh, g.kw, g.stride, g.pad), g.input_shape, g.kh, g.kw, g.stride, g.pad
        ),
        x * coverage,
        rtol=RTOL[F64],
        atol=ATOL_FACTOR[F64] * np.abs(x).max() * coverage.max(),
    )


@given(g=geometries(), fn=st.integers(1, 3), seed=seeds())
def test_conv_backward_is_adjoint_of_forward(g, fn, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    W = rng.standard_normal((fn, g.C, g.kh, g.kw))
    dout = rng.standard_normal((g.N, fn, g.out_h, g.out_w))
    dx, dW, db = R.conv2d_backward(dout, x, W, g.stride, g.pad)
    assert (dx.shape, dW.shape, db.shape) == (x.shape, W.shape, (fn,))
    y = R.conv2d_forward(x, W, np.zeros(fn), g.stride, g.pad)  # bilinear in (x, W)
    magnitude = inner(
        R.conv2d_forward(abs_of(x), abs_of(W), np.zeros(fn), g.stride, g.pad), abs_of(dout)
    )
    assert_adjoint(inner(y, dout), inner(x, dx), magnitude)
    assert_adjoint(inner(y, dout), inner(W, dW), magnitude)
    np.testing.assert_allclose(
        db, dout.sum(axis=(0, 2, 3)), rtol=RTOL[F64], atol=ATOL_FACTOR[F64] * abs_of(dout).sum()
    )


@given(g=geometries(), seed=seeds())
def test_avg_pool_backward_is_adjoint_of_forward(g, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    dout = rng.standard_normal((g.N, g.C, g.out_h, g.out_w))
    dx = R.avg_pool2d_backward(dout, g.input_shape, g.kh, g.kw, g.stride, g.pad)
    assert dx.shape == g.input_shape
    magnitude = inner(R.avg_pool2d_forward(abs_of(x), g.kh, g.kw, g.stride, g.pad), abs_of(dout))
    assert_adjoint(
        inner(R.avg_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad), dout), inner(x, dx), magnitude
    )


@given(g=geometries(pad_below_kernel=True), seed=seeds())
def test_max_pool_backward_is_adjoint_of_gather(g, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=g.input_shape).astype(np.float64)  # ties included
    dout = rng.standard_normal((g.N, g.C, g.out_h, g.out_w))
    y, argmax = R.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    dx = R.max_pool2d_backward(dout, argmax, g.input_shape)
    assert dx.shape == g.input_shape
    # For fixed winners, y is a gather of x, so <y, dout> == <x, dx>.
    assert_adjoint(inner(y, dout), inner(x, dx), inner(abs_of(y), abs_of(dout)))
    # Only winners receive gradient, and all of dout arrives.
    winners = np.zeros(g.N * g.C * g.H * g.W, dtype=bool)
    plane_offset = (np.arange(g.N * g.C) * g.H * g.W)[:, None]
    winners[(argmax.reshape(g.N * g.C, -1) + plane_offset).ravel()] = True
    assert np.all(dx.ravel()[~winners] == 0)
    np.testing.assert_allclose(
        dx.sum(), dout.sum(), rtol=RTOL[F64], atol=ATOL_FACTOR[F64] * abs_of(dout).sum()
    )


@given(
    n=st.integers(1, 5),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    m=st.integers(1, 5),
    seed=seeds(),
)
def test_affine_backward_is_adjoint_of_forward(n, shape, m, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape))
    d = int(np.prod(shape))
    W = rng.standard_normal((d, m))
    dout = rng.standard_normal((n, m))
    dx, dW, db = R.affine_backward(dout, x, W)
    assert (dx.shape, dW.shape, db.shape) == (x.shape, W.shape, (m,))
    y = R.affine_forward(x, W, np.zeros(m))
    magnitude = inner(abs_of(x).reshape(n, d) @ abs_of(W), abs_of(dout))
    assert_adjoint(inner(y, dout), inner(x, dx), magnitude)
    assert_adjoint(inner(y, dout), inner(W, dW), magnitude)
    np.testing.assert_allclose(
        db, dout.sum(axis=0), rtol=RTOL[F64], atol=ATOL_FACTOR[F64] * abs_of(dout).sum()
    )


# ----------------------------------------------------------------------------------------------
# Activations, softmax, loss, GEMM


def test_relu_and_its_gradient():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(R.relu_forward(x), [[0, 0, 0, 0.5, 3.0]])
    # The gradient at exactly 0 is 0 (the mask is x <= 0, as in DLfS's Relu).
    np.testing.assert_array_equal(R.relu_backward(np.full_like(x, 7.0), x), [[0, 0, 0, 7.0, 7.0]])
    # NaN passes through, forward and backward; -0.0 becomes +0.0.
    special = np.array([np.nan, -0.0])
    y = R.relu_forward(special)
    assert np.isnan(y[0])
    assert y[1] == 0
    assert not np.signbit(y[1])
    np.testing.assert_array_equal(R.relu_backward(np.array([3.0, 3.0]), special), [3.0, 0.0])


def test_sigmoid_is_stable_and_symmetric():
    x = np.array([-1000.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1000.0])
    with np.errstate(all="raise"):  # no overflow anywhere, and no under/overflow warnings hidden
        y = R.sigmoid_forward(x[1:-1])
    np.testing.assert_allclose(y, 1.0 / (1.0 + np.exp(-x[1:-1])), rtol=1e-15)
    y_all = R.sigmoid_forward(x)
    assert y_all[0] == 0.0
    assert y_all[-1] == 1.0
    assert y_all[3] == 0.5
    # Within one unit in the last place near 1 (2.2e-16): np.exp's rounding differs by an ulp
    # between NumPy versions (1.23's scalar path against 2.x's SIMD one).
    np.testing.assert_allclose(
        R.sigmoid_forward(-x), 1.0 - y_all, rtol=0, atol=np.finfo(np.float64).eps
    )
    np.testing.assert_allclose(
        R.sigmoid_backward(np.ones(3), np.array([0.5, 0.25, 1.0])), [0.25, 0.1875, 0.0]
    )


def test_softmax_rows_and_stability():
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0], [-1000.0, 0.0, 1000.0]])
    y = R.softmax(x)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(y[0], e / e.sum(), rtol=1e-15)
    np.testing.assert_allclose(y[1], [1 / 3] * 3, rtol=1e-15)
    np.testing.assert_array_equal(y[2], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(R.softmax(x[0]), y[0], rtol=0, atol=0)  # 1-D is one row
    assert R.softmax(x[0]).shape == (3,)


def test_softmax_cross_entropy_labels_and_onehot_agree():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)) * 5
    t = np.array([0, 3, 1, 2, 3, 0])
    onehot = np.eye(4)[t]
    loss, y = R.softmax_cross_entropy_forward(x, t)
    loss_onehot, y_onehot = R.softmax_cross_entropy_forward(x, onehot)
    assert isinstance(loss, float)
    # DLfS's formula, fine for moderate logits.
    expected = -np.mean(np.log(R.softmax(x)[np.arange(6), t]))
    assert loss == pytest.approx(expected, rel=1e-13)
    assert loss_onehot == pytest.approx(expected, rel=1e-13)
    np.testing.assert_array_equal(y, y_onehot)
    grad = R.softmax_cross_entropy_backward(y, t, dout=2.0)
    np.testing.assert_allclose(grad, (y - onehot) * 2.0 / 6, rtol=1e-15)
    np.testing.assert_array_equal(grad, R.softmax_cross_entropy_backward(y, onehot, dout=2.0))


def test_softmax_cross_entropy_large_logits_stay_finite():
    x = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, y = R.softmax_cross_entropy_forward(x, [2, 1])
    # Sample 0: -log softmax = 2000 exactly (up to exp(-1000) terms); sample 1: log 3.
    assert loss == pytest.approx((2000.0 + np.log(3.0)) / 2, rel=1e-15)
    assert np.all(np.isfinite(y))


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError, match="t"):
        R.softmax_cross_entropy_forward(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="t"):
        R.softmax_cross_entropy_forward(np.zeros((2, 3)), [0, -1])
    with pytest.raises(ValueError, match="t"):
        R.softmax_cross_entropy_forward(np.zeros((2, 3)), [0, 1, 2])


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_definition(trans_a, trans_b):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 3))
    b = rng.standard_normal((3, 4))
    c = rng.standard_normal((5, 4))
    got = R.gemm(
        a.T.copy() if trans_a else a,
        b.T.copy() if trans_b else b,
        c,
        alpha=1.5,
        beta=-0.5,
        trans_a=trans_a,
        trans_b=trans_b,
    )
    np.testing.assert_allclose(got, 1.5 * a @ b - 0.5 * c, rtol=1e-14)
    # beta == 0: c is not read, so NaNs in it do not propagate.
    got = R.gemm(a, b, np.full((5, 4), np.nan), alpha=2.0, beta=0.0)
    np.testing.assert_allclose(got, 2.0 * a @ b, rtol=1e-14)
    with pytest.raises(ValueError, match="beta"):
        R.gemm(a, b, None, beta=1.0)


# ----------------------------------------------------------------------------------------------
# Dtype rule: float32 iff every floating input is float32/float16, ints adopt it, else float64


@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((np.float64, np.float64, np.float64), F64),
        ((np.float32, np.float32, np.float32), F32),
        ((np.float16, np.int32, np.int64), F32),
        ((np.int32, np.float32, np.uint8), F32),
        ((np.float32, np.float64, np.float32), F64),
        ((np.int64, np.int8, np.int32), F64),
    ],
)
def test_reference_dtype_rule(dtypes, expected):
    x = np.ones((1, 1, 3, 3), dtype=dtypes[0])
    W = np.ones((1, 1, 2, 2), dtype=dtypes[1])
    b = np.ones(1, dtype=dtypes[2])
    assert_dtype(R.conv2d_forward(x, W, b), expected)
    assert_dtype(R.conv2d_naive(x, W, b), expected)
    assert_dtype(R.affine_forward(x, np.ones((9, 1), dtype=dtypes[1]), b), expected)


def test_float32_results_are_rounded_float64_results():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    W = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    y32 = R.conv2d_forward(x, W, b, 1, 1)
    y64 = R.conv2d_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), 1, 1)
    assert_dtype(y32, F32)
    np.testing.assert_array_equal(y32, y64.astype(np.float32))


def test_conv_output_size():
    assert R.conv_output_size(4, 3) == 2
    assert R.conv_output_size(7, 3, stride=2, pad=1) == 4
    assert R.conv_output_size(28, 5, stride=1, pad=0) == 24
    assert R.conv_output_size(5, 2, stride=2) == 2  # the last, incomplete window is dropped


# ----------------------------------------------------------------------------------------------
# Arguments are checked and named, as in tinyconv.functional (the references are called with the
# same junk by the tests that compare them)


def _reference_calls():
    """name -> (function, valid arguments, index of each array argument and its name)."""
    x, W, b, dout = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones(1), np.ones((1, 1, 2, 2))
    rows = np.ones((2, 3))
    return {
        "gemm": (
            lambda a, b_, c: R.gemm(a, b_, c, beta=1.0),
            [rows, np.ones((3, 4)), np.ones((2, 4))],
            ["a", "b", "c"],
        ),
        "im2col": (lambda x_: R.im2col(x_, 3, 3), [x], ["input_data"]),
        "col2im": (lambda col: R.col2im(col, (1, 1, 4, 4), 3, 3), [np.ones((4, 9))], ["col"]),
        "conv2d_forward": (R.conv2d_forward, [x, W, b], ["x", "W", "b"]),
        "conv2d_naive": (R.conv2d_naive, [x, W, b], ["x", "W", "b"]),
        "conv2d_max_pool2d": (
            lambda x_, W_, b_: R.conv2d_max_pool2d(x_, W_, b_, pool_h=2, pool_w=2, pool_stride=2),
            [x, W, b],
            ["x", "W", "b"],
        ),
        "conv2d_backward": (R.conv2d_backward, [dout, x, W], ["dout", "x", "W"]),
        "max_pool2d_forward": (lambda x_: R.max_pool2d_forward(x_, 2, 2, 2), [x], ["x"]),
        "max_pool2d_naive": (lambda x_: R.max_pool2d_naive(x_, 2, 2, 2), [x], ["x"]),
        "max_pool2d": (lambda x_: R.max_pool2d(x_, 2, 2, 2), [x], ["x"]),
        "max_pool2d_backward": (
            lambda d, a, r: R.max_pool2d_backward(d, a, (1, 1, 4, 4), relu_output=r),
            [dout, np.zeros((1, 1, 2, 2), np.int64), x],
            ["dout", "argmax", "relu_output"],
        ),
        "max_pool2d_backward_from_input": (
            lambda d, x_: R.max_pool2d_backward_from_input(d, x_, 2, 2, 2),
            [dout, x],
            ["dout", "x"],
        ),
        "avg_pool2d_forward": (lambda x_: R.avg_pool2d_forward(x_, 2, 2, 2), [x], ["x"]),
        "avg_pool2d_naive": (lambda x_: R.avg_pool2d_naive(x_, 2, 2, 2), [x], ["x"]),
        "avg_pool2d_backward": (
            lambda d: R.avg_pool2d_backward(d, (1, 1, 4, 4), 2, 2, 2),
            [dout],
            ["dout"],
        ),
        "relu_forward": (
            lambda x_, out: R.relu_forward(x_, out=out),
            [rows, np.ones((2, 3))],
            ["x", "out"],
        ),
        "relu_backward": (
            lambda d, x_, out: R.relu_backward(d, x_, out=out),
            [rows, rows, np.ones((2, 3))],
            ["dout", "x", "out"],
        ),
        "sigmoid_forward": (R.sigmoid_forward, [rows], ["x"]),
        "sigmoid_backward": (
            lambda d, y, out: R.sigmoid_backward(d, y, out=out),
            [rows, rows, np.ones((2, 3))],
            ["dout", "y", "out"],
        ),
        "softmax": (R.softmax, [rows], ["x"]),
        "softmax_cross_entropy_forward": (
            R.softmax_cross_entropy_forward,
            [rows, np.array([0, 2])],
            ["x", "t"],
        ),
        "softmax_cross_entropy_backward": (
            R.softmax_cross_entropy_backward,
            [rows, np.array([0, 2])],
            ["y", "t"],
        ),
        "affine_forward": (R.affine_forward, [rows, np.ones((3, 4)), np.ones(4)], ["x", "W", "b"]),
        "affine_backward": (
            R.affine_backward,
            [np.ones((2, 4)), rows, np.ones((3, 4))],
            ["dout", "x", "W"],
        ),
        "global_avg_pool2d_forward": (R.global_avg_pool2d_forward, [x], ["x"]),
        "global_avg_pool2d_backward": (
            lambda d: R.global_avg_pool2d_backward(d, (1, 1, 4, 4)),
            [np.ones((1, 1))],
            ["dout"],
        ),
        "batch_norm2d_forward": (
            lambda x_, g, b_, rm, rv: R.batch_norm2d_forward(
                x_, g, b_, rm, rv, train=True, momentum=0.9, eps=1e-5
            ),
            [x, np.ones(1), np.zeros(1), np.zeros(1), np.ones(1)],
            ["x", "gamma", "beta", "running_mean", "running_var"],
        ),
        "batch_norm2d_backward": (
            lambda d, x_, g, m, i, r: R.batch_norm2d_backward(
                d, x_, g, m, i, train=True, relu_output=r
            ),
            [x, x, np.ones(1), np.zeros(1), np.ones(1), x],
            ["dout", "x", "gamma", "mean", "invstd", "relu_output"],
        ),
        "fold_batch_norm": (
            lambda W_, b_, g, be, rm, rv: R.fold_batch_norm(W_, b_, g, be, rm, rv, 1e-5),
            [W, b, np.ones(1), np.zeros(1), np.zeros(1), np.ones(1)],
            ["W", "b", "gamma", "beta", "running_mean", "running_var"],
        ),
        "add_forward": (
            lambda a, b_, out: R.add_forward(a, b_, out=out),
            [rows, rows, np.ones((2, 3))],
            ["a", "b", "out"],
        ),
    }


NOT_ARRAYS = {
    "str": "abc",
    "object": object(),
    "ragged": [[1.0, 2.0], [3.0]],
    "complex": np.ones(3, complex),
    "strings": np.full((2, 2), "ab"),
}


def test_every_reference_function_has_an_argument_case():
    assert set(_reference_calls()) == set(R.__all__) - {"conv_output_size"}


@pytest.mark.parametrize("junk", NOT_ARRAYS.values(), ids=NOT_ARRAYS.keys())
@pytest.mark.parametrize("name", sorted(_reference_calls()))
def test_reference_arrays_that_are_not_real_numbers_are_named(name, junk):
    function, args, names = _reference_calls()[name]
    function(*args)  # the valid call works
    for i, arg_name in enumerate(names):
        with pytest.raises(
            (TypeError, ValueError), match=rf"(?<![A-Za-z0-9_]){arg_name}(?![A-Za-z0-9_])"
        ):
            function(*args[:i], junk, *args[i + 1 :])


def test_reference_gemm_checks_c_even_when_beta_is_zero():
    # The compiled gemm checks c whenever it is given; so does the reference (it only skips reading
    # its values when beta == 0).
    a = np.ones((2, 3))
    with pytest.raises(TypeError, match="c"):
        R.gemm(a, a.T, "c", beta=0.0)
    with pytest.raises(ValueError, match="c"):
        R.gemm(a, a.T, np.ones((3, 3)), beta=0.0)
    with pytest.raises(ValueError, match="alpha"):
        R.gemm(a, a.T, alpha=10**400)
    with pytest.raises(TypeError, match="trans_a"):
        R.gemm(a, a.T, trans_a="yes")
