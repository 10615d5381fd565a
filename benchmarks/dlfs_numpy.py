"""The book's own way, in NumPy: DLfS-style networks and Adam, the baseline tinyconv replaces.

The layers (im2col convolution and pooling, ReLU, affine, dropout, softmax with loss) and the
chapter 7 ``SimpleConvNet`` come from ``tests/dlfs_oracle.py``, the test suite's independent NumPy
re-statement of DLfS's ``common/`` code. Chapter 8's ``DeepConvNet`` training step is assembled
here from those layers, and :class:`Adam` is DLfS's update rule applied in place. Everything runs
in the parameters' dtype (float32 in the benchmarks): the layers keep the dtype of their inputs.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

_TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import dlfs_oracle as dlfs  # noqa: E402  (needs the path above)

Params = dict[str, np.ndarray]


class Adam:
    """DLfS's ``common/optimizer.py`` Adam, updating ``params`` in place so that the layers, which
    hold references to those arrays, see the new values. ``lr_t`` is made a Python float: a NumPy
    float64 scalar would promote a float32 update to float64 under NumPy 2."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter = 0
        self.m: Params = {}
        self.v: Params = {}

    def update(self, params: Params, grads: Mapping[str, np.ndarray]) -> None:
        if not self.m:
            self.m = {key: np.zeros_like(value) for key, value in params.items()}
            self.v = {key: np.zeros_like(value) for key, value in params.items()}
        self.iter += 1
        lr_t = float(self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter))
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


def simple_conv_net(dtype=np.float32) -> dlfs.SimpleConvNet:
    """Chapter 7's network with DLfS's defaults, its parameters cast to ``dtype``."""
    net = dlfs.SimpleConvNet()
    net.params = {key: value.astype(dtype) for key, value in net.params.items()}
    net._build()  # point the layers at the cast arrays
    return net


class DeepConvNet:
    """Chapter 8's network, training mode: six 3x3 convolutions (``conv_params``: DLfS's dicts
    with ``filter_num`` and ``pad``, stride 1), pooling after every second one, then
    affine - relu - dropout - affine - dropout - softmax with loss; He initialisation."""

    def __init__(
        self,
        conv_params: Sequence[Mapping[str, int]],
        input_dim=(1, 28, 28),
        hidden_size: int = 50,
        output_size: int = 10,
        dtype=np.float32,
    ):
        self.params: Params = {}
        self.layers: list[object] = []
        channels, size, _ = input_dim
        for index, conv in enumerate(conv_params, start=1):
            fs, pad = conv["filter_size"], conv["pad"]
            self._weights(index, (conv["filter_num"], channels, fs, fs), channels * fs * fs, dtype)
            self.layers += [
                dlfs.Convolution(self.params[f"W{index}"], self.params[f"b{index}"], 1, pad),
                dlfs.Relu(),
            ]
            channels, size = conv["filter_num"], size + 2 * pad - fs + 1
            if index % 2 == 0:
                self.layers.append(dlfs.Pooling(2, 2, stride=2))
                size //= 2
        flat = channels * size * size
        self._weights(7, (flat, hidden_size), flat, dtype)
        self._weights(8, (hidden_size, output_size), hidden_size, dtype)
        self.layers += [
            dlfs.Affine(self.params["W7"], self.params["b7"]),
            dlfs.Relu(),
            dlfs.Dropout(0.5),
            dlfs.Affine(self.params["W8"], self.params["b8"]),
            dlfs.Dropout(0.5),
        ]
        self.last_layer = dlfs.SoftmaxWithLoss()

    def _weights(self, index: int, shape, fan_in: int, dtype) -> None:
        self.params[f"W{index}"] = (math.sqrt(2.0 / fan_in) * np.random.randn(*shape)).astype(dtype)
        self.params[f"b{index}"] = np.zeros(shape[0] if len(shape) == 4 else shape[1], dtype=dtype)

    def gradient(self, x: np.ndarray, t: np.ndarray) -> Params:
        for layer in self.layers:
            x = layer.forward(x, True) if isinstance(layer, dlfs.Dropout) else layer.forward(x)
        self.last_layer.forward(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        weighted = [
            layer for layer in self.layers if isinstance(layer, (dlfs.Convolution, dlfs.Affine))
        ]
        grads: Params = {}
        for index, layer in enumerate(weighted, start=1):
            grads[f"W{index}"], grads[f"b{index}"] = layer.dW, layer.db
        return grads


def train_step(net, optimizer: Adam, x: np.ndarray, t: np.ndarray) -> None:
    """Forward, backward and update: one step of DLfS's ``Trainer.train_step``."""
    optimizer.update(net.params, net.gradient(x, t))
