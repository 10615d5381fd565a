""":class:`Network`: what every tinyconv network shares -- the DLfS interface (``params``,
``layers``, ``last_layer``, ``predict``, ``loss``, ``accuracy``, ``gradient``, parameter files) on
top of a :class:`~tinyconv.containers.Sequential` that runs the layers, plus state dicts, and
freezing parameters for transfer learning.

**Names.** Each parameter and buffer has a key -- DLfS's (``W1``, ``gamma1``, ``running_mean1``) for
the book's networks, PyTorch's (``layer1.0.conv1.weight``, ``bn1.running_var``) for ResNets -- and
the network keeps a map from key to the layer attribute that holds it (:class:`ArraySlot`).
``params`` holds the parameters (what optimizers update, in place), ``gradient()`` returns the same
keys (minus frozen ones), and ``state_dict()`` adds the buffers (batch-norm running statistics).
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np

from ._typing import Array, ArrayLike, DTypeLike, FloatArray, PathLike, Shape
from ._validate import as_positive_int
from .containers import ArraySlot, LayerList, Sequential, named_arrays
from .gradient import numerical_gradient
from .layers import SoftmaxWithLoss, StepLayer
from .serialization import ParamsFileError, read_params, save_params
from .summary import NetworkSummary

__all__ = ["Network", "RandomSource", "matches_prefix", "network_of_parameter"]

RandomSource = Union[np.random.Generator, np.random.RandomState, None]
_FLOAT_DTYPES: tuple[np.dtype[np.floating[Any]], ...] = (
    np.dtype(np.float32),
    np.dtype(np.float64),
)


def _network_dtype(dtype: DTypeLike) -> np.dtype[np.floating[Any]]:
    dt = np.dtype(dtype)
    for known in _FLOAT_DTYPES:
        if dt == known:
            return known
    raise ValueError(f"dtype must be float32 or float64, got {dt}")


def _random_source(seed: int | None, rng: RandomSource) -> RandomSource:
    if seed is not None and rng is not None:
        raise ValueError("pass either seed= or rng=, not both")
    if seed is not None:
        return np.random.default_rng(seed)
    if rng is not None and not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise TypeError(
            f"rng must be a numpy.random.Generator or RandomState, got {type(rng).__name__}"
        )
    return rng


# Every live network, so that tinyconv.gradient.numerical_gradient(f, W) can tell that W is a
# network's parameter and evaluate f with the network in float64 (see network_of_parameter).
_LIVE_NETWORKS: weakref.WeakSet[Network] = weakref.WeakSet()


def network_of_parameter(array: object) -> Network | None:
    """The live :class:`Network` whose ``params`` holds ``array`` itself (not a copy), or ``None``."""
    if not isinstance(array, np.ndarray):
        return None
    for network in list(_LIVE_NETWORKS):
        if any(value is array for value in network.params.values()):
            return network
    return None


def _frozen(layer: StepLayer) -> frozenset[str]:
    return frozenset(getattr(layer, "frozen", ()))


def _output(y: FloatArray | None) -> FloatArray:
    """A forward pass's output (a forward step never returns None; the step protocol's None is
    for input gradients nobody needs)."""
    if y is None:
        raise AssertionError("the layers' forward pass returned no output")
    return y


def matches_prefix(key: str, prefix: str) -> bool:
    """Whether parameter ``key`` lies under ``prefix``: the key itself, a dotted child of it
    (``layer4`` covers ``layer4.0.conv1.weight`` but not ``layer40.weight``), or, for a prefix
    ending in ``.``, anything that starts with it."""
    if prefix.endswith("."):
        return key.startswith(prefix)
    return key == prefix or key.startswith(prefix + ".")


class Network:
    """What the networks share: input conversion, batched accuracy, backprop, parameter files.

    Subclasses build ``params``, ``layers`` (an ``OrderedDict`` or a list, as in DLfS) and
    ``last_layer``, and name each array with :meth:`_register` (or :meth:`_register_tree`, which
    takes PyTorch-style names from the layer tree).
    """

    params: dict[str, Array]
    layers: LayerList
    last_layer: SoftmaxWithLoss

    def __init__(self, dtype: DTypeLike, seed: int | None, rng: RandomSource):
        self.dtype = _network_dtype(dtype)
        self.rng = _random_source(seed, rng)
        self.params = {}
        self._slots: OrderedDict[str, ArraySlot] = OrderedDict()
        self._sequential: Sequential | None = None
        #: Loss of the last :meth:`gradient` call (the forward pass it differentiated).
        self.last_loss: float | None = None
        _LIVE_NETWORKS.add(self)

    # -- construction helpers ---------------------------------------------------------------

    def _random_normal(self, scale: float, shape: Shape) -> FloatArray:
        # Drawn in float64 and scaled exactly as DLfS (scale * randn(...)), then cast.
        source = np.random if self.rng is None else self.rng
        weights: FloatArray = (scale * source.standard_normal(shape)).astype(self.dtype, copy=False)
        return weights

    def _zeros(self, size: int) -> FloatArray:
        return np.zeros(size, dtype=self.dtype)

    def _register(self, key: str, layer: StepLayer, attribute: str) -> None:
        """Name ``getattr(layer, attribute)`` ``key``: a parameter (it goes into ``params``) when
        the layer lists the attribute among its ``parameter_slots``, else a buffer."""
        gradients = {attr: grad for _, attr, grad in getattr(layer, "parameter_slots", ())}
        self._slots[key] = ArraySlot(key, layer, attribute, gradients.get(attribute))
        if attribute in gradients:
            self.params[key] = getattr(layer, attribute)

    def _register_tree(self, root: StepLayer) -> None:
        """Name every parameter and buffer of ``root`` as PyTorch would (``layer1.0.conv1.weight``),
        replacing whatever was registered before; ``state_dict()`` then follows PyTorch's order
        (layer by layer, each layer's parameters, then its buffers)."""
        self.params = {}
        self._slots = OrderedDict()
        for slot in named_arrays(root):
            self._slots[slot.name] = slot
            if slot.gradient is not None:
                self.params[slot.name] = getattr(slot.layer, slot.attribute)

    def _layer_list(self) -> list[StepLayer]:
        return list(self.layers.values()) if isinstance(self.layers, Mapping) else list(self.layers)

    def _root(self) -> Sequential:
        """The container that runs ``layers`` (made again if ``layers`` was replaced)."""
        if self._sequential is None or self._sequential.layers is not self.layers:
            self._sequential = Sequential(self.layers)
        return self._sequential

    # -- forward and backward ---------------------------------------------------------------

    def _input(self, x: ArrayLike) -> FloatArray:
        """``x`` as a C-contiguous array of the network's dtype (no copy when it already is)."""
        return np.ascontiguousarray(x, dtype=self.dtype)

    def predict(self, x: ArrayLike, train_flg: bool = False) -> FloatArray:
        """Logits (the scores before softmax) for a batch ``x``. ``train_flg`` switches dropout
        and batch norm to training behaviour (and makes the layers keep what a backward pass
        needs; inference keeps nothing, so each intermediate tensor is freed once used)."""
        y, _ = self._root().step_forward(self._input(x), bool(train_flg), False)
        return _output(y)

    def _regularization(self) -> float:
        return 0.0

    def loss(self, x: ArrayLike, t: ArrayLike, train_flg: bool = False) -> float:
        """Mean cross-entropy of ``softmax(predict(x))`` against labels ``t`` (integer labels or
        one-hot rows), plus any weight-decay term."""
        y = self.predict(x, train_flg)
        return self.last_layer.forward(y, t) + self._regularization()

    def _gradient_loss(self, x: FloatArray, t: ArrayLike) -> float:
        """The forward pass that :meth:`gradient` differentiates (training mode)."""
        return self.loss(x, t, train_flg=True)

    def accuracy(self, x: Array, t: ArrayLike, batch_size: int = 100) -> float:
        """Fraction of samples whose largest logit is the label (``t``: labels (N,), labels as a
        column (N, 1) as :class:`~tinyconv.layers.SoftmaxWithLoss` takes them, or one-hot rows),
        predicted in batches of ``batch_size`` in test mode.

        Every sample counts, including a last partial batch; DLfS skips that batch (while still
        dividing by ``len(x)``), so its figure is lower when ``batch_size`` does not divide ``len(x)``.
        """
        labels = np.asarray(t)
        n = int(np.shape(x)[0])
        # Labels as a column (N, 1) or row (1, N), as SoftmaxWithLoss takes them: told apart from
        # one-hot rows of a single class only by the number of classes, known after predict.
        column = labels.ndim == 2 and 1 in labels.shape and labels.size == n and n > 0
        if column:
            labels = labels.reshape(-1)
        elif labels.ndim != 1:
            labels = np.argmax(labels, axis=1)
        if n == 0:
            raise ValueError("accuracy of an empty set of samples is undefined")
        if len(labels) != n:
            raise ValueError(f"x has {n} samples but t has {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        correct = 0
        for start in range(0, n, batch_size):
            y = self.predict(x[start : start + batch_size], train_flg=False)
            if column and y.shape[1] == 1:  # one class: t holds one-hot rows, all of class 0
                labels, column = np.zeros(n, dtype=np.intp), False
            correct += int(
                np.count_nonzero(np.argmax(y, axis=1) == labels[start : start + batch_size])
            )
        return correct / n

    def gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """Gradients of the loss with respect to every parameter that is not frozen, by
        backpropagation: a dict with those keys of ``params``, in its order. The loss of this
        forward pass is kept in ``last_loss``."""
        self.last_loss = self._gradient_loss(self._input(x), t)
        dout = self.last_layer.backward(1)
        # The input gradient is thrown away: the first layer with trainable parameters skips it,
        # and the layers before it do not run.
        self._root().step_backward(dout, True, False)
        return self._collect_gradients()

    def _collect_gradients(self) -> dict[str, FloatArray]:
        grads: dict[str, FloatArray] = {}
        for key in self.params:
            slot = self._slots[key]
            if slot.gradient is not None and slot.attribute not in _frozen(slot.layer):
                grads[key] = getattr(slot.layer, slot.gradient)
        return grads

    @contextlib.contextmanager
    def float64_copy(self) -> Iterator[dict[int, FloatArray]]:
        """Within the ``with`` block the network computes in float64 on float64 copies of its
        floating arrays (parameters and buffers such as batch-norm running statistics); on leaving
        it, the original arrays -- never written meanwhile -- and the dtype are put back, so the
        network is as it was (random generators excepted: dropout draws masks as usual). Yields a
        map from ``id(original array)`` to its copy. This is how :meth:`numerical_gradient` gets
        DLfS's float64 figures from a float32 network; the ``params`` dict object stays the same."""
        saved_dtype = self.dtype
        swapped = []
        for key, slot in self._slots.items():
            value = getattr(slot.layer, slot.attribute)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                swapped.append((key, slot, value))
        copies: dict[int, FloatArray] = {}
        try:
            for key, slot, value in swapped:
                copy = copies.setdefault(id(value), np.array(value, dtype=np.float64, order="C"))
                setattr(slot.layer, slot.attribute, copy)
                if key in self.params:
                    self.params[key] = copy
            self.dtype = np.dtype(np.float64)
            yield copies
        finally:
            for key, slot, value in swapped:
                setattr(slot.layer, slot.attribute, value)
                if key in self.params:
                    self.params[key] = value
            self.dtype = saved_dtype

    def _numerical_gradient(
        self, x: ArrayLike, t: ArrayLike, train_flg: bool
    ) -> dict[str, FloatArray]:
        # Central differences with h = 1e-4 need float64: in float32 the perturbed parameter and
        # the loss are both rounded by about 1e-7 relative, which leaves errors of 1e-4..1e-3 in
        # the difference quotient and makes correct backprop look wrong. So the evaluation runs
        # on a float64 copy whatever the network's dtype, and the network is left untouched.
        with self.float64_copy():
            inputs = self._input(x)

            def loss_of_params(
                _: object,
            ) -> float:  # reads the parameters by reference, as DLfS's lambda
                return self.loss(inputs, t, train_flg=train_flg)

            return {
                key: numerical_gradient(loss_of_params, value) for key, value in self.params.items()
            }

    # -- transfer learning ------------------------------------------------------------------

    def _keys_under(self, prefixes: Iterable[str], what: str) -> list[str]:
        keys = []
        for prefix in prefixes:
            if not isinstance(prefix, str):
                raise TypeError(f"{what} takes parameter-name prefixes (str), got {prefix!r}")
            found = [key for key in self.params if matches_prefix(key, prefix)]
            if not found:
                raise ValueError(
                    f"{what}: no parameter is named {prefix!r} or lies under it "
                    f"(the parameters are {list(self.params)[:8]}{' ...' if len(self.params) > 8 else ''})"
                )
            keys += [key for key in found if key not in keys]
        return keys

    def freeze(self, *prefixes: str) -> list[str]:
        """Stop training the parameters under ``prefixes`` (``"layer1"``, ``"conv1.weight"``,
        ``"W1"``; none: every parameter). Frozen parameters stay in ``params`` but
        :meth:`gradient` leaves them out, so optimizers do not touch them, and the backward pass
        does not run the layers before the first trainable one. Batch-norm layers still update
        their running statistics in training mode (as in PyTorch). Returns the keys frozen."""
        keys = self._keys_under(prefixes, "freeze") if prefixes else list(self.params)
        for key in keys:
            slot = self._slots[key]
            slot.layer.frozen = _frozen(slot.layer) | {slot.attribute}
        return keys

    def unfreeze(self, *prefixes: str) -> list[str]:
        """Train the parameters under ``prefixes`` again (none: all). Returns the keys unfrozen."""
        keys = self._keys_under(prefixes, "unfreeze") if prefixes else list(self.params)
        for key in keys:
            slot = self._slots[key]
            slot.layer.frozen = _frozen(slot.layer) - {slot.attribute}
        return keys

    @property
    def frozen_keys(self) -> list[str]:
        """The keys of ``params`` that :meth:`freeze` froze, in ``params`` order."""
        return [
            key
            for key in self.params
            if self._slots[key].attribute in _frozen(self._slots[key].layer)
        ]

    # -- parameter state and files ----------------------------------------------------------

    def state_dict(self) -> OrderedDict[str, Array]:
        """Every array that defines the network's function: the parameters (``params``) and
        non-trainable state such as batch-norm running statistics, in the order they were named --
        DLfS's networks: the parameters, then ``running_mean1``, ``running_var1``, ...; ResNets:
        PyTorch's order (``bn1.weight``, ``bn1.bias``, ``bn1.running_mean``, ...). The arrays are
        the live ones, not copies."""
        state: OrderedDict[str, Array] = OrderedDict()
        for key, slot in self._slots.items():
            state[key] = (
                self.params[key]
                if slot.gradient is not None
                else getattr(slot.layer, slot.attribute)
            )
        return state

    def _bind_layers(self) -> None:
        # Point every layer at the arrays in params (a caller may have replaced entries).
        for key, value in self.params.items():
            slot = self._slots[key]
            setattr(slot.layer, slot.attribute, value)

    def load_state_dict(
        self, state: Mapping[str, Any], strict: bool = True, source: str = "state"
    ) -> None:
        """Copy arrays from ``state`` into the network, in place (layers, optimizers and anyone
        else holding the arrays see the new values), converting them to the network's dtype.

        Everything is checked before anything is copied: a missing key, an unknown key (when
        ``strict``) or a shape that does not fit raises :class:`ParamsFileError` naming the
        key and both shapes, and the network is left unchanged. With ``strict=False`` unknown keys
        are ignored and missing ones keep their current values.
        """
        if not isinstance(state, Mapping):
            raise ParamsFileError(
                f"{source} is not a mapping of names to arrays ({type(state).__name__})"
            )
        targets = self.state_dict()
        problems = []
        updates: list[tuple[Array, Array]] = []
        for key, target in targets.items():
            if key not in state:
                if strict:
                    problems.append(
                        f"{key!r} is missing (the network expects shape {target.shape})"
                    )
                continue
            value = state[key]
            if isinstance(value, np.generic):
                value = np.asarray(value)
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
                problems.append(f"{key!r} is not an array of real numbers ({type(value).__name__})")
            elif value.shape != target.shape:
                problems.append(
                    f"{key!r} has shape {value.shape}, the network expects {target.shape}"
                )
            else:
                updates.append((target, value))
        if strict:
            unknown = [key for key in state if key not in targets]
            if unknown:
                problems.append(f"unknown keys {unknown} (the network has {list(targets)})")
        if problems:
            raise ParamsFileError(
                f"{source} does not fit this {type(self).__name__}: " + "; ".join(problems)
            )
        for target, value in updates:
            np.copyto(target, value, casting="unsafe")
        self._bind_layers()

    def save_params(self, file_name: PathLike = "params.pkl") -> None:
        """Save :meth:`state_dict` atomically: a DLfS-compatible pickle (a dict of arrays, in the
        network's dtype) for ``.pkl``/``.pickle``/``.p`` names, safetensors for ``.safetensors``
        (needs the ``safetensors`` package), an NPZ archive otherwise."""
        save_params(self.state_dict(), file_name)

    def load_params(self, file_name: PathLike = "params.pkl", strict: bool = True) -> None:
        """Load parameters saved by :meth:`save_params` or by DLfS's ``save_params`` (pickle,
        NPZ or safetensors, recognised by content). The file cannot run code (see
        :mod:`tinyconv.serialization`). A truncated or corrupt file, or one whose keys or shapes
        do not fit, raises :class:`~tinyconv.serialization.ParamsFileError` and leaves the
        network unchanged.

        A file without batch-norm running statistics (DLfS never saves them) may be loaded with
        ``strict=False``; the running statistics then keep their current values.
        """
        self.load_state_dict(read_params(file_name), strict=strict, source=str(file_name))

    # -- what the network is made of ------------------------------------------------------

    def default_input_shape(self) -> Shape | None:
        """The shape of one input sample the network was built for ((C, H, W) or (D,)), or
        ``None`` when any size works and none is implied (subclasses say)."""
        return None

    def summary(
        self,
        input_shape: Sequence[int] | None = None,
        *,
        batch_size: int = 1,
        depth: int | None = None,
    ) -> NetworkSummary:
        """The table a learner wants first: each layer (its name, as in the parameter names),
        its output shape, its parameters and its multiply-adds for a batch of ``batch_size``
        samples of ``input_shape`` (one sample's shape, (C, H, W) or (D,); default: what the
        network was built for, :meth:`default_input_shape`), with the totals. ``print()`` it, or
        read its ``rows`` and ``total_parameters``/``total_multiply_adds``.

        ``depth``: how deep the printed table goes (``None``: every layer; ``1``: a ResNet's
        stem, stages and head; ``2``: each residual block as one row). Multiply-adds are counted
        for convolutions and fully connected layers (see :mod:`tinyconv.summary`). Nothing is
        computed on data: the shapes follow from the layers' sizes. A shape that does not fit
        the network raises ``ValueError`` naming the layer."""
        if input_shape is None:
            input_shape = self.default_input_shape()
            if input_shape is None:
                raise ValueError(
                    f"{type(self).__name__} takes inputs of any size: pass input_shape, "
                    "e.g. (3, 224, 224)"
                )
        given: object = input_shape  # checked as the caller may pass anything
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or not given:
            raise ValueError(
                f"input_shape must be one sample's shape, e.g. (1, 28, 28) or (784,), got {input_shape!r}"
            )
        sample = tuple(as_positive_int(d, f"input_shape[{i}]") for i, d in enumerate(input_shape))
        batch = as_positive_int(batch_size, "batch_size")
        if depth is not None:
            depth = as_positive_int(depth, "depth")
        shape = (batch, *sample)
        rows, _ = self._root().children_rows(shape, "")
        return NetworkSummary(f"{type(self).__name__} ({self.dtype})", shape, rows, depth)

    def __repr__(self) -> str:
        n_params = sum(int(np.size(v)) for v in self.params.values())
        return f"<{type(self).__name__}: {n_params} parameters, {self.dtype}>"
