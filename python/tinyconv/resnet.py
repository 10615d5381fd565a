"""Residual networks: torchvision's ResNet-18/34/50/101/152 and the CIFAR ResNets of He et al.

* :func:`resnet18`, :func:`resnet34` (basic blocks), :func:`resnet50`, :func:`resnet101`,
  :func:`resnet152` (bottleneck blocks): torchvision's architecture exactly -- ResNet v1.5, the
  stride on the bottleneck's 3x3 convolution; a 7x7/2 stem convolution, 3x3/2 max pooling with
  padding 1, four stages, global average pooling, a fully connected ``fc`` layer -- and
  torchvision's parameter names (``conv1.weight``, ``layer1.0.bn1.running_mean``,
  ``layer2.0.downsample.0.weight``, ``fc.weight``), so a torchvision state dict (as NumPy arrays)
  loads with :meth:`~tinyconv.network.Network.load_state_dict` and no mapping.
* :func:`resnet20`, :func:`resnet32`, :func:`resnet56`: the CIFAR-10 networks of He et al. 2016,
  section 4.2 -- a 3x3 stem with 16 filters, three stages of n basic blocks (16, 32, 64 filters;
  the last two halve the size), 6n + 2 layers, and the paper's parameter-free "option A"
  shortcuts (:class:`~tinyconv.layers.ChannelPadShortcut`). For 32x32 images and also 28x28 ones
  (Fashion-MNIST): any size works, global average pooling ends every network.

Batch norm follows PyTorch (:class:`~tinyconv.layers.BatchNorm2d`: epsilon 1e-5, momentum 0.1 in
PyTorch's sense, unbiased running variance, ``num_batches_tracked``). Initialisation follows
torchvision: convolutions He-normal over the fan-out, batch norm ``weight`` 1 and ``bias`` 0, and
``fc`` PyTorch's default (uniform in +-1/sqrt(fan_in)); ``zero_init_residual=True`` zeroes the last
batch norm's ``weight`` of each block.

``params`` holds the trainable parameters (torchvision's ``named_parameters()``), ``state_dict()``
adds the running statistics; ``predict`` returns logits; ``train_flg=True`` switches batch norm to
batch statistics. For transfer learning: :meth:`~tinyconv.network.Network.freeze` and
:meth:`ResNet.replace_head`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._typing import DTypeLike, FloatArray
from .containers import Residual, Sequential
from .layers import (
    BatchNorm2d,
    ChannelPadShortcut,
    Convolution,
    GlobalAvgPooling,
    Linear,
    Pooling,
    Relu,
    SoftmaxWithLoss,
    StepLayer,
)
from .network import Network, RandomSource

__all__ = [
    "RESNETS",
    "ResNet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet152",
]

_BLOCK_KINDS = ("basic", "bottleneck")
_EXPANSION = {"basic": 1, "bottleneck": 4}


class ResNet(Network):
    """A residual network of basic or bottleneck blocks; use the factories (:func:`resnet50`,
    :func:`resnet20`, ...) rather than this constructor.

    ``block``: ``"basic"`` or ``"bottleneck"``; ``stage_blocks``: blocks per stage;
    ``stage_widths``: each stage's width (a bottleneck stage outputs 4x that);
    ``stem``: ``"imagenet"`` (7x7/2 convolution, 3x3/2 max pooling, 64 filters) or ``"cifar"`` (3x3
    convolution with ``stage_widths[0]`` filters); ``shortcut``: ``"projection"`` (a strided 1x1
    convolution and batch norm where a block changes shape, torchvision's ``downsample``) or
    ``"pad"`` (option A: subsample and zero-pad channels, no parameters).
    """

    #: The layers by name, in order (DLfS's ``network.layers['Conv1']``).
    layers: OrderedDict[str, StepLayer]

    def __init__(
        self,
        block: str,
        stage_blocks: Sequence[int],
        stage_widths: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        stem: str = "imagenet",
        shortcut: str = "projection",
        zero_init_residual: bool = False,
        dtype: DTypeLike = np.float32,
        seed: int | None = None,
        rng: RandomSource = None,
    ):
        super().__init__(dtype, seed, rng)
        if block not in _BLOCK_KINDS:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if shortcut not in ("projection", "pad"):
            raise ValueError(f"shortcut must be 'projection' or 'pad', got {shortcut!r}")
        counts: tuple[tuple[str, object], ...] = (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
        )
        for name, value in counts:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if len(stage_blocks) != len(stage_widths) or not stage_blocks or min(stage_blocks) < 1:
            raise ValueError(
                f"stage_blocks {list(stage_blocks)} and stage_widths {list(stage_widths)} must be "
                "equally long, non-empty, with at least one block per stage"
            )
        self.block = block
        self.stage_blocks = tuple(int(n) for n in stage_blocks)
        self.stage_widths = tuple(int(w) for w in stage_widths)
        self.in_channels = int(in_channels)
        self.stem = stem
        self.shortcut = shortcut
        expansion = _EXPANSION[block]

        layers: OrderedDict[str, StepLayer] = OrderedDict()
        if stem == "imagenet":
            channels = 64
            layers["conv1"] = self._conv(channels, self.in_channels, 7, stride=2, pad=3)
        else:
            channels = self.stage_widths[0]
            layers["conv1"] = self._conv(channels, self.in_channels, 3, stride=1, pad=1)
        layers["bn1"] = self._norm(channels)
        layers["relu"] = Relu()
        if stem == "imagenet":
            layers["maxpool"] = Pooling(3, 3, stride=2, pad=1)
        for stage, (blocks, width) in enumerate(zip(self.stage_blocks, self.stage_widths), start=1):
            stride = 1 if stage == 1 else 2
            stage_layers: OrderedDict[str, StepLayer] = OrderedDict()
            for index in range(blocks):
                stage_layers[str(index)] = self._block(
                    channels, width, stride if index == 0 else 1, zero_init_residual
                )
                channels = width * expansion
            layers[f"layer{stage}"] = Sequential(stage_layers)
        layers["avgpool"] = GlobalAvgPooling()
        layers["fc"] = self._linear(num_classes, channels)
        self.num_features = channels
        self.num_classes = int(num_classes)

        self.layers = layers
        self.last_layer = SoftmaxWithLoss()
        self._register_tree(self._root())

    # -- building blocks --------------------------------------------------------------------

    def _conv(
        self, out_channels: int, in_channels: int, size: int, stride: int = 1, pad: int = 0
    ) -> Convolution:
        # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        std = math.sqrt(2.0 / (out_channels * size * size))
        return Convolution(
            self._random_normal(std, (out_channels, in_channels, size, size)), None, stride, pad
        )

    def _norm(self, channels: int) -> BatchNorm2d:
        return BatchNorm2d(channels, dtype=self.dtype)

    def _uniform(self, bound: float, shape: tuple[int, ...]) -> FloatArray:
        source = np.random if self.rng is None else self.rng
        values: FloatArray = source.uniform(-bound, bound, shape).astype(self.dtype, copy=False)
        return values

    def _linear(self, out_features: int, in_features: int) -> Linear:
        # PyTorch's default for nn.Linear: kaiming_uniform_(a=sqrt(5)) -> U(+-1/sqrt(fan_in)), bias likewise.
        bound = 1.0 / math.sqrt(in_features)
        return Linear(
            self._uniform(bound, (out_features, in_features)), self._uniform(bound, (out_features,))
        )

    def _block(
        self, in_channels: int, width: int, stride: int, zero_init_residual: bool
    ) -> Residual:
        body: OrderedDict[str, StepLayer] = OrderedDict()
        if self.block == "basic":
            out_channels = width
            body["conv1"] = self._conv(width, in_channels, 3, stride=stride, pad=1)
            body["bn1"] = self._norm(width)
            body["relu"] = Relu()
            body["conv2"] = self._conv(width, width, 3, pad=1)
            body["bn2"] = last_norm = self._norm(width)
        else:
            out_channels = width * 4
            body["conv1"] = self._conv(width, in_channels, 1)
            body["bn1"] = self._norm(width)
            body["relu1"] = Relu()
            body["conv2"] = self._conv(
                width, width, 3, stride=stride, pad=1
            )  # v1.5: the stride is here
            body["bn2"] = self._norm(width)
            body["relu2"] = Relu()
            body["conv3"] = self._conv(out_channels, width, 1)
            body["bn3"] = last_norm = self._norm(out_channels)
        if zero_init_residual:
            last_norm.gamma[...] = 0
        shortcut: StepLayer | None = None
        if stride != 1 or in_channels != out_channels:
            if self.shortcut == "projection":
                shortcut = Sequential(
                    OrderedDict(
                        [
                            ("0", self._conv(out_channels, in_channels, 1, stride=stride)),
                            ("1", self._norm(out_channels)),
                        ]
                    )
                )
            else:
                shortcut = ChannelPadShortcut(stride, out_channels)
        return Residual(Sequential(body), shortcut, relu=True)

    def default_input_shape(self) -> tuple[int, int, int]:
        """What the architecture was designed for: 224x224 images for the ImageNet stem, 32x32
        for the CIFAR one (any size works)."""
        side = 224 if self.stem == "imagenet" else 32
        return (self.in_channels, side, side)

    # -- transfer learning ------------------------------------------------------------------

    def replace_head(self, num_classes: int, *, seed: int | None = None) -> None:
        """A new, untrained ``fc`` layer for ``num_classes`` classes (He-initialised: weights
        normal with standard deviation sqrt(2 / fan_in), bias zero), e.g. to fine-tune a
        pre-trained network on another task. The rest of the network, and which of its
        parameters are frozen, stay as they are. ``seed``: where the new weights come from (by
        default the network's own random source)."""
        given: object = num_classes  # checked as the caller may pass anything
        if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        source = (
            np.random.default_rng(seed)
            if seed is not None
            else (np.random if self.rng is None else self.rng)
        )
        std = math.sqrt(2.0 / self.num_features)
        W = (std * source.standard_normal((int(num_classes), self.num_features))).astype(self.dtype)
        self.layers["fc"] = Linear(W, np.zeros(int(num_classes), dtype=self.dtype))
        self.num_classes = int(num_classes)
        self._register_tree(self._root())

    def __repr__(self) -> str:
        n_params = sum(int(np.size(v)) for v in self.params.values())
        return (
            f"<ResNet ({self.block} blocks {list(self.stage_blocks)}, {self.stem} stem): {n_params} parameters, "
            f"{self.num_classes} classes, {self.dtype}>"
        )


def _imagenet(
    block: str, stage_blocks: Sequence[int], num_classes: int, in_channels: int, **options: Any
) -> ResNet:
    return ResNet(
        block,
        stage_blocks,
        (64, 128, 256, 512),
        num_classes,
        in_channels,
        stem="imagenet",
        shortcut="projection",
        **options,
    )


def resnet18(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """torchvision's ResNet-18 (11,689,512 parameters at 1000 classes)."""
    return _imagenet(
        "basic",
        (2, 2, 2, 2),
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def resnet34(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """torchvision's ResNet-34 (21,797,672 parameters at 1000 classes)."""
    return _imagenet(
        "basic",
        (3, 4, 6, 3),
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def resnet50(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """torchvision's ResNet-50 v1.5 (25,557,032 parameters at 1000 classes)."""
    return _imagenet(
        "bottleneck",
        (3, 4, 6, 3),
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def resnet101(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """torchvision's ResNet-101 v1.5 (44,549,160 parameters at 1000 classes)."""
    return _imagenet(
        "bottleneck",
        (3, 4, 23, 3),
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def resnet152(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """torchvision's ResNet-152 v1.5 (60,192,808 parameters at 1000 classes)."""
    return _imagenet(
        "bottleneck",
        (3, 8, 36, 3),
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def _cifar(n: int, num_classes: int, in_channels: int, **options: Any) -> ResNet:
    return ResNet(
        "basic",
        (n, n, n),
        (16, 32, 64),
        num_classes,
        in_channels,
        stem="cifar",
        shortcut="pad",
        **options,
    )


def resnet20(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """He et al.'s CIFAR ResNet-20 (n = 3; 0.27M parameters)."""
    return _cifar(
        3,
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def resnet32(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """He et al.'s CIFAR ResNet-32 (n = 5; 0.46M parameters)."""
    return _cifar(
        5,
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


def resnet56(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    rng: RandomSource = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """He et al.'s CIFAR ResNet-56 (n = 9; 0.85M parameters)."""
    return _cifar(
        9,
        num_classes,
        in_channels,
        dtype=dtype,
        seed=seed,
        rng=rng,
        zero_init_residual=zero_init_residual,
    )


#: Every ResNet factory by name.
RESNETS = {
    f.__name__: f
    for f in (resnet18, resnet34, resnet50, resnet101, resnet152, resnet20, resnet32, resnet56)
}
