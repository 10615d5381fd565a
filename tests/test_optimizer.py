"""tinyconv.optimizer against DLfS's update formulas (restated in tests/dlfs_oracle.py)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import dlfs_oracle as dlfs
import numpy as np
import pytest
from mutations import delete_at, set_at

from tinyconv.optimizer import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    ParamGroup,
    RMSprop,
    get_optimizer,
    prefix_matches,
)
from tinyconv.serialization import safe_pickle_loads

SHAPES = {"W1": (3, 2, 3, 3), "b1": (3,), "W2": (12, 5), "b2": (5,)}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


def make_grads(step, dtype=np.float64):
    rng = np.random.default_rng(1000 + step)
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


def subset(mapping, keys):
    return {key: mapping[key] for key in keys}


def zeros_like(params):
    return {key: np.zeros_like(value) for key, value in params.items()}


def run_reference(name, params, steps, **hyper):
    """DLfS's formulas, step by step, on copies."""
    p = {k: v.copy() for k, v in params.items()}
    s1, s2, it = zeros_like(p), zeros_like(p), 0
    history = []
    for step in range(steps):
        g = make_grads(step, p["W1"].dtype)
        if name == "SGD":
            p = dlfs.sgd_step(p, g, **hyper)
        elif name == "Momentum":
            p, s1 = dlfs.momentum_step(p, g, s1, **hyper)
        elif name == "Nesterov":
            p, s1 = dlfs.nesterov_step(p, g, s1, **hyper)
        elif name == "AdaGrad":
            p, s1 = dlfs.adagrad_step(p, g, s1, **hyper)
        elif name == "RMSprop":
            p, s1 = dlfs.rmsprop_step(p, g, s1, **hyper)
        elif name == "Adam":
            p, s1, s2, it = dlfs.adam_step(p, g, s1, s2, it, **hyper)
        history.append({k: v.copy() for k, v in p.items()})
    return history


CASES = [
    ("SGD", {}),
    ("SGD", {"lr": 0.1}),
    ("Momentum", {}),
    ("Momentum", {"lr": 0.05, "momentum": 0.5}),
    ("Nesterov", {}),
    ("Nesterov", {"lr": 0.02, "momentum": 0.8}),
    ("AdaGrad", {}),
    ("AdaGrad", {"lr": 0.3}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.001, "decay_rate": 0.9}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}),
]


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_updates_equal_dlfs_formulas_bitwise_in_float64(name, hyper):
    params = make_params()
    originals = dict(params.items())
    optimizer = get_optimizer(name, **hyper)
    reference = run_reference(name, params, steps=5, **hyper)
    for step in range(5):
        optimizer.update(params, make_grads(step))
        for key in SHAPES:
            # Same operations in the same order as DLfS, hence the same bits.
            np.testing.assert_array_equal(
                params[key], reference[step][key], err_msg=f"{name} step {step} {key}"
            )
            assert params[key] is originals[key], "update must be in place"


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_float32_updates_stay_float32_and_track_float64(name, hyper):
    params = make_params(dtype=np.float32)
    optimizer = get_optimizer(name, **hyper)
    reference = run_reference(name, make_params(dtype=np.float64), steps=5, **hyper)
    for step in range(5):
        optimizer.update(params, make_grads(step, np.float32))
    for key in SHAPES:
        assert params[key].dtype == np.float32
        np.testing.assert_allclose(params[key], reference[-1][key], rtol=1e-4, atol=1e-5)


def test_defaults_are_dlfs_defaults():
    expected = {
        SGD: {"lr": 0.01},
        Momentum: {"lr": 0.01, "momentum": 0.9},
        Nesterov: {"lr": 0.01, "momentum": 0.9},
        AdaGrad: {"lr": 0.01},
        RMSprop: {"lr": 0.01, "decay_rate": 0.99},
        Adam: {"lr": 0.001, "beta1": 0.9, "beta2": 0.999},
    }
    for cls, defaults in expected.items():
        parameters = inspect.signature(cls).parameters.values()
        # DLfS's arguments, then tinyconv's keyword-only extras.
        assert {
            p.name: p.default for p in parameters if p.kind is not p.KEYWORD_ONLY
        } == defaults, cls.__name__
        assert {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY} == {
            "param_groups": None
        }


def test_state_is_lazy_like_dlfs():
    adam = Adam()
    assert adam.m is None
    assert adam.v is None
    assert adam.iter == 0
    adam.update(make_params(), make_grads(0))
    assert set(adam.m) == set(SHAPES)
    assert adam.iter == 1


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_state_dict_round_trip_continues_identically(name, hyper):
    params_a = make_params()
    optimizer_a = get_optimizer(name, **hyper)
    for step in range(3):
        optimizer_a.update(params_a, make_grads(step))

    # The state survives the safe pickle path used by checkpoints.
    state = safe_pickle_loads(pickle.dumps(optimizer_a.state_dict(), protocol=4))
    params_b = {key: value.copy() for key, value in params_a.items()}
    optimizer_b = get_optimizer(name)  # default hyperparameters: restored from the state
    optimizer_b.load_state_dict(state)
    for step in range(3, 6):
        optimizer_a.update(params_a, make_grads(step))
        optimizer_b.update(params_b, make_grads(step))
    for key in SHAPES:
        np.testing.assert_array_equal(params_a[key], params_b[key])


def test_state_dict_is_a_snapshot():
    params = make_params()
    momentum = Momentum()
    momentum.update(params, make_grads(0))
    state = momentum.state_dict()
    before = state["v"]["W1"].copy()
    momentum.update(params, make_grads(1))
    np.testing.assert_array_equal(state["v"]["W1"], before)


def test_load_state_dict_rejects_other_optimizer_and_changes_nothing():
    adam = Adam(lr=0.5)
    with pytest.raises(ValueError, match="SGD"):
        adam.load_state_dict(SGD().state_dict())
    assert adam.lr == 0.5
    assert adam.m is None


def test_get_optimizer_names_are_case_insensitive():
    assert isinstance(get_optimizer("adam"), Adam)
    assert isinstance(get_optimizer("RMSprop", lr=0.1), RMSprop)
    assert get_optimizer("SGD", lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="unknown optimizer"):
        get_optimizer("lbfgs")


def test_all_optimizers_share_the_base_class():
    for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam):
        assert issubclass(cls, Optimizer)
        assert repr(cls()).startswith(cls.__name__ + "(")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_adam_fused_and_numpy_paths_give_dlfs_bits(dtype, layout):
    """Contiguous arrays take the fused C++ update, strided views the NumPy one: both must be
    bitwise DLfS's formula evaluated in the parameter's dtype."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((40, 60)).astype(dtype)
    param = base.copy() if layout == "contiguous" else np.asfortranarray(base)
    expected = base.copy()
    m, v = np.zeros_like(expected), np.zeros_like(expected)
    adam = Adam(lr=0.01)
    for it in range(1, 6):
        grad = rng.standard_normal(base.shape).astype(dtype)
        adam.update({"W": param}, {"W": grad})
        lr_t = float(0.01 * np.sqrt(1.0 - 0.999**it) / (1.0 - 0.9**it))
        m += (1 - 0.9) * (grad - m)
        v += (1 - 0.999) * (grad**2 - v)
        expected -= lr_t * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_array_equal(param, expected)
    assert param.dtype == dtype


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_and_numpy_paths_agree_bitwise(name, dtype):
    """Contiguous arrays take the fused C++ pass, Fortran-ordered ones the NumPy expressions: the
    two must give the same bits, step after step, in float32 as in float64."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((30, 50)).astype(dtype)
    fused, numpy_path = get_optimizer(name, lr=0.05), get_optimizer(name, lr=0.05)
    p_fused, p_numpy = {"W": base.copy()}, {"W": np.asfortranarray(base)}
    for _ in range(4):
        grad = rng.standard_normal(base.shape).astype(dtype)
        fused.update(p_fused, {"W": grad})
        numpy_path.update(p_numpy, {"W": np.asfortranarray(grad)})
        np.testing.assert_array_equal(p_fused["W"], p_numpy["W"])


# ----------------------------------------------------------------------------------------------
# Refusing unusable gradients before an update


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize(("dtype", "bits"), [(np.float32, np.uint32), (np.float64, np.uint64)])
def test_find_nonfinite_matches_its_reference_and_numpy(dtype, bits, squared, threads):
    """The vectorised exponent test against the plain loop (std::isfinite of x or x*x) and NumPy,
    on random bit patterns (every exponent, NaN payloads, signed zeros, subnormals) and on values
    next to the limits, across the chunk boundaries of the parallel pass."""
    import tinyconv
    from tinyconv import _core

    rng = np.random.default_rng(5)
    info = np.finfo(dtype)
    square_limit = dtype(2.0 ** (64 if dtype == np.float32 else 512))
    edges = np.array(
        [
            0.0,
            -0.0,
            info.tiny,
            info.smallest_subnormal,
            info.max,
            -info.max,
            np.nextafter(square_limit, dtype(0)),
            square_limit,
            -square_limit,
            np.inf,
            -np.inf,
            np.nan,
        ],
        dtype=dtype,
    )
    previous = tinyconv.get_num_threads()
    tinyconv.set_num_threads(threads)
    try:
        for trial in range(120):
            size = (
                int(rng.choice([0, 1, 7, 65535, 65536, 65537, 200_003]))
                if trial % 4 == 0
                else int(rng.integers(1, 600))
            )
            if trial % 3 == 0:  # mostly ordinary values, a few edge values at random places
                values = rng.standard_normal(size).astype(dtype)
                for _ in range(int(rng.integers(0, 3))):
                    if size:
                        values[rng.integers(size)] = rng.choice(edges)
            else:
                values = rng.integers(
                    0, np.iinfo(bits).max, size=size, dtype=bits, endpoint=True
                ).view(dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                usable = np.isfinite(values * values if squared else values)
            expected = -1 if usable.all() else int(np.argmin(usable))
            assert _core.reference.find_nonfinite(values, squared) == expected
            assert _core.find_nonfinite(values, squared) == expected, (trial, size)
    finally:
        tinyconv.set_num_threads(previous)


def test_find_nonfinite_checks_its_argument():
    from tinyconv import _core

    with pytest.raises(TypeError, match="values"):
        _core.find_nonfinite(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="C-contiguous"):
        _core.find_nonfinite(np.zeros((4, 4))[:, ::2])


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
def test_find_unusable_gradient_names_key_and_entry(name):
    optimizer = get_optimizer(name)
    grads = make_grads(0, np.float32)
    assert optimizer.find_unusable_gradient(grads) is None
    grads["W2"][3, 4] = np.float32(2.0**70)  # finite, but its square overflows float32
    squares = name in ("AdaGrad", "RMSprop", "Adam")
    assert optimizer.find_unusable_gradient(grads) == (("W2", (3, 4), 2.0**70) if squares else None)
    grads["b1"][1] = np.nan
    key, index, value = optimizer.find_unusable_gradient(grads)
    assert (key, index) == ("b1", (1,))
    assert np.isnan(value)
    # Non-contiguous arrays take the NumPy path, with the same answer.
    strided = {key: np.asfortranarray(value) for key, value in grads.items()}
    found = optimizer.find_unusable_gradient(strided)
    assert found[:2] == ("b1", (1,))


def test_adam_state_from_a_squared_overflow_turns_nan_which_the_check_prevents():
    """Why the adaptive optimizers refuse finite gradients whose square overflows: Adam's second
    moment becomes inf, and the next step computes inf - inf."""
    params = {"W": np.ones(3, dtype=np.float32)}
    adam = Adam()
    grad = {"W": np.full(3, 1e30, dtype=np.float32)}
    assert adam.find_unusable_gradient(grad) == ("W", (0,), float(np.float32(1e30)))
    with np.errstate(over="ignore", invalid="ignore"):
        adam.update(params, grad)
        adam.update(params, grad)
    assert np.isnan(params["W"]).all()


# ----------------------------------------------------------------------------------------------
# load_state_dict checks every field before it changes anything


def trained(name, dtype=np.float64):
    params = make_params(dtype=dtype)
    optimizer = get_optimizer(name, lr=0.05)
    for step in range(2):
        optimizer.update(params, make_grads(step, dtype))
    return optimizer, params


def snapshot(optimizer):
    state = optimizer.state_dict()
    return pickle.dumps(
        state
    )  # bytes: compares hyperparameters, arrays (dtype, shape, bits) and iter


STATE_DEFECTS = [
    # (optimizer, mutation, exception, message)
    ("Adam", set_at(("name",), "SGD"), ValueError, "'SGD'"),
    ("Adam", set_at(("name",), np.array([1, 2])), ValueError, "not 'Adam'"),
    ("Adam", set_at(("extra",), 1), ValueError, "keys"),
    ("Adam", delete_at(("iter",)), ValueError, "keys"),
    ("Adam", set_at(("hyperparameters",), [0.01]), TypeError, "hyperparameters must be a dict"),
    ("Adam", delete_at(("hyperparameters", "beta2")), ValueError, "hyperparameters"),
    ("Adam", set_at(("hyperparameters", "lr"), "0.01"), TypeError, r"hyperparameters\['lr'\]"),
    ("Adam", set_at(("hyperparameters", "lr"), True), TypeError, r"hyperparameters\['lr'\]"),
    (
        "Adam",
        set_at(("hyperparameters", "lr"), float("nan")),
        ValueError,
        r"hyperparameters\['lr'\] must be finite",
    ),
    (
        "Adam",
        set_at(("hyperparameters", "beta1"), 1.0),
        ValueError,
        r"hyperparameters\['beta1'\] must be in \[0, 1\)",
    ),
    ("Adam", set_at(("hyperparameters", "beta2"), -0.5), ValueError, r"hyperparameters\['beta2'\]"),
    ("Adam", set_at(("m",), [1.0]), TypeError, "state m must be None or a dict"),
    (
        "Adam",
        set_at(("m", "W1"), lambda a: a[:1]),
        ValueError,
        r"m\['W1'\] is float64 \(1, 2, 3, 3\)",
    ),
    (
        "Adam",
        set_at(("m", "W1"), lambda a: a.astype(np.float32)),
        ValueError,
        r"m\['W1'\] is float32",
    ),
    (
        "Adam",
        set_at(("m", "W1"), lambda a: a.astype(np.int64)),
        TypeError,
        r"m\['W1'\] must be a float array",
    ),
    (
        "Adam",
        set_at(("m", "W1"), lambda a: a.tolist()),
        TypeError,
        r"m\['W1'\] must be a float array",
    ),
    ("Adam", delete_at(("m", "W1")), ValueError, r"slots \['m', 'v'\] hold different keys"),
    ("Adam", delete_at(("steps", "W1")), ValueError, "state steps has keys"),
    ("Adam", set_at(("m", "W9"), np.zeros(3)), ValueError, "state m has keys"),
    (
        "Adam",
        set_at(("m", "b1"), lambda a: np.where(np.arange(a.size) == 1, np.nan, a)),
        ValueError,
        r"m\['b1'\] contains NaN",
    ),
    ("Adam", set_at(("v", "W2"), lambda a: -a), ValueError, r"v\['W2'\] has negative entries"),
    ("Adam", set_at(("v",), None), ValueError, "all of them or none"),
    ("Adam", set_at(("iter",), -1), ValueError, "iter must be in"),
    ("Adam", set_at(("iter",), "2"), TypeError, "iter must be an int"),
    ("Adam", set_at(("iter",), 2.0), TypeError, "iter must be an int"),
    ("Adam", set_at(("iter",), 0), ValueError, "iter is 0 but its slots are set"),
    ("Momentum", set_at(("v", "b2"), lambda a: a[None]), ValueError, r"v\['b2'\]"),
    ("Momentum", set_at(("hyperparameters", "momentum"), float("inf")), ValueError, "momentum"),
    ("AdaGrad", set_at(("h", "W1"), lambda a: -a), ValueError, r"h\['W1'\] has negative entries"),
    ("RMSprop", set_at(("hyperparameters", "decay_rate"), None), TypeError, "decay_rate"),
    ("SGD", set_at(("hyperparameters",), {}), ValueError, "hyperparameters"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "error", "message"),
    STATE_DEFECTS,
    ids=[f"{case[0]}-{case[3]}" for case in STATE_DEFECTS],
)
def test_load_state_dict_rejects_each_bad_field_and_changes_nothing(name, mutate, error, message):
    source, params = trained(name)
    state = safe_pickle_loads(pickle.dumps(source.state_dict(), protocol=4))
    mutate(state)
    target, _ = trained(name)
    target.update(params, make_grads(7))  # a state of its own, different from the file's
    before = snapshot(target)
    with pytest.raises(error, match=message):
        target.load_state_dict(state, params)
    assert snapshot(target) == before


def test_load_state_dict_checks_slots_against_the_parameters_when_given():
    source, params = trained("Adam")
    state = source.state_dict()
    other_params = make_params(dtype=np.float32)  # same keys and shapes, another dtype
    with pytest.raises(
        ValueError, match=r"m\['W1'\] is float64 \(3, 2, 3, 3\), the parameter is float32"
    ):
        Adam().load_state_dict(state, other_params)
    Adam().load_state_dict(state)  # without params only the state's own consistency is checked
    restored = Adam()
    restored.load_state_dict(state, params)
    assert restored.m["W1"] is not state["m"]["W1"]
    assert restored.m["W1"].flags.writeable


# ----------------------------------------------------------------------------------------------
# Parameter groups: per-prefix learning rates

NAMES = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("layer4", "layer4", True),
        ("layer4", "layer4.0.conv1.weight", True),
        ("layer4", "layer40.weight", False),
        ("layer4", "layer4_extra.weight", False),
        ("layer4", "layer", False),
        ("layer4.", "layer4.0.conv1.weight", True),
        ("layer4.", "layer4.", True),
        ("layer4.", "layer4", False),
        ("layer4.0", "layer4.0.bn1.running_var", True),
        ("layer4.0", "layer4.01.weight", False),
        ("W1", "W1", True),
        ("W1", "W10", False),
        ("fc", "fc.weight", True),
        ("fc", "fc2.weight", False),
        ("fc.weight", "fc.weight", True),
    ],
)
def test_prefix_matching_rule(prefix, key, expected):
    assert prefix_matches(prefix, key) is expected


@pytest.mark.parametrize("layout", ["contiguous", "fortran"])
@pytest.mark.parametrize("name", NAMES)
def test_each_group_steps_exactly_as_an_optimizer_with_its_lr(name, layout):
    """Per-group learning rates cost nothing in precision: every key steps bitwise as an optimizer
    of its own lr would step it alone (fused C++ pass and NumPy path alike)."""
    convert = (lambda a: a) if layout == "contiguous" else np.asfortranarray
    params = {key: convert(value) for key, value in make_params().items()}
    grouped = get_optimizer(
        name,
        lr=0.03,
        param_groups=[{"prefixes": ("W1", "b1"), "lr": 0.2}, {"prefixes": "W2", "lr": 0.0}],
    )
    expected_lr = {"W1": 0.2, "b1": 0.2, "W2": 0.0, "b2": 0.03}
    alone = {
        key: (get_optimizer(name, lr=lr), {key: params[key].copy()})
        for key, lr in expected_lr.items()
    }
    for step in range(4):
        grads = {key: convert(value) for key, value in make_grads(step).items()}
        grouped.update(params, grads)
        for key, (optimizer, own_params) in alone.items():
            optimizer.update(own_params, {key: grads[key]})
    for key, lr in expected_lr.items():
        assert grouped.lr_for(key) == lr
        np.testing.assert_array_equal(params[key], alone[key][1][key], err_msg=f"{name} {key}")
    np.testing.assert_array_equal(params["W2"], make_params()["W2"])  # lr 0: no movement
    assert not np.array_equal(params["W1"], make_params()["W1"])


def test_first_matching_group_wins_and_set_lr_overrides():
    sgd = SGD(
        lr=0.01,
        param_groups=[{"prefixes": ("layer4.1",), "lr": 0.5}, {"prefixes": ("layer4",), "lr": 0.1}],
    )
    assert sgd.lr_for("layer4.1.conv1.weight") == 0.5
    assert sgd.lr_for("layer4.0.conv1.weight") == 0.1
    assert sgd.lr_for("fc.weight") == 0.01
    sgd.set_lr("layer4", 0.2)  # replaces the group with exactly these prefixes, and goes first
    assert [g.prefixes for g in sgd.param_groups] == [("layer4",), ("layer4.1",)]
    assert sgd.lr_for("layer4.1.conv1.weight") == 0.2
    assert sgd.lr_for("layer4.0.bn1.weight") == 0.2
    sgd.set_lr(["fc", "layer4.1"], 0.3)
    assert sgd.lr_for("layer4.1.conv1.weight") == 0.3
    assert sgd.lr_for("fc.bias") == 0.3
    assert sgd.lr_for("layer4.0.conv1.weight") == 0.2
    sgd.lr = 0.05  # the base rate stays a plain attribute
    assert sgd.lr_for("conv1.weight") == 0.05
    sgd.param_groups = []
    assert sgd.lr_for("layer4.1.conv1.weight") == 0.05


def test_groups_are_immutable_and_checked():
    momentum = Momentum(param_groups=[ParamGroup("fc", 0.1)])
    assert momentum.param_groups == (ParamGroup(("fc",), 0.1),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        momentum.param_groups[0].lr = 1.0
    bad = [
        ("fc", TypeError, "list of groups"),
        ({"prefixes": "fc", "lr": 0.1}, TypeError, "list of groups"),
        ([("fc", 0.1)], TypeError, r"param_groups\[0\] must be a dict"),
        ([{"prefixes": "fc"}], ValueError, r"param_groups\[0\] has keys \['prefixes'\]"),
        ([{"prefix": "fc", "lr": 0.1}], ValueError, "expected"),
        ([{"prefixes": (), "lr": 0.1}], ValueError, "is empty"),
        ([{"prefixes": ("fc", ""), "lr": 0.1}], ValueError, "empty prefix"),
        ([{"prefixes": ("fc", 3), "lr": 0.1}], TypeError, "must hold strings"),
        ([{"prefixes": 3, "lr": 0.1}], TypeError, "string or a list/tuple"),
        ([{"prefixes": "fc", "lr": "0.1"}], TypeError, r"\['lr'\] must be a real number"),
        ([{"prefixes": "fc", "lr": True}], TypeError, r"\['lr'\] must be a real number"),
        ([{"prefixes": "fc", "lr": -0.1}], ValueError, r"must be finite and >= 0"),
        ([{"prefixes": "fc", "lr": float("nan")}], ValueError, r"must be finite and >= 0"),
        ([{"prefixes": "fc", "lr": float("inf")}], ValueError, r"must be finite and >= 0"),
    ]
    for groups, error, message in bad:
        with pytest.raises(error, match=message):
            Momentum(param_groups=groups)
        with pytest.raises(error, match=message):
            momentum.param_groups = groups
    assert momentum.param_groups == (
        ParamGroup(("fc",), 0.1),
    )  # refused assignments changed nothing
    with pytest.raises(ValueError, match="finite and >= 0"):
        momentum.set_lr("fc", -1.0)
    with pytest.raises(ValueError, match="is empty"):
        momentum.set_lr([], 0.1)
    assert momentum.param_groups == (ParamGroup(("fc",), 0.1),)


def test_repr_shows_groups_only_when_there_are_some():
    assert repr(SGD()) == "SGD(lr=0.01)"
    adam = Adam(lr=0.001, param_groups=[{"prefixes": ["fc."], "lr": 0.01}])
    assert (
        repr(adam)
        == "Adam(lr=0.001, beta1=0.9, beta2=0.999, param_groups=[{'prefixes': ('fc.',), 'lr': 0.01}])"
    )
    rebuilt = eval(repr(adam), {"Adam": Adam})
    assert rebuilt.param_groups == adam.param_groups


def test_get_optimizer_passes_groups():
    rms = get_optimizer("rmsprop", lr=0.1, param_groups=[{"prefixes": "W1", "lr": 0.0}])
    assert rms.lr_for("W1") == 0.0
    assert rms.lr_for("W2") == 0.1


@pytest.mark.parametrize("name", NAMES)
def test_a_group_prefix_that_matches_no_parameter_is_refused_before_any_change(name):
    params = make_params()
    optimizer = get_optimizer(name, param_groups=[{"prefixes": ("W1", "W3"), "lr": 0.1}])
    before = {key: value.copy() for key, value in params.items()}
    with pytest.raises(ValueError, match="prefix 'W3' matches no parameter"):
        optimizer.update(params, make_grads(0))
    for key in SHAPES:
        np.testing.assert_array_equal(params[key], before[key])
    assert all(getattr(optimizer, slot) is None for slot in optimizer._slots)
    assert getattr(optimizer, "iter", 0) == 0


@pytest.mark.parametrize("name", NAMES)
def test_groups_survive_state_dict_round_trip(name):
    params_a = make_params()
    optimizer_a = get_optimizer(
        name, lr=0.02, param_groups=[{"prefixes": ("W2", "b2"), "lr": 0.002}]
    )
    for step in range(2):
        optimizer_a.update(params_a, make_grads(step))
    state = safe_pickle_loads(pickle.dumps(optimizer_a.state_dict(), protocol=4))
    assert state["param_groups"] == [{"prefixes": ["W2", "b2"], "lr": 0.002}]
    params_b = {key: value.copy() for key, value in params_a.items()}
    optimizer_b = get_optimizer(name)
    optimizer_b.load_state_dict(state, params_b)
    assert optimizer_b.param_groups == optimizer_a.param_groups
    assert repr(optimizer_b) == repr(optimizer_a)
    for step in range(2, 4):
        optimizer_a.update(params_a, make_grads(step))
        optimizer_b.update(params_b, make_grads(step))
    for key in SHAPES:
        np.testing.assert_array_equal(params_a[key], params_b[key])


# ----------------------------------------------------------------------------------------------
# Hyperparameters changed between steps


@pytest.mark.parametrize("name", NAMES)
def test_changing_lr_between_steps_takes_effect_at_the_next_step(name):
    """DLfS users set ``optimizer.lr`` between steps (a schedule); ``set_lr`` does the same for a
    group. Each key ends bitwise where a plain optimizer ends that switches its lr at the same
    steps."""
    params = make_params()
    optimizer = get_optimizer(name, lr=0.05)
    for step in range(5):
        if step == 2:
            optimizer.lr = 0.01
        if step == 3:
            optimizer.set_lr(("W1", "b1"), 0.2)
        optimizer.update(params, make_grads(step))
    schedules = {"W1": (0.05, 0.05, 0.01, 0.2, 0.2), "W2": (0.05, 0.05, 0.01, 0.01, 0.01)}
    for keys, schedule in ((("W1", "b1"), schedules["W1"]), (("W2", "b2"), schedules["W2"])):
        check, mirror = get_optimizer(name), subset(make_params(), keys)
        for step, lr in enumerate(schedule):
            check.lr = lr
            check.update(mirror, subset(make_grads(step), keys))
        for key in keys:
            np.testing.assert_array_equal(params[key], mirror[key], err_msg=key)


def test_adam_betas_may_change_between_steps():
    params, reference = make_params(), make_params()
    adam, check = Adam(lr=0.01), Adam(lr=0.01)
    for step in range(4):
        if step == 2:
            adam.beta1 = check.beta1 = 0.5
        adam.update(params, make_grads(step))
        check.update(reference, make_grads(step))
    np.testing.assert_array_equal(params["W1"], reference["W1"])
    assert adam.beta1 == 0.5


# ----------------------------------------------------------------------------------------------
# Updates of a subset of the parameters (frozen parameters get no gradient)


@pytest.mark.parametrize("name", NAMES)
def test_update_changes_exactly_the_keys_of_grads(name):
    params = make_params()
    frozen = {key: params[key].copy() for key in ("W1", "b1")}
    optimizer = get_optimizer(name, lr=0.05)
    reference_params = subset(make_params(), ("W2", "b2"))
    reference = get_optimizer(name, lr=0.05)
    for step in range(3):
        grads = subset(make_grads(step), ("W2", "b2"))
        optimizer.update(params, grads)
        reference.update(reference_params, grads)
    for key in ("W1", "b1"):
        np.testing.assert_array_equal(params[key], frozen[key])
    for key in ("W2", "b2"):
        np.testing.assert_array_equal(params[key], reference_params[key])
    for slot in optimizer._slots:
        assert set(getattr(optimizer, slot)) == {"W2", "b2"}


@pytest.mark.parametrize("name", NAMES)
def test_a_key_unfrozen_later_steps_as_if_its_optimizer_started_then(name):
    """State is created per key at its first gradient, and Adam bias-corrects each key for its own
    step count: W1 unfrozen at step 3 follows a fresh optimizer started at step 3, bitwise."""
    params = make_params()
    optimizer = get_optimizer(name, lr=0.05)
    late = {"W1": make_params()["W1"].copy()}
    fresh = get_optimizer(name, lr=0.05)
    for step in range(6):
        keys = ("W2", "b2") if step < 3 else ("W1", "W2", "b2")
        optimizer.update(params, subset(make_grads(step), keys))
        if step >= 3:
            fresh.update(late, subset(make_grads(step), ("W1",)))
    np.testing.assert_array_equal(params["W1"], late["W1"])
    if name == "Adam":
        assert optimizer.iter == 6
        assert optimizer.steps == {"W2": 6, "b2": 6, "W1": 3}


@pytest.mark.parametrize("name", NAMES)
def test_unknown_or_misshapen_gradients_are_refused_before_any_change(name):
    params = make_params()
    optimizer = get_optimizer(name, lr=0.05)
    optimizer.update(params, make_grads(0))
    before_params = {key: value.copy() for key, value in params.items()}
    before_state = snapshot(optimizer)
    grads = make_grads(1)
    grads["fc.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match=r"gradients \['fc.weight'\] have no parameter"):
        optimizer.update(params, grads)
    grads = make_grads(1)
    grads["b2"] = grads["b2"][:-1]
    with pytest.raises(
        ValueError, match=r"gradient 'b2' has shape \(4,\), the parameter has shape \(5,\)"
    ):
        optimizer.update(params, grads)
    for key in SHAPES:
        np.testing.assert_array_equal(params[key], before_params[key])
    assert snapshot(optimizer) == before_state


@pytest.mark.parametrize("name", ["Momentum", "AdaGrad", "Adam"])
def test_a_replaced_parameter_needs_reset_state(name):
    """A new classifier head of another shape: its old state cannot apply; update says so, changes
    nothing, and reset_state(prefix) starts that key afresh while keeping the others' state."""
    params = make_params()
    optimizer = get_optimizer(name, lr=0.05)
    optimizer.update(params, make_grads(0))
    params["W2"] = np.zeros((12, 3))
    params["b2"] = np.zeros(3)
    grads = make_grads(1)
    grads["W2"], grads["b2"] = np.ones((12, 3)), np.ones(3)
    before = snapshot(optimizer)
    with pytest.raises(
        ValueError,
        match=r"state \w+\['W2'\] is float64 \(12, 5\), the parameter is float64 "
        r"\(12, 3\): .*reset_state\('W2'\)",
    ):
        optimizer.update(params, grads)
    assert snapshot(optimizer) == before
    kept = {slot: getattr(optimizer, slot)["W1"].copy() for slot in optimizer._slots}
    optimizer.reset_state(["W2", "b2"])
    for slot in optimizer._slots:
        assert set(getattr(optimizer, slot)) == {"W1", "b1"}
        np.testing.assert_array_equal(getattr(optimizer, slot)["W1"], kept[slot])
    optimizer.update(params, grads)
    assert getattr(optimizer, optimizer._slots[0])["W2"].shape == (12, 3)
    if name == "Adam":
        assert optimizer.steps == {"W1": 2, "b1": 2, "W2": 1, "b2": 1}
    optimizer.reset_state()
    assert all(getattr(optimizer, slot) is None for slot in optimizer._slots)
    if name == "Adam":
        assert optimizer.iter == 0
        assert optimizer.steps is None


@pytest.mark.parametrize("name", NAMES)
def test_state_of_a_subset_loads_against_all_parameters_and_continues(name):
    params_a = make_params()
    optimizer_a = get_optimizer(name, lr=0.05)
    for step in range(2):
        optimizer_a.update(params_a, subset(make_grads(step), ("W1", "b2")))
    state = safe_pickle_loads(pickle.dumps(optimizer_a.state_dict(), protocol=4))
    params_b = {key: value.copy() for key, value in params_a.items()}
    optimizer_b = get_optimizer(name)
    optimizer_b.load_state_dict(state, params_b)
    for step in range(2, 4):
        optimizer_a.update(params_a, make_grads(step))
        optimizer_b.update(params_b, make_grads(step))
    for key in SHAPES:
        np.testing.assert_array_equal(params_a[key], params_b[key])


def test_adam_state_of_earlier_versions_loads():
    """States written before groups and per-key step counts existed: no groups, and every key has
    taken ``iter`` steps -- the run continues exactly as it would have."""
    params_a = make_params()
    adam_a = Adam(lr=0.01)
    for step in range(3):
        adam_a.update(params_a, make_grads(step))
    state = adam_a.state_dict()
    del state["param_groups"], state["steps"]
    params_b = {key: value.copy() for key, value in params_a.items()}
    adam_b = Adam()
    adam_b.load_state_dict(state, params_b)
    assert adam_b.steps == dict.fromkeys(SHAPES, 3)
    assert adam_b.param_groups == ()
    adam_a.update(params_a, make_grads(3))
    adam_b.update(params_b, make_grads(3))
    np.testing.assert_array_equal(params_a["W1"], params_b["W1"])
