"""Sequential and Residual: plans, fusions, ownership of tensors with several consumers, skipped work.

Oracles: NumPy compositions of the layers' plain ``forward``/``backward`` and central differences.
Tolerances: float64 1e-12 relative for compositions of the same operations, 1e-6 relative for central
differences (step 1e-6; the loss is smooth away from ReLU kinks, which the small random inputs
avoid with overwhelming probability); float32 comparisons of fused and unfused plans are bitwise,
except inference folding of batch norm into a convolution (float32 2e-5, float64 1e-12 relative
to the largest output).
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv import containers
from tinyconv.containers import Residual, Sequential
from tinyconv.layers import (
    BatchNorm2d,
    BatchNormalization,
    ChannelPadShortcut,
    Convolution,
    GlobalAvgPooling,
    Linear,
    Pooling,
    Relu,
)
from tinyconv.nets import DeepConvNet, SimpleConvNet, resnet20
from tinyconv.resnet import ResNet


def _conv(rng, f, c, k=3, dtype=np.float64, stride=1, pad=1):
    return Convolution(
        rng.standard_normal((f, c, k, k)).astype(dtype) * 0.3,
        rng.standard_normal(f).astype(dtype) * 0.1,
        stride,
        pad,
    )


def _residual_net(rng, dtype=np.float64, relu_first=True):
    """conv -> [relu -> conv] + identity -> relu: the block's body starts with a ReLU that would
    overwrite the block input in place if it were handed ownership. With ``relu_first=False`` the
    body is [conv -> relu]: its ReLU's backward pass would zero entries of the incoming gradient
    in place, which the identity shortcut still reads."""
    body = (
        [Relu(), _conv(rng, 3, 3, dtype=dtype)]
        if relu_first
        else [_conv(rng, 3, 3, dtype=dtype), Relu()]
    )
    return Sequential([_conv(rng, 3, 2, dtype=dtype), Residual(Sequential(body)), Relu()])


def _reference_forward(net, x):
    conv1, block, _ = net.layer_list()
    h = conv1.W, conv1.b
    a = _np_conv(x, *h)
    body_conv = block.body.layer_list()[1]
    return np.maximum(_np_conv(np.maximum(a, 0), body_conv.W, body_conv.b) + a, 0)


def _np_conv(x, W, b):
    n, _c, hh, ww = x.shape
    f, _, k, _ = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, f, hh, ww))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,fc->nfhw", xp[:, :, i : i + hh, j : j + ww], W[:, :, i, j])
    return out + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("train", [True, False])
def test_a_residual_input_with_two_consumers_is_never_overwritten(train):
    rng = np.random.default_rng(0)
    net = _residual_net(rng)
    x = rng.standard_normal((2, 2, 5, 4))
    x_copy = x.copy()
    y = net.step_forward(x, train, True)[
        0
    ]  # the caller hands x over: the first conv may not keep it
    np.testing.assert_allclose(y, _reference_forward(net, x_copy), rtol=1e-12, atol=1e-12)
    y2 = net.forward(x_copy.copy(), train)
    np.testing.assert_array_equal(y, y2)


def _loss_and_grads(net, x, weights):
    y = net.step_forward(x, True, False)[0]
    loss = float(np.sum(y * weights))
    dx = net.step_backward(weights.copy(), True, True)[0]
    return loss, dx


@pytest.mark.parametrize("relu_first", [True, False])
def test_residual_backward_sums_both_branches_and_keeps_dout_intact(relu_first):
    """The incoming gradient feeds the body (whose ReLU would zero entries of it in place if it
    owned it) and the identity shortcut: dx and every parameter gradient match central
    differences."""
    rng = np.random.default_rng(1)
    net = _residual_net(rng, relu_first=relu_first)
    x = rng.standard_normal((2, 2, 4, 3))
    weights = rng.standard_normal((2, 3, 4, 3))
    _, dx = _loss_and_grads(net, x, weights)
    conv1 = net.layer_list()[0]
    body_conv = net.layer_list()[1].body.layer_list()[1 if relu_first else 0]
    grads = {"dx": dx, "W1": conv1.dW.copy(), "W2": body_conv.dW.copy(), "b2": body_conv.db.copy()}
    h = 1e-6

    def numeric(array):
        out = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            old = array[index]
            array[index] = old + h
            plus = float(np.sum(net.forward(x, True) * weights))
            array[index] = old - h
            minus = float(np.sum(net.forward(x, True) * weights))
            array[index] = old
            out[index] = (plus - minus) / (2 * h)
        return out

    for name, array in (("dx", x), ("W1", conv1.W), ("W2", body_conv.W), ("b2", body_conv.b)):
        expected = numeric(array)
        np.testing.assert_allclose(
            grads[name], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max(), err_msg=name
        )


def test_residual_with_projection_and_pad_shortcuts_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    body = Sequential([_conv(rng, 4, 3, stride=2)])
    projection = Sequential([_conv(rng, 4, 3, k=1, stride=2, pad=0)])
    y = Residual(body, projection).forward(x.copy(), True)
    body_out = Sequential([body.layer_list()[0]]).forward(x.copy())
    short = projection.layer_list()[0].forward(x.copy())
    np.testing.assert_allclose(y, body_out + short, rtol=1e-13)

    pad = ChannelPadShortcut(2, 7)
    s = pad.forward(x)
    assert s.shape == (2, 7, 3, 3)
    np.testing.assert_array_equal(s[:, 2:5], x[:, :, ::2, ::2])
    assert not s[:, :2].any()
    assert not s[:, 5:].any()
    d = rng.standard_normal(s.shape)
    dx = pad.backward(d)
    np.testing.assert_allclose(np.sum(dx * x), np.sum(d * s), rtol=1e-12)  # adjoint of a linear map


def test_the_plans_fuse_what_the_table_says():
    rng = np.random.default_rng(3)
    norm = BatchNorm2d(4, dtype=np.float64)
    seq = Sequential(
        [
            _conv(rng, 4, 2),
            norm,
            Relu(),
            Pooling(2, 2, 2),
            _conv(rng, 4, 4),
            Relu(),
            Pooling(2, 2, 2, mode="avg"),
            GlobalAvgPooling(),
            Linear(np.ones((3, 4)), np.zeros(3)),
        ]
    )
    assert seq.plan("train") == [
        ("Convolution",),
        ("BatchNorm2d", "Relu"),
        ("Pooling",),
        ("Convolution", "Relu"),
        ("Pooling",),
        ("GlobalAvgPooling",),
        ("Linear",),
    ]
    assert seq.plan("infer") == [
        ("Convolution", "BatchNorm2d", "Relu", "Pooling"),
        ("Convolution", "Relu"),
        ("Pooling",),
        ("GlobalAvgPooling",),
        ("Linear",),
    ]
    assert seq.plan("backward") == [
        ("Convolution",),
        ("BatchNorm2d", "Relu"),
        ("Pooling",),
        ("Convolution",),
        ("Relu",),
        ("Pooling",),
        ("GlobalAvgPooling",),
        ("Linear",),
    ]
    # The plan follows changes of the layer list.
    seq.layers.insert(0, Relu())
    assert seq.plan("train")[0] == ("Relu",)
    with pytest.raises(ValueError, match="phase"):
        seq.plan("test")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_plans_equal_the_layers_one_by_one(dtype, monkeypatch):
    """Training forward and backward of a ResNet-20 are bitwise those of the unfused layers;
    inference folds batch norm into the convolutions: equal to rounding."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 1, 12, 12)).astype(dtype)
    t = rng.integers(0, 10, 6)

    def run():
        net = resnet20(dtype=dtype, seed=5)
        for key, value in net.state_dict().items():  # non-trivial statistics and affine parameters
            if value.dtype.kind == "f":
                value[...] = (
                    np.random.default_rng(len(key)).uniform(0.5, 1.5, value.shape).astype(dtype)
                )
        grads = {k: v.copy() for k, v in net.gradient(x, t).items()}
        return net.predict(x, train_flg=True), grads, net.predict(x)

    train_fused, grads_fused, infer_fused = run()
    monkeypatch.setattr(containers, "FUSIONS", [])
    train_plain, grads_plain, infer_plain = run()
    np.testing.assert_array_equal(train_fused, train_plain)
    for key in grads_plain:
        np.testing.assert_array_equal(grads_fused[key], grads_plain[key], err_msg=key)
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(
        infer_fused, infer_plain, rtol=0, atol=tolerance * np.abs(infer_plain).max()
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("net", ["SimpleConvNet", "DeepConvNet", "conv-pool", "resnet-stem"])
def test_fused_pooling_at_inference_equals_the_layers_one_by_one(net, dtype, monkeypatch):
    """Inference runs a convolution (-> ReLU) -> max pooling as one kernel (and, after a batch
    norm it folds, the ImageNet stem's convolution -> batch norm -> ReLU -> max pooling): the same
    bits as the layers one by one, where nothing is folded; equal to the folding's rounding where
    a batch norm is."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 1, 28, 28)).astype(dtype)
    expected_step = ("Convolution", "Relu", "Pooling")

    def make():
        if net == "SimpleConvNet":
            return SimpleConvNet(dtype=dtype, seed=3)
        if net == "DeepConvNet":
            return DeepConvNet(dtype=dtype, seed=3)
        if net == "conv-pool":  # no ReLU between; an overlapping, padded window
            weights = np.random.default_rng(1)
            return Sequential(
                [
                    _conv(weights, 3, 1, dtype=dtype),
                    Pooling(3, 3, 2, 1),
                    _conv(weights, 2, 3, k=2, dtype=dtype, pad=0),
                ]
            )
        return ResNet(
            "basic", (1,), (4,), num_classes=3, in_channels=1, stem="imagenet", dtype=dtype, seed=2
        )

    def infer():
        model = make()
        if net == "resnet-stem":
            for key, value in model.state_dict().items():
                if value.dtype.kind == "f":
                    value[...] = np.random.default_rng(len(key)).uniform(0.5, 1.5, value.shape)
        return model.predict(x) if hasattr(model, "predict") else model.forward(x)

    model = make()
    root = model if isinstance(model, Sequential) else model._root()
    plan = root.plan("infer")
    if net == "conv-pool":
        expected_step = ("Convolution", "Pooling")
    elif net == "resnet-stem":
        expected_step = ("Convolution", "BatchNorm2d", "Relu", "Pooling")
    assert expected_step in plan, plan
    fused = infer()
    monkeypatch.setattr(containers, "FUSIONS", [])
    plain = infer()
    if net == "resnet-stem":
        tolerance = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(fused, plain, rtol=0, atol=tolerance * np.abs(plain).max())
    else:
        np.testing.assert_array_equal(fused, plain)


def test_inference_of_a_dlfs_batch_norm_never_trained_starts_from_zero_statistics(
    monkeypatch,
):
    """DLfS's BatchNormalization sets its running statistics on its first forward pass (zeros):
    the plan does not fold one that has none yet, and gives what the layers one by one give."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 6, 6))
    W, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)

    def run():
        norm = BatchNormalization(gamma, beta)
        seq = Sequential([Convolution(W, b, pad=1), norm, Relu()])
        assert norm.running_mean is None
        return seq.forward(x), norm

    fused, norm = run()
    np.testing.assert_array_equal(norm.running_mean, np.zeros(4))
    np.testing.assert_array_equal(norm.running_var, np.zeros(4))
    monkeypatch.setattr(containers, "FUSIONS", [])
    plain, _ = run()
    np.testing.assert_allclose(fused, plain, rtol=1e-10, atol=1e-10 * np.abs(plain).max())


def test_inference_keeps_no_tensor_and_never_writes_the_input():
    net = resnet20(seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    x_copy = x.copy()
    net.predict(x)
    kept = []
    for slot_name, layer in _all_layers(net._root()):
        for attribute in ("x", "_x", "out", "input_shape_x"):
            if isinstance(getattr(layer, attribute, None), np.ndarray):
                kept.append(f"{slot_name}.{attribute}")
    assert kept == []
    np.testing.assert_array_equal(x, x_copy)
    net.gradient(x, np.array([1, 2, 3]))
    np.testing.assert_array_equal(x, x_copy)


def _all_layers(layer, prefix="root"):
    yield prefix, layer
    if isinstance(layer, Residual):
        yield from _all_layers(layer.body, prefix + ".body")
        if layer.shortcut is not None:
            yield from _all_layers(layer.shortcut, prefix + ".shortcut")
        if layer.relu is not None:
            yield prefix + ".relu", layer.relu
    elif isinstance(layer, Sequential):
        for name, child in layer.named_children():
            yield from _all_layers(child, f"{prefix}.{name}")


def test_gradient_skips_everything_before_the_first_trainable_layer():
    rng = np.random.default_rng(6)
    net = resnet20(seed=1)
    x, t = rng.standard_normal((4, 1, 10, 10)).astype(np.float32), rng.integers(0, 10, 4)
    frozen = net.freeze("conv1", "bn1", "layer1", "layer2")
    assert frozen[0] == "conv1.weight"
    assert all(k.startswith(("conv1", "bn1", "layer1", "layer2")) for k in frozen)
    assert net.frozen_keys == frozen
    grads = net.gradient(x, t)
    assert list(grads) == [k for k in net.params if k.startswith(("layer3", "fc"))]
    layers = net.layers
    assert layers["conv1"].dW is None
    assert layers["layer1"]["0"].body["conv1"].dW is None
    assert layers["layer3"]["0"].body["conv1"].dW is not None
    assert net.unfreeze() == list(net.params)
    assert list(net.gradient(x, t)) == list(net.params)
    assert layers["conv1"].dW is not None
    with pytest.raises(ValueError, match="layer9"):
        net.freeze("layer9")
    with pytest.raises(ValueError, match="layer1"):
        net.freeze("layer1.0.conv")  # a prefix covers whole name components only
    with pytest.raises(TypeError):
        net.freeze(3)


def test_replace_head_keeps_the_backbone_and_what_is_frozen():
    net = resnet20(num_classes=5, seed=2)
    backbone = {k: v.copy() for k, v in net.params.items() if not k.startswith("fc.")}
    net.freeze("layer1")
    net.replace_head(3, seed=0)
    assert net.params["fc.weight"].shape == (3, 64)
    assert net.params["fc.bias"].shape == (3,)
    assert not net.params["fc.bias"].any()
    assert 0.1 < float(np.std(net.params["fc.weight"])) / np.sqrt(2 / 64) < 1.9
    assert list(net.params)[-2:] == ["fc.weight", "fc.bias"]
    for key, value in backbone.items():
        np.testing.assert_array_equal(net.params[key], value)
    assert net.frozen_keys == [k for k in net.params if k.startswith("layer1.")]
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert net.predict(x).shape == (2, 3)
    assert net.gradient(x, np.array([0, 2]))["fc.weight"].shape == (3, 64)
    with pytest.raises(ValueError, match="num_classes"):
        net.replace_head(0)


def test_batch_norm_follows_pytorch_conventions():
    rng = np.random.default_rng(7)
    norm = BatchNorm2d(3, dtype=np.float64)
    x = rng.standard_normal((4, 3, 5, 2)) * 2 + 1
    norm.forward(x, True)
    norm.forward(x, False)
    assert int(norm.num_batches_tracked) == 1
    assert norm.num_batches_tracked.dtype == np.int64
    m = 4 * 5 * 2
    np.testing.assert_allclose(norm.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(
        norm.running_var, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-12
    )
    y = norm.forward(x, True)
    expected = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        x.var(axis=(0, 2, 3), keepdims=True) + 1e-5
    )
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_and_strict_errors(tmp_path):
    net = resnet20(seed=3)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    net.gradient(x, np.arange(4))  # moves the running statistics and the batch counters
    state = {k: np.array(v) for k, v in net.state_dict().items()}
    assert state["bn1.num_batches_tracked"] == 1
    path = tmp_path / "r20.npz"
    net.save_params(str(path))
    other = resnet20(seed=4)
    other.load_params(str(path))
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
        assert value.dtype == state[key].dtype
    np.testing.assert_array_equal(other.predict(x), net.predict(x))

    before = {k: np.array(v) for k, v in other.state_dict().items()}
    bad = dict(state)
    bad["fc.weight"] = np.zeros((11, 64), np.float32)
    del bad["layer2.0.bn1.running_var"]
    bad["layer9.weight"] = np.zeros(3)
    from tinyconv.serialization import ParamsFileError

    with pytest.raises(ParamsFileError) as info:
        other.load_state_dict(bad)
    message = str(info.value)
    assert "fc.weight" in message
    assert "layer2.0.bn1.running_var" in message
    assert "layer9.weight" in message
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.mark.parametrize(
    ("block", "shortcut", "stem"),
    [
        ("basic", "pad", "cifar"),
        ("basic", "projection", "imagenet"),
        ("bottleneck", "projection", "imagenet"),
    ],
)
def test_small_resnets_gradients_match_central_differences(block, shortcut, stem):
    rng = np.random.default_rng(8)
    net = ResNet(
        block,
        (1, 2),
        (4, 8),
        num_classes=3,
        in_channels=2,
        stem=stem,
        shortcut=shortcut,
        dtype=np.float64,
        seed=1,
    )
    x, t = rng.standard_normal((3, 2, 13, 11)), np.array([0, 2, 1])
    grads = {k: v.copy() for k, v in net.gradient(x, t).items()}
    h = 1e-6
    for key, array in net.params.items():
        scale = np.abs(grads[key]).max() + 1e-12
        for index in list(np.ndindex(array.shape))[:: max(1, array.size // 5)]:
            old = array[index]
            array[index] = old + h
            plus = net.loss(x, t, train_flg=True)
            array[index] = old - h
            minus = net.loss(x, t, train_flg=True)
            array[index] = old
            assert abs((plus - minus) / (2 * h) - grads[key][index]) <= 1e-6 * scale, (key, index)


def test_resnet_constructors_validate_their_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        resnet20(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        resnet20(in_channels=1.5)
    with pytest.raises(ValueError, match="block"):
        ResNet("wide", (1,), (4,))
    with pytest.raises(ValueError, match="stage_blocks"):
        ResNet("basic", (1, 0), (4, 8))
    with pytest.raises(ValueError, match="dtype"):
        resnet20(dtype=np.int32)
