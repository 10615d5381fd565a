"""Argument checking and conversion shared by the public wrappers around ``tinyconv._core``.

The compiled kernels accept only C-contiguous float32/float64 arrays; everything a user may pass
(lists, views, integer or float16 arrays) is converted here, explicitly, and anything that cannot be
a real-valued tensor is rejected with a ``TypeError`` naming the argument.
"""

from __future__ import annotations

import numbers
import operator
import warnings
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ._typing import Array, FloatArray, FloatDType

__all__ = [
    "as_array",
    "as_channel_vectors",
    "as_flag",
    "as_float_array",
    "as_index_array",
    "as_input_shape",
    "as_pair",
    "as_positive_int",
    "as_real",
    "check_window",
    "float_dtype",
    "ndim_of",
]

_REAL_KINDS = "biuf"
# Sizes, strides and pads beyond this are nonsense for any array that fits in memory; rejecting
# them here keeps every later size product inside 64 bits.
_MAX_SIZE = 2**40

# The two compute dtypes, typed once: NumPy's stubs type np.dtype(np.float32) itself loosely.
_FLOAT32: np.dtype[np.float32] = np.dtype(np.float32)
_FLOAT64: np.dtype[np.float64] = np.dtype(np.float64)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# NumPy before 1.24 only warned on ragged nesting (and built an object array); later versions
# raise ValueError. as_array makes the old versions raise too.
_RaggedWarning = getattr(np, "exceptions", np).VisibleDeprecationWarning


def as_array(value: object) -> Array:
    """``np.asarray(value)``; ValueError for ragged nesting on every supported NumPy."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", _RaggedWarning)
        try:
            return np.asarray(value)
        except _RaggedWarning as warning:
            raise ValueError(str(warning)) from None


def _as_ndarray(value: object, name: str) -> Array:
    arr: Array
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = as_array(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(
                f"{name} must be an array of real numbers, got {_describe(value)}"
            ) from exc
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    return arr


def ndim_of(value: object, name: str) -> int:
    """``np.ndim(value)``, or a TypeError naming ``name`` when it is not array-like (a ragged list)."""
    ndim: int = _as_ndarray(value, name).ndim
    return ndim


def float_dtype(*values: object) -> np.dtype[np.floating[Any]]:
    """The compute dtype for a call: float32 when every floating input is float32 (or float16),
    float64 when any is float64 or wider, and float64 when no input is floating."""
    kinds: list[np.dtype[Any]] = []
    for v in values:
        dt = getattr(v, "dtype", None)
        if dt is None:
            try:
                dt = as_array(v).dtype
            except Exception:
                continue  # not array-like: as_float_array reports it with the argument's name
        kinds.append(np.dtype(dt))
    floats = [d for d in kinds if d.kind == "f"]
    if floats and all(d.itemsize <= 4 for d in floats):
        return _FLOAT32
    return _FLOAT64


def as_float_array(
    value: object, name: str, dtype: FloatDType, ndim: int | tuple[int, ...] | None = None
) -> FloatArray:
    """``value`` as a C-contiguous array of ``dtype`` (a copy only when needed)."""
    arr = _as_ndarray(value, name)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must be {want}-dimensional, got shape {arr.shape}")
    # np.asarray (not np.ascontiguousarray, which turns 0-d into 1-d) keeps the shape.
    return _aligned(np.asarray(arr, dtype=dtype, order="C"))


def _aligned(arr: Array) -> Array:
    """arr, or an aligned copy: np.asarray leaves a C-contiguous array of the right dtype as it is,
    even when its data is not aligned (a view at an odd byte offset), and the core refuses those."""
    return arr if arr.flags.aligned else arr.copy()


def as_index_array(value: object, name: str) -> npt.NDArray[np.int64]:
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
            raise TypeError(
                f"{name} must hold integers, got an array of dtype {arr.dtype} with fractional or non-finite values"
            )
        largest = float(np.abs(arr, dtype=np.float64).max()) if arr.size else 0.0
        if largest >= 2.0**63:
            raise ValueError(f"{name} holds {largest!r}, outside the int64 range")
    elif arr.dtype.kind == "u" and arr.size and arr.max() > limit:
        raise ValueError(f"{name} holds {arr.max()}, outside the int64 range")
    return _aligned(np.asarray(arr, dtype=np.int64, order="C"))


def as_positive_int(value: object, name: str, minimum: int = 1, maximum: int = _MAX_SIZE) -> int:
    """An int in [minimum, maximum] (bools are not ints here)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    v = operator.index(value)
    if v < minimum or v > maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {v}")
    return v


def as_input_shape(shape: object, name: str = "input_shape") -> tuple[int, int, int, int]:
    """An (N, C, H, W) shape of four ints: N >= 0 (an empty batch is fine), C, H, W >= 1."""
    try:
        # Anything tuple() cannot iterate raises the TypeError handled here.
        dims = tuple(cast("Iterable[object]", shape))
    except TypeError:
        raise TypeError(f"{name} must be a tuple (N, C, H, W), got {_describe(shape)}") from None
    if len(dims) != 4:
        raise ValueError(f"{name} must have 4 entries (N, C, H, W), got {_describe(shape)}")
    n, c, h, w = (
        as_positive_int(d, f"{name}[{i}]", minimum=0 if i == 0 else 1) for i, d in enumerate(dims)
    )
    return n, c, h, w


def as_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each >= ``minimum``, as a tuple (h, w)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
    if isinstance(value, numbers.Integral):
        v = operator.index(value)
        pair = (v, v)
    else:
        try:
            # Anything tuple() cannot iterate raises the TypeError handled here.
            items = tuple(cast("Iterable[object]", value))
        except TypeError:
            raise TypeError(
                f"{name} must be an int or a pair of ints, got {_describe(value)}"
            ) from None
        if len(items) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
        if any(
            isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral) for i in items
        ):
            raise TypeError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
        checked = cast("tuple[numbers.Integral, numbers.Integral]", items)  # checked just above
        pair = (operator.index(checked[0]), operator.index(checked[1]))
    if min(pair) < minimum or max(pair) > _MAX_SIZE:
        raise ValueError(f"{name} must be in [{minimum}, 2**40], got {_describe(value)}")
    return pair


def as_real(value: object, name: str) -> float:
    """A real number (int, float, NumPy real scalar or 0-d array) as a Python float. Bools,
    complex numbers and strings are a TypeError; an int too large for a float64 (say 10**400) is a
    ValueError, not Python's OverflowError."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a float64: {_describe(value)}") from None


def as_flag(value: object, name: str) -> bool:
    """A bool (Python or NumPy). Anything else is a TypeError: ``bool()`` would take any object,
    and a non-empty string or an array means a mistake, not a flag."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


_INT64_MAX = 2**63 - 1


def check_window(
    input_shape: tuple[int, ...],
    input_name: str,
    window: tuple[int, int],
    window_name: str,
    stride: tuple[int, int],
    pad: tuple[int, int],
) -> tuple[int, int]:
    """Checks a sliding window over an (N, C, H, W) input, as the compiled core does, and returns the
    output size (OH, OW). The window, stride and pad are checked ints (:func:`as_pair`,
    :func:`as_positive_int`). A ValueError when the input has no plane (C, H or W < 1), when the
    window is larger than the padded input, or when the unfolded size N*C*OH*OW*FH*FW (the
    im2col matrix; the work of a pooling), with N counted as at least 1, does not fit in 64 bits:
    every size product a kernel forms divides that one."""
    n, c, h, w = input_shape
    (fh, fw), (sh, sw), (ph, pw) = window, stride, pad
    if n < 0 or min(c, h, w) < 1:
        raise ValueError(
            f"{input_name} must have N >= 0 and C, H, W >= 1, got shape {tuple(input_shape)}"
        )
    if fh > h + 2 * ph or fw > w + 2 * pw:
        raise ValueError(
            f"{window_name} ({fh}, {fw}) is larger than the padded input ({h + 2 * ph}, {w + 2 * pw}) "
            f"= input ({h}, {w}) + 2 * pad ({ph}, {pw})"
        )
    oh, ow = (h + 2 * ph - fh) // sh + 1, (w + 2 * pw - fw) // sw + 1
    if max(n, 1) * c * oh * ow * fh * fw > _INT64_MAX:
        raise ValueError(
            f"{window_name} ({fh}, {fw}) with stride ({sh}, {sw}) and pad ({ph}, {pw}) over an input of "
            f"shape {tuple(input_shape)} is too large: N*C*OH*OW*FH*FW = "
            f"{max(n, 1)}*{c}*{oh}*{ow}*{fh}*{fw} overflows 64 bits"
        )
    return oh, ow


def as_channel_vectors(
    tensor: Array, dtype: FloatDType, channel_axis: int = 1, **vectors: object
) -> list[FloatArray]:
    """Per-channel vectors (batch-normalisation parameters and statistics), each converted to a
    C-contiguous (C,) array of ``dtype``, C = ``tensor.shape[channel_axis]``; a ValueError naming
    the first one of another shape."""
    channels = tensor.shape[channel_axis]
    converted = []
    for name, value in vectors.items():
        arr = as_float_array(value, name, dtype, ndim=1)
        if arr.shape != (channels,):
            raise ValueError(
                f"{name} must have shape ({channels},), one entry per channel, got {arr.shape}"
            )
        converted.append(arr)
    return converted
