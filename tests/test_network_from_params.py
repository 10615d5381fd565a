"""tinyconv.nets: networks by name (build_network, training_defaults, head_prefixes) and rebuilt
from parameter files (identify_network, network_from_params, replace_head).

Every name round-trips through a file and network_from_params with bitwise equal predictions;
the large ImageNet ResNets are recognised from their state_dict keys only (ResNet-152 takes
about a second to build, loading it too would add little). Hostile and mismatched inputs raise
with messages naming the key, shape or value, and return no network.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv.nets import (
    NETWORK_NAMES,
    RESNETS,
    DeepConvNet,
    ResNet,
    SimpleConvNet,
    build_network,
    head_prefixes,
    identify_network,
    is_resnet,
    network_from_params,
    replace_head,
    resnet20,
    resnet34,
    resnet101,
    resnet152,
    training_defaults,
)
from tinyconv.serialization import ParamsFileError

LOADED = ("simple", "deep", "resnet20", "resnet32", "resnet56", "resnet18", "resnet50")


def images(n=2, channels=1, size=28, seed=0):
    return np.random.default_rng(seed).random((n, channels, size, size)).astype(np.float32)


def state_of(network):
    return {key: np.array(value) for key, value in network.state_dict().items()}


def trained_statistics(network):
    """Running statistics that are not the initial ones, so that losing them would show."""
    network.predict(images(4), train_flg=True)
    return network


@pytest.fixture(scope="module")
def resnet20_state():
    return state_of(trained_statistics(resnet20(num_classes=4, seed=0)))


def test_names_cover_every_network():
    assert NETWORK_NAMES[:2] == ("simple", "deep")
    assert set(NETWORK_NAMES[2:]) == set(RESNETS)
    assert [is_resnet(name) for name in NETWORK_NAMES] == [False, False] + [True] * len(RESNETS)


@pytest.mark.parametrize("name", LOADED)
@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
def test_every_network_round_trips_through_a_file(name, suffix, tmp_path):
    network = build_network(name, num_classes=3, seed=1)
    if is_resnet(name):
        trained_statistics(network)
    path = tmp_path / f"params{suffix}"
    network.save_params(str(path))
    assert identify_network(state_of(network)) == name
    loaded = network_from_params(str(path))
    assert type(loaded) is type(network)
    x = images(3)
    np.testing.assert_array_equal(loaded.predict(x), network.predict(x))
    assert list(loaded.state_dict()) == list(network.state_dict())


@pytest.mark.parametrize("factory", [resnet34, resnet101, resnet152])
def test_the_large_resnets_are_recognised_from_their_keys(factory):
    state = {
        key: np.empty(value.shape, np.float32)
        for key, value in factory(num_classes=2, in_channels=3, seed=0).state_dict().items()
    }
    assert identify_network(state) == factory.__name__


def test_sizes_come_from_the_arrays():
    network = network_from_params(
        state_of(build_network("resnet18", num_classes=7, in_channels=2, seed=0))
    )
    assert (network.num_classes, network.in_channels, network.stem) == (7, 2, "imagenet")
    simple = SimpleConvNet(
        input_dim=(1, 28, 28),
        conv_param={"filter_num": 4, "filter_size": 3},
        hidden_size=9,
        output_size=6,
        seed=0,
    )
    loaded = network_from_params(state_of(simple), dtype=np.float64)
    assert loaded.params["W1"].shape == (4, 1, 3, 3)
    assert loaded.params["W3"].shape == (9, 6)
    assert loaded.dtype == np.float64
    small = DeepConvNet(input_dim=(1, 16, 16), output_size=3, seed=0)
    loaded = network_from_params(state_of(small), input_shape=(1, 16, 16))
    np.testing.assert_array_equal(
        loaded.predict(images(2, size=16)), small.predict(images(2, size=16))
    )


def test_a_safetensors_file_loads(tmp_path):
    pytest.importorskip("safetensors")
    network = trained_statistics(resnet20(num_classes=3, seed=2))
    network.save_params(str(tmp_path / "r.safetensors"))
    loaded = network_from_params(tmp_path / "r.safetensors")
    np.testing.assert_array_equal(loaded.predict(images()), network.predict(images()))


def test_a_resnet_without_running_statistics_is_refused(resnet20_state):
    params_only = {
        key: value
        for key, value in resnet20_state.items()
        if "running" not in key and "num_batches" not in key
    }
    with pytest.raises(
        ParamsFileError, match="resnet20's parameters but not its batch-norm running statistics"
    ):
        network_from_params(params_only)


def test_a_resnet_without_batch_counters_loads(resnet20_state):
    old_pytorch = {
        key: value
        for key, value in resnet20_state.items()
        if not key.endswith("num_batches_tracked")
    }
    loaded = network_from_params(old_pytorch)
    reference = network_from_params(resnet20_state)
    np.testing.assert_array_equal(loaded.predict(images()), reference.predict(images()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("layer2.1.bn1.running_var"), "'layer2.1.bn1.running_var' missing"),
        (lambda s: s.update({"extra": np.zeros(1)}), "unknown keys 'extra'"),
        (
            lambda s: s.update({"layer1.0.conv1.weight": np.zeros((16, 16, 5, 5))}),
            "'layer1.0.conv1.weight' has shape (16, 16, 5, 5), expected (16, 16, 3, 3)",
        ),
        (lambda s: s.update({"fc.weight": np.zeros((4, 64, 1))}), "needs a 2-D 'fc.weight'"),
        (lambda s: s.pop("fc.weight"), "needs a 2-D 'fc.weight' (classes, features), got none"),
        (
            lambda s: s.update({"conv1.weight": np.zeros((16, 1, 5, 5))}),
            "a ResNet's stem has 7x7 (ImageNet) or 3x3",
        ),
        (lambda s: s.update({"conv1.weight": np.zeros((16, 0, 3, 3))}), "no input channels"),
        (
            lambda s: s.update({"layer3.3.conv1.weight": np.zeros((64, 64, 3, 3))}),
            "cifar stem and basic blocks [3, 3, 4] per stage is none of tinyconv's",
        ),
        (lambda s: s.update({"layer5.0.conv1.weight": np.zeros(1)}), "layer4 has blocks []"),
        (lambda s: s.update({"layer1.0.conv3.weight": np.zeros(1)}), "bottleneck blocks"),
        (
            lambda s: s.update({"bn1.weight": "zeros"}),
            "not a str name with an array of real numbers: 'bn1.weight'",
        ),
        (
            lambda s: s.update({"bn1.weight": np.array(["a"])}),
            "not a str name with an array of real numbers: 'bn1.weight'",
        ),
    ],
)
def test_a_resnet_file_that_does_not_fit_names_the_problem(resnet20_state, change, message):
    state = dict(resnet20_state)
    change(state)
    with pytest.raises(ValueError, match=r"r20\.npz") as caught:
        network_from_params(state, source="r20.npz")
    assert message in str(caught.value)
    assert "r20.npz" in str(caught.value)


@pytest.mark.parametrize(
    ("params", "kwargs", "error", "message"),
    [
        ({"W1": np.zeros((2, 2))}, {}, ParamsFileError, "cannot tell which network"),
        ({}, {}, ParamsFileError, "cannot tell which network"),
        ("simple", {"net": "deep"}, ParamsFileError, "has no 'W7', which a DeepConvNet needs"),
        (
            "simple",
            {"net": "resnet20"},
            ParamsFileError,
            "holds the parameters of a SimpleConvNet, not of a resnet20",
        ),
        (
            "simple",
            {"input_shape": (3, 28, 28)},
            ParamsFileError,
            "filters over 1 input channels, but the input (3, 28, 28) has 3",
        ),
        (
            "simple",
            {"input_shape": (1, 4, 4)},
            ParamsFileError,
            "input (1, 4, 4) is too small for 5x5 filters",
        ),
        (
            "simple",
            {"input_shape": (1, 30, 30)},
            ParamsFileError,
            "W2 has shape (4320, 100), expected (5070, 100)",
        ),
        (
            "resnet20",
            {"net": "resnet32"},
            ParamsFileError,
            "holds the parameters of a resnet20, not of a resnet32",
        ),
        (
            "resnet20",
            {"net": "simple"},
            ParamsFileError,
            "has no 'W1', which a SimpleConvNet needs",
        ),
        (
            "resnet20",
            {"input_shape": (3, 32, 32)},
            ParamsFileError,
            "conv1.weight has shape (16, 1, 3, 3), filters over 1 input channels, but the input (3, 32, 32) has 3",
        ),
        (
            "simple",
            {"net": "lenet"},
            ValueError,
            "unknown network 'lenet'; choose one of auto, simple, deep, resnet18",
        ),
        ("simple", {"net": None}, TypeError, "net must be a str"),
        ("simple", {"dtype": np.int32}, ValueError, "dtype must be float32 or float64, got int32"),
        (
            "simple",
            {"input_shape": (28, 28)},
            ValueError,
            "input_shape must be (channels, height, width), got (28, 28)",
        ),
        (
            "simple",
            {"input_shape": (1, 0, 28)},
            ValueError,
            "input_shape entries must be at least 1, got 0",
        ),
        (
            [("W1", np.zeros(1))],
            {},
            TypeError,
            "params must be a mapping of names to arrays or a file name, got list",
        ),
        ({1: np.zeros(1)}, {}, ParamsFileError, "not a str name with an array of real numbers: 1"),
    ],
)
def test_hostile_inputs_raise_with_a_clear_message(params, kwargs, error, message, resnet20_state):
    if params == "simple":
        params = state_of(SimpleConvNet(seed=0))
    elif params == "resnet20":
        params = resnet20_state
    with pytest.raises(error) as caught:
        network_from_params(params, **kwargs)
    assert message in str(caught.value)


def test_a_missing_or_corrupt_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        network_from_params(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ParamsFileError, match=r"bad.npz"):
        network_from_params(tmp_path / "bad.npz")


def test_a_failed_load_leaves_the_callers_arrays_alone(resnet20_state):
    state = dict(resnet20_state)
    state["fc.bias"] = np.zeros(5, np.float32)  # four classes in fc.weight
    before = {key: value.copy() for key, value in state.items()}
    with pytest.raises(ParamsFileError, match=r"'fc.bias' has shape"):
        network_from_params(state)
    assert all(np.array_equal(before[key], state[key]) for key in state)


def test_build_network():
    simple = build_network("simple", num_classes=5, seed=0)
    assert simple.params["W1"].shape == (30, 1, 5, 5)
    assert simple.params["W3"].shape == (100, 5)
    assert build_network("deep", input_shape=(3, 32, 32), seed=0).params["W1"].shape == (
        16,
        3,
        3,
        3,
    )
    resnet = build_network(
        "resnet20", num_classes=5, input_shape=(2, 28, 28), dtype=np.float64, seed=0
    )
    assert (resnet.num_classes, resnet.in_channels, resnet.dtype) == (5, 2, np.float64)
    a, b = build_network("resnet20", seed=3), build_network("resnet20", seed=3)
    assert all(np.array_equal(a.params[key], b.params[key]) for key in a.params)
    for kwargs, error, message in [
        ({"num_classes": 0}, ValueError, "num_classes must be at least 1, got 0"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be an int, got float"),
        ({"num_classes": True}, TypeError, "num_classes must be an int, got bool"),
        (
            {"in_channels": 3, "input_shape": (1, 28, 28)},
            ValueError,
            "in_channels 3 disagrees with input_shape (1, 28, 28)",
        ),
        ({"in_channels": -1}, ValueError, "in_channels must be at least 1, got -1"),
        ({"input_shape": "1x28x28"}, ValueError, "input_shape must be (channels, height, width)"),
    ]:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            build_network("simple", **kwargs)
    with pytest.raises(ValueError, match="unknown network 'resnet"):
        build_network("resnet")


def test_training_defaults_and_heads():
    assert training_defaults("simple") == {
        "optimizer": "Adam",
        "lr": 0.001,
        "batch_size": 100,
        "lr_schedule": "constant",
        "sampling": "replacement",
    }
    assert training_defaults("resnet50") == {
        "optimizer": "Momentum",
        "lr": 0.1,
        "batch_size": 128,
        "lr_schedule": "cosine",
        "sampling": "permutation",
    }
    assert head_prefixes("simple") == ("W3", "b3")
    assert head_prefixes("deep") == ("W8", "b8")
    assert all(head_prefixes(name) == ("fc",) for name in RESNETS)
    for function in (training_defaults, head_prefixes, is_resnet):
        with pytest.raises(ValueError, match="unknown network 'vgg'"):
            function("vgg")


@pytest.mark.parametrize("name", ["simple", "deep", "resnet20"])
def test_replace_head_keeps_the_rest(name):
    network = build_network(name, num_classes=10, seed=0)
    before = state_of(network)
    new = replace_head(network, 3, seed=1)
    weight_key = head_prefixes(name)[0] if name != "resnet20" else "fc.weight"
    assert 3 in new.params[weight_key].shape
    assert not np.array_equal(new.params[weight_key][:3], before[weight_key][:3])
    kept = [key for key in before if not key.startswith(head_prefixes(name))]
    assert all(np.array_equal(new.state_dict()[key], before[key]) for key in kept)
    assert new.predict(images()).shape == (2, 3)
    assert (new is network) == is_resnet(name)


def test_replace_head_rejects_what_it_cannot_do():
    from tinyconv.nets import MultiLayerNet

    with pytest.raises(TypeError, match="got MultiLayerNet"):
        replace_head(MultiLayerNet(4, [3], 2), 3)
    with pytest.raises(ValueError, match="num_classes must be at least 1, got 0"):
        replace_head(build_network("simple", seed=0), 0)


def test_resnet_class_is_exported():
    assert isinstance(network_from_params(state_of(resnet20(seed=0))), ResNet)
