"""Helpers from DLfS's ``common/util.py``, with the compute in the compiled core.

``im2col``/``col2im`` keep DLfS's signatures and column layout: ``col`` has shape
``(N*OH*OW, C*FH*FW)``, rows ordered (n, oh, ow), columns ordered (c, fh, fw). Beyond DLfS,
``stride`` and ``pad`` may be ``(h, w)`` pairs and filters may be rectangular.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from ._typing import ArrayLike, FloatArray, IntPair
from ._util_extra import shuffle_dataset, smooth_curve
from ._validate import (
    as_float_array,
    as_input_shape,
    as_pair,
    as_positive_int,
    check_window,
    float_dtype,
)

# "np": DLfS's common/util.py imports numpy at top level, so its star import gives scripts ``np``.
__all__ = ["col2im", "conv_output_size", "im2col", "np", "shuffle_dataset", "smooth_curve"]


def conv_output_size(input_size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """Output length of a window of ``filter_size`` slid over ``input_size`` padded by ``pad``
    on both sides, with ``stride``: ``(input_size + 2*pad - filter_size) // stride + 1``.

    DLfS divides with ``/`` and returns a float (24.0, or 12.5 when the window does not fit
    evenly); this returns the int the layers actually produce."""
    input_size, filter_size = (
        as_positive_int(input_size, "input_size"),
        as_positive_int(filter_size, "filter_size"),
    )
    stride, pad = as_positive_int(stride, "stride"), as_positive_int(pad, "pad", minimum=0)
    return (input_size + 2 * pad - filter_size) // stride + 1


def im2col(
    input_data: ArrayLike, filter_h: int, filter_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """Unfold every (filter_h, filter_w) window of ``input_data`` (N, C, H, W) into a row.

    Returns col: (N*OH*OW, C*filter_h*filter_w). Padded positions are zeros.
    """
    x = as_float_array(input_data, "input_data", float_dtype(input_data), ndim=4)
    fh, fw = as_positive_int(filter_h, "filter_h"), as_positive_int(filter_w, "filter_w")
    (sh, sw), (ph, pw) = as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    check_window(x.shape, "input_data", (fh, fw), "filter (filter_h, filter_w)", (sh, sw), (ph, pw))
    return _core.im2col(x, fh, fw, sh, sw, ph, pw)


def col2im(
    col: ArrayLike,
    input_shape: Sequence[int],
    filter_h: int,
    filter_w: int,
    stride: IntPair = 1,
    pad: IntPair = 0,
) -> FloatArray:
    """Fold ``col`` (N*OH*OW, C*filter_h*filter_w) back into an image of ``input_shape``
    (N, C, H, W), adding up overlapping windows (the adjoint of :func:`im2col`)."""
    n, c, h, w = as_input_shape(input_shape)
    col = as_float_array(col, "col", float_dtype(col), ndim=2)
    fh, fw = as_positive_int(filter_h, "filter_h"), as_positive_int(filter_w, "filter_w")
    (sh, sw), (ph, pw) = as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    check_window(
        (n, c, h, w), "input_shape", (fh, fw), "filter (filter_h, filter_w)", (sh, sw), (ph, pw)
    )
    return _core.col2im(col, n, c, h, w, fh, fw, sh, sw, ph, pw)
