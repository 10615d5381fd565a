"""Misuse that annotating the layers brought to light: each now fails with an error that says
what is wrong (before, a backward pass without a forward one failed inside NumPy or a kernel with
an unrelated message, or not at all)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv.layers import (
    Affine,
    BatchNormalization,
    ChannelPadShortcut,
    Convolution,
    Dropout,
    GlobalAvgPooling,
    Linear,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from tinyconv.nets import MultiLayerNet

W4 = np.ones((2, 1, 3, 3), np.float32)
W2 = np.ones((3, 2), np.float32)
B2 = np.zeros(2, np.float32)

FRESH_LAYERS = [
    pytest.param(Relu(), (2, 3), id="Relu"),
    pytest.param(Sigmoid(), (2, 3), id="Sigmoid"),
    pytest.param(Affine(W2, B2), (2, 2), id="Affine"),
    pytest.param(Linear(W2.T.copy(), B2), (2, 2), id="Linear"),
    pytest.param(Convolution(W4, B2), (1, 2, 3, 3), id="Convolution"),
    pytest.param(Pooling(2, 2, stride=2), (1, 1, 2, 2), id="Pooling"),
    pytest.param(Pooling(2, 2, stride=2, mode="avg"), (1, 1, 2, 2), id="Pooling-avg"),
    pytest.param(GlobalAvgPooling(), (1, 2), id="GlobalAvgPooling"),
    pytest.param(Dropout(0.5), (2, 3), id="Dropout"),
    pytest.param(ChannelPadShortcut(2, 4), (1, 4, 2, 2), id="ChannelPadShortcut"),
    pytest.param(BatchNormalization(np.ones(3), np.zeros(3)), (2, 3), id="BatchNormalization"),
]


@pytest.mark.parametrize(("layer", "dout_shape"), FRESH_LAYERS)
def test_backward_before_forward_names_the_missing_forward_pass(layer, dout_shape):
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}\.backward needs a forward"):
        layer.backward(np.ones(dout_shape, np.float32))


def test_softmax_with_loss_backward_before_forward():
    with pytest.raises(RuntimeError, match=r"SoftmaxWithLoss\.backward needs a forward"):
        SoftmaxWithLoss().backward()


def test_backward_after_forward_still_works():
    # The check does not get in the way of the normal order (the layer tests cover the values).
    layer = Relu()
    out = layer.forward(np.array([[-1.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones_like(out)), [[0.0, 1.0]])


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_with_only_one_running_statistic(train):
    norm = BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(3))
    with pytest.raises(TypeError, match="needs both running_mean and running_var"):
        norm.forward(np.ones((2, 3)), train_flg=train)


def test_multilayer_net_names_an_unknown_weight_init_std():
    with pytest.raises(ValueError, match=r"weight_init_std must be a number or 'relu'.*'lecun'"):
        MultiLayerNet(4, [3], 2, weight_init_std="lecun")
