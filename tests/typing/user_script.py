"""A script written the way tinyconv's users write them (README.md, examples/), annotated.

``mypy`` checks it with the package (``files`` in pyproject.toml; strict): a public annotation
that is wrong for ordinary use fails here, and ``assert_type`` fails when a public return type
degrades (to ``Any``, or to something broader than it was). It is real code, run on tiny shapes
by ``tests/test_typing_user_script.py``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import tinyconv
from tinyconv.containers import Residual, Sequential
from tinyconv.layers import BatchNorm2d, Convolution, Relu, StepLayer
from tinyconv.nets import (
    DeepConvNet,
    MultiLayerNet,
    Network,
    ResNet,
    SimpleConvNet,
    TwoLayerNet,
    build_network,
    network_from_params,
    resnet20,
)
from tinyconv.optimizer import SGD, Adam, Momentum, Optimizer, ParamGroup, get_optimizer
from tinyconv.summary import NetworkSummary, SummaryRow
from tinyconv.trainer import Trainer

if TYPE_CHECKING:
    from typing_extensions import TypeAlias, assert_type
else:

    def assert_type(value: object, _type: object) -> object:
        return value


# What the compute paths return (tinyconv._typing.FloatArray, spelled as a user would).
Floats: TypeAlias = npt.NDArray[np.floating[Any]]


def images(n: int, channels: int = 1, side: int = 12, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).random((n, channels, side, side), dtype=np.float32)


def labels(n: int, classes: int = 10, seed: int = 0) -> npt.NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, classes, n)


def dlfs_networks() -> None:
    """DLfS's networks: predict, loss, accuracy, backprop and numerical gradients."""
    x, t = images(4), labels(4)
    simple = SimpleConvNet(
        input_dim=(1, 12, 12),
        conv_param={"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=8,
        output_size=10,
        seed=0,
    )
    assert_type(simple.predict(x), Floats)
    assert_type(simple.loss(x, t), float)
    assert_type(simple.accuracy(x, t, batch_size=3), float)
    grads = simple.gradient(x, t)
    assert_type(grads, dict[str, Floats])
    assert set(grads) == set(simple.params)
    assert_type(simple.params, dict[str, npt.NDArray[Any]])
    assert_type(simple.last_loss, "float | None")
    # DLfS's attributes: layers by name, the loss layer.
    conv = simple.layers["Conv1"]
    assert_type(conv, StepLayer)
    assert isinstance(conv, Convolution)
    assert_type(conv.dW, "Floats | None")

    deep = DeepConvNet(input_dim=(1, 12, 12), hidden_size=8, dtype=np.float64, seed=1)
    assert_type(deep.layers, list[StepLayer])
    assert_type(deep.loss(x, t, train_flg=False), float)
    assert deep.predict(x).dtype == np.float64

    two = TwoLayerNet(input_size=6, hidden_size=5, output_size=3, seed=2)
    features = np.random.default_rng(3).random((2, 6))
    numerical = two.numerical_gradient(features, np.array([0, 2]))
    assert_type(numerical, dict[str, Floats])
    backprop = two.gradient(features, np.array([0, 2]))
    assert all(np.allclose(numerical[key], backprop[key], atol=1e-4) for key in backprop)

    extended = MultiLayerNet(6, [5, 5], 3, use_batchnorm=True, weight_decay_lambda=0.1, seed=4)
    state = extended.state_dict()
    assert_type(state, "OrderedDict[str, npt.NDArray[Any]]")
    assert "running_mean1" in state


def resnets_and_transfer() -> None:
    """A ResNet: summary, freezing, a new head, groups of learning rates."""
    net = resnet20(num_classes=10, in_channels=1, seed=0)
    assert_type(net, ResNet)
    summary = net.summary((1, 8, 8), depth=2)
    assert_type(summary, NetworkSummary)
    rows = summary.rows
    assert_type(rows, list[SummaryRow])
    assert_type(rows[0].output_shape, tuple[int, ...])
    assert_type(summary.total_parameters, int)
    assert "total" in str(summary)

    net.replace_head(5)
    frozen = net.freeze("conv1", "bn1", "layer1")
    assert_type(frozen, list[str])
    assert_type(net.frozen_keys, list[str])
    x, t = images(2, side=8), labels(2, classes=5)
    grads = net.gradient(x, t)
    assert not any(key.startswith("layer1.") for key in grads)

    opt = Momentum(lr=0.01, param_groups=[{"prefixes": "fc", "lr": 0.1}])
    assert_type(opt.param_groups, tuple[ParamGroup, ...])
    assert_type(opt.lr_for("fc.weight"), float)
    opt.update(net.params, grads)
    assert_type(opt.state_dict(), dict[str, Any])

    # A network of one's own from the containers: a residual block on a stem.
    def conv(out_channels: int, in_channels: int) -> Convolution:
        weight = np.random.default_rng(out_channels).standard_normal(
            (out_channels, in_channels, 3, 3)
        )
        return Convolution(weight.astype(np.float32), None, stride=1, pad=1)

    block = Residual(
        Sequential(OrderedDict([("conv1", conv(4, 4)), ("bn1", BatchNorm2d(4)), ("relu", Relu())])),
        relu=True,
    )
    body = Sequential([conv(4, 1), Relu(), block])
    assert_type(body[2], StepLayer)
    assert_type(body.plan("infer"), list[tuple[str, ...]])
    y = body.forward(images(2, side=6), train_flg=True)
    assert_type(y, Floats)
    assert_type(body.backward(np.ones_like(y)), Floats)


def optimizers_and_training() -> None:
    """An optimizer step by hand, then the Trainer, as DLfS's chapter 6 and 7 scripts do."""
    net = SimpleConvNet(
        input_dim=(1, 12, 12),
        conv_param={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
        hidden_size=6,
        seed=5,
    )
    x, t = images(20, seed=1), labels(20, seed=1)
    optimizers: list[Optimizer] = [SGD(lr=0.1), Adam(), get_optimizer("rmsprop", lr=0.01)]
    for optimizer in optimizers:
        grads = net.gradient(x[:5], t[:5])
        assert_type(
            optimizer.find_unusable_gradient(grads), "tuple[str, tuple[int, ...], float] | None"
        )
        optimizer.update(net.params, grads)

    trainer = Trainer(
        net,
        x,
        t,
        x[:10],
        t[:10],
        epochs=1,
        mini_batch_size=10,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        seed=0,
    )
    trainer.train()
    assert_type(trainer.train_loss_list, list[float])
    assert_type(trainer.test_acc_list, list[float])
    assert len(trainer.train_loss_list) == 2


def files_and_export() -> None:
    """Parameter files (DLfS's pickle, npz), a network rebuilt from one, ONNX export."""
    net = build_network("simple", num_classes=3, input_shape=(1, 12, 12), seed=0)
    assert_type(net, Network)
    x = images(2)
    with tempfile.TemporaryDirectory() as folder:
        pickle_path = os.path.join(folder, "params.pkl")
        net.save_params(pickle_path)
        again = network_from_params(pickle_path, input_shape=(1, 12, 12))
        assert_type(again, Network)
        assert np.array_equal(again.predict(x), net.predict(x))
        npz = os.path.join(folder, "params.npz")
        net.save_params(npz)
        net.load_params(npz)
        if importlib.util.find_spec("onnx") is not None:
            from tinyconv.export import to_onnx

            to_onnx(net, os.path.join(folder, "model.onnx"), softmax=True, dataset="noise")


def configuration() -> None:
    info = tinyconv.config()
    assert_type(info["num_threads"], int)
    assert_type(info["isa"], str)
    assert_type(tinyconv.get_num_threads(), int)
    assert_type(tinyconv.__version__, str)


def main() -> None:
    dlfs_networks()
    resnets_and_transfer()
    optimizers_and_training()
    files_and_export()
    configuration()


if __name__ == "__main__":
    main()
