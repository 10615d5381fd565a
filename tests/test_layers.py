"""tinyconv.layers: DLfS's forward maths (tests/dlfs_oracle.py) and backprop against numerical
gradients (float64, relative error < 1e-6)."""

from __future__ import annotations

import dlfs_oracle as dlfs
import numpy as np
import pytest

from tinyconv.gradient import numerical_gradient
from tinyconv.layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)

TOLERANCE = 1e-6


def relative_error(analytic, numeric):
    """||a - n|| / max(||a||, ||n||): the relative error of a whole gradient array."""
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    return 0.0 if scale == 0 else np.linalg.norm(analytic - numeric) / scale


def spaced_values(rng, shape, step=0.05):
    """Distinct values at least ``step`` apart and away from zero, in random order: no ReLU kink
    and no max-pool tie lies within the finite-difference step."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2 + 0.5) * step
    return rng.permutation(values).reshape(shape)


def check_layer_gradients(layer, x, params=(), forward=None, seed=0):
    """Backprop of ``sum(forward(x) * G)`` w.r.t. x and each named parameter vs numerical_gradient."""
    forward = forward or layer.forward
    G = np.random.default_rng(seed).standard_normal(np.shape(forward(x)))

    def loss(_):
        return np.sum(forward(x) * G)

    forward(x)
    dx = layer.backward(G.copy())
    analytic = {"x": dx}
    for name in params:
        analytic[name] = getattr(layer, "d" + name)
    assert relative_error(dx, numerical_gradient(loss, x)) < TOLERANCE, "dx"
    for name in params:
        numeric = numerical_gradient(loss, getattr(layer, name))
        assert analytic[name].shape == numeric.shape
        assert relative_error(analytic[name], numeric) < TOLERANCE, name
    return analytic


# ----------------------------------------------------------------------------------------------
# Activations


def test_relu_matches_dlfs_and_gradient():
    rng = np.random.default_rng(0)
    x = spaced_values(rng, (3, 4, 5))
    layer, oracle = Relu(), dlfs.Relu()
    np.testing.assert_array_equal(layer.forward(x), oracle.forward(x))
    dout = rng.standard_normal(x.shape)
    dout_copy = dout.copy()
    np.testing.assert_array_equal(layer.backward(dout), oracle.backward(dout))
    np.testing.assert_array_equal(dout, dout_copy)  # tinyconv never modifies dout
    np.testing.assert_array_equal(layer.mask, x <= 0)
    check_layer_gradients(Relu(), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_overwrite_x_gives_the_same_output_and_gradient(dtype):
    """What networks do with their own temporaries: the result goes into x's memory, and the
    backward pass (masking by the kept output instead of the input) is unchanged, NaN, -0.0 and
    0 included."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    x.flat[:4] = [np.nan, -0.0, 0.0, -np.inf]
    dout = rng.standard_normal(x.shape).astype(dtype)
    plain = Relu()
    want_y, want_dx = plain.forward(x), plain.backward(dout)
    scratch = x.copy()
    layer = Relu()
    y = layer.forward(scratch, overwrite_x=True)
    assert y is scratch
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(layer.backward(dout), want_dx)
    np.testing.assert_array_equal(layer.mask, x <= 0)
    # Not writable, or another dtype: a new array, x untouched.
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(Relu().forward(frozen, overwrite_x=True), want_y)
    as_int = np.arange(-3, 3).reshape(2, 3)
    np.testing.assert_array_equal(Relu().forward(as_int, overwrite_x=True), [[0, 0, 0], [0, 1, 2]])
    np.testing.assert_array_equal(as_int, np.arange(-3, 3).reshape(2, 3))


def test_relu_gradient_is_zero_at_zero_like_dlfs():
    layer = Relu()
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])


def test_sigmoid_matches_dlfs_and_gradient():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 7)) * 3
    layer = Sigmoid()
    np.testing.assert_allclose(layer.forward(x), dlfs.sigmoid(x), rtol=1e-14)
    check_layer_gradients(Sigmoid(), x)


# ----------------------------------------------------------------------------------------------
# Affine


@pytest.mark.parametrize("x_shape", [(5, 6), (4, 2, 3, 3)])
def test_affine_matches_dlfs_and_gradient(x_shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape)
    d = int(np.prod(x_shape[1:]))
    W, b = rng.standard_normal((d, 4)), rng.standard_normal(4)
    layer, oracle = Affine(W, b), dlfs.Affine(W, b)
    np.testing.assert_allclose(layer.forward(x), oracle.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal((x_shape[0], 4))
    np.testing.assert_allclose(layer.backward(dout), oracle.backward(dout), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.dW, oracle.dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.db, oracle.db, rtol=1e-12, atol=1e-12)
    assert layer.original_x_shape == x_shape
    grads = check_layer_gradients(Affine(W, b), x, params=("W", "b"))
    assert grads["x"].shape == x_shape


def test_layers_see_in_place_parameter_updates():
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((6, 3)).astype(np.float32), np.zeros(3, np.float32)
    layer = Affine(W, b)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    first = layer.forward(x)
    W *= 2  # what an optimizer does
    assert layer.W is W
    np.testing.assert_allclose(layer.forward(x), 2 * first, rtol=1e-6)

    filters, bias = rng.standard_normal((2, 1, 3, 3)), np.zeros(2)
    conv = Convolution(filters, bias)
    image = rng.standard_normal((1, 1, 5, 5))
    first = conv.forward(image)
    bias += 1.5
    np.testing.assert_allclose(conv.forward(image), first + 1.5, rtol=1e-12)


def test_float32_in_float32_out():
    rng = np.random.default_rng(4)
    f32 = np.float32
    x = rng.standard_normal((2, 3, 6, 6)).astype(f32)
    conv = Convolution(rng.standard_normal((4, 3, 3, 3)).astype(f32), np.zeros(4, f32), pad=1)
    out = conv.forward(x)
    assert out.dtype == f32
    assert conv.backward(np.ones_like(out)).dtype == f32
    assert conv.dW.dtype == f32
    for layer in (
        Relu(),
        Sigmoid(),
        Pooling(2, 2, 2),
        Pooling(2, 2, 2, mode="avg"),
        Dropout(),
        BatchNormalization(np.ones(3, f32), np.zeros(3, f32)),
    ):
        y = layer.forward(x)
        assert y.dtype == f32, type(layer).__name__
        assert layer.backward(np.ones_like(y)).dtype == f32, type(layer).__name__


# ----------------------------------------------------------------------------------------------
# Softmax with loss


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss_matches_dlfs_and_gradient(one_hot):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)) * 2
    labels = rng.integers(0, 4, size=6)
    t = np.eye(4)[labels] if one_hot else labels
    layer, oracle = SoftmaxWithLoss(), dlfs.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    # DLfS adds 1e-7 inside the log (an error of about 1e-7 / y); tinyconv's log-sum-exp is exact.
    assert loss == pytest.approx(oracle.forward(x, t), rel=1e-4)
    exact = -np.mean(np.log(dlfs.softmax(x)[np.arange(6), labels]))
    assert loss == pytest.approx(exact, rel=1e-13)
    np.testing.assert_allclose(layer.y, oracle.y, rtol=1e-13)
    np.testing.assert_allclose(layer.backward(), oracle.backward(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        layer.backward(dout=2.5), 2.5 * oracle.backward(), rtol=1e-12, atol=1e-15
    )

    def f(_):
        return layer.forward(x, t)

    numeric = numerical_gradient(f, x)
    layer.forward(x, t)
    assert relative_error(layer.backward(1), numeric) < TOLERANCE


def test_softmax_with_loss_accepts_a_single_row():
    layer = SoftmaxWithLoss()
    x = np.array([1.0, 2.0, 0.5])
    loss = layer.forward(x, np.array(1))
    assert loss == pytest.approx(-np.log(dlfs.softmax(x)[1]), rel=1e-13)
    assert layer.backward().shape == (3,)


def test_softmax_with_loss_is_finite_for_huge_logits():
    layer = SoftmaxWithLoss()
    loss = layer.forward(np.array([[1000.0, -1000.0]]), np.array([1]))
    assert loss == pytest.approx(2000.0)


# ----------------------------------------------------------------------------------------------
# Dropout


def test_dropout_uses_np_random_like_dlfs():
    x = np.random.default_rng(6).standard_normal((8, 10))
    np.random.seed(42)
    out = Dropout(0.3).forward(x)
    np.random.seed(42)
    oracle = dlfs.Dropout(0.3)
    np.testing.assert_array_equal(out, oracle.forward(x))
    np.testing.assert_array_equal(
        Dropout(0.3).forward(x, train_flg=False), oracle.forward(x, train_flg=False)
    )


def test_dropout_mask_and_gradient_with_fixed_rng():
    x = np.random.default_rng(7).standard_normal((6, 9))
    rng = np.random.default_rng(0)
    layer = Dropout(0.4, rng=rng)
    state = rng.bit_generator.state

    def forward(inp):
        rng.bit_generator.state = state  # the same mask on every evaluation
        return layer.forward(inp, train_flg=True)

    out = forward(x)
    assert 0 < layer.mask.mean() < 1
    np.testing.assert_array_equal(out, x * layer.mask)
    check_layer_gradients(layer, x, forward=forward)


# ----------------------------------------------------------------------------------------------
# Batch normalisation


@pytest.mark.parametrize("shape", [(6, 5), (4, 2, 3, 3)])
def test_batchnorm_per_feature_matches_dlfs(shape):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape) * 3 + 1
    d = int(np.prod(shape[1:]))
    gamma, beta = rng.random(d) + 0.5, rng.standard_normal(d)
    layer, oracle = BatchNormalization(gamma, beta), dlfs.BatchNormalization(gamma, beta)
    for _ in range(3):  # running statistics evolve identically
        np.testing.assert_allclose(
            layer.forward(x, train_flg=True), oracle.forward(x, True), rtol=1e-12, atol=1e-12
        )
    np.testing.assert_allclose(layer.running_mean, oracle.running_mean, rtol=1e-13)
    np.testing.assert_allclose(layer.running_var, oracle.running_var, rtol=1e-13)
    dout = rng.standard_normal(shape)
    np.testing.assert_allclose(layer.backward(dout), oracle.backward(dout), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dgamma, oracle.dgamma, rtol=1e-12)
    np.testing.assert_allclose(layer.dbeta, oracle.dbeta, rtol=1e-12)
    np.testing.assert_allclose(
        layer.forward(x, train_flg=False), oracle.forward(x, False), rtol=1e-12, atol=1e-12
    )


def test_batchnorm_spatial_normalises_each_channel():
    rng = np.random.default_rng(9)
    n, c, h, w = 3, 4, 5, 2
    x = rng.standard_normal((n, c, h, w)) * 2 - 1
    gamma, beta = rng.random(c) + 0.5, rng.standard_normal(c)
    layer = BatchNormalization(gamma, beta, momentum=0.8)
    out = layer.forward(x)
    # Reference: every (n, h, w) position is one sample of C features.
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    oracle = dlfs.BatchNormalization(gamma, beta, momentum=0.8)
    expected = oracle.forward(flat, True).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean, oracle.running_mean, rtol=1e-13)
    np.testing.assert_allclose(layer.running_var, oracle.running_var, rtol=1e-13)
    normalised = (out - beta[:, None, None]) / gamma[:, None, None]
    np.testing.assert_allclose(normalised.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    dout = rng.standard_normal(x.shape)
    expected_dx = (
        oracle.backward(dout.transpose(0, 2, 3, 1).reshape(-1, c))
        .reshape(n, h, w, c)
        .transpose(0, 3, 1, 2)
    )
    np.testing.assert_allclose(layer.backward(dout), expected_dx, rtol=1e-10, atol=1e-12)
    assert layer.dgamma.shape == (c,)
    assert layer.dbeta.shape == (c,)


@pytest.mark.parametrize(
    ("shape", "n_params"), [((6, 5), 5), ((3, 2, 3, 3), 18), ((3, 4, 3, 2), 4)]
)
@pytest.mark.parametrize("train_flg", [True, False])
def test_batchnorm_gradients(shape, n_params, train_flg):
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape) * 2 + 0.5
    gamma, beta = rng.random(n_params) + 0.5, rng.standard_normal(n_params)
    layer = BatchNormalization(
        gamma,
        beta,
        running_mean=rng.standard_normal(n_params) * 0.1,
        running_var=rng.random(n_params) + 0.5,
    )
    check_layer_gradients(
        layer,
        x,
        params=("gamma", "beta"),
        forward=lambda inp: layer.forward(inp, train_flg=train_flg),
    )


def test_batchnorm_running_statistics_update_in_place():
    running_mean, running_var = np.zeros(3), np.zeros(3)
    layer = BatchNormalization(
        np.ones(3), np.zeros(3), running_mean=running_mean, running_var=running_var
    )
    layer.forward(np.random.default_rng(11).standard_normal((5, 3)) + 2)
    assert layer.running_mean is running_mean
    assert np.all(running_mean > 0.1)
    assert layer.running_var is running_var
    assert np.all(running_var > 0)


def test_batchnorm_rejects_parameters_that_fit_neither_mode():
    layer = BatchNormalization(np.ones(7), np.zeros(7))
    with pytest.raises(ValueError, match="7 entries"):
        layer.forward(np.zeros((2, 3, 4, 4)))


# ----------------------------------------------------------------------------------------------
# Convolution


CONV_CASES = [
    # (x shape, W shape, stride, pad)
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0),
    ((2, 2, 8, 6), (3, 2, 3, 3), 2, 1),
    ((1, 3, 6, 6), (2, 3, 5, 5), 1, 2),
    ((3, 1, 9, 9), (2, 1, 4, 4), 3, 1),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pad"), CONV_CASES)
def test_convolution_matches_dlfs_and_gradient(x_shape, w_shape, stride, pad):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape)
    W, b = rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    layer, oracle = Convolution(W, b, stride, pad), dlfs.Convolution(W, b, stride, pad)
    out = layer.forward(x)
    np.testing.assert_allclose(out, oracle.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(dout), oracle.backward(dout), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.dW, oracle.dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.db, oracle.db, rtol=1e-12, atol=1e-12)
    check_layer_gradients(Convolution(W, b, stride, pad), x, params=("W", "b"))


# ----------------------------------------------------------------------------------------------
# Pooling


POOL_CASES = [
    # (x shape, pool_h, pool_w, stride)
    ((2, 3, 6, 6), 2, 2, 2),
    ((1, 2, 7, 5), 3, 2, 1),  # overlapping windows
    ((2, 1, 9, 9), 3, 3, 3),
]


@pytest.mark.parametrize(("x_shape", "ph", "pw", "stride"), POOL_CASES)
def test_max_pooling_matches_dlfs_and_gradient(x_shape, ph, pw, stride):
    rng = np.random.default_rng(13)
    x = spaced_values(rng, x_shape)
    layer, oracle = Pooling(ph, pw, stride), dlfs.Pooling(ph, pw, stride)
    out = layer.forward(x)
    np.testing.assert_array_equal(out, oracle.forward(x))
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(dout), oracle.backward(dout), rtol=1e-14, atol=1e-15)
    check_layer_gradients(Pooling(ph, pw, stride), x)


@pytest.mark.parametrize(
    ("x_shape", "ph", "pw", "stride", "pad"),
    [((2, 3, 6, 6), 2, 2, 2, 0), ((1, 2, 7, 5), 3, 2, 1, 1), ((2, 2, 5, 5), 3, 3, 2, 1)],
)
def test_average_pooling_matches_reference_and_gradient(x_shape, ph, pw, stride, pad):
    rng = np.random.default_rng(14)
    x = rng.standard_normal(x_shape)
    layer = Pooling(ph, pw, stride, pad, mode="avg")
    np.testing.assert_allclose(
        layer.forward(x), dlfs.AvgPooling(ph, pw, stride, pad).forward(x), rtol=1e-12, atol=1e-14
    )
    check_layer_gradients(Pooling(ph, pw, stride, pad, mode="avg"), x)


def test_max_pooling_with_padding_ignores_the_padding():
    x = -np.ones((1, 1, 2, 2))
    out = Pooling(2, 2, stride=2, pad=1).forward(x)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 2, 2)))  # DLfS's zero padding would give 0


def test_scalar_bias_is_broadcast_like_dlfs():
    # DLfS's ch07/apply_filter.py convolves an image with one learned filter and b = 0.
    rng = np.random.default_rng(15)
    image = rng.random((1, 1, 9, 9)).astype(np.float32)
    w = rng.standard_normal((1, 1, 5, 5))
    np.testing.assert_allclose(
        Convolution(w, 0).forward(image), Convolution(w, np.zeros(1)).forward(image)
    )
    x = rng.standard_normal((3, 4))
    W = rng.standard_normal((4, 2))
    np.testing.assert_allclose(Affine(W, 0.5).forward(x), x @ W + 0.5, rtol=1e-12)


def test_pooling_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        Pooling(2, 2, mode="median")


def test_max_pooling_backward_is_the_same_with_or_without_recorded_argmax():
    """Inference-style forward (no argmax) then backward finds the winners again from the input:
    same dx as the recorded-argmax route, ties and overlapping windows included."""
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, size=(2, 3, 7, 7)).astype(np.float64)  # many ties
    dout = rng.standard_normal((2, 3, 4, 4))
    recorded, recomputed = Pooling(3, 3, stride=2, pad=1), Pooling(3, 3, stride=2, pad=1)
    y1 = recorded.forward(x)
    y2 = recomputed.forward(x, record_argmax=False)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(recorded.arg_max, recomputed.arg_max)  # computed on demand
    np.testing.assert_array_equal(recorded.backward(dout), recomputed.backward(dout))
