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

Beyond DLfS, layers for networks that branch (ResNets): :class:`BatchNorm2d` (PyTorch's
conventions), :class:`Linear` (PyTorch's weight layout), :class:`GlobalAvgPooling` and
:class:`ChannelPadShortcut`. The containers that run layers are in :mod:`tinyconv.containers`.

**The step protocol.** Besides DLfS's ``forward``/``backward``, every layer has
``step_forward(x, train, x_owned) -> (y, y_owned)`` and
``step_backward(dout, dout_owned, need_dx) -> (dx, dx_owned)``, which containers call. Ownership
is explicit: ``x_owned`` says the caller hands ``x`` over (nobody reads it after this call, so the
layer may overwrite it); ``y_owned`` says nobody else holds ``y`` and the layer will not read it
again, so the consumer may take it over. ``need_dx=False``: the caller throws ``dx`` away (the
layer may skip it and return ``None``). In inference (``train=False``) layers keep nothing for a
backward pass, so a network's intermediate tensors are freed as soon as the next layer has run.
Each layer also declares its arrays: ``parameter_slots`` -- ``(name, attribute, gradient
attribute)`` with PyTorch's names (``weight``, ``bias``) -- and ``buffer_slots`` -- ``(name,
attribute)`` for state that is not trained (running statistics). ``frozen`` holds the attributes
of parameters that get no gradient (see :meth:`tinyconv.network.Network.freeze`).
:class:`StepLayer` states this protocol for type checkers; containers hold ``StepLayer`` objects,
and :class:`Layer` is the base class that gives the declarations their defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import functional as F
from ._typing import Array, ArrayLike, DTypeLike, FloatArray, IntArray, Shape
from ._validate import as_pair, as_positive_int, check_window, float_dtype

# DLfS's common/layers.py does ``from common.functions import *`` and imports im2col/col2im, so
# its star import hands all of these (and ``np``) to a script; ours must too (see __all__).
from .functions import (
    cross_entropy_error,
    identity_function,
    mean_squared_error,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_loss,
    step_function,
)
from .summary import SummaryRow
from .util import col2im, im2col

__all__ = [
    "Affine",
    "BatchNorm2d",
    "BatchNormalization",
    "ChannelPadShortcut",
    "Convolution",
    "Dropout",
    "GlobalAvgPooling",
    "Linear",
    "Pooling",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "StepLayer",
    "StepResult",
    "col2im",
    "cross_entropy_error",
    "identity_function",
    "im2col",
    "mean_squared_error",
    # What ``from common.layers import *`` also gives a DLfS script: numpy, the functions of
    # common/functions.py and common/util.py's im2col/col2im.
    "np",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
]

RandomSource = Union[np.random.Generator, np.random.RandomState, None]
#: What a step returns: the output (``None`` from ``step_backward`` when ``need_dx`` was False)
#: and whether the caller now owns it.
StepResult = tuple[Optional[FloatArray], bool]
#: ``(name, attribute, gradient attribute)`` of a parameter; ``(name, attribute)`` of a buffer.
ParameterSlot = tuple[str, str, str]
BufferSlot = tuple[str, str]

_T = TypeVar("_T")


class StepLayer(Protocol):
    """The step protocol (module docstring): what a container calls and reads on each layer it
    runs. Every layer here and both containers satisfy it; a layer of your own does when it has
    these members (deriving from :class:`Layer` gives the declarations their defaults)."""

    frozen: frozenset[str]

    @property
    def parameter_slots(self) -> tuple[ParameterSlot, ...]: ...

    @property
    def buffer_slots(self) -> tuple[BufferSlot, ...]: ...

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult: ...

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult: ...


def _no_forward_pass(layer: object, what: str) -> RuntimeError:
    return RuntimeError(
        f"{type(layer).__name__}.backward needs a forward pass first (it has no {what})"
    )


def _saved(value: _T | None, layer: object, what: str) -> _T:
    """What ``forward`` kept for ``backward``; a clear error when there was no forward pass."""
    if value is None:
        raise _no_forward_pass(layer, what)
    return value


def _saved_input(value: ArrayLike | None, layer: object) -> ArrayLike:
    """The forward input a layer kept (as given: any array-like), as :func:`_saved`."""
    if value is None:
        raise _no_forward_pass(layer, "forward input")
    return value


class Layer:
    """What the step protocol (see the module docstring) needs beyond ``forward``/``backward``;
    parameter-free layers that keep nothing use these defaults."""

    parameter_slots: tuple[ParameterSlot, ...] = ()
    buffer_slots: tuple[BufferSlot, ...] = ()
    frozen: frozenset[str] = frozenset()

    def has_trainable_parameters(self) -> bool:
        return any(
            getattr(self, attribute) is not None and attribute not in self.frozen
            for _, attribute, _ in self.parameter_slots
        )

    # What a summary (tinyconv.summary) asks each layer. Shapes include the batch dimension.

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of the output for an input of ``input_shape``; the default is for layers
        that work value by value (activations, dropout, batch norm)."""
        return tuple(input_shape)

    def multiply_adds(self, input_shape: Shape) -> int:
        """Multiply-adds of one forward pass over an input of ``input_shape``, counted for the
        convolutions and fully connected layers only (see :mod:`tinyconv.summary`)."""
        return 0

    def parameter_count(self) -> tuple[int, int]:
        """(all parameters, those not frozen): the sizes of the arrays in ``parameter_slots``."""
        sizes = [
            (int(np.size(getattr(self, attribute))), attribute not in self.frozen)
            for _, attribute, _ in self.parameter_slots
            if getattr(self, attribute, None) is not None
        ]
        return sum(size for size, _ in sizes), sum(size for size, trainable in sizes if trainable)

    def summary_rows(self, input_shape: tuple[int, ...], name: str) -> list[SummaryRow]:
        """This layer's row of a summary (containers return theirs and their children's)."""
        output_shape = self.output_shape(input_shape)
        total, trainable = self.parameter_count()
        return [
            SummaryRow(
                name,
                type(self).__name__,
                tuple(input_shape),
                tuple(output_shape),
                total,
                trainable,
                self.multiply_adds(input_shape),
                True,
                self,
            )
        ]


def _checked_shape(
    input_shape: Sequence[int], ndim: int | None = None, what: str = "input"
) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints (the batch may be 0, the rest at least 1)."""
    try:
        dims = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{what} shape must be a tuple of ints, got {input_shape!r}") from None
    if not dims or (ndim is not None and len(dims) != ndim):
        raise ValueError(
            f"{what} shape must have {ndim or 'at least 1'} entries, got {input_shape!r}"
        )
    return tuple(
        as_positive_int(d, f"{what} shape[{i}]", minimum=0 if i == 0 else 1)
        for i, d in enumerate(dims)
    )


def _fully_connected_shape(
    layer_name: str, input_shape: Sequence[int], in_features: int, out_features: int
) -> tuple[int, int]:
    """(N, out_features) for an input (N, ...) flattened to (N, in_features)."""
    dims = _checked_shape(input_shape)
    features = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
    if features != in_features:
        raise ValueError(
            f"{layer_name} takes {in_features} features per sample, got input shape {dims} "
            f"({features} features)"
        )
    return dims[0], out_features


def _window_shape(
    input_shape: Sequence[int],
    window: tuple[int, int],
    stride: int | tuple[int, int],
    pad: int | tuple[int, int],
    what: str,
) -> tuple[int, int]:
    dims = _checked_shape(input_shape, 4)
    return check_window(
        dims, "input shape", window, what, as_pair(stride, "stride", 1), as_pair(pad, "pad", 0)
    )


# DLfS writes the batch-norm epsilon as 10e-7 (= 1e-6); kept for identical results.
_BN_EPS = 10e-7


def _bias(b: ArrayLike | None, size: int, like: ArrayLike | None = None) -> ArrayLike:
    """``b`` as given when it is a vector; a scalar bias (DLfS's ch07/apply_filter.py passes
    ``b = 0``) is broadcast to one entry per output; ``None`` (a layer without bias, as in
    ResNets) is zeros of ``like``'s dtype."""
    if b is None:
        return np.zeros(size, dtype=np.result_type(like, np.float32))
    return b if np.ndim(b) == 1 else np.full(size, b, dtype=np.result_type(b, np.float32))


def _writable_like(dout: object, other: object) -> FloatArray | None:
    """``dout`` when a backward pass may overwrite it in place (a C-contiguous, writeable float
    array of the compute dtype of dout and ``other``), else None."""
    if not (
        isinstance(dout, np.ndarray)
        and dout.flags.c_contiguous
        and dout.flags.writeable
        and dout.dtype.isnative
    ):
        return None
    return dout if dout.dtype == float_dtype(dout, other) and dout.dtype.kind == "f" else None


class Relu(Layer):
    """``max(x, 0)``. Keeps the forward input for the backward pass."""

    def __init__(self) -> None:
        self.x: ArrayLike | None = None

    def forward(self, x: ArrayLike, overwrite_x: bool = False) -> FloatArray:
        """``max(x, 0)``; ``x`` is left alone unless ``overwrite_x`` (networks pass it for their own
        temporaries: the result then goes into x's memory, and ``self.x`` keeps the result, which
        blocks the gradient at exactly the same entries as the input would: ``max(x, 0) <= 0``
        where ``x <= 0``, and NaN stays NaN)."""
        out = _writable_like(x, x) if overwrite_x else None
        result = F.relu_forward(x, out=out)
        self.x = result if out is not None else x
        return result

    def forward_applied(self, out: FloatArray) -> FloatArray:
        """Records ``out``, a result the layer before already passed through ``max(., 0)`` (a
        convolution with ``relu=True``), as this layer's forward pass: the backward pass masks by
        it exactly as by the input."""
        self.x = out
        return out

    def backward(self, dout: ArrayLike, overwrite_dout: bool = False) -> FloatArray:
        """dx; ``dout`` is left alone unless ``overwrite_dout`` (networks pass it for their own
        temporaries: the result then goes into dout's memory, as DLfS's in-place ``Relu`` does,
        and no new array is made per step)."""
        x = _saved_input(self.x, self)
        out = _writable_like(dout, x) if overwrite_dout else None
        return F.relu_backward(dout, x, out=out)

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        if not train:  # nothing kept: the result may go on into the next layer's hands
            return F.relu_forward(x, out=_writable_like(x, x) if x_owned else None), True
        return self.forward(x, overwrite_x=x_owned), False  # kept as the backward pass's mask

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self.backward(dout, overwrite_dout=dout_owned), True

    @property
    def mask(self) -> Array | None:
        """DLfS's ``mask``: True where the forward input was ``<= 0`` (the gradient is blocked)."""
        if self.x is None:
            return None
        blocked: Array = np.asarray(self.x) <= 0
        return blocked


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``. Keeps the output (``out``) for the backward pass."""

    def __init__(self) -> None:
        self.out: FloatArray | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        out = self.out = F.sigmoid_forward(x)
        return out

    def backward(self, dout: ArrayLike) -> FloatArray:
        return F.sigmoid_backward(dout, _saved(self.out, self, "forward output"))

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        if not train:
            return F.sigmoid_forward(x), True
        return self.forward(x), False  # kept for the backward pass

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self.backward(dout), True


class Affine(Layer):
    """Fully connected layer ``x @ W + b``; ``x`` of any shape ``(N, ...)`` is flattened to
    ``(N, D)`` and ``dx`` comes back in ``x``'s original shape.

    W: (D, M), b: (M,). After ``backward``: ``dW`` (D, M) and ``db`` (M,).
    """

    parameter_slots = (("weight", "W", "dW"), ("bias", "b", "db"))

    def __init__(self, W: ArrayLike, b: ArrayLike | None):
        self.W = W
        self.b = b
        self.x: ArrayLike | None = None
        self.original_x_shape: Shape | None = None
        self.dW: FloatArray | None = None
        self.db: FloatArray | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        out = F.affine_forward(x, self.W, _bias(self.b, np.shape(self.W)[-1]))
        self.x = x
        self.original_x_shape = np.shape(x)
        return out

    def backward(self, dout: ArrayLike, need_dx: bool = True) -> FloatArray | None:
        """Sets ``dW``/``db`` and returns dx (None with ``need_dx=False``, which skips its GEMM)."""
        x = _saved_input(self.x, self)
        dx: FloatArray | None
        dx, self.dW, self.db = F.affine_backward(dout, x, self.W, need_dx=need_dx)
        return dx

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        if not train:
            return F.affine_forward(x, self.W, _bias(self.b, np.shape(self.W)[-1])), True
        return self.forward(x), True

    def output_shape(self, input_shape: Shape) -> Shape:
        return _fully_connected_shape("Affine", input_shape, *np.shape(self.W))

    def multiply_adds(self, input_shape: Shape) -> int:
        return self.output_shape(input_shape)[0] * int(np.size(self.W))

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self.backward(dout, need_dx=need_dx), True


def _label_column(x: Array, t: Array) -> bool:
    """Whether ``t`` holds labels for logits ``x`` (N, K) given as (N, 1) or (1, N): DLfS's test
    ``t.size != y.size`` (so a (N, 1) target for K == 1 stays a one-hot target)."""
    return (
        x.ndim == 2 and t.ndim == 2 and 1 in t.shape and t.size == x.shape[0] and t.size != x.size
    )


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss.

    ``forward(x, t)``: logits ``x`` (N, K) (or one row (K,)) and targets ``t``, integer labels (N,)
    or one-hot rows (N, K); returns the loss and keeps ``loss``, ``y`` (softmax output) and ``t``.
    ``backward(dout=1)`` returns ``dout * (y - onehot(t)) / N``.

    Labels may also come as a column (N, 1) or a row (1, N), as DLfS's ``ch07/gradient_check.py``
    passes them (``np.array([1]).reshape((1, 1))``): DLfS treats any ``t`` with ``t.size !=
    y.size`` as labels, and so does this layer (``self.t`` then keeps them flattened to (N,)).
    DLfS's own arithmetic is only right for such labels when N == 1 (it broadcasts them against
    ``arange(N)``); here they mean the labels for every N.
    """

    def __init__(self) -> None:
        self.loss: float | None = None
        self.y: FloatArray | None = None
        self.t: Array | None = None
        self._single_row = False

    def forward(self, x: ArrayLike, t: ArrayLike) -> float:
        x = np.asarray(x)
        t_arr = np.asarray(t)
        self._single_row = x.ndim == 1
        if self._single_row:  # one sample, as DLfS's cross_entropy_error accepts
            x = x.reshape(1, -1)
            t_arr = t_arr.reshape(1, -1) if t_arr.size == x.size else t_arr.reshape(1)
        elif _label_column(x, t_arr):
            t_arr = t_arr.reshape(-1)
        loss, self.y = F.softmax_cross_entropy_forward(x, t_arr)
        self.t = t_arr
        self.loss = loss
        return loss

    def backward(self, dout: float = 1) -> FloatArray:
        y, t = _saved(self.y, self, "softmax output"), _saved(self.t, self, "targets")
        dx = F.softmax_cross_entropy_backward(y, t, dout)
        return dx[0] if self._single_row else dx


class Dropout(Layer):
    """Dropout (http://arxiv.org/abs/1207.0580), DLfS's variant: in training each unit is kept
    with probability ``1 - dropout_ratio`` (kept units are *not* rescaled); at test time every
    output is scaled by ``1 - dropout_ratio`` instead.

    Masks come from ``np.random.rand`` as in DLfS (so ``np.random.seed`` reproduces them), or from
    ``rng`` (a ``numpy.random.Generator`` or ``RandomState``) when given.
    """

    def __init__(self, dropout_ratio: float = 0.5, rng: RandomSource = None):
        self.dropout_ratio = dropout_ratio
        self.rng = rng
        self.mask: Array | None = None

    def forward(self, x: ArrayLike, train_flg: bool = True) -> FloatArray:
        x = np.asarray(x)
        out: FloatArray
        if train_flg:
            source = np.random if self.rng is None else self.rng
            mask: Array = source.random(x.shape) > self.dropout_ratio
            self.mask = mask
            out = x * mask
            return out
        # A Python float keeps float32 input float32.
        out = x * (1.0 - float(self.dropout_ratio))
        return out

    def backward(self, dout: ArrayLike) -> FloatArray:
        dx: FloatArray = np.asarray(dout) * _saved(self.mask, self, "dropout mask")
        return dx

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        return self.forward(x, train), True

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self.backward(dout), True


class BatchNormalization(Layer):
    """Batch normalisation (http://arxiv.org/abs/1502.03167) with DLfS's formulas and running
    statistics (``running = momentum * running + (1 - momentum) * batch``; epsilon 1e-6; the
    variance is the biased batch variance; the running variance starts at zero, as in DLfS).

    The size of ``gamma`` decides what is normalised:

    * one entry per feature -- ``gamma.size == prod(x.shape[1:])`` -- normalises each feature over
      the batch: DLfS's behaviour, also for 4-D input, which DLfS flattens to (N, C*H*W). NumPy,
      with DLfS's derivation (bitwise DLfS's results in float64);
    * one entry per channel of a 4-D input -- ``gamma.size == C`` -- normalises each channel over
      the batch and all positions (spatial batch norm, as in convolutional networks), in the
      compiled kernels (:func:`tinyconv.functional.batch_norm2d_forward`).

    ``forward(x, train_flg=True)`` uses batch statistics and updates the running ones; with
    ``train_flg=False`` it uses the running statistics. After ``backward``: ``dgamma``, ``dbeta``.
    Running statistics are updated in place once they exist, so references to them stay valid.

    Keyword-only additions: ``eps``, and ``unbiased_running_var`` (the running variance is fed the
    unbiased batch variance ``m / (m - 1) * var``, as PyTorch does; normalisation always uses the
    biased one). :class:`BatchNorm2d` sets PyTorch's conventions.
    """

    parameter_slots = (("weight", "gamma", "dgamma"), ("bias", "beta", "dbeta"))
    buffer_slots: tuple[BufferSlot, ...] = (
        ("running_mean", "running_mean"),
        ("running_var", "running_var"),
    )

    def __init__(
        self,
        gamma: ArrayLike,
        beta: ArrayLike,
        momentum: float = 0.9,
        running_mean: ArrayLike | None = None,
        running_var: ArrayLike | None = None,
        *,
        eps: float = _BN_EPS,
        unbiased_running_var: bool = False,
    ):
        self.gamma: ArrayLike = gamma
        self.beta: ArrayLike = beta
        self.momentum = momentum
        self.eps = eps
        self.unbiased_running_var = unbiased_running_var
        self.input_shape: Shape | None = None
        self.running_mean: ArrayLike | None = running_mean
        self.running_var: ArrayLike | None = running_var
        # Saved by forward for backward.
        self.batch_size: int | None = None  # number of values averaged per statistic
        self.xc: FloatArray | None = None
        self.xn: FloatArray | None = None
        self.std: FloatArray | None = None
        self.dgamma: FloatArray | None = None
        self.dbeta: FloatArray | None = None
        self._train = True
        self._axes: Shape = (0,)
        self._param_shape: Shape = ()
        # Per-channel (compiled) path: the input, the statistics it was normalised with, and the
        # output when a ReLU was fused into the forward pass.
        self._per_channel = False
        self._x: Array | None = None
        self._mean: FloatArray | None = None
        self._invstd: FloatArray | None = None

    def _is_per_channel(self, x: Array) -> bool:
        """Whether ``x`` is normalised per channel (else per feature, DLfS's way); raises when
        ``gamma`` fits neither."""
        n_params = np.size(self.gamma)
        if x.ndim < 2:
            raise ValueError(
                f"BatchNormalization needs input with a batch dimension, got shape {x.shape}"
            )
        features = int(np.prod(x.shape[1:]))
        if n_params == features:
            return False
        if x.ndim == 4 and n_params == x.shape[1]:
            return True
        raise ValueError(
            f"gamma has {n_params} entries but the input {x.shape} has {features} features"
            + (f" and {x.shape[1]} channels" if x.ndim == 4 else "")
        )

    def forward(self, x: ArrayLike, train_flg: bool = True, relu: bool = False) -> FloatArray:
        """Normalised ``x``; with ``relu`` (networks pass it when a ReLU follows a per-channel
        batch norm) ``max(., 0)`` of it, in the same pass."""
        x = np.asarray(x)
        self.input_shape = x.shape
        self._per_channel = self._is_per_channel(x)
        self._train = bool(train_flg)
        if self._per_channel:
            out, self._mean, self._invstd = self._forward_per_channel(x, self._train, relu)
            self._x = x
            return out
        features = int(np.prod(x.shape[1:]))
        self._axes, self._param_shape = (0,), (features,)
        out = self._forward(x.reshape(x.shape[0], features), train_flg)
        out = out.reshape(self.input_shape)
        return F.relu_forward(out, out=out) if relu else out

    def _running_statistics(
        self, dtype: np.dtype[np.floating[Any]], channels: int
    ) -> tuple[FloatArray, FloatArray]:
        """The running statistics as arrays the kernel may update in place (the live ones when they
        already are: C-contiguous, writeable, of the compute dtype; else converted copies, which
        then replace them)."""
        if self.running_mean is None:
            self.running_mean = np.zeros(channels, dtype=dtype)
            self.running_var = np.zeros(channels, dtype=dtype)
        live: list[FloatArray] = []
        for name in ("running_mean", "running_var"):
            value = getattr(self, name)
            if not (
                isinstance(value, np.ndarray)
                and value.dtype == dtype
                and value.flags.c_contiguous
                and value.flags.writeable
                and value.shape == (channels,)
            ):
                value = np.array(np.broadcast_to(value, (channels,)), dtype=dtype, order="C")
                setattr(self, name, value)
            live.append(value)
        return live[0], live[1]

    def _forward_per_channel(
        self, x: Array, train: bool, relu: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        dtype = float_dtype(x, self.gamma, self.beta)
        running_mean, running_var = self._running_statistics(dtype, x.shape[1])
        return F.batch_norm2d_forward(
            x,
            self.gamma,
            self.beta,
            running_mean,
            running_var,
            train=train,
            momentum=self.momentum,
            eps=self.eps,
            unbiased=self.unbiased_running_var,
            relu=relu,
        )

    def _running_pair(self) -> tuple[ArrayLike, ArrayLike]:
        if self.running_mean is None or self.running_var is None:
            raise TypeError(
                "BatchNormalization needs both running_mean and running_var, or neither "
                f"(got running_mean={self.running_mean!r}, running_var={self.running_var!r})"[:300]
            )
        return self.running_mean, self.running_var

    def _running_update(self, running: ArrayLike, batch_value: FloatArray) -> FloatArray:
        # momentum * running + (1 - momentum) * batch, in DLfS's evaluation order; in place when
        # the running array can hold the result, so outside references (a network's state) stay live.
        if (
            isinstance(running, np.ndarray)
            and running.shape == batch_value.shape
            and running.dtype == batch_value.dtype
            and running.flags.writeable
        ):
            running *= self.momentum
            running += (1 - self.momentum) * batch_value
            return running
        updated: FloatArray = (
            np.multiply(self.momentum, running) + (1 - self.momentum) * batch_value
        )
        return updated

    def _forward(self, x: Array, train_flg: bool) -> FloatArray:
        shape = self._param_shape
        gamma: Array = np.reshape(self.gamma, shape)
        beta: Array = np.reshape(self.beta, shape)
        stat_size = shape[0]
        if self.running_mean is None:
            dtype = (
                np.result_type(self.gamma, x)
                if np.result_type(self.gamma, x).kind == "f"
                else np.float64
            )
            self.running_mean = np.zeros(stat_size, dtype=dtype)
            self.running_var = np.zeros(stat_size, dtype=dtype)
        running_mean, running_var = self._running_pair()

        if train_flg:
            axes = self._axes
            mu = x.mean(axis=axes)
            xc = x - mu.reshape(shape)
            var = np.mean(xc**2, axis=axes)
            std = np.sqrt(var.reshape(shape) + self.eps)
            xn = xc / std
            self.batch_size = x.size // stat_size
            self.running_mean = self._running_update(running_mean, mu)
            if self.unbiased_running_var and self.batch_size > 1:
                var = var * (self.batch_size / (self.batch_size - 1))
            self.running_var = self._running_update(running_var, var)
        else:
            xc = x - np.reshape(running_mean, shape)
            std = np.sqrt(np.reshape(running_var, shape) + self.eps)
            xn = xc / std
        self.xc, self.xn, self.std = xc, xn, std
        out: FloatArray = gamma * xn + beta
        return out

    def backward(self, dout: ArrayLike, relu_output: ArrayLike | None = None) -> FloatArray:
        """dx. ``relu_output``: the output of a ReLU fused into (or following) this layer; dout is
        then taken as the gradient of that ReLU's output (masked where it is <= 0)."""
        dout = np.asarray(dout)
        if self._per_channel:
            dx, dgamma, dbeta = F.batch_norm2d_backward(
                dout,
                _saved(self._x, self, "forward input"),
                self.gamma,
                _saved(self._mean, self, "batch mean"),
                _saved(self._invstd, self, "inverse standard deviation"),
                train=self._train,
                relu_output=relu_output,
            )
            self.dgamma = dgamma.reshape(np.shape(self.gamma))
            self.dbeta = dbeta.reshape(np.shape(self.beta))
            return dx
        if relu_output is not None:
            dout = F.relu_backward(dout, relu_output)
        dx = self._backward(dout.reshape(_saved(self.xn, self, "normalised input").shape))
        return dx.reshape(_saved(self.input_shape, self, "forward input shape"))

    def _backward(self, dout: Array) -> FloatArray:
        axes = self._axes
        xn = _saved(self.xn, self, "normalised input")
        std = _saved(self.std, self, "standard deviation")
        gamma: Array = np.reshape(self.gamma, self._param_shape)
        dbeta = dout.sum(axis=axes)
        dgamma = np.sum(xn * dout, axis=axes)
        dxn = gamma * dout
        dx: FloatArray
        if self._train:
            # DLfS's derivation through std, var and mu.
            xc = _saved(self.xc, self, "centred input")
            batch_size = _saved(self.batch_size, self, "batch size")
            dxc = dxn / std
            dstd = -np.sum((dxn * xc) / (std * std), axis=axes)
            dvar = 0.5 * dstd.reshape(self._param_shape) / std
            dxc += (2.0 / batch_size) * xc * dvar
            dmu = np.sum(dxc, axis=axes)
            dx = dxc - dmu.reshape(self._param_shape) / batch_size
        else:
            # Test mode: the statistics are constants, so the layer is affine in x.
            dx = dxn / std
        self.dgamma = dgamma.reshape(np.shape(self.gamma))
        self.dbeta = dbeta.reshape(np.shape(self.beta))
        return dx

    def step_forward(
        self, x: FloatArray, train: bool, x_owned: bool, relu: bool = False
    ) -> StepResult:
        x = np.asarray(x)
        if not train and self._is_per_channel(x):  # nothing kept for a backward pass
            return self._forward_per_channel(x, False, relu)[0], True
        return self.forward(x, train, relu=relu), not relu

    def step_backward(
        self,
        dout: FloatArray,
        dout_owned: bool,
        need_dx: bool,
        relu_output: ArrayLike | None = None,
    ) -> StepResult:
        return self.backward(dout, relu_output=relu_output), True


class BatchNorm2d(BatchNormalization):
    """Per-channel batch normalisation with PyTorch's conventions, as ResNets use it: ``gamma``
    (``weight``) ones and ``beta`` (``bias``) zeros, running mean 0 and variance 1, epsilon 1e-5,
    momentum 0.1 in PyTorch's sense (``momentum=0.9`` here: the weight of the old value), the
    running variance fed the unbiased batch variance, and ``num_batches_tracked`` (an int64 0-d
    array) counting training-mode forward passes. A PyTorch state dict's arrays load unchanged.
    """

    buffer_slots = (
        *BatchNormalization.buffer_slots,
        ("num_batches_tracked", "num_batches_tracked"),
    )

    # Made here as arrays of the network's dtype (a state dict may replace them with others).
    gamma: FloatArray
    beta: FloatArray

    def __init__(
        self,
        num_features: int,
        *,
        dtype: DTypeLike = np.float32,
        eps: float = 1e-5,
        momentum: float = 0.9,
    ):
        dt = np.dtype(dtype)
        super().__init__(
            np.ones(num_features, dtype=dt),
            np.zeros(num_features, dtype=dt),
            momentum,
            running_mean=np.zeros(num_features, dtype=dt),
            running_var=np.ones(num_features, dtype=dt),
            eps=eps,
            unbiased_running_var=True,
        )
        self.num_features = num_features
        self.num_batches_tracked: npt.NDArray[np.int64] = np.zeros((), dtype=np.int64)

    def forward(self, x: ArrayLike, train_flg: bool = True, relu: bool = False) -> FloatArray:
        out = super().forward(x, train_flg, relu)
        if train_flg:
            self.num_batches_tracked += 1  # in place: the state dict holds this array
        return out

    def __repr__(self) -> str:
        return f"BatchNorm2d({self.num_features}, eps={self.eps:g})"


class Convolution(Layer):
    """2-D convolution (cross-correlation) in NCHW layout.

    W: (FN, C, FH, FW) filters, b: (FN,) or ``None`` (no bias, as in ResNets); ``stride`` and
    ``pad`` are an int or an (h, w) pair. ``forward(x)``: x (N, C, H, W) -> (N, FN, OH, OW) with
    ``OH = (H + 2*pad - FH) // stride + 1``. After ``backward``: ``dW`` and ``db``.
    """

    parameter_slots = (("weight", "W", "dW"), ("bias", "b", "db"))

    def __init__(
        self,
        W: ArrayLike,
        b: ArrayLike | None,
        stride: int | tuple[int, int] = 1,
        pad: int | tuple[int, int] = 0,
    ):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x: ArrayLike | None = None
        self.dW: FloatArray | None = None
        self.db: FloatArray | None = None

    def forward(self, x: ArrayLike, relu: bool = False) -> FloatArray:
        """The convolution; with ``relu`` (networks pass it when a ReLU layer follows) its
        ``max(., 0)`` as well, applied as the outputs are written."""
        out = F.conv2d_forward(
            x, self.W, _bias(self.b, np.shape(self.W)[0], self.W), self.stride, self.pad, relu=relu
        )
        self.x = x
        return out

    def output_shape(self, input_shape: Shape) -> Shape:
        """(N, FN, OH, OW) for an input of shape (N, C, H, W)."""
        fn, channels, fh, fw = np.shape(self.W)
        oh, ow = _window_shape(input_shape, (fh, fw), self.stride, self.pad, "filter")
        if input_shape[1] != channels:
            raise ValueError(
                f"Convolution with filters {np.shape(self.W)} takes {channels} input channels, got "
                f"input shape {tuple(input_shape)}"
            )
        return (int(input_shape[0]), fn, oh, ow)

    def multiply_adds(self, input_shape: Shape) -> int:
        """N * FN * OH * OW * C * FH * FW: one multiply-add per filter weight and output value."""
        n, _fn, oh, ow = self.output_shape(input_shape)
        return n * oh * ow * int(np.size(self.W))

    def step_forward(
        self, x: FloatArray, train: bool, x_owned: bool, relu: bool = False
    ) -> StepResult:
        if not train:
            return F.conv2d_forward(
                x,
                self.W,
                _bias(self.b, np.shape(self.W)[0], self.W),
                self.stride,
                self.pad,
                relu=relu,
            ), True
        return self.forward(x, relu=relu), not relu

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self.backward(dout, need_dx=need_dx), True

    def backward(self, dout: ArrayLike, need_dx: bool = True) -> FloatArray | None:
        """Sets ``dW``/``db`` and returns dx (None with ``need_dx=False``, which skips its GEMM
        and col2im: a network's first layer)."""
        x = _saved_input(self.x, self)
        dx: FloatArray | None
        dx, self.dW, self.db = F.conv2d_backward(
            dout, x, self.W, self.stride, self.pad, need_dx=need_dx
        )
        return dx


class Pooling(Layer):
    """2-D pooling over ``pool_h x pool_w`` windows, NCHW layout.

    ``mode="max"`` (DLfS's pooling) or ``mode="avg"`` (average; padding counts as zeros).
    ``forward(x)``: x (N, C, H, W) -> (N, C, OH, OW). Max pooling records, as DLfS does, where each
    window's maximum came from (``arg_max``: the flat index ``h * W + w`` of the winner in its
    plane) for the backward pass. ``forward(x, record_argmax=False)`` skips that (networks do so
    for inference, where it is wasted work and memory); a later ``backward`` then finds the winners
    again from the kept input, with the same result.
    """

    _MODES = ("max", "avg")

    def __init__(
        self,
        pool_h: int,
        pool_w: int,
        stride: int | tuple[int, int] = 1,
        pad: int | tuple[int, int] = 0,
        mode: str = "max",
    ):
        if mode not in self._MODES:
            raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.mode = mode
        self.input_shape: Shape | None = None
        self.x: ArrayLike | None = None
        self._arg_max: IntArray | None = None

    @property
    def arg_max(self) -> IntArray | None:
        """Flat in-plane index of each window's winner for the last forward input (max mode)."""
        if self.mode != "max" or self.x is None:
            return None
        if self._arg_max is None:
            self._arg_max = F.max_pool2d_forward(
                self.x, self.pool_h, self.pool_w, self.stride, self.pad
            )[1]
        return self._arg_max

    def forward(self, x: ArrayLike, record_argmax: bool = True) -> FloatArray:
        out: FloatArray
        if self.mode == "max":
            if record_argmax:
                out, self._arg_max = F.max_pool2d_forward(
                    x, self.pool_h, self.pool_w, self.stride, self.pad
                )
            else:
                out, self._arg_max = (
                    F.max_pool2d(x, self.pool_h, self.pool_w, self.stride, self.pad),
                    None,
                )
            self.x = x
        else:
            out = F.avg_pool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.input_shape = np.shape(x)
        return out

    def backward(self, dout: ArrayLike, through_relu: bool = False) -> FloatArray:
        """dx. ``through_relu`` (max mode; networks pass it when a ReLU feeds this layer): the
        input was that ReLU's output, and dx is the ReLU's backward pass as well, in one pass."""
        if self.mode == "max":
            x = _saved_input(self.x, self)
            if self._arg_max is not None:
                return F.max_pool2d_backward(
                    dout,
                    self._arg_max,
                    _saved(self.input_shape, self, "forward input shape"),
                    relu_output=x if through_relu else None,
                )
            return F.max_pool2d_backward_from_input(
                dout,
                x,
                self.pool_h,
                self.pool_w,
                self.stride,
                self.pad,
                through_relu=through_relu,
            )
        if through_relu:
            raise ValueError("through_relu applies to max pooling only")
        return F.avg_pool2d_backward(
            dout,
            _saved(self.input_shape, self, "forward input shape"),
            self.pool_h,
            self.pool_w,
            self.stride,
            self.pad,
        )

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        if not train:
            if self.mode == "max":
                return F.max_pool2d(x, self.pool_h, self.pool_w, self.stride, self.pad), True
            return F.avg_pool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad), True
        return self.forward(x), True

    def step_backward(
        self, dout: FloatArray, dout_owned: bool, need_dx: bool, through_relu: bool = False
    ) -> StepResult:
        return self.backward(dout, through_relu=through_relu), True

    def output_shape(self, input_shape: Shape) -> Shape:
        oh, ow = _window_shape(
            input_shape, (self.pool_h, self.pool_w), self.stride, self.pad, "pooling window"
        )
        return (int(input_shape[0]), int(input_shape[1]), oh, ow)


class Linear(Layer):
    """Fully connected layer with PyTorch's weight layout: ``x @ W.T + b``, W: (M, D) (``weight``),
    b: (M,) (``bias``), x (N, D) or (N, d1, ...) flattened. What ResNets' ``fc`` is, so a
    PyTorch state dict loads without transposing. After ``backward``: ``dW`` (M, D), ``db`` (M,).
    """

    parameter_slots = (("weight", "W", "dW"), ("bias", "b", "db"))

    def __init__(self, W: ArrayLike, b: ArrayLike | None):
        self.W = W
        self.b = b
        self.x: ArrayLike | None = None
        self.dW: FloatArray | None = None
        self.db: FloatArray | None = None

    def _flat(self, x: ArrayLike) -> Array:
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Linear needs input with a batch dimension, got shape {x.shape}")
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def forward(self, x: ArrayLike) -> FloatArray:
        self.x = x
        return self._forward(x)

    def _forward(self, x: ArrayLike) -> FloatArray:
        x2 = self._flat(x)
        out = F.gemm(x2, self.W, trans_b=True)
        if self.b is not None:
            out += np.asarray(self.b, dtype=out.dtype)
        return out

    def backward(self, dout: ArrayLike, need_dx: bool = True) -> FloatArray | None:
        """Sets ``dW``/``db`` and returns dx shaped like the forward input (None with
        ``need_dx=False``)."""
        x = _saved_input(self.x, self)
        x2 = self._flat(x)
        dout = np.asarray(dout)
        dW = self.dW = F.gemm(dout, x2, trans_a=True)
        self.db = dout.sum(axis=0, dtype=dW.dtype) if self.b is not None else None
        return F.gemm(dout, self.W).reshape(np.shape(x)) if need_dx else None

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        return (self.forward(x) if train else self._forward(x)), True

    def output_shape(self, input_shape: Shape) -> Shape:
        out_features, in_features = np.shape(self.W)
        return _fully_connected_shape("Linear", input_shape, in_features, out_features)

    def multiply_adds(self, input_shape: Shape) -> int:
        return self.output_shape(input_shape)[0] * int(np.size(self.W))

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self.backward(dout, need_dx=need_dx), True


class GlobalAvgPooling(Layer):
    """Mean over all positions of each channel: x (N, C, H, W) -> (N, C), as ResNets' ``avgpool``
    followed by flattening."""

    def __init__(self) -> None:
        self.input_shape: Shape | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        self.input_shape = np.shape(x)
        return F.global_avg_pool2d_forward(x)

    def backward(self, dout: ArrayLike) -> FloatArray:
        return F.global_avg_pool2d_backward(
            dout, _saved(self.input_shape, self, "forward input shape")
        )

    def output_shape(self, input_shape: Shape) -> Shape:
        n, c, _, _ = _checked_shape(input_shape, 4)
        return (n, c)

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        return self.forward(x), True

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return (self.backward(dout) if need_dx else None), True


class ChannelPadShortcut(Layer):
    """The parameter-free shortcut of CIFAR ResNets (He et al. 2016, option A): subsample the
    positions by ``stride`` and pad the channels with zeros, ``(out_channels - C) // 2`` before and
    the rest after, so the shortcut matches a stage that halves the size and widens the channels."""

    def __init__(self, stride: int, out_channels: int):
        self.stride = stride
        self.out_channels = out_channels
        self.input_shape: Shape | None = None

    def _padding(self, channels: int) -> tuple[int, int]:
        if channels > self.out_channels:
            raise ValueError(
                f"ChannelPadShortcut widens to {self.out_channels} channels, got {channels}"
            )
        before = (self.out_channels - channels) // 2
        return before, before + channels

    def forward(self, x: ArrayLike) -> FloatArray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"ChannelPadShortcut needs (N, C, H, W) input, got shape {x.shape}")
        self.input_shape = x.shape
        sub = x[:, :, :: self.stride, :: self.stride]
        start, stop = self._padding(x.shape[1])
        out: FloatArray = np.zeros((x.shape[0], self.out_channels, *sub.shape[2:]), dtype=x.dtype)
        out[:, start:stop] = sub
        return out

    def backward(self, dout: ArrayLike) -> FloatArray:
        dout = np.asarray(dout)
        input_shape = _saved(self.input_shape, self, "forward input shape")
        start, stop = self._padding(input_shape[1])
        dx: FloatArray = np.zeros(input_shape, dtype=dout.dtype)
        dx[:, :, :: self.stride, :: self.stride] = dout[:, start:stop]
        return dx

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        return self.forward(x), True

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return (self.backward(dout) if need_dx else None), True

    def output_shape(self, input_shape: Shape) -> Shape:
        n, c, h, w = _checked_shape(input_shape, 4)
        self._padding(c)
        return (n, self.out_channels, -(-h // self.stride), -(-w // self.stride))

    def __repr__(self) -> str:
        return f"ChannelPadShortcut(stride={self.stride}, out_channels={self.out_channels})"
