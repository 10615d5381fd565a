"""Numerical differentiation, as *Deep Learning from Scratch* (DLfS) ``common/gradient.py``.

Central differences with ``h = 1e-4``: ``(f(x + h) - f(x - h)) / (2h)`` for each element of ``x``
in turn. ``x`` is perturbed **in place** -- that is how a network's loss, which reads its
parameter arrays by reference, sees the change -- and every element is restored afterwards, even
when ``f`` raises. These functions exist to check backpropagation; they cost two evaluations of
``f`` per element. ``f`` receives ``x`` itself and may ignore it (DLfS's networks pass a lambda
that does).

**Precision.** The differences are evaluated in float64, as in DLfS, whatever the dtype of the
network: when ``x`` is a float32 parameter of a tinyconv network (``network.params['W1']`` itself),
``f`` is evaluated with that network switched to float64 copies of its arrays (see
:meth:`tinyconv.network.Network.float64_copy`), ``x``'s copy is the one perturbed and passed to
``f``, and the float64 gradient is returned; the network's own arrays are never written. In
float32 the step ``h`` and the loss would both be rounded by about 1e-7 relative, leaving errors of
1e-4..1e-3 that make a correct backward pass look wrong. Any other array is perturbed in place in
its own dtype, as DLfS does.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np

from ._typing import Array, ArrayLike
from ._validate import _describe

# "np": DLfS's common/gradient.py imports numpy at top level, so its star import gives scripts ``np``.
__all__ = ["np", "numerical_gradient", "numerical_gradient_1d", "numerical_gradient_2d"]

_H = 1e-4

#: A scalar function of the perturbed array: a network's loss (a float or a NumPy float).
LossFunction = Callable[[Array], Union[float, "np.floating[Any]"]]


def _perturbable(value: object, name: str) -> Array:
    """``value`` itself, which must be an ndarray: it is perturbed in place, so never converted."""
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array (it is perturbed in place), got "
            f"{type(value).__name__} {_describe(value)}"
        )
    return value


def numerical_gradient(f: LossFunction, x: Array) -> Array:
    """Gradient of scalar ``f`` with respect to the array ``x`` (any number of dimensions),
    returned as an array like ``x`` -- in float64 when ``x`` is a lower-precision parameter of a
    tinyconv network, which is then evaluated in float64 (see the module docstring)."""
    x = _perturbable(x, "x")
    if x.dtype.kind == "f" and x.dtype != np.float64:
        from .network import network_of_parameter  # network.py imports this module

        network = network_of_parameter(x)
        if network is not None:
            with network.float64_copy() as copies:
                return _central_differences(f, copies[id(x)])
    return _central_differences(f, x)


def _central_differences(f: LossFunction, x: Array) -> Array:
    grad: Array = np.zeros_like(x)
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


def numerical_gradient_1d(f: LossFunction, x: ArrayLike) -> Array:
    """DLfS's ``_numerical_gradient_1d``: the gradient for a 1-D ``x``."""
    vector: Array = np.asarray(x)
    if vector.ndim != 1:
        raise ValueError(f"x must be 1-dimensional, got shape {vector.shape}")
    return numerical_gradient(f, vector)


def numerical_gradient_2d(f: LossFunction, X: Array) -> Array:
    """DLfS's ``numerical_gradient_2d``: for a 1-D ``X`` the gradient of ``f(X)``; for a 2-D
    ``X`` the gradient of ``f`` with respect to each row, ``f`` being called with that row."""
    X = _perturbable(X, "X")
    if X.ndim == 1:
        return numerical_gradient_1d(f, X)
    grad: Array = np.zeros_like(X)
    for idx, row in enumerate(X):
        grad[idx] = numerical_gradient_1d(f, row)
    return grad
