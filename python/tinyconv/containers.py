"""Containers: :class:`Sequential` runs layers in order, :class:`Residual` adds a shortcut to a body.

Both are layers themselves (they follow the step protocol of :mod:`tinyconv.layers`), so they nest:
a ResNet is a ``Sequential`` of a stem, stages that are ``Sequential``s of ``Residual`` blocks, and a
head.

**Plans.** A ``Sequential`` turns its layer list into *steps* once (again only when the list
changes): consecutive layers listed in :data:`FUSIONS` become one fused step -- a convolution with
the ReLU after it, a batch norm with the ReLU after it, a residual sum with the ReLU after it, a
ReLU's backward pass done by the max pooling after it, and at inference a convolution with the batch
norm (and ReLU) after it folded into one convolution. There are three plans -- training forward,
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
    Union,
)

import numpy as np

from . import functional as F
from .layers import BatchNormalization, Convolution, Layer, Pooling, Relu, StepResult
from .summary import SummaryRow, container_row

__all__ = ["FUSIONS", "Residual", "Sequential", "has_trainable_parameters", "named_arrays"]


# ----------------------------------------------------------------------------------------------
# Steps: what a plan runs. Each covers one layer or a fused run of consecutive layers.


class _Single:
    """One layer, unfused."""

    def __init__(self, layer: Any):
        self.layers = (layer,)
        self._layer = layer

    def forward(self, x, train: bool, x_owned: bool) -> StepResult:
        return self._layer.step_forward(x, train, x_owned)

    def backward(self, dout, dout_owned: bool, need_dx: bool) -> StepResult:
        return self._layer.step_backward(dout, dout_owned, need_dx)


class _ForwardWithRelu:
    """A layer whose kernel applies the ReLU after it as its outputs are written (convolution,
    batch norm, residual sum). In training the ReLU records that output as its mask, so its own
    backward step (or a fused one) runs unchanged."""

    def __init__(self, layer: Any, relu: Relu):
        self.layers = (layer, relu)
        self._layer, self._relu = layer, relu

    def forward(self, x, train: bool, x_owned: bool) -> StepResult:
        y, owned = self._layer.step_forward(x, train, x_owned, relu=True)
        if train:
            self._relu.forward_applied(y)
            return y, False  # the ReLU keeps it
        return y, owned


class _ReluThenMaxPoolBackward:
    """ReLU -> max pooling, backward: the pooling's scatter skips the winners the ReLU blocks."""

    def __init__(self, relu: Relu, pooling: Pooling):
        self.layers = (relu, pooling)
        self._pooling = pooling

    def backward(self, dout, dout_owned: bool, need_dx: bool) -> StepResult:
        return self._pooling.step_backward(dout, dout_owned, need_dx, through_relu=True)


class _BatchNormThenReluBackward:
    """Batch norm -> ReLU, backward: the batch norm's backward masks by the ReLU's output as it
    reads the incoming gradient."""

    def __init__(self, norm: BatchNormalization, relu: Relu):
        self.layers = (norm, relu)
        self._norm, self._relu = norm, relu

    def backward(self, dout, dout_owned: bool, need_dx: bool) -> StepResult:
        return self._norm.step_backward(dout, dout_owned, need_dx, relu_output=self._relu.x)


class _FoldedConvBatchNorm:
    """Inference: convolution -> batch norm (-> ReLU) as one convolution whose weights and bias
    absorb the running statistics (``W * gamma / std``, ``(b - mean) * gamma / std + beta``),
    folded afresh on each call so parameter updates are always seen."""

    def __init__(self, conv: Convolution, norm: BatchNormalization, relu: Relu | None = None):
        self.layers = (conv, norm) if relu is None else (conv, norm, relu)
        self._conv, self._norm, self._relu = conv, norm, relu

    def forward(self, x, train: bool, x_owned: bool) -> StepResult:
        conv, norm = self._conv, self._norm
        W, b = F.fold_batch_norm(
            conv.W, conv.b, norm.gamma, norm.beta, norm.running_mean, norm.running_var, norm.eps
        )
        return F.conv2d_forward(x, W, b, conv.stride, conv.pad, relu=self._relu is not None), True


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
    types: tuple[type[Any], ...]
    applies: Callable[..., bool]
    make: Callable[..., Any]


def _always(*_layers: Any) -> bool:
    return True


def _is_max_pooling(_relu: Relu, pooling: Pooling) -> bool:
    return pooling.mode == "max"


#: Longer patterns first: the plan takes the first entry that matches at each position.
FUSIONS: list[Fusion] = [
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


def _plan(layers: Sequence[Any], phase: str) -> list[Any]:
    steps: list[Any] = []
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


def has_trainable_parameters(layer: Any) -> bool:
    """Whether ``layer`` (or anything inside it) has a parameter that is not frozen."""
    check = getattr(layer, "has_trainable_parameters", None)
    return bool(check()) if check is not None else False


class ArraySlot(NamedTuple):
    """Where a named array lives: ``getattr(layer, attribute)``; its gradient (parameters only)
    in ``getattr(layer, gradient)``."""

    name: str
    layer: Any
    attribute: str
    gradient: str | None


def named_arrays(layer: Any, prefix: str = "") -> Iterator[ArraySlot]:
    """Every parameter and buffer of ``layer`` and its children, named as PyTorch names them
    (``layer1.0.conv1.weight``): per layer, parameters first, then buffers."""
    children = getattr(layer, "named_children", None)
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


def _rows_of(layer: Any, input_shape: tuple[int, ...], name: str) -> list[SummaryRow]:
    """``layer``'s summary rows, its own first."""
    rows = getattr(layer, "summary_rows", None)
    if rows is None:
        raise TypeError(
            f"layer {name!r} ({type(layer).__name__}) cannot be summarised: it does not declare "
            "summary_rows/output_shape (derive it from tinyconv.layers.Layer)"
        )
    return rows(tuple(input_shape), name)


# ----------------------------------------------------------------------------------------------
# Containers


LayerList = Union["OrderedDict[str, Any]", list[Any]]


class Sequential(Layer):
    """Layers run one after the other. ``layers``: an ``OrderedDict`` (names become part of the
    parameter names: ``layer1.0.conv1.weight``) or a list (named ``0``, ``1``, ...). The list may
    be changed; the plans follow.

    ``forward(x, train_flg=False)`` and ``backward(dout)`` are the plain layer interface;
    networks call ``step_forward``/``step_backward`` with ownership (module docstring)."""

    def __init__(self, layers: LayerList | Mapping[str, Any] | None = None):
        if layers is None:
            layers = OrderedDict()
        self.layers: LayerList = (
            layers if isinstance(layers, (OrderedDict, list)) else OrderedDict(layers)
        )
        self._plans: dict = {}
        self._planned_for: tuple[int, ...] = ()

    def layer_list(self) -> list[Any]:
        return list(self.layers.values()) if isinstance(self.layers, Mapping) else list(self.layers)

    def named_children(self) -> list[tuple[str, Any]]:
        if isinstance(self.layers, Mapping):
            return list(self.layers.items())
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, key):
        return self.layers[key]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layer_list())

    def _steps(self, phase: str) -> list[Any]:
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

    def step_forward(self, x, train: bool, x_owned: bool) -> StepResult:
        for step in self._steps("train" if train else "infer"):
            x, x_owned = step.forward(x, train, x_owned)
        return x, x_owned

    def step_backward(self, dout, dout_owned: bool, need_dx: bool) -> StepResult:
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
        for index in range(len(steps) - 1, first - 1, -1):
            dout, dout_owned = steps[index].backward(dout, dout_owned, need_dx or index > first)
        return (dout, dout_owned) if need_dx else (None, False)

    def has_trainable_parameters(self) -> bool:
        return any(has_trainable_parameters(layer) for layer in self.layer_list())

    def children_rows(
        self, input_shape: tuple[int, ...], prefix: str
    ) -> tuple[list[SummaryRow], tuple[int, ...]]:
        """The summary rows of the layers, named under ``prefix``, and the output shape."""
        rows: list[SummaryRow] = []
        shape = tuple(input_shape)
        for name, layer in self.named_children():
            layer_rows = _rows_of(layer, shape, _path(prefix, name))
            rows += layer_rows
            shape = layer_rows[0].output_shape
        return rows, shape

    def summary_rows(self, input_shape: tuple[int, ...], name: str) -> list[SummaryRow]:
        rows, output_shape = self.children_rows(input_shape, name)
        return [container_row(name, self, input_shape, output_shape, rows), *rows]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.children_rows(input_shape, "")[1]

    def forward(self, x, train_flg: bool = False):
        return self.step_forward(x, train_flg, False)[0]

    def backward(self, dout):
        return self.step_backward(dout, False, True)[0]

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
        body: Any,
        shortcut: Any = None,
        shortcut_name: str = "downsample",
        *,
        relu: bool = False,
    ):
        self.body = body if isinstance(body, Sequential) else Sequential(body)
        self.shortcut = shortcut
        self.shortcut_name = shortcut_name
        #: The block's own ReLU (what its backward pass masks by), or None.
        self.relu: Relu | None = Relu() if relu else None

    def named_children(self) -> list[tuple[str, Any]]:
        children = self.body.named_children()
        if self.shortcut is not None:
            children.append((self.shortcut_name, self.shortcut))
        return children

    def has_trainable_parameters(self) -> bool:
        return any(has_trainable_parameters(layer) for _, layer in self.named_children())

    def summary_rows(self, input_shape: tuple[int, ...], name: str) -> list[SummaryRow]:
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

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.summary_rows(input_shape, "")[0].output_shape

    def step_forward(self, x, train: bool, x_owned: bool, relu: bool = False) -> StepResult:
        # x has two consumers: neither branch may overwrite it.
        h, h_owned = self.body.step_forward(x, train, False)
        s = x if self.shortcut is None else self.shortcut.step_forward(x, train, False)[0]
        y = F.add_forward(h, s, relu=relu or self.relu is not None, out=h if h_owned else None)
        if train and self.relu is not None:
            self.relu.forward_applied(y)
            return y, False  # the ReLU keeps it as its mask
        return y, True

    def step_backward(self, dout, dout_owned: bool, need_dx: bool) -> StepResult:
        if self.relu is not None:
            dout, dout_owned = self.relu.step_backward(dout, dout_owned, True)
        # dout has two consumers: the body reads it unowned; the shortcut reads it last.
        dx_body, body_owned = self.body.step_backward(dout, False, need_dx)
        if self.shortcut is None:
            dx_short, short_owned = (dout, dout_owned) if need_dx else (None, False)
        else:
            dx_short, short_owned = self.shortcut.step_backward(dout, dout_owned, need_dx)
        if not need_dx:
            return None, False
        if body_owned:
            return F.add_forward(dx_body, dx_short, out=dx_body), True
        if short_owned:
            return F.add_forward(dx_short, dx_body, out=dx_short), True
        return F.add_forward(dx_body, dx_short), True

    def forward(self, x, train_flg: bool = False):
        return self.step_forward(x, train_flg, False)[0]

    def backward(self, dout):
        return self.step_backward(dout, False, True)[0]

    def __repr__(self) -> str:
        shortcut = "identity" if self.shortcut is None else repr(self.shortcut)
        relu = ", relu=True" if self.relu is not None else ""
        return f"Residual(body={self.body!r}, shortcut={shortcut}{relu})".replace("\n", "\n  ")


_register_residual_fusions()
