"""The kernels of residual networks: batch normalisation for NCHW (forward in training and inference,
running-statistics update, backward), global average pooling, the residual add and BatchNorm
folding, against the NumPy references of ``tinyconv.reference`` and the plain C++ loops of
``_core.reference``.

Tolerances are the suite's fixed ones (``checks.py``): float64 1e-10 relative plus 1e-12 times the
summed magnitude of the terms behind each value, float32 1e-4 relative plus 1e-5 times it.
Selections and the add are exact. Hypothesis draws N, C, H, W from 1 (N = 1, C = 1, 1x1 planes),
channels of m = N*H*W values on both sides of the kernel's block size (csrc/batchnorm.h
kBatchNormBlock), dtypes (float64, float32 and mixes with float16 and integer inputs) and memory
layouts (views, Fortran order, negative strides, lists). Every kernel must give the same bits for
any thread count; a finite-difference check confirms the training-mode gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from checks import abs_of, assert_bitwise_equal, assert_close, assert_dtype, assert_exact
from hypothesis import given
from hypothesis import strategies as st
from strategies import LAYOUTS, arrays, dtype_plans, make_values, more_examples, seeds

import tinyconv
from tinyconv import _core
from tinyconv import functional as F
from tinyconv import reference as R
from tinyconv._validate import float_dtype

BLOCK = 4096  # csrc/batchnorm.h kBatchNormBlock: values of a channel per reduction block
DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]


def per_channel(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)[None, :, None, None]


@st.composite
def bn_shapes(draw, max_values: int = 3 * BLOCK + 5):
    """(N, C, H, W): mostly small (N, C, H, W from 1), sometimes channels of m = N*H*W values
    around one or more reduction blocks (a block then starts inside a plane)."""
    if draw(st.booleans()):
        return (
            draw(st.integers(1, 4)),
            draw(st.integers(1, 4)),
            draw(st.integers(1, 6)),
            draw(st.integers(1, 6)),
        )
    m = draw(st.sampled_from([BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3, max_values]))
    n = draw(st.sampled_from([1, 2, 3]))
    plane = max(1, m // n)
    h = draw(st.sampled_from([1, 7, plane]))
    h = h if plane % h == 0 else 1
    return (n, draw(st.integers(1, 3)), h, plane // h)


def laid_out(data, values: np.ndarray):
    """values in a memory layout drawn by Hypothesis (never a list: some arguments must be arrays)."""
    return LAYOUTS[data.draw(st.sampled_from(sorted(LAYOUTS)))](values)


def drawn_vectors(data, c: int, dtypes, dt):
    """gamma, beta, running_mean, running_var (running_var >= 0), in dtypes[1:5]."""
    rng = np.random.default_rng(data.draw(seeds()))
    gamma = make_values(rng, (c,), dtypes[1], "uniform")
    beta = make_values(rng, (c,), dtypes[2], "normal")
    running_mean = make_values(rng, (c,), dtypes[3], "normal")
    running_var = np.abs(make_values(rng, (c,), dtypes[4], "uniform")) + np.asarray(1, dtypes[4])
    return gamma, beta, running_mean, running_var


def forward_magnitude(x, gamma, beta, mean, invstd) -> np.ndarray:
    """The size of the terms of y = (x - mean) * invstd * gamma + beta."""
    return (abs_of(x) + per_channel(np.abs(mean))) * per_channel(
        np.abs(invstd) * abs_of(gamma)
    ) + per_channel(abs_of(beta))


# ----------------------------------------------------------------------------------------------
# Batch normalisation, forward


@more_examples(2)
@given(
    shape=bn_shapes(),
    plan=dtype_plans(5),
    train=st.booleans(),
    unbiased=st.booleans(),
    relu=st.booleans(),
    momentum=st.sampled_from([0.9, 0.0, 1.0, 0.1]),
    eps=st.sampled_from([1e-5, 1e-3, 1.0]),
    style=st.sampled_from(["normal", "uniform", "small_ints", "scaled", "offset"]),
    data=st.data(),
)
def test_batch_norm_forward(shape, plan, train, unbiased, relu, momentum, eps, style, data):
    dtypes, dt = plan
    n, c, h, w = shape
    if train and unbiased and n * h * w == 1:
        unbiased = False  # refused (test_unbiased_single_value_is_refused)
    rng = np.random.default_rng(data.draw(seeds()))
    x = make_values(rng, shape, dtypes[0], "normal" if style == "offset" else style)
    if style == "offset" and dtypes[0].kind == "f":
        x = (x + np.asarray(100, dtypes[0])).astype(
            dtypes[0]
        )  # mean far from 0: a one-pass variance would cancel
    x = laid_out(data, x)
    gamma, beta, running_mean, running_var = drawn_vectors(data, c, dtypes, dt)
    if train:  # updated in place: arrays of the compute dtype
        running_mean, running_var = running_mean.astype(dt), running_var.astype(dt)
    else:
        running_mean, running_var = laid_out(data, running_mean), laid_out(data, running_var)
    gamma, beta = laid_out(data, gamma), laid_out(data, beta)
    want_mean, want_var = np.array(running_mean, copy=True), np.array(running_var, copy=True)
    copies = [np.array(a, copy=True) for a in (x, gamma, beta)]
    options = {"train": train, "momentum": momentum, "eps": eps, "unbiased": unbiased, "relu": relu}

    y, mean, invstd = F.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, **options)
    want_y, want_mean_used, want_invstd = R.batch_norm2d_forward(
        x, gamma, beta, want_mean, want_var, **options
    )

    for got, name in [(y, "y"), (mean, "mean"), (invstd, "invstd")]:
        assert_dtype(got, dt, name)
    assert y.shape == shape
    assert mean.shape == invstd.shape == (c,)
    x64 = np.asarray(x, dtype=np.float64)
    assert_close(
        mean, want_mean_used, dt, np.mean(np.abs(x64), axis=(0, 2, 3)) if train else 0.0, "mean"
    )
    assert_close(
        invstd, want_invstd, dt, 0.0, "invstd"
    )  # 1/sqrt of a sum of non-negative terms: relative
    assert_close(y, want_y, dt, forward_magnitude(x, gamma, beta, mean, invstd), "y")
    # The running statistics: updated in place when training, untouched otherwise.
    assert_close(
        running_mean,
        want_mean,
        dt,
        np.abs(want_mean) + np.mean(np.abs(x64), axis=(0, 2, 3)),
        "running_mean",
    )
    assert_close(running_var, want_var, dt, 0.0, "running_var")  # sums of non-negative terms
    for a, copy in zip((x, gamma, beta), copies):
        np.testing.assert_array_equal(a, copy, err_msg="an input was modified")
    if relu:
        assert not (y < 0).any()
        assert not np.signbit(y).any()


@given(shape=bn_shapes(), dtype=st.sampled_from(DTYPES), train=st.booleans(), data=st.data())
def test_batch_norm_forward_against_the_plain_loops(shape, dtype, train, data):
    rng = np.random.default_rng(data.draw(seeds()))
    x = make_values(rng, shape, dtype, "normal")
    gamma, beta, running_mean, running_var = drawn_vectors(data, shape[1], [dtype] * 5, dtype)
    copies = running_mean.copy(), running_var.copy()
    n, _, h, w = shape
    options = {
        "train": train,
        "momentum": 0.9,
        "eps": 1e-5,
        "unbiased": n * h * w > 1,
        "relu": data.draw(st.booleans()),
    }
    got = _core.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, *options.values())
    want = _core.reference.batch_norm2d_forward(x, gamma, beta, *copies, *options.values())
    y, mean, invstd = got
    assert_close(y, want[0], dtype, forward_magnitude(x, gamma, beta, mean, invstd), "y")
    assert_close(
        mean,
        want[1],
        dtype,
        np.mean(np.abs(x), axis=(0, 2, 3), dtype=np.float64) if train else 0.0,
        "mean",
    )
    assert_close(invstd, want[2], dtype, 0.0, "invstd")
    assert_close(
        running_mean,
        copies[0],
        dtype,
        np.abs(copies[0]) + np.mean(np.abs(x), axis=(0, 2, 3), dtype=np.float64),
        "running_mean",
    )
    assert_close(running_var, copies[1], dtype, 0.0, "running_var")


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_statistics_follow_dlfs_momentum_and_pytorch_unbiased_variance(dtype):
    """running = momentum * running + (1 - momentum) * batch: momentum weighs the OLD value (DLfS);
    with ``unbiased`` the batch variance is scaled by m / (m - 1) (PyTorch's running_var)."""
    x = np.array([1.0, 2.0, 4.0, 9.0], dtype).reshape(
        2, 1, 1, 2
    )  # one channel, m = 4, mean 4, var 9.5
    one, zero = np.ones(1, dtype), np.zeros(1, dtype)
    for unbiased, batch_var in [(False, 9.5), (True, 9.5 * 4 / 3)]:
        running_mean, running_var = np.array([10.0], dtype), np.array([2.0], dtype)
        _, mean, invstd = F.batch_norm2d_forward(
            x,
            one,
            zero,
            running_mean,
            running_var,
            train=True,
            momentum=0.75,
            eps=0.5,
            unbiased=unbiased,
        )
        assert mean[0] == 4.0
        assert invstd[0] == dtype.type(
            1 / np.sqrt(9.5 + 0.5)
        )  # normalised by the biased variance either way
        assert running_mean[0] == dtype.type(0.75 * 10.0 + 0.25 * 4.0)
        assert running_var[0] == dtype.type(0.75 * 2.0 + 0.25 * batch_var)
    # PyTorch's momentum 0.1 is 0.9 here; momentum 1 keeps the old values, 0 takes the batch's.
    for momentum, want in [(1.0, 10.0), (0.0, 4.0)]:
        running_mean = np.array([10.0], dtype)
        F.batch_norm2d_forward(
            x, one, zero, running_mean, np.ones(1, dtype), train=True, momentum=momentum, eps=1e-5
        )
        assert running_mean[0] == want


def test_inference_uses_and_keeps_the_running_statistics():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 4, 5))
    running_mean, running_var = np.array([0.5, -1.0]), np.array([4.0, 0.25])
    gamma, beta = np.array([2.0, 3.0]), np.array([0.1, -0.2])
    y, mean, invstd = F.batch_norm2d_forward(
        x, gamma, beta, running_mean, running_var, train=False, momentum=0.9, eps=1e-5
    )
    np.testing.assert_array_equal(running_mean, [0.5, -1.0])
    np.testing.assert_array_equal(running_var, [4.0, 0.25])
    assert_exact(mean, running_mean, "mean")
    assert_close(invstd, 1 / np.sqrt(running_var + 1e-5), np.float64, 0.0, "invstd")
    assert_close(
        y,
        (x - per_channel(mean)) * per_channel(invstd * gamma) + per_channel(beta),
        np.float64,
        forward_magnitude(x, gamma, beta, mean, invstd),
        "y",
    )
    # Read-only and non-contiguous running statistics are fine when they are only read.
    frozen = np.repeat(running_var, 2)[::2]
    frozen.flags.writeable = False
    assert_bitwise_equal(
        F.batch_norm2d_forward(
            x, gamma, beta, running_mean, frozen, train=False, momentum=0.9, eps=1e-5
        )[0],
        y,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_variance_does_not_cancel_far_from_zero(dtype):
    """Values 1e4 + {-1, 1}: E[x^2] - E[x]^2 would lose every digit in float32; two passes do not."""
    x = (np.array([-1.0, 1.0] * 8) + 1e4).astype(dtype).reshape(4, 1, 2, 2)
    _, mean, invstd = F.batch_norm2d_forward(
        x,
        np.ones(1, dtype),
        np.zeros(1, dtype),
        np.zeros(1, dtype),
        np.ones(1, dtype),
        train=True,
        momentum=0.9,
        eps=1e-12,
    )
    assert mean[0] == 1e4
    assert_close(invstd, [1.0], dtype, 0.0, "invstd")


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_value_per_channel(dtype):
    """m = N*H*W = 1: the biased variance is 0 and y = beta exactly; the unbiased running
    variance is undefined, which PyTorch refuses ("Expected more than 1 value per channel when
    training") and so does tinyconv, before anything is modified."""
    x = np.array([3.0, -7.0], dtype).reshape(1, 2, 1, 1)
    gamma, beta = np.array([2.0, 5.0], dtype), np.array([0.25, -4.0], dtype)
    running_mean, running_var = np.zeros(2, dtype), np.ones(2, dtype)
    y, mean, _invstd = F.batch_norm2d_forward(
        x, gamma, beta, running_mean, running_var, train=True, momentum=0.5, eps=1e-5
    )
    assert_exact(y, beta.reshape(1, 2, 1, 1), "y")
    assert_exact(mean, x.reshape(2), "mean")
    np.testing.assert_array_equal(running_var, [0.5, 0.5])
    before = running_mean.copy(), running_var.copy()
    with pytest.raises(ValueError, match="unbiased"):
        F.batch_norm2d_forward(
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            train=True,
            momentum=0.5,
            eps=1e-5,
            unbiased=True,
        )
    assert_exact(running_mean, before[0], "running_mean")
    assert_exact(running_var, before[1], "running_var")
    # In inference there is nothing to estimate: fine.
    F.batch_norm2d_forward(
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        train=False,
        momentum=0.5,
        eps=1e-5,
        unbiased=True,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_leaves_the_running_statistics(dtype):
    """N = 0: an empty y, mean and invstd NaN (there is nothing to average), and the running
    statistics stay as they are, as in PyTorch; the backward pass gives zero dgamma and dbeta."""
    x = np.zeros((0, 3, 4, 4), dtype)
    running_mean, running_var = np.arange(3, dtype=dtype), np.ones(3, dtype)
    y, mean, invstd = F.batch_norm2d_forward(
        x,
        np.ones(3, dtype),
        np.zeros(3, dtype),
        running_mean,
        running_var,
        train=True,
        momentum=0.9,
        eps=1e-5,
        unbiased=True,
    )
    assert y.shape == x.shape
    assert np.isnan(mean).all()
    assert np.isnan(invstd).all()
    np.testing.assert_array_equal(running_mean, [0, 1, 2])
    np.testing.assert_array_equal(running_var, [1, 1, 1])
    dx, dgamma, dbeta = F.batch_norm2d_backward(
        x, x, np.ones(3, dtype), mean, invstd, train=True, relu_output=y
    )
    assert dx.shape == x.shape
    assert_exact(dgamma, np.zeros(3, dtype), "dgamma")
    assert_exact(dbeta, np.zeros(3, dtype), "dbeta")


def test_running_statistics_are_the_arrays_given():
    """Updated in place: the caller's arrays change, nothing is copied or returned for them."""
    running_mean, running_var = np.zeros(2, np.float32), np.ones(2, np.float32)
    ids = id(running_mean), id(running_var)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    F.batch_norm2d_forward(
        x,
        np.ones(2, np.float32),
        np.zeros(2, np.float32),
        running_mean,
        running_var,
        train=True,
        momentum=0.5,
        eps=1e-5,
    )
    assert (id(running_mean), id(running_var)) == ids
    assert (running_mean != 0).all()
    assert (running_var != 1).all()


@pytest.mark.parametrize(
    "bad",
    [
        {"momentum": 1.5},
        {"eps": 0.0},
        {"gamma": np.ones(3)},
        {"running_var": np.ones(2, np.float32)},
        {"relu_output": True},
    ],
    ids=["momentum", "eps", "gamma", "running_var-dtype", "unknown-keyword"],
)
def test_a_refused_call_modifies_nothing(bad):
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 3))
    args = {
        "gamma": np.ones(2),
        "beta": np.zeros(2),
        "running_mean": np.zeros(2),
        "running_var": np.ones(2),
        "train": True,
        "momentum": 0.9,
        "eps": 1e-5,
    }
    args.update(bad)
    running_mean, running_var = args["running_mean"], args["running_var"]
    before = running_mean.copy(), running_var.copy()
    with pytest.raises((TypeError, ValueError)):
        F.batch_norm2d_forward(x, **args)
    assert_exact(running_mean, before[0], "running_mean")
    assert_exact(running_var, before[1], "running_var")


# ----------------------------------------------------------------------------------------------
# Batch normalisation, backward


def backward_magnitudes(dout, x, gamma, mean, invstd, relu_output, train):
    """Sizes of the terms of dx, dgamma, dbeta (see R.batch_norm2d_backward)."""
    dy = np.abs(np.asarray(dout, dtype=np.float64))
    if relu_output is not None:
        dy = np.where(np.asarray(relu_output, dtype=np.float64) <= 0, 0.0, dy)
    xhat = np.abs((np.asarray(x, dtype=np.float64) - per_channel(mean)) * per_channel(invstd))
    m = max(1, dy.shape[0] * dy.shape[2] * dy.shape[3])
    dbeta, dgamma = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
    scale = per_channel(
        np.abs(np.asarray(gamma, dtype=np.float64) * np.asarray(invstd, dtype=np.float64))
    )
    dx = (
        scale * (dy + per_channel(dbeta) / m + xhat * per_channel(dgamma) / m)
        if train
        else scale * dy
    )
    return dx, dgamma, dbeta


@more_examples(2)
@given(
    shape=bn_shapes(),
    plan=dtype_plans(6),
    train=st.booleans(),
    gated=st.booleans(),
    consistent=st.booleans(),
    data=st.data(),
)
def test_batch_norm_backward(shape, plan, train, gated, consistent, data):
    """consistent: mean and invstd from the forward pass on x; otherwise arbitrary (the formulas
    hold for any values)."""
    dtypes, _ = plan
    # relu_output is only a gate (as in max_pool2d_backward): it is converted to the dtype that
    # the other five inputs decide, and takes no part in choosing it.
    dt = float_dtype(*(np.zeros(0, d) for d in dtypes[:5]))
    _n, c, _h, _w = shape
    rng = np.random.default_rng(data.draw(seeds()))
    x = make_values(rng, shape, dtypes[1], "normal")
    gamma = make_values(rng, (c,), dtypes[2], "uniform")
    if consistent:
        y, mean, invstd = R.batch_norm2d_forward(
            x.astype(dt),
            gamma.astype(dt),
            np.zeros(c, dt),
            np.zeros(c, dt),
            np.ones(c, dt),
            train=True,
            momentum=0.9,
            eps=1e-5,
            relu=gated,
        )
        mean, invstd = mean.astype(dtypes[3]), invstd.astype(dtypes[4])
    else:
        mean = make_values(rng, (c,), dtypes[3], "normal")
        invstd = np.abs(make_values(rng, (c,), dtypes[4], "uniform")).astype(dtypes[4])
        y = make_values(
            rng, shape, dtypes[5], "small_ints"
        )  # zeros included: the gate closes there
    dout = data.draw(arrays(shape, dtypes[0]))
    relu_output = laid_out(data, y.astype(dtypes[5])) if gated else None
    x, gamma, mean, invstd = (laid_out(data, a) for a in (x, gamma, mean, invstd))

    dx, dgamma, dbeta = F.batch_norm2d_backward(
        dout, x, gamma, mean, invstd, train=train, relu_output=relu_output
    )
    want = R.batch_norm2d_backward(
        dout, x, gamma, mean, invstd, train=train, relu_output=relu_output
    )
    magnitudes = backward_magnitudes(
        dout,
        x,
        gamma,
        np.asarray(mean, np.float64),
        np.asarray(invstd, np.float64),
        relu_output,
        train,
    )
    for got, expected, magnitude, name in zip(
        (dx, dgamma, dbeta), want, magnitudes, ("dx", "dgamma", "dbeta")
    ):
        assert_dtype(got, dt, name)
        assert_close(got, expected, dt, magnitude, name)


@given(
    shape=bn_shapes(),
    dtype=st.sampled_from(DTYPES),
    train=st.booleans(),
    gated=st.booleans(),
    data=st.data(),
)
def test_batch_norm_backward_against_the_plain_loops(shape, dtype, train, gated, data):
    rng = np.random.default_rng(data.draw(seeds()))
    dout, x = (make_values(rng, shape, dtype, "normal") for _ in range(2))
    c = shape[1]
    gamma, mean = make_values(rng, (c,), dtype, "uniform"), make_values(rng, (c,), dtype, "normal")
    invstd = np.abs(make_values(rng, (c,), dtype, "uniform"))
    gate = make_values(rng, shape, dtype, "small_ints") if gated else None
    got = _core.batch_norm2d_backward(dout, x, gamma, mean, invstd, train, gate)
    want = _core.reference.batch_norm2d_backward(dout, x, gamma, mean, invstd, train, gate)
    for g, w, magnitude, name in zip(
        got,
        want,
        backward_magnitudes(dout, x, gamma, mean, invstd, gate, train),
        ("dx", "dgamma", "dbeta"),
    ):
        assert_close(g, w, dtype, magnitude, name)


def numerical_gradient(f, v: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of v (changed in place)."""
    grad = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        keep = v[i]
        v[i] = keep + step
        up = f()
        v[i] = keep - step
        down = f()
        v[i] = keep
        grad[i] = (up - down) / (2 * step)
    return grad


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 2, 1, 3), (5, 1, 1, 1)])
def test_backward_is_the_gradient_of_the_forward(shape, train, relu):
    """float64 finite differences of L = sum(w * y): dx, dgamma, dbeta. In training mode the
    gradient flows through the batch mean and variance too."""
    rng = np.random.default_rng(sum(shape) + 7 * train + relu)
    x = rng.standard_normal(shape) * 2 + 0.5
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    weights = rng.standard_normal(shape)
    running_mean, running_var = rng.standard_normal(c), rng.uniform(0.5, 2, c)

    def loss():
        y = F.batch_norm2d_forward(
            x,
            gamma,
            beta,
            running_mean.copy(),
            running_var.copy(),
            train=train,
            momentum=0.9,
            eps=1e-3,
            relu=relu,
        )[0]
        return float(np.sum(weights * y))

    y, mean, invstd = F.batch_norm2d_forward(
        x,
        gamma,
        beta,
        running_mean.copy(),
        running_var.copy(),
        train=train,
        momentum=0.9,
        eps=1e-3,
        relu=relu,
    )
    assert not (relu and (np.abs(y[y != 0]) < 1e-4).any()), (
        "a value too close to the ReLU's kink for differences"
    )
    dx, dgamma, dbeta = F.batch_norm2d_backward(
        weights, x, gamma, mean, invstd, train=train, relu_output=y if relu else None
    )
    for got, v, name in [(dx, x, "dx"), (dgamma, gamma, "dgamma"), (dbeta, beta, "dbeta")]:
        want = numerical_gradient(loss, v)
        np.testing.assert_allclose(
            got, want, rtol=1e-6, atol=1e-7 * np.abs(weights).sum(), err_msg=name
        )


# ----------------------------------------------------------------------------------------------
# Fused ReLU: the same bits as the separate passes


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (2, 3, 64, 65), (8, 16, 1, 1)])
def test_fused_relu_equals_the_two_passes(shape, dtype, train):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, 0] = np.nan  # NaN passes the ReLU either way
    c = shape[1]
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)

    stats = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)

    def forward(relu):
        running = [s.copy() for s in stats]  # the same statistics for both calls
        return F.batch_norm2d_forward(
            x, gamma, beta, *running, train=train, momentum=0.9, eps=1e-5, relu=relu
        )

    plain, fused = forward(False), forward(True)
    assert_bitwise_equal(fused[0], F.relu_forward(plain[0]), "y")
    dout = rng.standard_normal(shape).astype(dtype)
    dout[1, 0, 0, 0] = np.inf  # masked where the gate is closed, passed where it is open
    two_passes = F.batch_norm2d_backward(
        F.relu_backward(dout, plain[0]), x, gamma, plain[1], plain[2], train=train
    )
    one_pass = F.batch_norm2d_backward(
        dout, x, gamma, plain[1], plain[2], train=train, relu_output=fused[0]
    )
    # The gated and the plain loop are different code: where a NaN meets another NaN or an
    # infinity (channel 0), the NaN that comes out may carry another sign (seen with clang at
    # the AVX-512 level); every other bit must agree.
    for a, b, name in zip(one_pass, two_passes, ("dx", "dgamma", "dbeta")):
        assert_bitwise_equal(a, b, name, nan_payloads=False)
    assert dout[1, 0, 0, 0] == np.inf, "dout must not be modified"


# ----------------------------------------------------------------------------------------------
# Determinism: the same bits for any thread count (channels whole or split into blocks)


@pytest.fixture(scope="module")
def thread_counts():
    return [1, *sorted({2, 3, 4, tinyconv.get_num_threads()} - {1})]


@pytest.fixture(autouse=True)
def restore_num_threads():
    before = tinyconv.get_num_threads()
    yield
    tinyconv.set_num_threads(before)


# Large enough that every thread count is used (the kernels keep small problems serial). C = 1, 3,
# 5 with many blocks per channel: blocks go to threads; C = 4: whole channels for 2 and 4 threads,
# blocks for 3; C = 64: whole channels.
DETERMINISM_SHAPES = [
    (2, 1, 300, 301),
    (4, 3, 120, 110),
    (8, 5, 64, 65),
    (8, 4, 64, 81),
    (16, 64, 14, 14),
]


def _every_output(shape, dtype) -> list[np.ndarray]:
    """Everything batch norm (both modes, with and without the fused ReLU's gate), global average
    pooling and the residual add compute from one seeded input of ``shape``."""
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    x[0, 0, 5, 5] = np.inf if shape[1] > 1 else 1.0
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    outputs = []
    for train in (True, False):
        running_mean, running_var = np.full(c, 0.5, dtype), np.full(c, 2.0, dtype)
        y, mean, invstd = F.batch_norm2d_forward(
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            train=train,
            momentum=0.9,
            eps=1e-5,
            unbiased=True,
            relu=True,
        )
        outputs += [y, mean, invstd, running_mean, running_var]
        outputs += F.batch_norm2d_backward(dout, x, gamma, mean, invstd, train=train, relu_output=y)
        outputs += F.batch_norm2d_backward(dout, x, gamma, mean, invstd, train=train)
    outputs.append(F.global_avg_pool2d_forward(x))
    outputs.append(F.global_avg_pool2d_backward(x[:, :, 0, 0], shape))
    outputs.append(F.add_forward(x, dout, relu=True))
    return outputs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DETERMINISM_SHAPES)
def test_same_bits_for_every_thread_count(thread_counts, shape, dtype):
    runs = {}
    for n in thread_counts:
        tinyconv.set_num_threads(n)
        runs[n] = _every_output(shape, dtype)
    for n, outputs in runs.items():
        for i, (got, want) in enumerate(zip(outputs, runs[1])):
            assert_bitwise_equal(got, want, f"output {i} with {n} threads vs 1 thread")


AVAILABLE_ISAS = [name for name in tinyconv.config()["available_isas"].split(",") if name]


# Batch norm's loops over runs are compiled for the GEMM's level (csrc/leaf_isa.h); they do the
# same operations in the same order at every level. (16, 64, 7, 7): runs of 49 values.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [*DETERMINISM_SHAPES, (16, 64, 7, 7), (3, 2, 6, 17)])
def test_same_bits_at_every_isa_level(shape, dtype):
    isa_before = tinyconv.config()["isa"]
    runs = {}
    try:
        for isa in AVAILABLE_ISAS:
            _core.set_isa(isa)
            runs[isa] = _every_output(shape, dtype)
    finally:
        _core.set_isa(isa_before)
    for isa, outputs in runs.items():
        for i, (got, want) in enumerate(zip(outputs, runs["generic"])):
            assert_bitwise_equal(got, want, f"output {i} at level {isa} vs generic")


# ----------------------------------------------------------------------------------------------
# Global average pooling


@more_examples(2)
@given(shape=bn_shapes(), plan=dtype_plans(1), data=st.data())
def test_global_avg_pool_forward(shape, plan, data):
    (x_dt,), dt = plan
    x = data.draw(arrays(shape, x_dt))
    y = F.global_avg_pool2d_forward(x)
    assert_dtype(y, dt, "y")
    magnitude = np.mean(abs_of(x), axis=(2, 3))
    assert_close(y, R.global_avg_pool2d_forward(x), dt, magnitude, "y")
    assert_close(
        _core.reference.global_avg_pool2d_forward(np.ascontiguousarray(x, dt)),
        y,
        dt,
        magnitude,
        "y (plain loop)",
    )


@given(shape=bn_shapes(), plan=dtype_plans(1), data=st.data())
def test_global_avg_pool_backward_exact(shape, plan, data):
    """dout / (H*W), divided in float64 and rounded once: the reference's bits exactly."""
    (d_dt,), dt = plan
    dout = data.draw(arrays(shape[:2], d_dt))
    input_shape = data.draw(st.sampled_from([shape, list(shape), np.array(shape)]))
    dx = F.global_avg_pool2d_backward(dout, input_shape)
    assert_dtype(dx, dt, "dx")
    assert_exact(dx, R.global_avg_pool2d_backward(dout, shape), "dx")


def test_global_avg_pool_is_avg_pool_over_the_whole_plane():
    x = np.random.default_rng(2).standard_normal((3, 4, 7, 5))
    assert_close(
        F.global_avg_pool2d_forward(x),
        F.avg_pool2d_forward(x, 7, 5)[:, :, 0, 0],
        np.float64,
        np.mean(np.abs(x), axis=(2, 3)),
        "y",
    )
    dout = np.random.default_rng(3).standard_normal((3, 4))
    assert_close(
        F.global_avg_pool2d_backward(dout, x.shape),
        F.avg_pool2d_backward(dout[:, :, None, None], x.shape, 7, 5),
        np.float64,
        0.0,
        "dx",
    )


# ----------------------------------------------------------------------------------------------
# Residual add


SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)


@given(shape=SHAPES, plan=dtype_plans(2), relu=st.booleans(), data=st.data())
def test_add_forward_exact(shape, plan, relu, data):
    (a_dt, b_dt), dt = plan
    as_list = 0 not in shape  # a nested list of an empty array loses its shape
    a, b = (
        data.draw(arrays(shape, a_dt, allow_list=as_list)),
        data.draw(arrays(shape, b_dt, allow_list=as_list)),
    )
    y = F.add_forward(a, b, relu=relu)
    assert_dtype(y, dt, "y")
    assert_exact(y, R.add_forward(a, b, relu=relu), "y")
    if relu:
        assert_bitwise_equal(y, F.relu_forward(F.add_forward(a, b)), "fused relu")


@pytest.mark.parametrize("into", ["a", "b", "other"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_forward_into_out(into, dtype):
    """The body's output may take the sum in place (out=a); the result is out itself."""
    rng = np.random.default_rng(4)
    a, b = (
        rng.standard_normal((2, 3, 4, 4)).astype(dtype),
        rng.standard_normal((2, 3, 4, 4)).astype(dtype),
    )
    want = F.add_forward(a, b, relu=True)
    out = {"a": a, "b": b, "other": np.empty_like(a)}[into]
    result = F.add_forward(a, b, relu=True, out=out)
    assert result is out
    assert_bitwise_equal(out, want, "out")


def test_add_forward_nan_and_signed_zero():
    a = np.array([np.nan, -0.0, -1.0, 2.0, np.inf])
    b = np.array([1.0, -0.0, 0.5, -2.0, -np.inf])
    y = F.add_forward(a, b)
    assert np.isnan(y[0])
    assert np.signbit(y[1])
    assert y[2] == -0.5
    assert y[3] == 0
    assert np.isnan(y[4])
    r = F.add_forward(a, b, relu=True)
    assert np.isnan(r[0])
    assert not np.signbit(r[1:4]).any()
    assert (r[1:4] == 0).all()
    assert np.isnan(r[4])


# ----------------------------------------------------------------------------------------------
# Folding BatchNorm into the convolution before it


@given(
    fn=st.integers(1, 4),
    c=st.integers(1, 3),
    k=st.sampled_from([1, 3]),
    with_bias=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    data=st.data(),
)
def test_fold_batch_norm_equals_convolution_then_batch_norm(fn, c, k, with_bias, dtype, data):
    rng = np.random.default_rng(data.draw(seeds()))
    x = rng.standard_normal((2, c, 5, 6)).astype(dtype)
    W = rng.standard_normal((fn, c, k, k)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype) if with_bias else None
    gamma, beta = rng.uniform(0.5, 2.0, fn).astype(dtype), rng.standard_normal(fn).astype(dtype)
    running_mean, running_var = (
        rng.standard_normal(fn).astype(dtype),
        rng.uniform(0.1, 3.0, fn).astype(dtype),
    )
    W_folded, b_folded = F.fold_batch_norm(W, b, gamma, beta, running_mean, running_var, 1e-5)
    assert_dtype(W_folded, dtype, "W'")
    assert_dtype(b_folded, dtype, "b'")
    want_W, want_b = R.fold_batch_norm(W, b, gamma, beta, running_mean, running_var, 1e-5)
    assert_close(W_folded, want_W, dtype, 0.0, "W'")  # one product each: relative
    scale = np.abs(gamma.astype(np.float64)) / np.sqrt(running_var.astype(np.float64) + 1e-5)
    bias = np.zeros(fn) if b is None else b
    assert_close(
        b_folded, want_b, dtype, (abs_of(bias) + abs_of(running_mean)) * scale + abs_of(beta), "b'"
    )
    # The folded convolution is the convolution followed by inference-mode batch norm.
    conv = F.conv2d_forward(x, W, np.zeros(fn, dtype) if b is None else b, 1, k // 2)
    want = F.batch_norm2d_forward(
        conv, gamma, beta, running_mean, running_var, train=False, momentum=0.9, eps=1e-5
    )[0]
    magnitude = (
        F.conv2d_forward(np.abs(x), np.abs(W), np.abs(bias).astype(dtype), 1, k // 2)
        + per_channel(np.abs(running_mean))
    ) * per_channel(scale) + per_channel(np.abs(beta))
    assert_close(
        F.conv2d_forward(x, W_folded, b_folded, 1, k // 2),
        want,
        dtype,
        magnitude,
        "folded convolution",
    )


def test_fold_batch_norm_keeps_its_inputs_and_dtype():
    W = np.ones((2, 1, 1, 1), np.float32)
    gamma = np.array([2.0, 0.5], np.float32)
    W_folded, b_folded = F.fold_batch_norm(
        W,
        None,
        gamma,
        np.zeros(2, np.float32),
        np.array([1.0, -1.0], np.float32),
        np.array([3.0, 0.0], np.float32),
        1.0,
    )
    np.testing.assert_array_equal(W, 1.0)
    assert W_folded.dtype == b_folded.dtype == np.float32
    np.testing.assert_allclose(W_folded.reshape(2), [1.0, 0.5], rtol=1e-7)
    np.testing.assert_allclose(b_folded, [-1.0, 0.5], rtol=1e-7)
