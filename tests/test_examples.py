"""Every script in examples/ runs, with short settings, and prints the book's numbers.

Each example runs in a fresh interpreter (as a reader would run it) inside a temporary directory,
where it writes its files; the display variables are removed, so the scripts must cope without a
window system.  The checks read the printed arrays with whitespace normalised, so NumPy's column
alignment does not matter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyconv.visualize import have_matplotlib

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")
    }
    env["OMP_NUM_THREADS"] = "1"  # two OpenMP threads crawl when the 2 cores are shared
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def squash(text):
    """Whitespace-insensitive form of printed arrays: '[[ 6 15]]' -> '[[6 15]]'."""
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+\]", "]", re.sub(r"\[\s+", "[", text))


def test_every_example_is_tested():
    tested = {
        "01_naive_convolution.py",
        "02_padding_and_stride.py",
        "03_max_pooling.py",
        "04_average_pooling.py",
        "05_im2col_convolution_pooling.py",
        "06_train_simple_convnet.py",
        "07_visualize_filters.py",
        "08_perceptron.py",
        "09_activations_and_vanishing_gradients.py",
        "10_gradient_descent_vs_sgd.py",
        "11_batch_norm.py",
        "12_transfer_learning.py",
        "13_resnet50.py",
    }
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_01_naive_convolution(tmp_path):
    out = squash(run_example("01_naive_convolution.py", cwd=tmp_path))
    assert "output (2, 2): [[15 16] [6 15]]" in out
    assert "output + bias 3: [[18 19] [9 18]]" in out
    assert "conv2d_forward with bias: [[18 19] [9 18]]" in out
    assert "all agree: True" in out


def test_02_padding_and_stride(tmp_path):
    out = run_example("02_padding_and_stride.py", cwd=tmp_path)
    assert "OH = (7 + 2*1 - 3) / 2 + 1 = 4,  OW = (7 + 2*1 - 3) / 2 + 1 = 4" in out
    assert "OH = (7 + 2*0 - 3) / 2 + 1 = 3" in out
    assert out.count("max |loop - tinyconv| = 0\n") == 3
    assert "output shape: loop (4, 4), tinyconv (4, 4)" in out
    # The book's figure 7-6: a 4x4 input padded by 1 stays 4x4.
    assert "output with pad 1 (4, 4): [[7 12 10 2] [4 15 16 10] [10 6 15 6] [8 10 4 3]]" in squash(
        out
    )
    assert "loop and tinyconv agree: True" in out


def test_03_max_pooling(tmp_path):
    out = squash(run_example("03_max_pooling.py", cwd=tmp_path))
    assert "max pooling 2x2, stride 2 (2, 2): [[6 8] [3 4]]" in out
    assert "max_pool2d_forward: [[6 8] [3 4]]" in out
    assert "all agree: True" in out


def test_04_average_pooling(tmp_path):
    out = squash(run_example("04_average_pooling.py", cwd=tmp_path))
    assert "average pooling 2x2, stride 2 (2, 2): [[3.25 5.25] [2. 2.]]" in out
    assert "mode='avg'): [[3.25 5.25] [2. 2.]]" in out
    assert "all agree: True" in out


def test_05_im2col_convolution_pooling(tmp_path):
    out = run_example("05_im2col_convolution_pooling.py", cwd=tmp_path)
    assert "im2col of (1, 3, 7, 7) with a 5x5 filter: (9, 75)" in out
    assert "im2col of (10, 3, 7, 7) with a 5x5 filter: (90, 75)" in out
    assert "with 30 filters of 5x5: (10, 30, 3, 3)" in out
    assert "stride 2: (10, 3, 4, 4)" in out
    assert "agree with tinyconv: True" in out


def _test_accuracy(out):
    match = re.search(r"^test acc:([0-9.]+)$", out, re.MULTILINE)
    assert match, out
    return float(match.group(1))


def _mean_abs(out, when):
    return float(re.search(rf"mean \|W1\| {when} training:\s+([0-9.]+)", out).group(1))


def test_06_then_07_as_in_the_book(tmp_path):
    out = run_example(
        "06_train_simple_convnet.py",
        "--epochs",
        "2",
        "--train-size",
        "1000",
        "--seed",
        "0",
        cwd=tmp_path,
    )
    assert re.search(r"^epoch 2/2: loss [0-9.]+, train acc", out, re.MULTILINE)
    assert _test_accuracy(out) > 0.25  # 10 classes: chance is 0.1; 20 Adam steps do better
    assert "Saved Network Parameters!" in out
    assert (tmp_path / "params.pkl").is_file()
    if have_matplotlib():
        assert "Saved accuracy.png" in out
        assert (tmp_path / "accuracy.png").stat().st_size > 0

    # visualize_filter.py reads the params.pkl that train_convnet.py wrote.
    out = run_example("07_visualize_filters.py", cwd=tmp_path)
    assert "Loaded trained parameters from params.pkl" in out
    assert "W1 holds 30 filters of 5x5" in out
    assert _mean_abs(out, "after") > _mean_abs(out, "before")
    _check_filter_pictures(tmp_path)


def test_07_alone_trains_first(tmp_path):
    out = run_example(
        "07_visualize_filters.py",
        "--epochs",
        "1",
        "--train-size",
        "300",
        "--seed",
        "0",
        cwd=tmp_path,
    )
    assert "params.pkl not found" in out
    assert "test acc:" in out
    assert _mean_abs(out, "after") != _mean_abs(out, "before")
    _check_filter_pictures(tmp_path)


def _check_filter_pictures(directory):
    if not have_matplotlib():
        pytest.fail("examples 07 needs matplotlib (install tinyconv[plot])")
    from matplotlib.image import imread

    for name in ("filters_before.png", "filters_after.png"):
        pixels = imread(str(directory / name))
        assert pixels.shape[:2] == (300, 600)  # 30 filters, 8 per row
        rgb = np.round(pixels[..., :3].reshape(-1, 3) * 255).astype(np.uint8)
        assert len(np.unique(rgb, axis=0)) > 1
        assert not np.all(rgb == 255)


def _check_pictures(directory, out, *names):
    """Each PNG was written, said so, and is a real picture (several colours, not blank)."""
    if not have_matplotlib():
        assert "matplotlib is not installed" in out
        return
    from matplotlib.image import imread

    for name in names:
        assert f"Saved {name}" in out
        rgb = np.round(imread(str(directory / name))[..., :3].reshape(-1, 3) * 255).astype(np.uint8)
        assert len(np.unique(rgb, axis=0)) > 10, name


def test_08_perceptron_truth_tables(tmp_path):
    out = run_example("08_perceptron.py", cwd=tmp_path)
    tables = {"AND": (0, 0, 0, 1), "NAND": (1, 1, 1, 0), "OR": (0, 1, 1, 1), "XOR": (0, 1, 1, 0)}
    for gate, outputs in tables.items():
        expected = [
            f"{gate}({x1}, {x2}) = {y}"
            for (x1, x2), y in zip([(0, 0), (1, 0), (0, 1), (1, 1)], outputs)
        ]
        lines = [line for line in out.splitlines() if line.startswith(f"{gate}(")]
        assert lines == expected
    linear, two_layers = map(
        int,
        re.search(r"^single linear unit: (\d)/4, two layers: (\d)/4$", out, re.MULTILINE).groups(),
    )
    assert linear <= 3  # no straight line separates XOR
    assert two_layers == 4
    _check_pictures(tmp_path, out, "perceptron_xor.png")


def test_09_sigmoid_gradient_vanishes(tmp_path):
    out = run_example("09_activations_and_vanishing_gradients.py", "--batch", "300", cwd=tmp_path)
    sigmoid, relu = map(
        float,
        re.search(
            r"^first-layer gradient: sigmoid \(Xavier\) (\S+), ReLU \(He\) (\S+), "
            r"ratio \S+$",
            out,
            re.MULTILINE,
        ).groups(),
    )
    assert 0 < sigmoid < relu / 100
    table = {
        line[:18].strip(): [float(v) for v in line[18:].split()]
        for line in out.split("Mean |dL/dW| of each layer")[1].splitlines()[2:6]
    }
    assert list(table) == ["sigmoid, std 1", "sigmoid, Xavier", "ReLU, std 0.01", "ReLU, He"]
    assert table["sigmoid, Xavier"][0] == sigmoid
    assert table["ReLU, He"][0] == relu
    xavier = table["sigmoid, Xavier"][:6]
    assert xavier == sorted(xavier)  # the gradient shrinks at every layer it passes back through
    assert re.search(r"^sigmoid, std 1 +[0-9.]+%", out, re.MULTILINE)  # saturation shares printed
    _check_pictures(tmp_path, out, "activations.png", "gradients.png")


def test_10_gradient_descent_vs_sgd(tmp_path):
    out = run_example(
        "10_gradient_descent_vs_sgd.py", "--epochs", "2", "--train-size", "1000", cwd=tmp_path
    )
    rows = {
        name: line[len(name) :].split()
        for line in out.splitlines()
        for name in ("gradient descent (full batch)", "mini-batch SGD", "Momentum", "Adam")
        if line.startswith(name)
    }
    assert len(rows) == 4
    batch, updates = (
        {name: int(row[0]) for name, row in rows.items()},
        {name: int(row[1]) for name, row in rows.items()},
    )
    assert batch == {
        "gradient descent (full batch)": 1000,
        "mini-batch SGD": 100,
        "Momentum": 100,
        "Adam": 100,
    }
    assert updates == {
        "gradient descent (full batch)": 1,
        "mini-batch SGD": 10,
        "Momentum": 10,
        "Adam": 10,
    }
    assert all(float(row[2]) > 0 for row in rows.values())  # ms per update: printed, not judged
    final = {name: float(row[-1]) for name, row in rows.items()}
    before = float(re.search(r"^loss before training: (\S+)$", out, re.MULTILINE).group(1))
    # Two full-batch steps barely move; twenty mini-batch steps of the same epochs get much further.
    assert final["mini-batch SGD"] < final["gradient descent (full batch)"] - 0.3
    assert all(loss < before for loss in final.values())
    _check_pictures(tmp_path, out, "loss_vs_time.png", "loss_vs_epochs.png")


def test_11_batch_norm_reaches_the_accuracy_in_fewer_epochs(tmp_path):
    # Short settings chosen so that every crossing clears the target by 0.015 or more (10 images of
    # 1,000) on AVX-512 and AVX2 alike: a 3x larger learning rate than the book's, 6 epochs.
    out = run_example(
        "11_batch_norm.py",
        "--epochs",
        "6",
        "--lr",
        "0.03",
        "--target",
        "0.69",
        "--seed",
        "0",
        cwd=tmp_path,
    )
    epochs = {}
    for network in ("deep MLP", "small convnet"):
        for kind in ("without", "with"):
            match = re.search(
                rf"^{network}, {kind} batch norm +(\d+|not in 6) +([0-9.]+) +([0-9.]+)$",
                out,
                re.MULTILINE,
            )
            assert match, (network, kind, out)
            epochs[network, kind] = int(match.group(1)) if match.group(1).isdigit() else None
    for network in ("deep MLP", "small convnet"):
        with_bn, without_bn = epochs[network, "with"], epochs[network, "without"]
        assert with_bn is not None, network
        assert without_bn is None or with_bn < without_bn, network
    assert (
        epochs["deep MLP", "without"] is None
    )  # the book's figure: without batch norm it hardly learns
    _check_pictures(tmp_path, out, "batch_norm_accuracy.png")


def _resnet50_state_file(path):
    """A ResNet-50 state dict in torchvision's key layout (names and shapes from
    tests/golden/resnet_keys.json, written from PyTorch), random values; the classifier's weights
    zero and its bias distinct, so the top classes of any input are known."""
    import json

    from resnet_golden_common import seeded_state_dict

    spec = json.loads(
        (Path(__file__).parent / "golden" / "resnet_keys.json").read_text(encoding="utf-8")
    )["resnet50"]
    state = seeded_state_dict([(key, shape) for key, shape, _ in spec["state_dict"]], seed=7)
    state["fc.weight"] = np.zeros_like(state["fc.weight"])
    state["fc.bias"] = np.random.default_rng(7).permutation(1000) / 1000.0
    np.savez(path, **state)
    return state


def test_13_resnet50(tmp_path):
    out = run_example("13_resnet50.py", "--threads", "1", cwd=tmp_path)
    total = re.search(
        r"^total +([0-9,]+) parameters \(the arrays in network.params: ([0-9,]+)\)$",
        out,
        re.MULTILINE,
    )
    assert total.groups() == ("25,557,032", "25,557,032")
    table = out.split("parameters\n", 1)[1].split("\ntotal")[0].splitlines()
    assert sum(int(line.split()[-1].replace(",", "")) for line in table) == 25_557_032
    assert len([line for line in table if line.startswith("conv")]) == 16  # 3 + 4 + 6 + 3 blocks
    assert "conv5_x  2        (1, 2048, 7, 7)         4,462,592" in out
    assert "Multiply-adds for one 224x224 image: 4,089,184,256 (4.09 G;" in out
    shares = dict(
        re.findall(r"^   (7x7 \(stem\)|3x3|1x1|fully connected) +([0-9,]+) ", out, re.MULTILINE)
    )
    assert sum(int(v.replace(",", "")) for v in shares.values()) == 4_089_184_256
    assert shares["7x7 (stem)"] == "118,013,952"
    assert shares["fully connected"] == "2,048,000"
    assert "69,632 multiply-adds; two 3x3 convolutions at 256 channels: 1,179,648 (17x)" in out
    assert re.search(
        r"^3\. Forward pass, batch 1, 3x224x224, 1 thread\(s\): [0-9.]+ ms", out, re.MULTILINE
    )
    _check_pictures(tmp_path, out, "resnet50_multiply_adds.png")


def test_13_resnet50_loads_a_torchvision_state_dict(tmp_path):
    state = _resnet50_state_file(tmp_path / "r50.npz")
    out = run_example("13_resnet50.py", "--threads", "1", "--weights", "r50.npz", cwd=tmp_path)
    loaded = (
        np.abs(state["conv1.weight"].astype(np.float32)).astype(np.float64).sum()
    )  # the network is float32
    assert f"loaded r50.npz: {len(state)} arrays, sum of |conv1.weight| = {loaded:.6f}" in out
    top5 = re.search(r"top-5 classes for the synthetic input: (.*)$", out, re.MULTILINE).group(1)
    classes = [int(item.split()[0]) for item in top5.split(", ")]
    assert classes == list(
        np.argsort(state["fc.bias"])[::-1][:5]
    )  # fc.weight is zero: the logits are fc.bias
    # A file of another network is refused with the reason, and nothing runs.
    np.savez(
        tmp_path / "r18.npz",
        **{key: value for key, value in state.items() if not key.startswith("layer4")},
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "13_resnet50.py"), "--weights", "r18.npz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--weights: r18.npz does not fit this ResNet" in result.stderr
    assert "'layer4.0.conv1.weight' is missing" in result.stderr


@pytest.mark.parametrize("dataset", ["sample", "fashion-mnist"])
def test_12_transfer_learning_with_short_settings(dataset, tmp_path):
    if dataset == "fashion-mnist":
        from test_trainer import load_fashion_mnist_or_skip

        load_fashion_mnist_or_skip()  # the full data set: fails under CI when missing, else skips
    out = run_example(
        "12_transfer_learning.py",
        "--dataset",
        dataset,
        "--pretrain-size",
        "600",
        "--pretrain-epochs",
        "1",
        "--labelled",
        "50",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--test-size",
        "300",
        cwd=tmp_path,
    )
    assert re.search(
        r"^pre-trained on classes 0-4 \(600 images, 1 epochs\): test accuracy 0\.\d{4}",
        out,
        re.MULTILINE,
    )
    seeds = re.findall(
        r"^seed (\d): 50 labelled images of classes 5-9 -> test accuracy fine-tuned "
        r"(0\.\d{4}|1\.0000), from scratch (0\.\d{4}|1\.0000)$",
        out,
        re.MULTILINE,
    )
    assert [seed for seed, _, _ in seeds] == ["0", "1"]
    mean = re.search(
        r"^mean over 2 seeds \(300 test images of classes 5-9\): fine-tuned (\S+), "
        r"from scratch (\S+), gain ([+-]\S+)$",
        out,
        re.MULTILINE,
    )
    fine, scratch = np.mean([[float(f), float(s)] for _, f, s in seeds], axis=0)
    assert float(mean.group(1)) == pytest.approx(fine, abs=1e-4)
    assert float(mean.group(2)) == pytest.approx(scratch, abs=1e-4)
    summary = out.split("labelled images | fine-tuned | from scratch | gain\n")[1].splitlines()[0]
    assert [float(v) for v in summary.split("|")[:3]] == [
        50,
        float(mean.group(1)),
        float(mean.group(2)),
    ]
    # How much fine-tuning gains is measured by the full run (README); steps this few only show
    # that both arms run end to end.
    _check_pictures(tmp_path, out, "transfer_learning.png")
