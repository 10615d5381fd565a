"""Parameter files: DLfS compatibility, safe loading, validation, atomic saving."""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import struct
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict

import dlfs_oracle as dlfs
import numpy as np
import pytest

from tinyconv import serialization
from tinyconv.nets import DeepConvNet, MultiLayerNet, SimpleConvNet
from tinyconv.serialization import ParamsFileError, UnsafePickleError, read_params, save_params

SMALL_CONV = {"filter_num": 6, "filter_size": 3, "pad": 0, "stride": 1}
SMALL_ARCH = {
    "input_dim": (1, 12, 12),
    "conv_param": SMALL_CONV,
    "hidden_size": 20,
    "output_size": 5,
}
N_CLASSES = 5


@pytest.fixture(autouse=True)
def _keep_global_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def synthetic_images(n, seed):
    """Learnable 1x12x12 images: one fixed random template per class plus noise."""
    templates = np.random.default_rng(12345).standard_normal((N_CLASSES, 1, 12, 12))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    # Noisy enough that many samples sit near a decision boundary (accuracy about 85 %).
    images = templates[labels] + 2.0 * rng.standard_normal((n, 1, 12, 12))
    return images, labels


@pytest.fixture(scope="module")
def dlfs_trained(tmp_path_factory):
    """A SimpleConvNet trained with DLfS's NumPy maths and saved the way DLfS saves it."""
    state = np.random.get_state()
    try:
        np.random.seed(7)
        oracle = dlfs.SimpleConvNet(**SMALL_ARCH, weight_init_std=0.1)
        x_train, t_train = synthetic_images(1000, seed=1)
        rng = np.random.default_rng(2)
        for _ in range(100):
            batch = rng.integers(0, len(x_train), size=50)
            grads = oracle.gradient(x_train[batch], t_train[batch])
            for key in oracle.params:
                oracle.params[key] -= 0.05 * grads[key]  # DLfS's SGD
    finally:
        np.random.set_state(state)
    path = tmp_path_factory.mktemp("dlfs") / "params.pkl"
    oracle.save_params(str(path))
    x_eval, t_eval = synthetic_images(2000, seed=3)
    return oracle, path, x_eval, t_eval


def snapshot(net):
    return {key: (value, value.copy()) for key, value in net.state_dict().items()}


def assert_unchanged(net, snap):
    state = net.state_dict()
    assert list(state) == list(snap)
    for key, (array, copy) in snap.items():
        assert state[key] is array, f"{key} was replaced"
        np.testing.assert_array_equal(array, copy, err_msg=f"{key} was modified")


def assert_layers_bound(net):
    for key, slot in net._slots.items():
        if key in net.params:
            assert getattr(slot.layer, slot.attribute) is net.params[key], key


# ----------------------------------------------------------------------------------------------
# DLfS compatibility


def test_dlfs_trained_file_reproduces_dlfs_predictions_in_float64(dlfs_trained):
    oracle, path, x, t = dlfs_trained
    reference = oracle.predict(x)
    assert 0.6 < np.mean(np.argmax(reference, axis=1) == t) < 0.99, (
        "the oracle should be trained, not perfect"
    )

    net = SimpleConvNet(**SMALL_ARCH, dtype=np.float64)
    net.load_params(str(path))
    assert_layers_bound(net)
    logits = net.predict(x)
    assert logits.dtype == np.float64
    np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(reference, axis=1))
    # Relative to each sample's largest logit, so near-zero logits do not dominate.
    scale = np.max(np.abs(reference), axis=1, keepdims=True)
    assert np.max(np.abs(logits - reference) / scale) < 1e-9


def test_dlfs_trained_file_gives_dlfs_accuracy_in_float32(dlfs_trained):
    oracle, path, x, t = dlfs_trained
    reference_accuracy = np.mean(np.argmax(oracle.predict(x), axis=1) == t)
    net = SimpleConvNet(**SMALL_ARCH)  # float32 by default
    net.load_params(str(path))
    assert all(value.dtype == np.float32 for value in net.params.values())
    assert abs(net.accuracy(x, t) - reference_accuracy) <= 0.0005  # 0.05 percentage points


def test_dlfs_deep_convnet_file_reproduces_dlfs_predictions(tmp_path):
    np.random.seed(3)
    oracle = dlfs.DeepConvNet()
    for value in oracle.params.values():  # move away from the initial state, as training would
        value += 0.05 * np.random.randn(*value.shape)
    path = tmp_path / "deep_convnet_params.pkl"
    with open(path, "wb") as f:  # DLfS's save_params
        pickle.dump(dict(oracle.params), f)
    x = np.random.default_rng(0).random((60, 1, 28, 28))

    net = DeepConvNet(dtype=np.float64)
    net.load_params(str(path))
    reference, logits = oracle.predict(x, train_flg=False), net.predict(x)
    np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(reference, axis=1))
    scale = np.max(np.abs(reference), axis=1, keepdims=True)
    assert np.max(np.abs(logits - reference) / scale) < 1e-9


def test_dlfs_default_simple_convnet_file_reproduces_dlfs_predictions(tmp_path):
    np.random.seed(4)
    oracle = dlfs.SimpleConvNet()  # DLfS's defaults: 1x28x28, 30 5x5 filters, 100 hidden units
    for value in oracle.params.values():
        value += 0.05 * np.random.randn(*value.shape)
    path = tmp_path / "params.pkl"
    oracle.save_params(str(path))
    x = np.random.default_rng(1).random((300, 1, 28, 28))
    reference = oracle.predict(x)
    for dtype in (np.float64, np.float32):
        net = SimpleConvNet(dtype=dtype)
        net.load_params(str(path))
        logits = net.predict(x)
        scale = np.max(np.abs(reference), axis=1, keepdims=True)
        error = np.max(np.abs(logits - reference) / scale)
        if dtype is np.float64:
            assert error < 1e-9
            np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(reference, axis=1))
        else:
            assert error < 1e-5
            assert np.mean(np.argmax(logits, axis=1) == np.argmax(reference, axis=1)) >= 0.99


def test_saved_pickle_is_a_plain_dict_that_dlfs_can_load(dlfs_trained, tmp_path):
    _oracle, path, x, _ = dlfs_trained
    net = SimpleConvNet(**SMALL_ARCH, dtype=np.float64)
    net.load_params(str(path))
    out = tmp_path / "mine.pkl"
    net.save_params(str(out))
    with open(out, "rb") as f:
        loaded = pickle.load(f)  # what DLfS's load_params does
    assert type(loaded) is dict
    assert list(loaded) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert all(type(v) is np.ndarray and v.dtype == np.float64 for v in loaded.values())
    oracle_copy = dlfs.SimpleConvNet.__new__(dlfs.SimpleConvNet)
    oracle_copy.params, oracle_copy.conv_param = loaded, SMALL_CONV
    oracle_copy._build()
    np.testing.assert_array_equal(
        np.argmax(oracle_copy.predict(x[:200]), axis=1), np.argmax(net.predict(x[:200]), axis=1)
    )


def test_float32_network_saves_float32_arrays(tmp_path):
    net = SimpleConvNet(**SMALL_ARCH, seed=0)
    save_params(net.state_dict(), tmp_path / "p.pkl")
    with open(tmp_path / "p.pkl", "rb") as f:
        loaded = pickle.load(f)
    assert all(v.dtype == np.float32 for v in loaded.values())


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_loads(tmp_path, protocol):
    params = {"W1": np.arange(12.0).reshape(3, 4), "b1": np.float32([1.5, -2.0]), "n": np.int64(3)}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(params, protocol=protocol))
    loaded = read_params(path)
    assert set(loaded) == set(params)
    for key in params:
        np.testing.assert_array_equal(loaded[key], params[key])
        assert loaded[key].dtype == np.asarray(params[key]).dtype


def test_numpy1_module_paths_load_without_warnings(tmp_path):
    # Pickles written under NumPy 1.x name numpy.core.multiarray, which NumPy 2 deprecates.
    blob = pickle.dumps({"W1": np.ones((2, 3))}, protocol=2)
    blob = blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n" in blob
    path = tmp_path / "old.pkl"
    path.write_bytes(blob)
    np.testing.assert_array_equal(
        read_params(path)["W1"], np.ones((2, 3))
    )  # warnings are errors here


def test_ordered_dict_files_load(tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(W1=np.ones(2), b1=np.zeros(1))))
    assert list(read_params(path)) == ["W1", "b1"]


@pytest.mark.parametrize("name", ["params.npz", "params.bin", "weights"])
def test_non_pickle_names_write_npz_and_round_trip(tmp_path, name):
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, seed=1, dtype=np.float64)
    net.gradient(np.random.default_rng(0).random((8, 6)), np.arange(8) % 3)  # moves running stats
    path = tmp_path / name
    net.save_params(str(path))
    assert path.read_bytes()[:2] == b"PK"
    assert zipfile.is_zipfile(path)
    assert not (tmp_path / (name + ".npz")).exists()
    other = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, seed=2, dtype=np.float64)
    other.load_params(str(path))
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    assert_layers_bound(other)


def test_batchnorm_running_statistics_are_saved_and_optional(tmp_path):
    net = MultiLayerNet(4, [3], 2, use_batchnorm=True, seed=0)
    net.gradient(np.random.default_rng(1).random((10, 4)), np.arange(10) % 2)
    state = net.state_dict()
    assert {"running_mean1", "running_var1"} <= set(state)
    assert np.any(state["running_mean1"] != 0)
    params_only = tmp_path / "params_only.pkl"
    save_params(net.params, params_only)
    other = MultiLayerNet(4, [3], 2, use_batchnorm=True, seed=5)
    with pytest.raises(ParamsFileError, match="running_mean1"):
        other.load_params(str(params_only))
    other.load_params(str(params_only), strict=False)  # DLfS-style file without the statistics
    for key in net.params:
        np.testing.assert_array_equal(other.params[key], net.params[key])
    np.testing.assert_array_equal(other.state_dict()["running_mean1"], np.zeros(3))


# ----------------------------------------------------------------------------------------------
# Loading never runs code from the file


class _ShellExploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


class _SubprocessExploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


def _exploit_payloads(marker):
    yield "os.system as the whole file", pickle.dumps(_ShellExploit(marker))
    yield "os.system as a value", pickle.dumps({"W1": np.ones(2), "b1": _ShellExploit(marker)})
    yield "os.system as a key", pickle.dumps({_ShellExploit(marker): np.ones(2)})
    yield "builtins.eval", pickle.dumps({"W1": _EvalExploit(marker)}, protocol=2)
    yield "subprocess.call", pickle.dumps([_SubprocessExploit(marker)], protocol=5)
    # Hand-written protocol-0 pickle, as an attacker would write it.
    yield "raw GLOBAL opcode", b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    # A NumPy function that is not array reconstruction is refused too.
    yield "numpy.fromfile", b"cnumpy\nfromfile\n(S'/etc/hostname'\ntR."


def test_malicious_pickles_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    net = SimpleConvNet(**SMALL_ARCH, seed=0)
    snap = snapshot(net)
    for description, payload in _exploit_payloads(marker):
        path = tmp_path / "evil.pkl"
        path.write_bytes(payload)
        with pytest.raises(UnsafePickleError, match="refusing"):
            net.load_params(str(path))
        assert not marker.exists(), f"{description}: code from the file ran"
        assert_unchanged(net, snap)
    # Sanity check of the test itself: unrestricted pickle would have run the payload.
    pickle.loads(pickle.dumps(_ShellExploit(marker)))
    assert marker.exists()


def test_unsafe_pickle_error_is_a_params_file_error_and_an_unpickling_error(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(pickle.UnpicklingError):
        read_params(path)
    with pytest.raises(ParamsFileError, match=r"os.system"):
        read_params(path)


# ----------------------------------------------------------------------------------------------
# Corrupt and mismatched files: clear errors, network unchanged


@pytest.fixture
def net_and_good_file(tmp_path):
    net = SimpleConvNet(**SMALL_ARCH, seed=0)
    good = tmp_path / "good.pkl"
    SimpleConvNet(**SMALL_ARCH, seed=1).save_params(str(good))
    return net, good


def test_truncated_pickles_are_rejected(tmp_path, net_and_good_file):
    net, good = net_and_good_file
    blob = good.read_bytes()
    snap = snapshot(net)
    for cut in (1, 2, 10, 50, len(blob) // 3, len(blob) // 2, len(blob) - 100, len(blob) - 1):
        path = tmp_path / "cut.pkl"
        path.write_bytes(blob[:cut])
        with pytest.raises(ParamsFileError, match=r"cut.pkl"):
            net.load_params(str(path))
        assert_unchanged(net, snap)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"this is not a pickle at all", "corrupt"),
        (pickle.dumps([np.ones(2)]), "expected a dict"),
        (pickle.dumps({"W1": "hello"}), "'W1' is a str"),
        (pickle.dumps({1: np.ones(2)}), "names must be strings"),
        (pickle.dumps({"W1": np.array([1, "a"], dtype=object)}), "dtype object"),
        (pickle.dumps({"W1": np.array(["ab"])}), "dtype <U2"),
    ],
)
def test_corrupt_or_odd_files_are_rejected(tmp_path, net_and_good_file, content, message):
    net, _ = net_and_good_file
    snap = snapshot(net)
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(ParamsFileError, match=message):
        net.load_params(str(path))
    assert_unchanged(net, snap)


def test_wrong_shape_names_key_and_both_shapes(tmp_path, net_and_good_file):
    net, good = net_and_good_file
    params = read_params(good)
    params["W2"] = np.zeros((10, 20))
    path = tmp_path / "shape.pkl"
    save_params(params, path)
    snap = snapshot(net)
    with pytest.raises(ParamsFileError) as info:
        net.load_params(str(path))
    text = str(info.value)
    assert "'W2'" in text
    assert "(10, 20)" in text
    assert "(150, 20)" in text
    assert "shape.pkl" in text
    assert_unchanged(net, snap)


def test_missing_and_unknown_keys(tmp_path, net_and_good_file):
    net, good = net_and_good_file
    params = read_params(good)
    del params["b3"]
    params["W9"] = np.zeros(3)
    path = tmp_path / "keys.pkl"
    save_params(params, path)
    snap = snapshot(net)
    with pytest.raises(ParamsFileError, match=r"'b3' is missing.*unknown keys \['W9'\]"):
        net.load_params(str(path))
    assert_unchanged(net, snap)
    # Non-strict: loads what fits, ignores the rest.
    net.load_params(str(path), strict=False)
    np.testing.assert_array_equal(net.params["W1"], params["W1"].astype(np.float32))
    np.testing.assert_array_equal(net.params["b3"], snap["b3"][1])


def test_a_file_of_another_architecture_is_rejected_whole(tmp_path):
    small = SimpleConvNet(**SMALL_ARCH, seed=0)
    path = tmp_path / "deep.pkl"
    DeepConvNet(seed=0).save_params(str(path))
    snap = snapshot(small)
    with pytest.raises(ParamsFileError, match="W1"):
        small.load_params(str(path))
    assert_unchanged(small, snap)


def test_corrupt_npz_files_are_rejected(tmp_path, net_and_good_file):
    net, _ = net_and_good_file
    source = SimpleConvNet(**SMALL_ARCH, seed=3)
    npz = tmp_path / "p.npz"
    source.save_params(str(npz))
    blob = npz.read_bytes()
    snap = snapshot(net)
    for cut in (10, len(blob) // 2, len(blob) - 30):
        path = tmp_path / "cut.npz"
        path.write_bytes(blob[:cut])
        with pytest.raises(ParamsFileError, match=r"cut.npz"):
            net.load_params(str(path))
        assert_unchanged(net, snap)
    # Object arrays inside an NPZ need pickle, which is never allowed.
    np.savez(tmp_path / "objects.npz", W1=np.array([None, 1], dtype=object))
    with pytest.raises(ParamsFileError, match=r"objects.npz"):
        net.load_params(str(tmp_path / "objects.npz"))
    assert_unchanged(net, snap)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        SimpleConvNet(**SMALL_ARCH).load_params(str(tmp_path / "nope.pkl"))


def test_loading_copies_in_place_and_keeps_references(tmp_path):
    net = SimpleConvNet(**SMALL_ARCH, seed=0)
    w1 = net.params["W1"]
    path = tmp_path / "p.pkl"
    SimpleConvNet(**SMALL_ARCH, seed=9, dtype=np.float64).save_params(str(path))
    net.load_params(str(path))
    assert net.params["W1"] is w1
    assert net.layers["Conv1"].W is w1
    np.testing.assert_array_equal(w1, read_params(path)["W1"].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Atomic saving


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_failure_while_writing_pickle_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "params.pkl"
    SimpleConvNet(**SMALL_ARCH, seed=0).save_params(str(path))
    before = path.read_bytes()

    def dump_half_then_fail(obj, handle, protocol=None):
        handle.write(pickle.dumps(obj, protocol=protocol)[:1000])
        raise OSError("disk full")

    monkeypatch.setattr(serialization.pickle, "dump", dump_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        SimpleConvNet(**SMALL_ARCH, seed=1).save_params(str(path))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"params.pkl"}) == []


def test_failure_while_writing_npz_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "params.npz"
    SimpleConvNet(**SMALL_ARCH, seed=0).save_params(str(path))
    before = path.read_bytes()

    def savez_then_fail(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(KeyboardInterrupt):
        SimpleConvNet(**SMALL_ARCH, seed=1).save_params(str(path))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"params.npz"}) == []


def test_failure_of_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "params.pkl"
    SimpleConvNet(**SMALL_ARCH, seed=0).save_params(str(path))
    before = path.read_bytes()

    def no_replace(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(serialization.os, "replace", no_replace)
    with pytest.raises(PermissionError):
        SimpleConvNet(**SMALL_ARCH, seed=1).save_params(str(path))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"params.pkl"}) == []


def test_process_killed_mid_save_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "params.pkl"
    SimpleConvNet(**SMALL_ARCH, seed=0).save_params(str(path))
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, pickle
        from tinyconv import serialization
        from tinyconv.nets import SimpleConvNet
        def dump_and_die(obj, handle, protocol=None):
            handle.write(pickle.dumps(obj, protocol=protocol)[:2000])
            handle.flush()
            os._exit(9)  # killed: no cleanup, no exception handlers
        serialization.pickle.dump = dump_and_die
        SimpleConvNet(**{SMALL_ARCH!r}, seed=1).save_params({str(path)!r})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 9, result.stderr.decode()
    assert path.read_bytes() == before
    read_params(path)  # still a complete, loadable file


def test_new_files_get_normal_permissions(tmp_path):
    path = tmp_path / "p.pkl"
    save_params({"W": np.ones(2)}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


# ----------------------------------------------------------------------------------------------
# Temporaries of killed writes are cleaned up (65 kills once left 4.8 GB of them)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_successful_write_removes_temporaries_of_killed_writers(tmp_path):
    path = tmp_path / "params.pkl"
    dead = _dead_pid()
    stale = [tmp_path / f".params.pkl.{dead}-abc123_x.tmp", tmp_path / f".params.pkl.{dead}-zz.tmp"]
    legacy_old = tmp_path / ".params.pkl.k2j4h5g6.tmp"  # fae188c's names: no pid in them
    legacy_new = tmp_path / ".params.pkl.a1b2c3d4.tmp"
    live_other = tmp_path / f".params.pkl.{os.getppid()}-live.tmp"  # a running process's write
    other_target = tmp_path / f".other.pkl.{dead}-abc.tmp"
    for p in [*stale, legacy_old, legacy_new, live_other, other_target]:
        p.write_bytes(b"x" * 100)
    os.utime(legacy_old, (0, 0))
    save_params({"W": np.ones(2)}, path)
    assert _temporaries(tmp_path) == sorted([legacy_new.name, live_other.name, other_target.name])
    np.testing.assert_array_equal(read_params(path)["W"], np.ones(2))


def test_a_failed_write_removes_its_own_and_stale_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "params.pkl"
    stale = tmp_path / f".params.pkl.{_dead_pid()}-abc.tmp"
    stale.write_bytes(b"x")

    def broken_dump(obj, handle, protocol=None):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(serialization.pickle, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        save_params({"W": np.ones(2)}, path)
    assert _temporaries(tmp_path) == []
    assert not path.exists()


def test_a_write_in_progress_in_another_thread_is_not_removed(tmp_path):
    import threading

    path = tmp_path / "params.pkl"
    started, release = threading.Event(), threading.Event()
    errors = []

    def slow_writer():
        try:
            with serialization.atomic_write(path) as handle:
                handle.write(b"first")
                started.set()
                release.wait(30)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert started.wait(30)
    in_progress = _temporaries(tmp_path)
    assert len(in_progress) == 1
    save_params({"W": np.ones(2)}, path)  # cleans up, but not the live temporary
    assert _temporaries(tmp_path) == in_progress
    release.set()
    writer.join(30)
    assert errors == []
    assert path.read_bytes() == b"first"
    assert _temporaries(tmp_path) == []


def test_repeated_kills_mid_save_leave_no_temporaries_after_the_next_save(tmp_path):
    path = tmp_path / "params.pkl"
    script = textwrap.dedent(f"""
        import os, pickle
        from tinyconv import serialization
        def dump_and_die(obj, handle, protocol=None):
            handle.write(pickle.dumps(obj, protocol=protocol)[:100])
            handle.flush()
            os._exit(9)
        serialization.pickle.dump = dump_and_die
        serialization.save_params({{"W": __import__("numpy").ones(1000)}}, {str(path)!r})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, timeout=120
        )
        assert result.returncode == 9, result.stderr.decode()
    assert len(_temporaries(tmp_path)) == 5
    save_params({"W": np.ones(2)}, path)
    assert _temporaries(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# safetensors (the optional 'safetensors' package's NumPy API)

try:
    import safetensors.numpy as safetensors_numpy
except ImportError:  # the optional extra is missing: only the test of that situation runs
    safetensors_numpy = None
needs_safetensors = pytest.mark.skipif(
    safetensors_numpy is None, reason="the 'safetensors' extra is not installed"
)


def safetensors_bytes(header, data=b"", header_length=None):
    """A hand-made safetensors file: 8-byte little-endian header length, JSON header, data."""
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    text = text.encode() if isinstance(text, str) else text
    length = len(text) if header_length is None else header_length
    return struct.pack("<Q", length) + text + data


def u8(shape, begin, end):
    return {"dtype": "U8", "shape": shape, "data_offsets": [begin, end]}


@needs_safetensors
def test_safetensors_round_trip_keeps_dtypes_shapes_and_values(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "fc.weight": np.asfortranarray(rng.standard_normal((5, 7))),  # float64, not C-ordered
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d, as in PyTorch state dicts
        "ids": np.arange(-3, 3, dtype=np.int64),
        "half": rng.standard_normal(6).astype(np.float16),
        "small": np.arange(5, dtype=np.uint8),
        "mask": np.array([True, False, True]),
        "big_endian": np.arange(4, dtype=">f4"),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(2.5),
    }
    path = tmp_path / "params.safetensors"
    save_params(arrays, path)
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    assert data[8:9] == b"{"
    assert header["bn1.num_batches_tracked"]["dtype"] == "I64"
    assert header["bn1.num_batches_tracked"]["shape"] == []
    assert header["mask"]["dtype"] == "BOOL"
    assert (
        safetensors_numpy.load(data)["fc.weight"].tolist() == arrays["fc.weight"].tolist()
    )  # the library reads it
    loaded = read_params(path)
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype.newbyteorder("="), key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        assert loaded[key].flags.owndata
        assert loaded[key].flags.writeable
        assert loaded[key].dtype.isnative
    # Recognised by content, not by name.
    renamed = tmp_path / "weights.pkl"
    renamed.write_bytes(data)
    assert set(read_params(renamed)) == set(arrays)


@needs_safetensors
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_networks_save_and_load_safetensors(tmp_path, dtype):
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, seed=1, dtype=dtype)
    net.gradient(np.random.default_rng(0).random((8, 6)), np.arange(8) % 3)  # moves running stats
    path = tmp_path / "net.safetensors"
    net.save_params(str(path))
    assert read_params(path)["W1"].dtype == dtype
    other = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, seed=2, dtype=dtype)
    other.load_params(str(path))
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    assert_layers_bound(other)


@needs_safetensors
def test_a_safetensors_file_written_by_the_library_loads(tmp_path):
    """A file from another writer (the library's own save_file, with metadata)."""
    path = tmp_path / "foreign.safetensors"
    arrays = {
        "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a.count": np.array(3, dtype=np.int64),
    }
    safetensors_numpy.save_file(arrays, str(path), metadata={"format": "np", "note": "hi"})
    loaded = read_params(path)
    np.testing.assert_array_equal(loaded["a.weight"], arrays["a.weight"])
    assert loaded["a.count"].shape == ()
    assert loaded["a.count"] == 3


@needs_safetensors
def test_saving_safetensors_refuses_what_it_cannot_hold(tmp_path):
    path = tmp_path / "p.safetensors"
    for value in (np.zeros(2, dtype=np.complex64), np.array(["x"]), np.zeros(2, dtype=object)):
        with pytest.raises(
            TypeError, match=f"has dtype {value.dtype}, which safetensors cannot hold"
        ):
            save_params({"W": value}, path)
    if np.dtype(np.longdouble).itemsize > 8:
        with pytest.raises(TypeError, match="cannot hold"):
            save_params({"W": np.zeros(2, dtype=np.longdouble)}, path)
    with pytest.raises(ValueError, match="reserved"):
        save_params({"__metadata__": np.zeros(2)}, path)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_safetensors_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "p.safetensors"
    path.write_bytes(
        safetensors_bytes(
            {"W": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}},
            np.ones(2, dtype="<f8").tobytes(),
        )
    )
    monkeypatch.setitem(
        sys.modules, "safetensors", None
    )  # import safetensors now raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=re.escape("pip install tinyconv[safetensors]")):
        read_params(path)
    with pytest.raises(ImportError, match=re.escape("pip install tinyconv[safetensors]")):
        save_params({"W": np.ones(2)}, tmp_path / "q.safetensors")
    assert not (tmp_path / "q.safetensors").exists()
    # A broken file is reported as such even without the package: the header is checked first.
    path.write_bytes(safetensors_bytes({"W": u8([2], 0, 3)}, b"\0\0\0"))
    with pytest.raises(ParamsFileError, match="span 3"):
        read_params(path)


def _good_safetensors():
    return safetensors_numpy.save(
        {
            "W1": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b1": np.zeros(2),
            "n": np.array(1, dtype=np.int64),
        }
    )


HOSTILE_SAFETENSORS = [
    # (description, file bytes, a part of the message)
    (
        "header length past EOF",
        safetensors_bytes({"W": u8([1], 0, 1)}, b"\0", header_length=10**6),
        "runs past the end",
    ),
    ("header length 2**64-1", b"\xff" * 8 + b"{}", "runs past the end"),
    ("header not JSON", safetensors_bytes("{W: 1}"), "not JSON"),
    ("header not UTF-8", safetensors_bytes(b'{"\xff": 1}'), "not JSON"),
    ("empty header", safetensors_bytes("", b"{}"), "does not start with '{'"),
    ("two JSON values", safetensors_bytes("{} []"), "not JSON"),
    ("NaN in the header", safetensors_bytes('{"__metadata__": {"a": NaN}}'), "not JSON"),
    (
        "deeply nested header",
        safetensors_bytes('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "not JSON",
    ),
    (
        "a name twice",
        safetensors_bytes(
            f'{{"W": {json.dumps(u8([1], 0, 1))}, "W": {json.dumps(u8([1], 1, 2))}}}', b"\0\0"
        ),
        "names 'W' twice",
    ),
    ("entry not an object", safetensors_bytes({"W": [1, 2]}), "must have exactly the fields"),
    (
        "extra field",
        safetensors_bytes({"W": {**u8([1], 0, 1), "byte_order": "big"}}, b"\0"),
        "must have exactly the fields",
    ),
    (
        "missing field",
        safetensors_bytes({"W": {"dtype": "U8", "shape": [1]}}, b"\0"),
        "must have exactly the fields",
    ),
    (
        "metadata not strings",
        safetensors_bytes({"__metadata__": {"a": 1}}),
        "__metadata__ must map strings",
    ),
    (
        "BF16",
        safetensors_bytes({"W": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\0\0"),
        "dtype 'BF16'",
    ),
    (
        "complex",
        safetensors_bytes({"W": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
        "dtype 'C64'",
    ),
    (
        "FP8",
        safetensors_bytes({"W": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
        "dtype 'F8_E4M3'",
    ),
    (
        "dtype not a string",
        safetensors_bytes({"W": {"dtype": 4, "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
        "dtype 4",
    ),
    ("negative dimension", safetensors_bytes({"W": u8([-1], 0, 1)}, b"\0"), "has shape [-1]"),
    ("float dimension", safetensors_bytes({"W": u8([1.0], 0, 1)}, b"\0"), "has shape [1.0]"),
    ("bool dimension", safetensors_bytes({"W": u8([True], 0, 1)}, b"\0"), "has shape [True]"),
    ("shape not a list", safetensors_bytes({"W": u8(1, 0, 1)}, b"\0"), "has shape 1"),
    ("33 dimensions", safetensors_bytes({"W": u8([1] * 33, 0, 1)}, b"\0"), "at most 32"),
    (
        "huge shape",
        safetensors_bytes({"W": u8([2**40, 2**40], 0, 1)}, b"\0"),
        "too large for any array",
    ),
    (
        "huge shape around a zero",
        safetensors_bytes({"W": u8([0, 2**62, 2**62], 0, 0)}),
        "too large for any array",
    ),
    ("dimension 2**63", safetensors_bytes({"W": u8([2**63], 0, 1)}, b"\0"), "has shape"),
    (
        "size and range disagree",
        safetensors_bytes({"W": u8([3], 0, 2)}, b"\0\0"),
        "3 bytes, but data_offsets [0, 2] span 2",
    ),
    ("range past the data", safetensors_bytes({"W": u8([4], 0, 4)}, b"\0\0"), "end <= 2"),
    ("reversed range", safetensors_bytes({"W": u8([0], 2, 1)}, b"\0\0"), "0 <= begin <= end"),
    ("negative offset", safetensors_bytes({"W": u8([1], -1, 0)}, b"\0"), "data_offsets [-1, 0]"),
    (
        "three offsets",
        safetensors_bytes({"W": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, b"\0"),
        "data_offsets",
    ),
    (
        "float offsets",
        safetensors_bytes({"W": {"dtype": "U8", "shape": [1], "data_offsets": [0.0, 1.0]}}, b"\0"),
        "data_offsets",
    ),
    (
        "overlapping tensors",
        safetensors_bytes({"A": u8([2], 0, 2), "B": u8([2], 1, 3)}, b"\0\0\0"),
        "'B' (data_offsets [1, 3]) overlaps",
    ),
    (
        "aliased tensors",
        safetensors_bytes({"A": u8([2], 0, 2), "B": u8([2], 0, 2)}, b"\0\0"),
        "overlaps",
    ),
    ("a gap", safetensors_bytes({"A": u8([1], 1, 2)}, b"\0\0"), "leaves bytes 0..1 unused"),
    (
        "trailing bytes",
        safetensors_bytes({"A": u8([1], 0, 1)}, b"\0\0"),
        "cover 1 bytes of data, the file holds 2",
    ),
    (
        "BOOL byte 2",
        safetensors_bytes(
            {"A": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x02"
        ),
        "bytes other than 0 and 1",
    ),
]


@needs_safetensors
@pytest.mark.parametrize(
    ("description", "content", "message"),
    HOSTILE_SAFETENSORS,
    ids=[case[0] for case in HOSTILE_SAFETENSORS],
)
def test_hostile_safetensors_files_are_refused_and_change_nothing(
    tmp_path, description, content, message
):
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(content)
    with pytest.raises(ParamsFileError, match=re.escape(message)) as info:
        read_params(path)
    assert str(path) in str(info.value)
    net = MultiLayerNet(3, [2], 2, seed=0)
    snap = snapshot(net)
    with pytest.raises(ParamsFileError):
        net.load_params(str(path))
    assert_unchanged(net, snap)


@needs_safetensors
def test_every_truncation_of_a_safetensors_file_is_refused(tmp_path):
    blob = _good_safetensors()
    path = tmp_path / "cut.safetensors"
    for cut in range(1, len(blob)):
        path.write_bytes(blob[:cut])
        with pytest.raises(ParamsFileError, match=r"cut.safetensors"):
            read_params(path)
    path.write_bytes(blob)
    assert set(read_params(path)) == {"W1", "b1", "n"}


@needs_safetensors
def test_a_safetensors_file_whose_last_tensor_is_bad_changes_nothing(tmp_path):
    """Everything is checked before anything is copied: the good tensors of a file whose last
    one is bad do not reach the network."""
    net = MultiLayerNet(3, [2], 2, seed=0, dtype=np.float64)
    state = {key: np.full_like(value, 9.0) for key, value in net.state_dict().items()}
    good = safetensors_numpy.save(state)
    header_length = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + header_length])
    data = good[8 + header_length :]
    last = max(
        (key for key in header if key != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    header[last]["dtype"] = "BF16"
    path = tmp_path / "bad_last.safetensors"
    path.write_bytes(safetensors_bytes(header, data))
    snap = snapshot(net)
    with pytest.raises(ParamsFileError, match="BF16"):
        net.load_params(str(path))
    assert_unchanged(net, snap)
