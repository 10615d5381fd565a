"""DLfS's data helpers from ``common/util.py`` that are not about convolution geometry:
:func:`shuffle_dataset` and :func:`smooth_curve`. Re-exported by :mod:`tinyconv.util`."""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np

__all__ = ["shuffle_dataset", "smooth_curve"]

RandomSource = Union[np.random.Generator, np.random.RandomState, None]


def shuffle_dataset(x: np.ndarray, t: np.ndarray, rng: RandomSource = None) -> Tuple[np.ndarray, np.ndarray]:
    """Shuffle samples and labels together along the first axis; returns new arrays.

    Draws the permutation from ``np.random`` as DLfS does (so ``np.random.seed`` makes it
    reproducible), or from ``rng`` (a ``numpy.random.Generator`` or ``RandomState``) when given.
    Unlike DLfS, ``x`` may have any number of dimensions, not only 2 or 4.
    """
    x = np.asarray(x)
    t = np.asarray(t)
    if x.shape[:1] != t.shape[:1]:
        raise ValueError(f"x and t must hold the same number of samples, got {x.shape[:1]} and {t.shape[:1]}")
    permutation = (np.random if rng is None else rng).permutation(x.shape[0])
    return x[permutation], t[permutation]


def smooth_curve(x) -> np.ndarray:
    """Smooth a loss curve for plotting, exactly as DLfS: convolution with an 11-point Kaiser
    window (beta 2) over the series mirrored at both ends; the result has the length of ``x``.

    See http://glowingpython.blogspot.jp/2012/02/convolution-with-numpy.html.
    """
    x = np.asarray(x)
    window_len = 11
    # Mirror the ends so the 'valid' convolution still covers the first and last points.
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]
