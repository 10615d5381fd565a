"""Containers: :class:`Sequential` runs layers in order, :class:`Residual` adds a shortcut to a body.

Both are layers themselves (they follow the step protocol of :mod:`tinyconv.layers`), so they nest:
a ResNet is a ``Sequential`` of a stem, stages that are ``Sequential``s of ``Residual`` blocks, and a
head.

**Plans.** A ``Sequential`` turns its layer list into *steps* once (again only when the list
changes): consecutive layers listed in :data:`FUSIONS` become one fused step -- a convolution with
the ReLU after it, a batch norm with the ReLU after it, a residual sum with the ReLU after it, a
ReLU's backward pass done by the max pooling after it, and at inference a convolution with the batch
norm (and ReLU) after it folded into one convolution, and a convolution (ReLU) and max pooling run
as one kernel that writes only the pooled output. There are three plans -- training forward,
inference forward, backward -- because the fusions differ. Running a plan tests no types.

**Ownership.** A step may overwrite an array only when it owns it (``x_owned``/``dout_owned``).
A ``Sequential`` passes ownership from one step to the next, since in a straight line each tensor
has one consumer. A ``Residual`` block's input has two consumers -- the body and the shortcut --
so neither branch gets it owned; in backward the incoming gradient also has two consumers: the
body gets it not owned, the shortcut (which reads it last) gets the caller's ownership, and the
two input gradients are summed into whichever of them the block owns.

**Skipped work.** ``need_dx=False`` means the caller throws the input gradient away (the network's
first layer, or everything before the first layer with trainable parameters): steps before the first
trainable one are not run at all in backward, and that one is told to skip its ``dx``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import (
    Any,
    Callable,
    NamedTuple,
    Protocol,
    Union,
)

import numpy as np

from . import functional as F
from ._typing import ArrayLike, FloatArray, Shape
from .layers import (
    BatchNormalization,
    Convolution,
    Layer,
    Pooling,
    Relu,
    StepLayer,
    StepResult,
    _bias,
)
from .summary import SummaryRow, container_row

__all__ = ["FUSIONS", "Residual", "Sequential", "has_trainable_parameters", "named_arrays"]


# ----------------------------------------------------------------------------------------------
# Steps: what a plan runs. Each covers one layer or a fused run of consecutive layers.


class _ReluFusable(StepLayer, Protocol):
    """A layer that can apply the ReLU after it as its outputs are written."""

    def step_forward(
        self, x: FloatArray, train: bool, x_owned: bool, relu: bool = False
    ) -> StepResult: ...


def _produced(y: FloatArray | None) -> FloatArray:
    """A step's output where the protocol promises one: every forward step's, and a backward
    step's when it was told ``need_dx=True``."""
    if y is None:
        raise AssertionError("a step returned None where its output was needed")
    return y


class _Step:
    """One step of a plan: ``layers`` it covers; forward plans call ``forward``, the backward
    plan ``backward`` (a fused step has only the one of its plan)."""

    layers: tuple[StepLayer, ...]

    # A fused step belongs to one plan (_plan builds it for that phase only), so the other
    # direction is never called: reaching it is a broken plan, not a missing implementation.
    def forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        raise RuntimeError(f"{type(self).__name__} is a backward step, in a forward plan")

    def backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        raise RuntimeError(f"{type(self).__name__} is a forward step, in the backward plan")


class _Single(_Step):
    """One layer, unfused."""

    def __init__(self, layer: StepLayer):
        self.layers = (layer,)
        self._layer = layer

    def forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        return self._layer.step_forward(x, train, x_owned)

    def backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self._layer.step_backward(dout, dout_owned, need_dx)


class _ForwardWithRelu(_Step):
    """A layer whose kernel applies the ReLU after it as its outputs are written (convolution,
    batch norm, residual sum). In training the ReLU records that output as its mask, so its own
    backward step (or a fused one) runs unchanged."""

    def __init__(self, layer: _ReluFusable, relu: Relu):
        self.layers = (layer, relu)
        self._layer, self._relu = layer, relu

    def forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        y, owned = self._layer.step_forward(x, train, x_owned, relu=True)
        if train:
            self._relu.forward_applied(_produced(y))
            return y, False  # the ReLU keeps it
        return y, owned


class _ReluThenMaxPoolBackward(_Step):
    """ReLU -> max pooling, backward: the pooling's scatter skips the winners the ReLU blocks."""

    def __init__(self, relu: Relu, pooling: Pooling):
        self.layers = (relu, pooling)
        self._pooling = pooling

    def backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self._pooling.step_backward(dout, dout_owned, need_dx, through_relu=True)


class _BatchNormThenReluBackward(_Step):
    """Batch norm -> ReLU, backward: the batch norm's backward masks by the ReLU's output as it
    reads the incoming gradient."""

    def __init__(self, norm: BatchNormalization, relu: Relu):
        self.layers = (norm, relu)
        self._norm, self._relu = norm, relu

    def backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        return self._norm.step_backward(dout, dout_owned, need_dx, relu_output=self._relu.x)


def _conv_forward(
    conv: Convolution,
    x: FloatArray,
    W: ArrayLike,
    b: ArrayLike,
    relu: bool,
    pool: Pooling | None,
) -> FloatArray:
    """Inference's convolution with its epilogue: bias, ReLU if ``relu``, and the max pooling
    ``pool`` after it when there is one (pooled while each output plane is in cache)."""
    if pool is None:
        return F.conv2d_forward(x, W, b, conv.stride, conv.pad, relu=relu)
    return F.conv2d_max_pool2d(
        x,
        W,
        b,
        conv.stride,
        conv.pad,
        pool_h=pool.pool_h,
        pool_w=pool.pool_w,
        pool_stride=pool.stride,
        pool_pad=pool.pad,
        relu=relu,
    )


class _ConvMaxPool(_Step):
    """Inference: convolution (-> ReLU) -> max pooling in one kernel; only the pooled output is
    written (:func:`tinyconv.functional.conv2d_max_pool2d`)."""

    def __init__(self, conv: Convolution, relu: Relu | None, pool: Pooling):
        self.layers = (conv, pool) if relu is None else (conv, relu, pool)
        self._conv, self._relu, self._pool = conv, relu, pool

    def forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        conv = self._conv
        b = _bias(conv.b, np.shape(conv.W)[0], conv.W)
        return _conv_forward(conv, x, conv.W, b, self._relu is not None, self._pool), True


class _FoldedConvBatchNorm(_Step):
    """Inference: convolution -> batch norm (-> ReLU (-> max pooling)) as one convolution whose
    weights and bias absorb the running statistics (``W * gamma / std``, ``(b - mean) * gamma /
    std + beta``), folded afresh on each call so parameter updates are always seen."""

    def __init__(
        self,
        conv: Convolution,
        norm: BatchNormalization,
        relu: Relu | None = None,
        pool: Pooling | None = None,
    ):
        self.layers = tuple(layer for layer in (conv, norm, relu, pool) if layer is not None)
        self._conv, self._norm, self._relu, self._pool = conv, norm, relu, pool

    def forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        conv, norm = self._conv, self._norm
        # The plan folds only a batch norm that has running statistics (_per_channel_norm).
        running_mean, running_var = norm._running_pair()
        W, b = F.fold_batch_norm(
            conv.W, conv.b, norm.gamma, norm.beta, running_mean, running_var, norm.eps
        )
        return _conv_forward(conv, x, W, b, self._relu is not None, self._pool), True


# ----------------------------------------------------------------------------------------------
# The fusion table


def _per_channel_norm(norm: BatchNormalization, conv: Convolution | None = None) -> bool:
    """Whether ``norm`` normalises per channel of the convolution before it (one statistic per
    filter), which is what folding and the fused kernels need."""
    if not isinstance(norm.gamma, np.ndarray) or norm.gamma.ndim != 1:
        return False
    if conv is not None:
        return norm.gamma.shape[0] == np.shape(conv.W)[0] and norm.running_mean is not None
    return True


class Fusion(NamedTuple):
    """Consecutive layers of these ``types`` (and satisfying ``applies``) run as one step made by
    ``make`` in plan ``phase`` (``"train"``/``"infer"`` forward, or ``"backward"``)."""

    phase: str
    types: tuple[type[StepLayer], ...]
    applies: Callable[..., bool]
    make: Callable[..., _Step]


def _always(*_layers: StepLayer) -> bool:
    return True


def _is_max_pooling(_before: StepLayer, pooling: Pooling) -> bool:
    return pooling.mode == "max"


#: Longer patterns first: the plan takes the first entry that matches at each position.
FUSIONS: list[Fusion] = [
    Fusion(
        "infer",
        (Convolution, BatchNormalization, Relu, Pooling),
        lambda c, n, r, p: _per_channel_norm(n, c) and _is_max_pooling(r, p),
        _FoldedConvBatchNorm,
    ),
    Fusion(
        "infer",
        (Convolution, BatchNormalization, Relu),
        lambda c, n, r: _per_channel_norm(n, c),
        _FoldedConvBatchNorm,
    ),
    Fusion(
        "infer",
        (Convolution, BatchNormalization),
        lambda c, n: _per_channel_norm(n, c),
        _FoldedConvBatchNorm,
    ),
    Fusion(
        "infer", (Convolution, Relu, Pooling), lambda c, r, p: _is_max_pooling(r, p), _ConvMaxPool
    ),
    Fusion("infer", (Convolution, Pooling), _is_max_pooling, lambda c, p: _ConvMaxPool(c, None, p)),
    Fusion("train", (Convolution, Relu), _always, _ForwardWithRelu),
    Fusion("infer", (Convolution, Relu), _always, _ForwardWithRelu),
    Fusion("train", (BatchNormalization, Relu), _always, _ForwardWithRelu),
    Fusion("infer", (BatchNormalization, Relu), _always, _ForwardWithRelu),
    Fusion("backward", (BatchNormalization, Relu), _always, _BatchNormThenReluBackward),
    Fusion("backward", (Relu, Pooling), _is_max_pooling, _ReluThenMaxPoolBackward),
]


def _register_residual_fusions() -> None:
    FUSIONS.insert(0, Fusion("train", (Residual, Relu), _always, _ForwardWithRelu))
    FUSIONS.insert(0, Fusion("infer", (Residual, Relu), _always, _ForwardWithRelu))


def _plan(layers: Sequence[StepLayer], phase: str) -> list[_Step]:
    steps: list[_Step] = []
    i = 0
    while i < len(layers):
        for fusion in FUSIONS:
            k = len(fusion.types)
            group = layers[i : i + k]
            if (
                fusion.phase == phase
                and len(group) == k
                and all(
                    type(layer) is kind or isinstance(layer, kind)
                    for layer, kind in zip(group, fusion.types)
                )
                and fusion.applies(*group)
            ):
                steps.append(fusion.make(*group))
                i += k
                break
        else:
            steps.append(_Single(layers[i]))
            i += 1
    return steps


# ----------------------------------------------------------------------------------------------
# Parameters by name


def has_trainable_parameters(layer: StepLayer) -> bool:
    """Whether ``layer`` (or anything inside it) has a parameter that is not frozen."""
    check: Callable[[], object] | None = getattr(layer, "has_trainable_parameters", None)
    return bool(check()) if check is not None else False


class ArraySlot(NamedTuple):
    """Where a named array lives: ``getattr(layer, attribute)``; its gradient (parameters only)
    in ``getattr(layer, gradient)``."""

    name: str
    layer: StepLayer
    attribute: str
    gradient: str | None


def named_arrays(layer: StepLayer, prefix: str = "") -> Iterator[ArraySlot]:
    """Every parameter and buffer of ``layer`` and its children, named as PyTorch names them
    (``layer1.0.conv1.weight``): per layer, parameters first, then buffers."""
    children: Callable[[], list[tuple[str, StepLayer]]] | None = getattr(
        layer, "named_children", None
    )
    if children is not None:
        for name, child in children():
            yield from named_arrays(child, f"{prefix}{name}.")
        return
    for name, attribute, gradient in getattr(layer, "parameter_slots", ()):
        if getattr(layer, attribute, None) is not None:
            yield ArraySlot(prefix + name, layer, attribute, gradient)
    for name, attribute in getattr(layer, "buffer_slots", ()):
        if getattr(layer, attribute, None) is not None:
            yield ArraySlot(prefix + name, layer, attribute, None)


# ----------------------------------------------------------------------------------------------
# Summaries: containers pass each child the shape it receives


def _path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _rows_of(layer: StepLayer, input_shape: Shape, name: str) -> list[SummaryRow]:
    """``layer``'s summary rows, its own first."""
    rows: Callable[[Shape, str], list[SummaryRow]] | None = getattr(layer, "summary_rows", None)
    if rows is None:
        raise TypeError(
            f"layer {name!r} ({type(layer).__name__}) cannot be summarised: it does not declare "
            "summary_rows/output_shape (derive it from tinyconv.layers.Layer)"
        )
    return rows(tuple(input_shape), name)


# ----------------------------------------------------------------------------------------------
# Containers


#: What a :class:`Sequential` holds (and what a network's ``layers`` is).
LayerList = Union["OrderedDict[str, StepLayer]", list[StepLayer]]


class Sequential(Layer):
    """Layers run one after the other. ``layers``: an ``OrderedDict`` (names become part of the
    parameter names: ``layer1.0.conv1.weight``) or a list (named ``0``, ``1``, ...). The list may
    be changed; the plans follow.

    ``forward(x, train_flg=False)`` and ``backward(dout)`` are the plain layer interface;
    networks call ``step_forward``/``step_backward`` with ownership (module docstring)."""

    def __init__(self, layers: LayerList | Mapping[str, StepLayer] | None = None):
        if layers is None:
            layers = OrderedDict()
        self.layers: LayerList = (
            layers if isinstance(layers, (OrderedDict, list)) else OrderedDict(layers)
        )
        self._plans: dict[str, list[_Step]] = {}
        self._planned_for: tuple[int, ...] = ()

    def layer_list(self) -> list[StepLayer]:
        return list(self.layers.values()) if isinstance(self.layers, Mapping) else list(self.layers)

    def named_children(self) -> list[tuple[str, StepLayer]]:
        if isinstance(self.layers, Mapping):
            return list(self.layers.items())
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, key: Any) -> StepLayer:
        """The layer named ``key`` (a dict of layers) or at index ``key`` (a list); any other key
        raises as the dict or list does."""
        layer: StepLayer = self.layers[key]
        return layer

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[StepLayer]:
        return iter(self.layer_list())

    def _steps(self, phase: str) -> list[_Step]:
        layers = self.layer_list()
        identity = tuple(map(id, layers))
        if identity != self._planned_for:
            self._plans, self._planned_for = {}, identity
        plan = self._plans.get(phase)
        if plan is None:
            plan = self._plans[phase] = _plan(layers, phase)
        return plan

    def plan(self, phase: str) -> list[tuple[str, ...]]:
        """The steps of plan ``phase`` (``"train"``, ``"infer"``, ``"backward"``) as tuples of
        layer class names: what runs fused (for reading, and for tests)."""
        if phase not in ("train", "infer", "backward"):
            raise ValueError(f"phase must be 'train', 'infer' or 'backward', got {phase!r}")
        return [tuple(type(layer).__name__ for layer in step.layers) for step in self._steps(phase)]

    def step_forward(self, x: FloatArray, train: bool, x_owned: bool) -> StepResult:
        y: FloatArray | None = x
        for step in self._steps("train" if train else "infer"):
            y, x_owned = step.forward(_produced(y), train, x_owned)
        return y, x_owned

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        steps = self._steps("backward")
        first = 0
        if not need_dx:
            # Nothing before the first step with trainable parameters needs running.
            first = next(
                (
                    index
                    for index, step in enumerate(steps)
                    if any(has_trainable_parameters(layer) for layer in step.layers)
                ),
                -1,
            )
            if first < 0:
                return None, False
        grad: FloatArray | None = dout
        for index in range(len(steps) - 1, first - 1, -1):
            # Only the step at ``first`` may be told need_dx=False (and return None); it runs last.
            grad, dout_owned = steps[index].backward(
                _produced(grad), dout_owned, need_dx or index > first
            )
        return (grad, dout_owned) if need_dx else (None, False)

    def has_trainable_parameters(self) -> bool:
        return any(has_trainable_parameters(layer) for layer in self.layer_list())

    def children_rows(self, input_shape: Shape, prefix: str) -> tuple[list[SummaryRow], Shape]:
        """The summary rows of the layers, named under ``prefix``, and the output shape."""
        rows: list[SummaryRow] = []
        shape = tuple(input_shape)
        for name, layer in self.named_children():
            layer_rows = _rows_of(layer, shape, _path(prefix, name))
            rows += layer_rows
            shape = layer_rows[0].output_shape
        return rows, shape

    def summary_rows(self, input_shape: Shape, name: str) -> list[SummaryRow]:
        rows, output_shape = self.children_rows(input_shape, name)
        return [container_row(name, self, input_shape, output_shape, rows), *rows]

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.children_rows(input_shape, "")[1]

    def forward(self, x: FloatArray, train_flg: bool = False) -> FloatArray:
        return _produced(self.step_forward(x, train_flg, False)[0])

    def backward(self, dout: FloatArray) -> FloatArray:
        return _produced(self.step_backward(dout, False, True)[0])

    def __repr__(self) -> str:
        inner = "\n".join(
            f"  ({name}): " + repr(layer).replace("\n", "\n  ")
            for name, layer in self.named_children()
        )
        return f"Sequential(\n{inner}\n)"


class Residual(Layer):
    """``body(x) + shortcut(x)``: a residual block (He et al. 2015). ``shortcut`` is ``None`` for
    the identity, or a layer (a ``Sequential`` of a strided 1x1 convolution and a batch norm, or a
    :class:`~tinyconv.layers.ChannelPadShortcut`). ``relu=True``: ``relu(body(x) + shortcut(x))``,
    as ResNet blocks end, the sum and the ReLU in one pass (likewise when a ``Relu`` layer follows
    the block in a ``Sequential``).

    Parameter names: the body's layers directly under the block (``conv1``, ``bn1``, ...), the
    shortcut's under ``shortcut_name`` (``downsample``, as torchvision's blocks)."""

    def __init__(
        self,
        body: Sequential | LayerList | Mapping[str, StepLayer],
        shortcut: StepLayer | None = None,
        shortcut_name: str = "downsample",
        *,
        relu: bool = False,
    ):
        self.body = body if isinstance(body, Sequential) else Sequential(body)
        self.shortcut = shortcut
        self.shortcut_name = shortcut_name
        #: The block's own ReLU (what its backward pass masks by), or None.
        self.relu: Relu | None = Relu() if relu else None

    def named_children(self) -> list[tuple[str, StepLayer]]:
        children = self.body.named_children()
        if self.shortcut is not None:
            children.append((self.shortcut_name, self.shortcut))
        return children

    def has_trainable_parameters(self) -> bool:
        return any(has_trainable_parameters(layer) for _, layer in self.named_children())

    def summary_rows(self, input_shape: Shape, name: str) -> list[SummaryRow]:
        # Both branches receive the block's input.
        rows, output_shape = self.body.children_rows(input_shape, name)
        if self.shortcut is not None:
            shortcut_rows = _rows_of(self.shortcut, input_shape, _path(name, self.shortcut_name))
            rows += shortcut_rows
            shortcut_shape = shortcut_rows[0].output_shape
        else:
            shortcut_shape = tuple(input_shape)
        if shortcut_shape != output_shape:
            raise ValueError(
                f"residual block {name!r}: the body gives shape {output_shape} but the shortcut "
                f"{shortcut_shape}, for input shape {tuple(input_shape)}"
            )
        return [container_row(name, self, input_shape, output_shape, rows), *rows]

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.summary_rows(input_shape, "")[0].output_shape

    def step_forward(
        self, x: FloatArray, train: bool, x_owned: bool, relu: bool = False
    ) -> StepResult:
        # x has two consumers: neither branch may overwrite it.
        h, h_owned = self.body.step_forward(x, train, False)
        s = (
            x
            if self.shortcut is None
            else _produced(self.shortcut.step_forward(x, train, False)[0])
        )
        y = F.add_forward(
            _produced(h), s, relu=relu or self.relu is not None, out=h if h_owned else None
        )
        if train and self.relu is not None:
            self.relu.forward_applied(y)
            return y, False  # the ReLU keeps it as its mask
        return y, True

    def step_backward(self, dout: FloatArray, dout_owned: bool, need_dx: bool) -> StepResult:
        if self.relu is not None:
            dout, dout_owned = self.relu.backward(dout, overwrite_dout=dout_owned), True
        # dout has two consumers: the body reads it unowned; the shortcut reads it last.
        dx_body, body_owned = self.body.step_backward(dout, False, need_dx)
        if self.shortcut is None:
            dx_short, short_owned = (dout, dout_owned) if need_dx else (None, False)
        else:
            dx_short, short_owned = self.shortcut.step_backward(dout, dout_owned, need_dx)
        if not need_dx:
            return None, False
        dx_body, dx_short = _produced(dx_body), _produced(dx_short)
        if body_owned:
            return F.add_forward(dx_body, dx_short, out=dx_body), True
        if short_owned:
            return F.add_forward(dx_short, dx_body, out=dx_short), True
        return F.add_forward(dx_body, dx_short), True

    def forward(self, x: FloatArray, train_flg: bool = False) -> FloatArray:
        return _produced(self.step_forward(x, train_flg, False)[0])

    def backward(self, dout: FloatArray) -> FloatArray:
        return _produced(self.step_backward(dout, False, True)[0])

    def __repr__(self) -> str:
        shortcut = "identity" if self.shortcut is None else repr(self.shortcut)
        relu = ", relu=True" if self.relu is not None else ""
        return f"Residual(body={self.body!r}, shortcut={shortcut}{relu})".replace("\n", "\n  ")


_register_residual_fusions()
