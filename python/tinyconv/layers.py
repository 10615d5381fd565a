"""Layers with ``forward``/``backward``, the API of *Deep Learning from Scratch* (DLfS),
``common/layers.py``.

Convolution, pooling, affine, activations and the softmax loss run in tinyconv's compiled kernels
(:mod:`tinyconv.functional`); dropout masks and batch-normalisation arithmetic are NumPy. Layers
with parameters keep **references** to the arrays they were given (``layer.W is W``), so an
optimizer that updates those arrays in place -- as every DLfS optimizer does -- changes the layer
too. Arrays that already have the compute dtype and are C-contiguous are passed to the kernels
without a copy.

The compute dtype of a call is float32 when every floating input (data and parameters) is float32
and float64 otherwise; tinyconv's networks keep everything in one dtype so nothing is converted.

Differences from DLfS, all deliberate:

* ``backward`` never modifies ``dout`` in place (DLfS's ``Relu.backward`` zeroes entries of it).
* ``SoftmaxWithLoss`` computes the loss from the logits as a log-sum-exp instead of
  ``log(softmax + 1e-7)``: the same value to about ``1e-7``, and finite for any logits.
  ``backward(dout)`` scales the gradient by ``dout`` (DLfS ignores ``dout``; the default 1 agrees).
* ``Pooling`` takes ``mode="avg"`` for average pooling; max pooling with ``pad > 0`` treats the
  padding as ``-inf`` (DLfS pads with zeros). DLfS's own networks use ``pad=0``.
* ``BatchNormalization`` also normalises per channel (when ``gamma`` has one entry per channel of
  a 4-D input), and its ``backward`` after a test-mode ``forward`` is the true gradient of that
  test-mode output.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import functional as F
from ._validate import float_dtype

__all__ = [
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
]

RandomSource = Union[np.random.Generator, np.random.RandomState, None]

# DLfS writes the batch-norm epsilon as 10e-7 (= 1e-6); kept for identical results.
_BN_EPS = 10e-7


def _bias(b, size: int):
    """``b`` as given when it is a vector; a scalar bias (DLfS's ch07/apply_filter.py passes
    ``b = 0``) is broadcast to one entry per output."""
    return b if np.ndim(b) == 1 else np.full(size, b, dtype=np.result_type(b, np.float32))


def _writable_like(dout, other) -> Optional[np.ndarray]:
    """``dout`` when a backward pass may overwrite it in place (a C-contiguous, writeable float
    array of the compute dtype of dout and ``other``), else None."""
    if not (isinstance(dout, np.ndarray) and dout.flags.c_contiguous and dout.flags.writeable
            and dout.dtype.isnative):
        return None
    return dout if dout.dtype == float_dtype(dout, other) and dout.dtype.kind == "f" else None


class Relu:
    """``max(x, 0)``. Keeps the forward input for the backward pass."""

    def __init__(self):
        self.x: Optional[np.ndarray] = None

    def forward(self, x, overwrite_x: bool = False):
        """``max(x, 0)``; ``x`` is left alone unless ``overwrite_x`` (networks pass it for their own
        temporaries: the result then goes into x's memory, and ``self.x`` keeps the result, which
        blocks the gradient at exactly the same entries as the input would: ``max(x, 0) <= 0``
        where ``x <= 0``, and NaN stays NaN)."""
        out = _writable_like(x, x) if overwrite_x else None
        result = F.relu_forward(x, out=out)
        self.x = result if out is not None else x
        return result

    def forward_applied(self, out):
        """Records ``out``, a result the layer before already passed through ``max(., 0)`` (a
        convolution with ``relu=True``), as this layer's forward pass: the backward pass masks by
        it exactly as by the input."""
        self.x = out
        return out

    def backward(self, dout, overwrite_dout: bool = False):
        """dx; ``dout`` is left alone unless ``overwrite_dout`` (networks pass it for their own
        temporaries: the result then goes into dout's memory, as DLfS's in-place ``Relu`` does,
        and no new array is made per step)."""
        out = _writable_like(dout, self.x) if overwrite_dout else None
        return F.relu_backward(dout, self.x, out=out)

    @property
    def mask(self) -> Optional[np.ndarray]:
        """DLfS's ``mask``: True where the forward input was ``<= 0`` (the gradient is blocked)."""
        return None if self.x is None else np.asarray(self.x) <= 0


class Sigmoid:
    """``1 / (1 + exp(-x))``. Keeps the output (``out``) for the backward pass."""

    def __init__(self):
        self.out: Optional[np.ndarray] = None

    def forward(self, x):
        self.out = F.sigmoid_forward(x)
        return self.out

    def backward(self, dout):
        return F.sigmoid_backward(dout, self.out)


class Affine:
    """Fully connected layer ``x @ W + b``; ``x`` of any shape ``(N, ...)`` is flattened to
    ``(N, D)`` and ``dx`` comes back in ``x``'s original shape.

    W: (D, M), b: (M,). After ``backward``: ``dW`` (D, M) and ``db`` (M,).
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x: Optional[np.ndarray] = None
        self.original_x_shape: Optional[Tuple[int, ...]] = None
        self.dW: Optional[np.ndarray] = None
        self.db: Optional[np.ndarray] = None

    def forward(self, x):
        out = F.affine_forward(x, self.W, _bias(self.b, np.shape(self.W)[-1]))
        self.x = x
        self.original_x_shape = np.shape(x)
        return out

    def backward(self, dout, need_dx: bool = True):
        """Sets ``dW``/``db`` and returns dx (None with ``need_dx=False``, which skips its GEMM)."""
        dx, self.dW, self.db = F.affine_backward(dout, self.x, self.W, need_dx=need_dx)
        return dx


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss.

    ``forward(x, t)``: logits ``x`` (N, K) (or one row (K,)) and targets ``t``, integer labels (N,)
    or one-hot rows (N, K); returns the loss and keeps ``loss``, ``y`` (softmax output) and ``t``.
    ``backward(dout=1)`` returns ``dout * (y - onehot(t)) / N``.
    """

    def __init__(self):
        self.loss: Optional[float] = None
        self.y: Optional[np.ndarray] = None
        self.t = None
        self._single_row = False

    def forward(self, x, t):
        x = np.asarray(x)
        t_arr = np.asarray(t)
        self._single_row = x.ndim == 1
        if self._single_row:  # one sample, as DLfS's cross_entropy_error accepts
            x = x.reshape(1, -1)
            t_arr = t_arr.reshape(1, -1) if t_arr.size == x.size else t_arr.reshape(1)
        loss, self.y = F.softmax_cross_entropy_forward(x, t_arr)
        self.t = t_arr
        self.loss = loss
        return loss

    def backward(self, dout=1):
        dx = F.softmax_cross_entropy_backward(self.y, self.t, dout)
        return dx[0] if self._single_row else dx


class Dropout:
    """Dropout (http://arxiv.org/abs/1207.0580), DLfS's variant: in training each unit is kept
    with probability ``1 - dropout_ratio`` (kept units are *not* rescaled); at test time every
    output is scaled by ``1 - dropout_ratio`` instead.

    Masks come from ``np.random.rand`` as in DLfS (so ``np.random.seed`` reproduces them), or from
    ``rng`` (a ``numpy.random.Generator`` or ``RandomState``) when given.
    """

    def __init__(self, dropout_ratio: float = 0.5, rng: RandomSource = None):
        self.dropout_ratio = dropout_ratio
        self.rng = rng
        self.mask: Optional[np.ndarray] = None

    def forward(self, x, train_flg: bool = True):
        x = np.asarray(x)
        if train_flg:
            source = np.random if self.rng is None else self.rng
            self.mask = source.random(x.shape) > self.dropout_ratio
            return x * self.mask
        # A Python float keeps float32 input float32.
        return x * (1.0 - float(self.dropout_ratio))

    def backward(self, dout):
        return np.asarray(dout) * self.mask


class BatchNormalization:
    """Batch normalisation (http://arxiv.org/abs/1502.03167) with DLfS's formulas and running
    statistics (``running = momentum * running + (1 - momentum) * batch``; epsilon 1e-6; the
    variance is the biased batch variance; the running variance starts at zero, as in DLfS).

    The size of ``gamma`` decides what is normalised:

    * one entry per feature -- ``gamma.size == prod(x.shape[1:])`` -- normalises each feature over
      the batch: DLfS's behaviour, also for 4-D input, which DLfS flattens to (N, C*H*W);
    * one entry per channel of a 4-D input -- ``gamma.size == C`` -- normalises each channel over
      the batch and all positions (spatial batch norm, as in convolutional networks).

    ``forward(x, train_flg=True)`` uses batch statistics and updates the running ones; with
    ``train_flg=False`` it uses the running statistics. After ``backward``: ``dgamma``, ``dbeta``.
    Running statistics are updated in place once they exist, so references to them stay valid.
    """

    def __init__(self, gamma, beta, momentum: float = 0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape: Optional[Tuple[int, ...]] = None
        self.running_mean = running_mean
        self.running_var = running_var
        # Saved by forward for backward.
        self.batch_size: Optional[int] = None  # number of values averaged per statistic
        self.xc: Optional[np.ndarray] = None
        self.xn: Optional[np.ndarray] = None
        self.std: Optional[np.ndarray] = None
        self.dgamma: Optional[np.ndarray] = None
        self.dbeta: Optional[np.ndarray] = None
        self._train = True
        self._axes: Tuple[int, ...] = (0,)
        self._param_shape: Tuple[int, ...] = ()

    def _layout(self, x: np.ndarray) -> np.ndarray:
        """``x`` reshaped so the statistics reduce over ``self._axes``: (N, D) per feature or
        (N, C, H*W) per channel; sets the axes and the broadcast shape of the parameters."""
        n_params = np.size(self.gamma)
        if x.ndim < 2:
            raise ValueError(f"BatchNormalization needs input with a batch dimension, got shape {x.shape}")
        features = int(np.prod(x.shape[1:]))
        if n_params == features:
            self._axes, self._param_shape = (0,), (features,)
            return x.reshape(x.shape[0], features)
        if x.ndim == 4 and n_params == x.shape[1]:
            self._axes, self._param_shape = (0, 2), (x.shape[1], 1)
            return x.reshape(x.shape[0], x.shape[1], -1)
        raise ValueError(
            f"gamma has {n_params} entries but the input {x.shape} has {features} features"
            + (f" and {x.shape[1]} channels" if x.ndim == 4 else "")
        )

    def forward(self, x, train_flg: bool = True):
        x = np.asarray(x)
        self.input_shape = x.shape
        x2 = self._layout(x)
        out = self._forward(x2, train_flg)
        return out.reshape(self.input_shape)

    def _running_update(self, running: Optional[np.ndarray], batch_value: np.ndarray) -> np.ndarray:
        # momentum * running + (1 - momentum) * batch, in DLfS's evaluation order; in place when
        # the running array can hold the result, so outside references (a network's state) stay live.
        if (isinstance(running, np.ndarray) and running.shape == batch_value.shape
                and running.dtype == batch_value.dtype and running.flags.writeable):
            running *= self.momentum
            running += (1 - self.momentum) * batch_value
            return running
        return self.momentum * running + (1 - self.momentum) * batch_value

    def _forward(self, x: np.ndarray, train_flg: bool) -> np.ndarray:
        shape = self._param_shape
        gamma = np.reshape(self.gamma, shape)
        beta = np.reshape(self.beta, shape)
        stat_size = shape[0]
        if self.running_mean is None:
            dtype = np.result_type(self.gamma, x) if np.result_type(self.gamma, x).kind == "f" else np.float64
            self.running_mean = np.zeros(stat_size, dtype=dtype)
            self.running_var = np.zeros(stat_size, dtype=dtype)

        self._train = bool(train_flg)
        if train_flg:
            axes = self._axes
            mu = x.mean(axis=axes)
            xc = x - mu.reshape(shape)
            var = np.mean(xc ** 2, axis=axes)
            std = np.sqrt(var.reshape(shape) + _BN_EPS)
            xn = xc / std
            self.batch_size = x.size // stat_size
            self.running_mean = self._running_update(self.running_mean, mu)
            self.running_var = self._running_update(self.running_var, var)
        else:
            xc = x - np.reshape(self.running_mean, shape)
            std = np.sqrt(np.reshape(self.running_var, shape) + _BN_EPS)
            xn = xc / std
        self.xc, self.xn, self.std = xc, xn, std
        return gamma * xn + beta

    def backward(self, dout):
        dout = np.asarray(dout)
        dx = self._backward(dout.reshape(self.xn.shape))
        return dx.reshape(self.input_shape)

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        axes = self._axes
        gamma = np.reshape(self.gamma, self._param_shape)
        dbeta = dout.sum(axis=axes)
        dgamma = np.sum(self.xn * dout, axis=axes)
        dxn = gamma * dout
        if self._train:
            # DLfS's derivation through std, var and mu.
            dxc = dxn / self.std
            dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=axes)
            dvar = 0.5 * dstd.reshape(self._param_shape) / self.std
            dxc += (2.0 / self.batch_size) * self.xc * dvar
            dmu = np.sum(dxc, axis=axes)
            dx = dxc - dmu.reshape(self._param_shape) / self.batch_size
        else:
            # Test mode: the statistics are constants, so the layer is affine in x.
            dx = dxn / self.std
        self.dgamma = dgamma.reshape(np.shape(self.gamma))
        self.dbeta = dbeta.reshape(np.shape(self.beta))
        return dx


class Convolution:
    """2-D convolution (cross-correlation) in NCHW layout.

    W: (FN, C, FH, FW) filters, b: (FN,); ``stride`` and ``pad`` are an int or an (h, w) pair.
    ``forward(x)``: x (N, C, H, W) -> (N, FN, OH, OW) with ``OH = (H + 2*pad - FH) // stride + 1``.
    After ``backward``: ``dW`` and ``db``.
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x: Optional[np.ndarray] = None
        self.dW: Optional[np.ndarray] = None
        self.db: Optional[np.ndarray] = None

    def forward(self, x, relu: bool = False):
        """The convolution; with ``relu`` (networks pass it when a ReLU layer follows) its
        ``max(., 0)`` as well, applied as the outputs are written."""
        out = F.conv2d_forward(x, self.W, _bias(self.b, np.shape(self.W)[0]), self.stride, self.pad, relu=relu)
        self.x = x
        return out

    def backward(self, dout, need_dx: bool = True):
        """Sets ``dW``/``db`` and returns dx (None with ``need_dx=False``, which skips its GEMM
        and col2im: a network's first layer)."""
        dx, self.dW, self.db = F.conv2d_backward(dout, self.x, self.W, self.stride, self.pad, need_dx=need_dx)
        return dx


class Pooling:
    """2-D pooling over ``pool_h x pool_w`` windows, NCHW layout.

    ``mode="max"`` (DLfS's pooling) or ``mode="avg"`` (average; padding counts as zeros).
    ``forward(x)``: x (N, C, H, W) -> (N, C, OH, OW). Max pooling records, as DLfS does, where each
    window's maximum came from (``arg_max``: the flat index ``h * W + w`` of the winner in its
    plane) for the backward pass. ``forward(x, record_argmax=False)`` skips that (networks do so
    for inference, where it is wasted work and memory); a later ``backward`` then finds the winners
    again from the kept input, with the same result.
    """

    _MODES = ("max", "avg")

    def __init__(self, pool_h: int, pool_w: int, stride=1, pad=0, mode: str = "max"):
        if mode not in self._MODES:
            raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.mode = mode
        self.input_shape: Optional[Tuple[int, ...]] = None
        self.x: Optional[np.ndarray] = None
        self._arg_max: Optional[np.ndarray] = None

    @property
    def arg_max(self) -> Optional[np.ndarray]:
        """Flat in-plane index of each window's winner for the last forward input (max mode)."""
        if self.mode != "max" or self.x is None:
            return None
        if self._arg_max is None:
            self._arg_max = F.max_pool2d_forward(self.x, self.pool_h, self.pool_w, self.stride, self.pad)[1]
        return self._arg_max

    def forward(self, x, record_argmax: bool = True):
        if self.mode == "max":
            if record_argmax:
                out, self._arg_max = F.max_pool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
            else:
                out, self._arg_max = F.max_pool2d(x, self.pool_h, self.pool_w, self.stride, self.pad), None
            self.x = x
        else:
            out = F.avg_pool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.input_shape = np.shape(x)
        return out

    def backward(self, dout, through_relu: bool = False):
        """dx. ``through_relu`` (max mode; networks pass it when a ReLU feeds this layer): the
        input was that ReLU's output, and dx is the ReLU's backward pass as well, in one pass."""
        if self.mode == "max":
            if self._arg_max is not None:
                return F.max_pool2d_backward(dout, self._arg_max, self.input_shape,
                                             relu_output=self.x if through_relu else None)
            return F.max_pool2d_backward_from_input(dout, self.x, self.pool_h, self.pool_w, self.stride, self.pad,
                                                    through_relu=through_relu)
        if through_relu:
            raise ValueError("through_relu applies to max pooling only")
        return F.avg_pool2d_backward(dout, self.input_shape, self.pool_h, self.pool_w, self.stride, self.pad)
