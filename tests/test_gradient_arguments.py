"""tinyconv.gradient perturbs its array argument in place, so it takes only an ndarray: anything
else (a list, a NumPy scalar) is a TypeError naming the argument, before ``f`` is ever called
(it used to be an AttributeError from deep inside, or an item assignment on a scalar)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv.gradient import numerical_gradient, numerical_gradient_2d


def _never_called(_):
    raise AssertionError("f must not be called for an invalid argument")


@pytest.mark.parametrize("x", [[1.0, 2.0], np.float64(1.5), 3.0, "ab"])
def test_numerical_gradient_takes_only_an_ndarray(x):
    with pytest.raises(TypeError, match=r"^x must be a numpy array \(it is perturbed in place\)"):
        numerical_gradient(_never_called, x)


@pytest.mark.parametrize("X", [[[1.0, 2.0], [3.0, 4.0]], np.float32(2.0)])
def test_numerical_gradient_2d_takes_only_an_ndarray(X):
    with pytest.raises(TypeError, match=r"^X must be a numpy array \(it is perturbed in place\)"):
        numerical_gradient_2d(_never_called, X)


def test_a_zero_dimensional_array_is_still_differentiated_in_place():
    x = np.array(2.0)
    grad = numerical_gradient(lambda z: float(z) ** 2, x)
    np.testing.assert_allclose(grad, 4.0, rtol=1e-8)  # float64: central differences, tight
    assert x == 2.0
