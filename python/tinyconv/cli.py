"""The ``tinyconv`` command line (also ``python -m tinyconv``).

Commands:

* ``tinyconv train`` -- train a network; the defaults reproduce DLfS's chapter 7 experiment
  (``ch07/train_convnet.py``) on the Fashion-MNIST sample shipped with tinyconv, offline, and
  write the parameters, the history and the pictures into ``--out``.
* ``tinyconv evaluate PARAMS`` -- accuracy, per-class accuracy and a confusion matrix of a saved
  network (tinyconv's or DLfS's parameter files).
* ``tinyconv filters PARAMS`` -- the picture of a saved network's first convolution filters.
* ``tinyconv info`` -- build configuration, where each data set would be read from, and which
  optional packages are installed.

Exit codes: 0 success; 1 training or writing failed (e.g. the loss became NaN, a full disk); 2 bad
usage or unusable input (an option out of range, data set not found, unreadable or unfitting
parameter file, an output that cannot be written, a run too large for the memory); 130
interrupted with Ctrl-C.  Every error is one line on stderr starting with ``error:`` (or
``tinyconv COMMAND: error:`` for a malformed command line), never a traceback.

Everything that can be checked before training is checked before anything is written: the
options, the data set, a checkpoint to resume from, and that the output directory and the
checkpoint's directory can be written to.  So a run that stops with exit code 2 before training
creates nothing.  A run that fails once training has begun leaves ``history.json`` with
``"status": "failed"`` and the reason in ``"error"``, and no ``params.pkl``.

The heavy modules (networks, trainer, matplotlib) are imported by the commands that need them,
so ``--help`` and ``info`` answer at once.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _datetime
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import _MAX_THREADS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C

DATASETS = ("sample", "mnist", "fashion-mnist")
OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
NETS = ("simple", "deep")
IMAGE_SHAPE = (1, 28, 28)
DEFAULT_OUT_ROOT = "runs"

# DLfS's ch07/train_convnet.py, which `tinyconv train` reproduces by default.
DLFS_CONV_PARAM = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
DLFS_HIDDEN_SIZE = 100
DLFS_WEIGHT_INIT_STD = 0.01

# Limits of the options, so that nonsense is a usage error rather than a crash or a run that
# never ends. Threads: the core's own limit (tinyconv.set_num_threads).
MAX_THREADS = _MAX_THREADS
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**64 - 1  # numpy's SeedSequence takes any size; 64 bits are plenty and print well
# `tinyconv filters`: a picture of at most 256 filters per row or column and 4,096 in all keeps
# it under ~20,000 pixels a side (matplotlib's Agg limit is 65,536) and ~100 MB of memory.
MAX_FILTERS_PER_SIDE = 256
MAX_FILTERS_DRAWN = 4096
TRAIN_OUTPUTS = ("params.pkl", "history.json", "accuracy.png", "loss.png", "filters_before.png",
                 "filters_after.png")
EVALUATE_OUTPUTS = ("confusion_matrix.png", "evaluation.json")


class CommandError(Exception):
    """A problem the user can fix (bad input, missing data): printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class _OutputError(Exception):
    """Writing one of the command's output files failed; the message names the file."""


# ----------------------------------------------------------------------------------------------
# Argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse, with a malformed command line reported in one line (argparse prints the whole
    usage block first, eight lines for ``train``, which buries the actual complaint)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_in(minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``minimum`` to ``maximum`` (no maximum if None)."""
    if maximum is None:
        wording = {0: "0 or more", 1: "at least 1"}.get(minimum, f"at least {minimum}")
    else:
        wording = f"from {minimum} to {maximum:,}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than int() accepts
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            shown = str(value) if abs(value) < 10**30 else f"{text[:12]}... ({len(text)} digits)"
            raise argparse.ArgumentTypeError(f"must be {wording}, got {shown}")
        return value
    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


_positive_int = _int_in(1)
_non_negative_int = _int_in(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text[:40]}")
    return value


def _path(text: str) -> str:
    """An argparse type for file and directory names: not empty, no NUL character (which the
    operating system would refuse with a ValueError deep inside the command)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character, got {text!r}")
    return text


def _optimizer_name(text: str) -> str:
    for name in OPTIMIZERS:
        if name.lower() == text.lower():
            return name
    raise argparse.ArgumentTypeError(f"unknown optimizer {text!r}; choose from {', '.join(OPTIMIZERS)}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-made line breaks of descriptions and epilogs (examples stay aligned).
    Defaults are written into the help texts by hand, where they say something."""


TRAIN_EPILOG = """\
examples:
  tinyconv train                              # DLfS ch07: SimpleConvNet, Adam 0.001, 20 epochs, sample
  tinyconv train --epochs 5 --out runs/quick  # a shorter run into a chosen directory
  tinyconv train --dataset mnist --data-dir ~/data/mnist
  tinyconv train --net deep --dataset fashion-mnist --epochs 10 --threads 8
  tinyconv train --checkpoint run.ckpt --resume   # continue an interrupted run

writes into --out (default runs/<date-time>/):
  params.pkl          the trained parameters (a DLfS-compatible pickle)
  history.json        per-epoch loss and accuracies, settings, timings, version, build config
  accuracy.png        train and test accuracy per epoch (as DLfS's train_convnet.py)
  loss.png            training loss per step
  filters_before.png  first convolution layer's filters before training
  filters_after.png   ... and after (as DLfS's visualize_filter.py)
The pictures need matplotlib: pip install "tinyconv[plot]"; progress bars use tqdm if present.
Ctrl-C stops after the current step and still writes the results (exit code 130).

if it fails:
  Options, the data set, a --resume checkpoint and whether --out and the checkpoint's
  directory can be written are all checked first; a problem there is one "error:" line,
  exit code 2, and nothing is created. Once training has begun, a failure (NaN loss: exit 1;
  out of memory: exit 2; a write error: exit 1) leaves history.json with "status": "failed"
  and the reason in "error", the pictures drawn so far, and no params.pkl."""

EVALUATE_EPILOG = """\
examples:
  tinyconv evaluate runs/20240101-120000/params.pkl
  tinyconv evaluate params.pkl --dataset mnist --out results/   # DLfS's ch07/params.pkl works too

The network is recognised from the parameter names and shapes (W1..b3: SimpleConvNet,
W1..b8: DeepConvNet); --net forces one. Writes confusion_matrix.png and evaluation.json
into --out (default: the directory of PARAMS)."""

FILTERS_EPILOG = """\
examples:
  tinyconv filters runs/20240101-120000/params.pkl -o filters.png
  tinyconv filters params.pkl --nx 10 -o wide.png"""

INFO_EPILOG = """\
examples:
  tinyconv info
  tinyconv info --data-dir ~/data/mnist"""

MAIN_EPILOG = """\
examples:
  tinyconv train --epochs 5           # train DLfS's SimpleConvNet on the shipped sample
  tinyconv evaluate runs/<run>/params.pkl
  tinyconv filters runs/<run>/params.pkl -o filters.png
  tinyconv info

Run 'tinyconv COMMAND --help' for the options of each command."""


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="sample",
                        help="'sample' (default): 5,000/1,000 Fashion-MNIST images shipped with "
                             "tinyconv, offline; 'mnist' and 'fashion-mnist': the full sets, read "
                             "from disk or downloaded (see 'tinyconv info')")
    parser.add_argument("--data-dir", metavar="DIR", type=_path, default=None,
                        help="directory holding the data set's four IDX files; when given, the "
                             "files are read from there only (a missing one is an error), "
                             "nothing is searched or downloaded")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never download a data set; fail if it is not on disk")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tinyconv`` command."""
    from . import __version__

    parser = _Parser(
        prog="tinyconv", formatter_class=_HelpFormatter, epilog=MAIN_EPILOG,
        description="tinyconv: a small, fast CNN library with the API of "
                    "'Deep Learning from Scratch'.")
    parser.add_argument("--version", action="version", version=f"tinyconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", formatter_class=_HelpFormatter, epilog=TRAIN_EPILOG,
        help="train a network (default: DLfS chapter 7 on the shipped sample)",
        description="Train a convolutional network. The defaults reproduce DLfS's chapter 7\n"
                    "experiment (ch07/train_convnet.py): SimpleConvNet, Adam with lr 0.001,\n"
                    "mini-batches of 100, 20 epochs, accuracy measured on 1,000 samples per\n"
                    "epoch -- on the Fashion-MNIST sample shipped with tinyconv, so it runs offline.")
    train.add_argument("--net", choices=NETS, default="simple",
                       help="'simple' (default): SimpleConvNet (DLfS ch07); 'deep': DeepConvNet "
                            "(DLfS ch08)")
    _add_data_options(train)
    train.add_argument("--epochs", type=_int_in(1, MAX_EPOCHS), default=20, metavar="N",
                       help=f"number of epochs, 1 to {MAX_EPOCHS:,} (default: 20)")
    train.add_argument("--batch-size", type=_positive_int, default=100, metavar="N",
                       help="mini-batch size, at most the number of training images "
                            "(default: 100)")
    train.add_argument("--optimizer", type=_optimizer_name, default="Adam", metavar="NAME",
                       help=f"one of {', '.join(OPTIMIZERS)}, any case (default: Adam)")
    train.add_argument("--lr", type=_positive_float, default=0.001,
                       help="learning rate (default: 0.001)")
    train.add_argument("--train-size", type=_positive_int, default=None, metavar="N",
                       help="use only the first N training images (default: all)")
    train.add_argument("--test-size", type=_positive_int, default=None, metavar="N",
                       help="use only the first N test images (default: all)")
    train.add_argument("--eval-samples", type=_non_negative_int, default=1000, metavar="N",
                       help="measure the per-epoch accuracies on the first N training and test "
                            "images (DLfS's evaluate_sample_num_per_epoch); 0 means all "
                            "(default: 1000)")
    train.add_argument("--threads", type=_int_in(1, MAX_THREADS), default=None, metavar="N",
                       help=f"compute threads, 1 to {MAX_THREADS:,} (default: OMP_NUM_THREADS "
                            f"or the number of cores)")
    train.add_argument("--seed", type=_int_in(0, MAX_SEED), default=None,
                       help="random seed for the initial weights and the batch order, 0 to "
                            "2**64-1 (default: a fresh one, recorded in history.json)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="precision of the parameters and the computation (default: float32)")
    train.add_argument("--out", metavar="DIR", type=_path, default=None,
                       help=f"output directory (default: {DEFAULT_OUT_ROOT}/<date-time>/, created)")
    train.add_argument("--checkpoint", metavar="PATH", type=_path, default=None,
                       help="save a checkpoint to PATH after every epoch (its directory must "
                            "exist)")
    train.add_argument("--resume", action="store_true",
                       help="continue from --checkpoint if that file exists (else start afresh); "
                            "a checkpoint of another setup is an error")
    train.add_argument("--quiet", "-q", action="store_true",
                       help="print only warnings and errors (no progress, no per-epoch lines)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", formatter_class=_HelpFormatter, epilog=EVALUATE_EPILOG,
        help="accuracy, per-class accuracy and confusion matrix of saved parameters",
        description="Measure the accuracy of a saved network on a test set, per class too, and\n"
                    "draw its confusion matrix. Reads tinyconv's parameter files and DLfS's\n"
                    "(a pickle of a dict of float64 arrays W1, b1, ...).")
    evaluate.add_argument("params", metavar="PARAMS", type=_path, help="parameter file (.pkl or .npz)")
    evaluate.add_argument("--net", choices=("auto",) + NETS, default="auto",
                          help="network architecture; 'auto' (default) tells it from the parameters")
    _add_data_options(evaluate)
    evaluate.add_argument("--test-size", type=_positive_int, default=None, metavar="N",
                          help="use only the first N test images (default: all)")
    evaluate.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                          help="precision of the computation (default: float32)")
    evaluate.add_argument("--threads", type=_int_in(1, MAX_THREADS), default=None, metavar="N",
                          help=f"compute threads, 1 to {MAX_THREADS:,} (default: OMP_NUM_THREADS "
                               f"or the number of cores)")
    evaluate.add_argument("--out", metavar="DIR", type=_path, default=None,
                          help="where to write confusion_matrix.png and evaluation.json "
                               "(default: the directory of PARAMS)")
    evaluate.set_defaults(handler=_evaluate)

    filters = commands.add_parser(
        "filters", formatter_class=_HelpFormatter, epilog=FILTERS_EPILOG,
        help="draw the first convolution layer's filters of saved parameters",
        description="Draw the filters of a saved network's first convolution layer (its 'W1',\n"
                    "shape (FN, C, FH, FW); channel 0 of each filter) in grey, as DLfS's\n"
                    "ch07/visualize_filter.py.")
    filters.add_argument("params", metavar="PARAMS", type=_path, help="parameter file (.pkl or .npz)")
    filters.add_argument("-o", "--output", metavar="PNG", type=_path, default="filters.png",
                         help="picture file to write; its suffix (.png, .pdf, .svg, ...) chooses "
                              "the format (default: filters.png)")
    filters.add_argument("--nx", type=_int_in(1, MAX_FILTERS_PER_SIDE), default=8, metavar="N",
                         help=f"filters per row, 1 to {MAX_FILTERS_PER_SIDE} (default: 8)")
    filters.add_argument("--key", default="W1", help="which parameter holds the filters (default: W1)")
    filters.set_defaults(handler=_filters)

    info = commands.add_parser(
        "info", formatter_class=_HelpFormatter, epilog=INFO_EPILOG,
        help="build configuration, data set locations, optional packages",
        description="Show tinyconv's build and runtime configuration (as tinyconv.show_config()),\n"
                    "where each data set would be read from, and whether the optional packages\n"
                    "are installed.")
    info.add_argument("--data-dir", metavar="DIR", type=_path, default=None,
                      help="check this directory instead of the search path, as the commands' "
                           "--data-dir would")
    info.set_defaults(handler=_info)
    return parser


# ----------------------------------------------------------------------------------------------
# Shared helpers


def _say(quiet: bool, *parts: Any) -> None:
    if not quiet:
        print(*parts, flush=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _class_names(dataset: str) -> List[str]:
    if dataset == "mnist":
        return [str(digit) for digit in range(10)]
    from .datasets import FASHION_MNIST_CLASSES

    return list(FASHION_MNIST_CLASSES)


def _dataset_title(dataset: str) -> str:
    return {"sample": "the Fashion-MNIST sample", "mnist": "MNIST",
            "fashion-mnist": "Fashion-MNIST"}[dataset]


def _load_dataset(name: str, data_dir: Optional[str], download: bool):
    """``(x_train, t_train), (x_test, t_test)``: images (N, 1, 28, 28) float32 in [0, 1], labels."""
    from . import datasets

    try:
        if name == "sample":
            if data_dir is not None:
                _warn("note: --data-dir is ignored for --dataset sample (it ships with tinyconv)")
            return datasets.load_sample(flatten=False)
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", datasets.DatasetLocationWarning)
            splits = loader(flatten=False, data_dir=data_dir, download=download)
        for warning in caught:  # a partial copy passed over on the search path: say so, briefly
            if issubclass(warning.category, datasets.DatasetLocationWarning):
                _warn(f"warning: {warning.message}")
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)
        return splits
    except datasets.IncompleteDataDirError as error:
        raise CommandError(str(error).replace("data_dir", "--data-dir")) from None
    except datasets.DatasetNotFoundError as error:
        raise CommandError(f"{error}\n\nOn the command line: --data-dir DIR names the directory; "
                           f"--dataset sample needs no download.") from None
    except datasets.IdxFormatError as error:
        raise CommandError(str(error)) from None
    except OSError as error:  # an unreadable file (permissions, I/O error) of the data set
        raise CommandError(f"cannot read the {_dataset_title(name)} data set: {_os_reason(error)}") from None


def _limit(x: np.ndarray, t: np.ndarray, size: Optional[int], what: str, dataset: str):
    if size is None:
        return x, t
    if size > len(x):
        raise CommandError(f"--{what}-size {size} is larger than the {len(x):,} {what} images "
                           f"of {_dataset_title(dataset)}")
    return x[:size], t[:size]


def _os_reason(error: OSError) -> str:
    """An OSError as one short phrase: the reason, and the file when it is not a temporary one."""
    reason = error.strerror or str(error)
    name = error.filename
    if name is not None and not os.path.basename(os.fspath(name)).startswith("."):
        return f"{reason}: {os.fspath(name)}"
    return reason


def _check_regular_file(path: str, what: str) -> None:
    """A file to read must be a regular file: a directory, a device (/dev/zero would be read
    forever) or a pipe is refused before anything is read from it."""
    if not os.path.exists(path):
        raise CommandError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory, not a {what}")
    if not os.path.isfile(path):
        raise CommandError(f"{path} is not a regular file (a device or a pipe?), not a {what}")


def _read_params(path: str) -> Dict[str, np.ndarray]:
    from .serialization import ParamsFileError, read_params

    _check_regular_file(path, "parameter file")
    try:
        return read_params(path)
    except ParamsFileError as error:
        raise CommandError(f"cannot read parameters: {error}") from None
    except MemoryError:
        raise CommandError(f"cannot read parameters: {path} is too large for the memory") from None
    except OSError as error:  # permissions, I/O errors
        raise CommandError(f"cannot read parameters: {_os_reason(error)}") from None


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import tinyconv

        tinyconv.set_num_threads(threads)  # in range: the option's type checked it


def _write_json(path: Path, data: Any) -> None:
    """Write atomically, so a reader (or a crash) never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise _OutputError(f"cannot write {path}: {_os_reason(error)}") from None


class _Pictures:
    """Draws pictures into a directory; without matplotlib it says so once and goes on."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.written: List[str] = []
        self.unavailable = False

    def draw(self, file_name: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        from .visualize import INSTALL_HINT, PlottingUnavailableError

        if self.unavailable:
            return False
        try:
            draw(*args, save=self.directory / file_name, **kwargs)
        except OSError as error:
            raise _OutputError(f"cannot write {self.directory / file_name}: {_os_reason(error)}") from None
        except PlottingUnavailableError:
            self.unavailable = True
            _warn(f"note: matplotlib is not installed, so no pictures (.png) are drawn; "
                  f"to get them: {INSTALL_HINT}")
            return False
        self.written.append(file_name)
        return True


def _default_out_dir() -> Path:
    stamp = _datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = Path(DEFAULT_OUT_ROOT) / stamp
    suffix = 2
    while candidate.exists():  # two runs started within the same second
        candidate = Path(DEFAULT_OUT_ROOT) / f"{stamp}-{suffix}"
        suffix += 1
    return candidate


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the output directory {path}: {error.strerror or error}") from None
    return path


def _check_writable_dir(directory: Path, what: str) -> None:
    """``directory`` exists and a file can be created in it -- tried for real (a temporary file,
    removed at once), since permission bits say nothing about read-only mounts, ACLs or root."""
    if not directory.exists():
        raise CommandError(f"{what}: the directory {directory} does not exist")
    if not directory.is_dir():
        raise CommandError(f"{what}: {directory} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".tinyconv-write-test-")
    except OSError as error:
        raise CommandError(f"{what}: cannot write into {directory}: {error.strerror or error}") from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _check_out_dir_can_be_made(path: Path, what: str) -> None:
    """What :func:`_prepare_out_dir` will need, checked without creating anything: the
    directory, or its nearest existing ancestor, is a directory that can be written to."""
    if path.exists():
        if not path.is_dir():
            raise CommandError(f"{what}: {path} exists and is not a directory")
        _check_writable_dir(path, what)
        return
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CommandError(f"cannot create the output directory {path}: {ancestor} is not a directory")
    _check_writable_dir(ancestor, f"cannot create the output directory {path}")


def _prepare_out_dir(path: Path, what: str, file_names: Sequence[str]) -> Path:
    """Create the output directory if need be and make sure its files can be written (none of
    their names is taken by a directory); a directory created here is removed again when it
    turns out unusable, so a refused command leaves nothing behind."""
    if path.exists() and not path.is_dir():
        raise CommandError(f"{what}: {path} exists and is not a directory")
    created = not path.exists()
    _make_dir(path)
    try:
        _check_writable_dir(path, what)
        for name in file_names:
            if (path / name).is_dir():
                raise CommandError(f"{what}: cannot write {path / name}: a directory of that name is in the way")
    except CommandError:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return path


def _check_checkpoint_path(path: Path) -> None:
    """--checkpoint: a file path (not a directory) in an existing, writable directory."""
    if path.is_dir():
        raise CommandError(f"--checkpoint {path} is a directory; it must name a file")
    _check_writable_dir(path.parent, f"--checkpoint {path}")


# ----------------------------------------------------------------------------------------------
# train


def _build_training_network(net: str, dtype: str, seed: int):
    from .nets import DeepConvNet, SimpleConvNet

    if net == "simple":
        return SimpleConvNet(input_dim=IMAGE_SHAPE, conv_param=dict(DLFS_CONV_PARAM),
                             hidden_size=DLFS_HIDDEN_SIZE, output_size=10,
                             weight_init_std=DLFS_WEIGHT_INIT_STD, dtype=dtype, seed=seed)
    return DeepConvNet(input_dim=IMAGE_SHAPE, dtype=dtype, seed=seed)


def _epoch_losses(step_losses: Sequence[float], steps_per_epoch: int, epochs: int) -> List[float]:
    """The mean loss of each completed epoch, from the per-step losses."""
    return [float(np.mean(step_losses[i * steps_per_epoch:(i + 1) * steps_per_epoch]))
            for i in range(epochs)]


def _history(trainer: Any, settings: Dict[str, Any], status: str, timing: Dict[str, float],
             started: str, error: Optional[str] = None) -> Dict[str, Any]:
    import tinyconv

    completed = len(trainer.train_acc_list)
    losses = _epoch_losses(trainer.train_loss_list, trainer.iter_per_epoch, completed)
    records = [{"epoch": i + 1, "loss": losses[i], "train_acc": trainer.train_acc_list[i],
                "test_acc": trainer.test_acc_list[i],
                "seconds": trainer.epoch_time_list[i] if i < len(trainer.epoch_time_list) else None}
               for i in range(completed)]
    return {
        "tinyconv_version": tinyconv.__version__,
        "status": status,  # "running", "completed", "interrupted" or "failed"
        "error": error,  # why, when "failed"
        "started": started,
        "settings": settings,
        "epochs": records,
        "loss": losses,
        "train_acc": list(trainer.train_acc_list),
        "test_acc": list(trainer.test_acc_list),
        "train_loss": [float(v) for v in trainer.train_loss_list],
        "final_test_acc": trainer.final_test_acc,
        "timing": timing,
        "config": tinyconv.config(),
    }


def _train(args: argparse.Namespace) -> int:
    import tinyconv

    if args.resume and args.checkpoint is None:
        raise CommandError("--resume needs --checkpoint PATH (the file to continue from)")
    quiet = args.quiet
    # Everything that can be checked before training is, before anything is written.
    checkpoint = Path(args.checkpoint) if args.checkpoint is not None else None
    if checkpoint is not None:
        _check_checkpoint_path(checkpoint)
    resume_from = checkpoint if args.resume and checkpoint is not None and checkpoint.exists() else None
    if resume_from is not None:
        _check_regular_file(str(resume_from), "checkpoint")
    out_path = Path(args.out) if args.out else _default_out_dir()
    _check_out_dir_can_be_made(out_path, "--out")  # before the data set is loaded
    _set_threads(args.threads)
    # A fresh seed is drawn and recorded, so that every run can be repeated.
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    np.random.seed(seed % 2**32)  # for anything that draws from np.random, as DLfS code does
    started = _datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    clock = time.perf_counter()

    (x_train, t_train), (x_test, t_test) = _load_dataset(args.dataset, args.data_dir, args.download)
    x_train, t_train = _limit(x_train, t_train, args.train_size, "train", args.dataset)
    x_test, t_test = _limit(x_test, t_test, args.test_size, "test", args.dataset)
    _check_not_empty(x_train, "training", args.dataset)
    _check_not_empty(x_test, "test", args.dataset)
    if args.batch_size > len(x_train):
        raise CommandError(f"--batch-size {args.batch_size:,} is larger than the {len(x_train):,} "
                           f"training images{' (--train-size)' if args.train_size else ''}")
    load_seconds = time.perf_counter() - clock

    from .serialization import ParamsFileError
    from .trainer import NonFiniteLossError, Trainer
    from .visualize import filter_show, plot_accuracy, plot_loss

    def after_epoch(trainer: Any, record: Dict[str, Any]) -> None:
        # Kept current after every epoch, so a long run can be watched (and survives a crash).
        # (history_path, settings and timing are set below, before training starts.)
        _write_json(history_path, _history(trainer, settings, "running", timing, started))

    network = _build_training_network(args.net, args.dtype, seed)
    eval_samples = args.eval_samples or None
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer=args.optimizer,
                      optimizer_param={"lr": args.lr}, evaluate_sample_num_per_epoch=eval_samples,
                      verbose=not quiet, seed=seed, callback=after_epoch, checkpoint=args.checkpoint)
    if resume_from is not None:
        # Loaded here rather than by Trainer.train(), so that a checkpoint of another setup is
        # refused before the run directory exists.
        try:
            trainer.load_checkpoint(resume_from)
        except ParamsFileError as error:
            raise CommandError(f"--resume: cannot continue from the checkpoint: {error}") from None
        except OSError as error:
            raise CommandError(f"--resume: cannot read {resume_from}: {_os_reason(error)}") from None
    # Created only now, once everything above has passed, so a refused start leaves nothing.
    out_dir = _prepare_out_dir(out_path, "--out", TRAIN_OUTPUTS)

    settings = {
        "net": args.net, "network": type(network).__name__, "dataset": args.dataset,
        "train_size": len(x_train), "test_size": len(x_test), "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
        "eval_samples": eval_samples, "threads": tinyconv.get_num_threads(), "seed": seed,
        "dtype": args.dtype, "data_dir": args.data_dir, "checkpoint": args.checkpoint,
        "resume": args.resume, "out": str(out_dir),
    }
    _say(quiet, f"Training {type(network).__name__} ({args.dtype}) on {_dataset_title(args.dataset)}: "
                f"{len(x_train):,} training and {len(x_test):,} test images")
    _say(quiet, f"{args.optimizer} lr {args.lr:g}, batch {args.batch_size}, {_plural(args.epochs, 'epoch')}, "
                f"{_plural(settings['threads'], 'thread')}, seed {seed}; output in {out_dir}/")
    if resume_from is not None:
        _say(quiet, f"resumed from {resume_from} after epoch {trainer.current_epoch}/{args.epochs}")
        _say(quiet, "note: filters_before.png is not redrawn when resuming (the checkpoint holds "
                    "only the current weights)")

    timing = {"load_seconds": load_seconds}
    history_path = out_dir / "history.json"
    pictures = _Pictures(out_dir)
    train_clock = time.perf_counter()

    def failed(reason: str, hint: str, exit_code: int) -> int:
        """Record the failure in history.json (no params.pkl is written) and report it."""
        timing["train_seconds"] = time.perf_counter() - train_clock
        _warn(f"error: {reason}")
        try:
            _write_json(history_path, _history(trainer, settings, "failed", timing, started, error=reason))
        except _OutputError as error:
            _warn(f"error: {error} (the run's state could not be recorded either)")
        else:
            _warn(f"{hint}No parameters were saved; the history so far is in {history_path}.")
        return exit_code

    try:
        if resume_from is None:
            pictures.draw("filters_before.png", filter_show, network.params["W1"])
        trainer.train()
        timing["train_seconds"] = time.perf_counter() - train_clock
        # Pictures first and the parameters last, so params.pkl exists only after a success.
        if trainer.train_acc_list:
            pictures.draw("accuracy.png", plot_accuracy, trainer.train_acc_list, trainer.test_acc_list)
        if trainer.train_loss_list:
            pictures.draw("loss.png", plot_loss, trainer.train_loss_list)
        pictures.draw("filters_after.png", filter_show, network.params["W1"])
        try:
            network.save_params(str(out_dir / "params.pkl"))
        except OSError as error:
            raise _OutputError(f"cannot write {out_dir / 'params.pkl'}: {_os_reason(error)}") from None
    except NonFiniteLossError as error:
        return failed(str(error), f"Try a smaller --lr (now {args.lr:g}). ", EXIT_FAILURE)
    except MemoryError:
        return failed(f"out of memory while training on batches of {args.batch_size:,} images",
                      "Try a smaller --batch-size (or --eval-samples). ", EXIT_USAGE)
    except _OutputError as error:
        return failed(str(error), "", EXIT_FAILURE)
    except BrokenPipeError:  # stdout's reader went away (`tinyconv train | head`): main() stops quietly
        raise
    except OSError as error:
        # Trainer.train writes no file but the checkpoint; name it, not its temporary file.
        what = f"cannot write the checkpoint {checkpoint}" if checkpoint is not None else "training stopped"
        return failed(f"{what}: {error.strerror or error}", "", EXIT_FAILURE)
    except KeyboardInterrupt:  # Ctrl-C outside a training step, or a second one within it
        failed("interrupted (Ctrl-C) before the results were written", "", EXIT_INTERRUPTED)
        raise
    timing["total_seconds"] = time.perf_counter() - clock
    status = "interrupted" if trainer.interrupted else "completed"
    _write_json(history_path, _history(trainer, settings, status, timing, started))

    written = ["params.pkl", "history.json"] + pictures.written
    _say(quiet, f"Wrote {', '.join(written)} to {out_dir}/ ({timing['total_seconds']:.1f} s in all)")
    if trainer.interrupted:
        _warn(f"Interrupted after {_plural(trainer.current_epoch, 'complete epoch')}; the parameters and "
              f"history so far are in {out_dir}/.")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _check_not_empty(x: np.ndarray, what: str, dataset: str) -> None:
    if len(x) == 0:
        raise CommandError(f"{_dataset_title(dataset)} holds no {what} images")


# ----------------------------------------------------------------------------------------------
# evaluate


def _guess_net(params: Dict[str, np.ndarray]) -> str:
    keys = set(params)
    if keys == {f"{kind}{i}" for kind in "Wb" for i in range(1, 4)}:
        return "simple"
    if keys == {f"{kind}{i}" for kind in "Wb" for i in range(1, 9)}:
        return "deep"
    raise CommandError(f"cannot tell which network these parameters belong to (keys "
                       f"{sorted(keys)}); W1..b3 is a SimpleConvNet, W1..b8 a DeepConvNet. "
                       f"Pass --net if it is one of them.")


def _network_for(params: Dict[str, np.ndarray], net: str, dtype: str, source: str):
    """A network shaped after ``params`` (filter count and size, hidden and output sizes are
    read from the arrays; padding 0 and stride 1 are assumed, as in DLfS), with them loaded.

    Every shape is checked against the architecture -- and the first layer against the data
    set's one-channel 28x28 images -- before the network is built, so a file of another
    architecture is a clear error, and the network never allocates more than the file holds."""
    from .nets import DeepConvNet, SimpleConvNet
    from .serialization import ParamsFileError

    title = "SimpleConvNet" if net == "simple" else "DeepConvNet"
    needed = ("W1", "W2", "W3") if net == "simple" else ("W1", "W7", "W8")
    for key in needed:
        if key not in params:
            raise CommandError(f"{source} has no {key!r}, which a {title} needs")
    first, hidden_key, output_key = (params[key] for key in needed)
    channels = IMAGE_SHAPE[0]
    if first.ndim != 4 or hidden_key.ndim != 2 or output_key.ndim != 2:
        raise CommandError(f"{source}: {', '.join(needed)} have shapes {first.shape}, "
                           f"{hidden_key.shape}, {output_key.shape}; a {title} needs 4-D, 2-D, 2-D")
    if first.shape[1] != channels:
        raise CommandError(f"{source}: W1 has shape {first.shape}, filters over {first.shape[1]} "
                           f"input channels, but the data set's images have {channels} (28x28 grey)")
    hidden, outputs = hidden_key.shape[1], output_key.shape[1]
    if min(first.shape) < 1 or hidden < 1 or outputs < 1:
        raise CommandError(f"{source}: W1, {needed[1]}, {needed[2]} have shapes {first.shape}, "
                           f"{hidden_key.shape}, {output_key.shape}; no dimension may be 0")
    try:
        if net == "simple":
            filter_num, _, filter_h, filter_w = first.shape
            if filter_h != filter_w:
                raise CommandError(f"{source}: W1 has shape {first.shape}; a SimpleConvNet's "
                                   f"filters are square")
            conv_param = {"filter_num": filter_num, "filter_size": filter_h, "pad": 0, "stride": 1}

            def build(hidden_size: int, output_size: int):
                return SimpleConvNet(input_dim=IMAGE_SHAPE, conv_param=conv_param, hidden_size=hidden_size,
                                     output_size=output_size, dtype=dtype, seed=0)
        else:
            def build(hidden_size: int, output_size: int):
                return DeepConvNet(input_dim=IMAGE_SHAPE, hidden_size=hidden_size,
                                   output_size=output_size, dtype=dtype, seed=0)
        # A probe with one hidden unit and one output costs little more than W1 itself; its
        # shapes, with the file's hidden and output sizes put in, are what the file must hold.
        probe = build(1, 1).params
        expected = {key: value.shape for key, value in probe.items()}
        hidden_in, output_in = needed[1], needed[2]
        expected[hidden_in] = (probe[hidden_in].shape[0], hidden)
        expected["b" + hidden_in[1:]] = (hidden,)
        expected[output_in] = (hidden, outputs)
        expected["b" + output_in[1:]] = (outputs,)
        problems = [f"{key} has shape {params[key].shape}, expected {shape}"
                    for key, shape in expected.items() if key in params and params[key].shape != shape]
        missing = [key for key in expected if key not in params]
        if missing:
            problems.append(f"{', '.join(missing)} missing")
        if problems:
            raise CommandError(f"{source} does not fit a {title} for 28x28 images: "
                               + "; ".join(problems))
        network = build(hidden, outputs)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 values beyond float32: inf
            network.load_state_dict(params, source=source)
    except (ParamsFileError, ValueError) as error:
        raise CommandError(f"the parameters do not fit a {net} network: {error}") from None
    except MemoryError:
        raise CommandError(f"{source}: a {title} of these sizes is too large for the memory") from None
    return network


def _predict_labels(network: Any, x: np.ndarray, batch_size: int = 100) -> np.ndarray:
    predictions = [np.argmax(network.predict(x[start:start + batch_size]), axis=1)
                   for start in range(0, len(x), batch_size)]
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def _evaluate(args: argparse.Namespace) -> int:
    from .visualize import confusion_matrix, plot_confusion_matrix

    _set_threads(args.threads)
    params = _read_params(args.params)
    net = _guess_net(params) if args.net == "auto" else args.net
    network = _network_for(params, net, args.dtype, args.params)
    names = _class_names(args.dataset)
    outputs = params["W3" if net == "simple" else "W8"].shape[1]
    if outputs != len(names):
        raise CommandError(f"the network has {outputs} outputs but {_dataset_title(args.dataset)} "
                           f"has {len(names)} classes")
    out_path = Path(args.out) if args.out else Path(args.params).resolve().parent
    out_what = "--out" if args.out else "the directory of PARAMS (choose another with --out)"
    _check_out_dir_can_be_made(out_path, out_what)  # now, not after the evaluation
    _, (x_test, t_test) = _load_dataset(args.dataset, args.data_dir, args.download)
    x_test, t_test = _limit(x_test, t_test, args.test_size, "test", args.dataset)
    _check_not_empty(x_test, "test", args.dataset)

    try:
        predicted = _predict_labels(network, x_test)
    except MemoryError:
        raise CommandError(f"out of memory evaluating {type(network).__name__} from {args.params}") from None
    cm = confusion_matrix(t_test, predicted, num_classes=len(names))
    correct = int(np.trace(cm))
    accuracy = correct / len(t_test)
    print(f"{type(network).__name__} from {args.params} on {_dataset_title(args.dataset)} "
          f"({len(t_test):,} test images)")
    print(f"accuracy: {accuracy:.4f} ({correct:,} of {len(t_test):,})")
    print()
    width = max(len(name) for name in names) + 3
    print(f"{'class':<{width}} {'correct':>8} {'total':>6} {'accuracy':>9}")
    per_class = []
    for label, name in enumerate(names):
        total = int(cm[label].sum())
        hits = int(cm[label, label])
        class_accuracy = hits / total if total else None
        per_class.append({"label": label, "name": name, "correct": hits, "total": total,
                          "accuracy": class_accuracy})
        shown = f"{class_accuracy:.3f}" if class_accuracy is not None else "-"
        print(f"{f'{label} {name}':<{width}} {hits:>8} {total:>6} {shown:>9}")

    out_dir = _prepare_out_dir(out_path, out_what, EVALUATE_OUTPUTS)
    pictures = _Pictures(out_dir)
    pictures.draw("confusion_matrix.png", plot_confusion_matrix, cm, names,
                  title=f"{Path(args.params).name} on {_dataset_title(args.dataset)} "
                        f"(accuracy {accuracy:.3f})")
    _write_json(out_dir / "evaluation.json", {
        "params": str(args.params), "network": type(network).__name__, "dataset": args.dataset,
        "test_size": len(t_test), "accuracy": accuracy, "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    })
    print()
    print(f"Wrote {', '.join(pictures.written + ['evaluation.json'])} to {out_dir}/")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# filters and info


def _filters(args: argparse.Namespace) -> int:
    from .visualize import filter_show, have_matplotlib, INSTALL_HINT

    params = _read_params(args.params)
    if args.key not in params:
        raise CommandError(f"{args.params} has no {args.key!r} (it holds {', '.join(params)})")
    filters = params[args.key]
    if filters.ndim != 4:
        raise CommandError(f"{args.key} in {args.params} has shape {filters.shape}; convolution "
                           f"filters have 4 dimensions (FN, C, FH, FW)")
    if min(filters.shape) < 1:
        raise CommandError(f"{args.key} in {args.params} has shape {filters.shape}: no filters to draw")
    rows = math.ceil(filters.shape[0] / args.nx)
    if filters.shape[0] > MAX_FILTERS_DRAWN or rows > MAX_FILTERS_PER_SIDE:
        raise CommandError(f"{args.key} in {args.params} holds {filters.shape[0]:,} filters, "
                           f"{rows:,} rows of --nx {args.nx}; a picture holds at most "
                           f"{MAX_FILTERS_DRAWN:,} filters in at most {MAX_FILTERS_PER_SIDE} rows")
    if not have_matplotlib():
        raise CommandError(f"matplotlib is needed to draw the filters; install it with: {INSTALL_HINT}")
    output = Path(args.output)
    formats = _picture_formats()
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CommandError(f"-o {output}: the file name must end in a picture format's suffix "
                           f"({', '.join('.' + name for name in formats)})")
    if output.is_dir():
        raise CommandError(f"-o {output} is a directory; it must name a file")
    if output.parent != Path("."):
        _make_dir(output.parent)
    _check_writable_dir(output.parent, f"-o {output}")
    try:
        filter_show(filters, nx=args.nx, save=output)
    except OSError as error:
        raise _OutputError(f"cannot write {output}: {_os_reason(error)}") from None
    count, channels, height, width = filters.shape
    print(f"Wrote {output}: {count} filters of {height}x{width}"
          + (f" (channel 0 of {channels})" if channels > 1 else ""))
    return EXIT_OK


# Formats matplotlib writes by itself or through Pillow's built-in codecs; left out: pgf (needs a
# TeX installation) and avif (an optional Pillow codec), which fail only when the file is written.
PICTURE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp",
                   "gif", "raw", "rgba")


def _picture_formats() -> List[str]:
    """The file suffixes ``tinyconv filters`` can write: PICTURE_FORMATS that this matplotlib
    knows."""
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    return [name for name in PICTURE_FORMATS if name in known]


def _package_version(module_name: str) -> Optional[str]:
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return str(getattr(module, "__version__", "installed"))


def _info(args: argparse.Namespace) -> int:
    import tinyconv
    from .datasets import ENV_VAR, SAMPLE_DIR, dataset_locations

    tinyconv.show_config()
    print()
    if args.data_dir is None:
        print("Data sets (searched in this order; the first place holding all four files wins):")
    else:
        print(f"Data sets (with --data-dir, read from {args.data_dir} only; nothing else is "
              f"searched or downloaded):")
    print(f"  sample: {SAMPLE_DIR} (shipped with tinyconv)")
    for name in ("mnist", "fashion-mnist"):
        locations = dataset_locations(name, data_dir=args.data_dir)
        found = next((location for location in locations if location.complete), None)
        if found:
            verdict = f"read from {found.path}"
        elif args.data_dir is not None:
            verdict = "not readable: --data-dir lacks files (see below)"
        else:
            cache = next(location for location in locations if location.source == "cache")
            verdict = f"not on disk; would be downloaded into {cache.path}"
        print(f"  {name}: {verdict}")
        for location in locations:
            if location.source == "cache" and not os.environ.get(ENV_VAR):
                print(f"    - {ENV_VAR}: not set")  # in its place in the search order
            print(f"    - {location.describe()}")
    print()
    print("Optional packages:")
    for module_name, purpose, extra in (("matplotlib", "pictures", "plot"),
                                        ("tqdm", "progress bars", "progress"),
                                        ("platformdirs", "standard cache directory", "cache")):
        version = _package_version(module_name)
        state = version if version else f'not installed (pip install "tinyconv[{extra}]")'
        print(f"  {module_name} ({purpose}): {state}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# Entry point


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``tinyconv`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    code instead of exiting, so it can be called from Python and tests."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, or a usage error already printed
        code = exit_request.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    import tinyconv

    threads_before = tinyconv.get_num_threads()
    try:
        return args.handler(args)
    except CommandError as error:
        _warn(f"error: {error}")
        return error.exit_code
    except _OutputError as error:  # a write that failed after the work was done
        _warn(f"error: {error}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _warn("\nInterrupted.")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`tinyconv evaluate ... | head`): stop quietly, as Unix tools do,
        # and keep Python from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as error:  # e.g. a full disk or a read-only output directory
        _warn(f"error: {error}")
        return EXIT_FAILURE
    finally:
        # --threads is process-wide; give callers of main() (tests, notebooks) their setting back.
        tinyconv.set_num_threads(threads_before)


if __name__ == "__main__":  # pragma: no cover - `python -m tinyconv` goes through __main__.py
    sys.exit(main())
