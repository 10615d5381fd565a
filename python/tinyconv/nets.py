"""The networks of *Deep Learning from Scratch* (DLfS), on tinyconv's layers.

* :class:`SimpleConvNet` -- chapter 7: conv - relu - pool - affine - relu - affine - softmax.
* :class:`DeepConvNet` -- chapter 8: six 3x3 convolutions in three pooled blocks, then
  affine - relu - dropout - affine - dropout - softmax, He initialisation.
* :class:`MultiLayerNet` -- chapter 6's fully connected network with DLfS's
  ``MultiLayerNetExtend`` options (batch norm, dropout, weight decay); also exported as
  :data:`MultiLayerNetExtend`.

Constructors, attribute names (``params``, ``layers``, ``last_layer``), parameter keys
(``W1``, ``b1``, ..., ``gamma1``, ``beta1``) and methods (``predict``, ``loss``, ``accuracy``,
``gradient``, ``numerical_gradient``, ``save_params``, ``load_params``) are DLfS's, so DLfS scripts
run unchanged apart from their imports. Additions, all keyword-only:

* ``dtype`` -- ``np.float32`` (default) or ``np.float64``. Parameters are stored and every
  computation runs in it; inputs of another dtype are converted once per call.
* ``seed`` / ``rng`` -- where initial weights and dropout masks come from: by default
  ``np.random`` as in DLfS (so ``np.random.seed`` reproduces a run, and in float64 the initial
  weights are bitwise DLfS's); ``seed=`` an int for a private ``numpy.random.Generator``;
  ``rng=`` a ``Generator`` or ``RandomState`` of your own.

``accuracy`` counts every sample. (DLfS's convnets evaluate only ``N // batch_size`` full batches
but divide by ``N``, silently under-reporting accuracy when ``batch_size`` does not divide ``N``.)

Parameter files: ``save_params``/``load_params`` read and write DLfS's pickles (a dict of arrays;
DLfS's trained files load directly) and NPZ archives, safely -- see :mod:`tinyconv.serialization`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .gradient import numerical_gradient
from .layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss
from .serialization import ParamsFileError, read_params, save_params

__all__ = ["Network", "SimpleConvNet", "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend"]

RandomSource = Union[np.random.Generator, np.random.RandomState, None]
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _network_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _random_source(seed: Optional[int], rng: RandomSource) -> RandomSource:
    if seed is not None and rng is not None:
        raise ValueError("pass either seed= or rng=, not both")
    if seed is not None:
        return np.random.default_rng(seed)
    if rng is not None and not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise TypeError(f"rng must be a numpy.random.Generator or RandomState, got {type(rng).__name__}")
    return rng


def _conv_output(size: int, filter_size: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - filter_size) // stride + 1


class Network:
    """What the networks share: input conversion, batched accuracy, backprop, parameter files.

    Subclasses build ``params``, ``layers`` (an ``OrderedDict`` or a list, as in DLfS),
    ``last_layer`` and ``_bindings``: ``(layer, attribute, key)`` triples that tie each layer
    attribute to the array stored under ``key`` -- in ``params`` for parameters, or among the
    extra state (batch-norm running statistics) for attributes whose key is not a parameter.
    """

    params: Dict[str, np.ndarray]
    layers: Union["OrderedDict[str, Any]", List[Any]]
    last_layer: SoftmaxWithLoss

    def __init__(self, dtype: Any, seed: Optional[int], rng: RandomSource):
        self.dtype = _network_dtype(dtype)
        self.rng = _random_source(seed, rng)
        self.params = {}
        self._bindings: List[Tuple[Any, str, str]] = []
        #: Loss of the last :meth:`gradient` call (the forward pass it differentiated).
        self.last_loss: Optional[float] = None

    # -- construction helpers ---------------------------------------------------------------

    def _random_normal(self, scale: float, shape: Tuple[int, ...]) -> np.ndarray:
        # Drawn in float64 and scaled exactly as DLfS (scale * randn(...)), then cast.
        source = np.random if self.rng is None else self.rng
        return (scale * source.standard_normal(shape)).astype(self.dtype, copy=False)

    def _zeros(self, size: int) -> np.ndarray:
        return np.zeros(size, dtype=self.dtype)

    def _layer_list(self) -> List[Any]:
        return list(self.layers.values()) if isinstance(self.layers, Mapping) else list(self.layers)

    # -- forward and backward ---------------------------------------------------------------

    def _input(self, x) -> np.ndarray:
        """``x`` as a C-contiguous array of the network's dtype (no copy when it already is)."""
        return np.ascontiguousarray(x, dtype=self.dtype)

    def predict(self, x, train_flg: bool = False) -> np.ndarray:
        """Logits (the scores before softmax) for a batch ``x``. ``train_flg`` switches dropout
        and batch norm to training behaviour."""
        x = self._input(x)
        temporary = False  # whether x is an array this pass made, which no layer keeps
        layers = self._layer_list()
        fused = None  # a ReLU whose work the convolution before it did
        for layer, following in zip(layers, layers[1:] + [None]):
            if layer is fused:
                x = layer.forward_applied(x)
            elif isinstance(layer, (Dropout, BatchNormalization)):
                x = layer.forward(x, train_flg)
            elif isinstance(layer, Pooling):
                # Training records the winners for backward; inference skips that work.
                x = layer.forward(x, record_argmax=train_flg)
            elif isinstance(layer, Relu):
                x = layer.forward(x, overwrite_x=temporary)
            elif isinstance(layer, Convolution) and isinstance(following, Relu):
                # Convolution -> ReLU: the ReLU runs in the convolution's epilogue.
                x = layer.forward(x, relu=True)
                fused = following
            else:
                x = layer.forward(x)
            # These layers return a fresh array and keep no reference to it: the next ReLU may
            # overwrite it. (Sigmoid and ReLU keep theirs; the caller's input is never written.)
            temporary = isinstance(layer, (Convolution, Affine, Pooling, Dropout, BatchNormalization))
        return x

    def _regularization(self) -> float:
        return 0.0

    def loss(self, x, t, train_flg: bool = False):
        """Mean cross-entropy of ``softmax(predict(x))`` against labels ``t`` (integer labels or
        one-hot rows), plus any weight-decay term."""
        y = self.predict(x, train_flg)
        return self.last_layer.forward(y, t) + self._regularization()

    def _gradient_loss(self, x: np.ndarray, t) -> Any:
        """The forward pass that :meth:`gradient` differentiates (training mode)."""
        return self.loss(x, t, train_flg=True)

    def accuracy(self, x, t, batch_size: int = 100) -> float:
        """Fraction of samples whose largest logit is the label (``t``: labels or one-hot rows),
        predicted in batches of ``batch_size`` in test mode.

        Every sample counts, including a last partial batch; DLfS skips that batch (while still
        dividing by ``len(x)``), so its figure is lower when ``batch_size`` does not divide ``len(x)``.
        """
        t = np.asarray(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        n = np.shape(x)[0]
        if n == 0:
            raise ValueError("accuracy of an empty set of samples is undefined")
        if len(t) != n:
            raise ValueError(f"x has {n} samples but t has {len(t)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        correct = 0
        for start in range(0, n, batch_size):
            y = self.predict(x[start:start + batch_size], train_flg=False)
            correct += int(np.count_nonzero(np.argmax(y, axis=1) == t[start:start + batch_size]))
        return correct / n

    def gradient(self, x, t) -> Dict[str, np.ndarray]:
        """Gradients of the loss with respect to every parameter, by backpropagation: a dict with
        the keys of ``params``. The loss of this forward pass is kept in ``last_loss``."""
        x = self._input(x)
        self.last_loss = self._gradient_loss(x, t)
        dout = self.last_layer.backward(1)
        layers = self._layer_list()
        done = None  # a ReLU whose backward pass the max pooling after it did
        for layer, before in zip(reversed(layers[1:]), reversed(layers[:-1])):
            if layer is done:
                continue
            if isinstance(layer, Pooling) and layer.mode == "max" and isinstance(before, Relu):
                # ReLU -> max pooling: the pooling's scatter skips what the ReLU would block.
                dout = layer.backward(dout, through_relu=True)
                done = before
            elif isinstance(layer, Relu):
                # Every dout here is a temporary of this pass: ReLU may overwrite it.
                dout = layer.backward(dout, overwrite_dout=True)
            else:
                dout = layer.backward(dout)
        first = layers[0]
        # The input gradient of the first layer is thrown away: skip computing it.
        if isinstance(first, (Convolution, Affine)):
            first.backward(dout, need_dx=False)
        elif first is not done:
            first.backward(dout)
        return self._collect_gradients()

    def _collect_gradients(self) -> Dict[str, np.ndarray]:
        gradient_attribute = {"W": "dW", "b": "db", "gamma": "dgamma", "beta": "dbeta"}
        found = {key: getattr(layer, gradient_attribute[attribute])
                 for layer, attribute, key in self._bindings if key in self.params}
        return {key: found[key] for key in self.params}  # in the order of params

    def _numerical_gradient(self, x, t, train_flg: bool) -> Dict[str, np.ndarray]:
        x = self._input(x)

        def loss_of_params(_):  # reads the parameters by reference, as DLfS's lambda does
            return self.loss(x, t, train_flg=train_flg)

        return {key: numerical_gradient(loss_of_params, value) for key, value in self.params.items()}

    # -- parameter state and files ----------------------------------------------------------

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every array that defines the network's function: the parameters (``params``, in order)
        followed by non-trainable state such as batch-norm running statistics (``running_mean1``,
        ``running_var1``, ...). The arrays are the live ones, not copies."""
        state: "OrderedDict[str, np.ndarray]" = OrderedDict(self.params)
        for layer, attribute, key in self._bindings:
            if key not in self.params:
                state[key] = getattr(layer, attribute)
        return state

    def _bind_layers(self) -> None:
        # Point every layer at the arrays in params (a caller may have replaced entries).
        for layer, attribute, key in self._bindings:
            if key in self.params:
                setattr(layer, attribute, self.params[key])

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, source: str = "state") -> None:
        """Copy arrays from ``state`` into the network, in place (layers, optimizers and anyone
        else holding the arrays see the new values), converting them to the network's dtype.

        Everything is checked before anything is copied: a missing key, an unknown key (when
        ``strict``) or a shape that does not fit raises :class:`ParamsFileError` naming the
        key and both shapes, and the network is left unchanged. With ``strict=False`` unknown keys
        are ignored and missing ones keep their current values.
        """
        targets = self.state_dict()
        problems = []
        updates: List[Tuple[np.ndarray, np.ndarray]] = []
        for key, target in targets.items():
            if key not in state:
                if strict:
                    problems.append(f"{key!r} is missing (the network expects shape {target.shape})")
                continue
            value = state[key]
            if isinstance(value, np.generic):
                value = np.asarray(value)
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
                problems.append(f"{key!r} is not an array of real numbers ({type(value).__name__})")
            elif value.shape != target.shape:
                problems.append(f"{key!r} has shape {value.shape}, the network expects {target.shape}")
            else:
                updates.append((target, value))
        if strict:
            unknown = [key for key in state if key not in targets]
            if unknown:
                problems.append(f"unknown keys {unknown} (the network has {list(targets)})")
        if problems:
            raise ParamsFileError(f"{source} does not fit this {type(self).__name__}: " + "; ".join(problems))
        for target, value in updates:
            np.copyto(target, value, casting="unsafe")
        self._bind_layers()

    def save_params(self, file_name: str = "params.pkl") -> None:
        """Save :meth:`state_dict` atomically: a DLfS-compatible pickle (a dict of arrays, in the
        network's dtype) for ``.pkl``/``.pickle``/``.p`` names, an NPZ archive otherwise."""
        save_params(self.state_dict(), file_name)

    def load_params(self, file_name: str = "params.pkl", strict: bool = True) -> None:
        """Load parameters saved by :meth:`save_params` or by DLfS's ``save_params`` (pickle or
        NPZ, recognised by content). The file cannot run code (see :mod:`tinyconv.serialization`).
        A truncated or corrupt file, or one whose keys or shapes do not fit, raises
        :class:`~tinyconv.serialization.ParamsFileError` and leaves the network unchanged.

        A file without batch-norm running statistics (DLfS never saves them) may be loaded with
        ``strict=False``; the running statistics then keep their current values.
        """
        self.load_state_dict(read_params(file_name), strict=strict, source=str(file_name))

    def __repr__(self) -> str:
        n_params = sum(int(np.size(v)) for v in self.params.values())
        return f"<{type(self).__name__}: {n_params} parameters, {self.dtype}>"


class SimpleConvNet(Network):
    """DLfS's chapter 7 network: conv - relu - pool - affine - relu - affine - softmax.

    Parameters are DLfS's: ``input_dim`` (C, H, W); ``conv_param`` with ``filter_num``,
    ``filter_size``, ``pad`` and ``stride``; ``hidden_size``; ``output_size``; ``weight_init_std``,
    the standard deviation of every initial weight. The pooling is 2x2 with stride 2. Layers are
    ``Conv1, Relu1, Pool1, Affine1, Relu2, Affine2``; params ``W1, b1, W2, b2, W3, b3``.

    Unlike DLfS, the size of ``W2`` follows from the real output geometry, so odd sizes and
    non-square inputs work (DLfS assumes a square input and an even convolution output).
    """

    def __init__(self, input_dim: Sequence[int] = (1, 28, 28),
                 conv_param: Optional[Mapping[str, int]] = None,
                 hidden_size: int = 100, output_size: int = 10, weight_init_std: float = 0.01,
                 *, dtype: Any = np.float32, seed: Optional[int] = None, rng: RandomSource = None):
        super().__init__(dtype, seed, rng)
        conv = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1, **(conv_param or {})}
        filter_num, filter_size = conv["filter_num"], conv["filter_size"]
        channels, height, width = input_dim
        conv_h = _conv_output(height, filter_size, conv["stride"], conv["pad"])
        conv_w = _conv_output(width, filter_size, conv["stride"], conv["pad"])
        if conv_h < 2 or conv_w < 2:
            raise ValueError(f"input {tuple(input_dim)} is too small for {filter_size}x{filter_size} "
                             "filters followed by 2x2 pooling")
        pooled_size = filter_num * (conv_h // 2) * (conv_w // 2)
        self.input_dim = tuple(input_dim)
        self.conv_param = conv

        # Drawn in DLfS's order, so with np.random.seed the float64 weights equal DLfS's.
        self.params["W1"] = self._random_normal(weight_init_std, (filter_num, channels, filter_size, filter_size))
        self.params["b1"] = self._zeros(filter_num)
        self.params["W2"] = self._random_normal(weight_init_std, (pooled_size, hidden_size))
        self.params["b2"] = self._zeros(hidden_size)
        self.params["W3"] = self._random_normal(weight_init_std, (hidden_size, output_size))
        self.params["b3"] = self._zeros(output_size)

        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"], conv["stride"], conv["pad"])
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

        for index, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
            self._bindings += [(self.layers[name], "W", f"W{index}"), (self.layers[name], "b", f"b{index}")]

    def numerical_gradient(self, x, t) -> Dict[str, np.ndarray]:
        """Gradients by central differences (slow; for checking :meth:`gradient`). Meaningful in
        float64: float32 cannot resolve DLfS's step h = 1e-4 accurately."""
        return self._numerical_gradient(x, t, train_flg=False)


_DEEP_CONV_DEFAULTS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


class DeepConvNet(Network):
    """DLfS's chapter 8 network (over 99 % on MNIST)::

        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        affine - relu - dropout - affine - dropout - softmax

    Constructor as DLfS (``input_dim``, ``conv_param_1`` ... ``conv_param_6``, ``hidden_size``,
    ``output_size``) plus ``dropout_ratio`` (DLfS fixes 0.5). Weights get He initialisation,
    ``sqrt(2 / fan_in)``; ``layers`` is a list, as in DLfS; params ``W1, b1, ..., W8, b8``.

    DLfS hard-codes the fan-ins and the 64*4*4 inputs of the first affine layer for 1x28x28
    input; here both follow from the actual geometry, which gives DLfS's numbers (and, under the
    same seed in float64, DLfS's initial weights) for its defaults and also works for other input
    sizes (each pooling halves the size, rounding down; at least 1x1 must remain).

    ``loss`` runs in training mode (dropout active) by default, as in DLfS.
    """

    _WEIGHTED_LAYER_INDICES = (0, 2, 5, 7, 10, 12, 15, 18)

    def __init__(self, input_dim: Sequence[int] = (1, 28, 28),
                 conv_param_1: Optional[Mapping[str, int]] = None,
                 conv_param_2: Optional[Mapping[str, int]] = None,
                 conv_param_3: Optional[Mapping[str, int]] = None,
                 conv_param_4: Optional[Mapping[str, int]] = None,
                 conv_param_5: Optional[Mapping[str, int]] = None,
                 conv_param_6: Optional[Mapping[str, int]] = None,
                 hidden_size: int = 50, output_size: int = 10,
                 *, dropout_ratio: float = 0.5,
                 dtype: Any = np.float32, seed: Optional[int] = None, rng: RandomSource = None):
        super().__init__(dtype, seed, rng)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        conv_params = [{**default, **(param or {})} for default, param in zip(_DEEP_CONV_DEFAULTS, given)]
        self.input_dim = tuple(input_dim)
        self.conv_params = conv_params

        channels, height, width = input_dim
        for index, conv in enumerate(conv_params, start=1):
            fan_in = channels * conv["filter_size"] * conv["filter_size"]
            shape = (conv["filter_num"], channels, conv["filter_size"], conv["filter_size"])
            self.params[f"W{index}"] = self._random_normal(math.sqrt(2.0 / fan_in), shape)
            self.params[f"b{index}"] = self._zeros(conv["filter_num"])
            channels = conv["filter_num"]
            height = _conv_output(height, conv["filter_size"], conv["stride"], conv["pad"])
            width = _conv_output(width, conv["filter_size"], conv["stride"], conv["pad"])
            if index % 2 == 0:  # 2x2 pooling with stride 2 after every second convolution
                height, width = (height - 2) // 2 + 1, (width - 2) // 2 + 1
            if height < 1 or width < 1:
                raise ValueError(f"input {tuple(input_dim)} is too small for DeepConvNet: nothing is "
                                 f"left after convolution {index}")
        flat_size = channels * height * width
        self.params["W7"] = self._random_normal(math.sqrt(2.0 / flat_size), (flat_size, hidden_size))
        self.params["b7"] = self._zeros(hidden_size)
        self.params["W8"] = self._random_normal(math.sqrt(2.0 / hidden_size), (hidden_size, output_size))
        self.params["b8"] = self._zeros(output_size)

        layers: List[Any] = []
        for index, conv in enumerate(conv_params, start=1):
            layers.append(Convolution(self.params[f"W{index}"], self.params[f"b{index}"], conv["stride"], conv["pad"]))
            layers.append(Relu())
            if index % 2 == 0:
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        layers.append(Affine(self.params["W7"], self.params["b7"]))
        layers.append(Relu())
        layers.append(Dropout(dropout_ratio, rng=self.rng))
        layers.append(Affine(self.params["W8"], self.params["b8"]))
        layers.append(Dropout(dropout_ratio, rng=self.rng))
        self.layers = layers
        self.last_layer = SoftmaxWithLoss()

        for index, layer_index in enumerate(self._WEIGHTED_LAYER_INDICES, start=1):
            layer = self.layers[layer_index]
            self._bindings += [(layer, "W", f"W{index}"), (layer, "b", f"b{index}")]

    def loss(self, x, t, train_flg: bool = True):
        """Training-mode loss by default, as DLfS's ``DeepConvNet.loss`` (dropout active)."""
        return super().loss(x, t, train_flg)


class MultiLayerNet(Network):
    """DLfS's fully connected network with the options of ``MultiLayerNetExtend``.

    ``input_size``, ``hidden_size_list`` (e.g. ``[100, 100, 100]``), ``output_size``;
    ``activation``: ``'relu'`` or ``'sigmoid'``; ``weight_init_std``: a number, or ``'relu'``/``'he'``
    for He (``sqrt(2 / fan_in)``) or ``'sigmoid'``/``'xavier'`` for Xavier (``sqrt(1 / fan_in)``);
    ``weight_decay_lambda``: L2 strength, ``0.5 * lambda * sum(W**2)`` added to the loss for every
    W; ``use_dropout`` with ``dropout_ration`` (DLfS's spelling); ``use_batchnorm``.

    Layers: ``Affine1, [BatchNorm1,] Activation_function1, [Dropout1,] ..., Affine{L+1}``; params
    ``W1, b1, ...`` then ``gamma1, beta1, ...`` with batch norm. ``predict`` and ``loss`` take
    ``train_flg=False`` as in DLfS; ``gradient`` differentiates the training-mode loss.
    With batch norm, :meth:`state_dict` and the parameter files also hold the running statistics
    (``running_mean1``, ``running_var1``, ...), which prediction needs.
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init_std: Union[str, float] = "relu",
                 weight_decay_lambda: float = 0, use_dropout: bool = False,
                 dropout_ration: float = 0.5, use_batchnorm: bool = False,
                 *, dtype: Any = np.float32, seed: Optional[int] = None, rng: RandomSource = None):
        super().__init__(dtype, seed, rng)
        activation_layers = {"sigmoid": Sigmoid, "relu": Relu}
        if activation not in activation_layers:
            raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(self.hidden_size_list)
        self.use_dropout = use_dropout
        self.weight_decay_lambda = weight_decay_lambda
        self.use_batchnorm = use_batchnorm

        self._init_weight(weight_init_std)

        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            affine = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            self.layers[f"Affine{idx}"] = affine
            self._bindings += [(affine, "W", f"W{idx}"), (affine, "b", f"b{idx}")]
            if use_batchnorm:
                size = self.hidden_size_list[idx - 1]
                self.params[f"gamma{idx}"] = np.ones(size, dtype=self.dtype)
                self.params[f"beta{idx}"] = self._zeros(size)
                norm = BatchNormalization(self.params[f"gamma{idx}"], self.params[f"beta{idx}"],
                                          running_mean=self._zeros(size), running_var=self._zeros(size))
                self.layers[f"BatchNorm{idx}"] = norm
                self._bindings += [(norm, "gamma", f"gamma{idx}"), (norm, "beta", f"beta{idx}"),
                                   (norm, "running_mean", f"running_mean{idx}"),
                                   (norm, "running_var", f"running_var{idx}")]
            self.layers[f"Activation_function{idx}"] = activation_layers[activation]()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ration, rng=self.rng)

        idx = self.hidden_layer_num + 1
        affine = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
        self.layers[f"Affine{idx}"] = affine
        self._bindings += [(affine, "W", f"W{idx}"), (affine, "b", f"b{idx}")]
        self.last_layer = SoftmaxWithLoss()

    def _init_weight(self, weight_init_std: Union[str, float]) -> None:
        all_size_list = [self.input_size] + self.hidden_size_list + [self.output_size]
        for idx in range(1, len(all_size_list)):
            scale = weight_init_std
            if str(weight_init_std).lower() in ("relu", "he"):
                scale = np.sqrt(2.0 / all_size_list[idx - 1])  # recommended with ReLU
            elif str(weight_init_std).lower() in ("sigmoid", "xavier"):
                scale = np.sqrt(1.0 / all_size_list[idx - 1])  # recommended with sigmoid
            self.params[f"W{idx}"] = self._random_normal(scale, (all_size_list[idx - 1], all_size_list[idx]))
            self.params[f"b{idx}"] = self._zeros(all_size_list[idx])

    def _regularization(self):
        if not self.weight_decay_lambda:
            return 0
        weight_decay = 0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params[f"W{idx}"]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W ** 2)
        return weight_decay

    def _collect_gradients(self) -> Dict[str, np.ndarray]:
        grads = super()._collect_gradients()
        if self.weight_decay_lambda:
            for idx in range(1, self.hidden_layer_num + 2):
                grads[f"W{idx}"] = grads[f"W{idx}"] + self.weight_decay_lambda * self.params[f"W{idx}"]
        return grads

    def numerical_gradient(self, X, T) -> Dict[str, np.ndarray]:
        """Gradients by central differences of the training-mode loss, as DLfS's
        ``MultiLayerNetExtend`` (with dropout the masks change between evaluations, so compare with
        dropout off or a fixed ``rng`` state). Slow; meaningful in float64."""
        return self._numerical_gradient(X, T, train_flg=True)


#: DLfS's name for the network with batch norm, dropout and weight decay.
MultiLayerNetExtend = MultiLayerNet
