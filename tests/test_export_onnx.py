"""ONNX export (issue 15): :func:`tinyconv.export.to_onnx` and ``tinyconv export``.

Every network kind -- TwoLayerNet, SimpleConvNet, DeepConvNet, MultiLayerNet(Extend) with batch
norm and dropout, ResNet-20 (parameter-free shortcuts), ResNet-18 (projection shortcuts, max
pooling with padding), ResNet-50 (bottlenecks; in float64 a narrow bottleneck ResNet, to spare 25M
float64 parameters) and networks assembled from the layers -- is exported
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
from hypothesis import given
from hypothesis import strategies as st
from strategies import geometries

import tinyconv
from tinyconv import export as onnx_export
from tinyconv.cli import main
from tinyconv.containers import Residual, Sequential
from tinyconv.datasets import FASHION_MNIST_CLASSES, load_sample
from tinyconv.export import to_onnx
from tinyconv.layers import (
    Affine,
    BatchNorm2d,
    BatchNormalization,
    ChannelPadShortcut,
    Convolution,
    Dropout,
    GlobalAvgPooling,
    Layer,
    Linear,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from tinyconv.nets import (
    DeepConvNet,
    MultiLayerNet,
    SimpleConvNet,
    TwoLayerNet,
    network_from_params,
    resnet18,
    resnet20,
    resnet50,
)
from tinyconv.network import Network
from tinyconv.resnet import ResNet

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
        reason = f'{" and ".join(missing)} not installed (pip install "tinyconv[test]")'
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
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    scale = float(np.max(np.abs(expected)))
    assert scale > 0
    error = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert error <= tolerance * scale, (
        f"max |difference| {error:.3g} exceeds {tolerance:g} x logit scale {scale:.3g}"
    )


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
    conv1 = Convolution(
        rng.normal(0, 0.4, (4, 2, 3, 2)).astype(dtype), 0.25, stride=(2, 1), pad=(1, 2)
    )
    conv2 = Convolution(rng.normal(0, 0.4, (3, 4, 2, 2)).astype(dtype), None, stride=1, pad=1)
    # 2x9x7 -> conv1: 4x5x10 -> average 3x2 /(1, 2) pad 1: 4x5x6, batch norm per feature (120) ->
    # conv2: 3x6x7 -> max 2x3 /2 pad 1: 3x4x4 -> affine 48 -> 6 -> linear 4
    per_feature = BatchNormalization(
        rng.uniform(0.5, 1.5, 120).astype(dtype),
        rng.normal(0, 0.2, 120).astype(dtype),
        running_mean=rng.normal(0, 0.2, 120).astype(dtype),
        running_var=rng.uniform(0.5, 2, 120).astype(dtype),
    )
    per_channel = BatchNormalization(
        rng.uniform(0.5, 1.5, 3).astype(dtype), rng.normal(0, 0.2, 3).astype(dtype)
    )
    layers = [
        conv1,
        Relu(),
        Pooling(3, 2, stride=(1, 2), pad=1, mode="avg"),
        per_feature,
        Sigmoid(),
        conv2,
        per_channel,
        Pooling(2, 3, stride=2, pad=(1, 1)),
        Dropout(0.25),
        Affine(rng.normal(0, 0.3, (48, 6)).astype(dtype), rng.normal(0, 0.2, 6).astype(dtype)),
        Relu(),
        Linear(rng.normal(0, 0.3, (4, 6)).astype(dtype), None),
    ]
    return LayerNet(layers, dtype)


# name: (build(dtype), one sample's shape, fully connected?)
NETWORKS = {
    "TwoLayerNet": (
        lambda dtype: TwoLayerNet(30, 16, 7, weight_init_std=0.3, dtype=dtype, seed=1),
        (30,),
        True,
    ),
    "SimpleConvNet": (lambda dtype: SimpleConvNet(dtype=dtype, seed=1), (1, 28, 28), False),
    "SimpleConvNet-odd": (
        lambda dtype: SimpleConvNet(
            input_dim=(2, 13, 11),
            conv_param={"filter_num": 6, "filter_size": 3, "pad": 1, "stride": 2},
            hidden_size=20,
            output_size=5,
            weight_init_std=0.3,
            dtype=dtype,
            seed=1,
        ),
        (2, 13, 11),
        False,
    ),
    "DeepConvNet": (
        lambda dtype: DeepConvNet(dropout_ratio=0.3, dtype=dtype, seed=1),
        (1, 28, 28),
        False,
    ),
    "MultiLayerNetExtend": (
        lambda dtype: MultiLayerNet(
            24,
            [16, 12, 8],
            6,
            use_batchnorm=True,
            use_dropout=True,
            dropout_ration=0.3,
            dtype=dtype,
            seed=1,
        ),
        (24,),
        True,
    ),
    "MultiLayerNet-sigmoid": (
        lambda dtype: MultiLayerNet(
            24, [10], 3, activation="sigmoid", weight_init_std="xavier", dtype=dtype, seed=1
        ),
        (24,),
        True,
    ),
    "resnet20": (
        lambda dtype: resnet20(num_classes=10, in_channels=1, dtype=dtype, seed=1),
        (1, 28, 28),
        False,
    ),
    "resnet18": (
        lambda dtype: resnet18(num_classes=7, in_channels=3, dtype=dtype, seed=1),
        (3, 32, 32),
        False,
    ),
    "resnet50": (
        lambda dtype: resnet50(num_classes=5, in_channels=2, dtype=dtype, seed=1),
        (2, 32, 32),
        False,
    ),
    # ResNet-50's blocks (bottlenecks, stride on the 3x3, projections) at a fraction of its 25M parameters
    "bottleneck-resnet": (
        lambda dtype: ResNet(
            "bottleneck", (2, 1, 2), (4, 8, 8), num_classes=6, in_channels=3, dtype=dtype, seed=1
        ),
        (3, 29, 35),
        False,
    ),
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
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):  # the batch really is fixed
        run.run(["logits"], {"input": _inputs(rng, 2, sample_shape, np.float32)})


@pytest.mark.parametrize(
    "name", [name for name in NETWORKS if name != "resnet50"]
)  # its blocks: bottleneck-resnet
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
    assert_close(
        rt.ReferenceEvaluator(model).run(["logits"], {"input": x})[0],
        network.predict(x),
        FLOAT64_TOLERANCE,
    )
    assert_close(
        session(rt, tmp_path / "m.onnx").run(["logits"], {"input": x})[0],
        network.predict(x),
        FLOAT64_TOLERANCE,
    )


def test_float64_network_exported_as_float32_runs_in_onnx_runtime(rt, tmp_path):
    network = randomize(
        resnet20(num_classes=4, in_channels=1, dtype=np.float64, seed=0), np.random.default_rng(1)
    )
    model = to_onnx(network, tmp_path / "m.onnx", dtype=np.float32)
    assert model.graph.input[0].type.tensor_type.elem_type == rt.onnx.TensorProto.FLOAT
    assert all(
        tensor.data_type == rt.onnx.TensorProto.FLOAT
        for tensor in model.graph.initializer
        if tensor.data_type in (rt.onnx.TensorProto.FLOAT, rt.onnx.TensorProto.DOUBLE)
    )
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
    """A block of a CIFAR ResNet (stride 2, channels 3 -> 8: padded 2 before and 3 after) in a
    network whose image size stays symbolic; float64 and float32 models."""
    rng = np.random.default_rng(6)
    body = Sequential(
        OrderedDict(
            [
                ("conv1", Convolution(rng.normal(0, 0.3, (8, 3, 3, 3)), None, stride=2, pad=1)),
                ("bn1", BatchNorm2d(8, dtype=np.float64)),
                ("relu", Relu()),
                ("conv2", Convolution(rng.normal(0, 0.3, (8, 8, 3, 3)), None, stride=1, pad=1)),
                ("bn2", BatchNorm2d(8, dtype=np.float64)),
            ]
        )
    )
    network = LayerNet(
        [
            Convolution(rng.normal(0, 0.3, (3, 1, 3, 3)), rng.normal(0, 0.2, 3), 1, 1),
            Relu(),
            Residual(body, ChannelPadShortcut(2, 8), relu=True),
            GlobalAvgPooling(),
            Linear(rng.normal(0, 0.3, (5, 8)), rng.normal(0, 0.2, 5)),
        ]
    )
    randomize(network, rng)
    directory = tmp_path_factory.mktemp("shortcut")
    model = to_onnx(network, directory / "m64.onnx")
    return (
        network,
        rt.ReferenceEvaluator(model),
        float32_session(rt, network, directory / "m32.onnx"),
    )


@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_parameter_free_shortcut_at_any_image_size(
    padded_shortcut_model, height, width, batch, seed
):
    network, evaluator, runtime = padded_shortcut_model
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, 1, height, width))
    expected = network.predict(x)
    assert_close(evaluator.run(["logits"], {"input": x})[0], expected, FLOAT64_TOLERANCE)
    assert_close(
        runtime.run(["logits"], {"input": x.astype(np.float32)})[0].astype(np.float64),
        expected,
        FLOAT32_TOLERANCE,
    )


# ----------------------------------------------------------------------------------------------
# Pooling: tinyconv's padding and output-size conventions


def _pooling_net(geometry, mode):
    """Pooling, then the identity as an Affine layer, so the logits are the pooled values exactly."""
    features = geometry.C * geometry.out_h * geometry.out_w
    layers = [
        Pooling(geometry.kh, geometry.kw, geometry.stride, geometry.pad, mode=mode),
        Affine(np.eye(features), np.zeros(features)),
    ]
    return LayerNet(layers)


@given(
    geometry=geometries(pad_below_kernel=True), seed=st.integers(0, 2**31), negative=st.booleans()
)
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
    np.testing.assert_array_equal(
        runtime.run(["logits"], {"input": x32})[0],
        _pooling_net(geometry, "max").predict(x32).astype(np.float32),
    )


@given(geometry=geometries(), seed=st.integers(0, 2**31))
def test_average_pooling_counts_padding_as_zeros(rt, scratch, geometry, seed):
    """Every window divides by pool_h * pool_w (count_include_pad), windows wholly in the padding
    (pad >= pool) included; output sizes round down. Tolerances: float64 1e-12, float32 1e-5 of
    the largest input."""
    network = _pooling_net(geometry, "avg")
    x = np.random.default_rng(seed).uniform(-2, 2, geometry.input_shape)
    expected = network.predict(x)
    model = to_onnx(network, scratch, input_shape=geometry.input_shape[1:])
    np.testing.assert_allclose(
        rt.ReferenceEvaluator(model).run(["logits"], {"input": x})[0], expected, rtol=0, atol=2e-12
    )
    runtime = float32_session(rt, network, scratch, input_shape=geometry.input_shape[1:])
    np.testing.assert_allclose(
        runtime.run(["logits"], {"input": x.astype(np.float32)})[0], expected, rtol=0, atol=2e-5
    )


# ----------------------------------------------------------------------------------------------
# What the model says about itself


def test_metadata_and_doc_string_describe_the_input_and_the_training(rt, tmp_path):
    network = randomize(resnet20(num_classes=3, in_channels=1, seed=0), np.random.default_rng(0))
    classes = ["T-shirt/top", "Trouser", "Pullover"]
    path = tmp_path / "m.onnx"
    to_onnx(
        network,
        path,
        batch_size=4,
        input_shape=(1, 28, 28),
        softmax=True,
        dataset="Fashion-MNIST",
        classes=classes,
        normalization="pixel values in [0, 1]",
    )
    model = checked_model(rt, path)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata == {
        "tinyconv_version": tinyconv.__version__,
        "network": "ResNet",
        "architecture": "resnet20",
        "input_name": "input",
        "input_shape": "[4, 1, 28, 28]",
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "outputs": '["logits", "probabilities"]',
        "normalization": "pixel values in [0, 1]",
        "dataset": "Fashion-MNIST",
        "classes": json.dumps(classes),
    }
    assert model.producer_name == "tinyconv"
    assert model.producer_version == tinyconv.__version__
    for text in (
        "ResNet (resnet20) exported by tinyconv",
        "Input 'input': float32, shape (4, 1, 28, 28) (NCHW",
        "Input normalisation: pixel values in [0, 1].",
        "logits (float32, (4, 3))",
        "probabilities",
        "Training data set: Fashion-MNIST.",
        "Classes, in the order of the outputs: T-shirt/top, Trouser, Pullover.",
    ):
        assert text in model.doc_string and text in model.graph.doc_string, text
    assert [value.name for value in model.graph.output] == ["logits", "probabilities"]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [4, 3]


def test_metadata_leaves_out_what_was_not_given(rt, tmp_path):
    model = to_onnx(TwoLayerNet(6, 4, 3, seed=0, dtype=np.float64), tmp_path / "m.onnx")
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata == {
        "tinyconv_version": tinyconv.__version__,
        "network": "TwoLayerNet",
        "input_name": "input",
        "input_shape": '["batch", 6]',
        "input_layout": "ND",
        "input_dtype": "float64",
        "outputs": '["logits"]',
    }
    assert "Input normalisation: not recorded" in model.doc_string
    assert "Training data set: not recorded" in model.doc_string


@pytest.mark.parametrize("name", ["DeepConvNet", "MultiLayerNetExtend", "resnet18"])
def test_initializers_carry_the_parameter_names_and_values(rt, name, tmp_path):
    network, sample_shape, _ = _network(name, np.float32)
    model = to_onnx(network, tmp_path / "m.onnx", input_shape=sample_shape)
    initializers = {
        tensor.name: rt.onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer
    }
    for key, value in network.state_dict().items():
        if key.endswith("num_batches_tracked"):  # a counter, not part of the function
            continue
        np.testing.assert_array_equal(initializers[key], value, err_msg=key)  # bitwise, same dtype
        assert initializers[key].dtype == value.dtype


def test_softmax_output(rt, tmp_path):
    network, sample_shape, _ = _network("SimpleConvNet-odd", np.float32)
    path = tmp_path / "m.onnx"
    to_onnx(network, path, softmax=True)
    x = _inputs(np.random.default_rng(0), 4, sample_shape, np.float32)
    logits, probabilities = session(rt, path).run(None, {"input": x})
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        probabilities, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7
    )
    assert_close(logits, network.predict(x), FLOAT32_TOLERANCE)


@pytest.mark.parametrize("opset", [13, 15, 17, 20])  # onnxruntime >= 1.17 runs up to 20
def test_every_opset_from_13(rt, opset, tmp_path):
    rng = np.random.default_rng(opset)
    for name in ("DeepConvNet", "resnet20", "custom", "MultiLayerNetExtend"):
        network, sample_shape, _ = _network(name, np.float32)
        path = tmp_path / f"{name}.onnx"
        to_onnx(network, path, opset=opset, softmax=True, input_shape=sample_shape)
        model = checked_model(rt, path)
        assert [(entry.domain, entry.version) for entry in model.opset_import] == [("", opset)]
        assert model.ir_version == rt.onnx.helper.find_min_ir_version_for(list(model.opset_import))
        x = _inputs(rng, 2, sample_shape, np.float32)
        assert_close(
            session(rt, path).run(["logits"], {"input": x})[0],
            network.predict(x),
            FLOAT32_TOLERANCE,
        )


def test_layers_named_like_the_graph_inputs_and_outputs(rt, tmp_path):
    """Layer names become node and tensor names; the graph's own names stay reserved."""
    rng = np.random.default_rng(0)
    layers = OrderedDict(
        [
            ("input", Affine(rng.normal(size=(6, 5)), rng.normal(size=5))),
            ("logits", Relu()),
            ("probabilities", Linear(rng.normal(size=(4, 5)), rng.normal(size=4))),
            ("softmax", Relu()),
        ]
    )
    network = LayerNet(Sequential(layers))
    path = tmp_path / "m.onnx"
    to_onnx(network, path, softmax=True)
    checked_model(rt, path)
    x = rng.normal(size=(3, 6))
    logits, probabilities = rt.ReferenceEvaluator(os.fspath(path)).run(None, {"input": x})
    assert_close(logits, network.predict(x), FLOAT64_TOLERANCE)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)


def test_a_network_without_layers_is_the_identity(rt, tmp_path):
    network = LayerNet([])
    model = to_onnx(network, tmp_path / "m.onnx", input_shape=(3,))
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(
        rt.ReferenceEvaluator(model).run(["logits"], {"input": x})[0], network.predict(x)
    )


# ----------------------------------------------------------------------------------------------
# Arguments, unknown layers, the file


def _simple():
    return SimpleConvNet(seed=0)


class _Doubler(Layer):
    def step_forward(self, x, train, x_owned):
        return 2 * np.asarray(x), True


class _LeakyRelu(Relu):
    """A subclass computes something else: it must not be exported as its parent."""


INVALID = [
    ({"network": "net"}, TypeError, "network must be a tinyconv network .*got str"),
    ({"path": 5}, TypeError, "path must be a str or os.PathLike, got 5"),
    ({"path": ""}, ValueError, "path must be a non-empty file name, got ''"),
    ({"path": "{dir}"}, ValueError, "path '{dir}' is a directory"),
    ({"batch_size": 0}, ValueError, "batch_size must be at least 1, got 0"),
    ({"batch_size": -3}, ValueError, "batch_size must be at least 1, got -3"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an int or None, got 2.0"),
    ({"batch_size": True}, TypeError, "batch_size must be an int or None, got True"),
    ({"opset": 12}, ValueError, "opset must be from 13 to [0-9]+ .*got 12"),
    ({"opset": 10**6}, ValueError, "opset must be from 13 to [0-9]+ .*got 1000000"),
    ({"opset": "17"}, TypeError, "opset must be an int, got '17'"),
    ({"opset": 17.0}, TypeError, "opset must be an int, got 17.0"),
    ({"softmax": "yes"}, TypeError, "softmax must be a bool, got 'yes'"),
    ({"softmax": 1}, TypeError, "softmax must be a bool, got 1"),
    (
        {"input_shape": (1, 20, 20)},
        ValueError,
        r"input_shape \(1, 20, 20\) does not fit the SimpleConvNet: layer 'Affine1' \(Affine\) .*it takes 4320 features, the input gives 1920",
    ),
    (
        {"input_shape": (3, 28, 28)},
        ValueError,
        r"input_shape \(3, 28, 28\) does not fit the SimpleConvNet: layer 'Conv1' \(Convolution\) .*its filters take 1 channels",
    ),
    (
        {"input_shape": (1, 4, 4)},
        ValueError,
        r"layer 'Conv1' .*a 5-wide window does not fit 4 \+ 2 x 0 padding",
    ),
    (
        {"input_shape": (784,)},
        ValueError,
        r"layer 'Conv1' \(Convolution\) gets a tensor of shape \(\?, 784\): it needs \(N, C, H, W\)",
    ),
    (
        {"input_shape": (1, 28)},
        ValueError,
        r"input_shape must be \(C, H, W\) for images or \(D,\) for features, got \(1, 28\)",
    ),
    ({"input_shape": (1, 0, 28)}, ValueError, "input_shape entries must be at least 1, got 0"),
    ({"input_shape": "1x28x28"}, TypeError, "input_shape must be a tuple"),
    (
        {"input_shape": (1, 28.0, 28)},
        TypeError,
        "input_shape entries must be an int or None, got 28.0",
    ),
    ({"dtype": np.int32}, ValueError, "dtype must be float32, float64 or None, got int32"),
    ({"dtype": np.float16}, ValueError, "dtype must be float32, float64 or None, got float16"),
    ({"dtype": "nonsense"}, TypeError, "dtype must be float32, float64 or None, got 'nonsense'"),
    ({"classes": ["a", "b"]}, ValueError, "classes names 2 classes but the network has 10 outputs"),
    ({"classes": "abcdefghij"}, TypeError, "classes must be a sequence of class names"),
    ({"classes": list(range(10))}, TypeError, "classes must hold class names \\(str\\), got 0"),
    ({"classes": ["a"] * 10}, ValueError, "classes must be distinct"),
    ({"dataset": ""}, ValueError, "dataset must not be empty, got ''"),
    ({"dataset": 5}, TypeError, "dataset must be a str or None, got 5"),
    (
        {"normalization": b"[0, 1]"},
        TypeError,
        "normalization must be a str or None, got b'\\[0, 1\\]'",
    ),
    (
        {
            "network": LayerNet(
                [Convolution(np.ones((2, 1, 3, 3)), None), _Doubler(), GlobalAvgPooling()]
            )
        },
        TypeError,
        r"cannot export layer '1' of type test_export_onnx\._Doubler: no ONNX form is known for it \(exportable: Affine, ",
    ),
    (
        {"network": LayerNet([Affine(np.ones((4, 3)), None), _LeakyRelu()])},
        TypeError,
        "cannot export layer '1' of type test_export_onnx._LeakyRelu",
    ),
    (
        {
            "network": LayerNet(
                [Convolution(np.ones((2, 1, 3, 3)), None), Pooling(2, 2, pad=2), GlobalAvgPooling()]
            ),
            "input_shape": (1, 8, 8),
        },
        ValueError,
        r"layer '1': max pooling needs pad < pool, got pad \(2, 2\) for a 2x2 window",
    ),
    (
        {"network": LayerNet([Convolution(np.ones((2, 1, 3, 3)), None)])},
        ValueError,
        r"the LayerNet ends in a tensor of shape \(\?, 2, \?, \?\), not \(batch, classes\) logits",
    ),
]


@pytest.mark.parametrize(("arguments", "error", "message"), INVALID)
def test_invalid_arguments_name_the_argument_and_value_and_write_nothing(
    rt, arguments, error, message, tmp_path
):
    arguments = dict(arguments)
    network = arguments.pop("network", None) or _simple()
    path = arguments.pop("path", tmp_path / "m.onnx")
    if path == "{dir}":
        path = str(tmp_path)
    message = message.replace("{dir}", str(tmp_path))
    with pytest.raises(error, match=message):
        to_onnx(network, path, **arguments)
    assert os.listdir(tmp_path) == []


def test_a_failed_export_leaves_an_existing_file_as_it_was(rt, tmp_path):
    path = tmp_path / "m.onnx"
    to_onnx(TwoLayerNet(5, 4, 3, seed=0), path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="_Doubler"):
        to_onnx(LayerNet([Affine(np.ones((5, 3)), None), _Doubler()]), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.onnx"]
    rt.onnx.checker.check_model(rt.onnx.load(os.fspath(path)), full_check=True)


def test_without_the_onnx_package_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(
        ImportError,
        match=r'exporting to ONNX needs the onnx package: pip install "tinyconv\[onnx\]"',
    ):
        to_onnx(TwoLayerNet(5, 4, 3, seed=0), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
    code, _, stderr = run_cli(["export", "params.pkl", str(tmp_path / "m.onnx")])
    assert code == 2
    assert stderr == (
        "error: exporting to ONNX needs the onnx package; install it with: "
        'pip install "tinyconv[onnx]"\n'
    )


def test_module_exports():
    assert set(onnx_export.__all__) >= {"to_onnx", "DEFAULT_OPSET", "MIN_OPSET"}
    assert onnx_export.MIN_OPSET <= onnx_export.DEFAULT_OPSET


# ----------------------------------------------------------------------------------------------
# The command line


def run_cli(argv):
    """main(argv) with stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


TINY_TRAINING = [
    "--epochs",
    "1",
    "--train-size",
    "200",
    "--test-size",
    "100",
    "--eval-samples",
    "100",
    "--seed",
    "0",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Networks trained for one epoch by the command line: SimpleConvNet on every class, and a
    ResNet-20 on three classes (so its history.json records them)."""
    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for name, extra in (
        ("simple", []),
        ("resnet20", ["--net", "resnet20", "--classes", "2,0,7", "--batch-size", "50"]),
    ):
        code, _, stderr = run_cli(["train", *TINY_TRAINING, *extra, "--out", str(root / name)])
        assert code == 0, stderr
        runs[name] = root / name / ("params.pkl" if name == "simple" else "params.npz")
    return runs


@pytest.mark.parametrize("name", ["simple", "resnet20"])
def test_round_trip_train_export_onnx_runtime_against_evaluate(rt, trained_runs, name, tmp_path):
    """tinyconv train --epochs 1, then tinyconv export: ONNX Runtime classifies the test images as
    tinyconv evaluate does, with the same accuracy, and its logits equal predict's."""
    params = trained_runs[name]
    model_path = tmp_path / "deploy" / "model.onnx"  # the directory is created
    code, stdout, stderr = run_cli(["export", str(params), str(model_path)])
    assert code == 0 and stderr == "", stderr
    assert stdout.startswith(f"Wrote {model_path}: ")
    assert "input 'input' (batch, 1, 28, 28)" in stdout
    code, _, stderr = run_cli(
        ["evaluate", str(params), "--test-size", "100", "--out", str(tmp_path / "eval")]
    )
    assert code == 0, stderr
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())

    model = checked_model(rt, model_path)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    _, (x_test, t_test) = load_sample(flatten=False)
    if name == "resnet20":
        classes = [2, 0, 7]
        keep = np.isin(t_test, classes)
        x_test, t_test = x_test[keep], np.array([classes.index(label) for label in t_test[keep]])
    else:
        classes = list(range(10))
    x_test, t_test = x_test[:100], t_test[:100]
    assert evaluation["classes"] == classes
    assert evaluation["test_size"] == len(t_test)
    assert json.loads(metadata["classes"]) == [FASHION_MNIST_CLASSES[label] for label in classes]
    assert metadata["dataset"] == "the Fashion-MNIST sample"
    assert "[0, 1]" in metadata["normalization"]

    logits = session(rt, model_path).run(["logits"], {"input": x_test})[0]
    network = network_from_params(os.fspath(params))
    assert_close(logits, network.predict(x_test), FLOAT32_TOLERANCE)
    assert float(np.mean(np.argmax(logits, axis=1) == t_test)) == evaluation["accuracy"]


def test_export_options(rt, trained_runs, tmp_path):
    params = str(trained_runs["simple"])
    path = tmp_path / "m.onnx"
    code, stdout, stderr = run_cli(
        [
            "export",
            params,
            str(path),
            "--softmax",
            "--batch-size",
            "8",
            "--opset",
            "13",
            "--dtype",
            "float64",
            "--dataset",
            "mnist",
            "--classes",
            "0,1,2,3,4,5,6,7,8,9",
        ]
    )
    assert code == 0, stderr
    assert (
        "ONNX opset 13, float64; input 'input' (8, 1, 28, 28), output 'logits' and 'probabilities' (8, 10)"
        in stdout
    )
    model = checked_model(rt, path)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata["dataset"] == "MNIST"
    assert json.loads(metadata["classes"]) == [str(digit) for digit in range(10)]
    assert model.opset_import[0].version == 13
    assert metadata["input_dtype"] == "float64"
    x = np.random.default_rng(0).uniform(0, 1, (8, 1, 28, 28))
    logits, probabilities = rt.ReferenceEvaluator(model).run(None, {"input": x})
    network = network_from_params(params, dtype=np.float64)
    assert_close(logits, network.predict(x), FLOAT64_TOLERANCE)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)


def test_export_of_a_dlfs_file_without_history(rt, tmp_path):
    """A DLfS parameter file (a pickle of W1..b3, no history.json): classes unknown unless told."""
    network = SimpleConvNet(seed=3, dtype=np.float64)
    network.save_params(str(tmp_path / "params.pkl"))
    code, _, stderr = run_cli(["export", str(tmp_path / "params.pkl"), str(tmp_path / "m.onnx")])
    assert code == 0, stderr
    metadata = {
        prop.key: prop.value for prop in rt.onnx.load(os.fspath(tmp_path / "m.onnx")).metadata_props
    }
    assert "classes" not in metadata
    assert "dataset" not in metadata
    assert metadata["input_dtype"] == "float32"


EXPORT_ERRORS = [
    (["export"], "the following arguments are required: PARAMS, MODEL"),
    (["export", "{params}"], "the following arguments are required: MODEL"),
    (["export", "{params}", ""], "argument MODEL: expected a path, got an empty string"),
    (
        ["export", "{params}", "{dir}"],
        "{dir} is a directory; MODEL must name the .onnx file to write",
    ),
    (["export", "{missing}", "{out}"], "parameter file not found: {missing}"),
    (["export", "{notparams}", "{out}"], "cannot read parameters: {notparams}"),
    (
        ["export", "{params}", "{out}", "--opset", "12"],
        "argument --opset: must be at least 13, got 12",
    ),
    (["export", "{params}", "{out}", "--opset", "1000"], "--opset 1000: the installed onnx "),
    (
        ["export", "{params}", "{out}", "--batch-size", "0"],
        "argument --batch-size: must be at least 1, got 0",
    ),
    (
        ["export", "{params}", "{out}", "--dtype", "float16"],
        "argument --dtype: invalid choice: 'float16'",
    ),
    (
        ["export", "{params}", "{out}", "--net", "deep"],
        "{params} has no 'W7', which a DeepConvNet needs",
    ),
    (
        ["export", "{params}", "{out}", "--classes", "1,2"],
        "--classes 1,2: name the data set they are classes of with --dataset",
    ),
    (
        ["export", "{params}", "{out}", "--dataset", "mnist", "--classes", "1,2"],
        "--classes 1,2 names 2 classes but the network has 10 outputs",
    ),
    (
        ["export", "{params}", "{out}", "--dataset", "mnist", "--classes", "1,2,3,4,5,6,7,8,9,10"],
        "--classes 1,2,3,4,5,6,7,8,9,10: class 10 is not one of MNIST's classes 0 to 9",
    ),
    (
        ["export", "{params}", "{afile}/m.onnx"],
        "MODEL {afile}/m.onnx: {afile} exists and is not a directory",
    ),
    (
        ["export", "{params}", "{afile}/sub/m.onnx"],
        "cannot create the output directory {afile}/sub",
    ),
]


@pytest.mark.parametrize(("argv", "message"), EXPORT_ERRORS)
def test_export_errors_are_one_line_and_create_nothing(rt, argv, message, tmp_path):
    SimpleConvNet(seed=0).save_params(str(tmp_path / "params.pkl"))
    (tmp_path / "not-params.txt").write_text("hello")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "dir").mkdir()
    names = {
        "params": tmp_path / "params.pkl",
        "dir": tmp_path / "dir",
        "missing": tmp_path / "missing.pkl",
        "notparams": tmp_path / "not-params.txt",
        "out": tmp_path / "out" / "m.onnx",
        "afile": tmp_path / "a-file",
    }
    before = sorted(os.listdir(tmp_path))
    code, stdout, stderr = run_cli([arg.format(**names) for arg in argv])
    assert code == 2, (stdout, stderr)
    assert stdout == "" and "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert message.format(**names) in stderr
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(tmp_path / "dir") == []
