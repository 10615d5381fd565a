"""ONNX export (issue 15): :func:`tinyconv.export.to_onnx` and ``tinyconv export``.

Every network kind -- TwoLayerNet, SimpleConvNet, DeepConvNet, MultiLayerNet(Extend) with batch
norm and dropout, ResNet-20 (parameter-free shortcuts), ResNet-18 (projection shortcuts, max
pooling with padding), ResNet-50 (bottlenecks) and networks assembled from the layers -- is exported
with random parameters (biases, batch-norm weights and running statistics included, so a term left
out shows) and run on random inputs:

* float32 models in ONNX Runtime: ``max |ORT - predict| <= 1e-4 * max |predict|`` (1e-4 of the
  logit scale);
* float64 models in ``onnx.reference.ReferenceEvaluator`` (the ONNX specification's own NumPy
  implementation) to ``1e-10`` of the logit scale, and in ONNX Runtime as well where its CPU
  provider has float64 kernels (the fully connected networks: it has none for Conv, AveragePool,
  GlobalAveragePool);

at batch 1, and through one model with a symbolic batch at several batch sizes. Each model passes
``onnx.checker.check_model(full_check=True)`` as read back from its file. Pooling edge cases
(padding, all-negative windows at the border, windows wholly in the padding, rectangular windows
and strides) and image sizes are drawn by Hypothesis. The command line is checked by a round trip:
``tinyconv train --epochs 1``, ``tinyconv export``, ONNX Runtime against ``tinyconv evaluate``.

The tests that run models need ``onnx`` and ``onnxruntime`` (the ``[test]`` extra): without them
they skip with the reason, except under ``CI=true``, where they fail.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinyconv
from tinyconv import export as onnx_export
from tinyconv.cli import main
from tinyconv.containers import Residual, Sequential
from tinyconv.datasets import FASHION_MNIST_CLASSES, load_sample
from tinyconv.export import to_onnx
from tinyconv.layers import (Affine, BatchNorm2d, BatchNormalization, ChannelPadShortcut, Convolution, Dropout,
                             GlobalAvgPooling, Layer, Linear, Pooling, Relu, Sigmoid, SoftmaxWithLoss)
from tinyconv.network import Network
from tinyconv.nets import (DeepConvNet, MultiLayerNet, SimpleConvNet, TwoLayerNet, network_from_params, resnet18,
                           resnet20, resnet50)

from strategies import geometries

FLOAT32_TOLERANCE = 1e-4  # of the logit scale, max |predict|
FLOAT64_TOLERANCE = 1e-10


def _missing_modules():
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def rt():
    """onnx, ONNX Runtime and the reference evaluator; a skip (a failure under CI) without them.
    Module-scoped, so Hypothesis tests may use it."""
    missing = _missing_modules()
    if missing:
        reason = f"{' and '.join(missing)} not installed (pip install \"tinyconv[test]\")"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the ONNX export must be tested: {reason}")
        pytest.skip(reason)
    import onnx
    import onnxruntime
    from onnx.reference import ReferenceEvaluator

    return SimpleNamespace(onnx=onnx, ort=onnxruntime, ReferenceEvaluator=ReferenceEvaluator)


def session(rt, path):
    options = rt.ort.SessionOptions()
    options.intra_op_num_threads = 1  # a shared 2-core machine
    return rt.ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def checked_model(rt, path):
    """The model as read back from its file, after the full check."""
    model = rt.onnx.load(os.fspath(path))
    rt.onnx.checker.check_model(model, full_check=True)
    return model


def assert_close(actual, expected, tolerance):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = float(np.max(np.abs(expected)))
    assert scale > 0
    error = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert error <= tolerance * scale, f"max |difference| {error:.3g} exceeds {tolerance:g} x logit scale {scale:.3g}"


class LayerNet(Network):
    """A network of the given layers (a list or a Sequential), as a user would assemble one."""

    def __init__(self, layers, dtype=np.float64):
        super().__init__(dtype, None, None)
        self.layers = layers.layers if isinstance(layers, Sequential) else layers
        self.last_layer = SoftmaxWithLoss()
        self._register_tree(self._root())


def randomize(network, rng):
    """Random 1-D arrays (biases, batch-norm weights and statistics), which are zeros or ones
    when a network is built and would hide a term the export leaves out; weights keep their
    random initialisation."""
    for key, value in network.state_dict().items():
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != 1:
            continue
        if "running_var" in key:
            value[...] = rng.uniform(0.5, 2.0, value.shape)
        elif key.startswith("gamma") or key.endswith(".weight"):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
        else:
            value[...] = rng.normal(0.0, 0.2, value.shape)
    return network


def _custom_net(dtype):
    """Layers the networks of tinyconv.nets do not combine: rectangular strides and pads, a scalar
    bias, a convolution without bias, padded average pooling, padded max pooling, per-feature batch
    norm of an image (DLfS flattens it), per-channel batch norm of DLfS's class with running
    statistics never set, sigmoid, dropout, a Linear without bias."""
    rng = np.random.default_rng(5)
    conv1 = Convolution(rng.normal(0, 0.4, (4, 2, 3, 2)).astype(dtype), 0.25, stride=(2, 1), pad=(1, 2))
    conv2 = Convolution(rng.normal(0, 0.4, (3, 4, 2, 2)).astype(dtype), None, stride=1, pad=1)
    # 2x9x7 -> conv1: 4x5x10 -> average 3x2 /(1, 2) pad 1: 4x5x6, batch norm per feature (120) ->
    # conv2: 3x6x7 -> max 2x3 /2 pad 1: 3x4x4 -> affine 48 -> 6 -> linear 4
    per_feature = BatchNormalization(rng.uniform(0.5, 1.5, 120).astype(dtype), rng.normal(0, 0.2, 120).astype(dtype),
                                     running_mean=rng.normal(0, 0.2, 120).astype(dtype),
                                     running_var=rng.uniform(0.5, 2, 120).astype(dtype))
    per_channel = BatchNormalization(rng.uniform(0.5, 1.5, 3).astype(dtype), rng.normal(0, 0.2, 3).astype(dtype))
    layers = [conv1, Relu(), Pooling(3, 2, stride=(1, 2), pad=1, mode="avg"), per_feature, Sigmoid(),
              conv2, per_channel, Pooling(2, 3, stride=2, pad=(1, 1)), Dropout(0.25),
              Affine(rng.normal(0, 0.3, (48, 6)).astype(dtype), rng.normal(0, 0.2, 6).astype(dtype)),
              Relu(), Linear(rng.normal(0, 0.3, (4, 6)).astype(dtype), None)]
    return LayerNet(layers, dtype)


# name: (build(dtype), one sample's shape, fully connected?)
NETWORKS = {
    "TwoLayerNet": (lambda dtype: TwoLayerNet(30, 16, 7, weight_init_std=0.3, dtype=dtype, seed=1), (30,), True),
    "SimpleConvNet": (lambda dtype: SimpleConvNet(dtype=dtype, seed=1), (1, 28, 28), False),
    "SimpleConvNet-odd": (lambda dtype: SimpleConvNet(
        input_dim=(2, 13, 11), conv_param={"filter_num": 6, "filter_size": 3, "pad": 1, "stride": 2},
        hidden_size=20, output_size=5, weight_init_std=0.3, dtype=dtype, seed=1), (2, 13, 11), False),
    "DeepConvNet": (lambda dtype: DeepConvNet(dropout_ratio=0.3, dtype=dtype, seed=1), (1, 28, 28), False),
    "MultiLayerNetExtend": (lambda dtype: MultiLayerNet(24, [16, 12, 8], 6, use_batchnorm=True, use_dropout=True,
                                                        dropout_ration=0.3, dtype=dtype, seed=1), (24,), True),
    "MultiLayerNet-sigmoid": (lambda dtype: MultiLayerNet(24, [10], 3, activation="sigmoid", weight_init_std="xavier",
                                                          dtype=dtype, seed=1), (24,), True),
    "resnet20": (lambda dtype: resnet20(num_classes=10, in_channels=1, dtype=dtype, seed=1), (1, 28, 28), False),
    "resnet18": (lambda dtype: resnet18(num_classes=7, in_channels=3, dtype=dtype, seed=1), (3, 32, 32), False),
    "resnet50": (lambda dtype: resnet50(num_classes=5, in_channels=2, dtype=dtype, seed=1), (2, 32, 32), False),
    "custom": (_custom_net, (2, 9, 7), False),
}


def _network(name, dtype):
    build, sample_shape, fully_connected = NETWORKS[name]
    return randomize(build(dtype), np.random.default_rng(2)), sample_shape, fully_connected


def _inputs(rng, batch, sample_shape, dtype):
    return rng.uniform(0.0, 1.0, (batch, *sample_shape)).astype(dtype)


# ----------------------------------------------------------------------------------------------
# Every network: ONNX Runtime and the reference evaluator against predict


@pytest.mark.parametrize("name", list(NETWORKS))
def test_float32_model_matches_predict_at_batch_one_and_a_dynamic_batch(rt, name, tmp_path):
    network, sample_shape, _ = _network(name, np.float32)
    rng = np.random.default_rng(3)
    dynamic = tmp_path / "dynamic.onnx"
    to_onnx(network, dynamic, input_shape=sample_shape)
    model = checked_model(rt, dynamic)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    run = session(rt, dynamic)
    for batch in (1, 2, 5):  # one model, several batch sizes
        x = _inputs(rng, batch, sample_shape, np.float32)
        assert_close(run.run(["logits"], {"input": x})[0], network.predict(x), FLOAT32_TOLERANCE)

    fixed = tmp_path / "batch1.onnx"
    to_onnx(network, fixed, batch_size=1, input_shape=sample_shape)
    assert checked_model(rt, fixed).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    run = session(rt, fixed)
    x = _inputs(rng, 1, sample_shape, np.float32)
    assert_close(run.run(["logits"], {"input": x})[0], network.predict(x), FLOAT32_TOLERANCE)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the batch really is fixed
        run.run(["logits"], {"input": _inputs(rng, 2, sample_shape, np.float32)})


@pytest.mark.parametrize("name", list(NETWORKS))
def test_float64_model_matches_predict(rt, name, tmp_path):
    network, sample_shape, fully_connected = _network(name, np.float64)
    rng = np.random.default_rng(4)
    path = tmp_path / "model.onnx"
    to_onnx(network, path, input_shape=sample_shape)
    model = checked_model(rt, path)
    assert model.graph.input[0].type.tensor_type.elem_type == rt.onnx.TensorProto.DOUBLE
    evaluator = rt.ReferenceEvaluator(model)
    runtime = session(rt, path) if fully_connected else None
    for batch in (1, 3):
        x = _inputs(rng, batch, sample_shape, np.float64)
        expected = network.predict(x)
        assert_close(evaluator.run(["logits"], {"input": x})[0], expected, FLOAT64_TOLERANCE)
        if runtime is not None:  # ONNX Runtime has float64 kernels for these ops only
            assert_close(runtime.run(["logits"], {"input": x})[0], expected, FLOAT64_TOLERANCE)


def test_untrained_batch_norm_statistics_are_exact_in_float64(rt, tmp_path):
    """DLfS's running variance starts at 0, so the output divides by sqrt(epsilon): epsilon as
    ONNX's 32-bit attribute would be off by 3e-9 relative there."""
    network = MultiLayerNet(12, [9, 7], 4, use_batchnorm=True, dtype=np.float64, seed=3)
    network.params["b1"][...] = 0.3
    x = np.random.default_rng(0).uniform(0, 1, (5, 12))
    model = to_onnx(network, tmp_path / "m.onnx")
    assert_close(rt.ReferenceEvaluator(model).run(["logits"], {"input": x})[0], network.predict(x), FLOAT64_TOLERANCE)
    assert_close(session(rt, tmp_path / "m.onnx").run(["logits"], {"input": x})[0], network.predict(x),
                 FLOAT64_TOLERANCE)


def test_float64_network_exported_as_float32_runs_in_onnx_runtime(rt, tmp_path):
    network = randomize(resnet20(num_classes=4, in_channels=1, dtype=np.float64, seed=0), np.random.default_rng(1))
    model = to_onnx(network, tmp_path / "m.onnx", dtype=np.float32)
    assert model.graph.input[0].type.tensor_type.elem_type == rt.onnx.TensorProto.FLOAT
    assert all(tensor.data_type == rt.onnx.TensorProto.FLOAT for tensor in model.graph.initializer
               if tensor.data_type in (rt.onnx.TensorProto.FLOAT, rt.onnx.TensorProto.DOUBLE))
    x = np.random.default_rng(2).uniform(0, 1, (3, 1, 28, 28))
    out = session(rt, tmp_path / "m.onnx").run(["logits"], {"input": x.astype(np.float32)})[0]
    assert_close(out.astype(np.float64), network.predict(x), FLOAT32_TOLERANCE)


def test_resnet_model_takes_any_image_size(rt, tmp_path):
    """A ResNet ends in global average pooling, so its model's height and width stay symbolic
    unless input_shape fixes them: one model runs every size."""
    network = randomize(resnet18(num_classes=3, in_channels=1, seed=0), np.random.default_rng(0))
    model = to_onnx(network, tmp_path / "m.onnx")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "height", "width"]
    run = session(rt, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    for size in [(28, 28), (33, 17), (64, 40)]:
        x = rng.uniform(0, 1, (2, 1, *size)).astype(np.float32)
        assert_close(run.run(["logits"], {"input": x})[0], network.predict(x), FLOAT32_TOLERANCE)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A file the Hypothesis examples overwrite (to_onnx always writes its model)."""
    return tmp_path_factory.mktemp("onnx") / "scratch.onnx"


def float32_session(rt, network, path, **options):
    """ONNX Runtime running ``network`` exported as float32."""
    to_onnx(network, path, dtype=np.float32, **options)
    return session(rt, path)


@pytest.fixture(scope="module")
def padded_shortcut_model(rt, tmp_path_factory):
    """A block of a CIFAR ResNet (stride 2, channels 3 -> 7: an odd number, padded 2 before and
    2 after) in a network whose image size stays symbolic; float64 and float32 models."""
    rng = np.random.default_rng(6)
    body = Sequential(OrderedDict([
        ("conv1", Convolution(rng.normal(0, 0.3, (7, 3, 3, 3)), None, stride=2, pad=1)),
        ("bn1", BatchNorm2d(7, dtype=np.float64)), ("relu", Relu()),
        ("conv2", Convolution(rng.normal(0, 0.3, (7, 7, 3, 3)), None, stride=1, pad=1)),
        ("bn2", BatchNorm2d(7, dtype=np.float64))]))
    network = LayerNet([Convolution(rng.normal(0, 0.3, (3, 1, 3, 3)), rng.normal(0, 0.2, 3), 1, 1), Relu(),
                        Residual(body, ChannelPadShortcut(2, 7), relu=True), GlobalAvgPooling(),
                        Linear(rng.normal(0, 0.3, (5, 7)), rng.normal(0, 0.2, 5))])
    randomize(network, rng)
    directory = tmp_path_factory.mktemp("shortcut")
    model = to_onnx(network, directory / "m64.onnx")
    return network, rt.ReferenceEvaluator(model), float32_session(rt, network, directory / "m32.onnx")


@given(height=st.integers(1, 12), width=st.integers(1, 12), batch=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_parameter_free_shortcut_at_any_image_size(padded_shortcut_model, height, width, batch, seed):
    network, evaluator, runtime = padded_shortcut_model
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, 1, height, width))
    expected = network.predict(x)
    assert_close(evaluator.run(["logits"], {"input": x})[0], expected, FLOAT64_TOLERANCE)
    assert_close(runtime.run(["logits"], {"input": x.astype(np.float32)})[0].astype(np.float64), expected,
                 FLOAT32_TOLERANCE)


# ----------------------------------------------------------------------------------------------
# Pooling: tinyconv's padding and output-size conventions


def _pooling_net(geometry, mode):
    """Pooling, then the identity as an Affine layer, so the logits are the pooled values exactly."""
    features = geometry.C * geometry.out_h * geometry.out_w
    layers = [Pooling(geometry.kh, geometry.kw, geometry.stride, geometry.pad, mode=mode),
              Affine(np.eye(features), np.zeros(features))]
    return LayerNet(layers)


@given(geometry=geometries(pad_below_kernel=True), seed=st.integers(0, 2**31), negative=st.booleans())
def test_max_pooling_padding_never_wins(rt, scratch, geometry, seed, negative):
    """All-negative inputs make every window at the border one whose real values would lose to a
    zero padding: ONNX's MaxPool must leave the padding out, as tinyconv does. Both dtypes run in
    ONNX Runtime, which has float64 MaxPool and Gemm kernels. (onnx 1.23's ReferenceEvaluator
    reads MaxPool's pads per axis, [h_begin, h_end, w_begin, w_end], instead of the specified
    [h_begin, w_begin, h_end, w_end], so it is wrong whenever the height and width pads differ;
    ONNX Runtime follows the specification.)"""
    network = _pooling_net(geometry, "max")
    x = np.random.default_rng(seed).uniform(-2, 2, geometry.input_shape)
    if negative:
        x = -np.abs(x) - 0.5
    expected = network.predict(x)
    if negative:
        assert expected.max() < 0  # the padding did not win in tinyconv either
    to_onnx(network, scratch, input_shape=geometry.input_shape[1:])
    np.testing.assert_array_equal(session(rt, scratch).run(["logits"], {"input": x})[0], expected)
    runtime = float32_session(rt, network, scratch, input_shape=geometry.input_shape[1:])
    x32 = x.astype(np.float32)  # a maximum is exact: the same bits as tinyconv's float32 pooling
    np.testing.assert_array_equal(runtime.run(["logits"], {"input": x32})[0],
                                  _pooling_net(geometry, "max").predict(x32).astype(np.float32))


@given(geometry=geometries(), seed=st.integers(0, 2**31))
def test_average_pooling_counts_padding_as_zeros(rt, scratch, geometry, seed):
    """Every window divides by pool_h * pool_w (count_include_pad), windows wholly in the padding
    (pad >= pool) included; output sizes round down. Tolerances: float64 1e-12, float32 1e-5 of
    the largest input."""
    network = _pooling_net(geometry, "avg")
    x = np.random.default_rng(seed).uniform(-2, 2, geometry.input_shape)
    expected = network.predict(x)
    model = to_onnx(network, scratch, input_shape=geometry.input_shape[1:])
    np.testing.assert_allclose(rt.ReferenceEvaluator(model).run(["logits"], {"input": x})[0], expected,
                               rtol=0, atol=2e-12)
    runtime = float32_session(rt, network, scratch, input_shape=geometry.input_shape[1:])
    np.testing.assert_allclose(runtime.run(["logits"], {"input": x.astype(np.float32)})[0], expected, rtol=0,
                               atol=2e-5)
