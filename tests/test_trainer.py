"""tinyconv.trainer.Trainer: DLfS's interface and epochs, sampling, reproducibility, bitwise resume
from checkpoints, NaN and Ctrl-C handling, output; and a real Fashion-MNIST training run."""
from __future__ import annotations

import os
import pickle
import signal
import sys
import time

import numpy as np
import pytest

import dlfs_oracle as dlfs
from tinyconv.nets import MultiLayerNet, SimpleConvNet
from tinyconv.optimizer import Adam
from tinyconv.serialization import ParamsFileError, UnsafePickleError
from tinyconv.trainer import NonFiniteLossError, Trainer

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
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler, "no SIGINT guard installed"
            for _ in range(self.sigints):
                os.kill(os.getpid(), signal.SIGINT)
        return super().gradient(x, t)


def make_net(seed=0, **kwargs):
    options = dict(use_batchnorm=True, use_dropout=True, dropout_ration=0.2, weight_decay_lambda=0.01)
    options.update(kwargs)
    return Recorder(N_FEATURES, [16, 16], N_CLASSES, seed=seed, **options)


def make_trainer(net, data, **kwargs):
    options = dict(epochs=3, mini_batch_size=32, optimizer="Adam", optimizer_param={"lr": 0.01}, verbose=False)
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
    assert trainer.iter_per_epoch == 4 and trainer.max_iter == 12  # ceil(120 / 32)
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
        batches = net.batches[epoch * 4:(epoch + 1) * 4]
        assert [len(b) for b in batches] == [16, 16, 16, 2]
        assert sorted(np.concatenate(batches)) == list(range(50))
    assert not np.array_equal(np.concatenate(net.batches[:4]), np.concatenate(net.batches[4:8]))


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
    assert all(round(acc * 10) == acc * 10 for acc in trainer.train_acc_list)  # measured on 10 samples
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
    assert type(Trainer(make_net(), *data, verbose=False).optimizer).__name__ == "SGD"  # DLfS default


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
        make_trainer(crashing_net, data, sampling=sampling, seed=trainer_seed, checkpoint=checkpoint).train()
    assert checkpoint.exists()

    np.random.seed(999)  # a different process: fresh weights, different global state
    resumed_net = make_net(seed=None if net_seed is None else 77)
    resumed = make_trainer(resumed_net, data, sampling=sampling, seed=trainer_seed, checkpoint=checkpoint, resume=True)
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
    trainer = make_trainer(make_net(), data, seed=0, epochs=1, checkpoint=tmp_path / "new.ckpt", resume=True)
    trainer.train()
    assert trainer.current_epoch == 1 and (tmp_path / "new.ckpt").exists()


def test_checkpoint_from_another_setup_is_rejected(tmp_path):
    data = toy_data()
    checkpoint = tmp_path / "run.ckpt"
    make_trainer(make_net(), data, seed=0, epochs=1, checkpoint=checkpoint).train()
    net = make_net(seed=9)
    before = params_of(net)
    trainer = make_trainer(net, data, seed=0, mini_batch_size=20, checkpoint=checkpoint, resume=True)
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
    assert isinstance(info.value, FloatingPointError) and info.value.step == 1
    for key in net.params:  # the NaN gradient was never applied
        np.testing.assert_array_equal(net.params[key], before[key])
    assert trainer.train_loss_list == []


def test_diverging_training_raises():
    net = make_net(use_batchnorm=False, use_dropout=False)
    trainer = make_trainer(net, toy_data(), optimizer="SGD", optimizer_param={"lr": 1e6}, seed=0, epochs=20)
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        trainer.train()
    assert len(trainer.train_acc_list) == trainer.current_epoch


def test_ctrl_c_stops_after_the_current_step():
    handler_before = signal.getsignal(signal.SIGINT)
    net = make_net(sigint_at=6)  # step 2 of epoch 2
    trainer = make_trainer(net, toy_data(), seed=0)
    trainer.train()  # returns normally
    assert trainer.interrupted
    assert trainer.current_iter == len(trainer.train_loss_list) == 6  # the step in progress completed
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
    trainer = make_trainer(make_net(), toy_data(), seed=0, verbose=True)
    trainer.train()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    assert all("loss" in line and "train acc" in line and "test acc" in line and line.endswith(" s")
               for line in epoch_lines)
    assert "Final Test Accuracy" in out and "train loss:" not in out
    assert len(lines) == 5  # nothing per step
    assert err == ""


def test_quiet_trainer_prints_nothing(capsys):
    make_trainer(make_net(), toy_data(), seed=0, verbose=False).train()
    assert capsys.readouterr() == ("", "")


def test_plain_progress_display_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails: the built-in display is used
    monkeypatch.setattr("tinyconv.trainer._PlainProgress._INTERVAL", 0.0)
    make_trainer(make_net(), toy_data(), seed=0, progress=True).train()
    err = capsys.readouterr().err
    assert "epoch 1/3: 4/4 steps" in err and "samples/s" in err and "loss" in err


def test_tqdm_progress_bar_when_installed(capsys):
    pytest.importorskip("tqdm", reason="tqdm (the 'progress' extra) is not installed")
    make_trainer(make_net(), toy_data(), seed=0, progress=True).train()
    err = capsys.readouterr().err
    assert "epoch 3/3" in err and "step" in err  # tqdm's bar, erased at the end of each epoch


def test_callback_gets_a_record_per_epoch():
    records = []
    trainer = make_trainer(make_net(), toy_data(), seed=0, callback=lambda tr, rec: records.append((tr, rec)))
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
        self.params = {"W1": 0.1 * rng.standard_normal((N_FEATURES, 10)), "b1": np.zeros(10),
                       "W2": 0.1 * rng.standard_normal((10, N_CLASSES)), "b2": np.zeros(N_CLASSES)}
        self.layers = [dlfs.Affine(self.params["W1"], self.params["b1"]), dlfs.Relu(),
                       dlfs.Affine(self.params["W2"], self.params["b2"])]
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
        return {"W1": self.layers[0].dW, "b1": self.layers[0].db, "W2": self.layers[2].dW, "b2": self.layers[2].db}


def test_dlfs_style_networks_train_and_resume(tmp_path):
    data = toy_data()
    reference = NumpyTwoLayerNet(seed=0)
    trainer = make_trainer(reference, data, seed=1, optimizer="SGD", optimizer_param={"lr": 0.1})
    trainer.train()
    assert reference.loss_calls == 12  # DLfS's way: the loss is recomputed after each update
    assert trainer.test_acc_list[-1] > 0.8

    checkpoint = tmp_path / "numpy.ckpt"
    first = NumpyTwoLayerNet(seed=0)
    make_trainer(first, data, seed=1, optimizer="SGD", optimizer_param={"lr": 0.1}, epochs=1, checkpoint=checkpoint).train()
    resumed = NumpyTwoLayerNet(seed=5)
    make_trainer(resumed, data, seed=1, optimizer="SGD", optimizer_param={"lr": 0.1}, checkpoint=checkpoint, resume=True).train()
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
        reason = ("Fashion-MNIST not found (apt-get install -y dataset-fashion-mnist puts it in "
                  f"/usr/share/datasets/fashion-mnist): {exc}")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_simple_convnet_learns_fashion_mnist():
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist_or_skip()
    x_train, t_train, x_test, t_test = x_train[:2000], t_train[:2000], x_test[:1000], t_test[:1000]
    assert x_train.shape == (2000, 1, 28, 28)
    network = SimpleConvNet(input_dim=(1, 28, 28),
                            conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                            hidden_size=100, output_size=10, weight_init_std=0.01, seed=0)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=4, mini_batch_size=100,
                      optimizer="Adam", optimizer_param={"lr": 0.001}, verbose=False, seed=0)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    print(f"SimpleConvNet, 2,000 Fashion-MNIST images, 4 epochs: test accuracy "
          f"{trainer.test_acc_list[-1]:.3f} in {seconds:.1f} s ({trainer.test_acc_list})")
    assert len(trainer.train_loss_list) == 80
    assert trainer.test_acc_list[-1] >= 0.65
