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
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["OMP_NUM_THREADS"] = "1"  # two OpenMP threads crawl when the 2 cores are shared
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def squash(text):
    """Whitespace-insensitive form of printed arrays: '[[ 6 15]]' -> '[[6 15]]'."""
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+\]", "]", re.sub(r"\[\s+", "[", text))


def test_every_example_is_tested():
    tested = {"01_naive_convolution.py", "02_padding_and_stride.py", "03_max_pooling.py",
              "04_average_pooling.py", "05_im2col_convolution_pooling.py",
              "06_train_simple_convnet.py", "07_visualize_filters.py", "12_transfer_learning.py"}
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
    assert "output with pad 1 (4, 4): [[7 12 10 2] [4 15 16 10] [10 6 15 6] [8 10 4 3]]" in squash(out)
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
    out = run_example("06_train_simple_convnet.py", "--epochs", "2", "--train-size", "1000",
                      "--seed", "0", cwd=tmp_path)
    assert re.search(r"^epoch 2/2: loss [0-9.]+, train acc", out, re.MULTILINE)
    assert _test_accuracy(out) > 0.25  # 10 classes: chance is 0.1; 20 Adam steps do better
    assert "Saved Network Parameters!" in out
    assert (tmp_path / "params.pkl").is_file()
    if have_matplotlib():
        assert "Saved accuracy.png" in out and (tmp_path / "accuracy.png").stat().st_size > 0

    # visualize_filter.py reads the params.pkl that train_convnet.py wrote.
    out = run_example("07_visualize_filters.py", cwd=tmp_path)
    assert "Loaded trained parameters from params.pkl" in out
    assert "W1 holds 30 filters of 5x5" in out
    assert _mean_abs(out, "after") > _mean_abs(out, "before")
    _check_filter_pictures(tmp_path)


def test_07_alone_trains_first(tmp_path):
    out = run_example("07_visualize_filters.py", "--epochs", "1", "--train-size", "300",
                      "--seed", "0", cwd=tmp_path)
    assert "params.pkl not found" in out and "test acc:" in out
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
        assert len(np.unique(rgb, axis=0)) > 1 and not np.all(rgb == 255)


def test_12_transfer_learning_with_short_settings(tmp_path):
    from test_trainer import load_fashion_mnist_or_skip

    load_fashion_mnist_or_skip()  # the full data set: fails under CI when missing, else skips
    out = run_example("12_transfer_learning.py", "--pretrain-size", "600", "--pretrain-epochs", "1",
                      "--labelled", "50", "--epochs", "2", "--seeds", "2", "--test-size", "300", cwd=tmp_path)
    assert re.search(r"^pre-trained on classes 0-4 \(600 images, 1 epochs\): test accuracy 0\.\d{4}", out, re.MULTILINE)
    seeds = re.findall(r"^seed (\d): 50 labelled images of classes 5-9 -> test accuracy fine-tuned "
                       r"(0\.\d{4}|1\.0000), from scratch (0\.\d{4}|1\.0000)$", out, re.MULTILINE)
    assert [seed for seed, _, _ in seeds] == ["0", "1"]
    mean = re.search(r"^mean over 2 seeds \(300 test images of classes 5-9\): fine-tuned (\S+), "
                     r"from scratch (\S+), gain ([+-]\S+)$", out, re.MULTILINE)
    fine, scratch = np.mean([[float(f), float(s)] for _, f, s in seeds], axis=0)
    assert float(mean.group(1)) == pytest.approx(fine, abs=1e-4)
    assert float(mean.group(2)) == pytest.approx(scratch, abs=1e-4)
    summary = out.split("labelled images | fine-tuned | from scratch | gain\n")[1].splitlines()[0]
    assert [float(v) for v in summary.split("|")[:3]] == [50, float(mean.group(1)), float(mean.group(2))]
    # How much fine-tuning gains is measured by the full run (README); steps this few only show
    # that both arms run end to end.
