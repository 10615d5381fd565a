"""Argument checking and conversion shared by the public wrappers around ``tinyconv._core``.

The compiled kernels accept only C-contiguous float32/float64 arrays; everything a user may pass
(lists, views, integer or float16 arrays) is converted here, explicitly, and anything that cannot be
a real-valued tensor is rejected with a ``TypeError`` naming the argument.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

__all__ = ["float_dtype", "as_float_array", "as_pair", "as_positive_int", "as_index_array"]

_REAL_KINDS = "biuf"
# Sizes, strides and pads beyond this are nonsense for any array that fits in memory; rejecting
# them here keeps every later size product inside 64 bits.
_MAX_SIZE = 2**40


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_ndarray(value: object, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of real numbers, got {_describe(value)}") from exc
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    return arr


def float_dtype(*values: object) -> np.dtype:
    """The compute dtype for a call: float32 when every floating input is float32 (or float16),
    float64 when any is float64 or wider, and float64 when no input is floating."""
    kinds = []
    for v in values:
        dt = getattr(v, "dtype", None)
        if dt is None:
            try:
                dt = np.asarray(v).dtype
            except Exception:
                continue  # not array-like: as_float_array reports it with the argument's name
        kinds.append(np.dtype(dt))
    floats = [d for d in kinds if d.kind == "f"]
    if floats and all(d.itemsize <= 4 for d in floats):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_float_array(value: object, name: str, dtype: np.dtype | type, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` (a copy only when needed)."""
    arr = _as_ndarray(value, name)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must be {want}-dimensional, got shape {arr.shape}")
    # np.asarray (not np.ascontiguousarray, which turns 0-d into 1-d) keeps the shape.
    return np.asarray(arr, dtype=dtype, order="C")


def as_index_array(value: object, name: str) -> np.ndarray:
    """``value`` as a C-contiguous int64 array. Integer data, or floats that hold whole numbers
    (labels are often loaded as floats); anything else is a TypeError, and whole numbers that do
    not fit in int64 are a ValueError."""
    arr = _as_ndarray(value, name)
    limit = np.iinfo(np.int64).max
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold integers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not (finite.all() and np.array_equal(arr, np.round(arr))):
            raise TypeError(f"{name} must hold integers, got an array of dtype {arr.dtype} with fractional or non-finite values")
        largest = float(np.abs(arr, dtype=np.float64).max()) if arr.size else 0.0
        if largest >= 2.0**63:
            raise ValueError(f"{name} holds {largest!r}, outside the int64 range")
    elif arr.dtype.kind == "u" and arr.size and arr.max() > limit:
        raise ValueError(f"{name} holds {arr.max()}, outside the int64 range")
    return np.asarray(arr, dtype=np.int64, order="C")


def as_positive_int(value: object, name: str, minimum: int = 1, maximum: int = _MAX_SIZE) -> int:
    """An int in [minimum, maximum] (bools are not ints here)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    v = operator.index(value)
    if v < minimum or v > maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {v}")
    return v


def as_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each >= ``minimum``, as a tuple (h, w)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
    if isinstance(value, numbers.Integral):
        v = operator.index(value)
        pair = (v, v)
    else:
        try:
            items = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {_describe(value)}") from None
        if len(items) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
        if any(isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral) for i in items):
            raise TypeError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
        pair = (operator.index(items[0]), operator.index(items[1]))
    if min(pair) < minimum or max(pair) > _MAX_SIZE:
        raise ValueError(f"{name} must be in [{minimum}, 2**40], got {_describe(value)}")
    return pair
