"""Pure-NumPy reference implementations of every tinyconv kernel: the test oracle.

Everything here is written to be read, not to be fast. Each function has the same signature and
meaning as its namesake in :mod:`tinyconv.functional` (the compiled, fast versions), and the
vectorised convolution and pooling follow *Deep Learning from Scratch* (DLfS, Koki Saitoh,
O'Reilly Japan): ``im2col``/``col2im`` from ``common/util.py`` and the ``Convolution``/``Pooling``
layers from ``common/layers.py``, generalised to rectangular filters and to a ``stride`` and
``pad`` given as an int or an ``(h, w)`` pair. The ``*_naive`` functions compute the same results
with explicit loops that follow the definitions, so the two families can check each other.

Conventions (the same as :mod:`tinyconv.functional`):

* Layout is NCHW. Shapes: ``x (N, C, H, W)``, filters ``W (FN, C, FH, FW)``, output
  ``(N, FN, OH, OW)`` with ``OH = (H + 2*pad_h - FH) // stride_h + 1`` and likewise ``OW``.
* Dtypes: inputs are first converted to one *compute dtype*, float32 when every floating input is
  float32 or float16 (integer inputs adopt it) and float64 otherwise (also when no input is
  floating). Results come back in that dtype. Internally the arithmetic is done in float64 on the
  converted values and rounded once at the end, so a float32 result here is as accurate as a
  float32 result can be: a good yardstick for the float32 kernels.
* Max pooling: padded positions act as -inf and never win; ties go to the first maximum in
  row-major window order; ``argmax`` holds the flat index ``h * W + w`` of the winner in its
  (unpadded) input plane, as int64. Average pooling counts padded positions as zeros and always
  divides by ``pool_h * pool_w``.
* Arguments are checked as in :mod:`tinyconv.functional` (the same helpers from
  :mod:`tinyconv._validate`): a TypeError or ValueError naming the argument, absurd windows refused
  (their unfolded size must fit in 64 bits), and a MemoryError before allocating more than this
  machine's memory. An empty batch (N = 0) gives empty results wherever the compiled core does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._typing import Array, ArrayLike, FloatArray, IntPair
from ._validate import (
    as_array,
    as_flag,
    as_float_array,
    as_index_array,
    as_input_shape,
    as_pair,
    as_positive_int,
    as_real,
    check_window,
    ndim_of,
)

__all__ = [
    "add_forward",
    "affine_backward",
    "affine_forward",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_naive",
    "batch_norm2d_backward",
    "batch_norm2d_forward",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_max_pool2d",
    # naive loops that follow the definitions
    "conv2d_naive",
    # helpers
    "conv_output_size",
    "fold_batch_norm",
    # vectorised references, same signatures as tinyconv.functional
    "gemm",
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "im2col",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_backward_from_input",
    "max_pool2d_forward",
    "max_pool2d_naive",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
]


# ----------------------------------------------------------------------------------------------
# Argument handling


def _compute_dtype(*values: object) -> np.dtype[np.floating[Any]]:
    """float32 when every floating input is at most 32 bits wide (and there is one), else float64.
    Values that are not array-like are skipped here; their conversion names them."""
    dtypes = []
    for v in values:
        try:
            dtypes.append(as_array(v).dtype)
        except Exception:  # ragged lists and the like
            continue
    floating = [d for d in dtypes if d.kind == "f"]
    narrow = bool(floating) and all(d.itemsize <= 4 for d in floating)
    dtype: np.dtype[np.floating[Any]] = np.dtype(np.float32 if narrow else np.float64)
    return dtype


def _as_float64(value: object, dtype: np.dtype[Any], name: str) -> Array:
    """``value`` converted to the compute ``dtype`` (rounding exactly as the kernels' inputs are
    rounded), then widened to float64 for the arithmetic. A TypeError naming ``name`` when it is not
    an array of real numbers."""
    return as_float_array(value, name, dtype).astype(np.float64)


def _physical_memory_bytes() -> int:
    """This machine's memory in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def _zeros(shape: tuple[int, ...], what: str) -> Array:
    """``np.zeros(shape)`` in float64, or a MemoryError first when it would not fit in this machine's
    memory (as the compiled core does): the OS may promise such an allocation and then kill the
    process when the pages are touched."""
    _check_affordable(shape, what)
    return np.zeros(shape)


def _check_affordable(shape: tuple[int, ...], what: str) -> None:
    """A MemoryError when ``shape`` float64 values would not fit in this machine's memory."""
    elements = 1
    for d in shape:
        elements *= int(d)
    limit = _physical_memory_bytes()
    if limit and elements * 8 > limit:
        raise MemoryError(
            f"{what} of shape {tuple(shape)} would need {elements * 8 / 2**30:.1f} GiB, more than the "
            f"{limit / 2**30:.1f} GiB of memory of this machine"
        )


def _padded(x: Array, ph: int, pw: int) -> Array:
    """x (N, C, H, W) with ph zero rows above and below and pw zero columns left and right."""
    N, C, H, W = x.shape
    img = _zeros((N, C, H + 2 * ph, W + 2 * pw), "the padded input")
    img[:, :, ph : ph + H, pw : pw + W] = x
    return img


def conv_output_size(input_size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """Number of positions of a window of ``filter_size`` sliding with ``stride`` over an input of
    ``input_size`` padded by ``pad`` on each side (one dimension)."""
    return (input_size + 2 * pad - filter_size) // stride + 1


# (stride, pad, output size): three (h, w) pairs.
_Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _window_geometry(
    input_shape: Sequence[int],
    input_name: str,
    filter_h: int,
    filter_w: int,
    window_name: str,
    stride: IntPair,
    pad: IntPair,
) -> _Geometry:
    """``(sh, sw), (ph, pw), (OH, OW)`` for a window sliding over ``input_shape`` (N, C, H, W),
    checked as the compiled core checks it (see :func:`tinyconv._validate.check_window`)."""
    (sh, sw), (ph, pw) = as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    out_h, out_w = check_window(
        tuple(input_shape), input_name, (filter_h, filter_w), window_name, (sh, sw), (ph, pw)
    )
    return (sh, sw), (ph, pw), (out_h, out_w)


def _check_4d(x: Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-dimensional (N, C, H, W), got shape {x.shape}")


# ----------------------------------------------------------------------------------------------
# im2col / col2im (DLfS common/util.py, generalised)


def _im2col_f64(x: Array, filter_h: int, filter_w: int, stride: IntPair, pad: IntPair) -> Array:
    """im2col on a float64 array, no dtype handling (callers have checked the window)."""
    N, C, _H, _W = x.shape
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(
        x.shape, "x", filter_h, filter_w, "window", stride, pad
    )
    col = _zeros((N, C, filter_h, filter_w, out_h, out_w), "the im2col matrix")
    img = _padded(x, ph, pw)
    if filter_h * filter_w <= out_h * out_w:
        # For each tap (ky, kx) of the window, the strided slice of the padded image holds the value
        # that tap sees at every output position at once. (The slice's stop may pass the end of the
        # image; the last element it takes, ky + sh*(out_h - 1) <= H + 2*ph - 1, never does.)
        for ky in range(filter_h):
            ky_max = ky + sh * out_h
            for kx in range(filter_w):
                kx_max = kx + sw * out_w
                col[:, :, ky, kx, :, :] = img[:, :, ky:ky_max:sh, kx:kx_max:sw]
    else:
        # Windows larger than the number of positions (a window as large as the padded input):
        # the same values copied one whole window at a time, so that the Python loop stays short.
        for i in range(out_h):
            for j in range(out_w):
                col[:, :, :, :, i, j] = img[
                    :, :, i * sh : i * sh + filter_h, j * sw : j * sw + filter_w
                ]
    # Rows ordered (n, oh, ow), columns (c, fh, fw); both counts spelled out, so that an empty
    # batch (N = 0) reshapes too.
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, C * filter_h * filter_w)


def _col2im_f64(
    col: Array,
    input_shape: Sequence[int],
    filter_h: int,
    filter_w: int,
    stride: IntPair,
    pad: IntPair,
) -> Array:
    """col2im on a float64 array, no dtype handling (callers have checked the window)."""
    N, C, H, W = input_shape
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(
        input_shape, "input_shape", filter_h, filter_w, "window", stride, pad
    )
    expected = (N * out_h * out_w, C * filter_h * filter_w)
    if col.shape != expected:
        raise ValueError(
            f"col must have shape {expected} for input_shape {tuple(input_shape)}, got {col.shape}"
        )
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    # DLfS allocates stride - 1 extra rows and columns here; no slice below reaches them (see
    # _im2col_f64), and with a huge stride they would be a huge allocation.
    img = _zeros((N, C, H + 2 * ph, W + 2 * pw), "the padded image")
    # Overlapping windows add up; every pixel receives its contributions in (fh, fw) order.
    if filter_h * filter_w <= out_h * out_w:
        for ky in range(filter_h):
            ky_max = ky + sh * out_h
            for kx in range(filter_w):
                kx_max = kx + sw * out_w
                img[:, :, ky:ky_max:sh, kx:kx_max:sw] += col[:, :, ky, kx, :, :]
    else:  # few positions, large windows: one window at a time (the sums then run in position order)
        for i in range(out_h):
            for j in range(out_w):
                img[:, :, i * sh : i * sh + filter_h, j * sw : j * sw + filter_w] += col[
                    :, :, :, :, i, j
                ]
    # Contributions that landed in the padding are dropped.
    return np.ascontiguousarray(img[:, :, ph : H + ph, pw : W + pw])


def im2col(
    input_data: ArrayLike, filter_h: int, filter_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """Unfold the sliding windows of a batch of images into the rows of a matrix.

    input_data: (N, C, H, W). Returns col: (N*OH*OW, C*FH*FW); row ``(n*OH + oh)*OW + ow`` holds the
    window at output position (oh, ow) of image n, flattened in (c, fh, fw) order. Padded positions
    read as zero.
    """
    dt = _compute_dtype(input_data)
    x = _as_float64(input_data, dt, "input_data")
    _check_4d(x, "input_data")
    fh, fw = as_positive_int(filter_h, "filter_h"), as_positive_int(filter_w, "filter_w")
    _window_geometry(x.shape, "input_data", fh, fw, "filter (filter_h, filter_w)", stride, pad)
    return _im2col_f64(x, fh, fw, stride, pad).astype(dt)


def col2im(
    col: ArrayLike,
    input_shape: Sequence[int],
    filter_h: int,
    filter_w: int,
    stride: IntPair = 1,
    pad: IntPair = 0,
) -> FloatArray:
    """Fold a column matrix back into images: the adjoint of :func:`im2col`.

    col: (N*OH*OW, C*FH*FW); input_shape: (N, C, H, W). Every entry of ``col`` is added to the pixel
    it was read from (overlapping windows accumulate; entries from the padding are dropped).
    Returns (N, C, H, W).
    """
    shape = as_input_shape(input_shape)
    dt = _compute_dtype(col)
    c = _as_float64(col, dt, "col")
    if c.ndim != 2:
        raise ValueError(f"col must be 2-dimensional, got shape {c.shape}")
    fh, fw = as_positive_int(filter_h, "filter_h"), as_positive_int(filter_w, "filter_w")
    _window_geometry(shape, "input_shape", fh, fw, "filter (filter_h, filter_w)", stride, pad)
    return _col2im_f64(c, shape, fh, fw, stride, pad).astype(dt)


# ----------------------------------------------------------------------------------------------
# Naive loops (the definitions)


def conv2d_naive(
    x: ArrayLike, W: ArrayLike, b: ArrayLike, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """Convolution (cross-correlation) by explicit loops over every output element:
    ``y[n, f, i, j] = b[f] + sum_{c, p, q} xpad[n, c, i*sh + p, j*sw + q] * W[f, c, p, q]``."""
    dt = _compute_dtype(x, W, b)
    x, W, b = _as_float64(x, dt, "x"), _as_float64(W, dt, "W"), _as_float64(b, dt, "b")
    (sh, sw), (ph, pw), (out_h, out_w) = _conv_geometry(x, W, stride, pad)
    N, FN, FH, FW = x.shape[0], W.shape[0], W.shape[2], W.shape[3]
    if b.shape != (FN,):
        raise ValueError(f"b must have shape ({FN},), got {b.shape}")
    xpad = _padded(x, ph, pw)
    y = _zeros((N, FN, out_h, out_w), "the output")
    for n in range(N):
        for f in range(FN):
            for i in range(out_h):
                for j in range(out_w):
                    window = xpad[n, :, i * sh : i * sh + FH, j * sw : j * sw + FW]
                    y[n, f, i, j] = np.sum(window * W[f]) + b[f]
    return y.astype(dt)


def _check_max_pool_pad(pool_h: int, pool_w: int, ph: int, pw: int) -> None:
    # With pad >= pool a window could lie entirely in the padding and have no winner.
    if ph >= pool_h or pw >= pool_w:
        raise ValueError(
            f"max pooling needs pad < pool size in each direction, got pad ({ph}, {pw}) "
            f"for pool ({pool_h}, {pool_w})"
        )


def _beats(value: float, best: float) -> bool:
    """Whether a later tap with ``value`` replaces the current ``best``: only a strictly larger
    value does (ties keep the first), and a NaN beats any number but not an earlier NaN (as
    ``np.argmax``, which treats NaN as the maximum)."""
    if np.isnan(best):
        return False
    return bool(value > best or np.isnan(value))


def _pool_geometry(
    x: Array, pool_h: int, pool_w: int, stride: IntPair, pad: IntPair
) -> tuple[int, int, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``pool_h, pool_w, (sh, sw), (ph, pw), (OH, OW)`` of a pooling over x, checked."""
    _check_4d(x, "x")
    pool_h, pool_w = as_positive_int(pool_h, "pool_h"), as_positive_int(pool_w, "pool_w")
    stride_hw, pad_hw, out = _window_geometry(
        x.shape, "x", pool_h, pool_w, "pool (pool_h, pool_w)", stride, pad
    )
    return pool_h, pool_w, stride_hw, pad_hw, out


def _real_taps(o: int, s: int, p: int, k: int, size: int) -> range:
    """The taps t of output position o whose input coordinate o*s - p + t lies in [0, size): the
    window's taps minus those in the padding (which the naive loops skip)."""
    return range(max(0, p - o * s), min(k, size + p - o * s))


def max_pool2d_naive(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Max pooling by explicit loops over every window, visiting taps in row-major order and
    keeping the first strict maximum; padded taps are skipped (they act as -inf).

    Returns (y, argmax), both (N, C, OH, OW); argmax (int64) is the flat index ``h * W + w`` of
    each window's winner in its input plane. NaN wins (the first one), as in ``np.argmax``.
    """
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    pool_h, pool_w, (sh, sw), (ph, pw), (out_h, out_w) = _pool_geometry(
        x, pool_h, pool_w, stride, pad
    )
    _check_max_pool_pad(pool_h, pool_w, ph, pw)
    N, C, H, W = x.shape
    y = _zeros((N, C, out_h, out_w), "the output")
    argmax = np.zeros((N, C, out_h, out_w), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(out_h):
                for j in range(out_w):
                    best_value, best_index = None, -1
                    for p in _real_taps(i, sh, ph, pool_h, H):  # padding never wins
                        for q in _real_taps(j, sw, pw, pool_w, W):
                            h, w = i * sh - ph + p, j * sw - pw + q
                            value = x[n, c, h, w]
                            if best_value is None or _beats(value, best_value):
                                best_value, best_index = value, h * W + w
                    y[n, c, i, j] = best_value
                    argmax[n, c, i, j] = best_index
    return y.astype(dt), argmax


def avg_pool2d_naive(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """Average pooling by explicit loops: the sum of each window's real inputs (padding adds
    zero) divided by ``pool_h * pool_w``."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    pool_h, pool_w, (sh, sw), (ph, pw), (out_h, out_w) = _pool_geometry(
        x, pool_h, pool_w, stride, pad
    )
    N, C, H, W = x.shape
    y = _zeros((N, C, out_h, out_w), "the output")
    for n in range(N):
        for c in range(C):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0
                    for p in _real_taps(i, sh, ph, pool_h, H):  # padding adds zero
                        for q in _real_taps(j, sw, pw, pool_w, W):
                            total += x[n, c, i * sh - ph + p, j * sw - pw + q]
                    y[n, c, i, j] = total / (pool_h * pool_w)
    return y.astype(dt)


# ----------------------------------------------------------------------------------------------
# GEMM


def gemm(
    a: ArrayLike,
    b: ArrayLike,
    c: ArrayLike | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
    trans_a: bool = False,
    trans_b: bool = False,
) -> FloatArray:
    """``alpha * op(a) @ op(b) + beta * c``, op = transpose when ``trans_*``.

    a: (M, K), or (K, M) with ``trans_a``; b: (K, N), or (N, K) with ``trans_b``; c: (M, N) or
    None (then ``beta`` must be 0). With ``beta == 0``, ``c`` is not read (NaNs in it do not
    propagate), as in BLAS. Returns a new (M, N) array.
    """
    dt = _compute_dtype(a, b) if c is None else _compute_dtype(a, b, c)
    A, B = _as_float64(a, dt, "a"), _as_float64(b, dt, "b")
    alpha, beta = as_real(alpha, "alpha"), as_real(beta, "beta")
    trans_a, trans_b = as_flag(trans_a, "trans_a"), as_flag(trans_b, "trans_b")
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"a and b must be 2-dimensional, got shapes {A.shape} and {B.shape}")
    op_a = A.T if trans_a else A
    op_b = B.T if trans_b else B
    if op_a.shape[1] != op_b.shape[0]:
        raise ValueError(f"inner dimensions differ: op(a) is {op_a.shape}, op(b) is {op_b.shape}")
    result = alpha * (op_a @ op_b)
    if c is None:
        if beta != 0:
            raise ValueError(f"beta must be 0 when c is None, got {beta}")
        return result.astype(dt)
    C = _as_float64(c, dt, "c")  # checked even when beta == 0, as the compiled core does
    if C.shape != result.shape:
        raise ValueError(f"c must have shape {result.shape}, got {C.shape}")
    if beta != 0:
        result = result + beta * C
    return result.astype(dt)


# ----------------------------------------------------------------------------------------------
# Convolution (DLfS Convolution layer)


def _conv_geometry(x: Array, W: Array, stride: IntPair, pad: IntPair) -> _Geometry:
    """``(sh, sw), (ph, pw), (OH, OW)`` of a convolution of x with W, checked as the compiled core
    checks it."""
    if x.ndim != 4 or W.ndim != 4:
        raise ValueError(f"x and W must be 4-dimensional, got shapes {x.shape} and {W.shape}")
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"W has {W.shape[1]} channels but x has {x.shape[1]}")
    if W.shape[0] < 1 or min(W.shape[2:]) < 1:
        raise ValueError(f"W must have at least one filter of at least 1x1, got shape {W.shape}")
    return _window_geometry(
        x.shape, "x", W.shape[2], W.shape[3], "filter (FH, FW) of W", stride, pad
    )


def conv2d_forward(
    x: ArrayLike,
    W: ArrayLike,
    b: ArrayLike,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    relu: bool = False,
) -> FloatArray:
    """Convolution as one matrix product: ``im2col(x) @ W_flat.T + b``.

    x: (N, C, H, W); W: (FN, C, FH, FW); b: (FN,). Returns y: (N, FN, OH, OW); with ``relu``,
    :func:`relu_forward` of it.
    """
    dt = _compute_dtype(x, W, b)
    x, W, b = _as_float64(x, dt, "x"), _as_float64(W, dt, "W"), _as_float64(b, dt, "b")
    _, _, (out_h, out_w) = _conv_geometry(x, W, stride, pad)
    FN, _C, FH, FW = W.shape
    if b.shape != (FN,):
        raise ValueError(f"b must have shape ({FN},), got {b.shape}")
    relu = as_flag(relu, "relu")
    N = x.shape[0]
    col = _im2col_f64(x, FH, FW, stride, pad)  # (N*OH*OW, C*FH*FW)
    col_W = W.reshape(FN, -1).T  # (C*FH*FW, FN)
    out = col @ col_W + b  # (N*OH*OW, FN)
    y = out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2).astype(dt)
    return relu_forward(y) if relu else y


def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    W: ArrayLike,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    need_dx: bool = True,
) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of :func:`conv2d_forward` (DLfS ``Convolution.backward``).

    dout: (N, FN, OH, OW); x: (N, C, H, W); W: (FN, C, FH, FW). Returns (dx, dW, db) shaped like
    x, W and (FN,).
    """
    dt = _compute_dtype(dout, x, W)
    dout, x, W = _as_float64(dout, dt, "dout"), _as_float64(x, dt, "x"), _as_float64(W, dt, "W")
    _, _, (out_h, out_w) = _conv_geometry(x, W, stride, pad)
    need_dx = as_flag(need_dx, "need_dx")
    FN, C, FH, FW = W.shape
    N = x.shape[0]
    if dout.shape != (N, FN, out_h, out_w):
        raise ValueError(f"dout must have shape {(N, FN, out_h, out_w)}, got {dout.shape}")
    col = _im2col_f64(x, FH, FW, stride, pad)  # (N*OH*OW, C*FH*FW)
    col_W = W.reshape(FN, -1).T  # (C*FH*FW, FN)
    dout_rows = dout.transpose(0, 2, 3, 1).reshape(-1, FN)  # (N*OH*OW, FN)
    db = dout_rows.sum(axis=0)
    dW = (col.T @ dout_rows).T.reshape(FN, C, FH, FW)
    dcol = dout_rows @ col_W.T  # (N*OH*OW, C*FH*FW)
    dx = _col2im_f64(dcol, x.shape, FH, FW, stride, pad)
    return (dx.astype(dt) if need_dx else None), dW.astype(dt), db.astype(dt)


# ----------------------------------------------------------------------------------------------
# Pooling (DLfS Pooling layer, with -inf padding for max pooling)


def _pool_windows(x: Array, pool_h: int, pool_w: int, stride: IntPair, pad: IntPair) -> Array:
    """The pooling windows of x as rows: (N*OH*OW*C, pool_h*pool_w), rows ordered (n, oh, ow, c),
    taps in row-major window order. Padded taps hold 0."""
    return _im2col_f64(x, pool_h, pool_w, stride, pad).reshape(-1, pool_h * pool_w)


def _rows_to_nchw(rows: Array, N: int, C: int, out_h: int, out_w: int) -> Array:
    """(N*OH*OW*C,) values in (n, oh, ow, c) order -> (N, C, OH, OW)."""
    return rows.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)


def max_pool2d_forward(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Max pooling. Padded positions never win; ties go to the first maximum in row-major window
    order, and NaN wins, as in ``np.argmax``. Requires ``pad < pool`` in each direction.

    x: (N, C, H, W). Returns (y, argmax): y (N, C, OH, OW) and argmax (N, C, OH, OW) int64, the
    flat index ``h * W + w`` of each winner in its input plane.
    """
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    pool_h, pool_w, _, (ph, pw), (out_h, out_w) = _pool_geometry(x, pool_h, pool_w, stride, pad)
    _check_max_pool_pad(pool_h, pool_w, ph, pw)
    N, C, H, W = x.shape

    windows = _pool_windows(x, pool_h, pool_w, stride, pad)
    # The same unfolding applied to one plane of ones tells which taps are real (1) or padding (0),
    # and applied to a plane of flat indices tells which input pixel each tap reads.
    one_plane = np.ones((1, 1, H, W))
    index_plane = np.arange(H * W, dtype=np.float64).reshape(1, 1, H, W)
    is_real = _pool_windows(one_plane, pool_h, pool_w, stride, pad) == 1  # (OH*OW, taps)
    tap_source = _pool_windows(index_plane, pool_h, pool_w, stride, pad).astype(np.int64)
    # Rows of `windows` are ordered (n, oh, ow, c): repeat the per-position masks for every c and n.
    is_real = np.tile(np.repeat(is_real, C, axis=0), (N, 1))
    tap_source = np.tile(np.repeat(tap_source, C, axis=0), (N, 1))

    # np.argmax returns the first maximum (and treats NaN as the maximum). Padding holds -inf so
    # it loses to every real value, except in a tie at -inf when all real values are -inf: then
    # the first real tap wins (argmax of a boolean row is its first True).
    rows = np.arange(windows.shape[0])
    winner_tap = np.where(is_real, windows, -np.inf).argmax(axis=1)
    padding_won = ~is_real[rows, winner_tap]
    winner_tap[padding_won] = is_real[padding_won].argmax(axis=1)
    winner = tap_source[rows, winner_tap]

    y = _rows_to_nchw(windows[rows, winner_tap], N, C, out_h, out_w)
    argmax = _rows_to_nchw(winner, N, C, out_h, out_w)
    return y.astype(dt), np.ascontiguousarray(argmax, dtype=np.int64)


def max_pool2d_backward(
    dout: ArrayLike,
    argmax: ArrayLike,
    input_shape: Sequence[int],
    *,
    relu_output: ArrayLike | None = None,
) -> FloatArray:
    """Gradient of :func:`max_pool2d_forward`: each ``dout`` value is added to its window's winner
    (winners of overlapping windows accumulate); with ``relu_output`` (the pooled input, a ReLU's
    output), then :func:`relu_backward` through that ReLU.

    dout, argmax: (N, C, OH, OW); input_shape: (N, C, H, W). Returns dx: (N, C, H, W).
    """
    dt = _compute_dtype(dout)
    dout = _as_float64(dout, dt, "dout")
    argmax = as_index_array(argmax, "argmax")
    N, C, H, W = as_input_shape(input_shape)
    if dout.ndim != 4 or dout.shape[:2] != (N, C):
        raise ValueError(f"dout must have shape ({N}, {C}, OH, OW), got {dout.shape}")
    if argmax.shape != dout.shape:
        raise ValueError(f"argmax must have the shape of dout {dout.shape}, got {argmax.shape}")
    if argmax.size and (argmax.min() < 0 or argmax.max() >= H * W):
        raise ValueError(f"argmax entries must lie in [0, {H * W})")
    gate = None
    if relu_output is not None:
        gate = as_float_array(relu_output, "relu_output", dt)
        if gate.shape != (N, C, H, W):
            raise ValueError(f"relu_output must have shape {(N, C, H, W)}, got {gate.shape}")
    dx_planes = _zeros((N * C, H * W), "dx")
    plane = np.arange(N * C).repeat(dout.shape[2] * dout.shape[3])
    # np.add.at accumulates repeated indices (overlapping windows with the same winner).
    np.add.at(dx_planes, (plane, argmax.reshape(-1)), dout.reshape(-1))
    dx = dx_planes.reshape(N, C, H, W).astype(dt)
    return dx if gate is None else relu_backward(dx, gate)


def max_pool2d(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """The values of :func:`max_pool2d_forward` alone."""
    return max_pool2d_forward(x, pool_h, pool_w, stride, pad)[0]


def conv2d_max_pool2d(
    x: ArrayLike,
    W: ArrayLike,
    b: ArrayLike,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    pool_h: int,
    pool_w: int,
    pool_stride: IntPair = 1,
    pool_pad: IntPair = 0,
    relu: bool = False,
) -> FloatArray:
    """What the fused kernel computes, as the two passes it fuses: :func:`max_pool2d` of
    :func:`conv2d_forward` (with ``relu``)."""
    y = conv2d_forward(x, W, b, stride, pad, relu=relu)
    return max_pool2d(y, pool_h, pool_w, pool_stride, pool_pad)


def max_pool2d_backward_from_input(
    dout: ArrayLike,
    x: ArrayLike,
    pool_h: int,
    pool_w: int,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    through_relu: bool = False,
) -> FloatArray:
    """:func:`max_pool2d_backward` with the winners found again from the forward input ``x``
    (and, with ``through_relu``, ``x`` as the ``relu_output``)."""
    dt = _compute_dtype(dout, x)
    dout, x = as_float_array(dout, "dout", dt), as_float_array(x, "x", dt)
    through_relu = as_flag(through_relu, "through_relu")
    _, argmax = max_pool2d_forward(x, pool_h, pool_w, stride, pad)
    if dout.shape != argmax.shape:
        raise ValueError(f"dout must have shape {argmax.shape}, got {dout.shape}")
    return max_pool2d_backward(dout, argmax, x.shape, relu_output=x if through_relu else None)


def avg_pool2d_forward(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """Average pooling; padded positions count as zeros, every window divides by
    ``pool_h * pool_w``. x: (N, C, H, W). Returns y: (N, C, OH, OW)."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    pool_h, pool_w, _, _, (out_h, out_w) = _pool_geometry(x, pool_h, pool_w, stride, pad)
    N, C, _H, _W = x.shape
    windows = _pool_windows(x, pool_h, pool_w, stride, pad)
    y = windows.sum(axis=1) / (pool_h * pool_w)
    return _rows_to_nchw(y, N, C, out_h, out_w).astype(dt)


def avg_pool2d_backward(
    dout: ArrayLike,
    input_shape: Sequence[int],
    pool_h: int,
    pool_w: int,
    stride: IntPair = 1,
    pad: IntPair = 0,
) -> FloatArray:
    """Gradient of :func:`avg_pool2d_forward`: every tap of a window receives
    ``dout / (pool_h * pool_w)``, folded back with col2im. dout: (N, C, OH, OW); returns
    dx: input_shape."""
    dt = _compute_dtype(dout)
    dout = _as_float64(dout, dt, "dout")
    N, C, H, W = as_input_shape(input_shape)
    pool_h, pool_w = as_positive_int(pool_h, "pool_h"), as_positive_int(pool_w, "pool_w")
    _, _, (out_h, out_w) = _window_geometry(
        (N, C, H, W), "input_shape", pool_h, pool_w, "pool (pool_h, pool_w)", stride, pad
    )
    if dout.shape != (N, C, out_h, out_w):
        raise ValueError(f"dout must have shape {(N, C, out_h, out_w)}, got {dout.shape}")
    share = dout.transpose(0, 2, 3, 1).reshape(-1, 1) / (pool_h * pool_w)  # (N*OH*OW*C, 1)
    _check_affordable((N * out_h * out_w, C * pool_h * pool_w), "the column gradient")
    dcol = np.broadcast_to(share, (share.shape[0], pool_h * pool_w)).reshape(
        N * out_h * out_w, C * pool_h * pool_w
    )
    return _col2im_f64(dcol, (N, C, H, W), pool_h, pool_w, stride, pad).astype(dt)


def _check_planes(x: Array, name: str) -> None:
    """A 4-D (N, C, H, W) array with C, H, W >= 1 (as the compiled core requires)."""
    _check_4d(x, name)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {x.shape}")


def global_avg_pool2d_forward(x: ArrayLike) -> FloatArray:
    """The mean of each (H, W) plane: x (N, C, H, W) -> (N, C)."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    _check_planes(x, "x")
    means: FloatArray = x.mean(axis=(2, 3)).astype(dt)
    return means


def global_avg_pool2d_backward(dout: ArrayLike, input_shape: Sequence[int]) -> FloatArray:
    """Every dx[n, c, h, w] = dout[n, c] / (H*W). dout: (N, C); returns dx: input_shape."""
    dt = _compute_dtype(dout)
    dout = _as_float64(dout, dt, "dout")
    N, C, H, W = as_input_shape(input_shape)
    if dout.shape != (N, C):
        raise ValueError(f"dout must have shape {(N, C)}, got {dout.shape}")
    _check_affordable((N, C, H, W), "dx")
    return np.broadcast_to((dout / (H * W))[:, :, None, None], (N, C, H, W)).astype(dt)


# ----------------------------------------------------------------------------------------------
# Batch normalisation


def _channel_vector(value: object, dt: np.dtype[Any], name: str, channels: int) -> Array:
    arr = _as_float64(value, dt, name)
    if arr.shape != (channels,):
        raise ValueError(
            f"{name} must have shape ({channels},), one entry per channel, got {arr.shape}"
        )
    return arr


def _updated_in_place(value: object, dt: np.dtype[Any], name: str, channels: int) -> Array:
    """A running statistic that training overwrites: an ndarray of the compute dtype already,
    C-contiguous, writeable, of shape (C,)."""
    if not isinstance(value, np.ndarray) or value.dtype != dt:
        raise TypeError(
            f"{name} is updated in place when training, so it must be a numpy array of the compute "
            f"dtype {dt.name}, got {type(value).__name__}"
            + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
        )
    if not (value.flags.c_contiguous and value.flags.aligned):
        raise TypeError(f"{name} must be C-contiguous and aligned: it is updated in place")
    if value.shape != (channels,):
        raise ValueError(
            f"{name} must have shape ({channels},), one entry per channel, got {value.shape}"
        )
    if not value.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is updated in place")
    return value


def _per_channel(v: Array) -> Array:
    """A (C,) vector shaped to broadcast over (N, C, H, W)."""
    return v[None, :, None, None]


def batch_norm2d_forward(
    x: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    running_mean: ArrayLike,
    running_var: ArrayLike,
    *,
    train: bool,
    momentum: float,
    eps: float,
    unbiased: bool = False,
    relu: bool = False,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Batch normalisation per channel, from the definition: ``mean`` and the biased ``var`` of
    each channel's N*H*W values (``np.mean``, ``np.var``), ``invstd = 1 / sqrt(var + eps)``, both
    rounded to the compute dtype as returned, then ``y = (x - mean) * invstd * gamma + beta``
    evaluated in float64 from those values and rounded once (``relu``: then ``y <= 0`` becomes 0).
    Training updates running_mean/running_var in place, ``momentum * old + (1 - momentum) * batch``,
    the variance times m / (m - 1) when ``unbiased``; an empty batch leaves them and gives NaN
    mean and invstd. Inference uses the running statistics."""
    dt = _compute_dtype(x, gamma, beta, running_mean, running_var)
    train = as_flag(train, "train")
    x = _as_float64(x, dt, "x")
    _check_planes(x, "x")
    N, C, H, W = x.shape
    gamma, beta = _channel_vector(gamma, dt, "gamma", C), _channel_vector(beta, dt, "beta", C)
    if train:
        running_mean = _updated_in_place(running_mean, dt, "running_mean", C)
        running_var = _updated_in_place(running_var, dt, "running_var", C)
        if np.shares_memory(running_mean, running_var):
            raise ValueError(
                "running_mean and running_var must not share memory: both are updated in place"
            )
    else:
        running_mean = _channel_vector(running_mean, dt, "running_mean", C)
        running_var = _channel_vector(running_var, dt, "running_var", C)
    momentum, eps = as_real(momentum, "momentum"), as_real(eps, "eps")
    unbiased, relu = as_flag(unbiased, "unbiased"), as_flag(relu, "relu")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    m = N * H * W
    if train and unbiased and m == 1:
        raise ValueError(
            "unbiased: the running variance of a single value per channel is undefined (m = N*H*W = 1)"
        )
    with np.errstate(
        invalid="ignore", divide="ignore", over="ignore"
    ):  # NaN/inf pass through, as in the kernels
        if train:
            batch_mean = x.mean(axis=(0, 2, 3)) if m else np.full(C, np.nan)
            squares = ((x - _per_channel(batch_mean)) ** 2).sum(axis=(0, 2, 3))
            batch_var = squares / m if m else np.full(C, np.nan)
            mean, invstd = batch_mean.astype(dt), (1.0 / np.sqrt(batch_var + eps)).astype(dt)
            if m:
                old_mean, old_var = running_mean.astype(np.float64), running_var.astype(np.float64)
                running_var_batch = squares / (m - 1) if unbiased else batch_var
                running_mean[...] = momentum * old_mean + (1.0 - momentum) * batch_mean
                running_var[...] = momentum * old_var + (1.0 - momentum) * running_var_batch
        else:
            mean, invstd = running_mean.astype(dt), (1.0 / np.sqrt(running_var + eps)).astype(dt)
        mean64, invstd64 = mean.astype(np.float64), invstd.astype(np.float64)
        y = (
            (x - _per_channel(mean64)) * _per_channel(invstd64) * _per_channel(gamma)
            + _per_channel(beta)
        ).astype(dt)
    if relu:
        y = np.where(y <= 0, dt.type(0), y)
    return y, mean, invstd


def batch_norm2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    gamma: ArrayLike,
    mean: ArrayLike,
    invstd: ArrayLike,
    *,
    train: bool,
    relu_output: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Gradients of :func:`batch_norm2d_forward` from the formulas, in float64: with
    ``dy = dout`` (0 where ``relu_output <= 0``), ``xhat = (x - mean) * invstd``, m = N*H*W:
    ``dbeta = sum dy``, ``dgamma = sum dy * xhat``, ``dx = gamma * invstd / m * (m*dy - dbeta -
    xhat * dgamma)`` when training, ``dx = dy * gamma * invstd`` otherwise."""
    dt = _compute_dtype(dout, x, gamma, mean, invstd)
    dout, x = _as_float64(dout, dt, "dout"), _as_float64(x, dt, "x")
    _check_planes(x, "x")
    N, C, H, W = x.shape
    if dout.shape != x.shape:
        raise ValueError(f"dout must have shape {x.shape}, got {dout.shape}")
    gamma, mean = _channel_vector(gamma, dt, "gamma", C), _channel_vector(mean, dt, "mean", C)
    invstd = _channel_vector(invstd, dt, "invstd", C)
    train = as_flag(train, "train")
    dy = dout
    if relu_output is not None:
        gate = _as_float64(relu_output, dt, "relu_output")
        if gate.shape != x.shape:
            raise ValueError(f"relu_output must have shape {x.shape}, got {gate.shape}")
        dy = np.where(gate <= 0, 0.0, dout)
    m = N * H * W
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf pass through, as in the kernels
        xhat = (x - _per_channel(mean)) * _per_channel(invstd)
        dbeta = dy.sum(axis=(0, 2, 3))
        dgamma = (dy * xhat).sum(axis=(0, 2, 3))
        scale = _per_channel(gamma * invstd)
        if train and m:
            dx = scale / m * (m * dy - _per_channel(dbeta) - xhat * _per_channel(dgamma))
        else:
            dx = dy * scale
    return dx.astype(dt), dgamma.astype(dt), dbeta.astype(dt)


def fold_batch_norm(
    W: ArrayLike,
    b: ArrayLike | None,
    gamma: ArrayLike,
    beta: ArrayLike,
    running_mean: ArrayLike,
    running_var: ArrayLike,
    eps: float,
) -> tuple[FloatArray, FloatArray]:
    """``W * s[:, None, None, None]`` and ``(b - running_mean) * s + beta`` (b None: 0), with
    ``s = gamma / sqrt(running_var + eps)``, all in float64 and rounded once."""
    dt = _compute_dtype(W, gamma, beta, running_mean, running_var, *(() if b is None else (b,)))
    W = _as_float64(W, dt, "W")
    _check_4d(W, "W")
    FN = W.shape[0]
    gamma, beta = _channel_vector(gamma, dt, "gamma", FN), _channel_vector(beta, dt, "beta", FN)
    mean, var = (
        _channel_vector(running_mean, dt, "running_mean", FN),
        _channel_vector(running_var, dt, "running_var", FN),
    )
    bias = 0.0 if b is None else _channel_vector(b, dt, "b", FN)
    eps = as_real(eps, "eps")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scale = gamma / np.sqrt(var + eps)
        return (W * scale[:, None, None, None]).astype(dt), ((bias - mean) * scale + beta).astype(
            dt
        )


def add_forward(
    a: ArrayLike, b: ArrayLike, *, relu: bool = False, out: FloatArray | None = None
) -> FloatArray:
    """``a + b`` (same shapes), with ``relu`` then ``max(., 0)`` by relu_forward's rule."""
    dt = _compute_dtype(a, b)
    a, b = _as_float64(a, dt, "a"), _as_float64(b, dt, "b")
    _same_shape(a, b, "a", "b")
    relu = as_flag(relu, "relu")
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.asarray(a + b).astype(dt)
    return _into(np.where(y <= 0, dt.type(0), y) if relu else y, out)


# ----------------------------------------------------------------------------------------------
# Activations


def _same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )


def relu_forward(x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """``max(x, 0)`` elementwise, any shape: entries ``x <= 0`` become 0 (as in DLfS's
    ``x[x <= 0] = 0``), NaN propagates."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    return _into(np.where(x <= 0, 0.0, x).astype(dt), out)


def _into(result: Array, out: object) -> Array:
    """``result``, or ``result`` copied into ``out`` (then ``out``), which must be a writeable array
    of the result's dtype and shape (as in :mod:`tinyconv.functional`: it is never converted)."""
    if out is None:
        return result
    if not isinstance(out, np.ndarray) or out.dtype != result.dtype:
        raise TypeError(
            f"out must be a numpy array of dtype {result.dtype}, got {type(out).__name__}"
            + (f" of dtype {out.dtype}" if isinstance(out, np.ndarray) else "")
        )
    if out.shape != result.shape:
        raise ValueError(f"out must have shape {result.shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    out[...] = result
    return out


def relu_backward(dout: ArrayLike, x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """The gradient passes where the forward pass let ``x`` through (``x > 0`` or NaN), else 0."""
    dt = _compute_dtype(dout, x)
    dout, x = _as_float64(dout, dt, "dout"), _as_float64(x, dt, "x")
    _same_shape(dout, x, "dout", "x")
    return _into(np.where(x <= 0, 0.0, dout).astype(dt), out)


def sigmoid_forward(x: ArrayLike) -> FloatArray:
    """``1 / (1 + exp(-x))`` elementwise, without overflow: with ``z = exp(-|x|)`` (never above 1),
    sigmoid is ``1 / (1 + z)`` for x >= 0 and ``z / (1 + z)`` for x < 0."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(dt)


def sigmoid_backward(dout: ArrayLike, y: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """``dout * y * (1 - y)``, where ``y`` is the forward output."""
    dt = _compute_dtype(dout, y)
    dout, y = _as_float64(dout, dt, "dout"), _as_float64(y, dt, "y")
    _same_shape(dout, y, "dout", "y")
    return _into((dout * y * (1.0 - y)).astype(dt), out)


# ----------------------------------------------------------------------------------------------
# Softmax and cross-entropy


def _log_softmax_rows(x: Array) -> Array:
    """``x - logsumexp(x)`` per row (2-D float64), shifted by the row maximum so exp never
    overflows."""
    shifted = x - x.max(axis=1, keepdims=True)
    log_softmax: Array = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_softmax


def softmax(x: ArrayLike) -> FloatArray:
    """Row-wise softmax of a 2-D array (a 1-D array is one row), stable for large logits."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be 1- or 2-dimensional, got shape {x.shape}")
    if x.shape[-1] < 1:
        raise ValueError(f"x must have at least one class column, got shape {x.shape}")
    rows = np.atleast_2d(x)
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    y = shifted / shifted.sum(axis=1, keepdims=True)
    probabilities: FloatArray = y.reshape(x.shape).astype(dt)
    return probabilities


def _check_logits(x: Array, name: str) -> None:
    """(N, K) with N >= 1 (the loss is a mean over the rows, as in the compiled core: an empty batch
    has none) and K >= 1."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"{name} must hold at least one row and one class column to average the loss over, "
            f"got shape {x.shape}"
        )


def _targets(t: ArrayLike, x: Array, dt: np.dtype[Any]) -> Array:
    """The target distribution as an (N, K) float64 array: one-hot rows for integer labels (N,),
    the rows themselves for an (N, K) array."""
    N, K = x.shape
    if ndim_of(t, "t") == 2:
        target = _as_float64(t, dt, "t")
        if target.shape != (N, K):
            raise ValueError(f"t must have shape {(N, K)}, got {target.shape}")
        return target
    labels = as_index_array(t, "t")
    if labels.shape != (N,):
        raise ValueError(f"t must have shape ({N},) or ({N}, {K}), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels t must lie in [0, {K})")
    onehot = np.zeros((N, K))
    onehot[np.arange(N), labels] = 1.0
    return onehot


def softmax_cross_entropy_forward(x: ArrayLike, t: ArrayLike) -> tuple[float, FloatArray]:
    """Mean cross-entropy of ``softmax(x)`` against ``t``: ``-mean_n sum_k t[n, k] *
    log_softmax(x)[n, k]``, with the log-softmax from a log-sum-exp (no ``log(0)``).

    x: (N, K) logits; t: (N,) integer labels in [0, K) or (N, K) target rows. Returns (loss, y),
    loss a Python float and y = softmax(x).
    """
    dt = _compute_dtype(x)
    x = _as_float64(x, dt, "x")
    _check_logits(x, "x")
    target = _targets(t, x, dt)
    log_y = _log_softmax_rows(x)
    # Only the terms with t != 0 contribute (0 * log y is 0 even where log y is very negative).
    per_sample = -np.where(target != 0, target * log_y, 0.0).sum(axis=1)
    loss = float(per_sample.mean())
    return loss, np.exp(log_y).astype(dt)


def softmax_cross_entropy_backward(y: ArrayLike, t: ArrayLike, dout: float = 1.0) -> FloatArray:
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * dout / N``."""
    dt = _compute_dtype(y)
    y = _as_float64(y, dt, "y")
    _check_logits(y, "y")
    target = _targets(t, y, dt)
    return ((y - target) * as_real(dout, "dout") / y.shape[0]).astype(dt)


# ----------------------------------------------------------------------------------------------
# Affine (fully connected)


def _flatten_batch(x: Array) -> Array:
    if x.ndim == 0:
        raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
    # The feature count spelled out (not -1), so that an empty batch (N = 0) still flattens.
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


def affine_forward(x: ArrayLike, W: ArrayLike, b: ArrayLike) -> FloatArray:
    """``x @ W + b``. x: (N, D) or (N, d1, d2, ...) flattened to (N, D); W: (D, M); b: (M,).
    Returns (N, M)."""
    dt = _compute_dtype(x, W, b)
    x, W, b = _as_float64(x, dt, "x"), _as_float64(W, dt, "W"), _as_float64(b, dt, "b")
    x2 = _flatten_batch(x)
    if W.ndim != 2 or W.shape[0] != x2.shape[1]:
        raise ValueError(f"W must have shape ({x2.shape[1]}, M), got {W.shape}")
    if b.shape != (W.shape[1],):
        raise ValueError(f"b must have shape ({W.shape[1]},), got {b.shape}")
    return (x2 @ W + b).astype(dt)


def affine_backward(
    dout: ArrayLike, x: ArrayLike, W: ArrayLike, *, need_dx: bool = True
) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of :func:`affine_forward`: ``dx = dout @ W.T`` (reshaped like x),
    ``dW = x.T @ dout``, ``db = sum_n dout``."""
    dt = _compute_dtype(dout, x, W)
    dout, x, W = _as_float64(dout, dt, "dout"), _as_float64(x, dt, "x"), _as_float64(W, dt, "W")
    need_dx = as_flag(need_dx, "need_dx")
    x2 = _flatten_batch(x)
    if W.ndim != 2 or W.shape[0] != x2.shape[1]:
        raise ValueError(f"W must have shape ({x2.shape[1]}, M), got {W.shape}")
    if dout.shape != (x2.shape[0], W.shape[1]):
        raise ValueError(f"dout must have shape {(x2.shape[0], W.shape[1])}, got {dout.shape}")
    dx = (dout @ W.T).reshape(x.shape)
    dW = x2.T @ dout
    db = dout.sum(axis=0)
    return (dx.astype(dt) if need_dx else None), dW.astype(dt), db.astype(dt)
