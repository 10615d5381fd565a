"""tinyconv.visualize: confusion matrices (NumPy only) and the pictures (matplotlib, optional).

Pictures are checked as files: read back with matplotlib's ``imread``, they must have the
expected size and not be blank (more than one colour, not all white).  Figures returned by the
plotting functions are also inspected directly (labels, limits, markers, legend position).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import ClassVar

import numpy as np
import pytest

from tinyconv import visualize
from tinyconv.visualize import (
    PlottingUnavailableError,
    confusion_matrix,
    filter_show,
    plot_accuracy,
    plot_confusion_matrix,
    plot_history,
    plot_loss,
)

needs_matplotlib = pytest.mark.skipif(
    not visualize.have_matplotlib(),
    reason="drawing needs matplotlib (tinyconv[plot] or tinyconv[test])",
)


def read_png(path):
    """Pixels of a PNG as floats in [0, 1], shape (height, width, channels)."""
    from matplotlib.image import imread

    assert os.path.getsize(path) > 0
    return imread(os.fspath(path))


def assert_real_picture(path, width, height):
    pixels = read_png(path)
    assert pixels.shape[:2] == (height, width)
    rgb = pixels[..., :3].reshape(-1, 3)
    distinct = np.unique(np.round(rgb * 255).astype(np.uint8), axis=0)
    assert len(distinct) > 1, "the picture is a single colour"
    assert not np.all(rgb >= 0.999), "the picture is all white"
    return pixels


# ----------------------------------------------------------------------------------------------
# confusion_matrix (no matplotlib needed)


def test_confusion_matrix_counts_pairs():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    cm = confusion_matrix(y_true, y_pred, num_classes=3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.sum() == 6
    assert np.trace(cm) == 4


def test_confusion_matrix_accepts_one_hot_truth_and_scores():
    y_true = np.eye(4)[[3, 1, 0]]
    scores = np.array([[0.1, 0.2, 0.3, 0.9], [0.8, 0.1, 0.0, 0.1], [0.6, 0.2, 0.1, 0.1]])
    cm = confusion_matrix(y_true, scores)
    assert cm.shape == (4, 4)  # number of classes taken from the data
    np.testing.assert_array_equal(np.argwhere(cm), [[0, 0], [1, 0], [3, 3]])


def test_confusion_matrix_defaults_and_unused_classes():
    cm = confusion_matrix([1, 1], [1, 1], num_classes=5)
    assert cm.shape == (5, 5)
    assert cm[1, 1] == 2
    assert cm.sum() == 2
    assert confusion_matrix([0, 2], [2, 0]).shape == (3, 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "message"),
    [
        ([0, 1], [0], 2, "must be equally long"),
        ([0, 3], [0, 1], 3, r"labels outside 0\.\.2"),
        ([0, -1], [0, 1], 2, r"labels outside 0\.\.1"),
        ([0.5, 1], [0, 1], 2, "must hold integer class labels"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, num_classes, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(y_true, y_pred, num_classes)


# ----------------------------------------------------------------------------------------------
# filter_show


@needs_matplotlib
def test_filter_show_saves_a_grey_grid_of_eight_per_row(tmp_path):
    filters = np.random.default_rng(0).normal(size=(30, 1, 5, 5))
    path = tmp_path / "filters.png"
    figure = filter_show(filters, save=path)
    # 30 filters, 8 per row -> 4 rows of 8 square cells of 75 pixels.
    pixels = assert_real_picture(path, width=600, height=300)
    rgb = pixels[..., :3]
    assert np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2]), (
        "not grey"
    )
    axes = figure.get_axes()
    assert len(axes) == 30
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in axes)
    image = axes[0].get_images()[0]
    assert image.get_cmap().name == "gray_r"  # DLfS's colour map: dark means a large weight
    np.testing.assert_array_equal(image.get_array(), filters[0, 0])


@needs_matplotlib
def test_filter_show_keeps_dlfs_signature_and_other_layouts(tmp_path):
    filters = np.random.default_rng(1).normal(size=(12, 3, 3, 3)).astype(np.float32)
    path = tmp_path / "wide.png"
    filter_show(filters, 6, 3, 10, save=path)  # nx, margin, scale positionally, as DLfS
    assert_real_picture(path, width=450, height=150)


@needs_matplotlib
def test_filter_show_rejects_non_filter_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"\(FN, C, FH, FW\)"):
        filter_show(np.zeros((30, 25)), save=tmp_path / "x.png")
    with pytest.raises(ValueError, match="nx"):
        filter_show(np.zeros((2, 1, 3, 3)), nx=0, save=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------------------------
# learning curves


@needs_matplotlib
def test_plot_accuracy_is_styled_as_dlfs_train_convnet(tmp_path):
    train_acc = np.linspace(0.3, 0.95, 20)
    test_acc = np.linspace(0.25, 0.9, 20)
    path = tmp_path / "accuracy.png"
    figure = plot_accuracy(train_acc, test_acc, save=path)
    assert_real_picture(path, width=640, height=480)
    (axes,) = figure.get_axes()
    assert axes.get_xlabel() == "epochs"
    assert axes.get_ylabel() == "accuracy"
    assert axes.get_ylim() == (0.0, 1.0)
    train_line, test_line = axes.get_lines()
    assert (train_line.get_label(), train_line.get_marker()) == ("train", "o")
    assert (test_line.get_label(), test_line.get_marker()) == ("test", "s")
    assert train_line.get_markevery() == 2  # DLfS's markevery for 20 epochs
    np.testing.assert_array_equal(train_line.get_xdata(), np.arange(1, 21))
    np.testing.assert_allclose(test_line.get_ydata(), test_acc)
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["train", "test"]
    # Lower right: the legend lies in the right half and the bottom half of the axes.
    box, frame = legend.get_window_extent(), axes.get_window_extent()
    assert box.x0 > (frame.x0 + frame.x1) / 2
    assert box.y1 < (frame.y0 + frame.y1) / 2


@needs_matplotlib
def test_plot_loss_raw_and_smoothed(tmp_path):
    loss = 2.3 * np.exp(-np.linspace(0, 3, 200)) + np.random.default_rng(2).normal(0, 0.05, 200)
    path = tmp_path / "loss.png"
    figure = plot_loss(loss, save=path)
    assert_real_picture(path, width=640, height=480)
    (axes,) = figure.get_axes()
    assert axes.get_xlabel() == "iterations"
    assert axes.get_ylabel() == "loss"
    raw, smooth = axes.get_lines()
    np.testing.assert_allclose(raw.get_ydata(), loss)
    assert len(smooth.get_ydata()) == len(loss)
    assert np.std(np.diff(smooth.get_ydata())) < np.std(np.diff(loss))


class _FakeTrainer:
    train_acc_list: ClassVar[list[float]] = [0.4, 0.6, 0.7]
    test_acc_list: ClassVar[list[float]] = [0.35, 0.55, 0.65]
    train_loss_list: ClassVar[list[float]] = list(np.linspace(2.3, 0.8, 30))


@needs_matplotlib
def test_plot_history_from_trainer_or_mapping(tmp_path):
    accuracy_figure, loss_figure = plot_history(_FakeTrainer(), save=tmp_path / "a")
    assert_real_picture(tmp_path / "a" / "accuracy.png", 640, 480)
    assert_real_picture(tmp_path / "a" / "loss.png", 640, 480)
    assert (
        list(accuracy_figure.get_axes()[0].get_lines()[1].get_ydata()) == _FakeTrainer.test_acc_list
    )

    history = {"train_acc": [0.5, 0.6], "test_acc": [0.4, 0.5], "loss": [1.2, 0.9]}
    _, loss_figure = plot_history(history, save=tmp_path / "b")
    assert loss_figure.get_axes()[0].get_xlabel() == "epochs"  # per-epoch losses
    assert sorted(os.listdir(tmp_path / "b")) == ["accuracy.png", "loss.png"]

    with pytest.raises(TypeError, match="history"):
        plot_history(object(), save=tmp_path / "c")


# ----------------------------------------------------------------------------------------------
# confusion-matrix picture


@needs_matplotlib
def test_plot_confusion_matrix_labels_and_counts(tmp_path):
    names = ["cat", "dog", "bird"]
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    path = tmp_path / "cm.png"
    figure = plot_confusion_matrix(cm, names, save=path, title="pets")
    pixels = read_png(path)
    assert pixels.shape[0] >= 300
    assert pixels.shape[1] >= 300
    assert_real_picture(path, pixels.shape[1], pixels.shape[0])
    axes = figure.get_axes()[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == names
    assert [t.get_text() for t in axes.get_yticklabels()] == names
    assert axes.get_xlabel() == "predicted class"
    assert axes.get_ylabel() == "true class"
    assert sorted(t.get_text() for t in axes.texts) == sorted(str(v) for v in cm.ravel())

    figure = plot_confusion_matrix(cm, save=tmp_path / "n.png", normalize=True)
    texts = {t.get_text() for t in figure.get_axes()[0].texts}
    assert "0.70" in texts
    assert "1.00" in texts

    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(cm, ["a", "b"], save=tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------
# without matplotlib, and without a display


def test_without_matplotlib_pictures_explain_how_to_install(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert not visualize.have_matplotlib()
    with pytest.raises(PlottingUnavailableError, match=r'pip install "tinyconv\[plot\]"'):
        filter_show(np.zeros((2, 1, 3, 3)), save=tmp_path / "f.png")
    with pytest.raises(ImportError):  # it is an ImportError, for code that expects one
        plot_accuracy([0.5], [0.4], save=tmp_path / "a.png")
    assert not list(tmp_path.iterdir())
    # The NumPy part keeps working.
    assert confusion_matrix([0, 1], [1, 1]).tolist() == [[0, 1], [0, 1]]


@needs_matplotlib
def test_showing_without_a_display_selects_agg(tmp_path):
    # A fresh interpreter, so that no backend has been chosen yet; DISPLAY and MPLBACKEND unset.
    script = textwrap.dedent("""
        import warnings, numpy as np, matplotlib
        from tinyconv.visualize import filter_show
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Agg's 'cannot show' warning
            filter_show(np.ones((3, 1, 2, 2)))
        print("backend:", matplotlib.get_backend().lower())
    """)
    if not sys.platform.startswith("linux"):
        pytest.skip(
            "the DISPLAY check applies to Linux only; other systems always have a window system"
        )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "backend: agg" in result.stdout
