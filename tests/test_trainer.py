"""tinyconv.trainer.Trainer: DLfS's interface and epochs, sampling, reproducibility, bitwise resume
from checkpoints, NaN and Ctrl-C handling, output; and a real Fashion-MNIST training run."""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
import signal
import sys
import time
import warnings

import dlfs_oracle as dlfs
import numpy as np
import pytest
from mutations import delete_at, set_at

from tinyconv.nets import MultiLayerNet, SimpleConvNet
from tinyconv.optimizer import SGD, Adam
from tinyconv.serialization import ParamsFileError, UnsafePickleError, load_pickle_file, save_pickle
from tinyconv.trainer import (
    CheckpointError,
    NonFiniteGradientError,
    NonFiniteLossError,
    Trainer,
    UnnormalizedInputWarning,
    lr_factor,
)

N_FEATURES, N_CLASSES = 12, 3


@pytest.fixture(autouse=True)
def _keep_global_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def toy_data(n_train=120, n_test=60, seed=0):
    """Linearly separable-ish data; column 0 holds each training sample's index, so the batches a
    trainer draws can be read back from what the network receives."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLASSES, N_FEATURES)) * 3

    def make(n):
        t = rng.integers(0, N_CLASSES, size=n)
        return centres[t] + rng.standard_normal((n, N_FEATURES)), t

    x_train, t_train = make(n_train)
    x_test, t_test = make(n_test)
    x_train[:, 0] = np.arange(n_train) * 0.01  # small, so it barely affects learning
    return x_train, t_train, x_test, t_test


class Recorder(MultiLayerNet):
    """A MultiLayerNet that records its batches and can crash or send SIGINT at a given call."""

    def __init__(self, *args, crash_at=None, sigint_at=None, sigints=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.batches = 0, []
        self.crash_at, self.sigint_at, self.sigints = crash_at, sigint_at, sigints

    def gradient(self, x, t):
        self.calls += 1
        self.batches.append((np.asarray(x, dtype=np.float64)[:, 0] * 100).round().astype(int))
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        if self.calls == self.sigint_at:
            # Never let a missing handler abort the whole test session.
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler, (
                "no SIGINT guard installed"
            )
            for _ in range(self.sigints):
                os.kill(os.getpid(), signal.SIGINT)
        return super().gradient(x, t)


def make_net(seed=0, **kwargs):
    options = {
        "use_batchnorm": True,
        "use_dropout": True,
        "dropout_ration": 0.2,
        "weight_decay_lambda": 0.01,
    }
    options.update(kwargs)
    return Recorder(N_FEATURES, [16, 16], N_CLASSES, seed=seed, **options)


def make_trainer(net, data, **kwargs):
    options = {
        "epochs": 3,
        "mini_batch_size": 32,
        "optimizer": "Adam",
        "optimizer_param": {"lr": 0.01},
        "verbose": False,
    }
    options.update(kwargs)
    return Trainer(net, *data, **options)


def params_of(net):
    return {key: value.copy() for key, value in net.state_dict().items()}


def assert_same_params(a, b):
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------------------------
# Epochs, lists, sampling


def test_lists_and_counters_follow_epochs():
    data = toy_data()
    net = make_net()
    trainer = make_trainer(net, data, seed=0)
    assert trainer.iter_per_epoch == 4
    assert trainer.max_iter == 12
    trainer.train()
    assert len(trainer.train_loss_list) == 12 == trainer.current_iter
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 3 == trainer.current_epoch
    assert all(isinstance(v, float) for v in trainer.train_loss_list + trainer.train_acc_list)
    assert trainer.train_loss_list[-1] < trainer.train_loss_list[0]
    assert trainer.test_acc_list[-1] > 0.6  # chance is 1/3
    assert trainer.final_test_acc == trainer.test_acc_list[-1] == net.accuracy(data[2], data[3])
    assert not trainer.interrupted


def test_replacement_sampling_draws_exactly_like_dlfs():
    data = toy_data()
    net = make_net(use_dropout=False)
    trainer = make_trainer(net, data, epochs=2)  # no seed: np.random, as DLfS
    np.random.seed(11)
    trainer.train()
    np.random.seed(11)
    expected = [np.random.choice(120, 32) for _ in range(8)]
    for got, want in zip(net.batches, expected):
        np.testing.assert_array_equal(got, want)


def test_permutation_sampling_visits_every_sample_once_per_epoch():
    data = toy_data(n_train=50)
    net = make_net()
    trainer = make_trainer(net, data, mini_batch_size=16, sampling="permutation", seed=1)
    trainer.train()
    assert trainer.iter_per_epoch == 4
    for epoch in range(3):
        batches = net.batches[epoch * 4 : (epoch + 1) * 4]
        assert [len(b) for b in batches] == [16, 16, 16, 2]
        assert sorted(np.concatenate(batches)) == list(range(50))
    assert not np.array_equal(np.concatenate(net.batches[:4]), np.concatenate(net.batches[4:8]))


def test_train_step_before_train_draws_a_permutation():
    # DLfS scripts may drive train_step() themselves; the permutation is drawn on first use
    # instead of at the start of an epoch that never began.
    data = toy_data(n_train=50)
    net = make_net()
    trainer = make_trainer(net, data, mini_batch_size=16, sampling="permutation", seed=1)
    loss = trainer.train_step(3)
    assert math.isfinite(loss) and trainer.train_loss_list == [loss]
    assert len(net.batches[-1]) == 2  # the short last batch of the epoch's permutation


def test_seed_makes_runs_reproducible():
    data = toy_data()
    results = []
    for seed in (5, 5, 6):
        net = make_net(seed=0)
        make_trainer(net, data, seed=seed).train()
        results.append(params_of(net))
    assert_same_params(results[0], results[1])
    assert not np.array_equal(results[0]["W1"], results[2]["W1"])


def test_evaluate_sample_num_per_epoch_and_final_accuracy():
    data = toy_data()
    net = make_net()
    trainer = make_trainer(net, data, seed=0, evaluate_sample_num_per_epoch=10)
    trainer.train()
    assert all(
        round(acc * 10) == acc * 10 for acc in trainer.train_acc_list
    )  # measured on 10 samples
    assert trainer.final_test_acc == net.accuracy(data[2], data[3])


def test_arguments_are_checked():
    data = toy_data()
    with pytest.raises(ValueError, match="sampling"):
        make_trainer(make_net(), data, sampling="bootstrap")
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_trainer(make_net(), data, optimizer="newton")
    with pytest.raises(ValueError, match="checkpoint"):
        make_trainer(make_net(), data, resume=True)
    adam = Adam(lr=0.02)
    assert make_trainer(make_net(), data, optimizer=adam).optimizer is adam
    assert (
        type(Trainer(make_net(), *data, verbose=False).optimizer).__name__ == "SGD"
    )  # DLfS default


# ----------------------------------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize("sampling", ["replacement", "permutation"])
@pytest.mark.parametrize("seeded", [True, False])
def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path, sampling, seeded):
    data = toy_data()
    # seeded: private generators in network and trainer; otherwise everything draws from
    # np.random, as in DLfS, and the checkpoint must carry the global state.
    net_seed, trainer_seed = (3, 4) if seeded else (None, None)

    np.random.seed(100)
    reference_net = make_net(seed=net_seed)
    reference = make_trainer(reference_net, data, sampling=sampling, seed=trainer_seed)
    reference.train()

    checkpoint = tmp_path / "run.ckpt"
    np.random.seed(100)
    crashing_net = make_net(seed=net_seed, crash_at=7)  # during epoch 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(
            crashing_net, data, sampling=sampling, seed=trainer_seed, checkpoint=checkpoint
        ).train()
    assert checkpoint.exists()

    np.random.seed(999)  # a different process: fresh weights, different global state
    resumed_net = make_net(seed=None if net_seed is None else 77)
    resumed = make_trainer(
        resumed_net, data, sampling=sampling, seed=trainer_seed, checkpoint=checkpoint, resume=True
    )
    resumed.train()

    assert_same_params(params_of(resumed_net), params_of(reference_net))
    assert resumed.train_loss_list == reference.train_loss_list
    assert resumed.train_acc_list == reference.train_acc_list
    assert resumed.test_acc_list == reference.test_acc_list
    assert resumed.current_iter == reference.current_iter == 12


def test_resume_can_extend_training(tmp_path):
    data = toy_data()
    reference_net = make_net(seed=1)
    make_trainer(reference_net, data, seed=2, epochs=3).train()

    checkpoint = tmp_path / "run.ckpt"
    short_net = make_net(seed=1)
    make_trainer(short_net, data, seed=2, epochs=2, checkpoint=checkpoint).train()
    longer_net = make_net(seed=50)
    trainer = make_trainer(longer_net, data, seed=2, epochs=3, checkpoint=checkpoint, resume=True)
    trainer.train()
    assert_same_params(params_of(longer_net), params_of(reference_net))
    assert len(trainer.train_acc_list) == 3


def test_resume_without_a_checkpoint_file_starts_fresh(tmp_path):
    data = toy_data()
    trainer = make_trainer(
        make_net(), data, seed=0, epochs=1, checkpoint=tmp_path / "new.ckpt", resume=True
    )
    trainer.train()
    assert trainer.current_epoch == 1
    assert (tmp_path / "new.ckpt").exists()


def test_checkpoint_from_another_setup_is_rejected(tmp_path):
    data = toy_data()
    checkpoint = tmp_path / "run.ckpt"
    make_trainer(make_net(), data, seed=0, epochs=1, checkpoint=checkpoint).train()
    net = make_net(seed=9)
    before = params_of(net)
    trainer = make_trainer(
        net, data, seed=0, mini_batch_size=20, checkpoint=checkpoint, resume=True
    )
    with pytest.raises(ParamsFileError, match="batch_size"):
        trainer.train()
    assert_same_params(params_of(net), before)
    other_arch = Recorder(N_FEATURES, [8], N_CLASSES, seed=0, use_batchnorm=True, use_dropout=True)
    with pytest.raises(ParamsFileError, match="W1"):
        make_trainer(other_arch, data, seed=0, checkpoint=checkpoint, resume=True).train()


def test_malicious_checkpoint_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    checkpoint = tmp_path / "evil.ckpt"
    checkpoint.write_bytes(pickle.dumps({"format": Exploit()}))
    with pytest.raises(UnsafePickleError):
        make_trainer(make_net(), toy_data(), checkpoint=checkpoint, resume=True).train()
    assert not (tmp_path / "pwned").exists()


def test_resume_with_a_stateful_callback_equals_an_uninterrupted_run(tmp_path):
    """The checkpoint is written after the callback: whatever the callback changes -- random
    draws from np.random, the trainer's and the network's generators, a learning-rate schedule --
    is in it, so a resumed run still ends bitwise equal to an uninterrupted one."""
    data = toy_data()

    def schedule(trainer, record):
        decay = 0.5 + 0.5 * float(np.random.random())  # global generator
        decay *= 0.9 + 0.1 * float(trainer.rng.random())  # trainer's generator (batch order)
        trainer.network.rng.standard_normal(7)  # network's generator (dropout masks)
        trainer.optimizer.lr *= decay

    def run(net_seed, crash_at=None, checkpoint=None, resume=False):
        net = make_net(seed=net_seed, crash_at=crash_at)
        trainer = make_trainer(
            net, data, seed=4, callback=schedule, checkpoint=checkpoint, resume=resume
        )
        trainer.train()
        return net, trainer

    np.random.seed(100)
    reference_net, reference = run(3)

    checkpoint = tmp_path / "run.ckpt"
    np.random.seed(100)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(3, crash_at=7, checkpoint=checkpoint)  # during epoch 2
    np.random.seed(999)
    resumed_net, resumed = run(77, checkpoint=checkpoint, resume=True)

    assert (
        resumed.optimizer.lr == reference.optimizer.lr != 0.01
    )  # the schedule ran and was restored
    assert_same_params(params_of(resumed_net), params_of(reference_net))
    assert pickle.dumps(resumed.optimizer.state_dict()) == pickle.dumps(
        reference.optimizer.state_dict()
    )
    assert resumed.train_loss_list == reference.train_loss_list
    assert resumed.train_acc_list == reference.train_acc_list
    assert resumed.test_acc_list == reference.test_acc_list
    assert resumed.rng.bit_generator.state == reference.rng.bit_generator.state
    assert resumed_net.rng.bit_generator.state == reference_net.rng.bit_generator.state


# -- every field of a checkpoint is checked before anything changes ---------------------------


def trainer_state(trainer):
    """Everything load_checkpoint may change, as plain data to compare bitwise."""
    return pickle.dumps(
        {
            "network": {
                key: np.array(value) for key, value in trainer.network.state_dict().items()
            },
            "optimizer": trainer.optimizer.state_dict(),
            "numpy_global": np.random.get_state(),
            "trainer_rng": trainer.rng.bit_generator.state,
            "network_rng": trainer.network.rng.bit_generator.state,
            "counters": (trainer.current_epoch, trainer.current_iter),
            "history": (
                trainer.train_loss_list,
                trainer.train_acc_list,
                trainer.test_acc_list,
                trainer.epoch_time_list,
            ),
        }
    )


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """The fields of a real checkpoint after one epoch (Adam, seeded float32 network and trainer)."""
    path = tmp_path_factory.mktemp("checkpoint") / "good.ckpt"
    net = make_net(seed=3)
    assert net.dtype == np.float32  # the messages below name dtypes
    make_trainer(net, toy_data(), seed=4, epochs=1, checkpoint=path).train()
    return load_pickle_file(path)


def trained_target():
    """A trainer of the same setup with a state of its own (one epoch, other seeds)."""
    trainer = make_trainer(make_net(seed=5), toy_data(), seed=6, epochs=1)
    trainer.train()
    return trainer


def _tuple_item(path, position, value):
    def replace(old):
        items = list(old)
        items[position] = value(items[position]) if callable(value) else value
        return tuple(items)

    return set_at(path, replace)


GLOBAL_RNG = ("rng", "numpy_global")
TRAINER_RNG = ("rng", "trainer", "state")

CHECKPOINT_DEFECTS = [
    # (expected field, mutation, a part of the message)
    ("format", set_at(("format",), "tinyconv.params"), "not a tinyconv training checkpoint"),
    ("version", set_at(("version",), 2), "unsupported checkpoint version 2"),
    ("version", set_at(("version",), True), "unsupported checkpoint version True"),
    ("version", set_at(("version",), 1.0), "unsupported checkpoint version 1.0"),
    ("(top level)", set_at(("extra",), 1), "unknown ['extra']"),
    ("(top level)", delete_at(("history",)), "missing ['history']"),
    ("config", set_at(("config",), None), "must be a dict"),
    ("config", delete_at(("config", "sampling")), "missing ['sampling']"),
    ("config", set_at(("config", "batch_size"), 33), "batch_size: checkpoint 33, now 32"),
    ("config", set_at(("config", "batch_size"), 32.0), "batch_size: checkpoint 32.0, now 32"),
    ("config", set_at(("config", "trainer_seeded"), 1), "trainer_seeded: checkpoint 1, now True"),
    ("network", set_at(("network",), []), "must be a dict of arrays"),
    ("network", delete_at(("network", "W1")), "'W1' is missing"),
    ("network", set_at(("network", "W9"), np.zeros(3)), "unknown key 'W9'"),
    (
        "network",
        set_at(("network", "W1"), lambda a: a.astype(np.float64)),
        "'W1' is a float64 array",
    ),
    (
        "network",
        set_at(("network", "W1"), lambda a: a[:-1]),
        "'W1' is a float32 array of shape (11, 16)",
    ),
    (
        "network",
        set_at(("network", "running_mean1"), lambda a: a.tolist()),
        "'running_mean1' is list",
    ),
    ("optimizer", set_at(("optimizer",), "Adam"), "must be a dict"),
    ("optimizer", set_at(("optimizer", "name"), "SGD"), "for 'SGD', not 'Adam'"),
    (
        "optimizer",
        set_at(("optimizer", "hyperparameters", "lr"), "0.01"),
        "hyperparameters['lr'] must be a real number",
    ),
    ("optimizer", set_at(("optimizer", "hyperparameters", "lr"), float("nan")), "must be finite"),
    (
        "optimizer",
        set_at(("optimizer", "hyperparameters", "beta1"), 1.0),
        "hyperparameters['beta1'] must be in [0, 1)",
    ),
    ("optimizer", delete_at(("optimizer", "hyperparameters", "beta2")), "hyperparameters"),
    ("optimizer", set_at(("optimizer", "m"), [1.0]), "m must be None or a dict"),
    ("optimizer", set_at(("optimizer", "m", "W1"), lambda a: a[:1]), "m['W1'] is float32 (1, 16)"),
    (
        "optimizer",
        set_at(("optimizer", "m", "W1"), lambda a: a.astype(np.float64)),
        "m['W1'] is float64",
    ),
    ("optimizer", delete_at(("optimizer", "m", "W1")), "slots ['m', 'v'] hold different keys"),
    (
        "optimizer",
        set_at(("optimizer", "m", "W9"), np.zeros(3)),
        "m has keys ['W9'] that are not parameters",
    ),
    ("optimizer", delete_at(("optimizer", "steps", "W1")), "steps has keys"),
    (
        "optimizer",
        set_at(("optimizer", "steps", "W1"), 5),
        "steps['W1'] must be in [1, iter=4], got 5",
    ),
    ("optimizer", set_at(("optimizer", "steps", "W1"), 2.0), "steps['W1'] must be an int"),
    ("optimizer", set_at(("optimizer", "steps"), None), "steps is None but the slots are set"),
    (
        "optimizer",
        set_at(("optimizer", "param_groups"), [{"prefixes": ["W9"], "lr": 0.1}]),
        "param_groups prefix 'W9' matches no parameter",
    ),
    (
        "optimizer",
        set_at(("optimizer", "param_groups"), [{"prefixes": ["W1"], "lr": -0.1}]),
        "param_groups[0]['lr'] must be finite and >= 0",
    ),
    ("optimizer", set_at(("optimizer", "param_groups"), [{"prefixes": [], "lr": 0.1}]), "is empty"),
    (
        "optimizer",
        set_at(("optimizer", "param_groups"), {"prefixes": ["W1"], "lr": 0.1}),
        "param_groups must be a list",
    ),
    (
        "optimizer",
        set_at(("optimizer", "m", "gamma1"), lambda a: a.tolist()),
        "m['gamma1'] must be a float array",
    ),
    ("optimizer", set_at(("optimizer", "m", "b1"), lambda a: a * np.nan), "m['b1'] contains NaN"),
    (
        "optimizer",
        set_at(("optimizer", "v", "W2"), lambda a: -1 - a),
        "v['W2'] has negative entries",
    ),
    ("optimizer", set_at(("optimizer", "v"), None), "all of them or none"),
    ("optimizer", set_at(("optimizer", "iter"), -1), "iter must be in"),
    ("optimizer", set_at(("optimizer", "iter"), "4"), "iter must be an int"),
    ("optimizer", set_at(("optimizer", "iter"), True), "iter must be an int"),
    ("optimizer", set_at(("optimizer", "iter"), 0), "iter is 0 but its slots are set"),
    ("optimizer", set_at(("optimizer", "extra"), 0), "keys"),
    ("counters", set_at(("counters",), (1, 4)), "must be a dict"),
    ("counters", delete_at(("counters", "current_iter")), "missing ['current_iter']"),
    (
        "counters.current_epoch",
        set_at(("counters", "current_epoch"), "1"),
        "must be an int, got str",
    ),
    (
        "counters.current_epoch",
        set_at(("counters", "current_epoch"), True),
        "must be an int, got bool",
    ),
    ("counters.current_epoch", set_at(("counters", "current_epoch"), -1), "must be in [0, "),
    ("counters.current_iter", set_at(("counters", "current_iter"), 3), "must be in [4, 8), got 3"),
    ("counters.current_iter", set_at(("counters", "current_iter"), 8), "must be in [4, 8), got 8"),
    ("history", delete_at(("history", "epoch_time_list")), "missing ['epoch_time_list']"),
    (
        "history.train_loss_list",
        set_at(("history", "train_loss_list"), lambda a: a.tolist()),
        "must be a float64 array of shape (4,)",
    ),
    (
        "history.train_loss_list",
        set_at(("history", "train_loss_list"), lambda a: a[:-1]),
        "got a float64 array of shape (3,)",
    ),
    (
        "history.train_loss_list",
        set_at(("history", "train_loss_list"), lambda a: a.astype(np.float32)),
        "got a float32 array",
    ),
    (
        "history.train_loss_list",
        set_at(("history", "train_loss_list"), lambda a: a * np.inf),
        "NaN or infinite",
    ),
    (
        "history.train_acc_list",
        set_at(("history", "train_acc_list"), []),
        "must be a list of 1 floats",
    ),
    (
        "history.train_acc_list[0]",
        set_at(("history", "train_acc_list"), [1.5]),
        "must be finite and in [0.0, 1.0]",
    ),
    (
        "history.test_acc_list[0]",
        set_at(("history", "test_acc_list"), ["0.5"]),
        "must be a float, got str",
    ),
    (
        "history.test_acc_list",
        set_at(("history", "test_acc_list"), (0.5,)),
        "must be a list of 1 floats (one per epoch), got tuple",
    ),
    ("history.epoch_time_list[0]", set_at(("history", "epoch_time_list"), [-1.0]), "in [0.0, inf]"),
    ("rng", set_at(("rng",), None), "must be a dict"),
    ("rng", delete_at(("rng", "network")), "missing ['network']"),
    (
        "rng.numpy_global",
        set_at(GLOBAL_RNG, lambda t: t[:3]),
        "must be a tuple ('MT19937', key, pos",
    ),
    ("rng.numpy_global", set_at(GLOBAL_RNG, lambda t: list(t)), "got list"),
    ("rng.numpy_global[0]", _tuple_item(GLOBAL_RNG, 0, "PCG64"), "must be 'MT19937'"),
    (
        "rng.numpy_global[1]",
        _tuple_item(GLOBAL_RNG, 1, lambda k: k.astype(np.int64)),
        "must be a uint32 array",
    ),
    ("rng.numpy_global[1]", _tuple_item(GLOBAL_RNG, 1, lambda k: k[:-1]), "of shape (623,)"),
    # NumPy itself accepts these positions and then reads outside its 624-word key (a crash or
    # a memory disclosure on the next draw).
    ("rng.numpy_global[2]", _tuple_item(GLOBAL_RNG, 2, 625), "must be in [0, 625), got 625"),
    ("rng.numpy_global[2]", _tuple_item(GLOBAL_RNG, 2, 10**8), "got 100000000"),
    ("rng.numpy_global[2]", _tuple_item(GLOBAL_RNG, 2, -1), "got -1"),
    ("rng.numpy_global[3]", _tuple_item(GLOBAL_RNG, 3, 2), "must be in [0, 2), got 2"),
    ("rng.numpy_global[4]", _tuple_item(GLOBAL_RNG, 4, "0"), "must be a float, got str"),
    ("rng.numpy_global[4]", _tuple_item(GLOBAL_RNG, 4, float("nan")), "must be finite"),
    (
        "rng.trainer",
        set_at(("rng", "trainer"), None),
        "does not match this run (saved: none, now: Generator)",
    ),
    ("rng.trainer", delete_at(("rng", "trainer", "kind")), "missing ['kind']"),
    (
        "rng.trainer.kind",
        set_at(("rng", "trainer", "kind"), "RandomState"),
        "this run uses a Generator",
    ),
    (
        "rng.trainer.state.bit_generator",
        set_at((*TRAINER_RNG, "bit_generator"), "MT19937"),
        "must be 'PCG64'",
    ),
    ("rng.trainer.state", delete_at((*TRAINER_RNG, "uinteger")), "missing ['uinteger']"),
    ("rng.trainer.state.state", set_at((*TRAINER_RNG, "state"), 5), "must be a dict"),
    (
        "rng.trainer.state.state.state",
        set_at((*TRAINER_RNG, "state", "state"), 2**128),
        "must be in [0, ",
    ),
    ("rng.trainer.state.state.state", set_at((*TRAINER_RNG, "state", "state"), -1), "got -1"),
    (
        "rng.trainer.state.state.inc",
        set_at((*TRAINER_RNG, "state", "inc"), 1.5),
        "must be an int, got float",
    ),
    (
        "rng.trainer.state.state.inc",
        set_at((*TRAINER_RNG, "state", "inc"), lambda inc: inc - 1),
        "must be odd",
    ),
    ("rng.trainer.state.has_uint32", set_at((*TRAINER_RNG, "has_uint32"), 2), "got 2"),
    ("rng.trainer.state.uinteger", set_at((*TRAINER_RNG, "uinteger"), 2**32), "got 4294967296"),
    ("rng.network", set_at(("rng", "network"), None), "does not match this run"),
    (
        "rng.network.state",
        set_at(("rng", "network", "state"), lambda s: {**s, "extra": 0}),
        "unknown ['extra']",
    ),
]


@pytest.mark.parametrize(
    ("field", "mutate", "message"),
    CHECKPOINT_DEFECTS,
    ids=[f"{case[0]}:{case[2]}" for case in CHECKPOINT_DEFECTS],
)
def test_a_bad_checkpoint_field_is_named_and_changes_nothing(
    tmp_path, good_checkpoint, field, mutate, message
):
    state = copy.deepcopy(good_checkpoint)
    mutate(state)
    path = tmp_path / "crafted.ckpt"
    save_pickle(state, path)
    trainer = trained_target()
    before = trainer_state(trainer)
    with pytest.raises(CheckpointError) as info:
        trainer.load_checkpoint(path)
    assert isinstance(info.value, ParamsFileError)
    assert info.value.field == field
    assert info.value.path == str(path)
    assert f"checkpoint field {field}: " in str(info.value)
    assert message in str(info.value)
    assert (
        trainer_state(trainer) == before
    )  # network, optimizer, every random state, counters, histories


def test_the_unchanged_checkpoint_loads(tmp_path, good_checkpoint):
    """The control for the test above: the same file, unmutated, restores everything."""
    path = tmp_path / "copy.ckpt"
    save_pickle(copy.deepcopy(good_checkpoint), path)
    trainer = trained_target()
    trainer.load_checkpoint(path)
    assert trainer.current_epoch == 1
    assert trainer.current_iter == 4
    assert np.random.get_state()[2] == good_checkpoint["rng"]["numpy_global"][2]
    assert trainer.rng.bit_generator.state == good_checkpoint["rng"]["trainer"]["state"]
    assert trainer.train_loss_list == good_checkpoint["history"]["train_loss_list"].tolist()
    np.testing.assert_array_equal(
        trainer.optimizer.m["W1"], good_checkpoint["optimizer"]["m"]["W1"]
    )


# ----------------------------------------------------------------------------------------------
# Frozen parameters and integer network state


FROZEN = ("W1", "b1", "gamma1", "beta1")


class PartlyFrozen(Recorder):
    """A network whose first layer and batch norm are frozen: ``gradient`` returns the other
    parameters' gradients only, as a network with frozen parameters does."""

    def gradient(self, x, t):
        grads = super().gradient(x, t)
        return {key: value for key, value in grads.items() if key not in FROZEN}


class CountsBatches(Recorder):
    """A network whose state holds an int64 0-d array beside its float arrays, as PyTorch's
    BatchNorm ``num_batches_tracked``: one more per training batch."""

    COUNTER = "BatchNorm1.num_batches_tracked"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_batches_tracked = np.zeros((), dtype=np.int64)

    def gradient(self, x, t):
        self.num_batches_tracked += 1  # in place: the state dict holds this very array
        return super().gradient(x, t)

    def state_dict(self):
        state = super().state_dict()
        state[self.COUNTER] = self.num_batches_tracked
        return state


def make_partly_frozen(seed, **kwargs):
    return PartlyFrozen(N_FEATURES, [16, 16], N_CLASSES, seed=seed, use_batchnorm=True, **kwargs)


@pytest.mark.parametrize("optimizer", ["Momentum", "Adam"])
def test_frozen_parameters_resume_bitwise_with_groups(tmp_path, optimizer):
    """Gradients for a subset of the parameters: the frozen ones never move, the optimizer holds
    state for the trainable ones only, the checkpoint (groups included) round-trips, and a resumed
    run ends bitwise where the uninterrupted one does."""
    data = toy_data()
    options = {
        "optimizer": optimizer,
        "seed": 4,
        "optimizer_param": {"lr": 0.01, "param_groups": [{"prefixes": ("W3", "b3"), "lr": 0.05}]},
    }
    reference_net = make_partly_frozen(3)
    initial = params_of(reference_net)
    reference = make_trainer(reference_net, data, **options)
    reference.train()
    for key in FROZEN:
        np.testing.assert_array_equal(reference_net.params[key], initial[key])
    assert not np.array_equal(reference_net.params["W3"], initial["W3"])
    slot = reference.optimizer._slots[0]
    assert set(getattr(reference.optimizer, slot)) == set(reference_net.params) - set(FROZEN)

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(
            make_partly_frozen(3, crash_at=7), data, checkpoint=checkpoint, **options
        ).train()
    saved = load_pickle_file(checkpoint)["optimizer"]
    assert set(saved[slot]) == set(reference_net.params) - set(FROZEN)
    assert saved["param_groups"] == [{"prefixes": ["W3", "b3"], "lr": 0.05}]

    resumed_net = make_partly_frozen(77)
    # A resumed run takes its groups from the checkpoint, whatever it was built with.
    resumed = make_trainer(
        resumed_net,
        data,
        checkpoint=checkpoint,
        resume=True,
        **{**options, "optimizer_param": {"lr": 0.01}},
    )
    resumed.train()
    assert resumed.optimizer.param_groups == reference.optimizer.param_groups
    assert_same_params(params_of(resumed_net), params_of(reference_net))
    assert resumed.train_loss_list == reference.train_loss_list


def test_integer_network_state_is_checkpointed_and_checked(tmp_path):
    data = toy_data()
    reference_net = CountsBatches(N_FEATURES, [16, 16], N_CLASSES, seed=3, use_batchnorm=True)
    make_trainer(reference_net, data, seed=4).train()
    assert reference_net.num_batches_tracked == 12

    checkpoint = tmp_path / "run.ckpt"
    crashing = CountsBatches(
        N_FEATURES, [16, 16], N_CLASSES, seed=3, use_batchnorm=True, crash_at=7
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(crashing, data, seed=4, checkpoint=checkpoint).train()
    state = load_pickle_file(checkpoint)
    counter = state["network"][CountsBatches.COUNTER]
    assert counter.dtype == np.int64
    assert counter.shape == ()
    assert counter == 4

    resumed_net = CountsBatches(N_FEATURES, [16, 16], N_CLASSES, seed=77, use_batchnorm=True)
    resumed = make_trainer(resumed_net, data, seed=4, checkpoint=checkpoint, resume=True)
    resumed.train()
    assert resumed_net.num_batches_tracked == 12
    assert resumed_net.num_batches_tracked.dtype == np.int64
    assert_same_params(params_of(resumed_net), params_of(reference_net))

    # The integer array is checked like the float ones: same dtype (so the same kind) and shape.
    defects = [
        (counter.astype(np.float64), "is a float64 array of shape ()"),
        (counter.astype(np.int32), "is a int32 array of shape ()"),
        (counter.astype(np.uint64), "is a uint64 array of shape ()"),
        (counter.reshape(1), "is a int64 array of shape (1,)"),
        (4, "is int"),
        (np.array(True), "is a bool array"),
    ]
    for value, message in defects:
        bad = copy.deepcopy(state)
        bad["network"][CountsBatches.COUNTER] = value
        path = tmp_path / "bad.ckpt"
        save_pickle(bad, path)
        target = CountsBatches(N_FEATURES, [16, 16], N_CLASSES, seed=5, use_batchnorm=True)
        trainer = make_trainer(target, data, seed=4)
        before = params_of(target)
        with pytest.raises(CheckpointError, match=re.escape(message)) as info:
            trainer.load_checkpoint(path)
        assert info.value.field == "network"
        assert "the network has a int64 array of shape ()" in str(info.value)
        assert_same_params(params_of(target), before)


BIT_GENERATORS = {
    # bit generator: a field NumPy accepts although it makes the generator read out of bounds,
    # or break an invariant (None: a wrong-dtype array instead)
    "PCG64": (("state", "inc"), lambda inc: inc + 1),
    "PCG64DXSM": (("state", "state"), lambda value: 2**128 + value),
    "MT19937": (("state", "pos"), lambda pos: 625),
    "Philox": (("buffer_pos",), lambda pos: -1),
    "SFC64": (("state", "state"), lambda words: words.astype(np.int64)),
}


@pytest.mark.parametrize("bit_generator", sorted(BIT_GENERATORS))
def test_network_generators_of_every_bit_generator_resume_and_are_checked(tmp_path, bit_generator):
    def make_rng(seed):
        return np.random.Generator(getattr(np.random, bit_generator)(seed))

    data = toy_data()
    reference_net = make_net(seed=None, rng=make_rng(1))
    make_trainer(reference_net, data, seed=2).train()

    checkpoint = tmp_path / "run.ckpt"
    make_trainer(
        make_net(seed=None, rng=make_rng(1)), data, seed=2, epochs=2, checkpoint=checkpoint
    ).train()
    resumed_net = make_net(seed=None, rng=make_rng(9))
    make_trainer(resumed_net, data, seed=2, checkpoint=checkpoint, resume=True).train()
    assert_same_params(params_of(resumed_net), params_of(reference_net))

    path, change = BIT_GENERATORS[bit_generator]
    state = load_pickle_file(checkpoint)
    target = state["rng"]["network"]["state"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = change(target[path[-1]])
    save_pickle(state, checkpoint)
    net = make_net(seed=None, rng=make_rng(5))
    before = pickle.dumps(net.rng.bit_generator.state)
    with pytest.raises(CheckpointError, match="rng.network.state." + ".".join(path)) as info:
        make_trainer(net, data, seed=2, checkpoint=checkpoint, resume=True).train()
    assert info.value.field == "rng.network.state." + ".".join(path)
    assert pickle.dumps(net.rng.bit_generator.state) == before


def test_legacy_random_state_of_a_network_is_checked(tmp_path):
    data = toy_data()
    checkpoint = tmp_path / "run.ckpt"
    make_trainer(
        make_net(seed=None, rng=np.random.RandomState(1)),
        data,
        seed=2,
        epochs=1,
        checkpoint=checkpoint,
    ).train()
    state = load_pickle_file(checkpoint)
    name, key, _pos, has_gauss, gauss = state["rng"]["network"]["state"]
    state["rng"]["network"]["state"] = (name, key, 700, has_gauss, gauss)
    save_pickle(state, checkpoint)
    net = make_net(seed=None, rng=np.random.RandomState(5))
    before = net.rng.get_state()
    with pytest.raises(
        CheckpointError, match=r"rng\.network\.state\[2\]: must be in \[0, 625\), got 700"
    ):
        make_trainer(net, data, seed=2, checkpoint=checkpoint, resume=True).train()
    after = net.rng.get_state()
    assert after[2:] == before[2:]
    assert np.array_equal(after[1], before[1])


# ----------------------------------------------------------------------------------------------
# Non-finite loss and Ctrl-C


def test_nan_loss_stops_training_before_the_update():
    x_train, t_train, x_test, t_test = toy_data()
    x_train[:, 1] = np.nan
    net = make_net()
    before = params_of(net)
    trainer = make_trainer(net, (x_train, t_train, x_test, t_test), seed=0)
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 1, step 1") as info:
        trainer.train()
    assert isinstance(info.value, FloatingPointError)
    assert info.value.step == 1
    for key in net.params:  # the NaN gradient was never applied
        np.testing.assert_array_equal(net.params[key], before[key])
    assert trainer.train_loss_list == []


def test_diverging_training_raises():
    net = make_net(use_batchnorm=False, use_dropout=False)
    trainer = make_trainer(
        net, toy_data(), optimizer="SGD", optimizer_param={"lr": 1e6}, seed=0, epochs=20
    )
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        trainer.train()
    assert len(trainer.train_acc_list) == trainer.current_epoch


def test_gradient_whose_square_overflows_stops_adam_before_the_update():
    """float32 inputs near 1e38 give a finite loss and finite gradients near 1e35, whose squares
    overflow: Adam's second moment would become inf, and NaN one step later (it used to be the
    weights that turned NaN before NonFiniteLossError fired). Training must stop before step 1."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 12, 12), dtype=np.float32) * np.float32(1e38)
    t = rng.integers(0, 10, 64)
    net = SimpleConvNet(
        input_dim=(1, 12, 12),
        conv_param={"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=10,
        output_size=10,
        seed=0,
        dtype=np.float32,
    )
    before = params_of(net)
    trainer = Trainer(
        net, x, t, x, t, epochs=1, mini_batch_size=16, optimizer="Adam", verbose=False, seed=0
    )
    with (
        pytest.warns(UnnormalizedInputWarning, match=r"\|x\| = 1e\+38"),
        pytest.raises(
            NonFiniteGradientError,
            match=r"gradient 'W1' at index \(.*\) is .*e\+3\d \(its square "
            r"overflows float32, and Adam squares gradients\) at epoch 1, step 1",
        ) as info,
    ):
        trainer.train()
    error = info.value
    assert isinstance(error, NonFiniteLossError)
    assert math.isfinite(error.loss)
    assert error.key == "W1"
    assert abs(error.value) >= 2.0**64
    assert (error.epoch, error.step) == (1, 1)
    assert_same_params(params_of(net), before)
    assert trainer.optimizer.m is None
    assert trainer.optimizer.iter == 0
    assert trainer.train_loss_list == []


class NanGradientRecorder(Recorder):
    """Finite loss, but one gradient entry turns NaN at a given call; records what the trainer's
    network and optimizer hold just before that step."""

    def __init__(self, *args, nan_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_at, self.trainer, self.before = nan_at, None, None

    def gradient(self, x, t):
        grads = super().gradient(x, t)
        if self.calls == self.nan_at:
            self.before = (params_of(self), pickle.dumps(self.trainer.optimizer.state_dict()))
            grads["W2"][3, 5] = np.nan
        return grads


@pytest.mark.parametrize("optimizer", ["SGD", "Momentum", "Adam"])
def test_nan_gradient_with_a_finite_loss_changes_nothing(optimizer):
    net = NanGradientRecorder(N_FEATURES, [16, 16], N_CLASSES, seed=0, nan_at=6, use_batchnorm=True)
    trainer = make_trainer(net, toy_data(), seed=0, optimizer=optimizer)
    net.trainer = trainer
    with pytest.raises(
        NonFiniteGradientError,
        match=r"gradient 'W2' at index \(3, 5\) is nan at epoch 2, step 2, "
        r"with a finite loss",
    ) as info:
        trainer.train()
    assert (info.value.key, info.value.index, info.value.step) == ("W2", (3, 5), 2)
    params_before, optimizer_before = net.before
    assert_same_params(params_of(net), params_before)
    assert pickle.dumps(trainer.optimizer.state_dict()) == optimizer_before
    assert trainer.current_iter == len(trainer.train_loss_list) == 5


def test_dlfs_style_network_with_an_infinite_gradient_is_not_updated():
    net = NumpyTwoLayerNet(seed=0)
    gradient = net.gradient

    def poisoned(x, t):
        grads = gradient(x, t)
        grads["b2"] = grads["b2"].copy()
        grads["b2"][1] = -np.inf
        return grads

    net.gradient = poisoned
    before = {key: value.copy() for key, value in net.params.items()}
    trainer = make_trainer(net, toy_data(), seed=1, optimizer="SGD", optimizer_param={"lr": 0.1})
    with pytest.raises(
        NonFiniteGradientError, match=r"gradient 'b2' at index \(1,\) is -inf at epoch 1, step 1;"
    ) as info:
        trainer.train()
    assert info.value.loss is None  # DLfS's way computes the loss only after the update
    for key in before:
        np.testing.assert_array_equal(net.params[key], before[key])


def test_unnormalized_inputs_warn_once_per_trainer():
    x_train, t_train, x_test, t_test = toy_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(make_net(), (x_train * 1e6, t_train, x_test * 1e6, t_test), seed=0)
        trainer.train()  # 3 epochs, 12 steps
        trainer.epochs = 4
        trainer.train()  # continued: still the same trainer
    assert [w.category for w in caught] == [UnnormalizedInputWarning]
    assert re.match(
        r"training inputs look unnormalised: the first batch reaches \|x\| = \d\.\d+e\+0[67] "
        r"\(> 1000\)",
        str(caught[0].message),
    )
    assert issubclass(UnnormalizedInputWarning, UserWarning)


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(1.0, np.float64), (255.0, np.float32), (255.0, np.uint8), (-900.0, np.float64)],
)
def test_inputs_up_to_a_thousand_do_not_warn(scale, dtype):
    """Normalised data, raw 0..255 pixels and anything within |x| <= 1e3 stay quiet (pyproject
    turns any warning into an error)."""
    x_train, t_train, x_test, t_test = toy_data()
    x = (np.abs(x_train) / np.abs(x_train).max() * scale).astype(dtype)
    make_trainer(make_net(), (x, t_train, x_test, t_test), seed=0, epochs=1).train()


def test_ctrl_c_stops_after_the_current_step():
    handler_before = signal.getsignal(signal.SIGINT)
    net = make_net(sigint_at=6)  # step 2 of epoch 2
    trainer = make_trainer(net, toy_data(), seed=0)
    trainer.train()  # returns normally
    assert trainer.interrupted
    assert (
        trainer.current_iter == len(trainer.train_loss_list) == 6
    )  # the step in progress completed
    assert trainer.current_epoch == len(trainer.train_acc_list) == len(trainer.test_acc_list) == 1
    assert trainer.final_test_acc is not None
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_second_ctrl_c_aborts_at_once():
    handler_before = signal.getsignal(signal.SIGINT)
    net = make_net(sigint_at=2, sigints=2)
    trainer = make_trainer(net, toy_data(), seed=0)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert len(trainer.train_loss_list) == 1
    assert signal.getsignal(signal.SIGINT) is handler_before


# ----------------------------------------------------------------------------------------------
# Output and callback


def test_verbose_prints_one_line_per_epoch_and_no_progress_when_not_a_terminal(capsys):
    trainer = make_trainer(make_net(), toy_data(), seed=0, verbose=True, log="epochs")
    trainer.train()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    assert all(
        "loss" in line and "train acc" in line and "test acc" in line and line.endswith(" s")
        for line in epoch_lines
    )
    assert "Final Test Accuracy" in out
    assert "train loss:" not in out
    assert len(lines) == 5  # nothing per step
    assert err == ""


def test_quiet_trainer_prints_nothing(capsys):
    make_trainer(make_net(), toy_data(), seed=0, verbose=False).train()
    assert capsys.readouterr() == ("", "")


def test_plain_progress_display_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "tqdm.auto", None
    )  # import fails: the built-in display is used
    monkeypatch.setattr("tinyconv.trainer._PlainProgress._INTERVAL", 0.0)
    make_trainer(make_net(), toy_data(), seed=0, progress=True).train()
    err = capsys.readouterr().err
    assert "epoch 1/3: 4/4 steps" in err
    assert "samples/s" in err
    assert "loss" in err


def test_tqdm_progress_bar_when_installed(capsys):
    pytest.importorskip("tqdm", reason="tqdm (the 'progress' extra) is not installed")
    make_trainer(make_net(), toy_data(), seed=0, progress=True).train()
    err = capsys.readouterr().err
    assert "epoch 3/3" in err
    assert "step" in err


def test_callback_gets_a_record_per_epoch():
    records = []
    trainer = make_trainer(
        make_net(), toy_data(), seed=0, callback=lambda tr, rec: records.append((tr, rec))
    )
    trainer.train()
    assert [rec["epoch"] for _, rec in records] == [1, 2, 3]
    assert all(tr is trainer for tr, _ in records)
    assert [rec["test_acc"] for _, rec in records] == trainer.test_acc_list
    assert all(rec["seconds"] > 0 and np.isfinite(rec["loss"]) for _, rec in records)


# ----------------------------------------------------------------------------------------------
# Networks written the DLfS way work too


class NumpyTwoLayerNet:
    """DLfS's ch05 TwoLayerNet shape of network, on the NumPy oracle layers (no tinyconv)."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.params = {
            "W1": 0.1 * rng.standard_normal((N_FEATURES, 10)),
            "b1": np.zeros(10),
            "W2": 0.1 * rng.standard_normal((10, N_CLASSES)),
            "b2": np.zeros(N_CLASSES),
        }
        self.layers = [
            dlfs.Affine(self.params["W1"], self.params["b1"]),
            dlfs.Relu(),
            dlfs.Affine(self.params["W2"], self.params["b2"]),
        ]
        self.last_layer = dlfs.SoftmaxWithLoss()
        self.loss_calls = 0

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        self.loss_calls += 1
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        return np.mean(np.argmax(self.predict(x), axis=1) == t)

    def gradient(self, x, t):
        self.last_layer.forward(self.predict(x), t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return {
            "W1": self.layers[0].dW,
            "b1": self.layers[0].db,
            "W2": self.layers[2].dW,
            "b2": self.layers[2].db,
        }


def test_dlfs_style_networks_train_and_resume(tmp_path):
    data = toy_data()
    reference = NumpyTwoLayerNet(seed=0)
    trainer = make_trainer(reference, data, seed=1, optimizer="SGD", optimizer_param={"lr": 0.1})
    trainer.train()
    assert reference.loss_calls == 12  # DLfS's way: the loss is recomputed after each update
    assert trainer.test_acc_list[-1] > 0.8

    checkpoint = tmp_path / "numpy.ckpt"
    first = NumpyTwoLayerNet(seed=0)
    make_trainer(
        first,
        data,
        seed=1,
        optimizer="SGD",
        optimizer_param={"lr": 0.1},
        epochs=1,
        checkpoint=checkpoint,
    ).train()
    resumed = NumpyTwoLayerNet(seed=5)
    make_trainer(
        resumed,
        data,
        seed=1,
        optimizer="SGD",
        optimizer_param={"lr": 0.1},
        checkpoint=checkpoint,
        resume=True,
    ).train()
    for key in reference.params:
        np.testing.assert_array_equal(resumed.params[key], reference.params[key])


# ----------------------------------------------------------------------------------------------
# A real training run


def load_fashion_mnist_or_skip():
    """Fashion-MNIST from Debian's dataset-fashion-mnist package (or any location tinyconv's
    loader searches; never downloaded here). Missing data fails the test in CI, skips elsewhere."""
    from tinyconv.datasets import DatasetNotFoundError, load_fashion_mnist

    try:
        return load_fashion_mnist(normalize=True, flatten=False, download=False)
    except DatasetNotFoundError as exc:
        reason = (
            "Fashion-MNIST not found (apt-get install -y dataset-fashion-mnist puts it in "
            f"/usr/share/datasets/fashion-mnist): {exc}"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_simple_convnet_learns_fashion_mnist():
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist_or_skip()
    x_train, t_train, x_test, t_test = x_train[:2000], t_train[:2000], x_test[:1000], t_test[:1000]
    assert x_train.shape == (2000, 1, 28, 28)
    network = SimpleConvNet(
        input_dim=(1, 28, 28),
        conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
        seed=0,
    )
    trainer = Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=4,
        mini_batch_size=100,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        seed=0,
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    print(
        f"SimpleConvNet, 2,000 Fashion-MNIST images, 4 epochs: test accuracy "
        f"{trainer.test_acc_list[-1]:.3f} in {seconds:.1f} s ({trainer.test_acc_list})"
    )
    assert len(trainer.train_loss_list) == 80
    assert trainer.test_acc_list[-1] >= 0.65


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules


def test_lr_factor_of_each_named_schedule():
    assert [lr_factor("constant", i, 8) for i in range(8)] == [1.0] * 8
    cosine = [lr_factor("cosine", i, 8) for i in range(9)]
    assert cosine[0] == 1.0
    assert cosine[4] == pytest.approx(0.5)
    assert cosine[8] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    # He et al.: /10 at half the run, /100 at three quarters.
    assert [lr_factor("step", i, 8) for i in range(8)] == [1.0] * 4 + [0.1] * 2 + [0.01] * 2
    assert lr_factor(lambda step, total: step / total, 3, 4) == 0.75


@pytest.mark.parametrize(
    ("schedule", "error", "message"),
    [
        ("linear", ValueError, "lr_schedule must be one of"),
        (0.5, ValueError, "lr_schedule must be one of"),
    ],
)
def test_an_unknown_schedule_is_refused_at_construction(schedule, error, message):
    with pytest.raises(error, match=message):
        make_trainer(make_net(), toy_data(), lr_schedule=schedule)


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        (float("nan"), ValueError),
        (-0.1, ValueError),
        (float("inf"), ValueError),
        ("big", TypeError),
    ],
)
def test_a_schedule_returning_an_unusable_factor_stops_before_the_update(returned, error):
    net = make_net(seed=0)
    before = params_of(net)
    trainer = make_trainer(net, toy_data(), seed=0, lr_schedule=lambda step, total: returned)
    with pytest.raises(error, match="lr_schedule returned"):
        trainer.train()
    assert_same_params(params_of(net), before)


class RecordingSGD(SGD):
    """SGD that records, at every update, the rate each parameter gets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def update(self, params, grads):
        self.seen.append({key: self.lr_for(key) for key in grads})
        super().update(params, grads)


def test_the_schedule_scales_every_rate_for_the_update_only():
    optimizer = RecordingSGD(lr=0.1, param_groups=[{"prefixes": "W3", "lr": 0.4}])
    calls = []

    def schedule(step, total):
        calls.append((step, total))
        return 1.0 / (step + 1)

    trainer = make_trainer(
        make_net(seed=0), toy_data(), seed=0, optimizer=optimizer, lr_schedule=schedule
    )
    assert trainer.current_lr == pytest.approx(0.1)
    calls.clear()
    trainer.train()
    assert [step for step, _ in calls] == list(range(12))
    assert {total for _, total in calls} == {12}
    for step, rates in enumerate(optimizer.seen):
        assert rates["W3"] == pytest.approx(0.4 / (step + 1))
        assert rates["b3"] == pytest.approx(0.1 / (step + 1))
    # Between steps the optimizer holds its own rates.
    assert optimizer.lr == 0.1
    assert optimizer.param_groups[0].lr == 0.4


def test_a_zero_factor_leaves_the_parameters_alone():
    net = make_net(seed=0, use_dropout=False, use_batchnorm=False)
    before = params_of(net)
    make_trainer(
        net, toy_data(), seed=0, optimizer="SGD", lr_schedule=lambda step, total: 0.0
    ).train()
    assert_same_params(params_of(net), before)


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_a_scheduled_run_resumes_bitwise(tmp_path, schedule):
    data = toy_data()
    options = {
        "seed": 4,
        "optimizer": "Momentum",
        "lr_schedule": schedule,
        "optimizer_param": {"lr": 0.05, "param_groups": [{"prefixes": "W3", "lr": 0.2}]},
    }
    reference_net = make_net(seed=3)
    reference = make_trainer(reference_net, data, **options)
    reference.train()
    constant_net = make_net(seed=3)
    make_trainer(constant_net, data, **{**options, "lr_schedule": "constant"}).train()
    assert not np.array_equal(constant_net.params["W1"], reference_net.params["W1"])

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(make_net(seed=3, crash_at=7), data, checkpoint=checkpoint, **options).train()
    saved = load_pickle_file(checkpoint)["optimizer"]
    assert saved["hyperparameters"]["lr"] == 0.05
    assert saved["param_groups"] == [{"prefixes": ["W3"], "lr": 0.2}]
    resumed_net = make_net(seed=77)
    make_trainer(resumed_net, data, checkpoint=checkpoint, resume=True, **options).train()
    assert_same_params(params_of(resumed_net), params_of(reference_net))
