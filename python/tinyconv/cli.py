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

Exit codes: 0 success; 1 training or writing failed (e.g. the loss became NaN); 2 bad usage or
unusable input (unknown option, data set not found, unreadable parameter file); 130 interrupted
with Ctrl-C.

The heavy modules (networks, trainer, matplotlib) are imported by the commands that need them,
so ``--help`` and ``info`` answer at once.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

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


class CommandError(Exception):
    """A problem the user can fix (bad input, missing data): printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------------------------
# Argument parsing


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "at least 1")
_non_negative_int = _int_at_least(0, "0 or more")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


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
Ctrl-C stops after the current step and still writes the results (exit code 130)."""

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
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="directory holding the data set's four IDX files (searched first)")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never download a data set; fail if it is not on disk")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tinyconv`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
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
    train.add_argument("--epochs", type=_positive_int, default=20, metavar="N",
                       help="number of epochs (default: 20)")
    train.add_argument("--batch-size", type=_positive_int, default=100, metavar="N",
                       help="mini-batch size (default: 100)")
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
    train.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="compute threads (default: OMP_NUM_THREADS or the number of cores)")
    train.add_argument("--seed", type=int, default=None,
                       help="random seed for the initial weights and the batch order "
                            "(default: a fresh one, recorded in history.json)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="precision of the parameters and the computation (default: float32)")
    train.add_argument("--out", metavar="DIR", default=None,
                       help=f"output directory (default: {DEFAULT_OUT_ROOT}/<date-time>/, created)")
    train.add_argument("--checkpoint", metavar="PATH", default=None,
                       help="save a checkpoint to PATH after every epoch")
    train.add_argument("--resume", action="store_true",
                       help="continue from --checkpoint if that file exists (else start afresh)")
    train.add_argument("--quiet", "-q", action="store_true",
                       help="print only warnings and errors (no progress, no per-epoch lines)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", formatter_class=_HelpFormatter, epilog=EVALUATE_EPILOG,
        help="accuracy, per-class accuracy and confusion matrix of saved parameters",
        description="Measure the accuracy of a saved network on a test set, per class too, and\n"
                    "draw its confusion matrix. Reads tinyconv's parameter files and DLfS's\n"
                    "(a pickle of a dict of float64 arrays W1, b1, ...).")
    evaluate.add_argument("params", metavar="PARAMS", help="parameter file (.pkl or .npz)")
    evaluate.add_argument("--net", choices=("auto",) + NETS, default="auto",
                          help="network architecture; 'auto' (default) tells it from the parameters")
    _add_data_options(evaluate)
    evaluate.add_argument("--test-size", type=_positive_int, default=None, metavar="N",
                          help="use only the first N test images (default: all)")
    evaluate.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                          help="precision of the computation (default: float32)")
    evaluate.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                          help="compute threads (default: OMP_NUM_THREADS or the number of cores)")
    evaluate.add_argument("--out", metavar="DIR", default=None,
                          help="where to write confusion_matrix.png and evaluation.json "
                               "(default: the directory of PARAMS)")
    evaluate.set_defaults(handler=_evaluate)

    filters = commands.add_parser(
        "filters", formatter_class=_HelpFormatter, epilog=FILTERS_EPILOG,
        help="draw the first convolution layer's filters of saved parameters",
        description="Draw the filters of a saved network's first convolution layer (its 'W1',\n"
                    "shape (FN, C, FH, FW); channel 0 of each filter) in grey, as DLfS's\n"
                    "ch07/visualize_filter.py.")
    filters.add_argument("params", metavar="PARAMS", help="parameter file (.pkl or .npz)")
    filters.add_argument("-o", "--output", metavar="PNG", default="filters.png",
                         help="picture file to write (default: filters.png)")
    filters.add_argument("--nx", type=_positive_int, default=8, metavar="N",
                         help="filters per row (default: 8)")
    filters.add_argument("--key", default="W1", help="which parameter holds the filters (default: W1)")
    filters.set_defaults(handler=_filters)

    info = commands.add_parser(
        "info", formatter_class=_HelpFormatter, epilog=INFO_EPILOG,
        help="build configuration, data set locations, optional packages",
        description="Show tinyconv's build and runtime configuration (as tinyconv.show_config()),\n"
                    "where each data set would be read from, and whether the optional packages\n"
                    "are installed.")
    info.add_argument("--data-dir", metavar="DIR", default=None,
                      help="also check this directory, as the commands' --data-dir would")
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
        return loader(flatten=False, data_dir=data_dir, download=download)
    except datasets.DatasetNotFoundError as error:
        raise CommandError(f"{error}\n\nOn the command line: --data-dir DIR names the directory; "
                           f"--dataset sample needs no download.") from None
    except datasets.IdxFormatError as error:
        raise CommandError(str(error)) from None


def _limit(x: np.ndarray, t: np.ndarray, size: Optional[int], what: str, dataset: str):
    if size is None:
        return x, t
    if size > len(x):
        raise CommandError(f"--{what}-size {size} is larger than the {len(x):,} {what} images "
                           f"of {_dataset_title(dataset)}")
    return x[:size], t[:size]


def _read_params(path: str) -> Dict[str, np.ndarray]:
    from .serialization import ParamsFileError, read_params

    try:
        return read_params(path)
    except FileNotFoundError:
        raise CommandError(f"parameter file not found: {path}") from None
    except IsADirectoryError:
        raise CommandError(f"{path} is a directory, not a parameter file") from None
    except ParamsFileError as error:
        raise CommandError(f"cannot read parameters: {error}") from None


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import tinyconv

        tinyconv.set_num_threads(threads)


def _write_json(path: Path, data: Any) -> None:
    """Write atomically, so a reader (or a crash) never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


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
             started: str) -> Dict[str, Any]:
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
    _set_threads(args.threads)
    # A fresh seed is drawn and recorded, so that every run can be repeated.
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    np.random.seed(seed % 2**32)  # for anything that draws from np.random, as DLfS code does
    started = _datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    clock = time.perf_counter()

    (x_train, t_train), (x_test, t_test) = _load_dataset(args.dataset, args.data_dir, args.download)
    x_train, t_train = _limit(x_train, t_train, args.train_size, "train", args.dataset)
    x_test, t_test = _limit(x_test, t_test, args.test_size, "test", args.dataset)
    load_seconds = time.perf_counter() - clock
    # Created only once the data is there, so a failed start leaves no empty run directory.
    out_dir = _make_dir(Path(args.out) if args.out else _default_out_dir())

    from .trainer import NonFiniteLossError, Trainer
    from .visualize import filter_show, plot_accuracy, plot_loss

    network = _build_training_network(args.net, args.dtype, seed)
    eval_samples = args.eval_samples or None
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

    pictures = _Pictures(out_dir)
    resuming = args.resume and os.path.exists(args.checkpoint)
    if resuming:
        _say(quiet, "note: filters_before.png is not redrawn when resuming (the checkpoint holds "
                    "only the current weights)")
    else:
        pictures.draw("filters_before.png", filter_show, network.params["W1"])

    timing = {"load_seconds": load_seconds}
    history_path = out_dir / "history.json"

    def after_epoch(trainer: Any, record: Dict[str, Any]) -> None:
        # Kept current after every epoch, so a long run can be watched (and survives a crash).
        _write_json(history_path, _history(trainer, settings, "running", timing, started))

    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer=args.optimizer,
                      optimizer_param={"lr": args.lr}, evaluate_sample_num_per_epoch=eval_samples,
                      verbose=not quiet, seed=seed, callback=after_epoch,
                      checkpoint=args.checkpoint, resume=args.resume)
    train_clock = time.perf_counter()
    try:
        trainer.train()
    except NonFiniteLossError as error:
        timing["train_seconds"] = time.perf_counter() - train_clock
        _write_json(history_path, _history(trainer, settings, "failed", timing, started))
        _warn(f"error: {error}")
        _warn(f"Try a smaller --lr (now {args.lr:g}). No parameters were saved; the history so far "
              f"is in {history_path}.")
        return EXIT_FAILURE
    timing["train_seconds"] = time.perf_counter() - train_clock

    network.save_params(str(out_dir / "params.pkl"))
    if trainer.train_acc_list:
        pictures.draw("accuracy.png", plot_accuracy, trainer.train_acc_list, trainer.test_acc_list)
    if trainer.train_loss_list:
        pictures.draw("loss.png", plot_loss, trainer.train_loss_list)
    pictures.draw("filters_after.png", filter_show, network.params["W1"])
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
    read from the arrays; padding 0 and stride 1 are assumed, as in DLfS), with them loaded."""
    from .nets import DeepConvNet, SimpleConvNet
    from .serialization import ParamsFileError

    try:
        if net == "simple":
            W1, W2, W3 = params["W1"], params["W2"], params["W3"]
            if W1.ndim != 4 or W2.ndim != 2 or W3.ndim != 2:
                raise CommandError(f"{source}: W1, W2, W3 have shapes {W1.shape}, {W2.shape}, "
                                   f"{W3.shape}; a SimpleConvNet needs 4-D, 2-D, 2-D")
            network = SimpleConvNet(
                input_dim=(W1.shape[1],) + IMAGE_SHAPE[1:],
                conv_param={"filter_num": W1.shape[0], "filter_size": W1.shape[2], "pad": 0, "stride": 1},
                hidden_size=W2.shape[1], output_size=W3.shape[1], dtype=dtype, seed=0)
        else:
            W7, W8 = params["W7"], params["W8"]
            network = DeepConvNet(input_dim=IMAGE_SHAPE, hidden_size=W7.shape[1],
                                  output_size=W8.shape[1], dtype=dtype, seed=0)
        network.load_state_dict(params, source=source)
    except KeyError as error:
        raise CommandError(f"{source} has no {error.args[0]!r}, which a "
                           f"{'SimpleConvNet' if net == 'simple' else 'DeepConvNet'} needs") from None
    except (ParamsFileError, ValueError, IndexError) as error:
        raise CommandError(f"the parameters do not fit a {net} network: {error}") from None
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
    _, (x_test, t_test) = _load_dataset(args.dataset, args.data_dir, args.download)
    x_test, t_test = _limit(x_test, t_test, args.test_size, "test", args.dataset)

    names = _class_names(args.dataset)
    outputs = params["W3" if net == "simple" else "W8"].shape[1]
    if outputs != len(names):
        raise CommandError(f"the network has {outputs} outputs but {_dataset_title(args.dataset)} "
                           f"has {len(names)} classes")
    predicted = _predict_labels(network, x_test)
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

    out_dir = _make_dir(Path(args.out) if args.out else Path(args.params).resolve().parent)
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
    if not have_matplotlib():
        raise CommandError(f"matplotlib is needed to draw the filters; install it with: {INSTALL_HINT}")
    output = Path(args.output)
    if output.parent != Path("."):
        _make_dir(output.parent)
    filter_show(filters, nx=args.nx, save=output)
    count, channels, height, width = filters.shape
    print(f"Wrote {output}: {count} filters of {height}x{width}"
          + (f" (channel 0 of {channels})" if channels > 1 else ""))
    return EXIT_OK


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
    print("Data sets (searched in this order; the first place holding all four files wins):")
    print(f"  sample: {SAMPLE_DIR} (shipped with tinyconv)")
    for name in ("mnist", "fashion-mnist"):
        locations = dataset_locations(name, data_dir=args.data_dir)
        found = next((location for location in locations if location.complete), None)
        cache = next(location for location in locations if location.source == "cache")
        verdict = (f"read from {found.path}" if found
                   else f"not on disk; would be downloaded into {cache.path}")
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
