"""Pictures of networks and training runs: filters, learning curves, confusion matrices.

* :func:`filter_show` -- the filters of a convolution layer in a grid, as DLfS's
  ``ch07/visualize_filter.py`` (same signature, plus ``save=``).
* :func:`plot_accuracy`, :func:`plot_loss` and :func:`plot_history` -- the learning curves of a
  training run, styled like DLfS's ``ch07/train_convnet.py``.
* :func:`confusion_matrix` (NumPy only) and :func:`plot_confusion_matrix`.

matplotlib is optional (``pip install "tinyconv[plot]"``) and imported only when a picture is
drawn; without it the plotting functions raise :class:`PlottingUnavailableError`, an
``ImportError`` that says how to install it.

Every plotting function returns its ``matplotlib.figure.Figure``.  With ``save=path`` the picture
is written to ``path`` and nothing is shown: the figure is built without pyplot and rendered by
the non-interactive Agg backend, so saving works on machines without a display, leaves pyplot's
global state alone and does not leak figures.  Without ``save`` the figure is shown with
``pyplot.show()`` as in DLfS; on Linux without ``DISPLAY`` or ``WAYLAND_DISPLAY`` the Agg backend is
selected first (unless pyplot is already in use or ``MPLBACKEND`` says otherwise), because
matplotlib could not open a window there anyway.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt

from ._typing import ArrayLike, FloatArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ._protocols import TrainingHistory

__all__ = [
    "INSTALL_HINT",
    "PlottingUnavailableError",
    "confusion_matrix",
    "filter_show",
    "have_matplotlib",
    "plot_accuracy",
    "plot_confusion_matrix",
    "plot_history",
    "plot_loss",
]

PathLike = Union[str, "os.PathLike[str]"]

#: How to get the optional plotting dependency.
INSTALL_HINT = 'pip install "tinyconv[plot]"'

_DPI = 100


class PlottingUnavailableError(ImportError):
    """matplotlib, which tinyconv needs for pictures, is not installed."""

    def __init__(self) -> None:
        super().__init__(f"matplotlib is needed to draw pictures; install it with: {INSTALL_HINT}")


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (without importing pyplot)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _has_display() -> bool:
    """Whether an interactive window could be opened.  Only Linux-like systems need a display
    server; macOS and Windows always have a window system."""
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _new_figure(figsize: tuple[float, float], save: PathLike | None) -> Figure:
    """A figure that is either rendered to a file (pyplot-free, Agg) or managed by pyplot."""
    try:
        import matplotlib
    except ImportError:
        raise PlottingUnavailableError() from None
    if save is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=figsize, dpi=_DPI)
        FigureCanvasAgg(figure)  # attaches itself to the figure
        return figure
    if (
        not _has_display()
        and "matplotlib.pyplot" not in sys.modules
        and not os.environ.get("MPLBACKEND")
    ):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, dpi=_DPI)


def _finish(figure: Figure, save: PathLike | None) -> Figure:
    if save is not None:
        figure.savefig(os.fspath(save), dpi=_DPI)
    else:
        import matplotlib.pyplot as plt

        plt.show()
    return figure


# ----------------------------------------------------------------------------------------------
# Filters


def filter_show(
    filters: ArrayLike,
    nx: int = 8,
    margin: int = 3,
    scale: int = 10,
    *,
    save: PathLike | None = None,
    cmap: str = "gray_r",
) -> Figure:
    """Show the first input channel of each filter in ``filters`` (FN, C, FH, FW) as a grey
    image, ``nx`` per row, as DLfS's ``filter_show``: each filter scaled to its own range,
    ``gray_r`` colour map (dark = large weight), nearest-neighbour pixels, no ticks.

    ``margin`` and ``scale`` are accepted for compatibility with DLfS's signature, which does not
    use them either.  ``save=path`` writes a PNG (or any format matplotlib knows from the
    suffix) instead of showing the picture.  Returns the figure.
    """
    del margin, scale  # unused, exactly as in DLfS
    weights = np.asarray(filters)
    if weights.ndim != 4:
        raise ValueError(f"filters must have shape (FN, C, FH, FW), got shape {weights.shape}")
    if int(nx) < 1:
        raise ValueError(f"nx must be >= 1, got {nx}")
    count = weights.shape[0]
    columns = int(nx)
    rows = max(math.ceil(count / columns), 1)
    cell_inches = 0.75  # square cells, so square filters are not distorted
    figure = _new_figure((columns * cell_inches, rows * cell_inches), save)
    figure.subplots_adjust(left=0, right=1, bottom=0, top=1, hspace=0.05, wspace=0.05)
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1, xticks=[], yticks=[])
        axes.imshow(
            np.asarray(weights[index, 0], dtype=np.float64), cmap=cmap, interpolation="nearest"
        )
    return _finish(figure, save)


# ----------------------------------------------------------------------------------------------
# Learning curves


def plot_accuracy(
    train_acc: ArrayLike,
    test_acc: ArrayLike | None = None,
    *,
    save: PathLike | None = None,
    markevery: int | None = None,
) -> Figure:
    """Train (circles) and test (squares) accuracy per epoch, as DLfS's ``train_convnet.py``:
    x label "epochs", y label "accuracy", y from 0 to 1, legend at the lower right.

    Epochs are numbered from 1, since each value is measured at the end of its epoch.
    ``markevery`` defaults to DLfS's 2, or 1 for runs of up to 10 epochs (so short runs show every
    point).  Returns the figure.
    """
    train_values = np.asarray(train_acc, dtype=np.float64)
    if markevery is None:
        markevery = 2 if len(train_values) > 10 else 1
    figure = _new_figure((6.4, 4.8), save)
    axes = figure.add_subplot(1, 1, 1)
    epochs = np.arange(1, len(train_values) + 1)
    axes.plot(epochs, train_values, marker="o", label="train", markevery=markevery)
    if test_acc is not None:
        test_values = np.asarray(test_acc, dtype=np.float64)
        axes.plot(
            np.arange(1, len(test_values) + 1),
            test_values,
            marker="s",
            label="test",
            markevery=markevery,
        )
    axes.set_xlabel("epochs")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.0)
    if len(epochs):
        axes.set_xticks(_integer_ticks(len(epochs)))
    axes.legend(loc="lower right")
    axes.grid(True, alpha=0.3)
    return _finish(figure, save)


def _integer_ticks(count: int) -> npt.NDArray[np.int_]:
    step = max(1, math.ceil(count / 10))
    return np.arange(1, count + 1, step)


def _integer_locator() -> MaxNLocator:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _moving_average(values: FloatArray, window: int) -> FloatArray:
    """Centred moving average of odd length ``window``, edges padded by reflection (the same
    kind of smoothing as DLfS's ``smooth_curve``, which the loss plots of chapter 6 use)."""
    half = window // 2
    padded = np.pad(values, half, mode="reflect")
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def plot_loss(
    loss: ArrayLike, *, xlabel: str = "iterations", save: PathLike | None = None
) -> Figure:
    """The training loss, one value per step (``Trainer.train_loss_list``) or per epoch
    (``xlabel="epochs"``): the raw values faintly and, for long series, a smoothed curve on top.
    Returns the figure."""
    losses = np.asarray(loss, dtype=np.float64)
    figure = _new_figure((6.4, 4.8), save)
    axes = figure.add_subplot(1, 1, 1)
    x = np.arange(1, len(losses) + 1)
    smooth_window = 11
    if len(losses) >= 2 * smooth_window:
        axes.plot(x, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
        axes.plot(
            x,
            _moving_average(losses, smooth_window),
            color="tab:blue",
            label=f"moving average ({smooth_window})",
        )
        axes.legend(loc="upper right")
    else:
        axes.plot(x, losses, color="tab:blue", marker="o" if len(losses) <= 50 else None)
    axes.xaxis.set_major_locator(_integer_locator())
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss")
    finite = losses[np.isfinite(losses)]
    if finite.size:
        axes.set_ylim(0, max(float(finite.max()) * 1.05, 1e-3))
    axes.grid(True, alpha=0.3)
    return _finish(figure, save)


def _history_lists(
    history: TrainingHistory | Mapping[str, Any],
) -> tuple[ArrayLike, ArrayLike, ArrayLike, str]:
    """(train_acc, test_acc, loss, loss x label) from a Trainer or a mapping."""
    if isinstance(history, Mapping):
        train_acc = history.get("train_acc", history.get("train_acc_list", []))
        test_acc = history.get("test_acc", history.get("test_acc_list", []))
        for key, label in (
            ("train_loss", "iterations"),
            ("train_loss_list", "iterations"),
            ("loss", "epochs"),
        ):
            if key in history:
                return train_acc, test_acc, history[key], label
        return train_acc, test_acc, [], "iterations"
    try:
        return (
            history.train_acc_list,
            history.test_acc_list,
            history.train_loss_list,
            "iterations",
        )
    except AttributeError:
        raise TypeError(
            "history must be a Trainer (or anything with train_acc_list, test_acc_list "
            "and train_loss_list) or a mapping such as history.json's contents"
        ) from None


def plot_history(
    history: TrainingHistory | Mapping[str, Any] | None = None,
    *,
    train_acc: ArrayLike | None = None,
    test_acc: ArrayLike | None = None,
    loss: ArrayLike | None = None,
    save: PathLike | None = None,
) -> tuple[Figure, Figure]:
    """Accuracy and loss plots of a training run; returns ``(accuracy_figure, loss_figure)``.

    ``history`` is a :class:`~tinyconv.trainer.Trainer` after ``train()``, or a mapping such as
    the ``history.json`` written by ``tinyconv train`` (keys ``train_acc``, ``test_acc`` and
    ``train_loss`` per step, or DLfS's ``*_list`` names); or give the lists as keywords, which
    override it.  ``save=directory`` writes ``accuracy.png`` and ``loss.png`` there.
    """
    from_history: tuple[ArrayLike, ArrayLike, ArrayLike, str] = ([], [], [], "iterations")
    if history is not None:
        from_history = _history_lists(history)
    train_acc = from_history[0] if train_acc is None else train_acc
    test_acc = from_history[1] if test_acc is None else test_acc
    loss, loss_label = (from_history[2], from_history[3]) if loss is None else (loss, "iterations")
    accuracy_path = loss_path = None
    if save is not None:
        os.makedirs(save, exist_ok=True)
        accuracy_path = os.path.join(save, "accuracy.png")
        loss_path = os.path.join(save, "loss.png")
    accuracy_figure = plot_accuracy(
        train_acc, test_acc if len(np.asarray(test_acc)) else None, save=accuracy_path
    )
    loss_figure = plot_loss(loss, xlabel=loss_label, save=loss_path)
    return accuracy_figure, loss_figure


# ----------------------------------------------------------------------------------------------
# Confusion matrix


def confusion_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None
) -> npt.NDArray[np.int64]:
    """Counts ``cm[i, j]`` of samples of true class ``i`` predicted_labels as class ``j`` (int64,
    ``(num_classes, num_classes)``).  ``y_true`` may be labels or one-hot rows; ``y_pred`` labels
    or scores (the largest per row wins).  ``num_classes`` defaults to the largest label + 1."""
    true_labels = np.asarray(y_true)
    predicted_labels = np.asarray(y_pred)
    if true_labels.ndim == 2:
        true_labels = np.argmax(true_labels, axis=1)
    if predicted_labels.ndim == 2:
        predicted_labels = np.argmax(predicted_labels, axis=1)
    if (
        true_labels.ndim != 1
        or predicted_labels.ndim != 1
        or len(true_labels) != len(predicted_labels)
    ):
        raise ValueError(
            f"y_true and y_pred must be equally long label vectors, got shapes "
            f"{true_labels.shape} and {predicted_labels.shape}"
        )
    for name, labels in (("y_true", true_labels), ("y_pred", predicted_labels)):
        if labels.size and (
            labels.dtype.kind not in "iu" and not np.all(labels == np.round(labels))
        ):
            raise ValueError(f"{name} must hold integer class labels")
    true_classes = true_labels.astype(np.int64)
    predicted_classes = predicted_labels.astype(np.int64)
    if num_classes is None:
        num_classes = int(max(true_classes.max(initial=-1), predicted_classes.max(initial=-1)) + 1)
    num_classes = int(num_classes)
    for name, classes in (("y_true", true_classes), ("y_pred", predicted_classes)):
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside 0..{num_classes - 1}")
    # Each (true, predicted) pair gets its own bin; bincount counts them all in one pass.
    flat = np.bincount(
        true_classes * num_classes + predicted_classes, minlength=num_classes * num_classes
    )
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def plot_confusion_matrix(
    cm: ArrayLike,
    class_names: Sequence[str] | None = None,
    *,
    save: PathLike | None = None,
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """Draw confusion matrix ``cm`` (rows: true class, columns: predicted class) with a count in
    every cell.  ``normalize=True`` colours and labels each row by its fraction instead, which
    makes per-class accuracy readable on the diagonal.  Returns the figure."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square matrix, got shape {cm.shape}")
    size = cm.shape[0]
    names = (
        [str(name) for name in class_names]
        if class_names is not None
        else [str(i) for i in range(size)]
    )
    if len(names) != size:
        raise ValueError(f"{len(names)} class names for a {size}x{size} matrix")
    values = cm.astype(np.float64)
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    side = max(4.0, 0.6 * size + 2.5)
    figure = _new_figure((side + 1.0, side), save)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(
        values,
        cmap="Blues",
        interpolation="nearest",
        vmin=0,
        vmax=1 if normalize else max(float(values.max()), 1.0),
    )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(np.arange(size))
    axes.set_yticks(np.arange(size))
    axes.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticklabels(names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    # Dark text on light cells, white text on dark ones.
    threshold = (1.0 if normalize else max(float(values.max()), 1.0)) / 2
    font_size = 8 if size <= 12 else 6
    for i in range(size):
        for j in range(size):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            axes.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if values[i, j] > threshold else "black",
            )
    figure.tight_layout()
    return _finish(figure, save)
