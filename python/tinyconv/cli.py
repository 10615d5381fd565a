"""The ``tinyconv`` command line (also ``python -m tinyconv``).

Commands:

* ``tinyconv train`` -- train a network (DLfS's SimpleConvNet or DeepConvNet, or a ResNet); the
  defaults reproduce DLfS's chapter 7 experiment (``ch07/train_convnet.py``) on the Fashion-MNIST
  sample shipped with tinyconv, offline, and write the parameters, the history and the pictures
  into ``--out``.
* ``tinyconv finetune --init PARAMS`` -- transfer learning: a trained network, a new head for
  other classes, frozen or slower-learning layers; the same outputs as ``train``.
* ``tinyconv evaluate PARAMS`` -- accuracy, per-class accuracy and a confusion matrix of a saved
  network (tinyconv's or DLfS's parameter files).
* ``tinyconv filters PARAMS`` -- the picture of a saved network's first convolution filters.
* ``tinyconv export PARAMS MODEL.onnx`` -- the saved network as an ONNX model, for ONNX Runtime
  and other runtimes (:func:`tinyconv.export.to_onnx`; needs the ``onnx`` extra).
* ``tinyconv summary [PARAMS]`` -- a network's layer table: output shapes, parameters,
  multiply-adds (``--net resnet50`` for one by name).

Which network a parameter file holds, and building it, is :mod:`tinyconv.nets`' job
(:func:`~tinyconv.nets.network_from_params`); so are each network's training defaults.
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
``"status": "failed"`` and the reason in ``"error"``, and no parameter file.

The heavy modules (networks, trainer, matplotlib) are imported by the commands that need them,
so ``--help`` and ``info`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _datetime
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import numpy as np
import numpy.typing as npt

from . import _MAX_THREADS
from ._typing import Array

if TYPE_CHECKING:
    from .network import Network

# A data set's ((x_train, t_train), (x_test, t_test)), as the loaders return it.
_Splits = tuple[tuple[Array, Array], tuple[Array, Array]]

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C

DATASETS = ("sample", "mnist", "fashion-mnist")
OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
LR_SCHEDULES = (
    "constant",
    "cosine",
    "step",
)  # tinyconv.trainer.LR_SCHEDULES, without importing it for --help
SAMPLING_MODES = ("replacement", "permutation")
IMAGE_SHAPE = (1, 28, 28)
DEFAULT_OUT_ROOT = "runs"
FINETUNE_EPOCHS = 10
# finetune's rates: the head learns at the net's usual training rate, the pre-trained rest ten
# times slower, so that it adapts without forgetting what it learnt.
BACKBONE_LR_DIVISOR = 10
# Optimizers that scale each step by gradient statistics, and the rate they get when --lr is not
# given (a momentum-SGD default such as a ResNet's 0.1 makes them diverge).
ADAPTIVE_OPTIMIZERS = ("adagrad", "rmsprop", "adam")
ADAPTIVE_DEFAULT_LR = 0.001

# Limits of the options, so that nonsense is a usage error rather than a crash or a run that
# never ends. Threads: the core's own limit (tinyconv.set_num_threads).
MAX_THREADS = _MAX_THREADS
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**64 - 1  # numpy's SeedSequence takes any size; 64 bits are plenty and print well
# `tinyconv filters`: a picture of at most 256 filters per row or column and 4,096 in all keeps
# it under ~20,000 pixels a side (matplotlib's Agg limit is 65,536) and ~100 MB of memory.
MAX_FILTERS_PER_SIDE = 256
MAX_FILTERS_DRAWN = 4096
# `tinyconv summary`: sizes that a description can take without building absurd arrays (the
# network is built, its fully connected head included).
MAX_SUMMARY_CLASSES = 100_000
MAX_SUMMARY_BATCH = 2**20
MAX_IMAGE_SIDE = 65_536
# What train and finetune write besides the parameter file (params.pkl or params.npz).
TRAIN_OUTPUTS = (
    "history.json",
    "accuracy.png",
    "loss.png",
    "filters_before.png",
    "filters_after.png",
)
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

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``minimum`` to ``maximum`` (no maximum if None)."""
    if maximum is None:
        wording = {0: "0 or more", 1: "at least 1"}.get(minimum, f"at least {minimum}")
    else:
        wording = f"from {minimum} to {maximum:,}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than int() accepts
            raise argparse.ArgumentTypeError(
                f"expected a whole number, got {text[:40]!r}"
            ) from None
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
    raise argparse.ArgumentTypeError(
        f"unknown optimizer {text!r}; choose from {', '.join(OPTIMIZERS)}"
    )


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-made line breaks of descriptions and epilogs (examples stay aligned).
    Defaults are written into the help texts by hand, where they say something."""


def _classes(text: str) -> tuple[int, ...]:
    """An argparse type: class numbers separated by commas, each once, at least two (a
    one-class classifier learns nothing). Whether they exist depends on the data set and is
    checked by the command."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and part.isascii() for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected class numbers separated by commas (e.g. 5,6,7,8,9), got {text[:40]!r}"
        )
    classes = tuple(int(part) for part in parts)
    repeated = sorted({label for label in classes if classes.count(label) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"class {repeated[0]} is given twice in {text[:40]!r}")
    if len(classes) < 2:
        raise argparse.ArgumentTypeError(f"give at least 2 classes, got {text[:40]!r}")
    return classes


def _image_shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected three positive integers C,H,W (e.g. 3,224,224), got {text[:40]!r}"
        )
    shape = tuple(int(part) for part in parts)
    if min(shape) < 1 or max(shape) > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(
            f"each of C,H,W must be 1 to {MAX_IMAGE_SIDE:,}, got {text[:40]!r}"
        )
    return shape  # type: ignore[return-value]


def _prefix(text: str) -> str:
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a parameter name or prefix (e.g. layer1, conv1.weight), got {text[:40]!r}"
        )
    return text


TRAIN_EPILOG = """\
examples:
  tinyconv train                              # DLfS ch07: SimpleConvNet, Adam 0.001, 20 epochs, sample
  tinyconv train --epochs 5 --out runs/quick  # a shorter run into a chosen directory
  tinyconv train --dataset mnist --data-dir ~/data/mnist
  tinyconv train --net deep --dataset fashion-mnist --epochs 10 --threads 8
  tinyconv train --net resnet20 --dataset fashion-mnist --epochs 30   # Momentum 0.1, cosine, batch 128
  tinyconv train --net resnet20 --classes 0,1,2,3,4 --out runs/first5  # a subset of the classes
  tinyconv train --checkpoint run.ckpt --resume   # continue an interrupted run
  mpiexec -n 4 tinyconv train --distributed --net deep --batch-size 256   # 4 processes, one model

networks (--net):
  simple, deep            DLfS's SimpleConvNet (ch07) and DeepConvNet (ch08)
  resnet20/32/56          He et al.'s CIFAR ResNets (3x3 stem, 0.27M to 0.85M parameters)
  resnet18/34/50/101/152  torchvision's ImageNet ResNets, with one input channel here
  The DLfS networks train as DLfS does (Adam lr 0.001, batches of 100, constant rate, batches
  drawn with replacement); a ResNet with the common recipe (Momentum 0.9 with lr 0.1, batches
  of 128, cosine schedule, every image once per epoch). Options given override these.

writes into --out (default runs/<date-time>/):
  params.pkl          the trained parameters of a DLfS network (a DLfS-compatible pickle)
  params.npz          ... of a ResNet: its whole state, running statistics of batch norm included
  history.json        per-epoch loss and accuracies, settings (net, schedule, classes), timings,
                      version, build config
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

FINETUNE_EPILOG = """\
examples:
  # a ResNet-20 trained on classes 0-4, adapted to classes 5-9 with 500 labelled images:
  tinyconv finetune --init runs/first5/params.npz --classes 5,6,7,8,9 --train-size 500
  tinyconv finetune --init runs/first5/params.npz --classes 5,6,7,8,9 --all-but-head
  tinyconv finetune --init params.npz --classes 5,6,7,8,9 --freeze conv1 bn1 layer1 --head-lr 0.05

The network is recognised from --init (as 'tinyconv evaluate' does). Its classifier (ResNets:
fc; SimpleConvNet: W3, b3; DeepConvNet: W8, b8) is replaced by a new, untrained one when the
number of --classes differs from its outputs, or with --new-head. The head learns at
--head-lr, everything else at --backbone-lr; --freeze and --all-but-head stop parameters from
learning at all (batch norm's running statistics still adapt to the new images). The outputs
are those of 'tinyconv train', written into --out."""

EVALUATE_EPILOG = """\
examples:
  tinyconv evaluate runs/20240101-120000/params.pkl
  tinyconv evaluate params.pkl --dataset mnist --out results/   # DLfS's ch07/params.pkl works too
  tinyconv evaluate runs/first5/params.npz                      # a ResNet; classes from history.json

The network is recognised from the parameter names and shapes (W1..b3: SimpleConvNet,
W1..b8: DeepConvNet, conv1.weight ... fc.bias: the ResNet of that depth and kind); --net
forces one. A network trained on --classes is evaluated on those classes: given again with
--classes, or read from the history.json that 'tinyconv train' wrote beside PARAMS. Writes
confusion_matrix.png and evaluation.json into --out (default: the directory of PARAMS)."""

FILTERS_EPILOG = """\
examples:
  tinyconv filters runs/20240101-120000/params.pkl -o filters.png
  tinyconv filters params.pkl --nx 10 -o wide.png
  tinyconv filters runs/first5/params.npz -o resnet.png   # a ResNet's conv1.weight (3x3)"""

EXPORT_EPILOG = """\
examples:
  tinyconv export runs/20240101-120000/params.pkl model.onnx
  tinyconv export runs/first5/params.npz resnet20.onnx --softmax   # adds a 'probabilities' output
  tinyconv export ch07/params.pkl dlfs.onnx --dataset mnist --batch-size 1 --opset 13

The network is recognised from PARAMS as 'tinyconv evaluate' does (--net forces one) and
exported in inference form: its input 'input' is a batch of 1x28x28 grey images with pixel
values in [0, 1] (what tinyconv's data sets give), its output 'logits'. The training data set
and the class names are read from the history.json beside PARAMS (or --dataset, --classes) and
recorded in the model's metadata with tinyconv's version. Needs the onnx package:
  pip install "tinyconv[onnx]"
A float64 model (--dtype float64) is exact, but ONNX Runtime's CPU provider runs only float32
convolutions: export float32 (the default) to deploy with it.

  import onnxruntime, numpy as np
  session = onnxruntime.InferenceSession("model.onnx")
  logits = session.run(["logits"], {"input": images.astype(np.float32)})[0]"""

SUMMARY_EPILOG = """\
examples:
  tinyconv summary                          # DLfS's SimpleConvNet on 1x28x28 images
  tinyconv summary --net resnet50           # torchvision's ResNet-50: 25,557,032 parameters, 4.09 G
  tinyconv summary --net resnet50 --depth 2 # one row per residual block
  tinyconv summary --net deep --input-shape 3,32,32 --num-classes 100
  tinyconv summary runs/first5/params.npz   # the network a parameter file holds

Multiply-adds are counted for convolutions (N*FN*OH*OW*C*FH*FW) and fully connected layers
(N*D*M); batch norm, activations, pooling and residual sums are not (the usual convention)."""

INFO_EPILOG = """\
examples:
  tinyconv info
  tinyconv info --data-dir ~/data/mnist"""

MAIN_EPILOG = """\
examples:
  tinyconv train --epochs 5           # train DLfS's SimpleConvNet on the shipped sample
  tinyconv train --net resnet20 --classes 0,1,2,3,4 --out runs/first5
  tinyconv finetune --init runs/first5/params.npz --classes 5,6,7,8,9 --train-size 500
  tinyconv evaluate runs/<run>/params.pkl
  tinyconv filters runs/<run>/params.pkl -o filters.png
  tinyconv export runs/<run>/params.pkl model.onnx
  tinyconv summary --net resnet50
  tinyconv info

Run 'tinyconv COMMAND --help' for the options of each command."""


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="sample",
        help="'sample' (default): 5,000/1,000 Fashion-MNIST images shipped with "
        "tinyconv, offline; 'mnist' and 'fashion-mnist': the full sets, read "
        "from disk or downloaded (see 'tinyconv info')",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=_path,
        default=None,
        help="directory holding the data set's four IDX files; when given, the "
        "files are read from there only (a missing one is an error), "
        "nothing is searched or downloaded",
    )
    parser.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download a data set; fail if it is not on disk",
    )


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_int_in(1, MAX_THREADS),
        default=None,
        metavar="N",
        help=f"compute threads, 1 to {MAX_THREADS:,} (default: OMP_NUM_THREADS "
        f"or the number of cores)",
    )


def _add_training_options(parser: argparse.ArgumentParser, epochs: int) -> None:
    """What train and finetune share: the schedule, the data, the run's settings and output."""
    _add_data_options(parser)
    parser.add_argument(
        "--classes",
        type=_classes,
        default=None,
        metavar="LIST",
        help="train on these classes only, e.g. 5,6,7,8,9; the network's outputs "
        "0, 1, ... are these classes in this order (default: all classes)",
    )
    parser.add_argument(
        "--epochs",
        type=_int_in(1, MAX_EPOCHS),
        default=epochs,
        metavar="N",
        help=f"number of epochs, 1 to {MAX_EPOCHS:,} (default: {epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="mini-batch size, at most the number of training images "
        "(default: 100, or 128 for a ResNet; all the images when fewer)",
    )
    parser.add_argument(
        "--optimizer",
        type=_optimizer_name,
        default=None,
        metavar="NAME",
        help=f"one of {', '.join(OPTIMIZERS)}, any case (default: Adam, or "
        f"Momentum with momentum 0.9 for a ResNet)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=None,
        help="how the learning rate changes over the run: 'constant'; 'cosine' "
        "decay to 0; 'step': divided by 10 at 50%% and again at 75%% of the steps (default: "
        "constant, or cosine for a ResNet)",
    )
    parser.add_argument(
        "--sampling",
        choices=SAMPLING_MODES,
        default=None,
        help="'replacement': every batch drawn at random, as in DLfS; "
        "'permutation': every image once per epoch (default: replacement, "
        "or permutation for a ResNet)",
    )
    parser.add_argument(
        "--test-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use only the first N test images (of --classes) (default: all)",
    )
    parser.add_argument(
        "--eval-samples",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="measure the per-epoch accuracies on the first N training and test "
        "images (DLfS's evaluate_sample_num_per_epoch); 0 means all "
        "(default: 1000)",
    )
    _add_threads_option(parser)
    parser.add_argument(
        "--seed",
        type=_int_in(0, MAX_SEED),
        default=None,
        help="random seed for the initial weights and the batch order, 0 to "
        "2**64-1 (default: a fresh one, recorded in history.json)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="precision of the parameters and the computation (default: float32)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=_path,
        default=None,
        help=f"output directory (default: {DEFAULT_OUT_ROOT}/<date-time>/, created)",
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print only warnings and errors (no progress, no per-epoch lines)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training over MPI: run as 'mpiexec -n K tinyconv ...'; "
        "--batch-size is the global batch, shared among the K processes; rank 0 "
        "prints and writes the outputs; threads per process default to the "
        'host\'s cores / processes on the host (needs pip install "tinyconv[mpi]")',
    )


def _add_train_command(commands: Any, net_names: Sequence[str]) -> None:
    train = commands.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        epilog=TRAIN_EPILOG,
        help="train a network (default: DLfS chapter 7 on the shipped sample)",
        description="Train a convolutional network. The defaults reproduce DLfS's chapter 7\n"
        "experiment (ch07/train_convnet.py): SimpleConvNet, Adam with lr 0.001,\n"
        "mini-batches of 100, 20 epochs, accuracy measured on 1,000 samples per\n"
        "epoch -- on the Fashion-MNIST sample shipped with tinyconv, so it runs offline.",
    )
    train.add_argument(
        "--net",
        choices=net_names,
        default="simple",
        metavar="NAME",
        help="'simple' (default): SimpleConvNet (DLfS ch07); 'deep': DeepConvNet "
        "(DLfS ch08); resnet20, resnet32, resnet56 (CIFAR ResNets) or resnet18, "
        "resnet34, resnet50, resnet101, resnet152 (ImageNet ResNets)",
    )
    _add_training_options(train, epochs=20)
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: 0.001, or 0.1 for a ResNet trained with SGD, "
        "Momentum or Nesterov)",
    )
    train.add_argument(
        "--train-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use only the first N training images (of --classes) (default: all)",
    )
    train.add_argument(
        "--checkpoint",
        metavar="PATH",
        type=_path,
        default=None,
        help="save a checkpoint to PATH after every epoch (its directory must exist)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint if that file exists (else start afresh); "
        "a checkpoint of another setup is an error",
    )
    train.set_defaults(handler=_train)


def _add_finetune_command(commands: Any, net_names: Sequence[str]) -> None:
    finetune = commands.add_parser(
        "finetune",
        formatter_class=_HelpFormatter,
        epilog=FINETUNE_EPILOG,
        help="adapt a trained network to other classes (transfer learning)",
        description="Fine-tune a trained network on (other) classes of a data set: load it from\n"
        "--init, give it a new classifier when the classes differ, freeze what should\n"
        "stay, and train the rest -- the head faster than the pre-trained layers.",
    )
    finetune.add_argument(
        "--init",
        metavar="PARAMS",
        type=_path,
        required=True,
        help="parameter file of the trained network (.pkl, .npz or .safetensors; "
        "a ResNet's with its running statistics, as 'tinyconv train' saves it)",
    )
    finetune.add_argument(
        "--net",
        choices=("auto", *tuple(net_names)),
        default="auto",
        metavar="NAME",
        help="network of --init; 'auto' (default) tells it from the parameters",
    )
    _add_training_options(finetune, epochs=FINETUNE_EPOCHS)
    finetune.add_argument(
        "--train-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on a class-balanced draw of N images (the classes' counts differ "
        "by at most one), the same for the same --seed (default: all)",
    )
    finetune.add_argument(
        "--new-head",
        action="store_true",
        help="replace the classifier even when it has as many outputs as there are --classes",
    )
    finetune.add_argument(
        "--freeze",
        metavar="PREFIX",
        type=_prefix,
        nargs="+",
        action="extend",
        default=[],
        help="do not train the parameters named PREFIX or under it (e.g. conv1 bn1 "
        "layer1 layer2.0, or W1 b1); may be repeated",
    )
    finetune.add_argument(
        "--all-but-head", action="store_true", help="freeze every parameter but the classifier's"
    )
    finetune.add_argument(
        "--backbone-lr",
        type=_positive_float,
        default=None,
        metavar="LR",
        help="learning rate of everything but the head (default: a tenth of "
        "--head-lr; 0.0001, or 0.01 for a ResNet, when neither is given)",
    )
    finetune.add_argument(
        "--head-lr",
        type=_positive_float,
        default=None,
        metavar="LR",
        help="learning rate of the classifier (default: 0.001, or 0.1 for a ResNet "
        "trained with SGD, Momentum or Nesterov)",
    )
    finetune.set_defaults(handler=_finetune)


def _add_export_command(commands: Any, net_names: Sequence[str]) -> None:
    from .export import DEFAULT_OPSET, MIN_OPSET

    export = commands.add_parser(
        "export",
        formatter_class=_HelpFormatter,
        epilog=EXPORT_EPILOG,
        help="write saved parameters as an ONNX model (for ONNX Runtime and others)",
        description="Export a saved network to ONNX, to run it with ONNX Runtime, OpenVINO,\n"
        "TensorRT, onnxruntime-web or other runtimes. The model computes what\n"
        "'tinyconv evaluate' computes: the logits of a batch of images.",
    )
    export.add_argument(
        "params", metavar="PARAMS", type=_path, help="parameter file (.pkl, .npz or .safetensors)"
    )
    export.add_argument(
        "output",
        metavar="MODEL",
        type=_path,
        help="the ONNX file to write (e.g. model.onnx; its directory is created)",
    )
    export.add_argument(
        "--net",
        choices=("auto", *tuple(net_names)),
        default="auto",
        metavar="NAME",
        help="network architecture, one of 'tinyconv train --net's; 'auto' "
        "(default) tells it from the parameters",
    )
    export.add_argument(
        "--softmax",
        action="store_true",
        help="add a second output, 'probabilities': the softmax of the logits",
    )
    export.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="fix the batch size to N (default: any batch size, a symbolic dimension 'batch')",
    )
    export.add_argument(
        "--opset",
        type=_int_in(MIN_OPSET),
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX operator set, at least {MIN_OPSET} and at most what the installed "
        f"onnx package knows (default: {DEFAULT_OPSET})",
    )
    export.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="the model's float type (default: float32, what ONNX Runtime runs everywhere)",
    )
    export.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="the data set the network was trained on, recorded in the model with "
        "its class names (default: from history.json beside PARAMS)",
    )
    export.add_argument(
        "--classes",
        type=_classes,
        default=None,
        metavar="LIST",
        help="the classes of the network's outputs, in order, e.g. 5,6,7,8,9 "
        "(default: from history.json beside PARAMS, else all the data set's)",
    )
    export.set_defaults(handler=_export)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tinyconv`` command."""
    from . import __version__
    from .nets import NETWORK_NAMES

    parser = _Parser(
        prog="tinyconv",
        formatter_class=_HelpFormatter,
        epilog=MAIN_EPILOG,
        description="tinyconv: a small, fast CNN library with the API of "
        "'Deep Learning from Scratch'.",
    )
    parser.add_argument("--version", action="version", version=f"tinyconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_command(commands, NETWORK_NAMES)
    _add_finetune_command(commands, NETWORK_NAMES)

    evaluate = commands.add_parser(
        "evaluate",
        formatter_class=_HelpFormatter,
        epilog=EVALUATE_EPILOG,
        help="accuracy, per-class accuracy and confusion matrix of saved parameters",
        description="Measure the accuracy of a saved network on a test set, per class too, and\n"
        "draw its confusion matrix. Reads tinyconv's parameter files and DLfS's\n"
        "(a pickle of a dict of float64 arrays W1, b1, ...).",
    )
    evaluate.add_argument(
        "params", metavar="PARAMS", type=_path, help="parameter file (.pkl, .npz or .safetensors)"
    )
    evaluate.add_argument(
        "--net",
        choices=("auto", *NETWORK_NAMES),
        default="auto",
        metavar="NAME",
        help="network architecture, one of 'tinyconv train --net's; 'auto' "
        "(default) tells it from the parameters",
    )
    _add_data_options(evaluate)
    evaluate.add_argument(
        "--classes",
        type=_classes,
        default=None,
        metavar="LIST",
        help="the classes the network was trained on, in the order of its "
        "outputs, e.g. 5,6,7,8,9; only their test images are used (default: "
        "from history.json beside PARAMS, else all classes)",
    )
    evaluate.add_argument(
        "--test-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use only the first N test images (default: all)",
    )
    evaluate.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="precision of the computation (default: float32)",
    )
    _add_threads_option(evaluate)
    evaluate.add_argument(
        "--out",
        metavar="DIR",
        type=_path,
        default=None,
        help="where to write confusion_matrix.png and evaluation.json "
        "(default: the directory of PARAMS)",
    )
    evaluate.set_defaults(handler=_evaluate)

    filters = commands.add_parser(
        "filters",
        formatter_class=_HelpFormatter,
        epilog=FILTERS_EPILOG,
        help="draw the first convolution layer's filters of saved parameters",
        description="Draw the filters of a saved network's first convolution layer (its 'W1', or\n"
        "a ResNet's 'conv1.weight'; shape (FN, C, FH, FW); channel 0 of each filter)\n"
        "in grey, as DLfS's ch07/visualize_filter.py.",
    )
    filters.add_argument(
        "params", metavar="PARAMS", type=_path, help="parameter file (.pkl, .npz or .safetensors)"
    )
    filters.add_argument(
        "-o",
        "--output",
        metavar="PNG",
        type=_path,
        default="filters.png",
        help="picture file to write; its suffix (.png, .pdf, .svg, ...) chooses "
        "the format (default: filters.png)",
    )
    filters.add_argument(
        "--nx",
        type=_int_in(1, MAX_FILTERS_PER_SIDE),
        default=8,
        metavar="N",
        help=f"filters per row, 1 to {MAX_FILTERS_PER_SIDE} (default: 8)",
    )
    filters.add_argument(
        "--key",
        default=None,
        help="which parameter holds the filters (default: W1, or conv1.weight when there is no W1)",
    )
    filters.set_defaults(handler=_filters)

    _add_export_command(commands, NETWORK_NAMES)
    summary = commands.add_parser(
        "summary",
        formatter_class=_HelpFormatter,
        epilog=SUMMARY_EPILOG,
        help="a network's layers: output shapes, parameters, multiply-adds",
        description="Print a network's layer table -- each layer's output shape, parameters and\n"
        "multiply-adds (of convolutions and fully connected layers), with the totals --\n"
        "for a network by name (--net) or the one a parameter file holds.",
    )
    summary.add_argument(
        "params",
        metavar="PARAMS",
        type=_path,
        nargs="?",
        default=None,
        help="parameter file (.pkl, .npz or .safetensors) whose network to describe "
        "(default: a fresh network named by --net)",
    )
    summary.add_argument(
        "--net",
        choices=("auto", *NETWORK_NAMES),
        default=None,
        metavar="NAME",
        help="network architecture, one of 'tinyconv train --net's (default: simple; "
        "with PARAMS, recognised from the file)",
    )
    summary.add_argument(
        "--num-classes",
        type=_int_in(1, MAX_SUMMARY_CLASSES),
        default=None,
        metavar="N",
        help="outputs of a network built by --net (default: 1000 for the ImageNet "
        "ResNets, else 10)",
    )
    summary.add_argument(
        "--input-shape",
        type=_image_shape,
        default=None,
        metavar="C,H,W",
        help="one input image's shape (default: the size the network is built for: "
        "1,28,28 for simple and deep, 1,32,32 for the CIFAR ResNets, 3,224,224 for "
        "the ImageNet ones; with PARAMS, the file's channels at that size)",
    )
    summary.add_argument(
        "--batch-size",
        type=_int_in(1, MAX_SUMMARY_BATCH),
        default=1,
        metavar="N",
        help="images per batch, which the shapes and multiply-adds count (default: 1)",
    )
    summary.add_argument(
        "--depth",
        type=_int_in(1, 64),
        default=None,
        metavar="N",
        help="rows down to this depth (1: a ResNet's stem, stages and head; 2: one row "
        "per residual block; default: every layer)",
    )
    summary.set_defaults(handler=_summary)

    info = commands.add_parser(
        "info",
        formatter_class=_HelpFormatter,
        epilog=INFO_EPILOG,
        help="build configuration, data set locations, optional packages",
        description="Show tinyconv's build and runtime configuration (as tinyconv.show_config()),\n"
        "where each data set would be read from, and whether the optional packages\n"
        "are installed.",
    )
    info.add_argument(
        "--data-dir",
        metavar="DIR",
        type=_path,
        default=None,
        help="check this directory instead of the search path, as the commands' --data-dir would",
    )
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


def _class_names(dataset: str) -> list[str]:
    if dataset == "mnist":
        return [str(digit) for digit in range(10)]
    from .datasets import FASHION_MNIST_CLASSES

    return list(FASHION_MNIST_CLASSES)


def _dataset_title(dataset: str) -> str:
    return {
        "sample": "the Fashion-MNIST sample",
        "mnist": "MNIST",
        "fashion-mnist": "Fashion-MNIST",
    }[dataset]


def _load_dataset(name: str, data_dir: str | None, download: bool) -> _Splits:
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
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        return splits
    except datasets.IncompleteDataDirError as error:
        raise CommandError(str(error).replace("data_dir", "--data-dir")) from None
    except datasets.DatasetNotFoundError as error:
        raise CommandError(
            f"{error}\n\nOn the command line: --data-dir DIR names the directory; "
            f"--dataset sample needs no download."
        ) from None
    except datasets.IdxFormatError as error:
        raise CommandError(str(error)) from None
    except OSError as error:  # an unreadable file (permissions, I/O error) of the data set
        raise CommandError(
            f"cannot read the {_dataset_title(name)} data set: {_os_reason(error)}"
        ) from None


def _limit(
    x: Array, t: Array, size: int | None, what: str, dataset: str, of_classes: str = ""
) -> tuple[Array, Array]:
    if size is None:
        return x, t
    if size > len(x):
        raise CommandError(
            f"--{what}-size {size} is larger than the {len(x):,} {what} images "
            f"of {_dataset_title(dataset)}{of_classes}"
        )
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


def _read_params(path: str, option: str = "") -> dict[str, Array]:
    """The arrays of a parameter file; ``option`` names the option that gave the path, if one did."""
    from .serialization import ParamsFileError, read_params

    _check_regular_file(path, f"{option} parameter file" if option else "parameter file")
    try:
        return read_params(path)
    except ParamsFileError as error:
        raise CommandError(f"cannot read parameters: {error}") from None
    except ImportError as error:  # a .safetensors file without the safetensors package
        raise CommandError(f"cannot read parameters from {path}: {error}") from None
    except MemoryError:
        raise CommandError(f"cannot read parameters: {path} is too large for the memory") from None
    except OSError as error:  # permissions, I/O errors
        raise CommandError(f"cannot read parameters: {_os_reason(error)}") from None


def _set_threads(threads: int | None) -> None:
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
        self.written: list[str] = []
        self.unavailable = False

    def draw(self, file_name: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        from .visualize import INSTALL_HINT, PlottingUnavailableError

        if self.unavailable:
            return False
        try:
            draw(*args, save=self.directory / file_name, **kwargs)
        except OSError as error:
            raise _OutputError(
                f"cannot write {self.directory / file_name}: {_os_reason(error)}"
            ) from None
        except PlottingUnavailableError:
            self.unavailable = True
            _warn(
                f"note: matplotlib is not installed, so no pictures (.png) are drawn; "
                f"to get them: {INSTALL_HINT}"
            )
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
        raise CommandError(
            f"cannot create the output directory {path}: {error.strerror or error}"
        ) from None
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
        raise CommandError(
            f"{what}: cannot write into {directory}: {error.strerror or error}"
        ) from None
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
        raise CommandError(
            f"cannot create the output directory {path}: {ancestor} is not a directory"
        )
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
                raise CommandError(
                    f"{what}: cannot write {path / name}: a directory of that name is in the way"
                )
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
# train and finetune


def _epoch_losses(step_losses: Sequence[float], steps_per_epoch: int, epochs: int) -> list[float]:
    """The mean loss of each completed epoch, from the per-step losses."""
    return [
        float(np.mean(step_losses[i * steps_per_epoch : (i + 1) * steps_per_epoch]))
        for i in range(epochs)
    ]


def _history(
    trainer: Any,
    settings: dict[str, Any],
    status: str,
    timing: dict[str, float],
    started: str,
    error: str | None = None,
) -> dict[str, Any]:
    import tinyconv

    completed = len(trainer.train_acc_list)
    losses = _epoch_losses(trainer.train_loss_list, trainer.iter_per_epoch, completed)
    records = [
        {
            "epoch": i + 1,
            "loss": losses[i],
            "train_acc": trainer.train_acc_list[i],
            "test_acc": trainer.test_acc_list[i],
            "seconds": trainer.epoch_time_list[i] if i < len(trainer.epoch_time_list) else None,
        }
        for i in range(completed)
    ]
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


def _classes_text(classes: Sequence[int]) -> str:
    return ",".join(str(label) for label in classes)


def _check_classes(classes: Sequence[int] | None, dataset: str) -> None:
    """--classes names classes the data set has (the option's type checked the rest)."""
    if classes is None:
        return
    count = len(_class_names(dataset))
    outside = [label for label in classes if label >= count]
    if outside:
        raise CommandError(
            f"--classes {_classes_text(classes)}: class {outside[0]} is not one of "
            f"{_dataset_title(dataset)}'s classes 0 to {count - 1}"
        )


def _only_classes(x: Array, t: Array, classes: Sequence[int] | None) -> tuple[Array, Array]:
    """The images of ``classes``, labelled with their position in ``classes`` (what the network's
    outputs mean); all images, labels unchanged, when ``classes`` is None."""
    if classes is None:
        return x, t
    keep = np.isin(t, classes)
    relabel: npt.NDArray[np.int64] = np.zeros(
        max(max(classes), int(t.max(initial=0))) + 1, dtype=np.int64
    )
    relabel[list(classes)] = np.arange(len(classes))
    return x[keep], relabel[t[keep]]


def _balanced_subset(
    x: Array, t: Array, size: int | None, classes: Sequence[int], seed: int
) -> tuple[Array, Array]:
    """``size`` images, as many of each class as can be, drawn by ``seed``, in the data set's
    order (so the subset does not depend on how the draws are ordered)."""
    if size is None:
        return x, t
    rng = np.random.default_rng(seed)
    chosen = []
    for label, original in enumerate(classes):
        wanted = size // len(classes) + (1 if label < size % len(classes) else 0)
        available = np.flatnonzero(t == label)
        if len(available) < wanted:
            raise CommandError(
                f"--train-size {size}: class {original} has {len(available):,} training "
                f"images, {wanted:,} are needed for a balanced subset"
            )
        chosen.append(rng.choice(available, wanted, replace=False))
    keep = np.sort(np.concatenate(chosen))
    return x[keep], t[keep]


def _params_file_name(net: str) -> str:
    """DLfS's networks keep their pickle; a ResNet needs its running statistics too, and NPZ
    holds its ~100-900 arrays without pickle's code-execution worries for other readers."""
    from .nets import is_resnet

    return "params.npz" if is_resnet(net) else "params.pkl"


def _net_title(net: str, network: Any) -> str:
    from .nets import is_resnet

    return net if is_resnet(net) else type(network).__name__


def _first_filters(network: Network) -> Array:
    return network.params["W1" if "W1" in network.params else "conv1.weight"]


@dataclasses.dataclass
class _Job:
    """A training run, settled: what ``tinyconv train`` and ``finetune`` hand to :func:`_run`."""

    network: Any
    net: str  # a tinyconv.nets.NETWORK_NAMES entry
    data: tuple[Array, Array, Array, Array]  # x_train, t_train, x_test, t_test
    optimizer: str
    optimizer_param: dict[str, Any]
    lr_text: str  # the rates, as printed
    lr_hint: str  # what to lower when the loss becomes NaN
    batch_size: int
    lr_schedule: str
    sampling: str
    classes: tuple[int, ...] | None
    settings: dict[str, Any]  # the command's own settings for history.json
    out_path: Path
    seed: int
    started: str
    clock: float
    load_seconds: float
    checkpoint: Path | None = None
    resume_from: Path | None = None


def _is_root(args: argparse.Namespace) -> bool:
    """Whether this process reports and writes: always, but for ranks other than 0 of --distributed."""
    comm = getattr(args, "comm", None)
    return comm is None or comm.Get_rank() == 0


def _once_per_host(args: argparse.Namespace, function: Callable[..., Any], *arguments: Any) -> Any:
    """``function(*arguments)``; with --distributed, the first rank of each host calls it before
    the others on that host, so that a data set is downloaded into a host's cache once."""
    comm = args.comm
    if comm is None:
        return function(*arguments)
    from .distributed import import_mpi

    host = comm.Split_type(import_mpi().COMM_TYPE_SHARED)
    try:
        if host.Get_rank() != 0:
            host.Barrier()  # until the host's first rank has it
        result = function(*arguments)
        if host.Get_rank() == 0:
            host.Barrier()
        return result
    finally:
        host.Free()


def _world_comm() -> Any:
    """``MPI.COMM_WORLD`` for --distributed (importing mpi4py initialises MPI)."""
    from .distributed import import_mpi

    try:
        return import_mpi().COMM_WORLD
    except ImportError as error:
        raise CommandError(f"--distributed: {error}") from None


def _start(args: argparse.Namespace) -> tuple[Path, int, str, float]:
    """The output directory (checked, not created), the seed, the start time and clock. With
    --distributed, the seed and directory are rank 0's."""
    out_path = Path(args.out) if args.out else _default_out_dir()
    # A fresh seed is drawn and recorded, so that every run can be repeated.
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    if args.comm is not None:
        out_path, seed = args.comm.bcast((out_path, seed), root=0)
    if _is_root(args):  # only rank 0 writes
        _check_out_dir_can_be_made(out_path, "--out")  # before the data set is loaded
    _check_classes(args.classes, args.dataset)
    _set_threads(args.threads)
    np.random.seed(seed % 2**32)  # for anything that draws from np.random, as DLfS code does
    started = _datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return out_path, seed, started, time.perf_counter()


def _training_data(
    args: argparse.Namespace, seed: int, balanced: bool
) -> tuple[Array, Array, Array, Array]:
    """``(x_train, t_train, x_test, t_test)`` of --classes (relabelled 0..k-1), --train-size
    (the first N, or a class-balanced draw when ``balanced``) and --test-size."""
    (x_train, t_train), (x_test, t_test) = _once_per_host(
        args, _load_dataset, args.dataset, args.data_dir, args.download
    )
    x_train, t_train = _only_classes(x_train, t_train, args.classes)
    x_test, t_test = _only_classes(x_test, t_test, args.classes)
    of_classes = f" of classes {_classes_text(args.classes)}" if args.classes else ""
    _check_not_empty(x_train, "training", args.dataset, of_classes)
    _check_not_empty(x_test, "test", args.dataset, of_classes)
    if balanced:
        classes = args.classes or tuple(range(len(_class_names(args.dataset))))
        x_train, t_train = _balanced_subset(x_train, t_train, args.train_size, classes, seed)
    else:
        x_train, t_train = _limit(
            x_train, t_train, args.train_size, "train", args.dataset, of_classes
        )
    x_test, t_test = _limit(x_test, t_test, args.test_size, "test", args.dataset, of_classes)
    if args.batch_size is not None and args.batch_size > len(x_train):
        raise CommandError(
            f"--batch-size {args.batch_size:,} is larger than the {len(x_train):,} "
            f"training images{' (--train-size)' if args.train_size else ''}"
        )
    return x_train, t_train, x_test, t_test


def _resolved(args: argparse.Namespace, net: str, data_size: int) -> dict[str, Any]:
    """The net's training defaults with the options given put in."""
    from .nets import training_defaults

    chosen = training_defaults(net)
    # A default batch larger than a small training set (--train-size) would be an error the user
    # did not cause; a --batch-size given too large is one (checked with the data).
    chosen["batch_size"] = min(chosen["batch_size"], data_size)
    for key in ("optimizer", "batch_size", "lr_schedule", "sampling"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    # A ResNet's 0.1 is a momentum-SGD rate: an adaptive optimizer chosen instead diverges at it,
    # so it gets the rate Adam is usually run with.
    if chosen["optimizer"].lower() in ADAPTIVE_OPTIMIZERS:
        chosen["lr"] = min(chosen["lr"], ADAPTIVE_DEFAULT_LR)
    return chosen


def _train(args: argparse.Namespace) -> int:
    from .nets import build_network

    if args.resume and args.checkpoint is None:
        raise CommandError("--resume needs --checkpoint PATH (the file to continue from)")
    # Everything that can be checked before training is, before anything is written.
    checkpoint = Path(args.checkpoint) if args.checkpoint is not None else None
    resume_from = None
    if _is_root(args):  # with --distributed, rank 0 alone writes and reads the checkpoint
        if checkpoint is not None:
            _check_checkpoint_path(checkpoint)
        resume_from = (
            checkpoint if args.resume and checkpoint is not None and checkpoint.exists() else None
        )
        if resume_from is not None:
            _check_regular_file(str(resume_from), "checkpoint")
    if args.comm is not None:
        resume_from = args.comm.bcast(resume_from, root=0)
    out_path, seed, started, clock = _start(args)
    data = _training_data(args, seed, balanced=False)
    load_seconds = time.perf_counter() - clock
    plan = _resolved(args, args.net, len(data[0]))
    lr = args.lr if args.lr is not None else plan["lr"]
    num_classes = len(args.classes) if args.classes else len(_class_names(args.dataset))
    try:
        network = build_network(
            args.net,
            num_classes=num_classes,
            input_shape=data[0].shape[1:],
            dtype=args.dtype,
            seed=seed,
        )
    except MemoryError:
        raise CommandError(f"a {args.net} network is too large for the memory") from None
    settings = {"checkpoint": args.checkpoint, "resume": args.resume}
    job = _Job(
        network,
        args.net,
        data,
        plan["optimizer"],
        {"lr": lr},
        f"{lr:g}",
        f"a smaller --lr (now {lr:g})",
        plan["batch_size"],
        plan["lr_schedule"],
        plan["sampling"],
        args.classes,
        settings,
        out_path,
        seed,
        started,
        clock,
        load_seconds,
        checkpoint,
        resume_from,
    )
    return _run(args, job)


def _network_from(params: dict[str, Array], net: str, dtype: str, source: str) -> tuple[Any, str]:
    """The network ``params`` belong to (``net``: a name, or "auto" to recognise it), and its name."""
    from .nets import identify_network, network_from_params
    from .serialization import ParamsFileError

    try:
        name = identify_network(params, source) if net == "auto" else net
        network = network_from_params(
            params, net=name, input_shape=IMAGE_SHAPE, dtype=dtype, source=source
        )
    except ParamsFileError as error:
        raise CommandError(str(error)) from None
    except ValueError as error:  # what the network's constructor refuses
        raise CommandError(f"{source}: {error}") from None
    except MemoryError:
        raise CommandError(
            f"{source}: a network of these sizes is too large for the memory"
        ) from None
    return network, name


def _num_outputs(network: Any) -> int:
    return int(network.predict(np.zeros((1, *IMAGE_SHAPE), dtype=network.dtype)).shape[1])


def _freeze(network: Any, net: str, prefixes: Sequence[str], all_but_head: bool) -> list[str]:
    """Freeze --freeze's prefixes and, with --all-but-head, everything but the head; every
    prefix must name a parameter (a typo would otherwise train what was meant to stay)."""
    from .nets import head_prefixes
    from .network import matches_prefix

    unknown = [
        prefix
        for prefix in prefixes
        if not any(matches_prefix(key, prefix) for key in network.params)
    ]
    if unknown:
        tops = list(dict.fromkeys(key.split(".")[0] for key in network.params))
        raise CommandError(
            f"--freeze {' '.join(unknown)}: no parameter of the {net} is named so or lies "
            f"under it (its parameters are under {', '.join(tops[:12])})"
        )
    head = head_prefixes(net)
    chosen = list(prefixes)
    if all_but_head:
        chosen += [
            key for key in network.params if not any(matches_prefix(key, prefix) for prefix in head)
        ]
    frozen = network.freeze(*chosen) if chosen else []
    if len(frozen) == len(network.params):
        raise CommandError(
            f"--freeze {' '.join(prefixes)}{' --all-but-head' if all_but_head else ''} "
            f"freezes every parameter; nothing would be trained"
        )
    return frozen


def _finetune(args: argparse.Namespace) -> int:
    from .nets import head_prefixes, replace_head
    from .network import matches_prefix

    out_path, seed, started, clock = _start(args)
    params = _read_params(args.init, "--init")
    network, net = _network_from(params, args.net, args.dtype, args.init)
    num_classes = len(args.classes) if args.classes else len(_class_names(args.dataset))
    outputs = _num_outputs(network)
    new_head = args.new_head or outputs != num_classes
    if new_head:
        network = replace_head(network, num_classes, seed=seed)
    frozen = _freeze(network, net, args.freeze, args.all_but_head)
    data = _training_data(args, seed, balanced=True)
    load_seconds = time.perf_counter() - clock
    plan = _resolved(args, net, len(data[0]))
    head = head_prefixes(net)
    head_lr = args.head_lr if args.head_lr is not None else plan["lr"]
    backbone_lr = (
        args.backbone_lr if args.backbone_lr is not None else head_lr / BACKBONE_LR_DIVISOR
    )
    trainable_head = any(
        matches_prefix(key, prefix)
        for key in network.params
        if key not in frozen
        for prefix in head
    )
    optimizer_param: dict[str, Any] = {"lr": backbone_lr}
    if trainable_head:
        optimizer_param["param_groups"] = [{"prefixes": head, "lr": head_lr}]
    settings = {
        "init": str(args.init),
        "init_outputs": outputs,
        "new_head": new_head,
        "freeze": list(args.freeze),
        "all_but_head": args.all_but_head,
        "frozen": len(frozen),
        "backbone_lr": backbone_lr,
        "head_lr": head_lr,
        "head": list(head),
    }
    job = _Job(
        network,
        net,
        data,
        plan["optimizer"],
        optimizer_param,
        f"{backbone_lr:g}, head {' '.join(head)} {head_lr:g}",
        f"a smaller --backbone-lr or --head-lr (now {backbone_lr:g} and {head_lr:g})",
        plan["batch_size"],
        plan["lr_schedule"],
        plan["sampling"],
        args.classes,
        settings,
        out_path,
        seed,
        started,
        clock,
        load_seconds,
    )
    if new_head:
        _say(
            args.quiet,
            f"New head for {num_classes} classes (the network had {_plural(outputs, 'output')})",
        )
    if frozen:
        _say(
            args.quiet,
            f"Frozen: {_plural(len(frozen), 'parameter array')} of {len(network.params)}",
        )
    return _run(args, job)


def _settings(args: argparse.Namespace, job: _Job, trainer: Any, out_dir: Path) -> dict[str, Any]:
    import tinyconv

    x_train, _, x_test, _ = job.data
    names = _class_names(args.dataset)
    classes = list(job.classes) if job.classes else None
    return {
        "command": args.command,
        "net": job.net,
        "network": type(job.network).__name__,
        "dataset": args.dataset,
        "classes": classes,
        "class_names": [names[label] for label in classes] if classes else names,
        "train_size": len(x_train),
        "test_size": len(x_test),
        "epochs": args.epochs,
        "batch_size": job.batch_size,
        "optimizer": job.optimizer,
        "lr": job.optimizer_param["lr"],
        "lr_schedule": job.lr_schedule,
        "sampling": job.sampling,
        "eval_samples": trainer.evaluate_sample_num_per_epoch,
        "threads": tinyconv.get_num_threads(),
        "seed": job.seed,
        "dtype": args.dtype,
        "data_dir": args.data_dir,
        **job.settings,
        "params_file": _params_file_name(job.net),
        "out": str(out_dir),
        "distributed": _distributed_settings(args),
    }


def _distributed_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The MPI run's shape for history.json (None without --distributed)."""
    if args.comm is None:
        return None
    from .distributed import import_mpi, mpi_summary

    return {"ranks": args.comm.Get_size(), **mpi_summary(import_mpi())}


def _run(args: argparse.Namespace, job: _Job) -> int:
    """Train ``job`` and write the parameters, history.json and the pictures into --out."""
    from .distributed import RankDivergenceError
    from .serialization import ParamsFileError
    from .trainer import NonFiniteLossError, Trainer
    from .visualize import filter_show, plot_accuracy, plot_loss

    root = _is_root(args)  # with --distributed, only rank 0 reports and writes
    quiet = args.quiet or not root
    x_train, t_train, x_test, t_test = job.data
    network = job.network

    def after_epoch(trainer: Any, record: dict[str, Any]) -> None:
        # Kept current after every epoch, so a long run can be watched (and survives a crash).
        # (history_path, settings and timing are set below, before training starts.)
        if root:
            _write_json(history_path, _history(trainer, settings, "running", timing, job.started))

    eval_samples = args.eval_samples or None
    trainer = Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=args.epochs,
        mini_batch_size=job.batch_size,
        optimizer=job.optimizer,
        optimizer_param=job.optimizer_param,
        evaluate_sample_num_per_epoch=eval_samples,
        verbose=not quiet,
        seed=job.seed,
        sampling=job.sampling,
        callback=after_epoch,
        checkpoint=job.checkpoint,
        lr_schedule=job.lr_schedule,
        log="epochs",  # a progress bar and one summary line per epoch, not DLfS's per-step lines
        comm=args.comm,
    )
    if job.resume_from is not None:
        # Loaded here rather than by Trainer.train(), so that a checkpoint of another setup is
        # refused before the run directory exists.
        try:
            trainer.load_checkpoint(job.resume_from)
        except ParamsFileError as error:
            raise CommandError(f"--resume: cannot continue from the checkpoint: {error}") from None
        except OSError as error:
            raise CommandError(
                f"--resume: cannot read {job.resume_from}: {_os_reason(error)}"
            ) from None
    # Created only now, once everything above has passed, so a refused start leaves nothing.
    params_file = _params_file_name(job.net)
    out_dir = (
        _prepare_out_dir(job.out_path, "--out", (params_file, *TRAIN_OUTPUTS))
        if root
        else job.out_path
    )
    settings = _settings(args, job, trainer, out_dir)
    of_classes = f" (classes {_classes_text(job.classes)})" if job.classes else ""
    schedule = "" if job.lr_schedule == "constant" else f" ({job.lr_schedule} schedule)"
    _say(
        quiet,
        f"Training {_net_title(job.net, network)} ({args.dtype}) on {_dataset_title(args.dataset)}"
        f"{of_classes}: {len(x_train):,} training and {len(x_test):,} test images",
    )
    _say(
        quiet,
        f"{job.optimizer} lr {job.lr_text}{schedule}, batch {job.batch_size}, "
        f"{_plural(args.epochs, 'epoch')}, {_processes_text(settings)}, seed {job.seed}; "
        f"output in {out_dir}/",
    )
    if job.resume_from is not None:
        _say(
            quiet,
            f"resumed from {job.resume_from} after epoch {trainer.current_epoch}/{args.epochs}",
        )
        _say(
            quiet,
            "note: filters_before.png is not redrawn when resuming (the checkpoint holds "
            "only the current weights)",
        )

    timing = {"load_seconds": job.load_seconds}
    history_path = out_dir / "history.json"
    pictures = _Pictures(out_dir)
    train_clock = time.perf_counter()

    def failed(reason: str, hint: str, exit_code: int) -> int:
        """Record the failure in history.json (no parameter file is written) and report it."""
        timing["train_seconds"] = time.perf_counter() - train_clock
        if not root:  # every rank fails at the same step; rank 0 reports it
            return exit_code
        _warn(f"error: {reason}")
        try:
            _write_json(
                history_path,
                _history(trainer, settings, "failed", timing, job.started, error=reason),
            )
        except _OutputError as error:
            _warn(f"error: {error} (the run's state could not be recorded either)")
        else:
            _warn(f"{hint}No parameters were saved; the history so far is in {history_path}.")
        return exit_code

    try:
        if job.resume_from is None and root:
            pictures.draw("filters_before.png", filter_show, _first_filters(network))
        trainer.train()
        timing["train_seconds"] = time.perf_counter() - train_clock
        if not root:
            return EXIT_INTERRUPTED if trainer.interrupted else EXIT_OK
        # Pictures first and the parameters last, so the parameter file exists only after a success.
        if trainer.train_acc_list:
            pictures.draw(
                "accuracy.png", plot_accuracy, trainer.train_acc_list, trainer.test_acc_list
            )
        if trainer.train_loss_list:
            pictures.draw("loss.png", plot_loss, trainer.train_loss_list)
        pictures.draw("filters_after.png", filter_show, _first_filters(network))
        try:
            network.save_params(str(out_dir / params_file))
        except OSError as error:
            raise _OutputError(
                f"cannot write {out_dir / params_file}: {_os_reason(error)}"
            ) from None
    except NonFiniteLossError as error:
        return failed(str(error), f"Try {job.lr_hint}. ", EXIT_FAILURE)
    except RankDivergenceError as error:
        return failed(str(error), "", EXIT_FAILURE)
    except MemoryError:
        return failed(
            f"out of memory while training on batches of {job.batch_size:,} images",
            "Try a smaller --batch-size (or --eval-samples). ",
            EXIT_USAGE,
        )
    except _OutputError as error:
        return failed(str(error), "", EXIT_FAILURE)
    except (
        BrokenPipeError
    ):  # stdout's reader went away (`tinyconv train | head`): main() stops quietly
        raise
    except OSError as error:
        # Trainer.train writes no file but the checkpoint; name it, not its temporary file.
        what = (
            f"cannot write the checkpoint {job.checkpoint}"
            if job.checkpoint is not None
            else "training stopped"
        )
        return failed(f"{what}: {error.strerror or error}", "", EXIT_FAILURE)
    except KeyboardInterrupt:  # Ctrl-C outside a training step, or a second one within it
        failed("interrupted (Ctrl-C) before the results were written", "", EXIT_INTERRUPTED)
        raise
    timing["total_seconds"] = time.perf_counter() - job.clock
    status = "interrupted" if trainer.interrupted else "completed"
    _write_json(history_path, _history(trainer, settings, status, timing, job.started))

    written = [params_file, "history.json", *pictures.written]
    _say(
        quiet, f"Wrote {', '.join(written)} to {out_dir}/ ({timing['total_seconds']:.1f} s in all)"
    )
    if trainer.interrupted:
        _warn(
            f"Interrupted after {_plural(trainer.current_epoch, 'complete epoch')}; the parameters and "
            f"history so far are in {out_dir}/."
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _processes_text(settings: dict[str, Any]) -> str:
    threads = _plural(settings["threads"], "thread")
    distributed = settings["distributed"]
    return threads if distributed is None else f"{distributed['ranks']} processes x {threads}"


def _check_not_empty(x: Array, what: str, dataset: str, of_classes: str = "") -> None:
    if len(x) == 0:
        raise CommandError(f"{_dataset_title(dataset)} holds no {what} images{of_classes}")


# ----------------------------------------------------------------------------------------------
# evaluate


def _recorded_settings(params_path: str) -> dict[str, Any]:
    """The settings of the run that wrote ``params_path``, from the history.json beside it when
    it names this file; empty when there is none (anything unreadable counts as absent)."""
    history_path = Path(params_path).resolve().parent / "history.json"
    try:
        history = json.loads(history_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return {}
    settings = history.get("settings") if isinstance(history, dict) else None
    if not isinstance(settings, dict) or settings.get("params_file") != Path(params_path).name:
        return {}
    return settings


def _recorded_classes(params_path: str, outputs: int, count: int) -> tuple[int, ...] | None:
    """The --classes of the run that wrote ``params_path``, from the history.json beside it
    (only if it fits the network)."""
    classes = _recorded_settings(params_path).get("classes")
    if not isinstance(classes, list):
        return None
    if (
        len(classes) != outputs
        or len(set(classes)) != len(classes)
        or not all(type(label) is int and 0 <= label < count for label in classes)
    ):
        return None
    return tuple(classes)


def _evaluation_classes(args: argparse.Namespace, outputs: int) -> tuple[tuple[int, ...], str]:
    """The classes the network's outputs stand for, and where that was learnt."""
    count = len(_class_names(args.dataset))
    if args.classes is not None:
        _check_classes(args.classes, args.dataset)
        if len(args.classes) != outputs:
            raise CommandError(
                f"--classes {_classes_text(args.classes)} names {len(args.classes)} classes "
                f"but the network has {outputs} outputs"
            )
        return args.classes, "--classes"
    recorded = _recorded_classes(args.params, outputs, count)
    if recorded is not None:
        return recorded, "history.json"
    if outputs != count:
        raise CommandError(
            f"the network has {outputs} outputs but {_dataset_title(args.dataset)} has {count} "
            f"classes; name the {outputs} it was trained on with --classes"
        )
    return tuple(range(count)), ""


def _predict_labels(network: Any, x: Array, batch_size: int = 100) -> Array:
    predictions = [
        np.argmax(network.predict(x[start : start + batch_size]), axis=1)
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def _evaluate(args: argparse.Namespace) -> int:
    from .visualize import confusion_matrix, plot_confusion_matrix

    _set_threads(args.threads)
    params = _read_params(args.params)
    network, net = _network_from(params, args.net, args.dtype, args.params)
    classes, classes_from = _evaluation_classes(args, _num_outputs(network))
    all_names = _class_names(args.dataset)
    names = [all_names[label] for label in classes]
    out_path = Path(args.out) if args.out else Path(args.params).resolve().parent
    out_what = "--out" if args.out else "the directory of PARAMS (choose another with --out)"
    _check_out_dir_can_be_made(out_path, out_what)  # now, not after the evaluation
    _, (x_test, t_test) = _load_dataset(args.dataset, args.data_dir, args.download)
    subset = classes if len(classes) != len(all_names) or classes_from else None
    x_test, t_test = _only_classes(x_test, t_test, subset)
    of_classes = f" of classes {_classes_text(classes)}" if subset else ""
    _check_not_empty(x_test, "test", args.dataset, of_classes)
    x_test, t_test = _limit(x_test, t_test, args.test_size, "test", args.dataset, of_classes)

    try:
        predicted = _predict_labels(network, x_test)
    except MemoryError:
        raise CommandError(
            f"out of memory evaluating {type(network).__name__} from {args.params}"
        ) from None
    cm = confusion_matrix(t_test, predicted, num_classes=len(classes))
    correct = int(np.trace(cm))
    accuracy = correct / len(t_test)
    print(
        f"{_net_title(net, network)} from {args.params} on {_dataset_title(args.dataset)} "
        f"({len(t_test):,} test images{of_classes})"
    )
    if classes_from:
        print(f"classes {_classes_text(classes)} (from {classes_from})")
    print(f"accuracy: {accuracy:.4f} ({correct:,} of {len(t_test):,})")
    print()
    width = max(len(name) for name in names) + 3
    print(f"{'class':<{width}} {'correct':>8} {'total':>6} {'accuracy':>9}")
    per_class = []
    for output, (label, name) in enumerate(zip(classes, names)):
        total = int(cm[output].sum())
        hits = int(cm[output, output])
        class_accuracy = hits / total if total else None
        per_class.append(
            {
                "label": label,
                "output": output,
                "name": name,
                "correct": hits,
                "total": total,
                "accuracy": class_accuracy,
            }
        )
        shown = f"{class_accuracy:.3f}" if class_accuracy is not None else "-"
        print(f"{f'{label} {name}':<{width}} {hits:>8} {total:>6} {shown:>9}")

    out_dir = _prepare_out_dir(out_path, out_what, EVALUATE_OUTPUTS)
    pictures = _Pictures(out_dir)
    pictures.draw(
        "confusion_matrix.png",
        plot_confusion_matrix,
        cm,
        names,
        title=f"{Path(args.params).name} on {_dataset_title(args.dataset)} "
        f"(accuracy {accuracy:.3f})",
    )
    _write_json(
        out_dir / "evaluation.json",
        {
            "params": str(args.params),
            "net": net,
            "network": type(network).__name__,
            "dataset": args.dataset,
            "classes": list(classes),
            "test_size": len(t_test),
            "accuracy": accuracy,
            "per_class": per_class,
            "confusion_matrix": cm.tolist(),
        },
    )
    print()
    print(f"Wrote {', '.join([*pictures.written, 'evaluation.json'])} to {out_dir}/")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# export

# What every data set tinyconv reads gives, and so what the networks it trains expect.
INPUT_NORMALIZATION = (
    "grey pixel values in [0, 1] (the 8-bit value / 255; 0 is the background of "
    "MNIST and Fashion-MNIST), no mean subtracted"
)


def _export_classes(args: argparse.Namespace, outputs: int) -> tuple[str | None, list[str] | None]:
    """The data set and the class names of the network's outputs, as far as they are known:
    from --dataset and --classes, else from the history.json beside PARAMS."""
    recorded = _recorded_settings(args.params)
    dataset = args.dataset
    if dataset is None and recorded.get("dataset") in DATASETS:
        dataset = recorded["dataset"]
    if dataset is None:
        if args.classes is not None:
            raise CommandError(
                f"--classes {_classes_text(args.classes)}: name the data set they are classes of "
                f"with --dataset"
            )
        return None, None
    names = _class_names(dataset)
    if args.classes is not None:
        _check_classes(args.classes, dataset)
        if len(args.classes) != outputs:
            raise CommandError(
                f"--classes {_classes_text(args.classes)} names {len(args.classes)} classes "
                f"but the network has {outputs} outputs"
            )
        classes: tuple[int, ...] | None = args.classes
    else:
        classes = _recorded_classes(args.params, outputs, len(names))
        if classes is None and outputs == len(names):
            classes = tuple(range(len(names)))
    return _dataset_title(dataset), None if classes is None else [names[label] for label in classes]


def _export(args: argparse.Namespace) -> int:
    from .export import INSTALL_HINT, LOGITS_NAME, PROBABILITIES_NAME, to_onnx

    if _package_version("onnx") is None:
        raise CommandError(
            f"exporting to ONNX needs the onnx package; install it with: {INSTALL_HINT}"
        )
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    if args.opset > newest:
        raise CommandError(
            f"--opset {args.opset}: the installed onnx {onnx.__version__} knows opsets up to {newest}"
        )
    output = Path(args.output)
    if output.is_dir():
        raise CommandError(f"{output} is a directory; MODEL must name the .onnx file to write")
    params = _read_params(args.params)
    network, net = _network_from(params, args.net, args.dtype, args.params)
    outputs = _num_outputs(network)
    dataset, classes = _export_classes(args, outputs)
    _check_out_dir_can_be_made(output.parent, f"MODEL {output}")
    created = not output.parent.exists()
    _make_dir(output.parent)
    try:
        to_onnx(
            network,
            output,
            batch_size=args.batch_size,
            opset=args.opset,
            softmax=args.softmax,
            input_shape=IMAGE_SHAPE,
            dataset=dataset,
            classes=classes,
            normalization=INPUT_NORMALIZATION,
        )
    except (ValueError, MemoryError, OSError) as error:
        if created:  # a refused export leaves nothing behind
            with contextlib.suppress(OSError):
                output.parent.rmdir()
        if isinstance(error, MemoryError):
            raise CommandError(
                f"{args.params}: the network is too large for the memory to export"
            ) from None
        if isinstance(error, OSError):
            raise _OutputError(f"cannot write {output}: {_os_reason(error)}") from None
        raise CommandError(str(error)) from None
    batch = "batch" if args.batch_size is None else str(args.batch_size)
    names = f"'{LOGITS_NAME}'" + (f" and '{PROBABILITIES_NAME}'" if args.softmax else "")
    print(
        f"Wrote {output}: {_net_title(net, network)} from {args.params}, ONNX opset {args.opset}, {args.dtype}; "
        f"input 'input' ({batch}, {', '.join(map(str, IMAGE_SHAPE))}), output {names} ({batch}, {outputs})"
    )
    if classes:
        print(f"classes: {', '.join(classes)}" + (f" ({dataset})" if dataset else ""))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# filters and info


def _some_keys(keys: Sequence[str], limit: int = 12) -> str:
    return ", ".join(keys[:limit]) + (
        f" and {len(keys) - limit:,} more" if len(keys) > limit else ""
    )


def _filters_key(params: dict[str, Array], path: str) -> str:
    """The first convolution's weights: DLfS's W1, or a ResNet's conv1.weight."""
    for key in ("W1", "conv1.weight"):
        if key in params:
            return key
    raise CommandError(
        f"{path} has neither 'W1' nor 'conv1.weight' (it holds {_some_keys(list(params))}); "
        f"name the filters with --key"
    )


def _filters(args: argparse.Namespace) -> int:
    from .visualize import INSTALL_HINT, filter_show, have_matplotlib

    params = _read_params(args.params)
    key = args.key if args.key is not None else _filters_key(params, args.params)
    if key not in params:
        raise CommandError(f"{args.params} has no {key!r} (it holds {_some_keys(list(params))})")
    filters = params[key]
    if filters.ndim != 4:
        raise CommandError(
            f"{key} in {args.params} has shape {filters.shape}; convolution "
            f"filters have 4 dimensions (FN, C, FH, FW)"
        )
    if min(filters.shape) < 1:
        raise CommandError(f"{key} in {args.params} has shape {filters.shape}: no filters to draw")
    rows = math.ceil(filters.shape[0] / args.nx)
    if filters.shape[0] > MAX_FILTERS_DRAWN or rows > MAX_FILTERS_PER_SIDE:
        raise CommandError(
            f"{key} in {args.params} holds {filters.shape[0]:,} filters, "
            f"{rows:,} rows of --nx {args.nx}; a picture holds at most "
            f"{MAX_FILTERS_DRAWN:,} filters in at most {MAX_FILTERS_PER_SIDE} rows"
        )
    if not have_matplotlib():
        raise CommandError(
            f"matplotlib is needed to draw the filters; install it with: {INSTALL_HINT}"
        )
    output = Path(args.output)
    formats = _picture_formats()
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CommandError(
            f"-o {output}: the file name must end in a picture format's suffix "
            f"({', '.join('.' + name for name in formats)})"
        )
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
    print(
        f"Wrote {output}: {count} filters of {height}x{width}"
        + (f" (channel 0 of {channels})" if channels > 1 else "")
    )
    return EXIT_OK


# Formats matplotlib writes by itself or through Pillow's built-in codecs; left out: pgf (needs a
# TeX installation) and avif (an optional Pillow codec), which fail only when the file is written.
PICTURE_FORMATS = (
    "png",
    "pdf",
    "svg",
    "svgz",
    "eps",
    "ps",
    "jpg",
    "jpeg",
    "tif",
    "tiff",
    "webp",
    "gif",
    "raw",
    "rgba",
)


def _summary(args: argparse.Namespace) -> int:
    from .nets import build_network, network_from_params, reference_setup
    from .serialization import ParamsFileError

    if args.params is not None:
        if args.num_classes is not None:
            raise CommandError(
                "--num-classes describes a network built by --net; PARAMS has its own classes"
            )
        params = _read_params(args.params)
        try:
            network = network_from_params(
                params, net=args.net or "auto", input_shape=args.input_shape, source=args.params
            )
        except ParamsFileError as error:
            raise CommandError(str(error)) from None
        except ValueError as error:
            raise CommandError(f"{args.params}: {error}") from None
        shape = args.input_shape or network.default_input_shape()
        if shape is None:  # every tinyconv network implies one; say so should one not
            raise CommandError(
                f"{args.params}: the network implies no input size; give --input-shape"
            )
    else:
        name = args.net or "simple"
        if name == "auto":
            raise CommandError(
                "--net auto recognises the network of a parameter file: give PARAMS, or name a network"
            )
        classes, shape = reference_setup(name)
        shape = args.input_shape or shape
        try:
            network = build_network(
                name, num_classes=args.num_classes or classes, input_shape=shape, seed=0
            )
        except ValueError as error:
            raise CommandError(f"--net {name}: {error}") from None
        except MemoryError:
            raise CommandError(
                f"--net {name}: a network of these sizes is too large for the memory"
            ) from None
    try:
        summary = network.summary(shape, batch_size=args.batch_size, depth=args.depth)
    except (
        ValueError
    ) as error:  # an input the network cannot take (too small, wrong size for its fc)
        raise CommandError(f"--input-shape {','.join(map(str, shape))}: {error}") from None
    print(summary)
    return EXIT_OK


def _picture_formats() -> list[str]:
    """The file suffixes ``tinyconv filters`` can write: PICTURE_FORMATS that this matplotlib
    knows."""
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    return [name for name in PICTURE_FORMATS if name in known]


def _package_version(module_name: str) -> str | None:
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
        print(
            f"Data sets (with --data-dir, read from {args.data_dir} only; nothing else is "
            f"searched or downloaded):"
        )
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
    for module_name, purpose, extra in (
        ("matplotlib", "pictures", "plot"),
        ("tqdm", "progress bars", "progress"),
        ("platformdirs", "standard cache directory", "cache"),
        ("onnx", "tinyconv export", "onnx"),
    ):
        version = _package_version(module_name)
        state = version if version else f'not installed (pip install "tinyconv[{extra}]")'
        print(f"  {module_name} ({purpose}): {state}")
    _print_mpi_info()
    return EXIT_OK


def _print_mpi_info() -> None:
    """The MPI library and world size, for --distributed; importing mpi4py initialises MPI (as a
    process of its own when not started by mpiexec), which only 'info' and --distributed do."""
    from .distributed import MPI_INSTALL_HINT, import_mpi, mpi_summary

    if importlib.util.find_spec("mpi4py") is None:
        print(f"  mpi4py (--distributed): not installed ({MPI_INSTALL_HINT})")
        return
    try:
        summary = mpi_summary(import_mpi())
    except (ImportError, RuntimeError) as error:  # mpi4py without a loadable MPI library
        print(f"  mpi4py (--distributed): installed, but MPI cannot start: {error}")
        return
    print(
        f"  mpi4py (--distributed): {summary['mpi4py']}; MPI {summary['standard']} library: "
        f"{summary['library']}; world size {summary['world_size']}"
    )


# ----------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
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

    threads_before, threads_chosen = tinyconv.get_num_threads(), tinyconv._threads_chosen
    try:
        args.comm = _world_comm() if getattr(args, "distributed", False) else None
        exit_code: int = args.handler(args)
        return exit_code
    except CommandError as error:
        _warn(f"error: {error}")
        _abort_other_ranks(args, error.exit_code)
        return error.exit_code
    except _OutputError as error:  # a write that failed after the work was done
        _warn(f"error: {error}")
        _abort_other_ranks(args, EXIT_FAILURE)
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
        _abort_other_ranks(args, EXIT_FAILURE)
        return EXIT_FAILURE
    finally:
        # --threads is process-wide; give callers of main() (tests, notebooks) their setting back.
        tinyconv.set_num_threads(threads_before)
        tinyconv._threads_chosen = threads_chosen


def _abort_other_ranks(args: argparse.Namespace, exit_code: int) -> None:
    """With --distributed, an error one rank found alone (its data, its output directory) would
    leave the others waiting for it in a collective: end them all."""
    comm = getattr(args, "comm", None)
    if comm is not None and comm.Get_size() > 1:
        sys.stderr.write(
            f"tinyconv: rank {comm.Get_rank()} of {comm.Get_size()} stopped; aborting all ranks\n"
        )
        sys.stderr.flush()
        comm.Abort(exit_code)


if __name__ == "__main__":  # pragma: no cover - `python -m tinyconv` goes through __main__.py
    sys.exit(main())
