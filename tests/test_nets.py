"""tinyconv.nets: DLfS's architectures and initialisation, backprop against numerical gradients
(float64, relative error < 1e-6), dtype handling, accuracy, randomness."""

from __future__ import annotations

from collections import OrderedDict

import dlfs_oracle as dlfs
import numpy as np
import pytest

from tinyconv.gradient import numerical_gradient
from tinyconv.layers import Dropout, Relu
from tinyconv.nets import DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet

TOLERANCE = 1e-6


@pytest.fixture(autouse=True)
def _keep_global_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def relative_error(analytic, numeric):
    """||a - n|| / max(||a||, ||n||) over one parameter array."""
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    return 0.0 if scale == 0 else float(np.linalg.norm(analytic - numeric) / scale)


def assert_gradients_match(analytic, numeric, zero_keys=()):
    """Relative error below TOLERANCE for every parameter, except ``zero_keys``: parameters whose
    exact gradient is zero (an affine bias right before batch norm, which subtracts it again),
    where both gradients must be ~0 instead."""
    assert list(analytic) == list(numeric)
    errors = {
        key: relative_error(analytic[key], numeric[key]) for key in analytic if key not in zero_keys
    }
    assert max(errors.values()) < TOLERANCE, errors
    for key in analytic:
        if key in zero_keys:
            assert np.max(np.abs(analytic[key])) < 1e-12 and np.max(np.abs(numeric[key])) < 1e-9, (
                key
            )
        else:
            assert np.linalg.norm(analytic[key]) > 0, f"{key}: the check is vacuous"


def hidden_biases_before_batchnorm(net):
    return [f"b{i}" for i in range(1, net.hidden_layer_num + 1)] if net.use_batchnorm else []


def data(shape, n_classes, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *tuple(shape))), rng.integers(0, n_classes, size=n)


def jitter_biases(net, seed=0):
    """Give the zero-initialised biases small random values, as training would. With zero biases a
    window that sees only zeros (ReLU output, padding) has a pre-activation of exactly 0 -- right
    on ReLU's kink, where the one-sided numerical derivative is meaningless."""
    rng = np.random.default_rng(seed)
    for key, value in net.params.items():
        if key.startswith("b"):
            value += 0.1 * rng.standard_normal(value.shape)


def fixed_dropout(net):
    """Make every forward pass draw the same dropout masks: rewind the net's generator."""
    state = net.rng.bit_generator.state

    def rewind():
        net.rng.bit_generator.state = state

    return rewind


# ----------------------------------------------------------------------------------------------
# Gradient checks


def test_simple_convnet_gradient_check():
    arch = {
        "input_dim": (2, 10, 9),
        "conv_param": {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
        "hidden_size": 10,
        "output_size": 4,
        "weight_init_std": 0.3,
    }
    net = SimpleConvNet(**arch, dtype=np.float64, seed=0)
    jitter_biases(net)
    x, t = data((2, 10, 9), 4, 3)
    assert_gradients_match(net.gradient(x, t), net.numerical_gradient(x, t))


def test_simple_convnet_gradient_equals_dlfs_backprop():
    np.random.seed(1)
    oracle = dlfs.SimpleConvNet(
        input_dim=(1, 12, 12),
        conv_param={"filter_num": 4, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size=8,
        output_size=3,
        weight_init_std=0.2,
    )
    net = SimpleConvNet(
        input_dim=(1, 12, 12),
        conv_param={"filter_num": 4, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size=8,
        output_size=3,
        dtype=np.float64,
    )
    for key in net.params:
        net.params[key][...] = oracle.params[key]
    x, t = data((1, 12, 12), 3, 6, seed=2)
    expected, got = oracle.gradient(x, t), net.gradient(x, t)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, atol=1e-13, err_msg=key)
    assert net.last_loss == pytest.approx(oracle.loss(x, t), rel=1e-5)  # DLfS's log(y + 1e-7)


SMALL_DEEP = {
    "input_dim": (1, 8, 8),
    "conv_param_1": {"filter_num": 2},
    "conv_param_2": {"filter_num": 2},
    "conv_param_3": {"filter_num": 3},
    "conv_param_4": {"filter_num": 3},
    "conv_param_5": {"filter_num": 4},
    "conv_param_6": {"filter_num": 4},
    "hidden_size": 5,
    "output_size": 3,
}


def test_deep_convnet_small_gradient_check_with_fixed_dropout_masks():
    net = DeepConvNet(**SMALL_DEEP, dtype=np.float64, seed=3)
    jitter_biases(net)
    x, t = data((1, 8, 8), 3, 4, seed=4)
    rewind = fixed_dropout(net)

    def loss(_):
        rewind()
        return net.loss(x, t)  # training mode, dropout active (DLfS)

    numeric = {key: numerical_gradient(loss, value) for key, value in net.params.items()}
    rewind()
    analytic = net.gradient(x, t)
    assert any(not layer.mask.all() for layer in net.layers if isinstance(layer, Dropout))
    assert_gradients_match(analytic, numeric)


def test_deep_convnet_full_size_gradient_spot_check():
    net = DeepConvNet(dtype=np.float64, seed=5)
    jitter_biases(net)
    x, t = data((1, 28, 28), 10, 2, seed=6)
    rewind = fixed_dropout(net)
    rewind()
    analytic = net.gradient(x, t)
    rng = np.random.default_rng(7)
    # A first-layer weight moves thousands of pre-activations and pooling contests; with DLfS's
    # h = 1e-4 some of them cross a ReLU kink or swap a max-pool winner, so this spot check of
    # the full-size network uses a smaller step (the small network above uses numerical_gradient).
    h = 1e-6
    for key, param in net.params.items():
        flat = param.reshape(-1)
        picks = rng.choice(flat.size, size=min(8, flat.size), replace=False)
        numeric = np.empty(len(picks))
        for j, i in enumerate(picks):
            original = flat[i]
            flat[i] = original + h
            rewind()
            plus = net.loss(x, t)
            flat[i] = original - h
            rewind()
            minus = net.loss(x, t)
            flat[i] = original
            numeric[j] = (plus - minus) / (2 * h)
        chosen = analytic[key].reshape(-1)[picks]
        if np.linalg.norm(chosen) > 0:
            assert relative_error(chosen, numeric) < TOLERANCE, key
        else:
            assert np.linalg.norm(numeric) < 1e-9, key


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("use_batchnorm", [False, True])
def test_multilayer_net_gradient_check(activation, use_batchnorm):
    net = MultiLayerNet(
        6,
        [5, 4],
        3,
        activation=activation,
        weight_decay_lambda=0.1,
        use_batchnorm=use_batchnorm,
        dtype=np.float64,
        seed=8,
    )
    jitter_biases(net)
    x, t = data((6,), 3, 8, seed=9)
    assert_gradients_match(
        net.gradient(x, t), net.numerical_gradient(x, t), hidden_biases_before_batchnorm(net)
    )


def test_multilayer_net_gradient_check_with_dropout_and_batchnorm():
    net = MultiLayerNet(
        6,
        [7, 5],
        3,
        use_batchnorm=True,
        use_dropout=True,
        dropout_ration=0.3,
        dtype=np.float64,
        seed=10,
    )
    jitter_biases(net)
    x, t = data((6,), 3, 8, seed=11)
    rewind = fixed_dropout(net)

    def loss(_):
        rewind()
        return net.loss(x, t, train_flg=True)

    numeric = {key: numerical_gradient(loss, value) for key, value in net.params.items()}
    rewind()
    assert_gradients_match(net.gradient(x, t), numeric, hidden_biases_before_batchnorm(net))


def test_multilayer_net_accepts_image_input():
    net = MultiLayerNet(2 * 3 * 3, [4], 2, dtype=np.float64, seed=0)
    jitter_biases(net)
    x, t = data((2, 3, 3), 2, 5)
    assert_gradients_match(net.gradient(x, t), net.numerical_gradient(x, t))


# ----------------------------------------------------------------------------------------------
# Architecture and initialisation as DLfS


def test_simple_convnet_structure_and_dlfs_initialisation():
    np.random.seed(0)
    oracle = dlfs.SimpleConvNet()
    np.random.seed(0)
    net = SimpleConvNet(dtype=np.float64)
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for key in oracle.params:
        np.testing.assert_array_equal(net.params[key], oracle.params[key], err_msg=key)
    assert net.layers["Conv1"].W is net.params["W1"]
    assert net.layers["Affine2"].b is net.params["b3"]
    assert net.params["W2"].shape == (30 * 12 * 12, 100)


def test_deep_convnet_structure_and_dlfs_initialisation():
    np.random.seed(1)
    oracle = dlfs.DeepConvNet()
    np.random.seed(1)
    net = DeepConvNet(dtype=np.float64)
    assert [f"W{i}" for i in range(1, 9)] == [k for k in net.params if k.startswith("W")]
    for key in oracle.params:
        np.testing.assert_array_equal(net.params[key], oracle.params[key], err_msg=key)
    assert len(net.layers) == 20
    assert isinstance(net.layers, list)
    weighted = [layer for layer in net.layers if hasattr(layer, "W")]
    assert [net.layers.index(layer) for layer in weighted] == [0, 2, 5, 7, 10, 12, 15, 18]
    for i, layer in enumerate(weighted, start=1):
        assert layer.W is net.params[f"W{i}"]
        assert layer.b is net.params[f"b{i}"]
    assert isinstance(net.layers[17], Dropout)
    assert isinstance(net.layers[19], Dropout)
    x = np.random.default_rng(0).random((3, 1, 28, 28))
    np.testing.assert_allclose(net.predict(x), oracle.predict(x), rtol=1e-10, atol=1e-12)


def test_deep_convnet_other_input_sizes():
    net = DeepConvNet(input_dim=(3, 32, 32), seed=0)
    assert net.params["W1"].shape == (16, 3, 3, 3)
    assert net.params["W7"].shape == (
        64 * 4 * 4,
        50,
    )  # 32 -pool-> 16 -pad 2-> 18 -pool-> 9 -pool-> 4
    assert net.predict(np.zeros((2, 3, 32, 32))).shape == (2, 10)
    with pytest.raises(ValueError, match="too small"):
        DeepConvNet(input_dim=(1, 2, 2))


def test_simple_convnet_odd_and_rectangular_inputs():
    net = SimpleConvNet(
        input_dim=(3, 15, 20),
        conv_param={"filter_num": 4, "filter_size": 4, "pad": 0, "stride": 1},
        hidden_size=7,
        output_size=2,
        seed=0,
    )
    assert net.params["W2"].shape == (4 * 6 * 8, 7)
    assert net.predict(np.zeros((1, 3, 15, 20))).shape == (1, 2)


def test_multilayer_net_structure_and_initialisation():
    np.random.seed(2)
    net = MultiLayerNetExtend(10, [8, 6], 4, use_batchnorm=True, use_dropout=True, dtype=np.float64)
    np.random.seed(2)
    sizes = [10, 8, 6, 4]
    for i in range(1, 4):
        expected = np.sqrt(2.0 / sizes[i - 1]) * np.random.randn(sizes[i - 1], sizes[i])
        np.testing.assert_array_equal(net.params[f"W{i}"], expected)
    assert MultiLayerNetExtend is MultiLayerNet
    assert list(net.layers) == [
        "Affine1",
        "BatchNorm1",
        "Activation_function1",
        "Dropout1",
        "Affine2",
        "BatchNorm2",
        "Activation_function2",
        "Dropout2",
        "Affine3",
    ]
    assert list(net.params) == [
        "W1",
        "b1",
        "W2",
        "b2",
        "W3",
        "b3",
        "gamma1",
        "beta1",
        "gamma2",
        "beta2",
    ]
    xavier = MultiLayerNet(10, [8], 4, weight_init_std="xavier", seed=0, dtype=np.float64)
    fixed = MultiLayerNet(10, [8], 4, weight_init_std=0.01, seed=0, dtype=np.float64)
    np.testing.assert_allclose(
        xavier.params["W1"] * 0.01 / np.sqrt(1 / 10), fixed.params["W1"], rtol=1e-12
    )
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(10, [8], 4, activation="tanh")


def test_weight_decay_adds_to_loss_and_gradient():
    plain = MultiLayerNet(5, [4], 3, seed=0, dtype=np.float64)
    decayed = MultiLayerNet(5, [4], 3, seed=0, dtype=np.float64, weight_decay_lambda=0.5)
    x, t = data((5,), 3, 6)
    penalty = sum(0.25 * np.sum(plain.params[k] ** 2) for k in ("W1", "W2"))
    assert decayed.loss(x, t) == pytest.approx(plain.loss(x, t) + penalty, rel=1e-12)
    np.testing.assert_allclose(
        decayed.gradient(x, t)["W1"], plain.gradient(x, t)["W1"] + 0.5 * plain.params["W1"]
    )


# ----------------------------------------------------------------------------------------------
# dtype


def test_float32_is_the_default_and_inputs_are_converted():
    net = SimpleConvNet(
        input_dim=(1, 10, 10),
        conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=5,
        output_size=3,
        seed=0,
    )
    assert net.dtype == np.float32
    assert all(v.dtype == np.float32 for v in net.params.values())
    x64 = np.random.default_rng(0).random((4, 1, 10, 10))
    out = net.predict(x64)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, net.predict(x64.astype(np.float32)))
    x8 = (x64 * 255).astype(np.uint8)
    assert net.predict(x8).dtype == np.float32
    grads = net.gradient(x64, np.array([0, 1, 2, 0]))
    assert all(g.dtype == np.float32 for g in grads.values())


def test_float32_gradients_track_float64():
    kwargs = {
        "input_dim": (1, 10, 10),
        "conv_param": {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
        "hidden_size": 6,
        "output_size": 3,
        "weight_init_std": 0.3,
    }
    net64 = SimpleConvNet(**kwargs, dtype=np.float64, seed=0)
    net32 = SimpleConvNet(**kwargs, dtype=np.float32, seed=0)
    x, t = data((1, 10, 10), 3, 5)
    g64, g32 = net64.gradient(x, t), net32.gradient(x, t)
    for key in g64:
        assert relative_error(g32[key].astype(np.float64), g64[key]) < 1e-4, key


@pytest.mark.parametrize(
    "factory",
    [
        lambda dt: SimpleConvNet(
            input_dim=(1, 8, 8),
            conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
            hidden_size=3,
            output_size=2,
            dtype=dt,
        ),
        lambda dt: DeepConvNet(**SMALL_DEEP, dtype=dt),
        lambda dt: MultiLayerNet(4, [3], 2, use_batchnorm=True, dtype=dt),
    ],
)
def test_every_network_honours_dtype(factory):
    for dt in (np.float32, np.float64):
        net = factory(dt)
        assert all(v.dtype == dt for v in net.state_dict().values())
    with pytest.raises(ValueError, match="float32 or float64"):
        factory(np.int32)


# ----------------------------------------------------------------------------------------------
# accuracy


def test_accuracy_counts_every_sample():
    net = MultiLayerNet(4, [6], 3, seed=0)
    x, t = data((4,), 3, 150)
    predicted = np.argmax(net.predict(x), axis=1)
    expected = np.mean(predicted == t)
    assert net.accuracy(x, t) == pytest.approx(expected)  # batch_size=100 leaves a remainder of 50
    assert net.accuracy(x, t, batch_size=7) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(3)[t], batch_size=1000) == pytest.approx(
        expected
    )  # one-hot labels
    # DLfS's convnets would have scored only the first 100 samples while dividing by 150.
    dlfs_figure = np.sum(predicted[:100] == t[:100]) / 150
    assert np.any(predicted[100:] == t[100:])
    assert dlfs_figure < expected
    with pytest.raises(ValueError, match="empty set of samples"):
        net.accuracy(x[:0], t[:0])


def test_accuracy_uses_test_mode():
    net = DeepConvNet(**SMALL_DEEP, seed=0)
    x, t = data((1, 8, 8), 3, 30)
    assert net.accuracy(x, t) == net.accuracy(x, t)  # no dropout randomness
    a, b = net.predict(x, train_flg=True), net.predict(x, train_flg=True)
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# randomness


def test_seed_and_rng_control_initialisation():
    def make(**kw):
        return SimpleConvNet(input_dim=(1, 8, 8), hidden_size=4, output_size=2, **kw)

    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    np.testing.assert_array_equal(a.params["W2"], b.params["W2"])
    assert not np.array_equal(a.params["W2"], c.params["W2"])
    d, e = make(rng=np.random.RandomState(4)), make(rng=np.random.RandomState(4))
    np.testing.assert_array_equal(d.params["W1"], e.params["W1"])
    np.random.seed(9)
    f = make()
    np.random.seed(9)
    np.testing.assert_array_equal(f.params["W1"], make().params["W1"])  # DLfS: np.random.seed works
    with pytest.raises(ValueError, match="either"):
        make(seed=1, rng=np.random.default_rng(1))
    with pytest.raises(TypeError):
        make(rng=42)


def test_dropout_masks_follow_the_network_rng():
    x, t = data((1, 8, 8), 3, 4)
    one, two = DeepConvNet(**SMALL_DEEP, seed=5), DeepConvNet(**SMALL_DEEP, seed=5)
    np.testing.assert_array_equal(one.gradient(x, t)["W8"], two.gradient(x, t)["W8"])


def test_gradient_records_the_loss():
    net = SimpleConvNet(input_dim=(1, 8, 8), hidden_size=4, output_size=2, seed=0, dtype=np.float64)
    x, t = data((1, 8, 8), 2, 3)
    assert net.last_loss is None
    net.gradient(x, t)
    assert net.last_loss == pytest.approx(net.loss(x, t), rel=1e-12)
    assert "SimpleConvNet" in repr(net)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SimpleConvNet(
            input_dim=(1, 10, 10),
            conv_param={"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1},
            hidden_size=8,
            output_size=4,
            seed=0,
        ),
        lambda: MultiLayerNet(12, [6, 5], 3, activation="sigmoid", seed=0),
        lambda: MultiLayerNetExtend(12, [6, 5], 3, use_batchnorm=True, use_dropout=True, seed=0),
    ],
)
def test_relu_never_writes_the_callers_input(factory):
    """Networks let ReLU overwrite only the fresh outputs of the layer before it, never the
    caller's array, even when a (user-inserted) ReLU comes first."""
    net = factory()
    net.layers = OrderedDict([("InputRelu", Relu()), *list(net.layers.items())])
    rng = np.random.default_rng(0)
    shape = (5, 1, 10, 10) if isinstance(net, SimpleConvNet) else (5, 12)
    x = rng.standard_normal(shape).astype(np.float32)
    x_copy = x.copy()
    net.gradient(x, rng.integers(0, 3, 5))
    np.testing.assert_array_equal(x, x_copy)
    net.predict(x)
    np.testing.assert_array_equal(x, x_copy)


def test_fused_convolution_relu_equals_the_layers_one_by_one():
    """predict fuses each Convolution -> ReLU pair into the convolution's epilogue: the logits are
    bitwise those of calling every layer's plain forward in turn, and the ReLU layer keeps what
    its backward pass needs."""
    net = DeepConvNet(seed=3)
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    fused = net.predict(x)
    plain = x
    for layer in net._layer_list():
        plain = (
            layer.forward(plain, False) if hasattr(layer, "dropout_ratio") else layer.forward(plain)
        )
    np.testing.assert_array_equal(fused, plain)
    net.predict(x, train_flg=True)  # training mode keeps what the backward pass needs
    first_relu = net._layer_list()[1]
    np.testing.assert_array_equal(first_relu.mask, net._layer_list()[0].forward(x) <= 0)


def test_fused_relu_pool_backward_equals_the_layers_one_by_one():
    """gradient fuses each ReLU -> max pooling pair's backward into the pooling's scatter: the
    gradients are bitwise those of calling every layer's plain backward in turn."""
    net = SimpleConvNet(
        input_dim=(1, 12, 12),
        conv_param={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
        hidden_size=10,
        output_size=3,
        seed=2,
    )
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((6, 1, 12, 12)).astype(np.float32), rng.integers(0, 3, 6)
    fused = {k: v.copy() for k, v in net.gradient(x, t).items()}
    net.loss(x, t, train_flg=True)
    dout = net.last_layer.backward(1)
    for layer in reversed(net._layer_list()):
        dout = layer.backward(dout)
    for key, layer_attr in [
        ("W1", ("Conv1", "dW")),
        ("b1", ("Conv1", "db")),
        ("W2", ("Affine1", "dW")),
    ]:
        np.testing.assert_array_equal(fused[key], getattr(net.layers[layer_attr[0]], layer_attr[1]))
