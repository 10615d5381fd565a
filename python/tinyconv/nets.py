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

from .layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss
from .network import Network, RandomSource
from .resnet import RESNETS, ResNet, resnet18, resnet20, resnet32, resnet34, resnet50, resnet56, resnet101, resnet152

__all__ = ["Network", "SimpleConvNet", "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "ResNet", "resnet18",
           "resnet34", "resnet50", "resnet101", "resnet152", "resnet20", "resnet32", "resnet56"]


def _conv_output(size: int, filter_size: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - filter_size) // stride + 1


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
            self._register(f"W{index}", self.layers[name], "W")
            self._register(f"b{index}", self.layers[name], "b")

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
        weighted: List[Any] = []
        for index, conv in enumerate(conv_params, start=1):
            weighted.append(Convolution(self.params[f"W{index}"], self.params[f"b{index}"], conv["stride"], conv["pad"]))
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
            if use_batchnorm:
                size = self.hidden_size_list[idx - 1]
                self.params[f"gamma{idx}"] = np.ones(size, dtype=self.dtype)
                self.params[f"beta{idx}"] = self._zeros(size)
                norm = BatchNormalization(self.params[f"gamma{idx}"], self.params[f"beta{idx}"],
                                          running_mean=self._zeros(size), running_var=self._zeros(size))
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
