"""The ``tinyconv`` command line: help, train (files, history, pictures, errors, Ctrl-C, NaN,
resume), evaluate (own and DLfS parameter files), filters and info.

Commands run in-process through ``tinyconv.cli.main`` for speed; a few run ``python -m tinyconv``
in a subprocess.  Training runs are tiny (a few hundred images, one or two epochs).  No test
touches the network: data-set tests use an isolated cache and a failing ``urlopen``.

``test_absurd_option_values_are_one_line_usage_errors`` tries every option of every command with
values that make no sense (negative, zero, huge, NaN, empty or impossible paths, files of another
kind or architecture): each must be one ``error:`` line, exit code 2, no traceback, and nothing
created.
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
import tinyconv.nets
from tinyconv import cli
from tinyconv.cli import main
from tinyconv.datasets import FASHION_MNIST_CLASSES, _catalog, _fetch, load_sample, write_idx
from tinyconv.nets import DeepConvNet, SimpleConvNet, network_from_params, resnet20
from tinyconv.trainer import Trainer
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


needs_matplotlib = pytest.mark.skipif(
    not have_matplotlib(), reason="the pictures need matplotlib (tinyconv[plot])"
)


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


@pytest.mark.parametrize(
    "command", ["train", "finetune", "evaluate", "filters", "export", "summary", "info"]
)
def test_every_command_has_help_with_examples(command):
    code, stdout, _ = run([command, "--help"])
    assert code == 0
    assert stdout.startswith(f"usage: tinyconv {command}")
    assert "examples:" in stdout
    assert f"tinyconv {command}" in stdout.split("examples:")[1]


def test_train_help_documents_defaults_and_outputs():
    _, stdout, _ = run(["train", "--help"])
    for text in [
        "--net",
        "--dataset",
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--train-size",
        "--test-size",
        "--threads",
        "--seed",
        "--dtype",
        "--out",
        "--checkpoint",
        "--resume",
        "--data-dir",
        "--quiet",
        "params.pkl",
        "history.json",
        "accuracy.png",
        "filters_after.png",
        "runs/<date-time>",
    ]:
        assert text in stdout, text
    flat = " ".join(stdout.split())  # argparse wraps the help texts
    assert "(default: 20)" in flat
    assert "(default: Adam, or Momentum with momentum 0.9 for a ResNet)" in flat
    assert "(default: 0.001, or 0.1 for a ResNet trained with SGD, Momentum or Nesterov)" in flat
    assert "(default: 100, or 128 for a ResNet; all the images when fewer)" in flat
    assert "(default: constant, or cosine for a ResNet)" in flat
    assert "params.npz" in flat
    for name in tinyconv.nets.NETWORK_NAMES:
        assert name in flat, name


def test_top_level_help_and_missing_command():
    code, stdout, _ = run(["--help"])
    assert code == 0
    for command in ("train", "finetune", "evaluate", "filters", "export", "summary", "info"):
        assert command in stdout
    code, _, stderr = run([])
    assert code == 2
    assert "usage: tinyconv" in stderr


def test_python_dash_m_tinyconv_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "tinyconv", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tinyconv")
    assert "evaluate" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "tinyconv", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == f"tinyconv {tinyconv.__version__}"


def write_params(path, params):
    with open(path, "wb") as handle:
        pickle.dump({key: np.asarray(value) for key, value in params.items()}, handle)
    return path


def simple_params(**kwargs):
    return {key: np.array(value) for key, value in SimpleConvNet(seed=0, **kwargs).params.items()}


def write_fake_mnist(directory, n_train=12, n_test=10, skip=()):
    """Four small MNIST-shaped IDX files (28x28 images, labels 0..9), leaving out ``skip``."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if name not in skip:
            write_idx(directory / name, array)
    return directory


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Placeholders for the table below -> real paths: good and bad parameter files, odd files."""
    root = tmp_path_factory.mktemp("files")
    paths = {
        "dir": root,
        "missing": root / "no-such-dir",
        "afile": root / "afile.txt",
        "empty": root / "empty.pkl",
        "good": root / "good.pkl",
    }
    paths["afile"].write_text("not a pickle\n")
    paths["empty"].write_bytes(b"")
    write_params(paths["good"], simple_params())
    paths["rgb"] = write_params(root / "rgb.pkl", simple_params(input_dim=(3, 28, 28)))
    oblong = simple_params()
    oblong["W1"] = np.zeros((30, 1, 5, 3), np.float32)
    paths["oblong"] = write_params(root / "oblong.pkl", oblong)
    huge_filters = simple_params()
    huge_filters["W1"] = np.zeros((30, 1, 29, 29), np.float32)  # larger than the 28x28 images
    paths["huge_filters"] = write_params(root / "huge_filters.pkl", huge_filters)
    wrong_w2 = simple_params()
    wrong_w2["W2"] = np.zeros((17, 100), np.float32)
    paths["wrong_w2"] = write_params(root / "wrong_w2.pkl", wrong_w2)
    no_outputs = simple_params()
    no_outputs["W3"], no_outputs["b3"] = np.zeros((100, 0), np.float32), np.zeros(0, np.float32)
    paths["no_outputs"] = write_params(root / "no_outputs.pkl", no_outputs)
    deep_rgb = {
        key: np.array(value)
        for key, value in DeepConvNet(input_dim=(3, 28, 28), seed=0).params.items()
    }
    paths["deep_rgb"] = write_params(root / "deep_rgb.pkl", deep_rgb)
    paths["no_filters"] = write_params(root / "no_filters.pkl", {"W1": np.zeros((0, 1, 5, 5))})
    paths["many_filters"] = write_params(
        root / "many_filters.pkl", {"W1": np.zeros((4097, 1, 1, 1))}
    )
    x, t = np.zeros((300, 1, 28, 28), np.float32), np.zeros(300, np.int64)
    paths["other_ckpt"] = root / "batch50.ckpt"  # a checkpoint of another setup: batch size 50
    Trainer(
        SimpleConvNet(seed=0), x, t, x, t, mini_batch_size=50, optimizer="Adam", seed=0
    ).save_checkpoint(paths["other_ckpt"])
    paths["blocked_out"] = root / "blocked-out"
    (paths["blocked_out"] / "history.json").mkdir(
        parents=True
    )  # a directory in history.json's place
    paths["png_dir"] = root / "pictures.png"
    paths["png_dir"].mkdir()
    paths["partial_mnist"] = write_fake_mnist(
        root / "partial-mnist", skip={"t10k-labels-idx1-ubyte.gz"}
    )
    r20 = resnet20(num_classes=5, seed=0)
    r20.save_params(str(root / "r20.npz"))
    paths["r20"] = root / "r20.npz"
    paths["r20_params_only"] = write_params(root / "r20_params_only.pkl", r20.params)
    paths["mlp"] = write_params(root / "mlp.pkl", {"W1": np.zeros((784, 5)), "b1": np.zeros(5)})
    return {key: str(value) for key, value in paths.items()}


plots = pytest.mark.skipif(
    not have_matplotlib(), reason="the check needs matplotlib's list of formats"
)

# (argv, what the one error line must say). {name} is a path from the `files` fixture; every
# `train` row runs after TINY and --epochs 1, with --out into a fresh directory (unless it sets
# --out).
ABSURD = [
    # train: numbers
    (["train", "--epochs", "0"], "argument --epochs: must be from 1 to 1,000,000, got 0"),
    (
        ["train", "--epochs", "1000001"],
        "argument --epochs: must be from 1 to 1,000,000, got 1000001",
    ),
    (["train", "--epochs", "1e3"], "argument --epochs: expected a whole number, got '1e3'"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["train", "--batch-size", "-5"], "argument --batch-size: must be at least 1, got -5"),
    (
        ["train", "--batch-size", "10000000"],
        "--batch-size 10,000,000 is larger than the 300 training images (--train-size)",
    ),
    (
        ["train", "--batch-size", "5001", "--train-size", "5000"],
        "--batch-size 5,001 is larger than the 5,000 training images",
    ),
    (["train", "--lr", "-1"], "argument --lr: must be a positive finite number, got -1"),
    (["train", "--lr", "0"], "argument --lr: must be a positive finite number, got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a positive finite number, got nan"),
    (["train", "--lr", "inf"], "argument --lr: must be a positive finite number, got inf"),
    (["train", "--lr=-inf"], "argument --lr: must be a positive finite number, got -inf"),
    (
        ["train", "--lr", "1e-400"],
        "argument --lr: must be a positive finite number, got 1e-400",
    ),  # 0.0
    (["train", "--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    (["train", "--train-size", "0"], "argument --train-size: must be at least 1, got 0"),
    (["train", "--train-size", "5001"], "--train-size 5001 is larger than the 5,000 train images"),
    (["train", "--train-size", "9" * 40], "is larger than the 5,000 train images"),
    (["train", "--test-size", "-1"], "argument --test-size: must be at least 1, got -1"),
    (["train", "--test-size", "1001"], "--test-size 1001 is larger than the 1,000 test images"),
    (["train", "--eval-samples", "-1"], "argument --eval-samples: must be 0 or more, got -1"),
    (["train", "--threads", "0"], "argument --threads: must be from 1 to 4,096, got 0"),
    (["train", "--threads", "10000"], "argument --threads: must be from 1 to 4,096, got 10000"),
    (["train", "--threads", "many"], "argument --threads: expected a whole number, got 'many'"),
    (
        ["train", "--seed", "-1"],
        "argument --seed: must be from 0 to 18,446,744,073,709,551,615, got -1",
    ),
    (
        ["train", "--seed", str(2**64)],
        "argument --seed: must be from 0 to 18,446,744,073,709,551,615, got 18446744073709551616",
    ),
    (
        ["train", "--seed", "9" * 5000],
        "argument --seed: expected a whole number, got '9999",
    ),  # past int()'s digit limit
    (["train", "--seed", "1.5"], "argument --seed: expected a whole number, got '1.5'"),
    # train: choices
    (["train", "--optimizer", "adamw"], "argument --optimizer: unknown optimizer 'adamw'"),
    (["train", "--net", "resnet"], "argument --net: invalid choice: 'resnet'"),
    (["train", "--net", "resnet19"], "argument --net: invalid choice: 'resnet19'"),
    (["train", "--lr-schedule", "linear"], "argument --lr-schedule: invalid choice: 'linear'"),
    (["train", "--sampling", "random"], "argument --sampling: invalid choice: 'random'"),
    (["train", "--classes", "5,5"], "argument --classes: class 5 is given twice in '5,5'"),
    (["train", "--classes", "11"], "argument --classes: give at least 2 classes, got '11'"),
    (
        ["train", "--classes", "3,11"],
        "--classes 3,11: class 11 is not one of the Fashion-MNIST sample's classes 0 to 9",
    ),
    (
        ["train", "--classes", "a"],
        "argument --classes: expected class numbers separated by commas (e.g. 5,6,7,8,9), got 'a'",
    ),
    (
        ["train", "--classes", "1,,2"],
        "argument --classes: expected class numbers separated by commas",
    ),
    (
        ["train", "--classes", "1.0,2"],
        "argument --classes: expected class numbers separated by commas",
    ),
    (
        ["train", "--classes", "5,6", "--train-size", "1001"],
        "--train-size 1001 is larger than the 1,000 train images of the Fashion-MNIST sample of classes 5,6",
    ),
    (["train", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    # train: paths
    (["train", "--out", ""], "argument --out: expected a path, got an empty string"),
    (["train", "--out", "a\0b"], "argument --out: a path cannot contain a NUL character"),
    (["train", "--out", "{afile}"], "--out: {afile} exists and is not a directory"),
    (["train", "--out", "{afile}/run"], "cannot create the output directory {afile}/run"),
    (
        ["train", "--out", "{blocked_out}"],
        "--out: cannot write {blocked_out}/history.json: a directory of that name is in the way",
    ),
    (["train", "--checkpoint", ""], "argument --checkpoint: expected a path, got an empty string"),
    (
        ["train", "--checkpoint", "{missing}/run.ckpt"],
        "--checkpoint {missing}/run.ckpt: the directory {missing} does not exist",
    ),
    (
        ["train", "--checkpoint", "{afile}/run.ckpt"],
        "--checkpoint {afile}/run.ckpt: {afile} is not a directory",
    ),
    (["train", "--checkpoint", "{dir}"], "--checkpoint {dir} is a directory; it must name a file"),
    (["train", "--resume"], "--resume needs --checkpoint PATH"),
    (
        ["train", "--resume", "--checkpoint", "{afile}"],
        "--resume: cannot continue from the checkpoint: {afile}",
    ),
    (
        ["train", "--resume", "--checkpoint", "{empty}"],
        "--resume: cannot continue from the checkpoint: {empty}",
    ),
    (
        ["train", "--resume", "--checkpoint", "{good}"],
        "--resume: cannot continue from the checkpoint: {good}",
    ),
    (
        ["train", "--resume", "--checkpoint", "{other_ckpt}"],
        "--resume: cannot continue from the checkpoint: {other_ckpt}",
    ),
    (["train", "--data-dir", ""], "argument --data-dir: expected a path, got an empty string"),
    (
        ["train", "--dataset", "mnist", "--data-dir", "{partial_mnist}"],
        "cannot be read from --data-dir '{partial_mnist}': the directory lacks t10k-labels-idx1-ubyte.gz",
    ),
    (
        ["train", "--dataset", "mnist", "--data-dir", "{afile}"],
        "--data-dir '{afile}': the directory is not a directory",
    ),
    (
        ["train", "--dataset", "mnist", "--data-dir", "{missing}"],
        "--data-dir '{missing}': the directory does not exist",
    ),
    # finetune
    (["finetune"], "the following arguments are required: --init"),
    (["finetune", "--init", "{missing}/p.npz"], "--init parameter file not found: {missing}/p.npz"),
    (["finetune", "--init", "{dir}"], "{dir} is a directory, not a --init parameter file"),
    (["finetune", "--init", "{afile}"], "cannot read parameters: {afile}"),
    (["finetune", "--init", "{empty}"], "cannot read parameters: {empty}: the file is empty"),
    (
        ["finetune", "--init", "{r20_params_only}"],
        "{r20_params_only} holds a resnet20's parameters but not its batch-norm running statistics",
    ),
    (
        ["finetune", "--init", "{good}", "--net", "resnet20"],
        "{good} holds the parameters of a SimpleConvNet, not of a resnet20",
    ),
    (
        ["finetune", "--init", "{r20}", "--freeze", "layer9", "conv1", "fc.w"],
        "--freeze layer9 fc.w: no parameter of the resnet20 is named so or lies under it (its parameters are under conv1, bn1, layer1, layer2, layer3, fc)",
    ),
    (
        ["finetune", "--init", "{good}", "--freeze", "W9"],
        "--freeze W9: no parameter of the simple is named so",
    ),
    (
        ["finetune", "--init", "{r20}", "--freeze", ""],
        "argument --freeze: expected a parameter name or prefix (e.g. layer1, conv1.weight), got ''",
    ),
    (
        ["finetune", "--init", "{r20}", "--all-but-head", "--freeze", "fc"],
        "--freeze fc --all-but-head freezes every parameter; nothing would be trained",
    ),
    (
        ["finetune", "--init", "{r20}", "--head-lr", "0"],
        "argument --head-lr: must be a positive finite number, got 0",
    ),
    (
        ["finetune", "--init", "{r20}", "--backbone-lr", "nan"],
        "argument --backbone-lr: must be a positive finite number, got nan",
    ),
    (
        ["finetune", "--init", "{r20}", "--classes", "5,6", "--train-size", "1001"],
        "--train-size 1001: class 5 has 500 training images, 501 are needed for a balanced subset",
    ),
    (
        ["finetune", "--init", "{r20}", "--classes", "5,10"],
        "--classes 5,10: class 10 is not one of the Fashion-MNIST sample's classes 0 to 9",
    ),
    (
        ["finetune", "--init", "{r20}", "--out", "{afile}"],
        "--out: {afile} exists and is not a directory",
    ),
    (["finetune", "--init", "{r20}", "--resume"], "unrecognized arguments: --resume"),
    # evaluate: the parameter file
    (["evaluate"], "the following arguments are required: PARAMS"),
    (["evaluate", ""], "argument PARAMS: expected a path, got an empty string"),
    (["evaluate", "{missing}/p.pkl"], "parameter file not found: {missing}/p.pkl"),
    (["evaluate", "{dir}"], "{dir} is a directory, not a parameter file"),
    (["evaluate", "/dev/zero"], "/dev/zero is not a regular file"),
    (["evaluate", "{empty}"], "cannot read parameters: {empty}: the file is empty"),
    (["evaluate", "{afile}"], "cannot read parameters: {afile}"),
    (
        ["evaluate", "{other_ckpt}"],
        "cannot read parameters: {other_ckpt}",
    ),  # a checkpoint, not parameters
    (
        ["evaluate", "{rgb}"],
        "{rgb}: W1 has shape (30, 3, 5, 5), filters over 3 input channels, but the input (1, 28, 28) has 1",
    ),
    (
        ["evaluate", "{deep_rgb}"],
        "{deep_rgb}: W1 has shape (16, 3, 3, 3), filters over 3 input channels",
    ),
    (["evaluate", "{rgb}", "--net", "deep"], "{rgb} has no 'W7', which a DeepConvNet needs"),
    (
        ["evaluate", "{oblong}"],
        "{oblong}: W1 has shape (30, 1, 5, 3); a SimpleConvNet's filters are square",
    ),
    (
        ["evaluate", "{huge_filters}"],
        "{huge_filters} does not fit a SimpleConvNet: input (1, 28, 28) is too small for 29x29 filters",
    ),
    (
        ["evaluate", "{wrong_w2}"],
        "{wrong_w2} does not fit a SimpleConvNet for input (1, 28, 28): W2 has shape (17, 100), expected (4320, 100)",
    ),
    (
        ["evaluate", "{no_outputs}"],
        "{no_outputs}: W1, W2, W3 have shapes (30, 1, 5, 5), (4320, 100), (100, 0); no dimension may be 0",
    ),
    (
        ["evaluate", "{r20_params_only}"],
        "{r20_params_only} holds a resnet20's parameters but not its batch-norm running statistics",
    ),
    (
        ["evaluate", "{r20}"],
        "the network has 5 outputs but the Fashion-MNIST sample has 10 classes; name the 5 it was trained on with --classes",
    ),
    (
        ["evaluate", "{r20}", "--classes", "1,2"],
        "--classes 1,2 names 2 classes but the network has 5 outputs",
    ),
    (
        ["evaluate", "{r20}", "--classes", "1,2,3,4,10"],
        "--classes 1,2,3,4,10: class 10 is not one of the Fashion-MNIST sample's classes 0 to 9",
    ),
    (
        ["evaluate", "{r20}", "--net", "resnet56"],
        "{r20} holds the parameters of a resnet20, not of a resnet56",
    ),
    (["evaluate", "{r20}", "--net", "deep"], "{r20} has no 'W1', which a DeepConvNet needs"),
    # evaluate: options
    (["evaluate", "{good}", "--net", "lenet"], "argument --net: invalid choice: 'lenet'"),
    (
        ["evaluate", "{good}", "--threads", "4097"],
        "argument --threads: must be from 1 to 4,096, got 4097",
    ),
    (["evaluate", "{good}", "--test-size", "0"], "argument --test-size: must be at least 1, got 0"),
    (
        ["evaluate", "{good}", "--test-size", "1001"],
        "--test-size 1001 is larger than the 1,000 test images",
    ),
    (["evaluate", "{good}", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (
        ["evaluate", "{good}", "--dataset", "mnist", "--data-dir", "{partial_mnist}"],
        "the directory lacks t10k-labels-idx1-ubyte.gz",
    ),
    (["evaluate", "{good}", "--out", ""], "argument --out: expected a path, got an empty string"),
    (["evaluate", "{good}", "--out", "{afile}"], "--out: {afile} exists and is not a directory"),
    (
        ["evaluate", "{good}", "--out", "{afile}/sub"],
        "cannot create the output directory {afile}/sub",
    ),
    # filters
    (["filters", "{good}", "--nx", "0"], "argument --nx: must be from 1 to 256, got 0"),
    (["filters", "{good}", "--nx", "100000"], "argument --nx: must be from 1 to 256, got 100000"),
    (["filters", "{good}", "--key", "W9"], "{good} has no 'W9' (it holds W1, b1, W2, b2, W3, b3)"),
    (
        ["filters", "{good}", "--key", "W2"],
        "W2 in {good} has shape (4320, 100); convolution filters have 4 dimensions",
    ),
    (["filters", "{no_filters}"], "W1 in {no_filters} has shape (0, 1, 5, 5): no filters to draw"),
    (
        ["filters", "{many_filters}"],
        "holds 4,097 filters, 513 rows of --nx 8; a picture holds at most 4,096 filters",
    ),
    (
        ["filters", "{good}", "--nx", "1", "-o", "{dir}/x.png"],
        None,
    ),  # 30 rows of 1: fine (not an error)
    (["filters", "{empty}"], "cannot read parameters: {empty}: the file is empty"),
    (
        ["filters", "{mlp}", "--key", "W1"],
        "W1 in {mlp} has shape (784, 5); convolution filters have 4 dimensions",
    ),
    (
        ["filters", "{r20}", "--key", "W1"],
        "{r20} has no 'W1' (it holds conv1.weight, bn1.weight, bn1.bias, ",
    ),
    (["filters", "{r20}", "--nx", "1", "-o", "{dir}/r.png"], None),  # conv1.weight by default
    (["filters", "{good}", "-o", ""], "argument -o/--output: expected a path, got an empty string"),
    pytest.param(
        ["filters", "{good}", "-o", "{dir}/picture.bmp"],
        "-o {dir}/picture.bmp: the file name must end in a picture format's suffix (.png",
        marks=plots,
    ),
    pytest.param(
        ["filters", "{good}", "-o", "{dir}/picture"],
        "-o {dir}/picture: the file name must end in",
        marks=plots,
    ),
    pytest.param(
        ["filters", "{good}", "-o", "{dir}/tex.pgf"],
        "-o {dir}/tex.pgf: the file name must end in",
        marks=plots,
    ),
    pytest.param(
        ["filters", "{good}", "-o", "{png_dir}"],
        "-o {png_dir} is a directory; it must name a file",
        marks=plots,
    ),
    pytest.param(
        ["filters", "{good}", "-o", "{afile}/x.png"],
        "cannot create the output directory {afile}",
        marks=plots,
    ),
    # summary
    (["summary", "--net", "lenet"], "argument --net: invalid choice: 'lenet'"),
    (
        ["summary", "--net", "auto"],
        "--net auto recognises the network of a parameter file: give PARAMS",
    ),
    (
        ["summary", "--input-shape", "1,28"],
        "argument --input-shape: expected three positive integers C,H,W",
    ),
    (
        ["summary", "--input-shape", "1,-2,3"],
        "argument --input-shape: expected three positive integers C,H,W",
    ),
    (
        ["summary", "--input-shape", "1,0,28"],
        "argument --input-shape: each of C,H,W must be 1 to 65,536, got '1,0,28'",
    ),
    (
        ["summary", "--input-shape", "1,4,4"],
        "--net simple: input (1, 4, 4) is too small for 5x5 filters",
    ),
    (
        ["summary", "--net", "resnet50", "--input-shape", "1,224,224", "--num-classes", "0"],
        "argument --num-classes: must be from 1 to 100,000, got 0",
    ),
    (["summary", "--batch-size", "0"], "argument --batch-size: must be from 1 to 1,048,576, got 0"),
    (["summary", "--depth", "0"], "argument --depth: must be from 1 to 64, got 0"),
    (
        ["summary", "{good}", "--num-classes", "5"],
        "--num-classes describes a network built by --net",
    ),
    (
        ["summary", "{good}", "--input-shape", "1,20,20"],
        "{good} does not fit a SimpleConvNet for input (1, 20, 20): W2 has shape (4320, 100), expected (1920, 100)",
    ),
    (["summary", "{rgb}", "--net", "deep"], "{rgb} has no 'W7', which a DeepConvNet needs"),
    (["summary", "{r20}", "--input-shape", "3,28,28"], "conv1.weight"),
    (["summary", "{empty}"], "cannot read parameters: {empty}: the file is empty"),
    (["summary", "{r20}", "--input-shape", "1,28,28"], None),
    # info and the command itself
    (["info", "--data-dir", ""], "argument --data-dir: expected a path, got an empty string"),
    (["info", "--data-dir"], "argument --data-dir: expected one argument"),
    (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    (["train", "extra"], "unrecognized arguments: extra"),
]


@pytest.mark.parametrize(("argv", "message"), ABSURD)
def test_absurd_option_values_are_one_line_usage_errors(argv, message, files, tmp_path):
    argv = [arg.format(**files) if "{" in arg else arg for arg in argv]
    out_dir = tmp_path / "run"
    if argv[0] in ("train", "finetune"):
        argv = argv[:1] + TINY + ["--epochs", "1"] + argv[1:]
        if "--out" not in argv:
            argv += ["--out", str(out_dir)]
    before = {path: sorted(os.listdir(path)) for path in (files["dir"], files["blocked_out"])}
    code, stdout, stderr = run(argv)
    if message is None:  # a control row: the limit is not hit
        assert code == 0, stderr
        return
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    assert stdout == ""
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr  # exactly one line ...
    assert stderr.startswith(("error: ", f"tinyconv {argv[0]}: error: ", "tinyconv: error: "))
    assert message.format(**files) in stderr  # ... naming the option or file and the value
    assert not out_dir.exists()  # a refused command creates nothing
    assert before == {path: sorted(os.listdir(path)) for path in before}


def test_absurd_values_through_the_real_entry_point(files, tmp_path):
    """The same checks from a shell: one line, exit code 2, no traceback, nothing created."""
    out_dir = tmp_path / "run"
    for argv, message in [
        (["train", "--threads", "10000"], "argument --threads: must be from 1 to 4,096"),
        (["train", "--seed", "-1"], "argument --seed: must be from 0"),
        (
            ["train", "--batch-size", "10000000", "--out", str(out_dir)],
            "--batch-size 10,000,000 is larger",
        ),
        (
            ["train", "--checkpoint", f"{files['missing']}/run.ckpt", "--out", str(out_dir)],
            "does not exist",
        ),
        (
            [
                "train",
                "--resume",
                "--checkpoint",
                files["other_ckpt"],
                "--out",
                str(out_dir),
                "--train-size",
                "300",
            ],
            "--resume: cannot continue from the checkpoint",
        ),
        (["evaluate", files["rgb"]], "filters over 3 input channels"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "tinyconv", *argv], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert not out_dir.exists()


# ----------------------------------------------------------------------------------------------
# train


def test_train_prints_epochs_and_final_accuracy(trained):
    _, code, stdout, stderr = trained
    assert code == 0, stderr
    assert (
        "Training SimpleConvNet (float32) on the Fashion-MNIST sample: 300 training and 100 test images"
        in stdout
    )
    assert "Adam lr 0.001, batch 100, 2 epochs" in stdout
    for epoch in (1, 2):
        assert f"epoch {epoch}/2: loss " in stdout
    assert "train acc" in stdout
    assert "test acc" in stdout
    assert " s\n" in stdout
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
    assert type(params) is dict
    assert sorted(params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert params["W1"].shape == (30, 1, 5, 5)
    assert params["W2"].shape == (4320, 100)
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in params.values())


def test_history_json_content(trained):
    history = json.loads((trained[0] / "history.json").read_text())
    assert history["status"] == "completed"
    assert history["tinyconv_version"] == tinyconv.__version__
    config_now = tinyconv.config()
    assert history["config"]["num_threads"] == history["settings"]["threads"] == 1
    assert {k: v for k, v in history["config"].items() if k != "num_threads"} == {
        k: v for k, v in config_now.items() if k != "num_threads"
    }
    settings = history["settings"]
    assert settings["net"] == "simple"
    assert settings["network"] == "SimpleConvNet"
    assert (settings["dataset"], settings["train_size"], settings["test_size"]) == (
        "sample",
        300,
        100,
    )
    assert (settings["epochs"], settings["batch_size"], settings["optimizer"], settings["lr"]) == (
        2,
        100,
        "Adam",
        0.001,
    )
    assert (settings["seed"], settings["dtype"], settings["eval_samples"]) == (0, "float32", 1000)
    assert (settings["lr_schedule"], settings["sampling"], settings["classes"]) == (
        "constant",
        "replacement",
        None,
    )
    assert settings["params_file"] == "params.pkl"
    assert settings["class_names"] == list(FASHION_MNIST_CLASSES)
    assert [record["epoch"] for record in history["epochs"]] == [1, 2]
    for record, train_acc, test_acc, loss in zip(
        history["epochs"], history["train_acc"], history["test_acc"], history["loss"]
    ):
        assert record["train_acc"] == train_acc
        assert record["test_acc"] == test_acc
        assert record["loss"] == loss
        assert 0 < loss < 10
        assert record["seconds"] > 0
        assert 0 <= train_acc <= 1
        assert 0 <= test_acc <= 1
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
    code, stdout, stderr = run(
        [
            "train",
            "--epochs",
            "1",
            *TINY,
            "--quiet",
            "--dtype",
            "float64",
            "--optimizer",
            "momentum",
            "--lr",
            "0.01",
            "--threads",
            "1",
        ]
    )
    assert code == 0, stderr
    assert stdout == ""
    assert stderr == ""
    assert tinyconv.get_num_threads() == threads_before  # --threads does not outlive main()
    (run_dir,) = (tmp_path / "runs").iterdir()  # runs/<date-time>/
    history = json.loads((run_dir / "history.json").read_text())
    assert history["settings"]["optimizer"] == "Momentum"
    assert history["settings"]["threads"] == 1
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
    # An explicit --data-dir is the only place looked in: no search, no download.
    code, stdout, stderr = run(
        ["train", "--dataset", "mnist", "--data-dir", str(empty), "--out", str(out_dir)]
    )
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1
    assert (
        f"error: The MNIST data set cannot be read from --data-dir '{empty}': the directory "
        f"holds none of its 4 files" in stderr
    )
    assert offline == []
    assert not out_dir.exists()

    code, stdout, stderr = run(["train", "--dataset", "mnist", "--out", str(out_dir)])
    assert code == 2
    assert "The MNIST data set was not found" in stderr
    assert "--data-dir DIR" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert offline, "a download should have been attempted (and failed)"
    assert not out_dir.exists()  # no empty run directory is left behind

    offline.clear()
    code, _, stderr = run(
        ["train", "--dataset", "fashion-mnist", "--no-download", "--out", str(out_dir)]
    )
    assert code == 2
    assert "The Fashion-MNIST data set was not found" in stderr
    assert "download=False" in stderr
    assert offline == []


def test_nan_loss_stops_with_a_message(tmp_path):
    code, _, stderr = run(
        [
            "train",
            "--epochs",
            "1",
            *TINY,
            "--optimizer",
            "SGD",
            "--lr",
            "1e30",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1
    assert "training loss became" in stderr
    assert "--lr" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "params.pkl").exists()
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["status"] == "failed"
    assert "training loss became" in history["error"]


def test_checkpoint_write_failing_mid_run_is_recorded_as_failed(tmp_path, monkeypatch):
    # The checkpoint's directory passed the check before training; then the disk fills up.
    def disk_full(self, path):
        raise OSError(
            28, "No space left on device", os.path.join(os.path.dirname(path), ".run.ckpt.x1y2.tmp")
        )

    monkeypatch.setattr(Trainer, "save_checkpoint", disk_full)
    checkpoint = tmp_path / "run.ckpt"
    code, _, stderr = run(
        [
            "train",
            "--epochs",
            "2",
            *TINY,
            "--out",
            str(tmp_path / "run"),
            "--checkpoint",
            str(checkpoint),
        ]
    )
    assert code == 1
    assert "Traceback" not in stderr
    reason = f"cannot write the checkpoint {checkpoint}: No space left on device"
    assert stderr.splitlines()[0] == f"error: {reason}"  # the checkpoint, not its temporary file
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["status"] == "failed"
    assert history["error"] == reason
    assert len(history["epochs"]) == 1
    assert not (tmp_path / "run" / "params.pkl").exists()


def test_out_of_memory_during_training_is_a_clear_error(tmp_path, monkeypatch):
    calls = []

    def gradient_out_of_memory(self, x, t):
        calls.append(1)
        raise MemoryError

    monkeypatch.setattr(SimpleConvNet, "gradient", gradient_out_of_memory)
    code, _, stderr = run(["train", "--epochs", "1", *TINY, "--out", str(tmp_path)])
    assert code == 2
    assert "Traceback" not in stderr
    assert len(calls) == 1
    reason = "out of memory while training on batches of 100 images"
    assert stderr.splitlines()[0] == f"error: {reason}"
    assert "--batch-size" in stderr
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["status"] == "failed"
    assert history["error"] == reason
    assert not (tmp_path / "params.pkl").exists()


def test_train_help_states_what_a_failed_run_leaves():
    _, stdout, _ = run(["train", "--help"])
    assert "nothing is created" in stdout
    assert '"status": "failed"' in stdout
    assert "no params.pkl" in stdout


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
    assert "nterrupted" in stderr
    assert "Traceback" not in stderr
    assert len(calls) == 2  # stopped right after the step in progress
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["status"] == "interrupted"
    assert len(history["train_loss"]) == 2
    assert (tmp_path / "params.pkl").exists()


def test_ctrl_c_outside_training_exits_130(monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tinyconv.datasets.load_sample", interrupted)
    code, _, stderr = run(["train"])
    assert code == 130
    assert "Interrupted" in stderr
    assert "Traceback" not in stderr


def test_checkpoint_and_resume(tmp_path):
    checkpoint = str(tmp_path / "run.ckpt")
    code, _, _ = run(
        [
            "train",
            "--epochs",
            "1",
            *TINY,
            "--out",
            str(tmp_path / "a"),
            "--checkpoint",
            checkpoint,
            "--quiet",
        ]
    )
    assert code == 0
    assert os.path.exists(checkpoint)
    code, stdout, stderr = run(
        [
            "train",
            "--epochs",
            "2",
            *TINY,
            "--out",
            str(tmp_path / "a"),
            "--checkpoint",
            checkpoint,
            "--resume",
        ]
    )
    assert code == 0, stderr
    assert "resumed from" in stdout
    assert "\nepoch 2/2: " in stdout
    assert "\nepoch 1/2: " not in stdout
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [record["epoch"] for record in history["epochs"]] == [1, 2]
    assert len(history["train_loss"]) == 6

    code, _, stderr = run(["train", "--resume"])
    assert code == 2
    assert "--resume needs --checkpoint" in stderr


def test_train_size_larger_than_the_data_set():
    code, _, stderr = run(["train", "--train-size", "5001"])
    assert code == 2
    assert "5,000" in stderr
    assert "Traceback" not in stderr


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
    code, stdout, stderr = run(
        ["evaluate", str(out_dir / "params.pkl"), "--out", str(tmp_path), "--threads", "1"]
    )
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
    assert cm.shape == (10, 10)
    assert cm.sum() == 1000
    assert (cm.sum(axis=1) == 100).all()
    assert [row["name"] for row in report["per_class"]] == list(FASHION_MNIST_CLASSES)
    assert [row["correct"] for row in report["per_class"]] == list(np.diag(cm))
    if have_matplotlib():
        assert_real_picture(tmp_path / "confusion_matrix.png")


def test_evaluate_writes_next_to_params_by_default(trained):
    out_dir = trained[0]
    code, _, _ = run(
        ["evaluate", str(out_dir / "params.pkl"), "--test-size", "50", "--threads", "1"]
    )
    assert code == 0
    assert (out_dir / "evaluation.json").exists()
    assert json.loads((out_dir / "evaluation.json").read_text())["test_size"] == 50


def test_evaluate_reads_a_dlfs_pickle(tmp_path):
    # What DLfS's SimpleConvNet.save_params writes: pickle.dump of a dict of float64 arrays.
    reference = SimpleConvNet(dtype=np.float64, seed=7)
    dlfs_params = {
        key: np.array(value, dtype=np.float64) for key, value in reference.params.items()
    }
    path = tmp_path / "dlfs_params.pkl"
    with open(path, "wb") as handle:
        pickle.dump(dlfs_params, handle, protocol=2)
    code, stdout, stderr = run(
        ["evaluate", str(path), "--test-size", "200", "--dtype", "float64", "--threads", "1"]
    )
    assert code == 0, stderr
    x_test, t_test = _sample_test_set()
    with one_thread():
        expected = reference.accuracy(x_test[:200], t_test[:200])
    assert f"SimpleConvNet from {path}" in stdout
    assert f"accuracy: {expected:.4f}" in stdout


@pytest.mark.parametrize(
    ("params", "argv", "message"),
    [
        ({"W1": np.zeros((2, 2)), "b1": np.zeros(2)}, [], "cannot tell which network"),
        ("simple", ["--net", "deep"], "which a DeepConvNet needs"),
        (
            {f"{k}{i}": np.zeros((3, 3)) for k in "Wb" for i in (1, 2, 3)},
            [],
            "SimpleConvNet needs 4-D",
        ),
        ("five classes", [], "5 outputs but the Fashion-MNIST sample has 10 classes"),
    ],
)
def test_evaluate_explains_params_that_do_not_fit(tmp_path, params, argv, message):
    if params == "simple":
        params = {key: np.array(value) for key, value in SimpleConvNet(seed=0).params.items()}
    elif params == "five classes":
        params = {
            key: np.array(value)
            for key, value in SimpleConvNet(output_size=5, seed=0).params.items()
        }
    path = tmp_path / "p.pkl"
    with open(path, "wb") as handle:
        pickle.dump(params, handle)
    code, _, stderr = run(["evaluate", str(path), *argv])
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr


def test_evaluate_missing_or_corrupt_file(tmp_path):
    code, _, stderr = run(["evaluate", str(tmp_path / "none.pkl")])
    assert code == 2
    assert "parameter file not found" in stderr
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04garbage")
    code, _, stderr = run(["evaluate", str(corrupt)])
    assert code == 2
    assert "cannot read parameters" in stderr
    assert "Traceback" not in stderr


# ----------------------------------------------------------------------------------------------
# filters and info


@needs_matplotlib
def test_filters_draws_w1(trained, tmp_path):
    output = tmp_path / "pictures" / "w1.png"
    code, stdout, stderr = run(["filters", str(trained[0] / "params.pkl"), "-o", str(output)])
    assert code == 0, stderr
    assert f"Wrote {output}: 30 filters of 5x5" in stdout
    assert_real_picture(output, 600, 300)
    code, _, _ = run(
        ["filters", str(trained[0] / "params.pkl"), "-o", str(tmp_path / "ten.png"), "--nx", "10"]
    )
    assert code == 0
    assert_real_picture(tmp_path / "ten.png", 750, 225)  # 3 rows of 10


def test_filters_rejects_params_without_conv_filters(tmp_path):
    path = tmp_path / "mlp.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"W1": np.zeros((784, 50)), "b1": np.zeros(50)}, handle)
    code, _, stderr = run(["filters", str(path), "-o", str(tmp_path / "x.png")])
    assert code == 2
    assert "4 dimensions" in stderr
    code, _, stderr = run(["filters", str(path), "--key", "W9", "-o", str(tmp_path / "x.png")])
    assert code == 2
    assert "has no 'W9'" in stderr
    assert not (tmp_path / "x.png").exists()


def test_info(tmp_path, monkeypatch):
    monkeypatch.setattr(_fetch, "user_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv(_fetch.ENV_VAR, str(tmp_path / "root"))
    code, stdout, _ = run(["info"])
    assert code == 0
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tinyconv.show_config()
    assert stdout.startswith(buffer.getvalue())  # exactly what show_config() prints, first
    assert "searched in this order" in stdout
    assert f"mnist: not on disk; would be downloaded into {tmp_path / 'cache' / 'mnist'}" in stdout
    assert f"TINYCONV_DATA: {tmp_path / 'root' / 'mnist'}" in stdout
    code, stdout, _ = run(["info", "--data-dir", str(tmp_path / "mine")])
    assert code == 0
    assert f"with --data-dir, read from {tmp_path / 'mine'} only" in stdout
    assert "mnist: not readable: --data-dir lacks files" in stdout
    assert f"data_dir: {tmp_path / 'mine'} (no such directory)" in stdout
    assert "TINYCONV_DATA" not in stdout
    assert "would be downloaded" not in stdout
    (tmp_path / "a-file").write_text("")
    _, stdout, _ = run(["info", "--data-dir", str(tmp_path / "a-file")])
    assert f"data_dir: {tmp_path / 'a-file'} (not a directory)" in stdout
    assert "fashion-mnist:" in stdout
    assert "sample:" in stdout
    try:
        import tqdm
    except ImportError:
        assert 'tqdm (progress bars): not installed (pip install "tinyconv[progress]")' in stdout
    else:
        assert f"tqdm (progress bars): {tqdm.__version__}" in stdout
    if have_matplotlib():
        import matplotlib

        assert f"matplotlib (pictures): {matplotlib.__version__}" in stdout


def test_partial_copy_on_the_search_path_is_reported(tmp_path, offline, monkeypatch, files):
    monkeypatch.setenv(_fetch.ENV_VAR, str(tmp_path / "root"))
    partial = write_fake_mnist(tmp_path / "root" / "mnist", skip={"train-images-idx3-ubyte.gz"})
    write_fake_mnist(tmp_path / "cache" / "mnist")
    code, stdout, stderr = run(
        [
            "evaluate",
            files["good"],
            "--dataset",
            "mnist",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0, stderr
    assert stderr == (
        f"warning: MNIST: passed over TINYCONV_DATA {partial}, which lacks "
        f"train-images-idx3-ubyte.gz; reading the data set from "
        f"{tmp_path / 'cache' / 'mnist'} instead\n"
    )
    assert "(10 test images)" in stdout
    assert offline == []


@pytest.mark.parametrize(
    ("command", "n_train", "n_test", "message"),
    [
        ("train", 0, 10, "MNIST holds no training images"),
        ("train", 12, 0, "MNIST holds no test images"),
        ("evaluate", 12, 0, "MNIST holds no test images"),  # fae188c: ZeroDivisionError
    ],
)
def test_a_data_set_without_images_is_a_usage_error(
    tmp_path, files, command, n_train, n_test, message
):
    data_dir = write_fake_mnist(tmp_path / "mnist", n_train=n_train, n_test=n_test)
    argv = (
        ["train", *TINY[4:], "--epochs", "1", "--batch-size", "4"]
        if command == "train"
        else ["evaluate", files["good"]]
    )
    code, _, stderr = run(
        [*argv, "--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(tmp_path / "out")]
    )
    assert code == 2
    assert stderr == f"error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_info_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, stdout, _ = run(["info"])
    assert code == 0
    assert 'matplotlib (pictures): not installed (pip install "tinyconv[plot]")' in stdout


def test_cli_exports():
    assert set(cli.__all__) >= {"main", "build_parser"}


# ----------------------------------------------------------------------------------------------
# ResNets, --classes and finetune


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """A ResNet-20 trained for one epoch on 300 images of classes 5-9, with the ResNet defaults."""
    out_dir = tmp_path_factory.mktemp("resnet-run")
    code, stdout, stderr = run(
        [
            "train",
            "--net",
            "resnet20",
            "--classes",
            "5,6,7,8,9",
            "--epochs",
            "1",
            *TINY,
            "--out",
            str(out_dir),
        ]
    )
    return out_dir, code, stdout, stderr


def test_train_a_resnet_with_its_defaults(resnet_run):
    out_dir, code, stdout, stderr = resnet_run
    assert code == 0, stderr
    assert (
        "Training resnet20 (float32) on the Fashion-MNIST sample (classes 5,6,7,8,9): 300 training and "
        "100 test images"
    ) in stdout
    assert "Momentum lr 0.1 (cosine schedule), batch 128, 1 epoch" in stdout
    assert "Wrote params.npz, history.json" in stdout
    assert "params.npz" in os.listdir(out_dir)
    assert "params.pkl" not in os.listdir(out_dir)
    settings = json.loads((out_dir / "history.json").read_text())["settings"]
    assert (settings["net"], settings["network"], settings["optimizer"], settings["lr"]) == (
        "resnet20",
        "ResNet",
        "Momentum",
        0.1,
    )
    assert (settings["batch_size"], settings["lr_schedule"], settings["sampling"]) == (
        128,
        "cosine",
        "permutation",
    )
    assert settings["classes"] == [5, 6, 7, 8, 9]
    assert settings["class_names"][0] == FASHION_MNIST_CLASSES[5]
    assert settings["params_file"] == "params.npz"
    assert settings["command"] == "train"
    state = np.load(out_dir / "params.npz")
    assert state["fc.weight"].shape == (5, 64)
    assert state["conv1.weight"].shape == (16, 1, 3, 3)
    assert "layer3.2.bn2.running_var" in state.files
    assert state["bn1.num_batches_tracked"] == 3


@pytest.mark.parametrize(
    ("optimizer", "lr"), [("adam", 0.001), ("RMSprop", 0.001), ("nesterov", 0.1)]
)
def test_a_resnet_with_an_adaptive_optimizer_gets_an_adaptive_rate(tmp_path, optimizer, lr):
    # 0.1 is a momentum-SGD rate; Adam or RMSprop at 0.1 would diverge.
    code, _stdout, stderr = run(
        [
            "train",
            "--net",
            "resnet20",
            "--optimizer",
            optimizer,
            "--epochs",
            "1",
            "--train-size",
            "64",
            "--test-size",
            "32",
            "--seed",
            "0",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0, stderr
    assert json.loads((tmp_path / "run" / "history.json").read_text())["settings"]["lr"] == lr


@needs_matplotlib
def test_resnet_pictures_show_its_3x3_filters(resnet_run, tmp_path):
    out_dir = resnet_run[0]
    assert_real_picture(out_dir / "filters_after.png")
    code, stdout, stderr = run(
        ["filters", str(out_dir / "params.npz"), "-o", str(tmp_path / "f.png")]
    )
    assert code == 0, stderr
    assert f"Wrote {tmp_path / 'f.png'}: 16 filters of 3x3" in stdout
    assert_real_picture(tmp_path / "f.png")


def test_classes_relabel_in_the_given_order(monkeypatch, tmp_path):
    seen = {}
    original = Trainer.__init__

    def record(self, network, x_train, t_train, x_test, t_test, *args, **kwargs):
        seen.update(t_train=np.array(t_train), t_test=np.array(t_test), kwargs=kwargs)
        original(self, network, x_train, t_train, x_test, t_test, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", record)
    code, _, stderr = run(
        [
            "train",
            "--classes",
            "7,2",
            "--epochs",
            "1",
            *TINY,
            "--out",
            str(tmp_path),
            "--quiet",
            "--lr-schedule",
            "step",
            "--sampling",
            "permutation",
            "--batch-size",
            "50",
        ]
    )
    assert code == 0, stderr
    (_x_train, t_train), (_x_test, _t_test) = load_sample(flatten=False)
    expected = np.where(t_train[np.isin(t_train, [7, 2])] == 7, 0, 1)[:300]
    np.testing.assert_array_equal(seen["t_train"], expected)
    assert set(seen["t_test"]) == {0, 1}
    assert (seen["kwargs"]["lr_schedule"], seen["kwargs"]["sampling"]) == ("step", "permutation")
    with open(tmp_path / "params.pkl", "rb") as handle:
        assert pickle.load(handle)["W3"].shape == (100, 2)  # a DLfS network keeps its pickle
    settings = json.loads((tmp_path / "history.json").read_text())["settings"]
    assert (
        settings["classes"],
        settings["lr_schedule"],
        settings["optimizer"],
        settings["lr"],
    ) == ([7, 2], "step", "Adam", 0.001)


def test_evaluate_a_resnet_with_the_classes_of_its_run(resnet_run, tmp_path):
    out_dir = resnet_run[0]
    code, stdout, stderr = run(
        ["evaluate", str(out_dir / "params.npz"), "--threads", "1", "--out", str(tmp_path)]
    )
    assert code == 0, stderr
    assert "resnet20 from" in stdout
    assert "(500 test images of classes 5,6,7,8,9)" in stdout
    assert "classes 5,6,7,8,9 (from history.json)" in stdout
    network = network_from_params(str(out_dir / "params.npz"))
    x_test, t_test = _sample_test_set()
    keep = t_test >= 5
    with one_thread():
        expected = network.accuracy(x_test[keep], t_test[keep] - 5)
    assert f"accuracy: {expected:.4f}" in stdout
    for label in range(5, 10):
        assert f"{label} {FASHION_MNIST_CLASSES[label]}" in stdout
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["classes"] == [5, 6, 7, 8, 9]
    assert report["net"] == "resnet20"
    assert report["per_class"][0]["label"] == 5
    assert report["per_class"][0]["output"] == 0
    assert np.array(report["confusion_matrix"]).shape == (5, 5)


def test_evaluate_a_resnet_elsewhere_needs_its_classes(resnet_run, tmp_path):
    copy = tmp_path / "copy.npz"
    copy.write_bytes((resnet_run[0] / "params.npz").read_bytes())
    (tmp_path / "history.json").write_text('{"settings": [1, 2]}')  # not the run's: ignored
    code, _, stderr = run(["evaluate", str(copy), "--threads", "1"])
    assert code == 2
    assert "name the 5 it was trained on with --classes" in stderr
    code, stdout, stderr = run(
        ["evaluate", str(copy), "--threads", "1", "--classes", "9,8,7,6,5", "--test-size", "50"]
    )
    assert code == 0, stderr
    assert "classes 9,8,7,6,5 (from --classes)" in stdout
    assert "(50 test images of classes 9,8,7,6,5)" in stdout
    assert "\n9 Ankle boot" in stdout


def test_finetune_a_resnet_on_other_classes(resnet_run, tmp_path):
    init = resnet_run[0] / "params.npz"
    code, stdout, stderr = run(
        [
            "finetune",
            "--init",
            str(init),
            "--classes",
            "0,1,2",
            "--train-size",
            "60",
            "--test-size",
            "60",
            "--epochs",
            "1",
            "--all-but-head",
            "--seed",
            "3",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, stderr
    assert "New head for 3 classes (the network had 5 outputs)" in stdout
    assert "Frozen: 57 parameter arrays of 59" in stdout
    assert "Momentum lr 0.01, head fc 0.1 (cosine schedule), batch 60, 1 epoch" in stdout
    before, after = np.load(init), np.load(tmp_path / "params.npz")
    assert after["fc.weight"].shape == (3, 64)
    frozen = [key for key in before.files if key.endswith("weight") and not key.startswith("fc")]
    assert all(np.array_equal(before[key], after[key]) for key in frozen)
    assert not np.array_equal(
        before["bn1.running_mean"], after["bn1.running_mean"]
    )  # statistics adapt
    settings = json.loads((tmp_path / "history.json").read_text())["settings"]
    assert (settings["command"], settings["init"], settings["new_head"], settings["frozen"]) == (
        "finetune",
        str(init),
        True,
        57,
    )
    assert (settings["backbone_lr"], settings["head_lr"], settings["lr"]) == (0.01, 0.1, 0.01)
    assert (settings["classes"], settings["train_size"], settings["test_size"]) == (
        [0, 1, 2],
        60,
        60,
    )
    code, stdout, _ = run(
        ["evaluate", str(tmp_path / "params.npz"), "--threads", "1", "--test-size", "30"]
    )
    assert code == 0
    assert "classes 0,1,2 (from history.json)" in stdout


def test_finetune_freezes_prefixes_and_keeps_a_fitting_head(resnet_run, tmp_path):
    init = resnet_run[0] / "params.npz"
    argv = [
        "finetune",
        "--init",
        str(init),
        "--classes",
        "0,1,2,3,4",
        "--train-size",
        "50",
        "--test-size",
        "50",
        "--epochs",
        "1",
        "--freeze",
        "conv1",
        "bn1",
        "--freeze",
        "layer1",
        "--backbone-lr",
        "0.02",
        "--head-lr",
        "0.05",
        "--optimizer",
        "sgd",
        "--lr-schedule",
        "constant",
        "--quiet",
        "--threads",
        "1",
    ]
    code, stdout, stderr = run([*argv, "--out", str(tmp_path / "a")])
    assert code == 0
    assert stdout == ""
    assert stderr == ""
    before, after = np.load(init), np.load(tmp_path / "a" / "params.npz")
    assert np.array_equal(before["layer1.2.conv2.weight"], after["layer1.2.conv2.weight"])
    assert not np.array_equal(before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"])
    assert not np.array_equal(before["fc.weight"], after["fc.weight"])  # kept (5 outputs), trained
    settings = json.loads((tmp_path / "a" / "history.json").read_text())["settings"]
    assert (settings["new_head"], settings["freeze"], settings["optimizer"]) == (
        False,
        ["conv1", "bn1", "layer1"],
        "SGD",
    )
    assert (settings["backbone_lr"], settings["head_lr"], settings["lr_schedule"]) == (
        0.02,
        0.05,
        "constant",
    )
    code, _, _ = run([*argv, "--new-head", "--seed", "1", "--out", str(tmp_path / "b")])
    assert code == 0
    assert json.loads((tmp_path / "b" / "history.json").read_text())["settings"]["new_head"] is True
    code, _, _ = run([*argv, "--new-head", "--seed", "1", "--out", str(tmp_path / "c")])
    np.testing.assert_array_equal(
        np.load(tmp_path / "b" / "params.npz")["fc.weight"],
        np.load(tmp_path / "c" / "params.npz")["fc.weight"],
    )  # --seed repeats a run


def test_finetune_a_dlfs_network(trained, tmp_path):
    code, stdout, stderr = run(
        [
            "finetune",
            "--init",
            str(trained[0] / "params.pkl"),
            "--classes",
            "0,1",
            "--train-size",
            "40",
            "--test-size",
            "40",
            "--epochs",
            "1",
            "--freeze",
            "W1",
            "b1",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, stderr
    assert "Adam lr 0.0001, head W3 b3 0.001, batch 40" in stdout
    with open(tmp_path / "params.pkl", "rb") as handle:
        params = pickle.load(handle)
    with open(trained[0] / "params.pkl", "rb") as handle:
        init = pickle.load(handle)
    assert params["W3"].shape == (100, 2)
    assert np.array_equal(params["W1"], init["W1"])
    assert not np.array_equal(params["W2"], init["W2"])


def test_balanced_subset_is_balanced_and_seeded():
    t = np.repeat(np.arange(3), 10)[::-1].copy()
    x = np.arange(30)
    picked_x, picked_t = cli._balanced_subset(x, t, 7, (5, 6, 7), seed=1)
    assert list(np.bincount(picked_t)) == [3, 2, 2]
    assert list(picked_x) == sorted(picked_x)
    again_x, _ = cli._balanced_subset(x, t, 7, (5, 6, 7), seed=1)
    other_x, _ = cli._balanced_subset(x, t, 7, (5, 6, 7), seed=2)
    assert list(again_x) == list(picked_x)
    assert list(other_x) != list(picked_x)


def test_filters_needs_a_first_convolution(tmp_path):
    path = write_params(
        tmp_path / "head.pkl", {"fc.weight": np.zeros((2, 3)), "fc.bias": np.zeros(2)}
    )
    code, _, stderr = run(["filters", str(path), "-o", str(tmp_path / "x.png")])
    assert code == 2
    assert (
        "has neither 'W1' nor 'conv1.weight' (it holds fc.weight, fc.bias); name the filters with --key"
        in stderr
    )


def test_a_safetensors_file_without_the_package_is_a_clean_error(resnet_run, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    path = tmp_path / "r.safetensors"
    network_from_params(str(resnet_run[0] / "params.npz")).save_params(str(path))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    code, _, stderr = run(["evaluate", str(path), "--classes", "5,6,7,8,9"])
    assert code == 2
    assert stderr.count("\n") == 1
    assert "Traceback" not in stderr
    assert (
        f"cannot read parameters from {path}: reading a .safetensors file needs the optional 'safetensors'"
        in stderr
    )


def test_finetune_help_documents_its_options():
    _, stdout, _ = run(["finetune", "--help"])
    flat = " ".join(stdout.split())
    for text in [
        "--init",
        "--freeze",
        "--all-but-head",
        "--new-head",
        "--backbone-lr",
        "--head-lr",
        "--classes",
        "--train-size",
        "--lr-schedule",
        "(default: 10)",
        "class-balanced",
    ]:
        assert text in flat, text


# ----------------------------------------------------------------------------------------------
# summary


def test_summary_of_resnet50_by_name_is_torchvisions():
    code, stdout, stderr = run(["summary", "--net", "resnet50", "--depth", "2"])
    assert code == 0
    assert stderr == ""
    assert stdout.startswith("ResNet (float32), input (1, 3, 224, 224)\n")
    assert "parameters: 25,557,032 (25.56 M)" in stdout
    assert (
        "multiply-adds (convolutions and fully connected layers): 4,089,184,256 (4.09 G)" in stdout
    )
    assert "\nlayer4.2 " in stdout
    assert "layer4.2.conv1" not in stdout
    assert "\nfc        Linear            (1, 1000)           2,049,000      2,048,000" in stdout


def test_summary_of_the_default_network_and_of_options():
    code, stdout, _ = run(["summary"])
    assert code == 0
    assert stdout.splitlines()[0] == "SimpleConvNet (float32), input (1, 1, 28, 28)"
    assert "parameters: 433,890" in stdout
    assert "multiply-adds (convolutions and fully connected layers): 865,000" in stdout
    code, stdout, _ = run(
        [
            "summary",
            "--net",
            "deep",
            "--input-shape",
            "3,32,32",
            "--num-classes",
            "100",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    network = DeepConvNet(input_dim=(3, 32, 32), output_size=100, seed=0)
    assert f"parameters: {sum(v.size for v in network.params.values()):,} " in stdout
    assert f"{network.summary(batch_size=4).total_multiply_adds:,}" in stdout
    assert "(4, 100)" in stdout
    code, stdout, _ = run(
        ["summary", "--net", "resnet20"]
    )  # He et al.'s 0.27M, at the paper's 32x32
    assert code == 0
    assert "input (1, 1, 32, 32)" in stdout
    assert "parameters: 269,434 (269.43 k)" in stdout


def test_summary_of_a_parameter_file(files):
    code, stdout, _ = run(["summary", str(files["r20"])])
    assert code == 0
    network = network_from_params(files["r20"])
    assert stdout.strip() == str(network.summary()).strip()
    assert "input (1, 1, 32, 32)" in stdout
    assert "(1, 5)" in stdout
    code, stdout, _ = run(["summary", str(files["good"]), "--input-shape", "1,28,28"])
    assert code == 0
    assert "parameters: 433,890" in stdout
