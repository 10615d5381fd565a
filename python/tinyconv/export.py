"""Export a tinyconv network to ONNX, to run it wherever its users deploy (ONNX Runtime, OpenVINO,
TensorRT, onnxruntime-web, mobile runtimes).

:func:`to_onnx` walks the network's layers -- the same tree its ``predict`` runs: DLfS's layer
lists, and the :class:`~tinyconv.containers.Sequential` and :class:`~tinyconv.containers.Residual`
containers of ResNets -- and turns each layer into ONNX nodes in inference form (dropout as its
test-time scaling, batch norm with its running statistics). The model is built with the ``onnx``
package's helpers (``pip install "tinyconv[onnx]"``), checked with
``onnx.checker.check_model(full_check=True)`` and written atomically.

**One table.** :data:`_EXPORTERS` maps each layer class to the function that emits its nodes. It
lives here, not on the layers: ``onnx`` is an optional dependency and ONNX's vocabulary (opsets,
attribute layouts) belongs in one module, beside the other exporters it must agree with, while
the layers stay the compute path. The lookup is by exact class: a subclass may compute something
else, so it is refused with a ``TypeError`` naming it rather than exported as its parent.

**What the ONNX graph computes** is what ``network.predict(x)`` computes (``train_flg=False``):

* convolution -> ``Conv``; fully connected -> ``Flatten`` + ``Gemm`` (``transB`` for PyTorch's
  weight layout); ReLU, sigmoid -> ``Relu``, ``Sigmoid``;
* max pooling -> ``MaxPool``, whose padding never wins (ONNX leaves padded positions out of the
  maximum), as tinyconv's -inf padding; average pooling -> ``AveragePool`` with
  ``count_include_pad=1`` (padding counts as zeros: every window divides by ``pool_h * pool_w``);
  output sizes round down (``ceil_mode=0``), as tinyconv's;
* batch norm -> ``BatchNormalization`` with the running statistics (per channel of a 4-D input,
  or per feature as DLfS's ``MultiLayerNetExtend``: ``Flatten`` first when the input has more
  dimensions); dropout -> ``Mul`` by ``1 - dropout_ratio``;
* a residual block -> its body and shortcut on the same input, ``Add`` (and ``Relu``); the
  parameter-free CIFAR shortcut -> ``Slice`` with steps and a zero ``Pad`` of the channels; global
  average pooling -> ``GlobalAveragePool`` + ``Flatten``.

The graph's input is ``input`` (NCHW images, or (N, D) features for the fully connected networks)
and its output ``logits`` (and ``probabilities``, their softmax, with ``softmax=True``); the
batch dimension is symbolic (``batch``) unless ``batch_size`` fixes it. Initializers carry the
network's own parameter names (``W1``, ``layer1.0.conv1.weight``), so weights can be matched
with the parameter file.

**float64.** Models may be float32 or float64 (the network's dtype, or ``dtype=``). ONNX Runtime's
CPU provider (checked with 1.32) has no float64 kernels for ``Conv``, ``AveragePool`` and
``GlobalAveragePool``, so it runs float64 models of the fully connected networks only; float64
convolutional models are valid ONNX and run in ``onnx.reference.ReferenceEvaluator`` (which the
tests check them with) and in runtimes that have the kernels. To deploy with ONNX Runtime, export
float32 (``dtype=np.float32`` converts a float64 network's parameters).
"""

from __future__ import annotations

import importlib
import json
import numbers
import os
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np

from ._typing import Array, DTypeLike
from ._validate import as_pair
from .containers import Residual, Sequential
from .layers import (
    Affine,
    BatchNorm2d,
    BatchNormalization,
    ChannelPadShortcut,
    Convolution,
    Dropout,
    GlobalAvgPooling,
    Linear,
    Pooling,
    Relu,
    Sigmoid,
)
from .network import Network
from .serialization import atomic_write

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "INSTALL_HINT",
    "LOGITS_NAME",
    "MIN_OPSET",
    "PROBABILITIES_NAME",
    "to_onnx",
]

#: The opset written by default: ONNX 1.12 (2022), run by ONNX Runtime >= 1.12, TensorRT >= 8.5,
#: OpenVINO >= 2022.3 and onnxruntime-web.
DEFAULT_OPSET = 17
#: The oldest opset whose operators have the meanings used here (``Softmax`` over one axis: 13).
MIN_OPSET = 13
INPUT_NAME = "input"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"
INSTALL_HINT = 'pip install "tinyconv[onnx]"'

# A protobuf message is at most 2 GiB; initializers beyond that would need ONNX's external data.
_MAX_MODEL_BYTES = 2**31 - 2**24
_INT64_MAX = np.iinfo(np.int64).max
_ONNX_DTYPES: dict[np.dtype[np.floating[Any]], str] = {
    np.dtype(np.float32): "FLOAT",
    np.dtype(np.float64): "DOUBLE",
}

PathLike = Union[str, "os.PathLike[str]"]
Dim = Optional[int]  # a tensor dimension; None where it is only known when the model runs


def _import_onnx() -> Any:
    try:
        # Imported by name: onnx is optional, so the type checker need not have it (the module
        # and what it builds are used as Any).
        onnx = importlib.import_module("onnx")
    except ImportError as error:
        raise ImportError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from error
    return onnx


# ----------------------------------------------------------------------------------------------
# The graph under construction


class _Tensor(NamedTuple):
    """A tensor of the graph: its name and shape (None for dimensions known only at run time)."""

    name: str
    shape: tuple[Dim, ...]


def _describe_shape(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class _Graph:
    """Nodes and initializers of the ONNX graph being built, with unique names.

    ``array_names`` maps ``(id(layer), attribute)`` to the network's key for that array (``W1``,
    ``layer1.0.bn1.running_var``), so initializers carry the names of the parameter files.
    ``reserved``: names no layer may take (the graph's inputs and outputs)."""

    def __init__(
        self,
        onnx: Any,
        dtype: np.dtype[np.floating[Any]],
        array_names: dict[tuple[int, str], str],
        reserved: Sequence[str],
    ):
        self.onnx = onnx
        self.dtype = dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._array_names = array_names
        self._used: set[str] = set(reserved)

    def unique(self, hint: str) -> str:
        name, count = hint, 1
        while name in self._used:
            count += 1
            name = f"{hint}_{count}"
        self._used.add(name)
        return name

    def constant(self, hint: str, value: Any, dtype: Any = None) -> str:
        """An initializer holding ``value`` (in the model's dtype unless ``dtype`` says otherwise)."""
        array = np.ascontiguousarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.unique(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def array(self, layer: Any, attribute: str, scope: str, value: Any = None) -> str:
        """An initializer for the layer's array ``attribute`` (or ``value`` derived from it), named
        as the network names it where the array is used as stored."""
        key = self._array_names.get((id(layer), attribute)) if value is None else None
        stored = getattr(layer, attribute) if value is None else value
        return self.constant(key or f"{scope}.{attribute}", stored)

    def node(self, op_type: str, inputs: Sequence[str], scope: str, **attributes: Any) -> str:
        """Append a node; returns the name of its (single) output."""
        name = self.unique(scope or op_type)
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [name], name=name, **attributes)
        )
        return name

    def rename_output(self, old: str, new: str) -> None:
        """Give the output ``old`` of the node that produces it the reserved name ``new``."""
        for node in self.nodes:
            if old in node.output:
                node.output[list(node.output).index(old)] = new
                return
        raise AssertionError(f"no node produces {old!r}")


# ----------------------------------------------------------------------------------------------
# The table: layer class -> the function that emits its nodes


_Exporter = Callable[[_Graph, Any, _Tensor, str], _Tensor]
_EXPORTERS: dict[type, _Exporter] = {}


def _exports(*layer_types: type) -> Callable[[_Exporter], _Exporter]:
    def register(function: _Exporter) -> _Exporter:
        for layer_type in layer_types:
            _EXPORTERS[layer_type] = function
        return function

    return register


def _export_layer(graph: _Graph, layer: Any, x: _Tensor, scope: str) -> _Tensor:
    exporter = _EXPORTERS.get(type(layer))
    if exporter is None:
        known = ", ".join(sorted(kind.__name__ for kind in _EXPORTERS))
        raise TypeError(
            f"to_onnx cannot export layer {scope!r} of type {type(layer).__module__}."
            f"{type(layer).__qualname__}: no ONNX form is known for it (exportable: {known})"
        )
    return exporter(graph, layer, x, scope)


class _ShapeError(ValueError):
    """The input shape does not fit a layer; to_onnx reports it naming input_shape."""


def _misfit(scope: str, layer: Any, x: _Tensor, why: str) -> _ShapeError:
    return _ShapeError(
        f"layer {scope!r} ({type(layer).__name__}) gets a tensor of shape "
        f"{_describe_shape(x.shape)}: {why}"
    )


def _require_4d(layer: Any, x: _Tensor, scope: str) -> None:
    if len(x.shape) != 4:
        raise _misfit(scope, layer, x, "it needs (N, C, H, W) images")


def _window_output(
    size: Dim, window: int, stride: int, pad: int, layer: Any, x: _Tensor, scope: str
) -> Dim:
    """tinyconv's output size, ``(size + 2 * pad - window) // stride + 1``: rounded down, every
    window inside the padded input (ONNX's ``ceil_mode=0`` with explicit pads is the same)."""
    if size is None:
        return None
    if size + 2 * pad < window:
        raise _misfit(
            scope, layer, x, f"a {window}-wide window does not fit {size} + 2 x {pad} padding"
        )
    return (size + 2 * pad - window) // stride + 1


def _size(dims: Sequence[Dim]) -> Dim:
    """How many values a tensor of dimensions ``dims`` holds; None when one is unknown."""
    known = [d for d in dims if d is not None]
    return int(np.prod(known, dtype=np.int64)) if len(known) == len(dims) else None


def _flat(graph: _Graph, x: _Tensor, scope: str) -> _Tensor:
    """(N, d1, d2, ...) as (N, d1*d2*...), as tinyconv's fully connected layers see their input."""
    if len(x.shape) == 2:
        return x
    rest = x.shape[1:]
    features = _size(rest)
    return _Tensor(
        graph.node("Flatten", [x.name], f"{scope}.flatten", axis=1), (x.shape[0], features)
    )


def _check_features(layer: Any, x: _Tensor, expected: int, scope: str) -> None:
    if x.shape[1] is not None and x.shape[1] != expected:
        raise _misfit(
            scope, layer, x, f"it takes {expected} features, the input gives {x.shape[1]}"
        )


def _vector(value: Any, size: int) -> Array:
    """A bias as one entry per output (DLfS's scripts may pass a scalar bias, as layers allow)."""
    return np.broadcast_to(np.asarray(value), (size,))


@_exports(Sequential)
def _sequential(graph: _Graph, layer: Sequential, x: _Tensor, scope: str) -> _Tensor:
    for name, child in layer.named_children():
        x = _export_layer(graph, child, x, f"{scope}.{name}" if scope else name)
    return x


@_exports(Residual)
def _residual(graph: _Graph, layer: Residual, x: _Tensor, scope: str) -> _Tensor:
    body = _sequential(graph, layer.body, x, scope)
    shortcut = (
        x
        if layer.shortcut is None
        else _export_layer(graph, layer.shortcut, x, f"{scope}.{layer.shortcut_name}")
    )
    if len(body.shape) != len(shortcut.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(body.shape, shortcut.shape)
    ):
        raise _misfit(
            scope,
            layer,
            x,
            f"its body gives {_describe_shape(body.shape)} but its shortcut "
            f"{_describe_shape(shortcut.shape)}",
        )
    shape = tuple(a if a is not None else b for a, b in zip(body.shape, shortcut.shape))
    y = graph.node("Add", [body.name, shortcut.name], f"{scope}.add")
    if layer.relu is not None:
        y = graph.node("Relu", [y], f"{scope}.relu")
    return _Tensor(y, shape)


@_exports(Convolution)
def _convolution(graph: _Graph, layer: Convolution, x: _Tensor, scope: str) -> _Tensor:
    _require_4d(layer, x, scope)
    filters, channels, fh, fw = np.shape(layer.W)
    if x.shape[1] is not None and x.shape[1] != channels:
        raise _misfit(scope, layer, x, f"its filters take {channels} channels")
    (sh, sw), (ph, pw) = as_pair(layer.stride, "stride", 1), as_pair(layer.pad, "pad", 0)
    out_h = _window_output(x.shape[2], fh, sh, ph, layer, x, scope)
    out_w = _window_output(x.shape[3], fw, sw, pw, layer, x, scope)
    inputs = [x.name, graph.array(layer, "W", scope)]
    if layer.b is not None:
        inputs.append(
            graph.array(
                layer, "b", scope, None if np.ndim(layer.b) == 1 else _vector(layer.b, filters)
            )
        )
    y = graph.node(
        "Conv", inputs, scope, kernel_shape=[fh, fw], strides=[sh, sw], pads=[ph, pw, ph, pw]
    )
    return _Tensor(y, (x.shape[0], filters, out_h, out_w))


@_exports(Pooling)
def _pooling(graph: _Graph, layer: Pooling, x: _Tensor, scope: str) -> _Tensor:
    _require_4d(layer, x, scope)
    kh, kw = int(layer.pool_h), int(layer.pool_w)
    (sh, sw), (ph, pw) = as_pair(layer.stride, "stride", 1), as_pair(layer.pad, "pad", 0)
    out_h = _window_output(x.shape[2], kh, sh, ph, layer, x, scope)
    out_w = _window_output(x.shape[3], kw, sw, pw, layer, x, scope)
    window = {
        "kernel_shape": [kh, kw],
        "strides": [sh, sw],
        "pads": [ph, pw, ph, pw],
        "ceil_mode": 0,
    }
    if layer.mode == "max":
        if ph >= kh or pw >= kw:  # a window of padding alone: tinyconv refuses it, ONNX too
            raise ValueError(
                f"layer {scope!r}: max pooling needs pad < pool, got pad ({ph}, {pw}) for a "
                f"{kh}x{kw} window"
            )
        y = graph.node("MaxPool", [x.name], scope, **window)
        return _Tensor(y, (x.shape[0], x.shape[1], out_h, out_w))
    source = x.name
    if ph >= kh or pw >= kw:
        # Windows may lie wholly in tinyconv's zero padding, but ONNX pads must be smaller than
        # the window (ONNX Runtime enforces it): pad with zeros first, which is what
        # count_include_pad means anyway.
        pads = graph.constant(f"{scope}.pads", (0, 0, ph, pw, 0, 0, ph, pw), dtype=np.int64)
        source = graph.node("Pad", [source, pads], f"{scope}.pad", mode="constant")
        window["pads"] = [0, 0, 0, 0]
    y = graph.node("AveragePool", [source], scope, count_include_pad=1, **window)
    return _Tensor(y, (x.shape[0], x.shape[1], out_h, out_w))


@_exports(Relu)
def _relu(graph: _Graph, layer: Relu, x: _Tensor, scope: str) -> _Tensor:
    return _Tensor(graph.node("Relu", [x.name], scope), x.shape)


@_exports(Sigmoid)
def _sigmoid(graph: _Graph, layer: Sigmoid, x: _Tensor, scope: str) -> _Tensor:
    return _Tensor(graph.node("Sigmoid", [x.name], scope), x.shape)


@_exports(Dropout)
def _dropout(graph: _Graph, layer: Dropout, x: _Tensor, scope: str) -> _Tensor:
    # At test time DLfS's dropout scales every output by the keep probability.
    keep = 1.0 - float(layer.dropout_ratio)
    if keep == 1.0:
        return x
    return _Tensor(
        graph.node("Mul", [x.name, graph.constant(f"{scope}.keep_ratio", keep)], scope), x.shape
    )


def _fully_connected(
    graph: _Graph,
    layer: Any,
    x: _Tensor,
    scope: str,
    features: int,
    outputs: int,
    bias: Array | None,
    **attributes: Any,
) -> _Tensor:
    """A Gemm of the flattened input with the layer's W (and b): Affine and Linear."""
    x = _flat(graph, x, scope)
    _check_features(layer, x, features, scope)
    inputs = [x.name, graph.array(layer, "W", scope)]
    if layer.b is not None:
        inputs.append(graph.array(layer, "b", scope, bias))
    return _Tensor(graph.node("Gemm", inputs, scope, **attributes), (x.shape[0], outputs))


@_exports(Affine)
def _affine(graph: _Graph, layer: Affine, x: _Tensor, scope: str) -> _Tensor:
    features, outputs = np.shape(layer.W)  # DLfS's W: (features, outputs); b may be a scalar
    bias = None if layer.b is None or np.ndim(layer.b) == 1 else _vector(layer.b, outputs)
    return _fully_connected(graph, layer, x, scope, features, outputs, bias)


@_exports(Linear)
def _linear(graph: _Graph, layer: Linear, x: _Tensor, scope: str) -> _Tensor:
    outputs, features = np.shape(layer.W)  # PyTorch's W: (outputs, features)
    return _fully_connected(graph, layer, x, scope, features, outputs, None, transB=1)


@_exports(BatchNormalization, BatchNorm2d)
def _batch_norm(graph: _Graph, layer: BatchNormalization, x: _Tensor, scope: str) -> _Tensor:
    size = int(np.size(layer.gamma))
    features = _size(x.shape[1:])
    # tinyconv's rule (BatchNormalization._is_per_channel): one entry per feature normalises each
    # feature; else one per channel of a 4-D input each channel. With the height or width unknown,
    # one entry per channel is per channel (per feature would mean a 1x1 image: the same thing).
    per_feature = features == size
    if not per_feature and not (len(x.shape) == 4 and x.shape[1] == size):
        raise _misfit(
            scope,
            layer,
            x,
            f"gamma has {size} entries, neither one per feature nor one per channel",
        )
    statistics = []
    for attribute in ("running_mean", "running_var"):
        if getattr(layer, attribute) is None:  # never trained: tinyconv starts the statistics at 0
            statistics.append(graph.constant(f"{scope}.{attribute}", np.zeros(size)))
        else:
            value = getattr(layer, attribute)
            statistics.append(
                graph.array(
                    layer,
                    attribute,
                    scope,
                    None if np.shape(value) == (size,) else np.reshape(value, size),
                )
            )
    mean, variance = statistics
    epsilon = float(layer.eps)
    if graph.dtype == np.float64 and float(np.float32(epsilon)) != epsilon:
        # ONNX keeps epsilon as a 32-bit attribute, off by ~1e-8 relative for 1e-5 or 1e-6; a
        # float64 model adds the exact epsilon to the variance instead (folded by the runtime).
        variance = graph.node(
            "Add", [variance, graph.constant(f"{scope}.eps", epsilon)], f"{scope}.variance_plus_eps"
        )
        epsilon = 0.0
    source = _flat(graph, x, scope) if per_feature and len(x.shape) > 2 else x
    scale = graph.array(
        layer, "gamma", scope, None if np.ndim(layer.gamma) == 1 else np.reshape(layer.gamma, size)
    )
    shift = graph.array(
        layer, "beta", scope, None if np.ndim(layer.beta) == 1 else np.reshape(layer.beta, size)
    )
    y = graph.node(
        "BatchNormalization", [source.name, scale, shift, mean, variance], scope, epsilon=epsilon
    )
    if source is not x:  # back to the input's shape: the batch dimension as it is, the rest known
        shape = graph.constant(f"{scope}.shape", (0, *tuple(x.shape[1:])), dtype=np.int64)
        y = graph.node("Reshape", [y, shape], f"{scope}.unflatten")
    return _Tensor(y, x.shape)


@_exports(GlobalAvgPooling)
def _global_avg_pooling(graph: _Graph, layer: GlobalAvgPooling, x: _Tensor, scope: str) -> _Tensor:
    _require_4d(layer, x, scope)
    pooled = graph.node("GlobalAveragePool", [x.name], scope)
    return _Tensor(
        graph.node("Flatten", [pooled], f"{scope}.flatten", axis=1), (x.shape[0], x.shape[1])
    )


@_exports(ChannelPadShortcut)
def _channel_pad_shortcut(
    graph: _Graph, layer: ChannelPadShortcut, x: _Tensor, scope: str
) -> _Tensor:
    _require_4d(layer, x, scope)
    channels, stride, out_channels = x.shape[1], int(layer.stride), int(layer.out_channels)
    if channels is None or channels > out_channels:
        raise _misfit(scope, layer, x, f"it widens to {out_channels} channels")
    name, (n, _, h, w) = x.name, x.shape
    if stride != 1:  # x[:, :, ::stride, ::stride]

        def index(*values: int) -> str:
            return graph.constant(f"{scope}.slice", values, dtype=np.int64)

        name = graph.node(
            "Slice",
            [name, index(0, 0), index(_INT64_MAX, _INT64_MAX), index(2, 3), index(stride, stride)],
            f"{scope}.subsample",
        )
        h = None if h is None else -(-h // stride)
        w = None if w is None else -(-w // stride)
    before = (out_channels - channels) // 2
    after = out_channels - channels - before
    if before or after:
        pads = graph.constant(f"{scope}.pads", (0, before, 0, 0, 0, after, 0, 0), dtype=np.int64)
        name = graph.node("Pad", [name, pads], f"{scope}.pad", mode="constant")
    return _Tensor(name, (n, out_channels, h, w))


# ----------------------------------------------------------------------------------------------
# Arguments


def _checked_optional_int(
    value: Any, name: str, minimum: int, maximum: int | None = None
) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        limit = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {limit}, got {number}")
    return number


def _checked_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return value


def _checked_classes(classes: Any) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a sequence of class names (str), got {classes!r}")
    names = list(classes)
    bad = [name for name in names if not isinstance(name, str)]
    if bad:
        raise TypeError(f"classes must hold class names (str), got {bad[0]!r} in {names!r}"[:300])
    if len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct, got {names!r}"[:300])
    return names


def _default_input_shape(network: Network) -> tuple[Dim, ...]:
    """What the network takes per sample: the image size it was built for (DLfS's convnets),
    its input features (the fully connected networks), or just the channels of a network that
    takes any image size (ResNets)."""
    if hasattr(network, "input_dim"):
        return tuple(int(d) for d in network.input_dim)
    if hasattr(network, "input_size"):
        return (int(network.input_size),)
    if hasattr(network, "in_channels"):
        return (int(network.in_channels), None, None)
    first = next(iter(network._root().layer_list()), None)
    if isinstance(first, Convolution):
        return (int(np.shape(first.W)[1]), None, None)
    if isinstance(first, Affine):
        return (int(np.shape(first.W)[0]),)
    raise ValueError(
        f"cannot tell what a {type(network).__name__} takes as input; give input_shape"
    )


def _checked_input_shape(input_shape: Any, network: Network) -> tuple[Dim, ...]:
    if input_shape is None:
        return _default_input_shape(network)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a tuple (C, H, W) or (D,), got {input_shape!r}")
    if len(input_shape) not in (1, 3):
        raise ValueError(
            f"input_shape must be (C, H, W) for images or (D,) for features, got {tuple(input_shape)!r}"
        )
    return tuple(_checked_optional_int(d, "input_shape entries", 1) for d in input_shape)


def _model_dtype(dtype: DTypeLike | None, network: Network) -> np.dtype[np.floating[Any]]:
    if dtype is None:
        return network.dtype
    try:
        chosen = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32, float64 or None, got {dtype!r}") from None
    for known in _ONNX_DTYPES:
        if chosen == known:
            return known
    raise ValueError(f"dtype must be float32, float64 or None, got {chosen}")


def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"path must be a non-empty file name, got {path!r}")
    if os.path.isdir(text):
        raise ValueError(f"path {text!r} is a directory; it must name the .onnx file to write")
    return text


# ----------------------------------------------------------------------------------------------
# The model


def _array_names(network: Network) -> dict[tuple[int, str], str]:
    return {(id(slot.layer), slot.attribute): key for key, slot in network._slots.items()}


def _architecture(network: Network) -> str | None:
    """Which ResNet a ResNet is (``resnet20``, ...), told from its parameter names; None for the
    other networks, whose class says it."""
    from .nets import identify_network
    from .resnet import ResNet
    from .serialization import ParamsFileError

    if not isinstance(network, ResNet):
        return None
    try:
        return identify_network(network.state_dict())
    except ParamsFileError:  # a ResNet of another depth, built with the constructor
        return None


def _description(
    network: Network,
    dtype: np.dtype[np.floating[Any]],
    input_dims: list[Any],
    outputs: int,
    softmax: bool,
    dataset: str | None,
    classes: list[str] | None,
    normalization: str | None,
    version: str,
) -> tuple[str, dict[str, str]]:
    """The model's doc string and metadata properties."""
    architecture = _architecture(network)
    shown = "(" + ", ".join(str(d) for d in input_dims) + ")"
    images = len(input_dims) == 4
    layout = "NCHW: batch, channels, height, width" if images else "N x D: batch, features"
    normalization_text = normalization or "not recorded (give it to to_onnx as normalization=)"
    outputs_text = (
        f"{LOGITS_NAME} ({dtype.name}, ({input_dims[0]}, {outputs})): the scores before softmax"
    )
    if softmax:
        outputs_text += f"; {PROBABILITIES_NAME}: their softmax over the classes"
    title = type(network).__name__ + (f" ({architecture})" if architecture else "")
    lines = [
        f"{title} exported by tinyconv {version}.",
        f"Input {INPUT_NAME!r}: {dtype.name}, shape {shown} ({layout}).",
        f"Input normalisation: {normalization_text}.",
        f"Outputs: {outputs_text}.",
        f"Training data set: {dataset or 'not recorded'}.",
        "Classes, in the order of the outputs: "
        + (", ".join(classes) if classes else "not recorded")
        + ".",
    ]
    metadata = {
        "tinyconv_version": version,
        "network": type(network).__name__,
        **({"architecture": architecture} if architecture else {}),
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(input_dims),
        "input_layout": "NCHW" if images else "ND",
        "input_dtype": dtype.name,
        "outputs": json.dumps([LOGITS_NAME] + ([PROBABILITIES_NAME] if softmax else [])),
    }
    for key, value in (("normalization", normalization), ("dataset", dataset)):
        if value is not None:
            metadata[key] = value
    if classes is not None:
        metadata["classes"] = json.dumps(classes)
    return "\n".join(lines), metadata


def to_onnx(
    network: Network,
    path: PathLike,
    *,
    batch_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    softmax: bool = False,
    input_shape: Sequence[int | None] | None = None,
    dtype: DTypeLike | None = None,
    dataset: str | None = None,
    classes: Sequence[str] | None = None,
    normalization: str | None = None,
) -> Any:
    """Write ``network`` as an ONNX model to ``path`` (atomically) and return the ``onnx.ModelProto``.

    The model computes ``network.predict(x)`` (inference: dropout scaled, batch norm with its
    running statistics) for the input ``input`` and returns ``logits``; ``softmax=True`` adds the
    output ``probabilities``. Works for every network of :mod:`tinyconv.nets` (TwoLayerNet,
    SimpleConvNet, DeepConvNet, MultiLayerNet(Extend), the ResNets) and any
    :class:`~tinyconv.network.Network` built from the layers and containers of tinyconv; a layer
    without an ONNX form raises ``TypeError`` naming it.

    * ``batch_size``: ``None`` (default) for a symbolic batch dimension (any batch size at run
      time), or a fixed positive size.
    * ``opset``: the ONNX operator set, from :data:`MIN_OPSET` to the newest the installed
      ``onnx`` knows (default :data:`DEFAULT_OPSET`).
    * ``input_shape``: one sample's shape, (C, H, W) or (D,); by default what the network was
      built for (DLfS's convnets: ``input_dim``; fully connected networks: ``(input_size,)``;
      ResNets: ``(in_channels, None, None)``, any image size, the height and width symbolic).
      ``None`` entries become symbolic dimensions. Checked against every layer.
    * ``dtype``: the model's float type, float32 or float64 (default: the network's own; a float64
      network exported as float32 has its parameters rounded). ONNX Runtime's CPU provider runs
      float64 models of fully connected networks only (see the module's notes).
    * ``dataset``, ``classes`` (class names in the order of the outputs), ``normalization`` (what
      the inputs must look like, e.g. "pixel values in [0, 1]"): recorded in the model's
      ``doc_string`` and ``metadata_props``, with tinyconv's version, the network, the input's
      name, shape, layout and dtype.

    Needs the ``onnx`` package (``pip install "tinyconv[onnx]"``; ``ImportError`` otherwise). The
    model passes ``onnx.checker.check_model(full_check=True)`` before it is written.
    """
    if not isinstance(network, Network):
        raise TypeError(
            f"network must be a tinyconv network (tinyconv.network.Network), got "
            f"{type(network).__name__}"
        )
    target = _check_path(path)
    batch_size = _checked_optional_int(batch_size, "batch_size", 1)
    if not isinstance(softmax, (bool, np.bool_)):
        raise TypeError(f"softmax must be a bool, got {softmax!r}")
    sample_shape = _checked_input_shape(input_shape, network)
    model_dtype = _model_dtype(dtype, network)
    dataset = _checked_text(dataset, "dataset")
    normalization = _checked_text(normalization, "normalization")
    class_names = _checked_classes(classes)
    given_opset: object = opset  # checked as the caller may pass anything
    if isinstance(given_opset, (bool, np.bool_)) or not isinstance(given_opset, numbers.Integral):
        raise TypeError(f"opset must be an int, got {opset!r}")
    onnx = _import_onnx()
    newest = int(onnx.defs.onnx_opset_version())
    if not MIN_OPSET <= int(opset) <= newest:
        raise ValueError(
            f"opset must be from {MIN_OPSET} to {newest} (the newest this onnx {onnx.__version__} "
            f"knows), got {opset}"
        )
    opset = int(opset)
    size = (
        sum(int(np.size(value)) for value in network.state_dict().values()) * model_dtype.itemsize
    )
    if size > _MAX_MODEL_BYTES:
        raise ValueError(
            f"the network's {size / 2**30:.1f} GiB of {model_dtype.name} parameters exceed the 2 GiB "
            f"an ONNX file holds without external data"
        )

    from . import __version__

    graph = _Graph(
        onnx, model_dtype, _array_names(network), (INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME)
    )
    x = _Tensor(INPUT_NAME, (batch_size, *sample_shape))
    try:
        logits = _export_layer(graph, network._root(), x, "")
    except _ShapeError as error:
        raise ValueError(
            f"input_shape {_describe_shape(sample_shape)} does not fit the {type(network).__name__}: "
            f"{error}"
        ) from None
    if len(logits.shape) != 2 or logits.shape[1] is None:
        raise ValueError(
            f"the {type(network).__name__} ends in a tensor of shape {_describe_shape(logits.shape)}, "
            f"not (batch, classes) logits"
        )
    outputs = int(logits.shape[1])
    if class_names is not None and len(class_names) != outputs:
        raise ValueError(
            f"classes names {len(class_names)} classes but the network has {outputs} outputs"
        )
    if logits.name == x.name:  # no layers at all: the logits are the input itself
        logits = _Tensor(graph.node("Identity", [x.name], "identity"), logits.shape)
    graph.rename_output(logits.name, LOGITS_NAME)

    element = getattr(onnx.TensorProto, _ONNX_DTYPES[model_dtype])
    symbols = iter(("height", "width") if len(sample_shape) == 3 else ())
    input_dims = ["batch" if batch_size is None else batch_size] + [
        next(symbols, f"dim{index}") if d is None else d
        for index, d in enumerate(sample_shape, start=1)
    ]
    batch_dim = input_dims[0]
    graph_outputs = [onnx.helper.make_tensor_value_info(LOGITS_NAME, element, [batch_dim, outputs])]
    if softmax:
        graph.rename_output(
            graph.node("Softmax", [LOGITS_NAME], "softmax", axis=1), PROBABILITIES_NAME
        )
        graph_outputs.append(
            onnx.helper.make_tensor_value_info(PROBABILITIES_NAME, element, [batch_dim, outputs])
        )
    doc, metadata = _description(
        network,
        model_dtype,
        input_dims,
        outputs,
        bool(softmax),
        dataset,
        class_names,
        normalization,
        __version__,
    )
    onnx_graph = onnx.helper.make_graph(
        graph.nodes,
        f"tinyconv_{type(network).__name__}",
        [onnx.helper.make_tensor_value_info(INPUT_NAME, element, input_dims)],
        graph_outputs,
        initializer=graph.initializers,
        doc_string=doc,
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    # The oldest IR version that carries this opset: the widest choice of runtimes that read it.
    model = onnx.helper.make_model(
        onnx_graph,
        opset_imports=opsets,
        producer_name="tinyconv",
        producer_version=__version__,
        doc_string=doc,
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
    )
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    with atomic_write(target) as handle:
        handle.write(model.SerializeToString())
    return model
