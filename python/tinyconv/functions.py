"""Activation and loss functions of *Deep Learning from Scratch* (DLfS), ``common/functions.py``.

Same names and results as DLfS, for arrays of any shape (and scalars, which give NumPy scalars).
``sigmoid``, ``relu`` and ``softmax`` of floating arrays run in tinyconv's compiled kernels;
``sigmoid`` there never overflows (DLfS's ``1 / (1 + np.exp(-x))`` warns for ``x < -709``) and
gives the same values otherwise. Integer input to ``relu`` stays integer, as with DLfS's
``np.maximum``. The losses are DLfS's formulas verbatim (``cross_entropy_error`` adds ``1e-7``
inside the log), so their values match DLfS to the last bit; the layers in
:mod:`tinyconv.layers` compute the loss from logits instead, as a log-sum-exp.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import functional as F
from ._typing import Array, ArrayLike, FloatArray

__all__ = [
    "cross_entropy_error",
    "identity_function",
    "mean_squared_error",
    "np",  # DLfS's module imports numpy at top level, so its star import gives scripts ``np``
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "sum_squared_error",
]

_T = TypeVar("_T")
# What an elementwise function gives back: an array like its input, or a NumPy scalar for a
# scalar or 0-d input (as a NumPy ufunc does).
FloatResult = Union[FloatArray, "np.floating[Any]"]
# What ``x > 0`` is defined on (a list is not).
_Comparable = Union[Array, "np.number[Any]", float]


def _float_input(x: ArrayLike) -> FloatArray:
    arr: Array = np.asarray(x)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def _elementwise(kernel: Callable[[FloatArray], FloatArray], x: ArrayLike) -> FloatResult:
    """Apply a shape-preserving kernel to an array of any shape, a 0-d array or a scalar."""
    arr = _float_input(x)
    out = kernel(arr.reshape(1) if arr.ndim == 0 else arr)
    if arr.ndim == 0:
        scalar: np.floating[Any] = out[0]  # out has shape (1,)
        return scalar
    return out


def identity_function(x: _T) -> _T:
    """Returns ``x`` unchanged (the output activation of a regression network)."""
    return x


def step_function(x: _Comparable) -> npt.NDArray[np.int_]:
    """1 where ``x > 0``, else 0, as an int array."""
    return np.array(x > 0, dtype=int)


def sigmoid(x: ArrayLike) -> FloatResult:
    """``1 / (1 + exp(-x))`` elementwise."""
    return _elementwise(F.sigmoid_forward, x)


def sigmoid_grad(x: ArrayLike) -> FloatResult:
    """Derivative of :func:`sigmoid` at ``x``: ``(1 - sigmoid(x)) * sigmoid(x)``."""
    y = sigmoid(x)
    return (1.0 - y) * y


def relu(x: ArrayLike) -> Array | np.generic:
    """``max(0, x)`` elementwise."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        return np.maximum(0, x)  # DLfS keeps integer input integer
    return _elementwise(F.relu_forward, arr)


def relu_grad(x: ArrayLike) -> Array:
    """Derivative of :func:`relu` as DLfS defines it: 1 where ``x >= 0`` (the kink counts as 1),
    else 0, in the dtype of ``x``."""
    arr: Array = np.asarray(x)
    grad = np.zeros_like(arr)
    grad[arr >= 0] = 1
    return grad


def softmax(x: ArrayLike) -> FloatResult:
    """Softmax along the last axis (any number of dimensions), stable for large inputs."""
    arr = _float_input(x)
    if arr.ndim <= 2:
        return F.softmax(arr) if arr.ndim else F.softmax(arr.reshape(1))[0]
    return F.softmax(arr.reshape(-1, arr.shape[-1])).reshape(arr.shape)


def sum_squared_error(y: ArrayLike, t: ArrayLike) -> np.floating[Any]:
    """``0.5 * sum((y - t)**2)`` -- DLfS's ``sum_squared_error``."""
    total: np.floating[Any] = np.sum((np.asarray(y) - np.asarray(t)) ** 2)
    error: np.floating[Any] = 0.5 * total
    return error


#: The book's chapter 4 calls :func:`sum_squared_error` ``mean_squared_error`` (same formula:
#: a sum, not a mean); both names are provided.
mean_squared_error = sum_squared_error


def cross_entropy_error(y: ArrayLike, t: ArrayLike) -> np.floating[Any]:
    """Mean cross-entropy of predicted probabilities ``y`` against labels ``t``, DLfS's formula:
    ``-sum(log(y[i, t[i]] + 1e-7)) / N``.

    ``y``: (N, K) or (K,) probabilities. ``t``: integer labels (N,) or one-hot rows like ``y``.
    """
    probabilities: Array = np.asarray(y)
    labels: Array = np.asarray(t)
    if probabilities.ndim == 1:
        labels = labels.reshape(1, labels.size)
        probabilities = probabilities.reshape(1, probabilities.size)
    # One-hot targets are turned into label indices.
    if labels.size == probabilities.size:
        labels = labels.argmax(axis=1)
    batch_size = probabilities.shape[0]
    picked = probabilities[np.arange(batch_size), labels]
    loss: np.floating[Any] = -np.sum(np.log(picked + 1e-7)) / batch_size
    return loss


def softmax_loss(X: ArrayLike, t: ArrayLike) -> np.floating[Any]:
    """``cross_entropy_error(softmax(X), t)``."""
    return cross_entropy_error(softmax(X), t)
