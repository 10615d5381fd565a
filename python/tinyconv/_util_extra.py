"""DLfS's data helpers from ``common/util.py`` that are not about convolution geometry:
:func:`shuffle_dataset` and :func:`smooth_curve`. Re-exported by :mod:`tinyconv.util`.

Both check their arguments first and raise ``TypeError`` (not array-like, not numbers, not a
random source) or ``ValueError`` (wrong number of dimensions, too few values) naming the argument
and its value, where DLfS's versions fail later with an ``IndexError`` or return a wrong result.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from ._typing import Array, ArrayLike, FloatArray
from ._validate import _describe, as_array

__all__ = ["shuffle_dataset", "smooth_curve"]

RandomSource = Union[np.random.Generator, np.random.RandomState, None]

# DLfS's smoothing window: 11 Kaiser points. The mirrored ends it pads with are only long enough
# to keep the output as long as the input when the input has at least this many points.
SMOOTHING_WINDOW = 11


def _as_sample_array(value: object, name: str) -> Array:
    """``value`` as an array whose first axis indexes samples (any dtype, at least 1-D)."""
    try:
        array = as_array(value)
    except (ValueError, TypeError) as exc:  # ragged nesting and the like
        raise TypeError(f"{name} must be array-like, got {_describe(value)} ({exc})") from None
    if array.ndim == 0:
        if array.dtype == object:
            raise TypeError(f"{name} must be array-like, got {_describe(value)}")
        raise ValueError(
            f"{name} must have at least one dimension (one entry per sample), "
            f"got the scalar {_describe(value)}"
        )
    return array


def shuffle_dataset(x: ArrayLike, t: ArrayLike, rng: RandomSource = None) -> tuple[Array, Array]:
    """Shuffle samples and labels together along the first axis; returns new arrays.

    Draws the permutation from ``np.random`` as DLfS does (so ``np.random.seed`` makes it
    reproducible), or from ``rng`` (a ``numpy.random.Generator`` or ``RandomState``) when given.
    Unlike DLfS, ``x`` may have any number of dimensions, not only 2 or 4.
    """
    samples = _as_sample_array(x, "x")
    labels = _as_sample_array(t, "t")
    if rng is not None and not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise TypeError(
            f"rng must be a numpy.random.Generator, a RandomState or None, got {_describe(rng)}"
        )
    if samples.shape[0] != labels.shape[0]:
        raise ValueError(
            f"x and t must hold the same number of samples, got {samples.shape[0]} and {labels.shape[0]}"
        )
    permutation = (np.random if rng is None else rng).permutation(samples.shape[0])
    return samples[permutation], labels[permutation]


def smooth_curve(x: ArrayLike) -> FloatArray:
    """Smooth a loss curve for plotting, exactly as DLfS: convolution with an 11-point Kaiser
    window (beta 2) over the series mirrored at both ends; the result has the length of ``x``.

    ``x`` must be a 1-D series of at least 11 real numbers: on shorter series DLfS's mirroring
    comes out too short and its result is shorter than ``x`` (empty below 8 points), so those are
    rejected with a ``ValueError`` rather than returned wrong.

    See http://glowingpython.blogspot.jp/2012/02/convolution-with-numpy.html.
    """
    try:
        series: Array = as_array(x)
    except (ValueError, TypeError) as exc:
        raise TypeError(
            f"x must be a 1-D sequence of numbers, got {_describe(x)} ({exc})"
        ) from None
    if series.dtype.kind not in "biuf":
        raise TypeError(f"x must hold real numbers, got {_describe(x)} (dtype {series.dtype})")
    if series.ndim != 1:
        raise ValueError(f"x must be 1-dimensional, got shape {series.shape}: {_describe(x)}")
    if len(series) < SMOOTHING_WINDOW:
        raise ValueError(
            f"x must hold at least {SMOOTHING_WINDOW} values (the smoothing window), "
            f"got {len(series)}: {_describe(x)}"
        )
    window_len = SMOOTHING_WINDOW
    # Mirror the ends so the 'valid' convolution still covers the first and last points.
    s = np.r_[series[window_len - 1 : 0 : -1], series, series[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y: FloatArray = np.convolve(w / w.sum(), s, mode="valid")
    return y[5 : len(y) - 5]
