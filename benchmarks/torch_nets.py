"""The same networks in PyTorch (``torch.nn``, float32, NCHW), for the PyTorch columns, and the
ResNets that ``tests/make_resnet_goldens.py`` computes its golden files with.

Architectures follow tinyconv's ``SimpleConvNet`` and ``DeepConvNet`` layer for layer, and the
initialisation roughly: N(0, 0.01) weights for SimpleConvNet (DLfS's ``weight_init_std``), He
normal for DeepConvNet, zero biases. Two differences do not change the amount of work:
``nn.Dropout`` rescales the kept units by 1/(1-p) (DLfS does not), and the loss is
``F.cross_entropy`` on the logits. The optimizer is ``torch.optim.Adam`` with DLfS's
hyperparameters (its default implementation for CPU tensors).

ResNets: :func:`torchvision_resnet` is torchvision's ResNet-18/34/50/101/152 (``torchvision.models``
when it imports, otherwise :class:`ResNet` below, the same architecture module for module with the
same parameter names: v1.5, the stride on the bottleneck's 3x3); :func:`cifar_resnet` is He et
al. 2016's section 4.2 ResNet-6n+2 with option-A shortcuts, which torchvision does not have.

Only imported when PyTorch is installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

# DLfS chapter 8's convolutions (tinyconv.nets.DeepConvNet's defaults; run.py checks they agree).
# Kept here so that the peak-memory child process can build the network without importing tinyconv.
DLFS_DEEP_CONV_PARAMS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


def _init(model: nn.Module, weight_std=None) -> nn.Module:
    """Zero biases; weights N(0, weight_std) or, when ``weight_std`` is None, He normal."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if weight_std is None:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, std=weight_std)
            nn.init.zeros_(module.bias)
    return model


def simple_conv_net(
    input_dim=(1, 28, 28),
    filter_num: int = 30,
    filter_size: int = 5,
    hidden_size: int = 100,
    output_size: int = 10,
) -> nn.Module:
    """conv - relu - maxpool 2x2/2 - affine - relu - affine (DLfS chapter 7)."""
    channels, height, width = input_dim
    pooled = filter_num * ((height - filter_size + 1) // 2) * ((width - filter_size + 1) // 2)
    model = nn.Sequential(
        nn.Conv2d(channels, filter_num, filter_size),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(pooled, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, output_size),
    )
    return _init(model, weight_std=0.01)


def deep_conv_net(
    conv_params: Sequence[Mapping[str, int]] = DLFS_DEEP_CONV_PARAMS,
    input_dim=(1, 28, 28),
    hidden_size: int = 50,
    output_size: int = 10,
) -> nn.Module:
    """Six convolutions (``conv_params``: tinyconv's/DLfS's dicts) with ReLU, 2x2/2 max pooling
    after every second one, then affine - relu - dropout - affine - dropout (DLfS chapter 8)."""
    channels, size, _ = input_dim
    layers = []
    for index, conv in enumerate(conv_params, start=1):
        layers += [
            nn.Conv2d(
                channels,
                conv["filter_num"],
                conv["filter_size"],
                stride=conv["stride"],
                padding=conv["pad"],
            ),
            nn.ReLU(),
        ]
        channels = conv["filter_num"]
        size = (size + 2 * conv["pad"] - conv["filter_size"]) // conv["stride"] + 1
        if index % 2 == 0:
            layers.append(nn.MaxPool2d(2, 2))
            size //= 2
    layers += [
        nn.Flatten(),
        nn.Linear(channels * size * size, hidden_size),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden_size, output_size),
        nn.Dropout(0.5),
    ]
    return _init(nn.Sequential(*layers))


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-7)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, t: torch.Tensor
) -> None:
    """Forward, backward and Adam update."""
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), t).backward()
    optimizer.step()


# ----------------------------------------------------------------------------------------------
# ResNets


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3(stride)-bn-relu-conv3x3-bn, plus the shortcut, then relu.
    ``downsample`` is torchvision's projection (1x1 conv + BN), or any parameter-free module."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5): conv1x1-bn-relu, conv3x3(stride)-bn-relu,
    conv1x1 (x4 channels)-bn, plus the shortcut, then relu."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Union[type[BasicBlock], type[Bottleneck]]


class ResNet(nn.Module):
    """torchvision's ``ResNet`` (groups=1, no dilation, zero_init_residual=False), with the
    stem's input channels as a parameter: 7x7/2 conv-bn-relu, 3x3/2 max pooling (padding 1),
    four stages of ``layers[i]`` blocks at 64/128/256/512 planes (stride 1/2/2/2), global average
    pooling, ``fc``. Initialisation as torchvision's: Kaiming normal (fan_out) convolutions,
    BN scale 1 and shift 0, ``nn.Linear``'s default for ``fc``."""

    def __init__(
        self, block: Block, layers: Sequence[int], num_classes: int = 1000, in_channels: int = 3
    ):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(
            in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# torchvision's block and stage depths.
RESNET_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def import_torchvision():
    """The ``torchvision`` module, or None where it does not import (not installed, or built for
    another torch: the CUDA wheels fail beside a CPU torch with a RuntimeError)."""
    try:
        import torchvision
    except Exception:
        return None
    return torchvision


def torchvision_resnet(
    name: str, num_classes: int = 1000, in_channels: int = 3
) -> tuple[nn.Module, str]:
    """``(model, source)``: torchvision's ``models.<name>`` when torchvision imports (its stem
    replaced when ``in_channels != 3``), else :class:`ResNet` -- the same modules and names.
    ``source`` says which (results files record it)."""
    block, layers = RESNET_SPECS[name]
    torchvision = import_torchvision()
    if torchvision is None:
        return ResNet(block, layers, num_classes, in_channels), "benchmarks/torch_nets.ResNet"
    model = getattr(torchvision.models, name)(num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model, f"torchvision {torchvision.__version__}"


class OptionAShortcut(nn.Module):
    """He et al. 2016's option A: keep every ``stride``-th pixel and zero-pad the channels,
    ``(out_planes - in_planes) // 2`` on each side. No parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if (out_planes - in_planes) % 2 or out_planes < in_planes:
            raise ValueError(f"option A pads channels evenly: {in_planes} -> {out_planes}")
        self.pad = (out_planes - in_planes) // 2
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images (He et al. 2016, section 4.2): conv3x3 (16, padding 1, no
    bias)-bn-relu, three stages of ``n`` BasicBlocks at 16/32/64 planes (stride
    1/2/2) whose shortcut is the identity or, where the shape changes, :class:`OptionAShortcut`;
    global average pooling; ``fc`` = Linear(64, num_classes). Parameter names as torchvision's
    BasicBlock (the parameter-free shortcut is the block's ``downsample``, so no names are added).
    Initialisation: Kaiming normal (fan_out) convolutions, BN scale 1 and shift 0."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Sequential] = []
        inplanes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for index in range(n):
                block_stride = stride if index == 0 else 1
                shortcut = None
                if block_stride != 1 or inplanes != planes:
                    shortcut = OptionAShortcut(inplanes, planes, block_stride)
                blocks.append(BasicBlock(inplanes, planes, block_stride, shortcut))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


def cifar_resnet(name: str, num_classes: int = 10, in_channels: int = 1) -> CifarResNet:
    return CifarResNet(CIFAR_DEPTHS[name], num_classes, in_channels)


def sgd_momentum(model: nn.Module, lr: float = 0.1, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Plain SGD with momentum (no weight decay, no Nesterov), tinyconv's ``Momentum``'s update."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
