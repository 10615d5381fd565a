"""tinyconv.optimizer against DLfS's update formulas (restated in tests/dlfs_oracle.py)."""
from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

import dlfs_oracle as dlfs
from tinyconv.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, Optimizer, RMSprop, get_optimizer
from tinyconv.serialization import safe_pickle_loads

SHAPES = {"W1": (3, 2, 3, 3), "b1": (3,), "W2": (12, 5), "b2": (5,)}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


def make_grads(step, dtype=np.float64):
    rng = np.random.default_rng(1000 + step)
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


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
    ("SGD", {}), ("SGD", {"lr": 0.1}),
    ("Momentum", {}), ("Momentum", {"lr": 0.05, "momentum": 0.5}),
    ("Nesterov", {}), ("Nesterov", {"lr": 0.02, "momentum": 0.8}),
    ("AdaGrad", {}), ("AdaGrad", {"lr": 0.3}),
    ("RMSprop", {}), ("RMSprop", {"lr": 0.001, "decay_rate": 0.9}),
    ("Adam", {}), ("Adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}),
]


@pytest.mark.parametrize("name, hyper", CASES)
def test_updates_equal_dlfs_formulas_bitwise_in_float64(name, hyper):
    params = make_params()
    originals = {key: value for key, value in params.items()}
    optimizer = get_optimizer(name, **hyper)
    reference = run_reference(name, params, steps=5, **hyper)
    for step in range(5):
        optimizer.update(params, make_grads(step))
        for key in SHAPES:
            # Same operations in the same order as DLfS, hence the same bits.
            np.testing.assert_array_equal(params[key], reference[step][key], err_msg=f"{name} step {step} {key}")
            assert params[key] is originals[key], "update must be in place"


@pytest.mark.parametrize("name, hyper", CASES)
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
        signature = inspect.signature(cls)
        assert {name: p.default for name, p in signature.parameters.items()} == defaults, cls.__name__


def test_state_is_lazy_like_dlfs():
    adam = Adam()
    assert adam.m is None and adam.v is None and adam.iter == 0
    adam.update(make_params(), make_grads(0))
    assert set(adam.m) == set(SHAPES) and adam.iter == 1


@pytest.mark.parametrize("name, hyper", CASES)
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
    assert adam.lr == 0.5 and adam.m is None


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
        lr_t = float(0.01 * np.sqrt(1.0 - 0.999 ** it) / (1.0 - 0.9 ** it))
        m += (1 - 0.9) * (grad - m)
        v += (1 - 0.999) * (grad ** 2 - v)
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
