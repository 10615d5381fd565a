"""The ``tinyconv`` command line: help, train (files, history, pictures, errors, Ctrl-C, NaN,
resume), evaluate (own and DLfS parameter files), filters and info.

Commands run in-process through ``tinyconv.cli.main`` for speed; one test runs
``python -m tinyconv`` in a subprocess.  Training runs are tiny (a few hundred images, one or two
epochs).  No test touches the network: data-set tests use an isolated cache and a failing
``urlopen``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import urllib.error

import numpy as np
import pytest

import tinyconv
from tinyconv import cli
from tinyconv.cli import main
from tinyconv.datasets import FASHION_MNIST_CLASSES, _catalog, _fetch, load_sample
from tinyconv.nets import SimpleConvNet
from tinyconv.visualize import have_matplotlib

# One thread: on a busy 2-core machine two OpenMP threads can be many times slower.
TINY = ["--train-size", "300", "--test-size", "100", "--seed", "0", "--threads", "1"]
PICTURES = ["accuracy.png", "loss.png", "filters_before.png", "filters_after.png"]


def run(argv):
    """main(argv) with stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_real_picture(path, width=None, height=None):
    """The PNG opens, has the expected size, and is not blank (several colours, not all white)."""
    from matplotlib.image import imread

    pixels = imread(os.fspath(path))
    if width is not None:
        assert pixels.shape[:2] == (height, width)
    rgb = np.round(pixels[..., :3].reshape(-1, 3) * 255).astype(np.uint8)
    assert len(np.unique(rgb, axis=0)) > 1
    assert not np.all(rgb == 255)


needs_matplotlib = pytest.mark.skipif(not have_matplotlib(),
                                      reason="the pictures need matplotlib (tinyconv[plot])")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests that inspect its output."""
    out_dir = tmp_path_factory.mktemp("run")
    code, stdout, stderr = run(["train", "--epochs", "2", *TINY, "--out", str(out_dir)])
    return out_dir, code, stdout, stderr


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache, no $TINYCONV_DATA, no system copies, and a urlopen that fails (and
    records each URL), so nothing is ever downloaded."""
    monkeypatch.setattr(_fetch, "user_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv(_fetch.ENV_VAR, raising=False)
    for name in _catalog.SYSTEM_DIRS:
        monkeypatch.setitem(_catalog.SYSTEM_DIRS, name, [])
    urls = []

    def no_network(url, *args, **kwargs):
        urls.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(_fetch, "urlopen", no_network)
    return urls


# ----------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", ["train", "evaluate", "filters", "info"])
def test_every_command_has_help_with_examples(command):
    code, stdout, _ = run([command, "--help"])
    assert code == 0
    assert stdout.startswith(f"usage: tinyconv {command}")
    assert "examples:" in stdout and f"tinyconv {command}" in stdout.split("examples:")[1]


def test_train_help_documents_defaults_and_outputs():
    _, stdout, _ = run(["train", "--help"])
    for text in ["--net", "--dataset", "--epochs", "--batch-size", "--optimizer", "--lr",
                 "--train-size", "--test-size", "--threads", "--seed", "--dtype", "--out",
                 "--checkpoint", "--resume", "--data-dir", "--quiet", "params.pkl",
                 "history.json", "accuracy.png", "filters_after.png", "runs/<date-time>"]:
        assert text in stdout, text
    assert "(default: 20)" in stdout and "(default: Adam)" in stdout and "(default: 0.001)" in stdout


def test_top_level_help_and_missing_command():
    code, stdout, _ = run(["--help"])
    assert code == 0
    for command in ("train", "evaluate", "filters", "info"):
        assert command in stdout
    code, _, stderr = run([])
    assert code == 2 and "usage: tinyconv" in stderr


def test_python_dash_m_tinyconv_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "tinyconv", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tinyconv") and "evaluate" in result.stdout
    result = subprocess.run([sys.executable, "-m", "tinyconv", "--version"], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == f"tinyconv {tinyconv.__version__}"


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "must be at least 1"),
    (["train", "--lr", "-1"], "must be a positive number"),
    (["train", "--optimizer", "adamw"], "unknown optimizer"),
    (["train", "--dataset", "cifar"], "invalid choice"),
])
def test_bad_options_are_usage_errors(argv, message):
    code, _, stderr = run(argv)
    assert code == 2 and message in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------------------------
# train


def test_train_prints_epochs_and_final_accuracy(trained):
    _, code, stdout, stderr = trained
    assert code == 0, stderr
    assert "Training SimpleConvNet (float32) on the Fashion-MNIST sample: 300 training and 100 test images" in stdout
    assert "Adam lr 0.001, batch 100, 2 epochs" in stdout
    for epoch in (1, 2):
        assert f"epoch {epoch}/2: loss " in stdout
    assert "train acc" in stdout and "test acc" in stdout and " s\n" in stdout
    assert "=============== Final Test Accuracy ===============\ntest acc:" in stdout
    assert "Wrote params.pkl, history.json" in stdout


def test_train_writes_every_file(trained):
    out_dir = trained[0]
    expected = {"params.pkl", "history.json"} | (set(PICTURES) if have_matplotlib() else set())
    assert expected <= set(os.listdir(out_dir))


@needs_matplotlib
def test_train_pictures_are_real(trained):
    out_dir = trained[0]
    assert_real_picture(out_dir / "accuracy.png", 640, 480)
    assert_real_picture(out_dir / "loss.png", 640, 480)
    assert_real_picture(out_dir / "filters_before.png", 600, 300)  # 30 filters, 8 per row
    assert_real_picture(out_dir / "filters_after.png", 600, 300)


def test_params_file_is_a_plain_dlfs_pickle(trained):
    with open(trained[0] / "params.pkl", "rb") as handle:
        params = pickle.load(handle)  # what DLfS's load_params does
    assert type(params) is dict and sorted(params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert params["W1"].shape == (30, 1, 5, 5) and params["W2"].shape == (4320, 100)
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in params.values())


def test_history_json_content(trained):
    history = json.loads((trained[0] / "history.json").read_text())
    assert history["status"] == "completed"
    assert history["tinyconv_version"] == tinyconv.__version__
    config_now = tinyconv.config()
    assert history["config"]["num_threads"] == history["settings"]["threads"] == 1
    assert {k: v for k, v in history["config"].items() if k != "num_threads"} == \
        {k: v for k, v in config_now.items() if k != "num_threads"}
    settings = history["settings"]
    assert settings["net"] == "simple" and settings["network"] == "SimpleConvNet"
    assert (settings["dataset"], settings["train_size"], settings["test_size"]) == ("sample", 300, 100)
    assert (settings["epochs"], settings["batch_size"], settings["optimizer"], settings["lr"]) == (2, 100, "Adam", 0.001)
    assert (settings["seed"], settings["dtype"], settings["eval_samples"]) == (0, "float32", 1000)
    assert [record["epoch"] for record in history["epochs"]] == [1, 2]
    for record, train_acc, test_acc, loss in zip(history["epochs"], history["train_acc"],
                                                 history["test_acc"], history["loss"]):
        assert record["train_acc"] == train_acc and record["test_acc"] == test_acc
        assert record["loss"] == loss and 0 < loss < 10 and record["seconds"] > 0
        assert 0 <= train_acc <= 1 and 0 <= test_acc <= 1
    assert len(history["train_loss"]) == 2 * 3  # 300 images / batch 100 = 3 steps per epoch
    assert history["loss"][0] == pytest.approx(np.mean(history["train_loss"][:3]))
    assert 0 <= history["final_test_acc"] <= 1
    assert history["timing"]["train_seconds"] > 0
    assert history["timing"]["total_seconds"] >= history["timing"]["train_seconds"]


def test_train_is_reproducible_with_a_seed(trained, tmp_path):
    code, _, _ = run(["train", "--epochs", "2", *TINY, "--out", str(tmp_path), "--quiet"])
    assert code == 0
    first = json.loads((trained[0] / "history.json").read_text())
    second = json.loads((tmp_path / "history.json").read_text())
    assert first["train_loss"] == second["train_loss"]
    assert first["test_acc"] == second["test_acc"]


def test_quiet_train_into_the_default_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads_before = tinyconv.get_num_threads()
    code, stdout, stderr = run(["train", "--epochs", "1", *TINY, "--quiet", "--dtype", "float64",
                                "--optimizer", "momentum", "--lr", "0.01", "--threads", "1"])
    assert code == 0, stderr
    assert stdout == "" and stderr == ""
    assert tinyconv.get_num_threads() == threads_before  # --threads does not outlive main()
    (run_dir,) = (tmp_path / "runs").iterdir()  # runs/<date-time>/
    history = json.loads((run_dir / "history.json").read_text())
    assert history["settings"]["optimizer"] == "Momentum" and history["settings"]["threads"] == 1
    with open(run_dir / "params.pkl", "rb") as handle:
        assert pickle.load(handle)["W1"].dtype == np.float64


def test_train_without_matplotlib_says_so_once(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, stdout, stderr = run(["train", "--epochs", "1", *TINY, "--out", str(tmp_path)])
    assert code == 0, stderr
    assert stderr.count('pip install "tinyconv[plot]"') == 1
    assert sorted(os.listdir(tmp_path)) == ["history.json", "params.pkl"]
    assert "Wrote params.pkl, history.json to" in stdout


def test_missing_dataset_is_a_clear_error_without_traceback(tmp_path, offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    out_dir = tmp_path / "out"
    code, stdout, stderr = run(["train", "--dataset", "mnist", "--data-dir", str(empty),
                                "--out", str(out_dir)])
    assert code == 2
    assert "The MNIST data set was not found" in stderr
    assert str(empty) in stderr and "--data-dir DIR" in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert offline, "a download should have been attempted (and failed)"
    assert not out_dir.exists()  # no empty run directory is left behind

    offline.clear()
    code, _, stderr = run(["train", "--dataset", "fashion-mnist", "--no-download", "--out", str(out_dir)])
    assert code == 2 and "The Fashion-MNIST data set was not found" in stderr
    assert "download=False" in stderr and offline == []  # --no-download: nothing was tried


def test_nan_loss_stops_with_a_message(tmp_path):
    code, _, stderr = run(["train", "--epochs", "1", *TINY, "--optimizer", "SGD", "--lr", "1e30",
                           "--out", str(tmp_path)])
    assert code == 1
    assert "training loss became" in stderr and "--lr" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "params.pkl").exists()
    assert json.loads((tmp_path / "history.json").read_text())["status"] == "failed"


def test_ctrl_c_during_training_saves_results_and_exits_130(tmp_path, monkeypatch):
    original_gradient = SimpleConvNet.gradient
    calls = []

    def gradient_then_ctrl_c(self, x, t):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, in the middle of epoch 1
        return original_gradient(self, x, t)

    monkeypatch.setattr(SimpleConvNet, "gradient", gradient_then_ctrl_c)
    code, _, stderr = run(["train", "--epochs", "3", *TINY, "--out", str(tmp_path)])
    assert code == 130
    assert "nterrupted" in stderr and "Traceback" not in stderr
    assert len(calls) == 2  # stopped right after the step in progress
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["status"] == "interrupted" and len(history["train_loss"]) == 2
    assert (tmp_path / "params.pkl").exists()


def test_ctrl_c_outside_training_exits_130(monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tinyconv.datasets.load_sample", interrupted)
    code, _, stderr = run(["train"])
    assert code == 130 and "Interrupted" in stderr and "Traceback" not in stderr


def test_checkpoint_and_resume(tmp_path):
    checkpoint = str(tmp_path / "run.ckpt")
    code, _, _ = run(["train", "--epochs", "1", *TINY, "--out", str(tmp_path / "a"),
                      "--checkpoint", checkpoint, "--quiet"])
    assert code == 0 and os.path.exists(checkpoint)
    code, stdout, stderr = run(["train", "--epochs", "2", *TINY, "--out", str(tmp_path / "a"),
                                "--checkpoint", checkpoint, "--resume"])
    assert code == 0, stderr
    assert "resumed from" in stdout and "\nepoch 2/2: " in stdout and "\nepoch 1/2: " not in stdout
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [record["epoch"] for record in history["epochs"]] == [1, 2]
    assert len(history["train_loss"]) == 6

    code, _, stderr = run(["train", "--resume"])
    assert code == 2 and "--resume needs --checkpoint" in stderr


def test_train_size_larger_than_the_data_set():
    code, _, stderr = run(["train", "--train-size", "5001"])
    assert code == 2 and "5,000" in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------------------------
# evaluate


def _sample_test_set():
    _, (x_test, t_test) = load_sample(flatten=False)
    return x_test, t_test


@contextlib.contextmanager
def one_thread():
    """Reference computations on one thread (fast on a busy 2-core machine)."""
    before = tinyconv.get_num_threads()
    tinyconv.set_num_threads(1)
    try:
        yield
    finally:
        tinyconv.set_num_threads(before)


def test_evaluate_saved_params(trained, tmp_path):
    out_dir = trained[0]
    code, stdout, stderr = run(["evaluate", str(out_dir / "params.pkl"), "--out", str(tmp_path),
                                "--threads", "1"])
    assert code == 0, stderr
    network = SimpleConvNet()
    network.load_params(str(out_dir / "params.pkl"))
    x_test, t_test = _sample_test_set()
    with one_thread():
        expected = network.accuracy(x_test, t_test)
    assert f"accuracy: {expected:.4f} ({round(expected * 1000)} of 1,000)" in stdout
    for label, name in enumerate(FASHION_MNIST_CLASSES):
        assert f"{label} {name}" in stdout
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(expected)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 1000 and (cm.sum(axis=1) == 100).all()
    assert [row["name"] for row in report["per_class"]] == list(FASHION_MNIST_CLASSES)
    assert [row["correct"] for row in report["per_class"]] == list(np.diag(cm))
    if have_matplotlib():
        assert_real_picture(tmp_path / "confusion_matrix.png")


def test_evaluate_writes_next_to_params_by_default(trained):
    out_dir = trained[0]
    code, _, _ = run(["evaluate", str(out_dir / "params.pkl"), "--test-size", "50", "--threads", "1"])
    assert code == 0
    assert (out_dir / "evaluation.json").exists()
    assert json.loads((out_dir / "evaluation.json").read_text())["test_size"] == 50


def test_evaluate_reads_a_dlfs_pickle(tmp_path):
    # What DLfS's SimpleConvNet.save_params writes: pickle.dump of a dict of float64 arrays.
    reference = SimpleConvNet(dtype=np.float64, seed=7)
    dlfs_params = {key: np.array(value, dtype=np.float64) for key, value in reference.params.items()}
    path = tmp_path / "dlfs_params.pkl"
    with open(path, "wb") as handle:
        pickle.dump(dlfs_params, handle, protocol=2)
    code, stdout, stderr = run(["evaluate", str(path), "--test-size", "200", "--dtype", "float64",
                                "--threads", "1"])
    assert code == 0, stderr
    x_test, t_test = _sample_test_set()
    with one_thread():
        expected = reference.accuracy(x_test[:200], t_test[:200])
    assert f"SimpleConvNet from {path}" in stdout
    assert f"accuracy: {expected:.4f}" in stdout


@pytest.mark.parametrize("params, argv, message", [
    ({"W1": np.zeros((2, 2)), "b1": np.zeros(2)}, [], "cannot tell which network"),
    ("simple", ["--net", "deep"], "which a DeepConvNet needs"),
    ({f"{k}{i}": np.zeros((3, 3)) for k in "Wb" for i in (1, 2, 3)}, [], "SimpleConvNet needs 4-D"),
    ("five classes", [], "5 outputs but the Fashion-MNIST sample has 10 classes"),
])
def test_evaluate_explains_params_that_do_not_fit(tmp_path, params, argv, message):
    if params == "simple":
        params = {key: np.array(value) for key, value in SimpleConvNet(seed=0).params.items()}
    elif params == "five classes":
        params = {key: np.array(value) for key, value in SimpleConvNet(output_size=5, seed=0).params.items()}
    path = tmp_path / "p.pkl"
    with open(path, "wb") as handle:
        pickle.dump(params, handle)
    code, _, stderr = run(["evaluate", str(path), *argv])
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_evaluate_missing_or_corrupt_file(tmp_path):
    code, _, stderr = run(["evaluate", str(tmp_path / "none.pkl")])
    assert code == 2 and "parameter file not found" in stderr
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04garbage")
    code, _, stderr = run(["evaluate", str(corrupt)])
    assert code == 2 and "cannot read parameters" in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------------------------
# filters and info


@needs_matplotlib
def test_filters_draws_w1(trained, tmp_path):
    output = tmp_path / "pictures" / "w1.png"
    code, stdout, stderr = run(["filters", str(trained[0] / "params.pkl"), "-o", str(output)])
    assert code == 0, stderr
    assert f"Wrote {output}: 30 filters of 5x5" in stdout
    assert_real_picture(output, 600, 300)
    code, _, _ = run(["filters", str(trained[0] / "params.pkl"), "-o", str(tmp_path / "ten.png"),
                      "--nx", "10"])
    assert code == 0
    assert_real_picture(tmp_path / "ten.png", 750, 225)  # 3 rows of 10


def test_filters_rejects_params_without_conv_filters(tmp_path):
    path = tmp_path / "mlp.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"W1": np.zeros((784, 50)), "b1": np.zeros(50)}, handle)
    code, _, stderr = run(["filters", str(path), "-o", str(tmp_path / "x.png")])
    assert code == 2 and "4 dimensions" in stderr
    code, _, stderr = run(["filters", str(path), "--key", "W9", "-o", str(tmp_path / "x.png")])
    assert code == 2 and "has no 'W9'" in stderr
    assert not (tmp_path / "x.png").exists()


def test_info(tmp_path, monkeypatch):
    monkeypatch.setattr(_fetch, "user_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv(_fetch.ENV_VAR, str(tmp_path / "root"))
    code, stdout, _ = run(["info", "--data-dir", str(tmp_path / "mine")])
    assert code == 0
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tinyconv.show_config()
    assert stdout.startswith(buffer.getvalue())  # exactly what show_config() prints, first
    assert f"mnist: not on disk; would be downloaded into {tmp_path / 'cache' / 'mnist'}" in stdout
    assert f"data_dir: {tmp_path / 'mine'} (no such directory)" in stdout
    assert f"TINYCONV_DATA: {tmp_path / 'root' / 'mnist'}" in stdout
    assert "fashion-mnist:" in stdout and "sample:" in stdout
    try:
        import tqdm
    except ImportError:
        assert 'tqdm (progress bars): not installed (pip install "tinyconv[progress]")' in stdout
    else:
        assert f"tqdm (progress bars): {tqdm.__version__}" in stdout
    if have_matplotlib():
        import matplotlib

        assert f"matplotlib (pictures): {matplotlib.__version__}" in stdout


def test_info_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, stdout, _ = run(["info"])
    assert code == 0
    assert 'matplotlib (pictures): not installed (pip install "tinyconv[plot]")' in stdout


def test_cli_exports():
    assert set(cli.__all__) >= {"main", "build_parser"}
