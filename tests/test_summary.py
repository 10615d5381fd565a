"""Network.summary(): every layer's output shape, parameters and multiply-adds, checked against
independent computations -- shapes against real forward passes, parameter counts against the
arrays in ``params``, multiply-adds against hand formulas (ResNet-50's from the paper's table)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from tinyconv.containers import Residual, Sequential
from tinyconv.layers import Affine, Convolution, Relu, SoftmaxWithLoss
from tinyconv.nets import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    SimpleConvNet,
    TwoLayerNet,
    resnet18,
    resnet20,
    resnet50,
)
from tinyconv.network import Network
from tinyconv.summary import NetworkSummary, format_count


def _conv_macs(out_channels, in_channels, kernel, out_side, batch=1):
    return batch * out_channels * out_side * out_side * in_channels * kernel * kernel


NETWORKS = {
    "TwoLayerNet": lambda: TwoLayerNet(784, 50, 10, seed=0),
    "MultiLayerNet": lambda: MultiLayerNet(784, [100, 60, 30], 10, seed=0),
    "MultiLayerNetExtend": lambda: MultiLayerNetExtend(
        784, [40, 40], 10, use_batchnorm=True, use_dropout=True, seed=0
    ),
    "SimpleConvNet": lambda: SimpleConvNet(seed=0),
    "SimpleConvNet 3x32x32": lambda: SimpleConvNet(
        (3, 32, 32), {"filter_num": 8, "filter_size": 3, "pad": 1, "stride": 2}, 20, 5, seed=0
    ),
    "DeepConvNet": lambda: DeepConvNet(seed=0),
    "resnet20": lambda: resnet20(seed=0),
    "resnet18": lambda: resnet18(10, 1, seed=0),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_totals_are_the_parameter_arrays_and_the_output_is_predicts(name):
    network = NETWORKS[name]()
    shape = network.default_input_shape() if name != "resnet18" else (1, 40, 36)
    summary = network.summary(shape, batch_size=3)
    assert summary.total_parameters == sum(value.size for value in network.params.values())
    assert summary.trainable_parameters == summary.total_parameters
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    assert summary.output_shape == network.predict(x).shape
    assert summary.input_shape == (3, *shape)


@pytest.mark.parametrize(
    "name", ["TwoLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "DeepConvNet"]
)
def test_each_layers_shape_is_what_its_forward_pass_gives(name):
    network = NETWORKS[name]()
    shape = network.default_input_shape()
    rows = network.summary(shape, batch_size=2).rows
    layers = network.layers
    if isinstance(layers, list):  # DeepConvNet's, as in DLfS
        layers = OrderedDict((str(index), layer) for index, layer in enumerate(layers))
    assert [row.name for row in rows] == list(layers)  # DLfS's names, in order
    x = np.random.default_rng(1).random((2, *shape), dtype=np.float32)
    for row, layer in zip(rows, layers.values()):
        assert row.input_shape == x.shape, row.name
        x = layer.step_forward(x, False, False)[0]
        assert row.output_shape == x.shape, row.name
        assert row.parameters == sum(
            getattr(layer, attr).size
            for _, attr, _ in layer.parameter_slots
            if getattr(layer, attr) is not None
        ), row.name


def test_resnet_stages_and_blocks_have_the_shapes_of_a_forward_pass():
    network = resnet18(7, 3, seed=0)
    summary = network.summary((3, 64, 48), batch_size=2)
    x = np.random.default_rng(2).random((2, 3, 64, 48), dtype=np.float32)
    rows = {row.name: row for row in summary.rows}
    for name, layer in network.layers.items():
        for block_name, block in (
            layer.named_children() if name.startswith("layer") else [(None, layer)]
        ):
            key = name if block_name is None else f"{name}.{block_name}"
            assert rows[key].input_shape == x.shape, key
            x = block.step_forward(x, False, False)[0]
            assert rows[key].output_shape == x.shape, key
    assert x.shape == (2, 7)
    # A block's shortcut sees the block's input, not the body's output.
    assert rows["layer2.0.downsample.0"].input_shape == rows["layer2.0"].input_shape
    assert rows["layer2.0.downsample"].output_shape == rows["layer2.0"].output_shape


def test_simple_convnet_multiply_adds_by_hand():
    # DLfS's SimpleConvNet on 28x28: conv 30 filters 5x5 -> 24x24, pool -> 12x12, 4320 -> 100 -> 10.
    summary = SimpleConvNet(seed=0).summary(batch_size=5)
    macs = {row.name: row.multiply_adds for row in summary.rows}
    assert macs == {
        "Conv1": 5 * 30 * 24 * 24 * 25,
        "Relu1": 0,
        "Pool1": 0,
        "Affine1": 5 * 4320 * 100,
        "Relu2": 0,
        "Affine2": 5 * 100 * 10,
    }
    assert summary.total_multiply_adds == 5 * (432_000 + 432_000 + 1_000)
    params = {row.name: row.parameters for row in summary.rows}
    assert params == {
        "Conv1": 30 * 25 + 30,
        "Relu1": 0,
        "Pool1": 0,
        "Affine1": 4320 * 100 + 100,
        "Relu2": 0,
        "Affine2": 100 * 10 + 10,
    }


def test_deep_convnet_multiply_adds_by_hand():
    # DLfS's DeepConvNet: 3x3 convolutions 16, 16 (28x28), pool, 32, 32 (14x14, then pad 2 -> 16x16),
    # pool (8x8), 64, 64 (8x8), pool (4x4), affine 1024 -> 50 -> 10.
    expected = (
        _conv_macs(16, 1, 3, 28)
        + _conv_macs(16, 16, 3, 28)
        + _conv_macs(32, 16, 3, 14)
        + _conv_macs(32, 32, 3, 16)
        + _conv_macs(64, 32, 3, 8)
        + _conv_macs(64, 64, 3, 8)
        + 64 * 4 * 4 * 50
        + 50 * 10
    )
    assert DeepConvNet(seed=0).summary().total_multiply_adds == expected


def _bottleneck_resnet_macs(stage_blocks, side=224, classes=1000):
    """He et al.'s Table 1 with torchvision's v1.5 blocks (stride on the 3x3), counted by hand."""
    side = side // 2
    total = _conv_macs(64, 3, 7, side)
    side = side // 2  # max pool
    channels = 64
    for stage, blocks in enumerate(stage_blocks):
        width = 64 * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            out_side = side // stride
            total += _conv_macs(width, channels, 1, side)  # 1x1 narrows, at the input size
            total += _conv_macs(width, width, 3, out_side)  # 3x3, strided
            total += _conv_macs(4 * width, width, 1, out_side)  # 1x1 widens
            if block == 0:
                total += _conv_macs(4 * width, channels, 1, out_side)  # projection shortcut
            channels, side = 4 * width, out_side
    return total + channels * classes


def test_resnet50_parameters_and_multiply_adds():
    network = resnet50(seed=0)
    summary = network.summary()
    assert summary.input_shape == (1, 3, 224, 224)
    assert (
        summary.total_parameters
        == 25_557_032
        == sum(value.size for value in network.params.values())
    )
    assert summary.total_multiply_adds == _bottleneck_resnet_macs((3, 4, 6, 3)) == 4_089_184_256
    assert summary.output_shape == (1, 1000)
    text = str(summary)
    assert "25,557,032 (25.56 M)" in text
    assert "4,089,184,256 (4.09 G)" in text
    # Every layer of the table's depth 2 (the blocks) adds up to the same totals.
    blocks = summary.shown_rows(2)
    assert [row.name for row in blocks][:6] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1.0",
        "layer1.1",
    ]
    assert len([row for row in blocks if row.kind == "Residual"]) == 16
    assert sum(row.parameters for row in blocks) == 25_557_032
    assert sum(row.multiply_adds for row in blocks) == 4_089_184_256
    assert sum(row.parameters for row in summary.shown_rows(1)) == 25_557_032


def test_cifar_resnet_multiply_adds_by_hand():
    # ResNet-20 on 32x32: a 3x3 stem with 16 filters, 3 stages of 3 basic blocks (two 3x3 each),
    # 16/32/64 channels at 32/16/8; parameter-free shortcuts; fc 64 -> 10.
    expected = _conv_macs(16, 1, 3, 32)
    channels = 16
    for _stage, (width, side) in enumerate(((16, 32), (32, 16), (64, 8))):
        for _block in range(3):
            expected += _conv_macs(width, channels, 3, side) + _conv_macs(width, width, 3, side)
            channels = width
    expected += 64 * 10
    summary = resnet20(seed=0).summary()
    assert summary.input_shape == (1, 1, 32, 32)
    assert summary.total_multiply_adds == expected
    assert summary.total_parameters == 269_434 - 0  # He et al.: 0.27M (here 1 input channel)
    assert {row.kind for row in summary.rows if row.name.endswith("downsample")} == {
        "ChannelPadShortcut"
    }


def test_frozen_parameters_are_counted_apart():
    network = resnet20(seed=0)
    layer1 = network.summary().rows
    layer1_params = next(row.parameters for row in layer1 if row.name == "layer1")
    network.freeze("conv1", "bn1", "layer1")
    summary = network.summary()
    assert summary.trainable_parameters == summary.total_parameters - layer1_params - 144 - 32
    assert f"of which {layer1_params + 176:,} frozen" in str(summary)


def test_table_depths():
    summary = resnet20(seed=0).summary(depth=1)
    names = [row.name for row in summary.shown_rows(1)]
    assert names == ["conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"]
    text = str(summary)
    assert "layer1  " in text
    assert "layer1.0" not in text
    full = summary.table()
    assert "layer1.0.conv1" in full
    assert "layer3.2.bn2" in full
    assert repr(summary) == text
    header = text.splitlines()[2].split()
    assert header == ["layer", "type", "output", "shape", "parameters", "multiply-adds"]


def test_format_count():
    assert [format_count(n) for n in (0, 999, 1000, 25_557_032, 4_089_184_256)] == [
        "0",
        "999",
        "1.00 k",
        "25.56 M",
        "4.09 G",
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"input_shape": (1, 27, 28)},
            ValueError,
            "Affine takes 4320 features per sample, got input shape (1, 30, 11, 12)",
        ),
        (
            {"input_shape": (3, 28, 28)},
            ValueError,
            "takes 1 input channels, got input shape (1, 3, 28, 28)",
        ),
        (
            {"input_shape": (1, 4, 4)},
            ValueError,
            "filter (5, 5) is larger than the padded input (4, 4)",
        ),
        ({"input_shape": (1, 0, 28)}, ValueError, "input_shape[1] must be in [1,"),
        ({"input_shape": (1, 28.0, 28)}, TypeError, "input_shape[1] must be an int"),
        ({"input_shape": "1,28,28"}, ValueError, "input_shape must be one sample's shape"),
        ({"input_shape": ()}, ValueError, "input_shape must be one sample's shape"),
        ({"batch_size": 0}, ValueError, "batch_size must be in [1,"),
        ({"batch_size": True}, TypeError, "batch_size must be an int"),
        ({"depth": 0}, ValueError, "depth must be in [1,"),
        ({"depth": "2"}, TypeError, "depth must be an int"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, message):
    with pytest.raises(error) as raised:
        SimpleConvNet(seed=0).summary(**kwargs)
    assert message in str(raised.value)


def test_a_residual_block_whose_branches_disagree_is_named():
    # A body that widens 4 -> 8 channels, with the identity as its shortcut.
    block = Residual(Sequential([Convolution(np.zeros((8, 4, 3, 3), np.float32), None, 1, 1)]))
    with pytest.raises(
        ValueError,
        match=r"residual block 'b': the body gives shape \(2, 8, 5, 5\) but the "
        r"shortcut \(2, 4, 5, 5\)",
    ):
        block.summary_rows((2, 4, 5, 5), "b")
    assert resnet50(10, 3, seed=0).summary((3, 1, 1)).output_shape == (
        1,
        10,
    )  # as small as PyTorch takes


class _Foreign:
    """A layer of the user's own that knows nothing about summaries."""

    def forward(self, x):
        return x


class _Custom(Network):
    def __init__(self):
        super().__init__(np.float32, 0, None)
        self.layers = OrderedDict(
            [
                ("fc", Affine(self._random_normal(0.1, (4, 3)), self._zeros(3))),
                ("odd", _Foreign()),
                ("relu", Relu()),
            ]
        )
        self.last_layer = SoftmaxWithLoss()
        self._register_tree(self._root())


def test_a_network_without_a_default_shape_or_with_a_foreign_layer():
    network = _Custom()
    with pytest.raises(ValueError, match="_Custom takes inputs of any size: pass input_shape"):
        network.summary()
    with pytest.raises(TypeError, match="layer 'odd' \\(_Foreign\\) cannot be summarised"):
        network.summary((4,))


def test_summary_is_a_network_summary():
    assert isinstance(TwoLayerNet(4, 3, 2, seed=0).summary(), NetworkSummary)
