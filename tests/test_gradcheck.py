"""Finite-difference gradient checks (central differences, float64) of every backward pass, for
the compiled kernels and for the NumPy references alike.

Each check builds a scalar ``L = sum(forward(inputs) * dout)`` for a fixed random ``dout``,
so ``dL/dinput`` is exactly what the backward pass returns for that ``dout``, and compares it
with ``(L(input + h e_i) - L(input - h e_i)) / 2h`` for every entry ``i``.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import geometries, seeds

# Analytical vs numerical gradient, ||a - n|| / max(||a||, ||n||). With h = 1e-5 in float64 the
# central difference is exact for the (bi)linear layers up to rounding (~1e-11 relative) and has
# O(h^2) ~ 1e-10 truncation error for the smooth ones: 1e-6 leaves room for both and none for a
# wrong gradient.
MAX_RELATIVE_ERROR = 1e-6
STEP = 1e-5

# Every check runs on both implementations: the NumPy reference and the compiled kernels. (A
# parameter rather than a fixture: Hypothesis runs many examples per fixture instance.)
both_implementations = pytest.mark.parametrize("impl_name", ["reference", "functional"])


def implementation(name: str):
    return importlib.import_module(f"tinyconv.{name}")


def numerical_gradient(loss, x: np.ndarray, h: float = STEP) -> np.ndarray:
    """Central differences of the scalar ``loss(x)`` with respect to every entry of ``x``.
    ``x`` is perturbed in place and restored."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        original = x[idx]
        x[idx] = original + h
        upper = loss(x)
        x[idx] = original - h
        lower = loss(x)
        x[idx] = original
        grad[idx] = (upper - lower) / (2 * h)
    return grad


def assert_gradient(analytical, numerical, what: str) -> None:
    analytical = np.asarray(analytical, dtype=np.float64)
    assert analytical.shape == numerical.shape, (
        f"{what}: shape {analytical.shape} vs {numerical.shape}"
    )
    scale = max(np.linalg.norm(analytical), np.linalg.norm(numerical))
    if scale == 0:
        return  # both exactly zero, e.g. every window lies in the padding: they agree
    error = np.linalg.norm(analytical - numerical) / scale
    assert error < MAX_RELATIVE_ERROR, (
        f"{what}: relative error {error:.3g} (analytical {analytical.ravel()[:6]}..., numerical {numerical.ravel()[:6]}...)"
    )


def weighted_sum(y, dout) -> float:
    return float(np.sum(np.asarray(y, dtype=np.float64) * dout))


# ----------------------------------------------------------------------------------------------


@both_implementations
@given(
    g=geometries(max_batch=2, max_channels=2, max_size=5, max_pad=2, max_stride=3),
    fn=st.integers(1, 2),
    seed=seeds(),
)
def test_conv2d_gradients(impl_name, g, fn, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    W = rng.standard_normal((fn, g.C, g.kh, g.kw))
    b = rng.standard_normal(fn)
    dout = rng.standard_normal((g.N, fn, g.out_h, g.out_w))
    dx, dW, db = impl.conv2d_backward(dout, x, W, g.stride, g.pad)
    assert_gradient(
        dx,
        numerical_gradient(
            lambda v: weighted_sum(impl.conv2d_forward(v, W, b, g.stride, g.pad), dout), x
        ),
        "dx",
    )
    assert_gradient(
        dW,
        numerical_gradient(
            lambda v: weighted_sum(impl.conv2d_forward(x, v, b, g.stride, g.pad), dout), W
        ),
        "dW",
    )
    assert_gradient(
        db,
        numerical_gradient(
            lambda v: weighted_sum(impl.conv2d_forward(x, W, v, g.stride, g.pad), dout), b
        ),
        "db",
    )


@both_implementations
@pytest.mark.parametrize(("stride", "pad"), [(1, 1), (2, 1), ((2, 1), (0, 2))])
def test_conv2d_gradients_medium(impl_name, stride, pad):
    """A DLfS-sized case (several channels and filters, 7x7 input) besides the small random ones."""
    impl = implementation(impl_name)
    rng = np.random.default_rng(42)
    x, W, b = (
        rng.standard_normal((2, 3, 7, 7)),
        rng.standard_normal((4, 3, 3, 3)),
        rng.standard_normal(4),
    )
    dout = rng.standard_normal(impl.conv2d_forward(x, W, b, stride, pad).shape)
    dx, dW, db = impl.conv2d_backward(dout, x, W, stride, pad)
    assert_gradient(
        dx,
        numerical_gradient(
            lambda v: weighted_sum(impl.conv2d_forward(v, W, b, stride, pad), dout), x
        ),
        "dx",
    )
    assert_gradient(
        dW,
        numerical_gradient(
            lambda v: weighted_sum(impl.conv2d_forward(x, v, b, stride, pad), dout), W
        ),
        "dW",
    )
    assert_gradient(
        db,
        numerical_gradient(
            lambda v: weighted_sum(impl.conv2d_forward(x, W, v, stride, pad), dout), b
        ),
        "db",
    )


def distinct_values(rng: np.random.Generator, shape) -> np.ndarray:
    """Values at least 0.1 apart (a shuffled grid plus a little jitter): no window has a near-tie,
    so a step of 1e-5 never changes which input wins."""
    size = int(np.prod(shape))
    grid = rng.permutation(size) * 0.1 - size * 0.05
    return (grid + rng.uniform(-0.02, 0.02, size)).reshape(shape)


@both_implementations
@given(
    g=geometries(
        max_batch=2, max_channels=2, max_size=6, max_pad=2, max_stride=3, pad_below_kernel=True
    ),
    seed=seeds(),
)
def test_max_pool2d_gradient(impl_name, g, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, g.input_shape)
    dout = rng.standard_normal((g.N, g.C, g.out_h, g.out_w))
    _, argmax = impl.max_pool2d_forward(x, g.kh, g.kw, g.stride, g.pad)
    dx = impl.max_pool2d_backward(dout, argmax, g.input_shape)
    loss = lambda v: weighted_sum(impl.max_pool2d_forward(v, g.kh, g.kw, g.stride, g.pad)[0], dout)  # noqa: E731
    assert_gradient(dx, numerical_gradient(loss, x), "dx")


@both_implementations
@given(g=geometries(max_batch=2, max_channels=2, max_size=6, max_pad=2, max_stride=3), seed=seeds())
def test_avg_pool2d_gradient(impl_name, g, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    dout = rng.standard_normal((g.N, g.C, g.out_h, g.out_w))
    dx = impl.avg_pool2d_backward(dout, g.input_shape, g.kh, g.kw, g.stride, g.pad)
    loss = lambda v: weighted_sum(impl.avg_pool2d_forward(v, g.kh, g.kw, g.stride, g.pad), dout)  # noqa: E731
    assert_gradient(dx, numerical_gradient(loss, x), "dx")


@both_implementations
@given(
    n=st.integers(1, 4),
    feature_shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    m=st.integers(1, 5),
    seed=seeds(),
)
def test_affine_gradients(impl_name, n, feature_shape, m, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *feature_shape))
    W = rng.standard_normal((int(np.prod(feature_shape)), m))
    b = rng.standard_normal(m)
    dout = rng.standard_normal((n, m))
    dx, dW, db = impl.affine_backward(dout, x, W)
    assert_gradient(
        dx, numerical_gradient(lambda v: weighted_sum(impl.affine_forward(v, W, b), dout), x), "dx"
    )
    assert_gradient(
        dW, numerical_gradient(lambda v: weighted_sum(impl.affine_forward(x, v, b), dout), W), "dW"
    )
    assert_gradient(
        db, numerical_gradient(lambda v: weighted_sum(impl.affine_forward(x, W, v), dout), b), "db"
    )


@both_implementations
@given(
    n=st.integers(1, 5),
    k=st.integers(2, 8),
    scale=st.sampled_from([0.1, 1.0]),
    soft_targets=st.booleans(),
    dout=st.sampled_from([1.0, 0.5, -2.0]),
    seed=seeds(),
)
def test_softmax_cross_entropy_gradient(impl_name, n, k, scale, soft_targets, dout, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    # Logits within [-2, 2]: every probability stays above ~1e-3. With saturated logits the true
    # gradient (p of the losing classes) drops below what a central difference can resolve from a
    # loss that is only accurate to rounding of |x| (the large-logit behaviour is tested against
    # the reference in test_kernels.py instead).
    x = rng.uniform(-2.0, 2.0, size=(n, k)) * scale
    t = rng.dirichlet(np.ones(k), size=n) if soft_targets else rng.integers(0, k, size=n)
    _, y = impl.softmax_cross_entropy_forward(x, t)
    dx = impl.softmax_cross_entropy_backward(y, t, dout)
    numerical = numerical_gradient(lambda v: dout * impl.softmax_cross_entropy_forward(v, t)[0], x)
    assert_gradient(dx, numerical, "dx")


@both_implementations
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), seed=seeds())
def test_relu_gradient(impl_name, shape, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    # Away from the kink at 0: |x| >= 0.1 >> h.
    x = rng.uniform(0.1, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    x.flat[0] = abs(x.flat[0])  # at least one positive entry, so the gradient does not vanish
    dout = rng.standard_normal(shape)
    dx = impl.relu_backward(dout, x)
    assert_gradient(
        dx, numerical_gradient(lambda v: weighted_sum(impl.relu_forward(v), dout), x), "dx"
    )


@both_implementations
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), seed=seeds())
def test_sigmoid_gradient(impl_name, shape, seed):
    impl = implementation(impl_name)
    rng = np.random.default_rng(seed)
    # |x| <= 5: further out sigmoid is within 1e-2 of 0 or 1, and float64 rounding of values near 1
    # would swamp a central difference of the (tiny) slope there.
    x = rng.uniform(-5.0, 5.0, size=shape)
    dout = rng.standard_normal(shape)
    dx = impl.sigmoid_backward(dout, impl.sigmoid_forward(x))
    assert_gradient(
        dx, numerical_gradient(lambda v: weighted_sum(impl.sigmoid_forward(v), dout), x), "dx"
    )
