"""Property tests: every compiled kernel (``tinyconv.functional``, ``tinyconv.util``) against the
NumPy references in ``tinyconv.reference``.

Hypothesis draws the geometry (N, C, H, W from 1, kernels from 1x1 up to the padded input,
rectangular, stride 1..4 including stride > kernel, pad 0..3, both given as ints or (h, w)
pairs), the dtypes (float64, float32, and mixes with float16 and integer arrays, checking the
output dtype rule), the values (small integers so that ties and exact cancellations happen, and
floats of several scales) and the memory layout (Fortran order, strided and transposed views,
negative strides, nested lists). Tolerances are the suite's fixed ones, see ``checks.py``.
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import pytest
from checks import abs_of, assert_bitwise_equal, assert_close, assert_dtype, assert_exact
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, dtype_plans, geometries, more_examples, spelled_pair

import tinyconv
from tinyconv import _core, util
from tinyconv import functional as F
from tinyconv import reference as R

AVAILABLE_ISAS = [name for name in tinyconv.config()["available_isas"].split(",") if name]


@contextlib.contextmanager
def gemm_isa(name: str):
    """Selects the GEMM micro-kernel level ``name`` for the block, then restores the previous one.
    (A context manager, not a fixture: Hypothesis runs many examples per fixture instance.)"""
    before = tinyconv.config()["isa"]
    _core.set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(before)


def snapshot(*inputs):
    """Copies of the array inputs, to check afterwards that a kernel did not write into them."""
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else None for a in inputs]


def assert_unchanged(inputs, copies):
    for a, copy in zip(inputs, copies):
        if copy is not None:
            np.testing.assert_array_equal(a, copy, err_msg="a kernel modified its input")


# ----------------------------------------------------------------------------------------------
# im2col / col2im (DLfS signatures)


@more_examples(4)
@given(g=geometries(), plan=dtype_plans(1), data=st.data())
def test_im2col_matches_reference_exactly(g, plan, data):
    (x_dtype,), dt = plan
    x = data.draw(arrays(g.input_shape, x_dtype))
    copies = snapshot(x)
    col = util.im2col(x, g.kh, g.kw, g.stride, g.pad)
    assert_dtype(col, dt, "col")
    assert col.shape == (g.N * g.out_h * g.out_w, g.C * g.kh * g.kw)
    # Pure copying: every entry is exactly an input value or a padding zero.
    assert_exact(col, R.im2col(x, g.kh, g.kw, g.stride, g.pad), "col")
    assert_unchanged([x], copies)


@more_examples(4)
@given(g=geometries(), plan=dtype_plans(1), data=st.data())
def test_col2im_matches_reference(g, plan, data):
    (col_dtype,), dt = plan
    col = data.draw(arrays((g.N * g.out_h * g.out_w, g.C * g.kh * g.kw), col_dtype))
    input_shape = data.draw(
        st.sampled_from([g.input_shape, list(g.input_shape), np.array(g.input_shape)])
    )
    img = util.col2im(col, input_shape, g.kh, g.kw, g.stride, g.pad)
    assert_dtype(img, dt, "img")
    magnitude = R.col2im(abs_of(col), g.input_shape, g.kh, g.kw, g.stride, g.pad)
    assert_close(
        img, R.col2im(col, g.input_shape, g.kh, g.kw, g.stride, g.pad), dt, magnitude, "col2im"
    )


@given(
    size=st.integers(1, 50),
    filt=st.integers(1, 50),
    stride=st.integers(1, 5),
    pad=st.integers(0, 5),
)
def test_conv_output_size(size, filt, stride, pad):
    assert util.conv_output_size(size, filt, stride, pad) == R.conv_output_size(
        size, filt, stride, pad
    )
    assert util.conv_output_size(size, filt, stride, pad) == (size + 2 * pad - filt) // stride + 1


# ----------------------------------------------------------------------------------------------
# Convolution


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@more_examples(4)
@given(g=geometries(), fn=st.integers(1, 4), plan=dtype_plans(3), data=st.data())
def test_conv2d_forward(isa, g, fn, plan, data):
    (x_dt, w_dt, b_dt), dt = plan
    x = data.draw(arrays(g.input_shape, x_dt))
    W = data.draw(arrays((fn, g.C, g.kh, g.kw), w_dt))
    b = data.draw(arrays((fn,), b_dt))
    copies = snapshot(x, W, b)
    with gemm_isa(isa):
        y = F.conv2d_forward(x, W, b, g.stride, g.pad)
    assert_dtype(y, dt, "y")
    magnitude = R.conv2d_forward(abs_of(x), abs_of(W), abs_of(b), g.stride, g.pad)
    assert_close(y, R.conv2d_forward(x, W, b, g.stride, g.pad), dt, magnitude, "y")
    assert_unchanged([x, W, b], copies)


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@more_examples(4)
@given(g=geometries(), fn=st.integers(1, 4), plan=dtype_plans(3), data=st.data())
def test_conv2d_backward(isa, g, fn, plan, data):
    (d_dt, x_dt, w_dt), dt = plan
    dout = data.draw(arrays((g.N, fn, g.out_h, g.out_w), d_dt))
    x = data.draw(arrays(g.input_shape, x_dt))
    W = data.draw(arrays((fn, g.C, g.kh, g.kw), w_dt))
    copies = snapshot(dout, x, W)
    with gemm_isa(isa):
        dx, dW, db = F.conv2d_backward(dout, x, W, g.stride, g.pad)
    for name, got in (("dx", dx), ("dW", dW), ("db", db)):
        assert_dtype(got, dt, name)
    want = R.conv2d_backward(dout, x, W, g.stride, g.pad)
    magnitude = R.conv2d_backward(abs_of(dout), abs_of(x), abs_of(W), g.stride, g.pad)
    for name, got, w, m in zip(("dx", "dW", "db"), (dx, dW, db), want, magnitude):
        assert_close(got, w, dt, m, name)
    assert_unchanged([dout, x, W], copies)


def test_conv2d_pointwise_and_batched_paths():
    """1x1 stride-1 unpadded filters skip im2col; a batch larger than the thread count goes
    parallel over images: both must agree with the reference too."""
    rng = np.random.default_rng(11)
    for shape, wshape, stride, pad in [
        ((5, 4, 6, 7), (3, 4, 1, 1), 1, 0),
        ((9, 3, 10, 10), (4, 3, 3, 3), 1, 1),
    ]:
        x, W, b = (
            rng.standard_normal(shape),
            rng.standard_normal(wshape),
            rng.standard_normal(wshape[0]),
        )
        y = F.conv2d_forward(x, W, b, stride, pad)
        assert_close(
            y,
            R.conv2d_forward(x, W, b, stride, pad),
            np.float64,
            R.conv2d_forward(abs(x), abs(W), abs(b), stride, pad),
            "y",
        )
        dout = rng.standard_normal(y.shape)
        got = F.conv2d_backward(dout, x, W, stride, pad)
        want = R.conv2d_backward(dout, x, W, stride, pad)
        mags = R.conv2d_backward(abs(dout), abs(x), abs(W), stride, pad)
        for name, g_, w_, m_ in zip(("dx", "dW", "db"), got, want, mags):
            assert_close(g_, w_, np.float64, m_, name)


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_larger_problems_cross_gemm_blocks(isa, dtype):
    """Sizes past the GEMM blocking (K > KC = 256, several MC x NC blocks) and batches that go
    parallel, for convolution, affine and GEMM, at every ISA level."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 32, 14, 14)).astype(dtype)
    W = rng.standard_normal((40, 32, 3, 3)).astype(dtype)  # K = 288
    b = rng.standard_normal(40).astype(dtype)
    with gemm_isa(isa):
        y = F.conv2d_forward(x, W, b, 1, 1)
        dout = rng.standard_normal(y.shape).astype(dtype)
        grads = F.conv2d_backward(dout, x, W, 1, 1)
    assert_close(
        y,
        R.conv2d_forward(x, W, b, 1, 1),
        dtype,
        R.conv2d_forward(abs(x), abs(W), abs(b), 1, 1),
        "y",
    )
    for name, got, want, mag in zip(
        ("dx", "dW", "db"),
        grads,
        R.conv2d_backward(dout, x, W, 1, 1),
        R.conv2d_backward(abs(dout), abs(x), abs(W), 1, 1),
    ):
        assert_close(got, want, dtype, mag, name)

    xa = rng.standard_normal((64, 8, 8, 8)).astype(dtype)
    Wa = rng.standard_normal((512, 200)).astype(dtype)
    ba = rng.standard_normal(200).astype(dtype)
    da = rng.standard_normal((64, 200)).astype(dtype)
    with gemm_isa(isa):
        ya = F.affine_forward(xa, Wa, ba)
        grads = F.affine_backward(da, xa, Wa)
    assert_close(
        ya,
        R.affine_forward(xa, Wa, ba),
        dtype,
        R.affine_forward(abs(xa), abs(Wa), abs(ba)),
        "affine y",
    )
    for name, got, want, mag in zip(
        ("dx", "dW", "db"),
        grads,
        R.affine_backward(da, xa, Wa),
        R.affine_backward(abs(da), abs(xa), abs(Wa)),
    ):
        assert_close(got, want, dtype, mag, name)

    for trans_a in (False, True):
        for trans_b in (False, True):
            M, N, K = 301, 1100, 300
            a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
            bm = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
            c = rng.standard_normal((M, N)).astype(dtype)
            with gemm_isa(isa):
                got = F.gemm(a, bm, c, alpha=0.5, beta=-1.5, trans_a=trans_a, trans_b=trans_b)
            want = R.gemm(a, bm, c, alpha=0.5, beta=-1.5, trans_a=trans_a, trans_b=trans_b)
            mag = 0.5 * R.gemm(abs(a), abs(bm), trans_a=trans_a, trans_b=trans_b) + 1.5 * abs(c)
            assert_close(got, want, dtype, mag, f"gemm trans_a={trans_a} trans_b={trans_b}")


# ----------------------------------------------------------------------------------------------
# Pooling


@more_examples(4)
@given(g=geometries(pad_below_kernel=True), plan=dtype_plans(1), data=st.data())
def test_max_pool2d_forward_exact_with_ties(g, plan, data):
    (x_dt,), dt = plan
    # Mostly small integers: many ties, so the first-maximum rule really is exercised.
    style = data.draw(st.sampled_from(["small_ints", "small_ints", "uniform", "scaled"]))
    x = data.draw(arrays(g.input_shape, x_dt, style=style))
    copies = snapshot(x)
    y, argmax = F.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    assert_dtype(y, dt, "y")
    assert_dtype(argmax, np.int64, "argmax")
    y_want, argmax_want = R.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    assert y.shape == argmax.shape == (g.N, g.C, g.out_h, g.out_w)
    # Selection is exact: same winners, same values.
    assert_exact(argmax, argmax_want, "argmax")
    assert_exact(y, y_want, "y")
    assert_unchanged([x], copies)


@more_examples(4)
@given(g=geometries(pad_below_kernel=True), plan=dtype_plans(1), data=st.data())
def test_max_pool2d_backward(g, plan, data):
    (d_dt,), dt = plan
    x = data.draw(arrays(g.input_shape, np.float64, style="small_ints", allow_list=False))
    _, argmax = R.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    dout = data.draw(arrays((g.N, g.C, g.out_h, g.out_w), d_dt))
    argmax_spelling = data.draw(st.sampled_from(["int64", "int32", "fortran", "list"]))
    argmax_arg = {
        "int64": argmax,
        "int32": argmax.astype(np.int32),
        "fortran": np.asfortranarray(argmax),
        "list": argmax.tolist(),
    }[argmax_spelling]
    input_shape = data.draw(
        st.sampled_from([g.input_shape, list(g.input_shape), np.array(g.input_shape)])
    )
    dx = F.max_pool2d_backward(dout, argmax_arg, input_shape)
    assert_dtype(dx, dt, "dx")
    magnitude = R.max_pool2d_backward(abs_of(dout), argmax, g.input_shape)
    assert_close(dx, R.max_pool2d_backward(dout, argmax, g.input_shape), dt, magnitude, "dx")


@more_examples(4)
@given(g=geometries(pad_below_kernel=True), plan=dtype_plans(2), data=st.data())
def test_max_pool2d_values_only_and_backward_from_input(g, plan, data):
    """The argmax-free pair the Pooling layer uses: values equal to max_pool2d_forward's, and a
    backward that finds the winners again from x (ties included) equal to the argmax route."""
    (x_dt, d_dt), dt = plan
    style = data.draw(st.sampled_from(["small_ints", "small_ints", "uniform"]))
    x = data.draw(arrays(g.input_shape, x_dt, style=style))
    dout = data.draw(arrays((g.N, g.C, g.out_h, g.out_w), d_dt))
    copies = snapshot(x, dout)
    y = F.max_pool2d(x, g.kh, g.kw, g.stride, g.pad)
    assert_exact(y, R.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)[0].astype(y.dtype), "y")
    dx = F.max_pool2d_backward_from_input(dout, x, g.kh, g.kw, g.stride, g.pad)
    assert_dtype(dx, dt, "dx")
    want = R.max_pool2d_backward_from_input(dout, x, g.kh, g.kw, g.stride, g.pad)
    _, argmax = R.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    magnitude = R.max_pool2d_backward(abs_of(dout), argmax, g.input_shape)
    assert_close(dx, want, dt, magnitude, "dx")
    assert_unchanged([x, dout], copies)


@more_examples(4)
@given(g=geometries(), plan=dtype_plans(1), data=st.data())
def test_avg_pool2d_forward(g, plan, data):
    (x_dt,), dt = plan
    x = data.draw(arrays(g.input_shape, x_dt))
    copies = snapshot(x)
    y = F.avg_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    assert_dtype(y, dt, "y")
    magnitude = R.avg_pool2d_forward(abs_of(x), g.kh, g.kw, g.stride, g.pad)
    assert_close(y, R.avg_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad), dt, magnitude, "y")
    assert_unchanged([x], copies)


@more_examples(4)
@given(g=geometries(), plan=dtype_plans(1), data=st.data())
def test_avg_pool2d_backward(g, plan, data):
    (d_dt,), dt = plan
    dout = data.draw(arrays((g.N, g.C, g.out_h, g.out_w), d_dt))
    input_shape = data.draw(
        st.sampled_from([g.input_shape, list(g.input_shape), np.array(g.input_shape)])
    )
    dx = F.avg_pool2d_backward(dout, input_shape, g.kh, g.kw, g.stride, g.pad)
    assert_dtype(dx, dt, "dx")
    magnitude = R.avg_pool2d_backward(abs_of(dout), g.input_shape, g.kh, g.kw, g.stride, g.pad)
    assert_close(
        dx,
        R.avg_pool2d_backward(dout, g.input_shape, g.kh, g.kw, g.stride, g.pad),
        dt,
        magnitude,
        "dx",
    )


@more_examples(4)
@given(
    shape=st.sampled_from([(2, 2, 2), (3, 3, 2), (3, 3, 1)]),
    pad=st.integers(0, 1),
    hw=st.tuples(st.integers(3, 13), st.integers(3, 13)),
    dtype=st.sampled_from([np.float32, np.float64]),
    nan_fraction=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
    data=st.data(),
)
def test_max_pool2d_unrolled_shapes(shape, pad, hw, dtype, nan_fraction, data):
    """The pooling shapes with an unrolled, vectorised path (2x2 stride 2, 3x3 stride 2 or 1),
    whole and padding-clipped windows, rows of every length: the winners (first maximum, first
    NaN, padding never) equal the reference's in all three kernels that search windows."""
    k, _, stride = shape
    h, w = hw
    if pad >= k or h + 2 * pad < k or w + 2 * pad < k:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-3, 4, (2, 3, h, w)).astype(dtype)  # many ties
    x[rng.random(x.shape) < nan_fraction] = np.nan
    y, argmax = F.max_pool2d_forward(x, k, k, stride, pad)
    y_want, argmax_want = R.max_pool2d_forward(x, k, k, stride, pad)
    assert_exact(argmax, argmax_want, "argmax")
    np.testing.assert_array_equal(y, y_want)  # NaNs in the same places
    np.testing.assert_array_equal(F.max_pool2d(x, k, k, stride, pad), y_want)
    dout = rng.integers(1, 9, y.shape).astype(dtype)
    np.testing.assert_array_equal(
        F.max_pool2d_backward_from_input(dout, x, k, k, stride, pad),
        R.max_pool2d_backward(dout, argmax_want, x.shape),
    )


@more_examples(4)
@given(
    g=geometries(pad_below_kernel=True),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_max_pool2d_backward_through_relu_is_both_passes(g, dtype, data):
    """relu_output= / through_relu=: the pooling backward fused with the backward pass of the ReLU
    that produced its input gives exactly relu_backward(max_pool2d_backward(...)): zeros, ties,
    NaN and overlapping windows included."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = F.relu_forward(rng.integers(-2, 3, g.input_shape).astype(dtype))  # a ReLU's output
    x[rng.random(x.shape) < 0.05] = np.nan
    y, argmax = F.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    dout = rng.standard_normal(y.shape).astype(dtype)
    want = F.relu_backward(F.max_pool2d_backward(dout, argmax, x.shape), x)
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, argmax, x.shape, relu_output=x), want)
    np.testing.assert_array_equal(
        F.max_pool2d_backward_from_input(dout, x, g.kh, g.kw, g.stride, g.pad, through_relu=True),
        want,
    )
    np.testing.assert_array_equal(
        R.max_pool2d_backward(dout, argmax, x.shape, relu_output=x),
        R.relu_backward(R.max_pool2d_backward(dout, argmax, x.shape), x),
    )


@pytest.mark.parametrize("bad", [-1, 64, 2**40])
def test_max_pool2d_backward_finds_one_bad_argmax_among_many(bad):
    """The range check runs inside the (parallel) scatter: one offender in a large argmax is
    still reported, with its position, and nothing is written out of bounds."""
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 8))
    _, argmax = F.max_pool2d_forward(x, 2, 2, 2)
    argmax = argmax.copy()
    argmax[15, 7, 3, 2] = bad
    at = np.ravel_multi_index((15, 7, 3, 2), argmax.shape)
    with pytest.raises(ValueError, match=rf"argmax holds {bad} at flat position {at}\b"):
        F.max_pool2d_backward(np.ones(argmax.shape), argmax, x.shape)


def test_max_pool2d_nan_and_padding_semantics():
    """NaN wins like np.argmax (the first NaN); padding never wins even over negative inputs."""
    x = np.array([[1.0, np.nan, 5.0], [np.nan, -7.0, 2.0]]).reshape(1, 1, 2, 3)
    y, argmax = F.max_pool2d_forward(x, 2, 2, stride=1)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(argmax[0, 0], [[1, 1]])
    neg = -np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    y, argmax = F.max_pool2d_forward(neg, 2, 2, stride=1, pad=1)
    y_want, argmax_want = R.max_pool2d_forward(neg, 2, 2, stride=1, pad=1)
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(argmax, argmax_want)
    assert (y < 0).all()


@given(g=geometries(pad_below_kernel=True), data=st.data())
def test_max_pool2d_rejects_pad_not_below_pool(g, data):
    # Push one direction's pad up to (or past) its pool size; keep the window inside the input.
    bump_h = data.draw(st.booleans())
    ph = g.kh + data.draw(st.integers(0, 2)) if bump_h else g.ph
    pw = g.pw if bump_h else g.kw + data.draw(st.integers(0, 2))
    pad = data.draw(spelled_pair(ph, pw))
    x = np.zeros(g.input_shape)
    with pytest.raises(ValueError, match="pad"):
        F.max_pool2d_forward(x, g.kh, g.kw, g.stride, pad)


# ----------------------------------------------------------------------------------------------
# Activations

# 1-D to 4-D here; 0-d inputs have their own test below, so that a 0-d bug cannot hide others.
SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize(
    "scalar",
    [np.array(-2.5), np.array(1.5, dtype=np.float32), 3.0, np.float64(0.25)],
    ids=["0d-float64", "0d-float32", "python-float", "numpy-scalar"],
)
def test_elementwise_functions_keep_0d_shape(scalar):
    """ "Any shape" includes 0-d: the result has the input's shape ()."""
    dt = np.float32 if np.asarray(scalar).dtype == np.float32 else np.float64
    cases = {
        "relu_forward": (F.relu_forward(scalar), R.relu_forward(scalar)),
        "relu_backward": (F.relu_backward(scalar, scalar), R.relu_backward(scalar, scalar)),
        "sigmoid_forward": (F.sigmoid_forward(scalar), R.sigmoid_forward(scalar)),
        "sigmoid_backward": (
            F.sigmoid_backward(scalar, scalar),
            R.sigmoid_backward(scalar, scalar),
        ),
    }
    for name, (got, want) in cases.items():
        assert_dtype(got, dt, name)
        assert_close(got, want, dt, 0.0, name)  # checks the shape () first


@given(shape=SHAPES, plan=dtype_plans(1), data=st.data())
def test_relu_forward_exact(shape, plan, data):
    (x_dt,), dt = plan
    x = data.draw(arrays(shape, x_dt))
    y = F.relu_forward(x)
    assert_dtype(y, dt, "y")
    assert_exact(y, R.relu_forward(x), "relu")
    assert not np.signbit(y).any(), "relu must map -0.0 (and negatives) to +0.0"


@given(shape=SHAPES, plan=dtype_plans(2), data=st.data())
def test_relu_backward_exact(shape, plan, data):
    (d_dt, x_dt), dt = plan
    dout = data.draw(arrays(shape, d_dt))
    x = data.draw(
        arrays(shape, x_dt, style="small_ints")
    )  # zeros included: the gradient there is 0
    dx = F.relu_backward(dout, x)
    assert_dtype(dx, dt, "dx")
    assert_exact(dx, R.relu_backward(dout, x), "relu_backward")


def test_relu_nan_passes_through():
    x = np.array([np.nan, -1.0, 0.0, -0.0, 2.0])
    y = F.relu_forward(x)
    assert np.isnan(y[0])
    np.testing.assert_array_equal(y[1:], [0.0, 0.0, 0.0, 2.0])
    np.testing.assert_array_equal(F.relu_backward(np.full(5, 3.0), x), [3.0, 0.0, 0.0, 0.0, 3.0])


@given(shape=SHAPES, plan=dtype_plans(1), data=st.data())
def test_sigmoid_forward(shape, plan, data):
    (x_dt,), dt = plan
    # "scaled" reaches |x| ~ 1000, where a naive exp overflows.
    x = data.draw(
        arrays(shape, x_dt, style=data.draw(st.sampled_from(["scaled", "normal", "small_ints"])))
    )
    y = F.sigmoid_forward(x)
    assert_dtype(y, dt, "y")
    assert np.all((y >= 0) & (y <= 1))
    # Elementwise, no sums: relative accuracy is expected (magnitude 0).
    assert_close(y, R.sigmoid_forward(x), dt, 0.0, "y")


def test_sigmoid_extremes():
    for dt in (np.float32, np.float64):
        x = np.array([-1e30, -1000.0, -100.0, 0.0, 100.0, 1000.0, 1e30, np.inf, -np.inf], dtype=dt)
        y = F.sigmoid_forward(x)
        assert not np.isnan(y).any()
        assert_close(y, R.sigmoid_forward(x), dt, 0.0, "y")
        assert y[3] == 0.5
        assert y[-2] == 1.0
        assert y[-1] == 0.0


@given(shape=SHAPES, plan=dtype_plans(2), data=st.data())
def test_sigmoid_backward(shape, plan, data):
    (d_dt, y_dt), dt = plan
    dout = data.draw(arrays(shape, d_dt))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if np.dtype(y_dt).kind == "f":
        y = rng.uniform(0.0, 1.0, size=shape).astype(y_dt)  # a sigmoid output lies in [0, 1]
    else:
        y = rng.integers(0, 2, size=shape).astype(y_dt)
    dx = F.sigmoid_backward(dout, y)
    assert_dtype(dx, dt, "dx")
    # Products only: relative accuracy up to two roundings.
    assert_close(dx, R.sigmoid_backward(dout, y), dt, 0.0, "dx")


# ----------------------------------------------------------------------------------------------
# Softmax and cross-entropy


@given(
    n=st.integers(1, 6),
    k=st.integers(1, 12),
    one_d=st.booleans(),
    plan=dtype_plans(1),
    data=st.data(),
)
def test_softmax(n, k, one_d, plan, data):
    (x_dt,), dt = plan
    shape = (k,) if one_d else (n, k)
    x = data.draw(
        arrays(shape, x_dt, style=data.draw(st.sampled_from(["scaled", "normal", "small_ints"])))
    )
    y = F.softmax(x)
    assert_dtype(y, dt, "y")
    assert y.shape == shape
    # Entries are at most 1 and sum to 1 per row: the magnitude of every term is 1.
    assert_close(y, R.softmax(x), dt, 1.0, "softmax")
    assert_close(
        np.atleast_2d(y).sum(axis=1, dtype=np.float64),
        np.ones(1 if one_d else n),
        dt,
        float(k),
        "row sums",
    )


@st.composite
def targets(draw, n: int, k: int, dtype):
    """Integer labels in several spellings, or target rows (one-hot or any distribution)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    kind = draw(
        st.sampled_from(
            ["int64", "int32", "uint8", "list", "integral_float", "onehot", "distribution"]
        )
    )
    if kind == "int64":
        return labels
    if kind == "int32":
        return labels.astype(np.int32)
    if kind == "uint8":
        return labels.astype(np.uint8)
    if kind == "list":
        return labels.tolist()
    if kind == "integral_float":
        return labels.astype(np.float64)
    if kind == "onehot":
        return np.eye(k, dtype=dtype)[labels]
    return rng.dirichlet(np.ones(k), size=n).astype(dtype)


@given(n=st.integers(1, 6), k=st.integers(1, 12), plan=dtype_plans(1), data=st.data())
def test_softmax_cross_entropy_forward(n, k, plan, data):
    (x_dt,), dt = plan
    x = data.draw(
        arrays((n, k), x_dt, style=data.draw(st.sampled_from(["scaled", "normal", "small_ints"])))
    )
    t = data.draw(targets(n, k, dt))
    loss, y = F.softmax_cross_entropy_forward(x, t)
    loss_want, y_want = R.softmax_cross_entropy_forward(x, t)
    assert isinstance(loss, float)
    assert_dtype(y, dt, "y")
    assert_close(y, y_want, dt, 1.0, "y")
    # loss_n = logsumexp(x_n) - x_n[t]: terms up to about 2 max|x| + log K.
    magnitude = 2 * float(abs_of(x).max()) + np.log(k) + 1
    assert_close(loss, loss_want, dt, magnitude, "loss")


@given(
    n=st.integers(1, 6),
    k=st.integers(1, 12),
    dout=st.sampled_from([1.0, 0.5, -2.0, 3]),
    plan=dtype_plans(1),
    data=st.data(),
)
def test_softmax_cross_entropy_backward(n, k, dout, plan, data):
    (x_dt,), dt = plan
    x = data.draw(arrays((n, k), x_dt, style="normal"))
    y = R.softmax(x)  # in the compute dtype, as the forward pass returns it
    t = data.draw(targets(n, k, dt))
    dx = F.softmax_cross_entropy_backward(y, t, dout)
    assert_dtype(dx, dt, "dx")
    want = R.softmax_cross_entropy_backward(y, t, dout)
    t_dense = (
        np.asarray(t, dtype=np.float64)
        if np.ndim(t) == 2
        else np.eye(k)[np.asarray(t, dtype=np.int64)]
    )
    magnitude = (abs_of(y) + abs_of(t_dense)) * abs(dout) / n
    assert_close(dx, want, dt, magnitude, "dx")


def test_softmax_cross_entropy_default_dout_and_large_logits():
    x = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, y = F.softmax_cross_entropy_forward(x, [2, 1])
    assert np.isfinite(loss)
    assert np.all(np.isfinite(y))
    assert loss == pytest.approx((2000.0 + np.log(3.0)) / 2, rel=1e-12)
    np.testing.assert_allclose(
        F.softmax_cross_entropy_backward(y, [2, 1]),
        R.softmax_cross_entropy_backward(y, [2, 1]),
        rtol=1e-12,
        atol=1e-15,
    )


# ----------------------------------------------------------------------------------------------
# Affine


@given(
    n=st.integers(1, 6),
    feature_shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    m=st.integers(1, 7),
    plan=dtype_plans(3),
    data=st.data(),
)
def test_affine_forward(n, feature_shape, m, plan, data):
    (x_dt, w_dt, b_dt), dt = plan
    d = int(np.prod(feature_shape))
    x = data.draw(arrays((n, *feature_shape), x_dt))
    W = data.draw(arrays((d, m), w_dt))
    b = data.draw(arrays((m,), b_dt))
    y = F.affine_forward(x, W, b)
    assert_dtype(y, dt, "y")
    magnitude = R.affine_forward(abs_of(x), abs_of(W), abs_of(b))
    assert_close(y, R.affine_forward(x, W, b), dt, magnitude, "y")


@given(
    n=st.integers(1, 6),
    feature_shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    m=st.integers(1, 7),
    plan=dtype_plans(3),
    data=st.data(),
)
def test_affine_backward(n, feature_shape, m, plan, data):
    (d_dt, x_dt, w_dt), dt = plan
    d = int(np.prod(feature_shape))
    dout = data.draw(arrays((n, m), d_dt))
    x = data.draw(arrays((n, *feature_shape), x_dt))
    W = data.draw(arrays((d, m), w_dt))
    got = F.affine_backward(dout, x, W)
    want = R.affine_backward(dout, x, W)
    magnitude = R.affine_backward(abs_of(dout), abs_of(x), abs_of(W))
    assert got[0].shape == (n, *feature_shape)
    for name, g_, w_, m_ in zip(("dx", "dW", "db"), got, want, magnitude):
        assert_dtype(g_, dt, name)
        assert_close(g_, w_, dt, m_, name)


# ----------------------------------------------------------------------------------------------
# GEMM

# Mostly small sizes (odd and prime included); sometimes one dimension crosses the micro-kernel's
# block sizes (KC = 256 along K, MC up to 192 along M, NC from 1024 along N).
SMALL_DIM = st.integers(1, 24)
BIG_DIM = {
    0: st.sampled_from([97, 193, 300]),
    1: st.sampled_from([257, 300, 1031, 2053]),
    2: st.sampled_from([257, 300, 521]),
}


@st.composite
def gemm_dims(draw):
    dims = [draw(st.one_of(SMALL_DIM, st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31])))]
    dims += [
        draw(st.one_of(SMALL_DIM, st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31]))) for _ in range(2)
    ]
    if draw(st.integers(0, 4)) == 0:  # one in five: one big dimension
        which = draw(st.integers(0, 2))
        dims[which] = draw(BIG_DIM[which])
    return tuple(dims)  # (M, N, K)


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@more_examples(4)
@given(
    dims=gemm_dims(),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    alpha=st.sampled_from([1.0, -1.0, 0.5, 2.5, 0.0, 3]),
    beta=st.sampled_from([0.0, 1.0, -0.5, 2, 0]),
    with_c=st.booleans(),
    nan_in_c=st.booleans(),
    data=st.data(),
)
def test_gemm(isa, dims, trans_a, trans_b, alpha, beta, with_c, nan_in_c, data):
    M, N, K = dims
    if with_c:
        (a_dt, b_dt, c_dt), dt = data.draw(dtype_plans(3))
    else:
        (a_dt, b_dt), dt = data.draw(dtype_plans(2))
        beta = 0.0
    a = data.draw(arrays((K, M) if trans_a else (M, K), a_dt))
    b = data.draw(arrays((N, K) if trans_b else (K, N), b_dt))
    c = data.draw(arrays((M, N), c_dt, allow_list=False)) if with_c else None
    if c is not None and beta == 0 and nan_in_c and c.dtype.kind == "f":
        c = np.full((M, N), np.nan, dtype=c.dtype)  # beta == 0: c must not be read
    copies = snapshot(a, b, c)
    with gemm_isa(isa):
        got = F.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    assert_dtype(got, dt, "gemm")
    assert got.shape == (M, N)
    want = R.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    magnitude = abs(alpha) * R.gemm(abs_of(a), abs_of(b), trans_a=trans_a, trans_b=trans_b)
    if c is not None and beta != 0:
        magnitude = magnitude + abs(beta) * abs_of(c)
    assert_close(got, want, dt, magnitude, "gemm")
    assert_unchanged([a, b, c], copies)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_empty_inner_dimension(trans_a, trans_b):
    """K == 0: the product is an empty sum, so the result is beta * c (zeros without c)."""
    a = np.zeros((0, 3)) if trans_a else np.zeros((3, 0))
    b = np.zeros((4, 0)) if trans_b else np.zeros((0, 4))
    np.testing.assert_array_equal(F.gemm(a, b, trans_a=trans_a, trans_b=trans_b), np.zeros((3, 4)))
    c = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(
        F.gemm(a, b, c, beta=2.0, trans_a=trans_a, trans_b=trans_b), 2.0 * c
    )
    np.testing.assert_array_equal(
        F.gemm(a, b, np.full((3, 4), np.nan), beta=0.0, trans_a=trans_a, trans_b=trans_b),
        np.zeros((3, 4)),
    )


def test_gemm_does_not_modify_c_and_dtype_rules():
    rng = np.random.default_rng(2)
    a32, b32 = (
        rng.standard_normal((4, 5)).astype(np.float32),
        rng.standard_normal((5, 3)).astype(np.float32),
    )
    c64 = rng.standard_normal((4, 3))
    before = c64.copy()
    out = F.gemm(a32, b32, c64, alpha=1.0, beta=1.0)
    np.testing.assert_array_equal(c64, before)
    assert out.dtype == np.float64  # float64 c makes the call float64
    assert F.gemm(a32, b32).dtype == np.float32
    assert F.gemm(a32.astype(np.float16), np.ones((5, 3), dtype=np.int32)).dtype == np.float32
    assert (
        F.gemm(np.ones((4, 5), dtype=np.int64), np.ones((5, 3), dtype=np.int8)).dtype == np.float64
    )
    np.testing.assert_array_equal(
        F.gemm(np.ones((4, 5), dtype=np.int64), np.ones((5, 3), dtype=np.int8)),
        np.full((4, 3), 5.0),
    )


# ----------------------------------------------------------------------------------------------
# The reference is a drop-in oracle: same names, parameters, kinds and defaults


@pytest.mark.parametrize(
    ("module", "name"),
    [(F, n) for n in F.__all__] + [(util, n) for n in ("im2col", "col2im", "conv_output_size")],
)
def test_reference_signature_matches(module, name):
    def parameters(function):
        return [
            (p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()
        ]

    assert hasattr(R, name), f"tinyconv.reference lacks {name}"
    assert name in R.__all__
    assert parameters(getattr(R, name)) == parameters(getattr(module, name))


# ----------------------------------------------------------------------------------------------
# Empty batches: N = 0 is a legal batch size (the core accepts it); every pass returns empty
# arrays of the right shapes, and a backward pass accepts the shape its forward pass accepted.


def test_empty_batch_convolution_and_pooling():
    x = np.zeros((0, 2, 5, 5))
    W = np.ones((3, 2, 3, 3))
    b = np.ones(3)
    y = F.conv2d_forward(x, W, b, 1, 1)
    assert y.shape == (0, 3, 5, 5)
    dx, dW, db = F.conv2d_backward(np.zeros(y.shape), x, W, 1, 1)
    assert dx.shape == x.shape
    assert_exact(dW, np.zeros_like(W), "dW")  # an empty sum
    assert_exact(db, np.zeros(3), "db")

    y, argmax = F.max_pool2d_forward(x, 2, 2, 2)
    assert y.shape == argmax.shape == (0, 2, 2, 2)
    assert F.max_pool2d_backward(np.zeros(y.shape), argmax, x.shape).shape == x.shape
    y = F.avg_pool2d_forward(x, 2, 2, 2)
    assert y.shape == (0, 2, 2, 2)
    assert F.avg_pool2d_backward(np.zeros(y.shape), x.shape, 2, 2, 2).shape == x.shape
    assert util.im2col(x, 3, 3).shape == (0, 18)


@pytest.mark.parametrize("feature_shape", [(12,), (3, 4), (3, 2, 2)])
def test_empty_batch_affine(feature_shape):
    x = np.zeros((0, *feature_shape))
    W = np.ones((12, 2))
    y = F.affine_forward(x, W, np.ones(2))
    assert_exact(y, R.affine_forward(x, W, np.ones(2)), "y")
    dx, dW, db = F.affine_backward(np.zeros((0, 2)), x, W)
    assert dx.shape == x.shape
    assert_exact(dW, np.zeros((12, 2)), "dW")
    assert_exact(db, np.zeros(2), "db")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_without_dx(dtype):
    """need_dx=False skips the input gradient: dx is None, dW and db are bit-for-bit the same."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 3, 9, 8)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    dout = rng.standard_normal(F.conv2d_forward(x, W, np.zeros(4, dtype), (2, 1), 1).shape).astype(
        dtype
    )
    full = F.conv2d_backward(dout, x, W, (2, 1), 1)
    partial = F.conv2d_backward(dout, x, W, (2, 1), 1, need_dx=False)
    assert partial[0] is None
    for name, got, want in zip(("dW", "db"), partial[1:], full[1:]):
        assert_bitwise_equal(got, want, name)

    xa = rng.standard_normal((6, 2, 5)).astype(dtype)
    Wa = rng.standard_normal((10, 3)).astype(dtype)
    da = rng.standard_normal((6, 3)).astype(dtype)
    full = F.affine_backward(da, xa, Wa)
    partial = F.affine_backward(da, xa, Wa, need_dx=False)
    assert partial[0] is None
    for name, got, want in zip(("dW", "db"), partial[1:], full[1:]):
        assert_bitwise_equal(got, want, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_into_out(dtype):
    """``out=`` for the forward ReLU (networks pass the previous layer's fresh output): the same
    values, written into out, which may be x itself; partial overlap and wrong dtypes refused."""
    x = np.random.default_rng(4).standard_normal((3, 7)).astype(dtype)
    want = F.relu_forward(x)
    separate = np.empty_like(x)
    assert F.relu_forward(x, out=separate) is separate
    assert_exact(separate, want, "out")
    in_place = x.copy()
    assert F.relu_forward(in_place, out=in_place) is in_place
    assert_exact(in_place, want, "in place")
    with pytest.raises(TypeError, match="out"):
        F.relu_forward(x, out=np.empty((3, 7), dtype=np.float16))
    with pytest.raises(ValueError, match="out"):
        F.relu_forward(x, out=np.empty((7, 3), dtype=dtype))
    shifted = np.empty(22, dtype=dtype)
    shifted[:21] = x.ravel()
    with pytest.raises(ValueError, match="overlap"):
        F.relu_forward(shifted[:21].reshape(3, 7), out=shifted[1:].reshape(3, 7))


@pytest.mark.parametrize("name", ["relu_backward", "sigmoid_backward"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_backward_into_out(name, dtype):
    """``out=`` (what networks use to reuse dout's memory): same values as a fresh result,
    written into out, which may be dout itself; a partial overlap or a wrong dtype is refused."""
    rng = np.random.default_rng(3)
    other = rng.standard_normal((4, 5)).astype(dtype)
    if name == "sigmoid_backward":
        other = F.sigmoid_forward(other)
    dout = rng.standard_normal((4, 5)).astype(dtype)
    fn = getattr(F, name)
    want = fn(dout, other)
    separate = np.empty_like(dout)
    assert fn(dout, other, out=separate) is separate
    assert_exact(separate, want, "out")
    in_place = dout.copy()
    assert fn(in_place, other, out=in_place) is in_place
    assert_exact(in_place, want, "in place")
    with pytest.raises(TypeError, match="out"):
        fn(dout, other, out=np.empty((4, 5), dtype=np.float16))
    with pytest.raises(ValueError, match="out"):
        fn(dout, other, out=np.empty((5, 4), dtype=dtype))
    shifted = np.empty(21, dtype=dtype)
    shifted[:20] = dout.ravel()
    with pytest.raises(ValueError, match="overlap"):
        fn(shifted[:20].reshape(4, 5), other, out=shifted[1:].reshape(4, 5))
