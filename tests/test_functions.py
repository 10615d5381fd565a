"""tinyconv.functions, tinyconv.gradient and the DLfS helpers in tinyconv.util against DLfS's
definitions."""

from __future__ import annotations

import dlfs_oracle as dlfs
import numpy as np
import pytest

from tinyconv import functions as Fn
from tinyconv.gradient import numerical_gradient, numerical_gradient_1d, numerical_gradient_2d
from tinyconv.util import shuffle_dataset, smooth_curve

# ----------------------------------------------------------------------------------------------
# functions


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4)])
def test_sigmoid_relu_softmax_match_dlfs(shape):
    x = np.random.default_rng(0).standard_normal(shape) * 4
    np.testing.assert_allclose(Fn.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_array_equal(Fn.relu(x), np.maximum(0, x))
    np.testing.assert_allclose(Fn.softmax(x), dlfs.softmax(x), rtol=1e-13)
    np.testing.assert_allclose(
        Fn.sigmoid_grad(x), (1.0 - dlfs.sigmoid(x)) * dlfs.sigmoid(x), rtol=1e-13
    )
    assert Fn.softmax(x).shape == shape


def test_scalars_and_dtypes():
    assert Fn.sigmoid(0.0) == pytest.approx(0.5)
    assert np.ndim(Fn.sigmoid(1.0)) == 0
    assert Fn.relu(-3) == 0
    assert Fn.relu(np.array([-2, 5])).dtype.kind == "i"
    assert Fn.sigmoid(np.float32([1.0, 2.0])).dtype == np.float32
    assert Fn.sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]  # no overflow warning


def test_step_relu_grad_identity():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(Fn.step_function(x), [0, 0, 1])
    assert Fn.step_function(x).dtype.kind == "i"
    np.testing.assert_array_equal(Fn.relu_grad(x), [0.0, 1.0, 1.0])  # DLfS: the kink counts as 1
    assert Fn.identity_function(x) is x


def test_losses_match_dlfs_formulas():
    rng = np.random.default_rng(1)
    y = dlfs.softmax(rng.standard_normal((5, 4)))
    labels = rng.integers(0, 4, size=5)
    one_hot = np.eye(4)[labels]
    expected = -np.sum(np.log(y[np.arange(5), labels] + 1e-7)) / 5
    assert Fn.cross_entropy_error(y, labels) == expected
    assert Fn.cross_entropy_error(y, one_hot) == expected
    assert Fn.cross_entropy_error(y[0], one_hot[0]) == -np.log(y[0, labels[0]] + 1e-7)
    logits = rng.standard_normal((5, 4))
    assert Fn.softmax_loss(logits, labels) == pytest.approx(
        dlfs.cross_entropy_error(dlfs.softmax(logits), labels), rel=1e-14
    )
    t = rng.random(4)
    assert Fn.mean_squared_error(y[0], t) == 0.5 * np.sum((y[0] - t) ** 2)
    assert Fn.sum_squared_error is Fn.mean_squared_error


# ----------------------------------------------------------------------------------------------
# numerical gradient


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_numerical_gradient_of_a_quadratic(shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    c = rng.standard_normal(shape)
    original = x.copy()
    grad = numerical_gradient(lambda z: np.sum(c * z**2), x)
    np.testing.assert_allclose(grad, 2 * c * original, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(x, original)  # every value restored exactly
    assert grad.shape == np.shape(x)


def test_numerical_gradient_restores_values_when_f_raises():
    x = np.arange(4.0)
    calls = []

    def f(z):
        calls.append(z.copy())
        if len(calls) == 3:
            raise RuntimeError("boom")
        return float(np.sum(z))

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, np.arange(4.0))
    assert calls[0][0] == 1e-4  # x[0] + h was seen


def test_numerical_gradient_perturbs_in_place_like_dlfs():
    # A network's loss reads its parameters by reference and ignores the argument.
    W = np.array([1.0, 2.0, 3.0])
    grad = numerical_gradient(lambda _: np.sum(W**3), W)
    np.testing.assert_allclose(grad, 3 * W**2, rtol=1e-7)


def test_numerical_gradient_1d_and_2d():
    x = np.array([1.0, -2.0])
    np.testing.assert_allclose(numerical_gradient_1d(lambda z: np.sum(z**2), x), 2 * x, rtol=1e-8)
    X = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(
        numerical_gradient_2d(lambda row: np.sum(row**2), X), 2 * X, rtol=1e-8
    )
    np.testing.assert_allclose(
        numerical_gradient_2d(lambda row: np.sum(row**2), x), 2 * x, rtol=1e-8
    )
    with pytest.raises(ValueError, match=r"x must be 1-dimensional, got shape \(2, 2\)"):
        numerical_gradient_1d(lambda z: 0.0, X)


# ----------------------------------------------------------------------------------------------
# util extras


def test_smooth_curve_is_dlfs_kaiser_smoothing():
    x = np.random.default_rng(3).random(50)
    window = np.kaiser(11, 2)
    mirrored = np.r_[x[10:0:-1], x, x[-1:-11:-1]]
    expected = np.convolve(window / window.sum(), mirrored, mode="valid")[5:-5]
    np.testing.assert_array_equal(smooth_curve(x), expected)
    assert len(smooth_curve(list(x))) == 50


@pytest.mark.parametrize("x_shape", [(20, 3), (20, 1, 4, 4), (20,)])
def test_shuffle_dataset_keeps_pairs(x_shape):
    x = np.arange(np.prod(x_shape)).reshape(x_shape)
    t = np.arange(20)
    np.random.seed(0)
    xs, ts = shuffle_dataset(x, t)
    assert not np.array_equal(ts, t)
    assert sorted(ts) == list(t)
    np.testing.assert_array_equal(xs, x[ts])
    np.random.seed(0)
    np.testing.assert_array_equal(shuffle_dataset(x, t)[1], ts)  # np.random.seed reproduces it
    np.random.seed(0)
    np.testing.assert_array_equal(ts, t[np.random.permutation(20)])  # DLfS's draw
    xr, tr = shuffle_dataset(x, t, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(xr, x[tr])


def test_shuffle_dataset_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same number"):
        shuffle_dataset(np.zeros((3, 2)), np.zeros(4))


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (
            np.float64(1),
            ValueError,
            r"x must be 1-dimensional, got shape \(\): (np\.float64\()?1\.0",
        ),
        (3, ValueError, r"x must be 1-dimensional, got shape \(\)"),
        ([], ValueError, "at least 11 values .* got 0"),
        (np.arange(10.0), ValueError, "at least 11 values .* got 10"),  # DLfS returns 9 values
        (np.ones((11, 2)), ValueError, r"1-dimensional, got shape \(11, 2\)"),
        (["a"] * 11, TypeError, "must hold real numbers.*'a'"),
        ([object()] * 11, TypeError, "must hold real numbers"),
        ([[1.0], [1.0, 2.0]], TypeError, "1-D sequence of numbers"),
        (np.arange(11) + 1j, TypeError, "must hold real numbers"),
    ],
)
def test_smooth_curve_rejects_what_it_cannot_smooth(x, error, message):
    with pytest.raises(error, match=message):
        smooth_curve(x)


def test_smooth_curve_keeps_the_length_from_the_window_up():
    for n in (11, 12, 30):
        assert smooth_curve(np.arange(n, dtype=np.float64)).shape == (n,)
    assert smooth_curve(np.ones(11, dtype=bool)).tolist() == pytest.approx([1.0] * 11)


@pytest.mark.parametrize(
    ("x", "t", "rng", "error", "message"),
    [
        (object(), [1], None, TypeError, "x must be array-like, got <object object"),
        (
            np.float64(1),
            np.float64(2),
            None,
            ValueError,
            r"x must have at least one dimension.*scalar (np\.float64\()?1\.0",
        ),
        (np.zeros(3), 7, None, ValueError, "t must have at least one dimension.*scalar 7"),
        (np.zeros(3), [[1], [1, 2], [3]], None, TypeError, "t must be array-like"),
        (np.zeros(3), np.zeros(3), "x", TypeError, "rng must be a numpy.random.Generator.*'x'"),
        (np.zeros(3), np.zeros(3), 5, TypeError, "rng must be .* got 5"),
    ],
)
def test_shuffle_dataset_rejects_bad_arguments_naming_them(x, t, rng, error, message):
    with pytest.raises(error, match=message):
        shuffle_dataset(x, t, rng=rng)


def test_shuffle_dataset_of_empty_arrays_is_empty():
    xs, ts = shuffle_dataset(np.zeros((0, 3)), np.zeros(0), rng=np.random.default_rng(0))
    assert xs.shape == (0, 3)
    assert ts.shape == (0,)
