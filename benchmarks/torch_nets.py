"""The same networks in PyTorch (``torch.nn``, float32, NCHW), for the PyTorch columns.

Architectures follow tinyconv's ``SimpleConvNet`` and ``DeepConvNet`` layer for layer, and the
initialisation roughly: N(0, 0.01) weights for SimpleConvNet (DLfS's ``weight_init_std``), He
normal for DeepConvNet, zero biases. Two differences do not change the amount of work:
``nn.Dropout`` rescales the kept units by 1/(1-p) (DLfS does not), and the loss is
``F.cross_entropy`` on the logits. The optimizer is ``torch.optim.Adam`` with DLfS's
hyperparameters (its default implementation for CPU tensors).

Only imported when PyTorch is installed.
"""
from __future__ import annotations

from typing import Mapping, Sequence

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


def simple_conv_net(input_dim=(1, 28, 28), filter_num: int = 30, filter_size: int = 5,
                    hidden_size: int = 100, output_size: int = 10) -> nn.Module:
    """conv - relu - maxpool 2x2/2 - affine - relu - affine (DLfS chapter 7)."""
    channels, height, width = input_dim
    pooled = filter_num * ((height - filter_size + 1) // 2) * ((width - filter_size + 1) // 2)
    model = nn.Sequential(
        nn.Conv2d(channels, filter_num, filter_size), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(pooled, hidden_size), nn.ReLU(), nn.Linear(hidden_size, output_size),
    )
    return _init(model, weight_std=0.01)


def deep_conv_net(conv_params: Sequence[Mapping[str, int]] = DLFS_DEEP_CONV_PARAMS, input_dim=(1, 28, 28),
                  hidden_size: int = 50, output_size: int = 10) -> nn.Module:
    """Six convolutions (``conv_params``: tinyconv's/DLfS's dicts) with ReLU, 2x2/2 max pooling
    after every second one, then affine - relu - dropout - affine - dropout (DLfS chapter 8)."""
    channels, size, _ = input_dim
    layers = []
    for index, conv in enumerate(conv_params, start=1):
        layers += [nn.Conv2d(channels, conv["filter_num"], conv["filter_size"],
                             stride=conv["stride"], padding=conv["pad"]), nn.ReLU()]
        channels = conv["filter_num"]
        size = (size + 2 * conv["pad"] - conv["filter_size"]) // conv["stride"] + 1
        if index % 2 == 0:
            layers.append(nn.MaxPool2d(2, 2))
            size //= 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, hidden_size), nn.ReLU(), nn.Dropout(0.5),
               nn.Linear(hidden_size, output_size), nn.Dropout(0.5)]
    return _init(nn.Sequential(*layers))


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-7)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, t: torch.Tensor) -> None:
    """Forward, backward and Adam update."""
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), t).backward()
    optimizer.step()
