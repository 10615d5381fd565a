"""The networks of *Deep Learning from Scratch* (DLfS), on tinyconv's layers.

* :class:`TwoLayerNet` -- chapter 5 (``ch05/two_layer_net.py``): affine - relu - affine - softmax.
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
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np

from ._typing import Array, ArrayLike, DTypeLike, FloatArray
from .layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    StepLayer,
)
from .network import Network, RandomSource
from .resnet import (
    RESNETS,
    ResNet,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet50,
    resnet56,
    resnet101,
    resnet152,
)
from .serialization import ParamsFileError, read_params

__all__ = [
    "NETWORK_NAMES",
    "DeepConvNet",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Network",
    "ResNet",
    "SimpleConvNet",
    "TwoLayerNet",
    "build_network",
    "head_prefixes",
    "identify_network",
    "is_resnet",
    "network_from_params",
    "replace_head",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet152",
    "training_defaults",
]


def _conv_output(size: int, filter_size: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - filter_size) // stride + 1


class TwoLayerNet(Network):
    """DLfS's chapter 5 network (``ch05/two_layer_net.py``, the layer-based version):
    affine - relu - affine - softmax.

    Constructor as DLfS: ``TwoLayerNet(input_size, hidden_size, output_size,
    weight_init_std=0.01)``; ``W1`` (input_size, hidden_size) and ``W2`` are drawn from
    ``weight_init_std * randn`` in DLfS's order, the biases ``b1``, ``b2`` start at zero. ``layers``
    is an ``OrderedDict`` ``Affine1, Relu1, Affine2``; the loss layer is ``last_layer``, also
    reachable under DLfS's name ``lastLayer``. Methods ``predict``, ``loss``, ``accuracy``,
    ``numerical_gradient`` and ``gradient`` as DLfS.

    Chapter 4's numerical-only ``two_layer_net.py`` has the same constructor and methods but a
    sigmoid hidden layer; its scripts run with this class too, with ReLU instead (as chapter 5).
    """

    #: The layers by name, in order (DLfS's ``network.layers['Conv1']``).
    layers: OrderedDict[str, StepLayer]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float = 0.01,
        *,
        dtype: DTypeLike = np.float32,
        seed: int | None = None,
        rng: RandomSource = None,
    ):
        super().__init__(dtype, seed, rng)
        # Checked as objects: a caller may pass anything.
        sizes: dict[str, object] = {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "output_size": output_size,
        }
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise (
                    ValueError
                    if isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                    else TypeError
                )(f"{name} must be a positive int, got {value!r}")
        std: object = weight_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float, np.number)):
            raise TypeError(f"weight_init_std must be a number, got {weight_init_std!r}")
        if not math.isfinite(float(weight_init_std)):
            raise ValueError(f"weight_init_std must be finite, got {weight_init_std!r}")
        self.input_size, self.hidden_size, self.output_size = (
            int(input_size),
            int(hidden_size),
            int(output_size),
        )

        self.params["W1"] = self._random_normal(
            weight_init_std, (self.input_size, self.hidden_size)
        )
        self.params["b1"] = self._zeros(self.hidden_size)
        self.params["W2"] = self._random_normal(
            weight_init_std, (self.hidden_size, self.output_size)
        )
        self.params["b2"] = self._zeros(self.output_size)

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

        for index, name in enumerate(("Affine1", "Affine2"), start=1):
            self._register(f"W{index}", self.layers[name], "W")
            self._register(f"b{index}", self.layers[name], "b")

    @property
    def lastLayer(self) -> SoftmaxWithLoss:
        """DLfS's name for :attr:`last_layer`."""
        return self.last_layer

    @lastLayer.setter
    def lastLayer(self, layer: SoftmaxWithLoss) -> None:
        self.last_layer = layer

    def default_input_shape(self) -> tuple[int]:
        """(input_size,): one flattened sample."""
        return (self.input_size,)

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """Gradients by central differences (slow; for checking :meth:`gradient`, as DLfS's
        ``ch05/gradient_check.py`` does), as float64 arrays: evaluated on a float64 copy of the
        network whatever its dtype, so the figures are DLfS's; the network is left untouched."""
        return self._numerical_gradient(x, t, train_flg=False)


class SimpleConvNet(Network):
    """DLfS's chapter 7 network: conv - relu - pool - affine - relu - affine - softmax.

    Parameters are DLfS's: ``input_dim`` (C, H, W); ``conv_param`` with ``filter_num``,
    ``filter_size``, ``pad`` and ``stride``; ``hidden_size``; ``output_size``; ``weight_init_std``,
    the standard deviation of every initial weight. The pooling is 2x2 with stride 2. Layers are
    ``Conv1, Relu1, Pool1, Affine1, Relu2, Affine2``; params ``W1, b1, W2, b2, W3, b3``.

    Unlike DLfS, the size of ``W2`` follows from the real output geometry, so odd sizes and
    non-square inputs work (DLfS assumes a square input and an even convolution output).
    """

    #: The layers by name, in order (DLfS's ``network.layers['Conv1']``).
    layers: OrderedDict[str, StepLayer]

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        conv_param: Mapping[str, int] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        *,
        dtype: DTypeLike = np.float32,
        seed: int | None = None,
        rng: RandomSource = None,
    ):
        super().__init__(dtype, seed, rng)
        conv = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1, **(conv_param or {})}
        filter_num, filter_size = conv["filter_num"], conv["filter_size"]
        channels, height, width = input_dim
        conv_h = _conv_output(height, filter_size, conv["stride"], conv["pad"])
        conv_w = _conv_output(width, filter_size, conv["stride"], conv["pad"])
        if conv_h < 2 or conv_w < 2:
            raise ValueError(
                f"input {tuple(input_dim)} is too small for {filter_size}x{filter_size} "
                "filters followed by 2x2 pooling"
            )
        pooled_size = filter_num * (conv_h // 2) * (conv_w // 2)
        self.input_dim = tuple(input_dim)
        self.conv_param = conv

        # Drawn in DLfS's order, so with np.random.seed the float64 weights equal DLfS's.
        self.params["W1"] = self._random_normal(
            weight_init_std, (filter_num, channels, filter_size, filter_size)
        )
        self.params["b1"] = self._zeros(filter_num)
        self.params["W2"] = self._random_normal(weight_init_std, (pooled_size, hidden_size))
        self.params["b2"] = self._zeros(hidden_size)
        self.params["W3"] = self._random_normal(weight_init_std, (hidden_size, output_size))
        self.params["b3"] = self._zeros(output_size)

        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(
            self.params["W1"], self.params["b1"], conv["stride"], conv["pad"]
        )
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

        for index, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
            self._register(f"W{index}", self.layers[name], "W")
            self._register(f"b{index}", self.layers[name], "b")

    def default_input_shape(self) -> tuple[int, ...]:
        """``input_dim`` (C, H, W), the image size the network was built for."""
        return self.input_dim

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """Gradients by central differences (slow; for checking :meth:`gradient`), as float64
        arrays: evaluated on a float64 copy of the network whatever its dtype (float32 cannot
        resolve DLfS's step h = 1e-4), so the figures are DLfS's; the network is left untouched."""
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

    #: DLfS's list of layers (index it by position).
    layers: list[StepLayer]

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        conv_param_1: Mapping[str, int] | None = None,
        conv_param_2: Mapping[str, int] | None = None,
        conv_param_3: Mapping[str, int] | None = None,
        conv_param_4: Mapping[str, int] | None = None,
        conv_param_5: Mapping[str, int] | None = None,
        conv_param_6: Mapping[str, int] | None = None,
        hidden_size: int = 50,
        output_size: int = 10,
        *,
        dropout_ratio: float = 0.5,
        dtype: DTypeLike = np.float32,
        seed: int | None = None,
        rng: RandomSource = None,
    ):
        super().__init__(dtype, seed, rng)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        conv_params = [
            {**default, **(param or {})} for default, param in zip(_DEEP_CONV_DEFAULTS, given)
        ]
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
                raise ValueError(
                    f"input {tuple(input_dim)} is too small for DeepConvNet: nothing is "
                    f"left after convolution {index}"
                )
        flat_size = channels * height * width
        self.params["W7"] = self._random_normal(
            math.sqrt(2.0 / flat_size), (flat_size, hidden_size)
        )
        self.params["b7"] = self._zeros(hidden_size)
        self.params["W8"] = self._random_normal(
            math.sqrt(2.0 / hidden_size), (hidden_size, output_size)
        )
        self.params["b8"] = self._zeros(output_size)

        layers: list[Any] = []
        weighted: list[Any] = []
        for index, conv in enumerate(conv_params, start=1):
            weighted.append(
                Convolution(
                    self.params[f"W{index}"], self.params[f"b{index}"], conv["stride"], conv["pad"]
                )
            )
            layers += [weighted[-1], Relu()]
            if index % 2 == 0:
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        weighted.append(Affine(self.params["W7"], self.params["b7"]))
        layers += [weighted[-1], Relu(), Dropout(dropout_ratio, rng=self.rng)]
        weighted.append(Affine(self.params["W8"], self.params["b8"]))
        layers += [weighted[-1], Dropout(dropout_ratio, rng=self.rng)]
        self.layers = layers
        self.last_layer = SoftmaxWithLoss()

        for index, layer in enumerate(weighted, start=1):
            self._register(f"W{index}", layer, "W")
            self._register(f"b{index}", layer, "b")

    def default_input_shape(self) -> tuple[int, ...]:
        """``input_dim`` (C, H, W), the image size the network was built for."""
        return self.input_dim

    def loss(self, x: ArrayLike, t: ArrayLike, train_flg: bool = True) -> float:
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

    #: The layers by name, in order (DLfS's ``network.layers['Conv1']``).
    layers: OrderedDict[str, StepLayer]

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0,
        use_dropout: bool = False,
        dropout_ration: float = 0.5,
        use_batchnorm: bool = False,
        *,
        dtype: DTypeLike = np.float32,
        seed: int | None = None,
        rng: RandomSource = None,
    ):
        super().__init__(dtype, seed, rng)
        activation_layers: dict[str, Callable[[], StepLayer]] = {"sigmoid": Sigmoid, "relu": Relu}
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
            if use_batchnorm:
                size = self.hidden_size_list[idx - 1]
                self.params[f"gamma{idx}"] = np.ones(size, dtype=self.dtype)
                self.params[f"beta{idx}"] = self._zeros(size)
                norm = BatchNormalization(
                    self.params[f"gamma{idx}"],
                    self.params[f"beta{idx}"],
                    running_mean=self._zeros(size),
                    running_var=self._zeros(size),
                )
                self.layers[f"BatchNorm{idx}"] = norm
            self.layers[f"Activation_function{idx}"] = activation_layers[activation]()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ration, rng=self.rng)

        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
        self.last_layer = SoftmaxWithLoss()

        # Keys in DLfS's order: W1, b1, ..., then gamma1, beta1, ...; buffers after.
        for idx in range(1, self.hidden_layer_num + 2):
            self._register(f"W{idx}", self.layers[f"Affine{idx}"], "W")
            self._register(f"b{idx}", self.layers[f"Affine{idx}"], "b")
        if use_batchnorm:
            for idx in range(1, self.hidden_layer_num + 1):
                self._register(f"gamma{idx}", self.layers[f"BatchNorm{idx}"], "gamma")
                self._register(f"beta{idx}", self.layers[f"BatchNorm{idx}"], "beta")
            for idx in range(1, self.hidden_layer_num + 1):
                self._register(f"running_mean{idx}", self.layers[f"BatchNorm{idx}"], "running_mean")
                self._register(f"running_var{idx}", self.layers[f"BatchNorm{idx}"], "running_var")

    def default_input_shape(self) -> tuple[int]:
        """(input_size,): one flattened sample."""
        return (self.input_size,)

    def _init_weight(self, weight_init_std: str | float) -> None:
        all_size_list = [self.input_size, *self.hidden_size_list, self.output_size]
        for idx in range(1, len(all_size_list)):
            scale: float
            if str(weight_init_std).lower() in ("relu", "he"):
                scale = np.sqrt(2.0 / all_size_list[idx - 1])  # recommended with ReLU
            elif str(weight_init_std).lower() in ("sigmoid", "xavier"):
                scale = np.sqrt(1.0 / all_size_list[idx - 1])  # recommended with sigmoid
            elif isinstance(weight_init_std, str):
                raise ValueError(
                    "weight_init_std must be a number or 'relu', 'he', 'sigmoid', 'xavier', got "
                    f"{weight_init_std!r}"
                )
            else:
                scale = weight_init_std
            self.params[f"W{idx}"] = self._random_normal(
                scale, (all_size_list[idx - 1], all_size_list[idx])
            )
            self.params[f"b{idx}"] = self._zeros(all_size_list[idx])

    def _regularization(self) -> float:
        if not self.weight_decay_lambda:
            return 0
        weight_decay: float = 0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params[f"W{idx}"]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W**2)
        return weight_decay

    def _collect_gradients(self) -> dict[str, FloatArray]:
        grads = super()._collect_gradients()
        if self.weight_decay_lambda:
            for idx in range(1, self.hidden_layer_num + 2):
                grads[f"W{idx}"] = (
                    grads[f"W{idx}"] + self.weight_decay_lambda * self.params[f"W{idx}"]
                )
        return grads

    def numerical_gradient(self, X: ArrayLike, T: ArrayLike) -> dict[str, FloatArray]:
        """Gradients by central differences of the training-mode loss, as DLfS's
        ``MultiLayerNetExtend`` (with dropout the masks change between evaluations, so compare with
        dropout off or a fixed ``rng`` state). Slow. Evaluated on a float64 copy of the network
        whatever its dtype and returned as float64 arrays, so the figures are DLfS's; the network,
        batch-norm running statistics included, is left untouched."""
        return self._numerical_gradient(X, T, train_flg=True)


#: DLfS's name for the network with batch norm, dropout and weight decay.
MultiLayerNetExtend = MultiLayerNet


# ----------------------------------------------------------------------------------------------
# Networks by name, and rebuilt from parameter files

#: Every network :func:`build_network` and :func:`network_from_params` know, by name.
NETWORK_NAMES: tuple[str, ...] = ("simple", "deep", *tuple(RESNETS))

_NETWORK_TITLES = {"simple": "SimpleConvNet", "deep": "DeepConvNet"}
# name: (stem, block, blocks per stage) -- what tells the ResNets apart in a parameter file.
_RESNET_SHAPES = {
    "resnet18": ("imagenet", "basic", (2, 2, 2, 2)),
    "resnet34": ("imagenet", "basic", (3, 4, 6, 3)),
    "resnet50": ("imagenet", "bottleneck", (3, 4, 6, 3)),
    "resnet101": ("imagenet", "bottleneck", (3, 4, 23, 3)),
    "resnet152": ("imagenet", "bottleneck", (3, 8, 36, 3)),
    "resnet20": ("cifar", "basic", (3, 3, 3)),
    "resnet32": ("cifar", "basic", (5, 5, 5)),
    "resnet56": ("cifar", "basic", (9, 9, 9)),
}
_DLFS_KEYS = {
    "simple": frozenset(f"{kind}{i}" for kind in "Wb" for i in range(1, 4)),
    "deep": frozenset(f"{kind}{i}" for kind in "Wb" for i in range(1, 9)),
}
# DLfS's ch07/train_convnet.py, the SimpleConvNet that build_network("simple") makes.
_DLFS_CONV_PARAM = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
_DLFS_HIDDEN_SIZE = 100
_DLFS_WEIGHT_INIT_STD = 0.01
_DEFAULT_IMAGE_SIZE = (28, 28)  # DLfS's MNIST; what the DLfS networks are sized for unless told
_RESNET_KEY = re.compile(r"layer([0-9]+)\.([0-9]+)\.")
_BOTTLENECK_KEY = re.compile(r"layer[0-9]+\.[0-9]+\.conv3\.weight")
_BUFFER_SUFFIXES = (".running_mean", ".running_var")
_COUNTER_SUFFIX = ".num_batches_tracked"


def _checked_name(name: Any, allow_auto: bool = False) -> str:
    choices = (("auto",) if allow_auto else ()) + NETWORK_NAMES
    if not isinstance(name, str):
        raise TypeError(f"net must be a str, one of {choices}, got {type(name).__name__}")
    if name not in choices:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(choices)}")
    return name


def _checked_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return int(value)


def _checked_input_shape(input_shape: Any) -> tuple[int, int, int] | None:
    if input_shape is None:
        return None
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
    ):
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    channels, height, width = (
        _checked_count(value, "input_shape entries") for value in input_shape
    )
    return channels, height, width


def is_resnet(name: str) -> bool:
    """Whether ``name`` (one of :data:`NETWORK_NAMES`) is a residual network."""
    return _checked_name(name) in RESNETS


def head_prefixes(name: str) -> tuple[str, ...]:
    """The parameter keys of the network's classifier, the layer that transfer learning replaces
    and trains fastest: ``fc`` (``fc.weight``, ``fc.bias``) for a ResNet, the last affine layer
    for DLfS's networks (``W3``, ``b3`` of SimpleConvNet; ``W8``, ``b8`` of DeepConvNet)."""
    name = _checked_name(name)
    if name in RESNETS:
        return ("fc",)
    return ("W3", "b3") if name == "simple" else ("W8", "b8")


def training_defaults(name: str) -> dict[str, Any]:
    """How the network ``name`` is trained unless told otherwise: DLfS's chapter 7 settings for
    its networks (Adam, lr 0.001, batches of 100, a constant rate, batches drawn with
    replacement); for the ResNets the common recipe (He et al.'s momentum SGD with lr 0.1 and
    batches of 128, the rate decayed along a cosine, every image once per epoch). Keys: ``optimizer``, ``lr``,
    ``batch_size``, ``lr_schedule``, ``sampling`` (as :class:`~tinyconv.trainer.Trainer` takes them);
    Momentum's own default momentum is 0.9."""
    if is_resnet(name):
        return {
            "optimizer": "Momentum",
            "lr": 0.1,
            "batch_size": 128,
            "lr_schedule": "cosine",
            "sampling": "permutation",
        }
    return {
        "optimizer": "Adam",
        "lr": 0.001,
        "batch_size": 100,
        "lr_schedule": "constant",
        "sampling": "replacement",
    }


def reference_setup(name: str) -> tuple[int, tuple[int, int, int]]:
    """(classes, input shape (C, H, W)) that network ``name`` is usually described with: the
    ImageNet ResNets 1000 classes of 3x224x224 images (torchvision's, so the parameter counts are
    the published ones: 25,557,032 for ResNet-50), the CIFAR ResNets 10 classes of 32x32 images,
    DLfS's networks 10 classes of 28x28 images (MNIST); one channel but for the ImageNet ResNets,
    as :func:`build_network` makes them."""
    stem = _RESNET_SHAPES[name][0] if _checked_name(name) in _RESNET_SHAPES else None
    if stem == "imagenet":
        return 1000, (3, 224, 224)
    return 10, ((1, 32, 32) if stem == "cifar" else (1, *_DEFAULT_IMAGE_SIZE))


def build_network(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int | None = None,
    input_shape: Sequence[int] | None = None,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
) -> Network:
    """A freshly initialised network ``name`` (one of :data:`NETWORK_NAMES`) for ``num_classes``.

    ``"simple"`` is DLfS's ch07 SimpleConvNet (30 5x5 filters, 100 hidden units, weights with
    standard deviation 0.01), ``"deep"`` DLfS's ch08 DeepConvNet; both need the image size:
    ``input_shape`` (C, H, W), by default ``(in_channels, 28, 28)``. The ResNets take any image
    size and need only ``in_channels`` (default: ``input_shape[0]``, else 1). ``seed``: where the
    initial weights come from (default: ``np.random``, as in DLfS).
    """
    name = _checked_name(name)
    num_classes = _checked_count(num_classes, "num_classes")
    shape = _checked_input_shape(input_shape)
    if in_channels is not None:
        in_channels = _checked_count(in_channels, "in_channels")
        if shape is not None and shape[0] != in_channels:
            raise ValueError(f"in_channels {in_channels} disagrees with input_shape {shape}")
    channels = in_channels or (shape[0] if shape is not None else 1)
    shape = shape or (channels, *_DEFAULT_IMAGE_SIZE)
    if name in RESNETS:
        return RESNETS[name](num_classes, channels, dtype=dtype, seed=seed)
    if name == "simple":
        return SimpleConvNet(
            input_dim=shape,
            conv_param=dict(_DLFS_CONV_PARAM),
            hidden_size=_DLFS_HIDDEN_SIZE,
            output_size=num_classes,
            weight_init_std=_DLFS_WEIGHT_INIT_STD,
            dtype=dtype,
            seed=seed,
        )
    return DeepConvNet(input_dim=shape, output_size=num_classes, dtype=dtype, seed=seed)


def _some(keys: Sequence[str], limit: int = 8) -> str:
    """Keys for a message: all of a few, the first ``limit`` of many and how many more."""
    shown = ", ".join(repr(key) for key in keys[:limit])
    return shown + (f" and {len(keys) - limit:,} more" if len(keys) > limit else "")


def _arrays(params: Any, source: str) -> dict[str, Array]:
    """``params`` as a dict of str -> ndarray of real numbers, or an error naming what is not."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping of names to arrays or a file name, got {type(params).__name__}"
        )
    arrays: dict[str, Array] = {}
    bad = []
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if (
            not isinstance(key, str)
            or not isinstance(value, np.ndarray)
            or value.dtype.kind not in "biuf"
        ):
            bad.append(key)
        else:
            arrays[key] = value
    if bad:
        raise ParamsFileError(
            f"{source}: not a str name with an array of real numbers: {_some(bad)}"
        )
    return arrays


def _resnet_structure(params: Mapping[str, Array], source: str) -> tuple[str, str, tuple[int, ...]]:
    """(stem, block, blocks per stage) of a ResNet's parameters, from the key names and the stem
    convolution's shape alone (nothing is built)."""
    stem_weight = params.get("conv1.weight")
    if stem_weight is None or stem_weight.ndim != 4:
        shape = None if stem_weight is None else stem_weight.shape
        raise ParamsFileError(
            f"{source}: a ResNet needs a 4-D 'conv1.weight' (its stem), got "
            f"{'none' if shape is None else f'shape {shape}'}"
        )
    stems: dict[tuple[int, ...], str] = {(7, 7): "imagenet", (3, 3): "cifar"}
    stem = stems.get(stem_weight.shape[2:])
    if stem is None:
        raise ParamsFileError(
            f"{source}: 'conv1.weight' has shape {stem_weight.shape}; a ResNet's stem has 7x7 "
            f"(ImageNet) or 3x3 (CIFAR) filters"
        )
    blocks: dict[int, set[int]] = {}
    for key in params:
        match = _RESNET_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    counts = []
    for stage in range(1, len(blocks) + 1):
        indices = blocks.get(stage, set())
        if not indices or indices != set(range(len(indices))):
            raise ParamsFileError(
                f"{source}: the blocks of the ResNet's stages are not numbered layer1.0, "
                f"layer1.1, ...: stages {sorted(blocks)[:8]}, layer{stage} has blocks "
                f"{sorted(indices)[:8]}"
            )
        counts.append(len(indices))
    block = "bottleneck" if any(_BOTTLENECK_KEY.fullmatch(key) for key in params) else "basic"
    return stem, block, tuple(counts)


def identify_network(params: Mapping[str, Any], source: str = "params") -> str:
    """Which of :data:`NETWORK_NAMES` the parameters (a mapping of names to arrays, as
    ``state_dict()`` or a parameter file holds them) belong to, from their names and the shape of
    the first convolution -- nothing is built. ``W1``..``b3``: ``"simple"``; ``W1``..``b8``:
    ``"deep"``; torchvision names (``conv1.weight`` ... ``fc.bias``): the ResNet whose stem (7x7:
    ImageNet, 3x3: CIFAR), block type (``conv3`` in a block: bottleneck) and blocks per stage
    they have. Raises :class:`~tinyconv.serialization.ParamsFileError` (a ``ValueError``) when
    they fit none."""
    arrays = _arrays(params, source)
    keys = frozenset(arrays)
    for name, expected in _DLFS_KEYS.items():
        if keys == expected:
            return name
    if "conv1.weight" in keys or "fc.weight" in keys:
        structure = _resnet_structure(arrays, source)
        for name, shape in _RESNET_SHAPES.items():
            if shape == structure:
                return name
        stem, block, counts = structure
        raise ParamsFileError(
            f"{source}: a ResNet with a {stem} stem and {block} blocks {list(counts)} per stage "
            f"is none of tinyconv's ({', '.join(RESNETS)})"
        )
    raise ParamsFileError(
        f"cannot tell which network the parameters in {source} belong to (keys "
        f"{_some(sorted(keys))}); W1..b3 is a SimpleConvNet, W1..b8 a DeepConvNet, "
        f"conv1.weight ... fc.bias a ResNet"
    )


def _check_channels(
    weight_key: str, weight: Array, shape: tuple[int, int, int] | None, source: str
) -> None:
    if shape is not None and weight.shape[1] != shape[0]:
        raise ParamsFileError(
            f"{source}: {weight_key} has shape {weight.shape}, filters over {weight.shape[1]} "
            f"input channels, but the input {shape} has {shape[0]}"
        )


def _dlfs_from_params(
    params: dict[str, Array],
    name: str,
    shape: tuple[int, int, int] | None,
    dtype: Any,
    source: str,
) -> Network:
    """A SimpleConvNet or DeepConvNet sized after ``params`` (filter count and size, hidden and
    output sizes; padding 0 and stride 1 for SimpleConvNet, as in DLfS), with them loaded. Every
    shape is checked before the network is built, so a file of another architecture is a clear
    error and the network never allocates more than the file holds."""
    title = _NETWORK_TITLES[name]
    first_key, hidden_key, output_key = (
        ("W1", "W2", "W3") if name == "simple" else ("W1", "W7", "W8")
    )
    for key in (first_key, hidden_key, output_key):
        if key not in params:
            raise ParamsFileError(f"{source} has no {key!r}, which a {title} needs")
    first, hidden_w, output_w = params[first_key], params[hidden_key], params[output_key]
    if first.ndim != 4 or hidden_w.ndim != 2 or output_w.ndim != 2:
        raise ParamsFileError(
            f"{source}: {first_key}, {hidden_key}, {output_key} have shapes {first.shape}, "
            f"{hidden_w.shape}, {output_w.shape}; a {title} needs 4-D, 2-D, 2-D"
        )
    _check_channels(first_key, first, shape, source)
    shape = shape or (first.shape[1], *_DEFAULT_IMAGE_SIZE)
    hidden, outputs = hidden_w.shape[1], output_w.shape[1]
    if min(first.shape) < 1 or hidden < 1 or outputs < 1:
        raise ParamsFileError(
            f"{source}: {first_key}, {hidden_key}, {output_key} have shapes {first.shape}, "
            f"{hidden_w.shape}, {output_w.shape}; no dimension may be 0"
        )
    if name == "simple":
        filter_num, _, filter_h, filter_w = first.shape
        if filter_h != filter_w:
            raise ParamsFileError(
                f"{source}: W1 has shape {first.shape}; a SimpleConvNet's filters are square"
            )
        conv_param = {"filter_num": filter_num, "filter_size": filter_h, "pad": 0, "stride": 1}

        def build(hidden_size: int, output_size: int) -> Network:
            return SimpleConvNet(
                input_dim=shape,
                conv_param=conv_param,
                hidden_size=hidden_size,
                output_size=output_size,
                dtype=dtype,
                seed=0,
            )
    else:

        def build(hidden_size: int, output_size: int) -> Network:
            return DeepConvNet(
                input_dim=shape,
                hidden_size=hidden_size,
                output_size=output_size,
                dtype=dtype,
                seed=0,
            )

    try:
        # A probe with one hidden unit and one output costs little more than W1 itself; its
        # shapes, with the file's hidden and output sizes put in, are what the file must hold.
        probe = build(1, 1).params
    except ValueError as error:  # e.g. filters larger than the image
        raise ParamsFileError(f"{source} does not fit a {title}: {error}") from None
    expected = {key: value.shape for key, value in probe.items()}
    expected[hidden_key] = (probe[hidden_key].shape[0], hidden)
    expected["b" + hidden_key[1:]] = (hidden,)
    expected[output_key] = (hidden, outputs)
    expected["b" + output_key[1:]] = (outputs,)
    problems = [
        f"{key} has shape {params[key].shape}, expected {expected_shape}"
        for key, expected_shape in expected.items()
        if key in params and params[key].shape != expected_shape
    ]
    missing = [key for key in expected if key not in params]
    unknown = [key for key in params if key not in expected]
    if missing:
        problems.append(f"{_some(missing)} missing")
    if unknown:
        problems.append(f"unknown keys {_some(unknown)}")
    if problems:
        raise ParamsFileError(
            f"{source} does not fit a {title} for input {shape}: " + "; ".join(problems)
        )
    network = build(hidden, outputs)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 values beyond float32 become inf
        network.load_state_dict(params, source=source)
    return network


def _resnet_from_params(
    params: dict[str, Array],
    name: str,
    shape: tuple[int, int, int] | None,
    dtype: Any,
    source: str,
) -> Network:
    """The ResNet ``name`` with ``params`` loaded: classes from ``fc.weight``, input channels from
    ``conv1.weight``. The running statistics are required: without them batch norm would
    normalise with mean 0 and variance 1 and the network would predict nonsense."""
    fc_weight = params.get("fc.weight")
    if fc_weight is None or fc_weight.ndim != 2 or min(fc_weight.shape) < 1:
        raise ParamsFileError(
            f"{source}: a {name} needs a 2-D 'fc.weight' (classes, features), got "
            f"{'none' if fc_weight is None else f'shape {fc_weight.shape}'}"
        )
    stem = params["conv1.weight"]
    if stem.shape[1] < 1:
        raise ParamsFileError(f"{source}: 'conv1.weight' has shape {stem.shape}: no input channels")
    _check_channels("conv1.weight", stem, shape, source)
    statistics = [key for key in params if key.endswith(_BUFFER_SUFFIXES)]
    if not statistics:
        raise ParamsFileError(
            f"{source} holds a {name}'s parameters but not its batch-norm running statistics "
            f"(bn1.running_mean, bn1.running_var, ...), without which its predictions are "
            f"meaningless; save the whole state_dict() (Network.save_params does)"
        )
    network = RESNETS[name](int(fc_weight.shape[0]), int(stem.shape[1]), dtype=dtype, seed=0)
    targets = network.state_dict()
    counters = [key for key in targets if key.endswith(_COUNTER_SUFFIX)]
    if not any(key in params for key in counters):
        # Files from before PyTorch 0.4.1 lack the counters; momentum-based batch norm ignores them.
        params = {**{key: targets[key] for key in counters}, **params}
    problems = [
        f"{key!r} has shape {params[key].shape}, expected {target.shape}"
        for key, target in targets.items()
        if key in params and params[key].shape != target.shape
    ]
    missing = [key for key in targets if key not in params]
    unknown = [key for key in params if key not in targets]
    problems += ([f"{_some(missing)} missing"] if missing else []) + (
        [f"unknown keys {_some(unknown)}"] if unknown else []
    )
    if problems:
        raise ParamsFileError(f"{source} does not fit a {name}: " + "; ".join(problems))
    with np.errstate(over="ignore", invalid="ignore"):
        network.load_state_dict(params, source=source)
    return network


def network_from_params(
    params: Mapping[str, Any] | str | os.PathLike[str],
    *,
    net: str = "auto",
    input_shape: Sequence[int] | None = None,
    dtype: DTypeLike = np.float32,
    source: str | None = None,
) -> Network:
    """The network that ``params`` belong to, built and loaded: ``params`` is a parameter file's
    name (``.pkl``, ``.npz``, ``.safetensors``, read with :func:`~tinyconv.serialization.read_params`)
    or a mapping of names to arrays (a ``state_dict()``).

    ``net``: ``"auto"`` (default) recognises the network with :func:`identify_network`; a name of
    :data:`NETWORK_NAMES` insists on that one. SimpleConvNet and DeepConvNet take their sizes
    (filters, hidden units, classes) from the arrays and the image size from ``input_shape``
    (C, H, W), by default ``(channels of W1, 28, 28)``; a ResNet takes its classes from
    ``fc.weight`` and its input channels from ``conv1.weight``, and needs the batch-norm running
    statistics (``num_batches_tracked`` may be absent, as in older PyTorch files). When
    ``input_shape`` is given, the first convolution must take its channel count.

    A missing or unknown key, a wrong shape or an unrecognisable set of keys raises
    :class:`~tinyconv.serialization.ParamsFileError` (a ``ValueError``) naming them, before any
    network is returned; ``source`` names the parameters in messages (default: the file name).
    Reading a file raises what :func:`~tinyconv.serialization.read_params` raises
    (``FileNotFoundError``, ``ParamsFileError``, ``ImportError`` for safetensors without its package).
    """
    if isinstance(params, (str, os.PathLike)):
        source = source or os.fspath(params)
        params = read_params(params)
    source = "params" if source is None else str(source)
    name = _checked_name(net, allow_auto=True)
    shape = _checked_input_shape(input_shape)
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {np_dtype}")
    arrays = _arrays(params, source)
    if name == "auto" or name in RESNETS:
        found = identify_network(arrays, source)
        if name != "auto" and found != name:
            raise ParamsFileError(
                f"{source} holds the parameters of a {_NETWORK_TITLES.get(found, found)}, "
                f"not of a {name}"
            )
        name = found
    if name in RESNETS:
        return _resnet_from_params(arrays, name, shape, np_dtype, source)
    return _dlfs_from_params(arrays, name, shape, np_dtype, source)


def replace_head(network: Network, num_classes: int, *, seed: int | None = None) -> Network:
    """The network with a new, untrained classifier for ``num_classes`` classes (He-initialised:
    normal weights with standard deviation sqrt(2 / fan_in), zero bias), for transfer learning.
    A ResNet is changed in place (:meth:`ResNet.replace_head`) and returned; a SimpleConvNet or
    DeepConvNet is rebuilt with every other parameter copied, and the new network returned (its
    frozen parameters are not carried over: freeze after replacing the head)."""
    num_classes = _checked_count(num_classes, "num_classes")
    if isinstance(network, ResNet):
        network.replace_head(num_classes, seed=seed)
        return network
    if not isinstance(network, (SimpleConvNet, DeepConvNet)):
        raise TypeError(
            f"replace_head takes a ResNet, SimpleConvNet or DeepConvNet, got {type(network).__name__}"
        )
    name = "simple" if isinstance(network, SimpleConvNet) else "deep"
    weight_key, bias_key = head_prefixes(name)
    state = dict(network.state_dict())
    hidden = state[weight_key].shape[0]
    source = (
        np.random.default_rng(seed)
        if seed is not None
        else (np.random if network.rng is None else network.rng)
    )
    state[weight_key] = (
        math.sqrt(2.0 / hidden) * source.standard_normal((hidden, num_classes))
    ).astype(network.dtype)
    state[bias_key] = np.zeros(num_classes, dtype=network.dtype)
    return network_from_params(
        state,
        net=name,
        input_shape=network.input_dim,
        dtype=network.dtype,
        source=f"the {type(network).__name__} with a new head",
    )
