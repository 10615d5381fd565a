"""Numerical differentiation, as *Deep Learning from Scratch* (DLfS) ``common/gradient.py``.

Central differences with ``h = 1e-4``: ``(f(x + h) - f(x - h)) / (2h)`` for each element of ``x``
in turn. ``x`` is perturbed **in place** -- that is how a network's loss, which reads its
parameter arrays by reference, sees the change -- and every element is restored afterwards, even
when ``f`` raises. These functions exist to check backpropagation; they cost two evaluations of
``f`` per element. ``f`` receives ``x`` itself and may ignore it (DLfS's networks pass a lambda
that does).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_gradient", "numerical_gradient_1d", "numerical_gradient_2d"]

_H = 1e-4


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """Gradient of scalar ``f`` with respect to the array ``x`` (any number of dimensions),
    returned as an array like ``x``."""
    grad = np.zeros_like(x)
    # One f evaluation pair per element is the method itself; the per-element loop is inherent.
    for idx in np.ndindex(x.shape):
        original = x[idx]
        try:
            x[idx] = float(original) + _H
            f_plus = f(x)
            x[idx] = original - _H
            f_minus = f(x)
        finally:
            x[idx] = original
        grad[idx] = (f_plus - f_minus) / (2 * _H)
    return grad


def numerical_gradient_1d(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """DLfS's ``_numerical_gradient_1d``: the gradient for a 1-D ``x``."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-dimensional, got shape {x.shape}")
    return numerical_gradient(f, x)


def numerical_gradient_2d(f: Callable[[np.ndarray], float], X: np.ndarray) -> np.ndarray:
    """DLfS's ``numerical_gradient_2d``: for a 1-D ``X`` the gradient of ``f(X)``; for a 2-D
    ``X`` the gradient of ``f`` with respect to each row, ``f`` being called with that row."""
    if X.ndim == 1:
        return numerical_gradient_1d(f, X)
    grad = np.zeros_like(X)
    for idx, row in enumerate(X):
        grad[idx] = numerical_gradient_1d(f, row)
    return grad
