"""Forward and backward functions of every compute kernel, as plain functions on NumPy arrays.

Layout is NCHW throughout. Each function accepts any array-like of real numbers (views, lists,
integer dtypes): inputs are converted explicitly to one compute dtype, float32 when every floating
input is float32 and float64 otherwise (see :func:`tinyconv._validate.float_dtype`), and outputs
come back in that dtype. ``stride`` and ``pad`` are an int or an ``(h, w)`` pair.

All work runs in the compiled core with the GIL released, on ``tinyconv.get_num_threads()`` threads;
results are bitwise identical for any thread count.

Shapes used below: ``x (N, C, H, W)``, filters ``W (FN, C, FH, FW)``, output
``(N, FN, OH, OW)`` with ``OH = (H + 2*pad_h - FH) // stride_h + 1`` (likewise ``OW``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import _core
from ._typing import ArrayLike, FloatArray, IntPair
from ._validate import as_channel_vectors as _channel_vectors
from ._validate import (
    as_flag,
    as_float_array,
    as_index_array,
    as_pair,
    as_positive_int,
    as_real,
    check_window,
    float_dtype,
    ndim_of,
)
from ._validate import as_input_shape as _input_shape

__all__ = [
    "add_forward",
    "affine_backward",
    "affine_forward",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "batch_norm2d_backward",
    "batch_norm2d_forward",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_max_pool2d",
    "fold_batch_norm",
    "gemm",
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_backward_from_input",
    "max_pool2d_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
]


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
    """``alpha * op(a) @ op(b) + beta * c`` for 2-D arrays, op = transpose when ``trans_*``.

    a: (M, K), or (K, M) with ``trans_a``; b: (K, N), or (N, K) with ``trans_b``; c: (M, N) or None
    (then ``beta`` must be 0). Returns a new (M, N) array; ``c`` is not modified.
    """
    dt = float_dtype(a, b) if c is None else float_dtype(a, b, c)
    return _core.gemm(
        as_float_array(a, "a", dt, ndim=2),
        as_float_array(b, "b", dt, ndim=2),
        None if c is None else as_float_array(c, "c", dt, ndim=2),
        as_real(alpha, "alpha"),
        as_real(beta, "beta"),
        as_flag(trans_a, "trans_a"),
        as_flag(trans_b, "trans_b"),
    )


# ----------------------------------------------------------------------------------------------
# Convolution


def _conv_args(
    x: ArrayLike, W: ArrayLike, b: ArrayLike, stride: IntPair, pad: IntPair
) -> tuple[FloatArray, FloatArray, FloatArray, tuple[int, int, int, int], tuple[int, int]]:
    """A forward convolution's arguments, checked: x, W, b in their compute dtype, (stride_h,
    stride_w, pad_h, pad_w) as the core takes them, and the output size (OH, OW)."""
    dt = float_dtype(x, W, b)
    x = as_float_array(x, "x", dt, ndim=4)
    W = as_float_array(W, "W", dt, ndim=4)
    b = as_float_array(b, "b", dt, ndim=1)
    (sh, sw), (ph, pw) = as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    out = check_window(
        x.shape, "x", (W.shape[2], W.shape[3]), "filter (FH, FW) of W", (sh, sw), (ph, pw)
    )
    return x, W, b, (sh, sw, ph, pw), out


def conv2d_forward(
    x: ArrayLike,
    W: ArrayLike,
    b: ArrayLike,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    relu: bool = False,
) -> FloatArray:
    """2-D convolution (cross-correlation, as DLfS): ``y[n, f] = sum_c x[n, c] * W[f, c] + b[f]``.

    x: (N, C, H, W); W: (FN, C, FH, FW); b: (FN,). Returns y: (N, FN, OH, OW). With ``relu``,
    ``relu_forward(y)`` instead, applied as the outputs leave the kernel (no second pass).
    """
    x, W, b, window, _ = _conv_args(x, W, b, stride, pad)
    return _core.conv2d_forward(x, W, b, *window, as_flag(relu, "relu"))


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
    """``max_pool2d(conv2d_forward(x, W, b, stride, pad, relu=relu), pool_h, pool_w, pool_stride,
    pool_pad)`` in one pass, for inference: each output plane of the convolution is pooled while
    it is still in cache and only the pooled planes are written (the convolution's output, often
    the largest tensor of a network, never reaches memory). The same values, bit for bit, as the
    two calls.

    x: (N, C, H, W); W: (FN, C, FH, FW); b: (FN,). Returns (N, FN, POH, POW), the pooled output.
    """
    x, W, b, conv_window, (oh, ow) = _conv_args(x, W, b, stride, pad)
    window = as_positive_int(pool_h, "pool_h"), as_positive_int(pool_w, "pool_w")
    pool_strides = as_pair(pool_stride, "pool_stride", 1)
    pool_pads = as_pair(pool_pad, "pool_pad", 0)
    check_window(
        (x.shape[0], W.shape[0], oh, ow),
        "the convolution's output",
        window,
        "pool (pool_h, pool_w)",
        pool_strides,
        pool_pads,
    )
    if pool_pads[0] >= window[0] or pool_pads[1] >= window[1]:
        raise ValueError(
            f"pool_pad {pool_pads} must be smaller than the pool {window} for max pooling: a "
            "window made only of padding has no maximum"
        )
    return _core.conv2d_max_pool_forward(
        x, W, b, *conv_window, as_flag(relu, "relu"), *window, *pool_strides, *pool_pads
    )


@overload
def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    W: ArrayLike,
    stride: IntPair = ...,
    pad: IntPair = ...,
    *,
    need_dx: Literal[True] = ...,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    W: ArrayLike,
    stride: IntPair = ...,
    pad: IntPair = ...,
    *,
    need_dx: bool,
) -> tuple[FloatArray | None, FloatArray, FloatArray]: ...
def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    W: ArrayLike,
    stride: IntPair = 1,
    pad: IntPair = 0,
    *,
    need_dx: bool = True,
) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of :func:`conv2d_forward`.

    dout: (N, FN, OH, OW); x: (N, C, H, W); W: (FN, C, FH, FW). Returns (dx, dW, db) with the
    shapes of x, W and (FN,). With ``need_dx=False`` dx is not computed and is None (a network's
    first layer: its input gradient is thrown away).
    """
    dt = float_dtype(dout, x, W)
    dout = as_float_array(dout, "dout", dt, ndim=4)
    x = as_float_array(x, "x", dt, ndim=4)
    W = as_float_array(W, "W", dt, ndim=4)
    (sh, sw), (ph, pw) = as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    check_window(x.shape, "x", (W.shape[2], W.shape[3]), "filter (FH, FW) of W", (sh, sw), (ph, pw))
    return _core.conv2d_backward(dout, x, W, sh, sw, ph, pw, as_flag(need_dx, "need_dx"))


# ----------------------------------------------------------------------------------------------
# Pooling


def _pool_args(
    input_shape: tuple[int, ...],
    input_name: str,
    pool_h: int,
    pool_w: int,
    stride: IntPair,
    pad: IntPair,
) -> tuple[int, int, int, int, int, int]:
    """(pool_h, pool_w, stride_h, stride_w, pad_h, pad_w), checked (also against the input's
    shape): the core's argument order."""
    (sh, sw), (ph, pw) = as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    window = as_positive_int(pool_h, "pool_h"), as_positive_int(pool_w, "pool_w")
    check_window(input_shape, input_name, window, "pool (pool_h, pool_w)", (sh, sw), (ph, pw))
    return (*window, sh, sw, ph, pw)


def max_pool2d_forward(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Max pooling. Padded positions never win (they act as -inf, like PyTorch; DLfS pads with
    zeros, which differs when a window's real values are all negative). Ties go to the first
    maximum in window order (row-major), as ``np.argmax``. Every window must hold at least one real
    input, so ``pad < pool`` in each direction.

    x: (N, C, H, W). Returns (y, argmax): y (N, C, OH, OW) and argmax (N, C, OH, OW) int64, the
    flat index ``h * W + w`` of the winner inside its input plane.
    """
    x = as_float_array(x, "x", float_dtype(x), ndim=4)
    window = _pool_args(x.shape, "x", pool_h, pool_w, stride, pad)
    return _core.max_pool2d_forward(x, *window, True)


def max_pool2d_backward(
    dout: ArrayLike,
    argmax: ArrayLike,
    input_shape: Sequence[int],
    *,
    relu_output: ArrayLike | None = None,
) -> FloatArray:
    """Gradient of :func:`max_pool2d_forward`: each ``dout`` value goes to its window's winner;
    winners of overlapping windows accumulate.

    dout: (N, C, OH, OW); argmax: (N, C, OH, OW) as returned by the forward pass;
    input_shape: (N, C, H, W). Returns dx: (N, C, H, W). ``relu_output``: when the pooled input
    was a ReLU's output, that input; dx is then the ReLU's backward pass too (nothing where
    ``relu_output <= 0``), the same values as :func:`relu_backward` applied after, in one pass.
    """
    dt = float_dtype(dout)
    dout = as_float_array(dout, "dout", dt, ndim=4)
    argmax = as_index_array(argmax, "argmax")
    n, c, h, w = _input_shape(input_shape)
    gate = None if relu_output is None else as_float_array(relu_output, "relu_output", dt, ndim=4)
    return _core.max_pool2d_backward(dout, argmax, n, c, h, w, gate)


def max_pool2d(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """The values of :func:`max_pool2d_forward` without the argmax array (faster, less memory:
    what inference needs). x: (N, C, H, W). Returns y: (N, C, OH, OW)."""
    x = as_float_array(x, "x", float_dtype(x), ndim=4)
    window = _pool_args(x.shape, "x", pool_h, pool_w, stride, pad)
    return _core.max_pool2d_forward(x, *window, False)[0]


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
    """Gradient of max pooling computed from the forward input ``x`` instead of a stored argmax:
    each window's winner is found again (same rule: first maximum, padding never wins) and
    receives its ``dout``. dout: (N, C, OH, OW); x: (N, C, H, W). Returns dx: (N, C, H, W).
    ``through_relu``: ``x`` is a ReLU's output, and dx is that ReLU's backward pass too."""
    dt = float_dtype(dout, x)
    dout = as_float_array(dout, "dout", dt, ndim=4)
    x = as_float_array(x, "x", dt, ndim=4)
    window = _pool_args(x.shape, "x", pool_h, pool_w, stride, pad)
    return _core.max_pool2d_backward_from_input(
        dout, x, *window, as_flag(through_relu, "through_relu")
    )


def avg_pool2d_forward(
    x: ArrayLike, pool_h: int, pool_w: int, stride: IntPair = 1, pad: IntPair = 0
) -> FloatArray:
    """Average pooling; padded positions count as zeros (``count_include_pad``, the DLfS and
    PyTorch default), so every window divides by ``pool_h * pool_w``.

    x: (N, C, H, W). Returns y: (N, C, OH, OW).
    """
    x = as_float_array(x, "x", float_dtype(x), ndim=4)
    window = _pool_args(x.shape, "x", pool_h, pool_w, stride, pad)
    return _core.avg_pool2d_forward(x, *window)


def avg_pool2d_backward(
    dout: ArrayLike,
    input_shape: Sequence[int],
    pool_h: int,
    pool_w: int,
    stride: IntPair = 1,
    pad: IntPair = 0,
) -> FloatArray:
    """Gradient of :func:`avg_pool2d_forward`. dout: (N, C, OH, OW); returns dx: input_shape."""
    dout = as_float_array(dout, "dout", float_dtype(dout), ndim=4)
    n, c, h, w = _input_shape(input_shape)
    window = _pool_args((n, c, h, w), "input_shape", pool_h, pool_w, stride, pad)
    return _core.avg_pool2d_backward(dout, n, c, h, w, *window)


def global_avg_pool2d_forward(x: ArrayLike) -> FloatArray:
    """The mean of each (H, W) plane (summed in float64 for float32 too): x (N, C, H, W) -> (N, C)."""
    x = as_float_array(x, "x", float_dtype(x), ndim=4)
    return _core.global_avg_pool2d_forward(x)


def global_avg_pool2d_backward(dout: ArrayLike, input_shape: Sequence[int]) -> FloatArray:
    """Gradient of :func:`global_avg_pool2d_forward`: ``dout[n, c] / (H*W)`` over each plane.
    dout: (N, C); input_shape: (N, C, H, W). Returns dx: input_shape."""
    dout = as_float_array(dout, "dout", float_dtype(dout), ndim=2)
    n, c, h, w = _input_shape(input_shape)
    return _core.global_avg_pool2d_backward(dout, n, c, h, w)


# ----------------------------------------------------------------------------------------------
# Batch normalisation


def _running_statistic(value: object, dt: np.dtype[np.floating[Any]], name: str) -> FloatArray:
    """A running statistic that training updates in place: never converted, so it must already be
    an ndarray of the compute dtype (the core checks layout, shape and writeability)."""
    if not isinstance(value, np.ndarray) or value.dtype != dt:
        raise TypeError(
            f"{name} is updated in place when training, so it must be a numpy array of the compute "
            f"dtype {np.dtype(dt).name}, got {type(value).__name__}"
            + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
        )
    if not (value.flags.c_contiguous and value.flags.aligned):
        raise TypeError(f"{name} must be C-contiguous and aligned: it is updated in place")
    return value


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
    """Batch normalisation per channel of an NCHW tensor (BatchNorm2d):
    ``y = (x - mean[c]) * invstd[c] * gamma[c] + beta[c]``, ``invstd = 1 / sqrt(var + eps)``.

    x: (N, C, H, W); gamma, beta, running_mean, running_var: (C,). Returns (y, mean, invstd):
    y like x, and the (C,) mean and invstd used (what :func:`batch_norm2d_backward` takes).

    ``train=True``: mean and the biased variance of the batch, per channel over its N*H*W values
    (two passes, summed in float64), and running_mean/running_var are updated IN PLACE as
    ``running = momentum * running + (1 - momentum) * batch``: ``momentum`` is the weight of the old
    value (DLfS's convention; PyTorch's momentum 0.1 is 0.9 here). They must therefore be writeable,
    C-contiguous arrays of the compute dtype. ``unbiased``: the variance that goes into
    running_var is multiplied by m / (m - 1), m = N*H*W (PyTorch's convention); m == 1 is then a
    ValueError, as in PyTorch. An empty batch (N == 0) leaves them as they are (as PyTorch does),
    and mean and invstd are NaN. ``train=False``: normalised with the running statistics, which
    are not modified. ``relu``: ``max(y, 0)`` in the same pass (the same bits as
    :func:`relu_forward` after it). ``momentum`` in [0, 1]; ``eps`` finite and > 0.
    The compute dtype is decided by all five arrays (float32 when every floating one is).
    Results are bitwise identical for any thread count.
    """
    dt = float_dtype(x, gamma, beta, running_mean, running_var)
    train = as_flag(train, "train")
    x = as_float_array(x, "x", dt, ndim=4)
    gamma, beta = _channel_vectors(x, dt, gamma=gamma, beta=beta)
    if train:
        running_mean = _running_statistic(running_mean, dt, "running_mean")
        running_var = _running_statistic(running_var, dt, "running_var")
    else:
        running_mean, running_var = _channel_vectors(
            x, dt, running_mean=running_mean, running_var=running_var
        )
    return _core.batch_norm2d_forward(
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        train,
        as_real(momentum, "momentum"),
        as_real(eps, "eps"),
        as_flag(unbiased, "unbiased"),
        as_flag(relu, "relu"),
    )


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
    """Gradients of :func:`batch_norm2d_forward`: (dx, dgamma, dbeta).

    dout, x: (N, C, H, W) (x the forward input); gamma, mean, invstd: (C,) (mean and invstd as
    the forward pass returned them). With ``xhat = (x - mean) * invstd`` and m = N*H*W per
    channel: ``dbeta = sum dy``, ``dgamma = sum dy * xhat``, and ``train=True``: the gradient
    through the batch statistics, ``dx = gamma * invstd / m * (m*dy - sum dy - xhat * sum dy*xhat)``;
    ``train=False``: the statistics are constants, ``dx = dy * gamma * invstd``.
    ``relu_output``: the forward output when it ran with ``relu=True``; ``dy`` is then ``dout``
    with zeros where ``relu_output <= 0`` (:func:`relu_backward`'s rule, in the same pass;
    ``dout`` is not modified). Otherwise ``dy = dout``. Only the sign of ``relu_output`` matters:
    it is converted to the compute dtype of the other five and does not take part in choosing it
    (as in :func:`max_pool2d_backward`).
    """
    dt = float_dtype(dout, x, gamma, mean, invstd)
    dout = as_float_array(dout, "dout", dt, ndim=4)
    x = as_float_array(x, "x", dt, ndim=4)
    gamma, mean, invstd = _channel_vectors(x, dt, gamma=gamma, mean=mean, invstd=invstd)
    gate = None if relu_output is None else as_float_array(relu_output, "relu_output", dt, ndim=4)
    return _core.batch_norm2d_backward(dout, x, gamma, mean, invstd, as_flag(train, "train"), gate)


def fold_batch_norm(
    W: ArrayLike,
    b: ArrayLike | None,
    gamma: ArrayLike,
    beta: ArrayLike,
    running_mean: ArrayLike,
    running_var: ArrayLike,
    eps: float,
) -> tuple[FloatArray, FloatArray]:
    """A convolution followed by an inference-mode :func:`batch_norm2d_forward`, as one
    convolution: ``W' = W * s[:, None, None, None]`` and ``b' = (b - running_mean) * s + beta``
    with ``s = gamma / sqrt(running_var + eps)``.

    W: (FN, C, FH, FW); b: (FN,) or None (a convolution without bias); gamma, beta, running_mean,
    running_var: (FN,); ``eps`` finite and > 0. Returns new arrays (W', b') in the compute dtype of
    all the arrays given. ``s`` is computed in float64 and rounded once; W' takes one pass over W.
    """
    arrays = (W, gamma, beta, running_mean, running_var) + (() if b is None else (b,))
    dt = float_dtype(*arrays)
    W = as_float_array(W, "W", dt, ndim=4)
    vectors = {
        "gamma": gamma,
        "beta": beta,
        "running_mean": running_mean,
        "running_var": running_var,
    }
    if b is not None:
        vectors["b"] = b
    checked = dict(zip(vectors, _channel_vectors(W, dt, channel_axis=0, **vectors)))
    eps = as_real(eps, "eps")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    as64 = {name: value.astype(np.float64) for name, value in checked.items()}
    with np.errstate(
        over="ignore", invalid="ignore", divide="ignore"
    ):  # NaN/inf pass through, as in the kernels
        scale = as64["gamma"] / np.sqrt(as64["running_var"] + eps)
        bias = as64["b"] if b is not None else 0.0
        b_folded = ((bias - as64["running_mean"]) * scale + as64["beta"]).astype(dt)
        W_folded = W * scale.astype(dt)[:, None, None, None]
    return W_folded, b_folded


# ----------------------------------------------------------------------------------------------
# Residual add


def add_forward(
    a: ArrayLike, b: ArrayLike, *, relu: bool = False, out: FloatArray | None = None
) -> FloatArray:
    """``a + b`` elementwise (the join of a residual block: body plus shortcut), a and b of the same
    shape; with ``relu``, ``max(a + b, 0)`` in the same pass (the same bits as :func:`relu_forward`
    after it). With ``out`` (a C-contiguous, writeable array of the compute dtype and shape, which
    may be ``a`` or ``b`` itself) the result is written there and ``out`` is returned.
    Backward: ``dout`` goes to both inputs unchanged; through the fused ReLU, it is
    ``relu_backward(dout, y)`` with y the output."""
    dt = float_dtype(a, b)
    return _core.add_forward(
        as_float_array(a, "a", dt),
        as_float_array(b, "b", dt),
        as_flag(relu, "relu"),
        _out_array(out, dt),
    )


# ----------------------------------------------------------------------------------------------
# Activations


def relu_forward(x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """``max(x, 0)`` elementwise, any shape (as DLfS: entries ``x <= 0`` become 0, NaN propagates).
    With ``out`` (which may be ``x`` itself) the result is written there and ``out`` is returned."""
    dt = float_dtype(x)
    return _core.relu_forward(as_float_array(x, "x", dt), _out_array(out, dt))


def _out_array(out: object, dt: np.dtype[np.floating[Any]], name: str = "out") -> FloatArray | None:
    """``out`` as given (it is written to, so it is never converted): None or a C-contiguous,
    writeable array of the compute dtype."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray) or out.dtype != dt:
        raise TypeError(
            f"{name} must be a numpy array of dtype {np.dtype(dt).name}, got {type(out).__name__}"
            + (f" of dtype {out.dtype}" if isinstance(out, np.ndarray) else "")
        )
    return out


def relu_backward(dout: ArrayLike, x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """``dout`` where ``x > 0`` (or NaN), else 0; dout and x have the same shape. With ``out``
    (which may be ``dout`` itself, as DLfS's in-place ``Relu.backward``) the result is written
    there and ``out`` is returned."""
    dt = float_dtype(dout, x)
    return _core.relu_backward(
        as_float_array(dout, "dout", dt), as_float_array(x, "x", dt), _out_array(out, dt)
    )


def sigmoid_forward(x: ArrayLike) -> FloatArray:
    """``1 / (1 + exp(-x))`` elementwise, computed without overflow for large ``|x|``."""
    x = as_float_array(x, "x", float_dtype(x))
    return _core.sigmoid_forward(x)


def sigmoid_backward(dout: ArrayLike, y: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """``dout * y * (1 - y)`` where ``y`` is the forward output (into ``out`` if given, which may
    be ``dout`` itself)."""
    dt = float_dtype(dout, y)
    return _core.sigmoid_backward(
        as_float_array(dout, "dout", dt), as_float_array(y, "y", dt), _out_array(out, dt)
    )


# ----------------------------------------------------------------------------------------------
# Softmax and loss


def softmax(x: ArrayLike) -> FloatArray:
    """Row-wise softmax of a 2-D array (a 1-D array is one row), stable for large logits."""
    x = as_float_array(x, "x", float_dtype(x), ndim=(1, 2))
    if x.ndim == 1:
        row: FloatArray = _core.softmax_forward(x[np.newaxis, :])[0]
        return row
    return _core.softmax_forward(x)


def _labels(
    t: ArrayLike, x: FloatArray, dt: np.dtype[np.floating[Any]]
) -> FloatArray | npt.NDArray[np.int64]:
    """Integer labels (N,) as int64, or targets (N, K) in the compute dtype."""
    if ndim_of(t, "t") == 1:
        return as_index_array(t, "t")
    if np.ndim(t) == 2:
        if np.shape(t) != x.shape:
            raise ValueError(f"t must have the shape of the logits {x.shape}, got {np.shape(t)}")
        with np.errstate(over="ignore"):
            targets = as_float_array(t, "t", dt, ndim=2)
        if not np.isfinite(targets).all() and np.isfinite(np.asarray(t, dtype=np.float64)).all():
            raise ValueError(f"t holds values too large for {np.dtype(dt).name}")
        return targets
    raise ValueError(f"t must be (N,) integer labels or (N, K) targets, got shape {np.shape(t)}")


def softmax_cross_entropy_forward(x: ArrayLike, t: ArrayLike) -> tuple[float, FloatArray]:
    """Mean cross-entropy of ``softmax(x)`` against targets ``t``.

    x: (N, K) logits. t: (N,) integer labels in [0, K), or (N, K) target distributions (one-hot
    labels or any rows summing to 1). Computed as a log-sum-exp, stable for large logits (DLfS adds
    1e-7 inside the log instead). Returns (loss, y) with y = softmax(x), needed by the backward pass.
    """
    dt = float_dtype(x)
    x = as_float_array(x, "x", dt, ndim=2)
    return _core.softmax_cross_entropy_forward(x, _labels(t, x, dt))


def softmax_cross_entropy_backward(y: ArrayLike, t: ArrayLike, dout: float = 1.0) -> FloatArray:
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * dout / N``."""
    dt = float_dtype(y)
    y = as_float_array(y, "y", dt, ndim=2)
    return _core.softmax_cross_entropy_backward(y, _labels(t, y, dt), as_real(dout, "dout"))


# ----------------------------------------------------------------------------------------------
# Affine


def _features(x: FloatArray) -> int:
    """Features per sample; reshape(N, -1) cannot infer it when N == 0."""
    return int(np.prod(x.shape[1:], dtype=np.int64))


def affine_forward(x: ArrayLike, W: ArrayLike, b: ArrayLike) -> FloatArray:
    """``x @ W + b``. x: (N, D) (or (N, d1, d2, ...) flattened to (N, D)); W: (D, M); b: (M,).
    Returns (N, M)."""
    dt = float_dtype(x, W, b)
    x = as_float_array(x, "x", dt)
    if x.ndim == 0:
        raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
    x2 = x.reshape(x.shape[0], _features(x)) if x.ndim != 2 else x
    return _core.affine_forward(
        x2, as_float_array(W, "W", dt, ndim=2), as_float_array(b, "b", dt, ndim=1)
    )


@overload
def affine_backward(
    dout: ArrayLike, x: ArrayLike, W: ArrayLike, *, need_dx: Literal[True] = ...
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def affine_backward(
    dout: ArrayLike, x: ArrayLike, W: ArrayLike, *, need_dx: bool
) -> tuple[FloatArray | None, FloatArray, FloatArray]: ...
def affine_backward(
    dout: ArrayLike, x: ArrayLike, W: ArrayLike, *, need_dx: bool = True
) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of :func:`affine_forward`: (dx, dW, db), dx shaped like the original ``x``
    (None with ``need_dx=False``)."""
    dt = float_dtype(dout, x, W)
    dout = as_float_array(dout, "dout", dt, ndim=2)
    x = as_float_array(x, "x", dt)
    if x.ndim == 0:
        raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
    x2 = x.reshape(x.shape[0], _features(x)) if x.ndim != 2 else x
    dx, dW, db = _core.affine_backward(
        dout, x2, as_float_array(W, "W", dt, ndim=2), as_flag(need_dx, "need_dx")
    )
    return (None if dx is None else dx.reshape(x.shape)), dW, db
