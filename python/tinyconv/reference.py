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
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    # helpers
    "conv_output_size",
    "im2col",
    "col2im",
    # naive loops that follow the definitions
    "conv2d_naive",
    "max_pool2d_naive",
    "avg_pool2d_naive",
    # vectorised references, same signatures as tinyconv.functional
    "gemm",
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "max_pool2d",
    "max_pool2d_backward_from_input",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "softmax",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward",
    "affine_forward",
    "affine_backward",
]


# ----------------------------------------------------------------------------------------------
# Argument handling


def _compute_dtype(*values: object) -> np.dtype:
    """float32 when every floating input is at most 32 bits wide (and there is one), else float64."""
    dtypes = [np.asarray(v).dtype for v in values]
    floating = [d for d in dtypes if d.kind == "f"]
    if floating and all(d.itemsize <= 4 for d in floating):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _as_float64(value: object, dtype: np.dtype) -> np.ndarray:
    """``value`` converted to the compute ``dtype`` (rounding exactly as the kernels' inputs are
    rounded), then widened to float64 for the arithmetic."""
    return np.asarray(value).astype(dtype).astype(np.float64)


def _pair(value: object, name: str) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair of ints, as a tuple ``(h, w)``."""
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    h, w = value  # type: ignore[misc]
    if not (isinstance(h, numbers.Integral) and isinstance(w, numbers.Integral)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(h), int(w)


def conv_output_size(input_size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """Number of positions of a window of ``filter_size`` sliding with ``stride`` over an input of
    ``input_size`` padded by ``pad`` on each side (one dimension)."""
    return (input_size + 2 * pad - filter_size) // stride + 1


def _window_geometry(input_shape, filter_h: int, filter_w: int, stride, pad):
    """``(sh, sw), (ph, pw), (OH, OW)`` for a window sliding over ``input_shape`` (N, C, H, W)."""
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(pad, "pad")
    _, _, H, W = input_shape
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    if ph < 0 or pw < 0:
        raise ValueError(f"pad must be >= 0, got {pad!r}")
    if filter_h > H + 2 * ph or filter_w > W + 2 * pw:
        raise ValueError(f"window {filter_h}x{filter_w} is larger than the padded input {H + 2 * ph}x{W + 2 * pw}")
    out_h = conv_output_size(H, filter_h, sh, ph)
    out_w = conv_output_size(W, filter_w, sw, pw)
    return (sh, sw), (ph, pw), (out_h, out_w)


# ----------------------------------------------------------------------------------------------
# im2col / col2im (DLfS common/util.py, generalised)


def _im2col_f64(x: np.ndarray, filter_h: int, filter_w: int, stride, pad) -> np.ndarray:
    """im2col on a float64 array, no dtype handling."""
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(x.shape, filter_h, filter_w, stride, pad)
    img = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)], mode="constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w), dtype=np.float64)
    # For each tap (ky, kx) of the window, the strided slice of the padded image holds the value that
    # tap sees at every output position at once.
    for ky in range(filter_h):
        ky_max = ky + sh * out_h
        for kx in range(filter_w):
            kx_max = kx + sw * out_w
            col[:, :, ky, kx, :, :] = img[:, :, ky:ky_max:sh, kx:kx_max:sw]
    # Rows ordered (n, oh, ow), columns (c, fh, fw).
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def _col2im_f64(col: np.ndarray, input_shape, filter_h: int, filter_w: int, stride, pad) -> np.ndarray:
    """col2im on a float64 array, no dtype handling."""
    N, C, H, W = input_shape
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(input_shape, filter_h, filter_w, stride, pad)
    expected = (N * out_h * out_w, C * filter_h * filter_w)
    if col.shape != expected:
        raise ValueError(f"col must have shape {expected} for input_shape {tuple(input_shape)}, got {col.shape}")
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    # DLfS allocates stride - 1 extra rows/columns so that the slices below never run past the end.
    img = np.zeros((N, C, H + 2 * ph + sh - 1, W + 2 * pw + sw - 1), dtype=np.float64)
    # Overlapping windows add up; every pixel receives its contributions in (fh, fw) order.
    for ky in range(filter_h):
        ky_max = ky + sh * out_h
        for kx in range(filter_w):
            kx_max = kx + sw * out_w
            img[:, :, ky:ky_max:sh, kx:kx_max:sw] += col[:, :, ky, kx, :, :]
    # Contributions that landed in the padding are dropped.
    return np.ascontiguousarray(img[:, :, ph:H + ph, pw:W + pw])


def im2col(input_data, filter_h: int, filter_w: int, stride=1, pad=0) -> np.ndarray:
    """Unfold the sliding windows of a batch of images into the rows of a matrix.

    input_data: (N, C, H, W). Returns col: (N*OH*OW, C*FH*FW); row ``(n*OH + oh)*OW + ow`` holds the
    window at output position (oh, ow) of image n, flattened in (c, fh, fw) order. Padded positions
    read as zero.
    """
    dt = _compute_dtype(input_data)
    x = _as_float64(input_data, dt)
    if x.ndim != 4:
        raise ValueError(f"input_data must be 4-dimensional (N, C, H, W), got shape {x.shape}")
    return _im2col_f64(x, filter_h, filter_w, stride, pad).astype(dt)


def col2im(col, input_shape, filter_h: int, filter_w: int, stride=1, pad=0) -> np.ndarray:
    """Fold a column matrix back into images: the adjoint of :func:`im2col`.

    col: (N*OH*OW, C*FH*FW); input_shape: (N, C, H, W). Every entry of ``col`` is added to the pixel
    it was read from (overlapping windows accumulate; entries from the padding are dropped).
    Returns (N, C, H, W).
    """
    dt = _compute_dtype(col)
    c = _as_float64(col, dt)
    if c.ndim != 2:
        raise ValueError(f"col must be 2-dimensional, got shape {c.shape}")
    return _col2im_f64(c, tuple(input_shape), filter_h, filter_w, stride, pad).astype(dt)


# ----------------------------------------------------------------------------------------------
# Naive loops (the definitions)


def conv2d_naive(x, W, b, stride=1, pad=0) -> np.ndarray:
    """Convolution (cross-correlation) by explicit loops over every output element:
    ``y[n, f, i, j] = b[f] + sum_{c, p, q} xpad[n, c, i*sh + p, j*sw + q] * W[f, c, p, q]``."""
    dt = _compute_dtype(x, W, b)
    x, W, b = _as_float64(x, dt), _as_float64(W, dt), _as_float64(b, dt)
    N, C, H, Wd = x.shape
    FN, FC, FH, FW = W.shape
    if FC != C:
        raise ValueError(f"W has {FC} channels but x has {C}")
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(x.shape, FH, FW, stride, pad)
    xpad = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    y = np.empty((N, FN, out_h, out_w))
    for n in range(N):
        for f in range(FN):
            for i in range(out_h):
                for j in range(out_w):
                    window = xpad[n, :, i * sh:i * sh + FH, j * sw:j * sw + FW]
                    y[n, f, i, j] = np.sum(window * W[f]) + b[f]
    return y.astype(dt)


def _check_max_pool_pad(pool_h: int, pool_w: int, ph: int, pw: int) -> None:
    # With pad >= pool a window could lie entirely in the padding and have no winner.
    if ph >= pool_h or pw >= pool_w:
        raise ValueError(f"max pooling needs pad < pool size in each direction, got pad ({ph}, {pw}) "
                         f"for pool ({pool_h}, {pool_w})")


def _beats(value: float, best: float) -> bool:
    """Whether a later tap with ``value`` replaces the current ``best``: only a strictly larger
    value does (ties keep the first), and a NaN beats any number but not an earlier NaN (as
    ``np.argmax``, which treats NaN as the maximum)."""
    if np.isnan(best):
        return False
    return bool(value > best or np.isnan(value))


def max_pool2d_naive(x, pool_h: int, pool_w: int, stride=1, pad=0) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling by explicit loops over every window, visiting taps in row-major order and
    keeping the first strict maximum; padded taps are skipped (they act as -inf).

    Returns (y, argmax), both (N, C, OH, OW); argmax (int64) is the flat index ``h * W + w`` of
    each window's winner in its input plane. NaN wins (the first one), as in ``np.argmax``.
    """
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(x.shape, pool_h, pool_w, stride, pad)
    _check_max_pool_pad(pool_h, pool_w, ph, pw)
    y = np.empty((N, C, out_h, out_w))
    argmax = np.empty((N, C, out_h, out_w), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(out_h):
                for j in range(out_w):
                    best_value, best_index = None, -1
                    for p in range(pool_h):
                        for q in range(pool_w):
                            h, w = i * sh - ph + p, j * sw - pw + q
                            if not (0 <= h < H and 0 <= w < W):
                                continue  # padding never wins
                            value = x[n, c, h, w]
                            if best_value is None or _beats(value, best_value):
                                best_value, best_index = value, h * W + w
                    y[n, c, i, j] = best_value
                    argmax[n, c, i, j] = best_index
    return y.astype(dt), argmax


def avg_pool2d_naive(x, pool_h: int, pool_w: int, stride=1, pad=0) -> np.ndarray:
    """Average pooling by explicit loops: the sum of each window's real inputs (padding adds
    zero) divided by ``pool_h * pool_w``."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (out_h, out_w) = _window_geometry(x.shape, pool_h, pool_w, stride, pad)
    y = np.empty((N, C, out_h, out_w))
    for n in range(N):
        for c in range(C):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0
                    for p in range(pool_h):
                        for q in range(pool_w):
                            h, w = i * sh - ph + p, j * sw - pw + q
                            if 0 <= h < H and 0 <= w < W:
                                total += x[n, c, h, w]
                    y[n, c, i, j] = total / (pool_h * pool_w)
    return y.astype(dt)


# ----------------------------------------------------------------------------------------------
# GEMM


def gemm(a, b, c=None, *, alpha: float = 1.0, beta: float = 0.0, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """``alpha * op(a) @ op(b) + beta * c``, op = transpose when ``trans_*``.

    a: (M, K), or (K, M) with ``trans_a``; b: (K, N), or (N, K) with ``trans_b``; c: (M, N) or
    None (then ``beta`` must be 0). With ``beta == 0``, ``c`` is not read (NaNs in it do not
    propagate), as in BLAS. Returns a new (M, N) array.
    """
    dt = _compute_dtype(a, b) if c is None else _compute_dtype(a, b, c)
    A, B = _as_float64(a, dt), _as_float64(b, dt)
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"a and b must be 2-dimensional, got shapes {A.shape} and {B.shape}")
    op_a = A.T if trans_a else A
    op_b = B.T if trans_b else B
    if op_a.shape[1] != op_b.shape[0]:
        raise ValueError(f"inner dimensions differ: op(a) is {op_a.shape}, op(b) is {op_b.shape}")
    result = alpha * (op_a @ op_b)
    if c is None:
        if beta != 0:
            raise ValueError("beta must be 0 when c is None")
    elif beta != 0:
        C = _as_float64(c, dt)
        if C.shape != result.shape:
            raise ValueError(f"c must have shape {result.shape}, got {C.shape}")
        result = result + beta * C
    return result.astype(dt)


# ----------------------------------------------------------------------------------------------
# Convolution (DLfS Convolution layer)


def _conv_shapes(x: np.ndarray, W: np.ndarray) -> None:
    if x.ndim != 4 or W.ndim != 4:
        raise ValueError(f"x and W must be 4-dimensional, got shapes {x.shape} and {W.shape}")
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"W has {W.shape[1]} channels but x has {x.shape[1]}")


def conv2d_forward(x, W, b, stride=1, pad=0, *, relu: bool = False) -> np.ndarray:
    """Convolution as one matrix product: ``im2col(x) @ W_flat.T + b``.

    x: (N, C, H, W); W: (FN, C, FH, FW); b: (FN,). Returns y: (N, FN, OH, OW); with ``relu``,
    :func:`relu_forward` of it.
    """
    dt = _compute_dtype(x, W, b)
    x, W, b = _as_float64(x, dt), _as_float64(W, dt), _as_float64(b, dt)
    _conv_shapes(x, W)
    FN, C, FH, FW = W.shape
    if b.shape != (FN,):
        raise ValueError(f"b must have shape ({FN},), got {b.shape}")
    N = x.shape[0]
    _, _, (out_h, out_w) = _window_geometry(x.shape, FH, FW, stride, pad)
    col = _im2col_f64(x, FH, FW, stride, pad)  # (N*OH*OW, C*FH*FW)
    col_W = W.reshape(FN, -1).T                # (C*FH*FW, FN)
    out = col @ col_W + b                      # (N*OH*OW, FN)
    y = out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2).astype(dt)
    return relu_forward(y) if relu else y


def conv2d_backward(dout, x, W, stride=1, pad=0, *, need_dx: bool = True):
    """Gradients of :func:`conv2d_forward` (DLfS ``Convolution.backward``).

    dout: (N, FN, OH, OW); x: (N, C, H, W); W: (FN, C, FH, FW). Returns (dx, dW, db) shaped like
    x, W and (FN,).
    """
    dt = _compute_dtype(dout, x, W)
    dout, x, W = _as_float64(dout, dt), _as_float64(x, dt), _as_float64(W, dt)
    _conv_shapes(x, W)
    FN, C, FH, FW = W.shape
    N = x.shape[0]
    _, _, (out_h, out_w) = _window_geometry(x.shape, FH, FW, stride, pad)
    if dout.shape != (N, FN, out_h, out_w):
        raise ValueError(f"dout must have shape {(N, FN, out_h, out_w)}, got {dout.shape}")
    col = _im2col_f64(x, FH, FW, stride, pad)         # (N*OH*OW, C*FH*FW)
    col_W = W.reshape(FN, -1).T                       # (C*FH*FW, FN)
    dout_rows = dout.transpose(0, 2, 3, 1).reshape(-1, FN)  # (N*OH*OW, FN)
    db = dout_rows.sum(axis=0)
    dW = (col.T @ dout_rows).T.reshape(FN, C, FH, FW)
    dcol = dout_rows @ col_W.T                        # (N*OH*OW, C*FH*FW)
    dx = _col2im_f64(dcol, x.shape, FH, FW, stride, pad)
    return (dx.astype(dt) if need_dx else None), dW.astype(dt), db.astype(dt)


# ----------------------------------------------------------------------------------------------
# Pooling (DLfS Pooling layer, with -inf padding for max pooling)


def _pool_windows(x: np.ndarray, pool_h: int, pool_w: int, stride, pad) -> np.ndarray:
    """The pooling windows of x as rows: (N*OH*OW*C, pool_h*pool_w), rows ordered (n, oh, ow, c),
    taps in row-major window order. Padded taps hold 0."""
    return _im2col_f64(x, pool_h, pool_w, stride, pad).reshape(-1, pool_h * pool_w)


def _rows_to_nchw(rows: np.ndarray, N: int, C: int, out_h: int, out_w: int) -> np.ndarray:
    """(N*OH*OW*C,) values in (n, oh, ow, c) order -> (N, C, OH, OW)."""
    return rows.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)


def max_pool2d_forward(x, pool_h: int, pool_w: int, stride=1, pad=0) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling. Padded positions never win; ties go to the first maximum in row-major window
    order, and NaN wins, as in ``np.argmax``. Requires ``pad < pool`` in each direction.

    x: (N, C, H, W). Returns (y, argmax): y (N, C, OH, OW) and argmax (N, C, OH, OW) int64, the
    flat index ``h * W + w`` of each winner in its input plane.
    """
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-dimensional, got shape {x.shape}")
    N, C, H, W = x.shape
    _, (ph, pw), (out_h, out_w) = _window_geometry(x.shape, pool_h, pool_w, stride, pad)
    _check_max_pool_pad(pool_h, pool_w, ph, pw)

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


def max_pool2d_backward(dout, argmax, input_shape, *, relu_output=None) -> np.ndarray:
    """Gradient of :func:`max_pool2d_forward`: each ``dout`` value is added to its window's winner
    (winners of overlapping windows accumulate); with ``relu_output`` (the pooled input, a ReLU's
    output), then :func:`relu_backward` through that ReLU.

    dout, argmax: (N, C, OH, OW); input_shape: (N, C, H, W). Returns dx: (N, C, H, W).
    """
    dt = _compute_dtype(dout)
    dout = _as_float64(dout, dt)
    argmax = np.asarray(argmax).astype(np.int64)
    N, C, H, W = (int(d) for d in input_shape)
    if dout.ndim != 4 or dout.shape[:2] != (N, C):
        raise ValueError(f"dout must have shape ({N}, {C}, OH, OW), got {dout.shape}")
    if argmax.shape != dout.shape:
        raise ValueError(f"argmax must have the shape of dout {dout.shape}, got {argmax.shape}")
    if argmax.size and (argmax.min() < 0 or argmax.max() >= H * W):
        raise ValueError(f"argmax entries must lie in [0, {H * W})")
    dx_planes = np.zeros((N * C, H * W))
    plane = np.arange(N * C).repeat(dout.shape[2] * dout.shape[3])
    # np.add.at accumulates repeated indices (overlapping windows with the same winner).
    np.add.at(dx_planes, (plane, argmax.reshape(-1)), dout.reshape(-1))
    dx = dx_planes.reshape(N, C, H, W).astype(dt)
    return dx if relu_output is None else relu_backward(dx, np.asarray(relu_output, dtype=dt))


def max_pool2d(x, pool_h: int, pool_w: int, stride=1, pad=0) -> np.ndarray:
    """The values of :func:`max_pool2d_forward` alone."""
    return max_pool2d_forward(x, pool_h, pool_w, stride, pad)[0]


def max_pool2d_backward_from_input(dout, x, pool_h: int, pool_w: int, stride=1, pad=0, *,
                                   through_relu: bool = False) -> np.ndarray:
    """:func:`max_pool2d_backward` with the winners found again from the forward input ``x``
    (and, with ``through_relu``, ``x`` as the ``relu_output``)."""
    dt = _compute_dtype(dout, x)
    x = np.asarray(x, dtype=dt)
    _, argmax = max_pool2d_forward(x, pool_h, pool_w, stride, pad)
    return max_pool2d_backward(np.asarray(dout, dtype=dt), argmax, np.shape(x),
                               relu_output=x if through_relu else None)


def avg_pool2d_forward(x, pool_h: int, pool_w: int, stride=1, pad=0) -> np.ndarray:
    """Average pooling; padded positions count as zeros, every window divides by
    ``pool_h * pool_w``. x: (N, C, H, W). Returns y: (N, C, OH, OW)."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-dimensional, got shape {x.shape}")
    N, C, H, W = x.shape
    _, _, (out_h, out_w) = _window_geometry(x.shape, pool_h, pool_w, stride, pad)
    windows = _pool_windows(x, pool_h, pool_w, stride, pad)
    y = windows.sum(axis=1) / (pool_h * pool_w)
    return _rows_to_nchw(y, N, C, out_h, out_w).astype(dt)


def avg_pool2d_backward(dout, input_shape, pool_h: int, pool_w: int, stride=1, pad=0) -> np.ndarray:
    """Gradient of :func:`avg_pool2d_forward`: every tap of a window receives
    ``dout / (pool_h * pool_w)``, folded back with col2im. dout: (N, C, OH, OW); returns
    dx: input_shape."""
    dt = _compute_dtype(dout)
    dout = _as_float64(dout, dt)
    N, C, H, W = (int(d) for d in input_shape)
    _, _, (out_h, out_w) = _window_geometry((N, C, H, W), pool_h, pool_w, stride, pad)
    if dout.shape != (N, C, out_h, out_w):
        raise ValueError(f"dout must have shape {(N, C, out_h, out_w)}, got {dout.shape}")
    share = dout.transpose(0, 2, 3, 1).reshape(-1, 1) / (pool_h * pool_w)  # (N*OH*OW*C, 1)
    dcol = np.broadcast_to(share, (share.shape[0], pool_h * pool_w)).reshape(N * out_h * out_w, -1)
    return _col2im_f64(dcol, (N, C, H, W), pool_h, pool_w, stride, pad).astype(dt)


# ----------------------------------------------------------------------------------------------
# Activations


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def relu_forward(x, *, out=None) -> np.ndarray:
    """``max(x, 0)`` elementwise, any shape: entries ``x <= 0`` become 0 (as in DLfS's
    ``x[x <= 0] = 0``), NaN propagates."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    return _into(np.where(x <= 0, 0.0, x).astype(dt), out)


def _into(result: np.ndarray, out):
    """``result``, or ``result`` copied into ``out`` (then ``out``)."""
    if out is None:
        return result
    out[...] = result
    return out


def relu_backward(dout, x, *, out=None) -> np.ndarray:
    """The gradient passes where the forward pass let ``x`` through (``x > 0`` or NaN), else 0."""
    dt = _compute_dtype(dout, x)
    dout, x = _as_float64(dout, dt), _as_float64(x, dt)
    _same_shape(dout, x, "dout", "x")
    return _into(np.where(x <= 0, 0.0, dout).astype(dt), out)


def sigmoid_forward(x) -> np.ndarray:
    """``1 / (1 + exp(-x))`` elementwise, without overflow: with ``z = exp(-|x|)`` (never above 1),
    sigmoid is ``1 / (1 + z)`` for x >= 0 and ``z / (1 + z)`` for x < 0."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(dt)


def sigmoid_backward(dout, y, *, out=None) -> np.ndarray:
    """``dout * y * (1 - y)``, where ``y`` is the forward output."""
    dt = _compute_dtype(dout, y)
    dout, y = _as_float64(dout, dt), _as_float64(y, dt)
    _same_shape(dout, y, "dout", "y")
    return _into((dout * y * (1.0 - y)).astype(dt), out)


# ----------------------------------------------------------------------------------------------
# Softmax and cross-entropy


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    """``x - logsumexp(x)`` per row (2-D float64), shifted by the row maximum so exp never
    overflows."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(x) -> np.ndarray:
    """Row-wise softmax of a 2-D array (a 1-D array is one row), stable for large logits."""
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be 1- or 2-dimensional, got shape {x.shape}")
    rows = np.atleast_2d(x)
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    y = shifted / shifted.sum(axis=1, keepdims=True)
    return y.reshape(x.shape).astype(dt)


def _targets(t, x: np.ndarray, dt: np.dtype) -> np.ndarray:
    """The target distribution as an (N, K) float64 array: one-hot rows for integer labels (N,),
    the rows themselves for an (N, K) array."""
    N, K = x.shape
    t = np.asarray(t)
    if t.ndim == 2:
        if t.shape != (N, K):
            raise ValueError(f"t must have shape {(N, K)}, got {t.shape}")
        return _as_float64(t, dt)
    labels = t.astype(np.int64)
    if labels.shape != (N,):
        raise ValueError(f"t must have shape ({N},) or ({N}, {K}), got {t.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels t must lie in [0, {K})")
    onehot = np.zeros((N, K))
    onehot[np.arange(N), labels] = 1.0
    return onehot


def softmax_cross_entropy_forward(x, t) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``softmax(x)`` against ``t``: ``-mean_n sum_k t[n, k] *
    log_softmax(x)[n, k]``, with the log-softmax from a log-sum-exp (no ``log(0)``).

    x: (N, K) logits; t: (N,) integer labels in [0, K) or (N, K) target rows. Returns (loss, y),
    loss a Python float and y = softmax(x).
    """
    dt = _compute_dtype(x)
    x = _as_float64(x, dt)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-dimensional, got shape {x.shape}")
    target = _targets(t, x, dt)
    log_y = _log_softmax_rows(x)
    # Only the terms with t != 0 contribute (0 * log y is 0 even where log y is very negative).
    per_sample = -np.where(target != 0, target * log_y, 0.0).sum(axis=1)
    loss = float(per_sample.mean())
    return loss, np.exp(log_y).astype(dt)


def softmax_cross_entropy_backward(y, t, dout: float = 1.0) -> np.ndarray:
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * dout / N``."""
    dt = _compute_dtype(y)
    y = _as_float64(y, dt)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-dimensional, got shape {y.shape}")
    target = _targets(t, y, dt)
    return ((y - target) * float(dout) / y.shape[0]).astype(dt)


# ----------------------------------------------------------------------------------------------
# Affine (fully connected)


def _flatten_batch(x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:
        raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
    # The feature count spelled out (not -1), so that an empty batch (N = 0) still flattens.
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


def affine_forward(x, W, b) -> np.ndarray:
    """``x @ W + b``. x: (N, D) or (N, d1, d2, ...) flattened to (N, D); W: (D, M); b: (M,).
    Returns (N, M)."""
    dt = _compute_dtype(x, W, b)
    x, W, b = _as_float64(x, dt), _as_float64(W, dt), _as_float64(b, dt)
    x2 = _flatten_batch(x)
    if W.ndim != 2 or W.shape[0] != x2.shape[1]:
        raise ValueError(f"W must have shape ({x2.shape[1]}, M), got {W.shape}")
    if b.shape != (W.shape[1],):
        raise ValueError(f"b must have shape ({W.shape[1]},), got {b.shape}")
    return (x2 @ W + b).astype(dt)


def affine_backward(dout, x, W, *, need_dx: bool = True):
    """Gradients of :func:`affine_forward`: ``dx = dout @ W.T`` (reshaped like x),
    ``dW = x.T @ dout``, ``db = sum_n dout``."""
    dt = _compute_dtype(dout, x, W)
    dout, x, W = _as_float64(dout, dt), _as_float64(x, dt), _as_float64(W, dt)
    x2 = _flatten_batch(x)
    if W.ndim != 2 or W.shape[0] != x2.shape[1]:
        raise ValueError(f"W must have shape ({x2.shape[1]}, M), got {W.shape}")
    if dout.shape != (x2.shape[0], W.shape[1]):
        raise ValueError(f"dout must have shape {(x2.shape[0], W.shape[1])}, got {dout.shape}")
    dx = (dout @ W.T).reshape(x.shape)
    dW = x2.T @ dout
    db = dout.sum(axis=0)
    return (dx.astype(dt) if need_dx else None), dW.astype(dt), db.astype(dt)
