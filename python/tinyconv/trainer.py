"""Mini-batch training loop with the interface of DLfS's ``common/trainer.py``.

``Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None, verbose=True)``,
then ``train()``; afterwards ``train_loss_list`` (one loss per step) and ``train_acc_list`` /
``test_acc_list`` (one accuracy per epoch) are filled as DLfS's scripts expect. Any network with
DLfS's ``params``/``gradient``/``loss``/``accuracy`` works, tinyconv's or DLfS's own.

What differs from DLfS, and why:

* **Output.** ``verbose=True`` prints what DLfS prints: ``log="dlfs"`` (the default) gives a
  ``train loss:...`` line per step, an ``=== epoch:N, train acc:..., test acc:... ===`` line per
  evaluation and the final test accuracy, so a book script's console output is recognisable.
  ``log="epochs"`` (what the ``tinyconv train`` command uses) prints one summary line per epoch
  instead -- mean loss, train and test accuracy, seconds -- with a progress bar per epoch while
  standard error is a terminal (tqdm when installed, a plain one-line display otherwise), and the
  final test accuracy. ``progress=`` forces the bar on or off in either style.
* **Epochs.** An epoch is ``iter_per_epoch = max(ceil(train_size / mini_batch_size), 1)`` steps
  (DLfS: ``train_size / mini_batch_size``, a float), and accuracy is measured at the *end* of each
  epoch (DLfS measures after the first step of each epoch), so ``train_acc_list`` has ``epochs``
  entries, as in DLfS, and its last entry describes the trained network.
* **DLfS's exact schedule.** ``dlfs_compat=True`` runs DLfS's algorithm instead, step for step,
  so that under the same ``np.random.seed`` ``train_loss_list``, ``train_acc_list`` and
  ``test_acc_list`` equal DLfS's (a float64 network gives DLfS's numbers; a network with dropout
  included, since the draws happen in the same order): ``iter_per_epoch = max(train_size /
  mini_batch_size, 1)`` (a float), ``max_iter = int(epochs * iter_per_epoch)`` steps; each step
  draws ``np.random.choice(train_size, mini_batch_size)``, computes the gradient, updates, then
  records the loss of a *second* forward pass ``network.loss(x_batch, t_batch)`` after the update
  (for DeepConvNet that pass runs in training mode and draws fresh dropout masks, as in DLfS); the
  accuracies are measured when ``current_iter % iter_per_epoch == 0``, i.e. after the *first* step
  of each epoch, so the first entries describe a network trained for one step and the last
  training epoch is never evaluated (the final test accuracy is measured afterwards, as in DLfS).
  When ``train_size / mini_batch_size`` is not a whole number some epochs get no evaluation at all,
  also as in DLfS. ``current_epoch`` counts evaluations. Not available with
  ``sampling="permutation"`` or checkpoints; with ``seed=`` the batches come from the trainer's
  generator instead of ``np.random``. ``callback`` is called after each evaluation, its record's
  ``loss`` being the mean over the steps since the previous one.
* **Sampling.** ``sampling="replacement"`` (default) draws every batch independently with
  ``np.random.choice(train_size, mini_batch_size)`` as DLfS, so some samples repeat and some are
  missed within an epoch; ``sampling="permutation"`` visits every sample exactly once per epoch,
  in a fresh random order (the last batch may be smaller).
* **Loss.** For tinyconv networks ``train_loss_list`` records the loss of the forward pass that
  the gradient came from, i.e. before the update; DLfS runs a second forward pass after the update
  to get it. (For other networks the DLfS way is used.)
* **Randomness.** ``seed=`` gives the trainer a private ``numpy.random.Generator`` for the batch
  order; otherwise it draws from ``np.random`` like DLfS. Dropout masks come from the network
  (see its ``seed``/``rng`` arguments).
* **Safety.** A NaN or infinite loss raises :class:`NonFiniteLossError` (before the bad gradient
  is applied, for tinyconv networks). A finite loss with a gradient entry that the update cannot
  apply -- NaN, infinite, or, for AdaGrad, RMSprop and Adam, so large that its square overflows
  (e.g. float32 inputs near 1e38; Adam's second moment would turn NaN) -- raises
  :class:`NonFiniteGradientError`, a subclass naming the gradient and entry, before any parameter
  or optimizer state changes: every gradient is checked first by one vectorised read
  (``Optimizer.find_unusable_gradient``). Training inputs that look unnormalised (the first batch
  has a finite ``|x| > 1e3``; such inputs saturate the first layers and training stalls) give one
  :class:`UnnormalizedInputWarning` per trainer. Ctrl-C (SIGINT) finishes the current step, then
  ``train()`` returns normally with ``interrupted = True``: ``train_loss_list`` holds every
  completed step and the accuracy lists every completed epoch. A second Ctrl-C raises
  ``KeyboardInterrupt`` at once.
* **Checkpoints.** With ``checkpoint="path"`` the network, optimizer state, random states,
  counters and histories are saved atomically at the end of every epoch, after the callback (so
  whatever the callback changes -- a learning rate, random draws -- is part of the checkpoint);
  ``resume=True`` continues from that file (or starts afresh when it does not exist yet). A resumed
  run ends with bitwise the same parameters as an uninterrupted one, and ``epochs`` may be raised
  to train further. Resuming restores the global ``np.random`` state as well, since DLfS-style
  sampling and dropout draw from it. Loading checks every field of the file before anything
  changes (see :meth:`Trainer.load_checkpoint`); a bad one raises :class:`CheckpointError`.
* **Learning-rate schedules.** ``lr_schedule="cosine"`` scales the optimizer's learning rates
  (``lr`` and every parameter group's) by ``(1 + cos(pi * i / max_iter)) / 2`` before step ``i``
  (0-based, counted over the whole run), ``"step"`` by 0.1 from half the run on and by 0.01 from
  three quarters on (He et al.'s CIFAR schedule), a callable ``f(i, max_iter)`` by what it
  returns; ``"constant"`` (default) leaves the rates alone, as DLfS. The scaling holds for the
  update only: between steps the optimizer keeps its own rates, so a callback that changes
  ``optimizer.lr`` sets the new base, and checkpoints store the base rates. The schedule follows
  ``current_iter``, so a resumed run continues it; raising ``epochs`` on resume stretches it.
* ``callback(trainer, record)`` is called after each epoch with a dict (``epoch``, ``loss``,
  ``train_acc``, ``test_acc``, ``seconds``); its return value is ignored.
* **Data-parallel training over MPI.** ``comm=`` an ``mpi4py`` intra-communicator (e.g.
  ``MPI.COMM_WORLD`` of a program started with ``mpiexec -n K``; ``pip install "tinyconv[mpi]"``)
  trains one model on K processes, on one host or many, with the same results as one process
  training on the same global batches (up to the rounding of the sum over the ranks: relative
  1e-12 in float64). Every rank constructs the trainer at the same point with the same data and
  settings. ``mini_batch_size`` is the *global* batch: each step every rank draws the same batch
  from the shared seed (``seed``, or rank 0's fresh one, broadcast) and computes the gradient of
  its contiguous shard (sizes differ by at most one sample when K does not divide the batch; a
  shard's gradient is weighted by its size, so the sum is the full batch's mean gradient; a shard
  may be empty when the batch is smaller than K). The gradients, the loss and a stop flag travel
  in one flat buffer summed by a single in-place ``Allreduce`` per step; every rank then applies
  the same update, so the parameters stay bitwise identical, which a fingerprint ``Allgather``
  checks every ``check_every`` steps (default 100) and at each epoch's end
  (:class:`~tinyconv.distributed.RankDivergenceError` on every rank if not). Rank 0's parameters
  and buffers are broadcast at construction, so the ranks start identical. A NaN loss or gradient
  on any rank reaches every rank through the sum, so all raise :class:`NonFiniteLossError` at the
  same step; Ctrl-C (``mpiexec`` forwards it) stops all ranks after the same step; any other
  exception on a rank prints the rank, host and traceback and aborts the job (``MPI_Abort``), since
  the other ranks would wait for it forever. Accuracies are measured on shards and the counts
  summed (every rank gets the numbers); only rank 0 prints, shows progress and writes the
  checkpoint, which holds nothing that depends on the number of ranks: a run resumes with any K.
  Each rank's dropout masks come from its own stream (the network's generator, or ``np.random``
  for a network without one, jumped by the rank; rank 0's is the checkpointed one). **Batch
  norm** normalises with each rank's own shard statistics, as PyTorch's DistributedDataParallel
  (no synchronised batch norm), so a network with batch norm trains like K processes with
  batches of size batch/K, not like one process; the running statistics each rank gathers are
  averaged over the ranks before every evaluation, checkpoint and at the end of ``train()``. The callback runs on every rank with the same record
  (guard file writing with ``trainer.rank == 0``). Unless ``OMP_NUM_THREADS`` or
  :func:`tinyconv.set_num_threads` chose another count, each rank uses the host's processors
  divided by the ranks on that host. Only tinyconv networks, and not with ``dlfs_compat``. With a
  communicator of one rank the trainer behaves as without one (its exceptions propagate).
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Union

import numpy as np
import numpy.typing as npt

from ._protocols import TrainableNetwork
from ._typing import Array, IntArray, PathLike
from .distributed import DataParallel, RankDivergenceError
from .nets import Network
from .optimizer import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    ParamGroup,
    RMSprop,
    get_optimizer,
)
from .serialization import ParamsFileError, load_pickle_bytes, load_pickle_file, save_pickle

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm
    from tqdm.std import tqdm

__all__ = [
    "LOG_STYLES",
    "LR_SCHEDULES",
    "SGD",
    "AdaGrad",
    "Adam",
    "CheckpointError",
    "Momentum",
    "Nesterov",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "RMSprop",
    "Trainer",
    "UnnormalizedInputWarning",
    "lr_factor",
    # What ``from common.trainer import *`` also gives a DLfS script: DLfS's module imports
    # sys, os and numpy and star-imports common/optimizer.py.
    "np",
    "os",
    "sys",
]

_CHECKPOINT_FORMAT = "tinyconv.trainer.checkpoint"
_CHECKPOINT_VERSION = 1
_SAMPLING_MODES = ("replacement", "permutation")
#: Names ``Trainer(lr_schedule=...)`` accepts besides a callable.
LR_SCHEDULES = ("constant", "cosine", "step")
#: What ``Trainer(log=...)`` accepts: DLfS's console lines, or one summary line per epoch.
LOG_STYLES = ("dlfs", "epochs")
# Inputs beyond this magnitude are taken for unnormalised data (pixels in 0..255 pass; the usual
# scalings to [0, 1] or to unit variance stay far below it).
_UNNORMALIZED_INPUT_LIMIT = 1e3


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite, so training stopped.

    Attributes: ``loss``, ``epoch`` (1-based, the epoch in progress) and ``step`` (1-based within
    that epoch).
    """

    def __init__(self, loss: float | None, epoch: int, step: int, message: str | None = None):
        self.loss, self.epoch, self.step = loss, epoch, step
        super().__init__(
            message
            or (
                f"training loss became {loss} at epoch {epoch}, step {step}; training stopped. "
                "The learning rate may be too high, or the data may contain NaN or infinite values."
            )
        )


class NonFiniteGradientError(NonFiniteLossError):
    """A gradient entry was NaN or infinite -- or, for optimizers that square gradients (AdaGrad,
    RMSprop, Adam), so large that its square overflows -- although the loss was finite, so training
    stopped before the update: parameters and optimizer state are those before the step. A
    subclass of :class:`NonFiniteLossError`, so one ``except`` clause handles both.

    Attributes: those of :class:`NonFiniteLossError` (``loss`` is the finite loss of the step, or
    ``None`` for networks whose loss is computed after the update, DLfS's way), plus ``key`` (the
    gradient's name), ``index`` (the entry) and ``value``.
    """

    def __init__(
        self,
        key: str,
        index: tuple[int, ...],
        value: float,
        loss: float | None,
        epoch: int,
        step: int,
        reason: str | None = None,
    ):
        self.key, self.index, self.value = key, index, value
        what = f"{value}" if not math.isfinite(value) else f"{value:.6g} ({reason or 'too large'})"
        loss_text = "" if loss is None else f", with a finite loss of {loss:.6g}"
        super().__init__(
            loss,
            epoch,
            step,
            message=(
                f"gradient {key!r} at index {index} is {what} at epoch {epoch}, step {step}{loss_text}; "
                "training stopped before the update. The inputs may be far too large (normalise them) "
                "or the learning rate too high."
            ),
        )


class UnnormalizedInputWarning(UserWarning):
    """Training inputs reach magnitudes (> 1e3) that normalised data never has; with such inputs
    the first layers saturate and training stalls. Issued once per :class:`Trainer`, on its
    first batch."""


class CheckpointError(ParamsFileError):
    """A checkpoint cannot be resumed from: it is not a tinyconv checkpoint, one of its fields is
    malformed, or it was written by a different training setup. ``path`` is the file and
    ``field`` the part to blame (``"counters.current_iter"``, ``"optimizer"``,
    ``"rng.numpy_global"``, ...). Raised before anything changes."""

    def __init__(self, path: str, field: str, problem: str):
        self.path, self.field = path, field
        super().__init__(f"{path}: checkpoint field {field}: {problem}")


# ----------------------------------------------------------------------------------------------
# Progress display


class _NoProgress:
    def update(self, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


class _TqdmProgress:
    def __init__(self, tqdm_class: type[tqdm[Any]], total: int, description: str, batch_size: int):
        self._bar = tqdm_class(
            total=total,
            desc=description,
            unit="step",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._loss_sum, self._count, self._batch_size = 0.0, 0, batch_size

    def update(self, loss: float) -> None:
        self._loss_sum += loss
        self._count += 1
        elapsed = self._bar.format_dict.get("elapsed") or 0.0
        rate = self._count * self._batch_size / elapsed if elapsed > 0 else 0.0
        self._bar.set_postfix_str(
            f"loss {self._loss_sum / self._count:.4f}, {rate:,.0f} samples/s", refresh=False
        )
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class _PlainProgress:
    """A one-line progress display on standard error for when tqdm is not installed."""

    _INTERVAL = 0.2  # seconds between redraws

    def __init__(self, total: int, description: str, batch_size: int):
        self._total, self._description, self._batch_size = total, description, batch_size
        self._loss_sum, self._count = 0.0, 0
        self._start = self._last_draw = time.perf_counter()
        self._width = 0

    def update(self, loss: float) -> None:
        self._loss_sum += loss
        self._count += 1
        now = time.perf_counter()
        if now - self._last_draw >= self._INTERVAL or self._count == self._total:
            self._last_draw = now
            rate = self._count / (now - self._start) if now > self._start else 0.0
            line = (
                f"{self._description}: {self._count}/{self._total} steps, "
                f"loss {self._loss_sum / self._count:.4f}, {rate:.1f} steps/s, "
                f"{rate * self._batch_size:,.0f} samples/s"
            )
            self._width = max(self._width, len(line))
            sys.stderr.write("\r" + line.ljust(self._width))
            sys.stderr.flush()

    def close(self) -> None:
        if self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()


def _make_progress(
    enabled: bool, total: int, description: str, batch_size: int
) -> _NoProgress | _PlainProgress | _TqdmProgress:
    if not enabled:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainProgress(total, description, batch_size)
    return _TqdmProgress(tqdm, total, description, batch_size)


# ----------------------------------------------------------------------------------------------
# Ctrl-C handling


class _InterruptGuard:
    """While active (in the main thread), the first SIGINT only sets ``requested``; the training
    loop stops after the step in progress. A second SIGINT raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write(
            "\nInterrupted: stopping after the current step (Ctrl-C again to abort at once)\n"
        )
        sys.stderr.flush()

    def __enter__(self) -> _InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except (ValueError, OSError):  # e.g. embedded interpreters without signal support
                self._installed = False
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            previous = self._previous if self._previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------------------------
# Random state helpers


def _rng_state(rng: Any) -> Any:
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return {"kind": "Generator", "state": rng.bit_generator.state}
    if isinstance(rng, np.random.RandomState):
        return {"kind": "RandomState", "state": rng.get_state()}
    return None  # an unknown random source cannot be checkpointed


def _rng_kind(rng: Any) -> str | None:
    """The ``kind`` that :func:`_rng_state` records for ``rng`` (None: not checkpointed)."""
    if isinstance(rng, np.random.Generator):
        return "Generator"
    if isinstance(rng, np.random.RandomState):
        return "RandomState"
    return None


class _FieldError(Exception):
    """A malformed checkpoint field, found while checking; becomes a :class:`CheckpointError`."""

    def __init__(self, field: str, problem: str):
        super().__init__(field, problem)
        self.field, self.problem = field, problem


def _type_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _checked_int(value: Any, field: str, low: int, high: int) -> int:
    """An int (not a bool) in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(field, f"must be an int, got {_type_name(value)}")
    if not low <= value < high:
        raise _FieldError(field, f"must be in [{low}, {high}), got {value}")
    return int(value)


def _checked_float(value: Any, field: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite float in [low, high]."""
    if not isinstance(value, float):
        raise _FieldError(field, f"must be a float, got {_type_name(value)}")
    if not (math.isfinite(value) and low <= value <= high):
        raise _FieldError(field, f"must be finite and in [{low}, {high}], got {value!r}")
    return float(value)


def _checked_dict(value: Any, field: str, keys: Sequence[str]) -> dict[Any, Any]:
    """A dict with exactly ``keys``."""
    if not isinstance(value, dict):
        raise _FieldError(field, f"must be a dict, got {_type_name(value)}")
    if set(value) != set(keys):
        missing = [k for k in keys if k not in value]
        unknown = [k for k in value if k not in keys]
        raise _FieldError(
            field,
            f"must have exactly the keys {sorted(keys)} (missing {missing}, unknown {unknown!r})",
        )
    return value


def _same_state(a: Any, b: Any) -> bool:
    """Exact equality of random states: same container types, keys, array dtypes, shapes, values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    return bool(a == b)


# Integer fields of each NumPy bit generator's state, as paths into its state dict, with their
# ranges [0, upper). NumPy does not check them all: an MT19937 ``pos`` above 624 or a negative
# Philox ``buffer_pos`` makes it read outside its state arrays (a memory disclosure or a crash), so
# every integer is checked here. Array fields take their dtype and shape from a live state.
_PCG64_INTS = {
    ("state", "state"): 2**128,
    ("state", "inc"): 2**128,
    ("has_uint32",): 2,
    ("uinteger",): 2**32,
}
_BIT_GENERATOR_INTS: dict[str, dict[tuple[str, ...], int]] = {
    "PCG64": _PCG64_INTS,
    "PCG64DXSM": _PCG64_INTS,
    "MT19937": {("state", "pos"): 625},
    "Philox": {("buffer_pos",): 5, ("has_uint32",): 2, ("uinteger",): 2**32},
    "SFC64": {("has_uint32",): 2, ("uinteger",): 2**32},
}
_MT19937_WORDS = 624


def _check_like(
    value: Any,
    template: Any,
    field: str,
    int_ranges: Mapping[tuple[str, ...], int],
    path: tuple[str, ...] = (),
) -> None:
    """``value`` has exactly the structure of ``template`` (a live bit generator state): the same
    dict keys, arrays of the same dtype and shape, the same strings, ints in their ranges."""
    if isinstance(template, dict):
        _checked_dict(value, field, list(template))
        for key in template:
            _check_like(value[key], template[key], f"{field}.{key}", int_ranges, (*path, key))
    elif isinstance(template, np.ndarray):
        if not (
            isinstance(value, np.ndarray)
            and value.dtype == template.dtype
            and value.shape == template.shape
        ):
            raise _FieldError(
                field,
                f"must be a {template.dtype} array of shape {template.shape}, "
                f"got {_type_name(value)}",
            )
    elif isinstance(template, str):
        if not isinstance(value, str) or value != template:
            raise _FieldError(field, f"must be {template!r} (this run's generator), got {value!r}")
    elif isinstance(template, int) and not isinstance(template, bool) and path in int_ranges:
        _checked_int(value, field, 0, int_ranges[path])
    else:  # a field this version of tinyconv does not know how to check
        raise _FieldError(
            field, f"cannot be checked (unexpected field of type {type(template).__name__})"
        )


def _checked_generator_state(value: Any, rng: np.random.Generator, field: str) -> dict[str, Any]:
    """A ``bit_generator.state`` dict for ``rng``'s kind of bit generator, checked field by field
    and then proven on a scratch bit generator: NumPy must accept it and give it back unchanged."""
    bit_generator = rng.bit_generator
    kind = type(bit_generator).__name__
    int_ranges = _BIT_GENERATOR_INTS.get(kind)
    if int_ranges is None:
        raise _FieldError(
            field,
            f"this run's generator uses a {kind} bit generator, whose state cannot be "
            f"checked; supported: {', '.join(_BIT_GENERATOR_INTS)}",
        )
    _check_like(value, bit_generator.state, field, int_ranges)  # reading .state changes nothing
    if int_ranges is _PCG64_INTS and value["state"]["inc"] % 2 == 0:
        raise _FieldError(f"{field}.state.inc", "must be odd (PCG's stream increment always is)")
    scratch = type(bit_generator)()
    try:
        scratch.state = value
        round_trip = scratch.state
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise _FieldError(field, f"NumPy refuses it ({type(exc).__name__}: {exc})") from None
    if not _same_state(round_trip, value):
        raise _FieldError(field, "NumPy does not restore it exactly")
    state: dict[str, Any] = value
    return state


# What ``RandomState.get_state()`` returns: ('MT19937', key, pos, has_gauss, cached_gaussian).
_LegacyState = tuple[str, npt.NDArray[np.uint32], int, int, float]


def _checked_legacy_state(value: Any, field: str) -> _LegacyState:
    """A legacy ``RandomState.get_state()`` tuple ``('MT19937', key, pos, has_gauss, gauss)``,
    checked field by field and then proven on a scratch RandomState."""
    if not isinstance(value, tuple) or len(value) != 5:
        length = f" of length {len(value)}" if isinstance(value, tuple) else ""
        raise _FieldError(
            field,
            "must be a tuple ('MT19937', key, pos, has_gauss, cached_gaussian), "
            f"got {_type_name(value)}{length}",
        )
    name, key, pos, has_gauss, gauss = value
    if not isinstance(name, str) or name != "MT19937":
        raise _FieldError(f"{field}[0]", f"must be 'MT19937', got {name!r}")
    if not (
        isinstance(key, np.ndarray) and key.dtype == np.uint32 and key.shape == (_MT19937_WORDS,)
    ):
        raise _FieldError(
            f"{field}[1]",
            f"must be a uint32 array of shape ({_MT19937_WORDS},), got {_type_name(key)}",
        )
    _checked_int(pos, f"{field}[2]", 0, _MT19937_WORDS + 1)
    _checked_int(has_gauss, f"{field}[3]", 0, 2)
    _checked_float(gauss, f"{field}[4]")
    scratch = np.random.RandomState(0)
    try:
        scratch.set_state(value)
        round_trip = scratch.get_state()
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise _FieldError(field, f"NumPy refuses it ({type(exc).__name__}: {exc})") from None
    if not _same_state(round_trip, value):
        raise _FieldError(field, "NumPy does not restore it exactly")
    state: _LegacyState = value
    return state


def _checked_rng_state(saved: Any, rng: Any, field: str) -> Any:
    """The saved state of a trainer's or network's random source, checked against that source."""
    kind = _rng_kind(rng)
    if saved is None or kind is None:
        if (saved is None) != (kind is None):
            raise _FieldError(
                field,
                f"does not match this run (saved: "
                f"{'none' if saved is None else _type_name(saved)}, now: "
                f"{'none' if kind is None else kind})",
            )
        return None
    _checked_dict(saved, field, ["kind", "state"])
    if not isinstance(saved["kind"], str) or saved["kind"] != kind:
        raise _FieldError(f"{field}.kind", f"is {saved['kind']!r}, this run uses a {kind}")
    if kind == "Generator":
        return _checked_generator_state(saved["state"], rng, f"{field}.state")
    try:
        rng.get_state()  # the legacy tuple exists only for MT19937, which set_state() then needs
    except ValueError:
        raise _FieldError(
            field, "this run's RandomState does not use MT19937: its state cannot be restored"
        ) from None
    return _checked_legacy_state(saved["state"], f"{field}.state")


def _set_rng_state(rng: Any, state: Any) -> None:
    """Apply a state checked by :func:`_checked_rng_state` (cannot fail)."""
    if state is None:
        return
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
    else:
        rng.set_state(state)


class _Checkpoint(NamedTuple):
    """A checkpoint whose every field has been checked: applying it cannot fail."""

    network: dict[str, Array]
    optimizer: Any
    numpy_global: _LegacyState
    trainer_rng: Any
    network_rng: Any
    current_epoch: int
    current_iter: int
    train_loss_list: list[float]
    train_acc_list: list[float]
    test_acc_list: list[float]
    epoch_time_list: list[float]


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules

LrSchedule = Union[str, Callable[[int, int], float]]


def lr_factor(schedule: LrSchedule, step: int, max_iter: int) -> float:
    """The factor ``schedule`` (a name of :data:`LR_SCHEDULES` or ``f(step, max_iter)``) applies
    to the base learning rates before step ``step`` (0-based) of a run of ``max_iter`` steps.
    A callable must return a finite number >= 0 (``ValueError`` otherwise)."""
    if callable(schedule):
        value = schedule(step, max_iter)
        try:
            factor = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"lr_schedule returned {value!r} for step {step}; it must return a number"
            ) from None
        if not (math.isfinite(factor) and factor >= 0.0):
            raise ValueError(
                f"lr_schedule returned {factor!r} for step {step}; it must be finite and >= 0"
            )
        return factor
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, max_iter) / max(max_iter, 1)))
    if schedule == "step":
        return 1.0 if 2 * step < max_iter else 0.1 if 4 * step < 3 * max_iter else 0.01
    raise ValueError(
        f"lr_schedule must be one of {LR_SCHEDULES} or a callable f(step, max_iter), got {schedule!r}"
    )


# ----------------------------------------------------------------------------------------------
# Trainer


def _is_choice(value: object, choices: tuple[str, ...]) -> bool:
    """Whether ``value`` is a string among ``choices`` (not merely an object equal to one)."""
    return isinstance(value, str) and value in choices


def _is_positive_int(value: object) -> bool:
    """Whether ``value`` is an int or NumPy integer (not a bool) >= 1."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and bool(value >= 1)


class Trainer:
    """Train ``network`` with mini-batches; see the module docstring for the differences from DLfS.

    Parameters (DLfS's first, then tinyconv's keyword-only extras):
        network: a tinyconv network, or any object with DLfS's ``params``, ``gradient(x, t)``,
            ``loss(x, t)`` and ``accuracy(x, t)``.
        x_train, t_train, x_test, t_test: data and labels (integer labels or one-hot rows).
        epochs: number of epochs. mini_batch_size: samples per step.
        optimizer: a name (``'SGD'``, ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``, ``'RMSprop'``,
            ``'Adam'``, any case) built with ``optimizer_param`` (default ``{'lr': 0.01}``; it may
            hold ``param_groups``, per-prefix learning rates), or an
            :class:`~tinyconv.optimizer.Optimizer` instance. Parameters the network's
            ``gradient`` leaves out (frozen ones) are not updated and get no optimizer state.
        evaluate_sample_num_per_epoch: if set, accuracies are measured on the first that many
            training and test samples only (faster).
        verbose: print progress and the final test accuracy, in the style ``log`` picks.
        seed: seed of a private random generator for the batch order (default: ``np.random``).
        sampling: ``"replacement"`` (DLfS) or ``"permutation"``; see the module docstring.
        callback: ``callback(trainer, record)`` after every epoch.
        checkpoint: path of a checkpoint file written atomically after every epoch.
        resume: continue from ``checkpoint`` if that file exists.
        progress: force the progress display on or off (default: verbose and a terminal).
        lr_schedule: ``"constant"`` (default), ``"cosine"``, ``"step"`` or ``f(step, max_iter)``
            returning a factor for the base learning rates; see the module docstring.
        log: what ``verbose`` prints: ``"dlfs"`` (default) DLfS's lines, a ``train loss:`` per
            step and an ``=== epoch:... ===`` per evaluation; ``"epochs"`` one summary line per
            epoch, with a progress bar on a terminal.
        dlfs_compat: run DLfS's own schedule (evaluation after the first step of each epoch, a
            float ``iter_per_epoch``, the loss from a second forward pass after the update), so the
            three lists equal DLfS's under the same seed; see the module docstring.
        comm: an ``mpi4py`` intra-communicator: train data-parallel over its ranks, with
            ``mini_batch_size`` the global batch; see the module docstring. Construction is
            collective. ``rank`` and ``num_ranks`` tell where this process stands.
        check_every: with ``comm``, compare the ranks' parameters every this many steps (and at
            each epoch's end).
    """

    def __init__(
        self,
        network: TrainableNetwork,
        x_train: Array,
        t_train: Array,
        x_test: Array,
        t_test: Array,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str | Optimizer = "SGD",
        optimizer_param: Mapping[str, Any] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        verbose: bool = True,
        *,
        seed: int | None = None,
        sampling: str = "replacement",
        callback: Callable[[Trainer, dict[str, Any]], Any] | None = None,
        checkpoint: PathLike | None = None,
        resume: bool = False,
        progress: bool | None = None,
        lr_schedule: LrSchedule = "constant",
        log: str = "dlfs",
        dlfs_compat: bool = False,
        comm: Intracomm | None = None,
        check_every: int = 100,
    ):
        if sampling not in _SAMPLING_MODES:
            raise ValueError(f"sampling must be 'replacement' or 'permutation', got {sampling!r}")
        if not _is_choice(log, LOG_STYLES):
            raise ValueError(f"log must be one of {LOG_STYLES}, got {log!r}")
        if not isinstance(dlfs_compat, (bool, np.bool_)):
            raise TypeError(f"dlfs_compat must be True or False, got {dlfs_compat!r}")
        if dlfs_compat and sampling != "replacement":
            raise ValueError(
                f"dlfs_compat=True samples as DLfS (with replacement), so sampling must be "
                f"'replacement', got {sampling!r}"
            )
        if dlfs_compat and checkpoint is not None:
            # Checkpoints are written at the end of an epoch; DLfS's schedule has no such point.
            raise ValueError(
                f"dlfs_compat=True cannot write checkpoints, got checkpoint={checkpoint!r}"
            )
        if int(mini_batch_size) < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        if len(x_train) != len(t_train) or len(x_test) != len(t_test):
            raise ValueError(
                "x_train/t_train and x_test/t_test must hold the same number of samples"
            )
        if len(x_train) == 0:
            raise ValueError("x_train is empty")
        if resume and checkpoint is None:
            raise ValueError("resume=True needs a checkpoint= path")
        if not callable(lr_schedule) and not _is_choice(lr_schedule, LR_SCHEDULES):
            raise ValueError(
                f"lr_schedule must be one of {LR_SCHEDULES} or a callable f(step, max_iter), "
                f"got {lr_schedule!r}"
            )
        if not _is_positive_int(check_every):
            raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
        if comm is not None and not isinstance(network, Network):
            raise TypeError(
                f"comm= (data-parallel training) needs a tinyconv network, got {type(network).__name__}"
            )
        if comm is not None and dlfs_compat:
            raise ValueError(
                "dlfs_compat=True runs DLfS's single-process schedule; it cannot be combined with comm="
            )

        self.network: TrainableNetwork = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.sampling = sampling
        self.callback = callback
        self.checkpoint: str | None = None if checkpoint is None else os.fspath(checkpoint)
        self.resume = resume
        self.progress = progress
        self.log = log
        self.dlfs_compat = bool(dlfs_compat)
        # Collective: every rank gets here with the same arguments (see the module docstring).
        self._parallel: DataParallel | None = None
        if comm is not None:
            assert isinstance(network, Network)  # checked above
            self._parallel = DataParallel(comm, network, int(check_every))
            seed = self._parallel.shared_seed(seed)
            self._set_threads_per_rank(self._parallel)
            # Only rank 0 reports; the others train silently.
            self.verbose = verbose and self._parallel.rank == 0
            self.progress = progress if self._parallel.rank == 0 else False
        self.rng = None if seed is None else np.random.default_rng(seed)

        self.optimizer: Optimizer
        if isinstance(optimizer, Optimizer):
            self.optimizer = optimizer
        else:
            self.optimizer = get_optimizer(
                optimizer, **dict(optimizer_param if optimizer_param is not None else {"lr": 0.01})
            )
        self.lr_schedule = lr_schedule

        self.train_size = len(x_train)
        self.iter_per_epoch: int | float
        if self.dlfs_compat:
            self.iter_per_epoch = max(self.train_size / self.batch_size, 1)  # DLfS's float
        else:
            self.iter_per_epoch = max(math.ceil(self.train_size / self.batch_size), 1)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.epoch_time_list: list[float] = []
        self.final_test_acc: float | None = None
        self.interrupted = False
        self._iter_at_last_eval: int | None = None
        self._permutation: IntArray | None = None
        self._input_scale_checked = (
            self.rank != 0
        )  # with comm, rank 0 checks its shard: one warning
        self._guard: _InterruptGuard | None = None
        self._stop_agreed = False  # with comm: whether any rank asked to stop in the last step
        self._losses_since_eval: list[float] = []
        self._period_started = time.perf_counter()

    @property
    def rank(self) -> int:
        """This process's rank in ``comm`` (0 without one)."""
        return 0 if self._parallel is None else self._parallel.rank

    @property
    def num_ranks(self) -> int:
        """The number of processes training together (1 without ``comm``)."""
        return 1 if self._parallel is None else self._parallel.size

    @staticmethod
    def _set_threads_per_rank(parallel: DataParallel) -> None:
        """The host's processors shared among its ranks, unless the user chose a thread count."""
        import tinyconv

        threads = parallel.threads_per_rank(int(tinyconv.config()["num_procs"]))  # collective
        if not tinyconv._threads_chosen:
            tinyconv._core.set_num_threads(threads)  # still the default: not the user's choice

    @property
    def max_iter(self) -> int:
        """Total steps of a full run (DLfS's attribute)."""
        if self.dlfs_compat:
            return int(self.epochs * self.iter_per_epoch)
        return self.epochs * self._steps_per_epoch

    @property
    def _steps_per_epoch(self) -> int:
        """``iter_per_epoch`` outside ``dlfs_compat``, where it is a whole number."""
        return int(self.iter_per_epoch)

    # -- one step -----------------------------------------------------------------------------

    def _draw_permutation(self) -> IntArray:
        if self.rng is None:
            return np.random.permutation(self.train_size)
        return self.rng.permutation(self.train_size)

    def _batch_indices(self, step: int) -> IntArray:
        if self.sampling == "permutation":
            if self._permutation is None:  # train_step() called before any epoch began
                self._permutation = self._draw_permutation()
            return self._permutation[step * self.batch_size : (step + 1) * self.batch_size]
        if self.rng is None:
            return np.random.choice(self.train_size, self.batch_size)  # exactly DLfS's draw
        return self.rng.integers(0, self.train_size, size=self.batch_size)

    def _lr_factor(self) -> float:
        return lr_factor(self.lr_schedule, self.current_iter, self.max_iter)

    @property
    def current_lr(self) -> float | None:
        """The learning rate of parameters outside any group for the next step (the optimizer's
        ``lr`` times the schedule's factor), or ``None`` for an optimizer without ``lr``."""
        lr = getattr(self.optimizer, "lr", None)
        return None if lr is None else lr * self._lr_factor()

    def _update(self, grads: Mapping[str, Any], factor: float) -> None:
        """The optimizer step, with the rates scaled by the schedule for this step only: between
        steps the optimizer holds its own rates (a callback may change them; checkpoints store
        them)."""
        optimizer = self.optimizer
        if isinstance(self.lr_schedule, str) and self.lr_schedule == "constant":
            optimizer.update(self.network.params, grads)
            return
        lr, groups = getattr(optimizer, "lr", None), tuple(getattr(optimizer, "param_groups", ()))
        try:
            # Optimizers without ``lr`` exist (a user's subclass): set it only where it was read.
            if lr is not None:
                setattr(optimizer, "lr", lr * factor)  # noqa: B010
            if groups:
                optimizer.param_groups = [
                    ParamGroup(group.prefixes, group.lr * factor) for group in groups
                ]
            optimizer.update(self.network.params, grads)
        finally:
            if lr is not None:
                setattr(optimizer, "lr", lr)  # noqa: B010
            if groups:
                optimizer.param_groups = groups

    def train_step(self, step: int = 0) -> float:
        """One optimisation step on a mini-batch (``step`` is its index within the epoch, used by
        ``sampling="permutation"``). Returns the loss and appends it to ``train_loss_list``.
        With ``dlfs_compat`` this is DLfS's ``train_step``, evaluation included."""
        if self.dlfs_compat:
            return self._dlfs_train_step()
        loss = self._train_step(step)
        if self.verbose and self.log == "dlfs":
            print("train loss:" + str(loss))
        return loss

    def _draw_batch(self, step: int) -> tuple[Array, Array]:
        """The next mini-batch (``step`` indexes the epoch's permutation); the first one is checked
        for unnormalised inputs."""
        batch = self._batch_indices(step)
        if self._parallel is not None:
            batch = batch[self._parallel.shard(len(batch))]
        x_batch, t_batch = self.x_train[batch], self.t_train[batch]
        if not self._input_scale_checked:
            self._input_scale_checked = True
            self._warn_if_unnormalized(x_batch)
        return x_batch, t_batch

    def _train_step(self, step: int) -> float:
        factor = self._lr_factor()  # a schedule's bad value stops the step before anything changes
        # The whole batch's size (an epoch's last permutation batch may be short), for the weights.
        global_batch = (
            min(self.batch_size, self.train_size - step * self.batch_size)
            if self.sampling == "permutation"
            else self.batch_size
        )
        x_batch, t_batch = self._draw_batch(step)
        # A diverging run overflows in NumPy code (weight decay, batch norm) before the loss turns
        # non-finite; NonFiniteLossError reports that more clearly than a stream of warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if not isinstance(self.network, Network):
                grads = self.network.gradient(x_batch, t_batch)
                self._check_gradients(grads, None, step)
                self._update(grads, factor)
                loss = float(self.network.loss(x_batch, t_batch))
                self._check_loss(loss, step)
            else:
                if self._parallel is None:
                    grads = self.network.gradient(x_batch, t_batch)
                    loss = float(self.network.last_loss)  # type: ignore[arg-type]  # set by gradient()
                else:
                    # A Ctrl-C seen by any rank travels in the step's message, so that every rank
                    # stops after the same step (each rank's signal may come at another moment).
                    requested = self._guard is not None and self._guard.requested
                    grads, loss, self._stop_agreed = self._parallel.averaged_gradient(
                        self.network, x_batch, t_batch, global_batch, requested
                    )
                # Both checks come before the update: the parameters stay usable. With comm they
                # read the reduced values, so every rank takes the same decision.
                self._check_loss(loss, step)
                self._check_gradients(grads, loss, step)
                self._update(grads, factor)
        self.train_loss_list.append(loss)
        self.current_iter += 1
        if self._parallel is not None and self.current_iter % self._parallel.check_every == 0:
            self._parallel.check_identical(self.network, self.current_iter)
        return loss

    def _dlfs_train_step(self) -> float:
        """DLfS's ``Trainer.train_step``: draw, gradient, update, a second forward pass for the
        loss, and the evaluation when ``current_iter % iter_per_epoch == 0``."""
        # Where the step lies in DLfS's float epochs, for error messages only.
        epoch = int(self.current_iter // self.iter_per_epoch) + 1
        step = int(self.current_iter - math.ceil((epoch - 1) * self.iter_per_epoch))
        factor = self._lr_factor()
        x_batch, t_batch = self._draw_batch(0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            grads = self.network.gradient(x_batch, t_batch)
            self._check_gradients(grads, None, step, epoch)
            self._update(grads, factor)
            loss = float(self.network.loss(x_batch, t_batch))
            self._check_loss(loss, step, epoch)
        self.train_loss_list.append(loss)
        self._losses_since_eval.append(loss)
        if self.verbose and self.log == "dlfs":
            print("train loss:" + str(loss))
        if self.current_iter % self.iter_per_epoch == 0:
            self._end_of_evaluation_period(self.current_epoch + 1, self._losses_since_eval)
            self._losses_since_eval = []
        self.current_iter += 1
        return loss

    def _check_loss(self, loss: float, step: int, epoch: int | None = None) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                loss, self.current_epoch + 1 if epoch is None else epoch, step + 1
            )

    def _check_gradients(
        self, grads: Mapping[str, Any], loss: float | None, step: int, epoch: int | None = None
    ) -> None:
        found = self.optimizer.find_unusable_gradient(grads)
        if found is not None:
            key, index, value = found
            reason = (
                f"its square overflows {np.asarray(grads[key]).dtype}, and "
                f"{type(self.optimizer).__name__} squares gradients"
            )
            raise NonFiniteGradientError(
                key,
                index,
                value,
                loss,
                self.current_epoch + 1 if epoch is None else epoch,
                step + 1,
                reason,
            )

    def _warn_if_unnormalized(self, x_batch: Any) -> None:
        x = np.asarray(x_batch)
        if x.dtype.kind not in "iuf" or x.size == 0:
            return
        magnitudes = np.abs(x.astype(np.float64))  # one batch: cheap; no integer overflow in abs
        magnitudes = magnitudes[np.isfinite(magnitudes)]  # NaN and inf are the NaN guard's business
        if magnitudes.size and magnitudes.max() > _UNNORMALIZED_INPUT_LIMIT:
            warnings.warn(
                f"training inputs look unnormalised: the first batch reaches |x| = {magnitudes.max():.3g} "
                f"(> {_UNNORMALIZED_INPUT_LIMIT:g}). Scale them, e.g. to [0, 1] or to zero mean and unit "
                "variance; inputs this large saturate the first layers and training stalls.",
                UnnormalizedInputWarning,
                stacklevel=2,
            )

    # -- epochs -------------------------------------------------------------------------------

    def _evaluate(self) -> tuple[float, float]:
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if self.evaluate_sample_num_per_epoch is not None:
            n = self.evaluate_sample_num_per_epoch
            x_train, t_train, x_test, t_test = x_train[:n], t_train[:n], x_test[:n], t_test[:n]
        train_acc, test_acc = self._accuracies([(x_train, t_train), (x_test, t_test)])
        self._iter_at_last_eval = self.current_iter
        return train_acc, test_acc

    def _accuracies(self, sets: list[tuple[Any, Any]]) -> list[float]:
        if self._parallel is None:
            return [float(self.network.accuracy(x, t)) for x, t in sets]
        assert isinstance(self.network, Network)  # comm= takes only tinyconv networks
        self._parallel.average_buffers(self.network)
        return self._parallel.correct_counts(self.network, sets)

    def _show_progress(self) -> bool:
        if self.progress is not None:
            return bool(self.progress)
        try:
            # DLfS's per-step lines and a bar would garble each other; the bar goes with "epochs".
            return (
                bool(self.verbose)
                and self.log == "epochs"
                and not self.dlfs_compat
                and sys.stderr.isatty()
            )
        except (AttributeError, ValueError):  # replaced or closed stderr
            return False

    def _run_epoch(self, guard: _InterruptGuard) -> bool:
        """Train one epoch; False if it was cut short by Ctrl-C."""
        epoch = self.current_epoch + 1
        started = time.perf_counter()
        if self.sampling == "permutation":
            self._permutation = self._draw_permutation()
        width = len(str(self.epochs))
        bar = _make_progress(
            self._show_progress(),
            self._steps_per_epoch,
            f"epoch {epoch:>{width}}/{self.epochs}",
            self.batch_size,
        )
        losses: list[float] = []
        try:
            for step in range(self._steps_per_epoch):
                losses.append(self.train_step(step))
                bar.update(losses[-1])
                if self._stop_requested(guard):
                    return False
        finally:
            bar.close()

        self._period_started = started
        self._end_of_evaluation_period(epoch, losses)
        return True

    def _stop_requested(self, guard: _InterruptGuard) -> bool:
        return guard.requested if self._parallel is None else self._stop_agreed

    def _end_of_evaluation_period(self, epoch: int, losses: list[float]) -> None:
        """Measure the accuracies, record them, report, call back and write the checkpoint: at
        the end of an epoch, or after its first step with ``dlfs_compat``."""
        train_acc, test_acc = self._evaluate()
        seconds = time.perf_counter() - self._period_started
        self.current_epoch = epoch
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        self.epoch_time_list.append(seconds)
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "train_acc": train_acc,
            "test_acc": test_acc,
            "seconds": seconds,
        }
        if self.verbose and self.log == "dlfs":
            print(
                "=== epoch:"
                + str(epoch)
                + ", train acc:"
                + str(train_acc)
                + ", test acc:"
                + str(test_acc)
                + " ===",
                flush=True,
            )
        elif self.verbose:
            width = len(str(self.epochs))
            print(
                f"epoch {epoch:>{width}}/{self.epochs}: loss {record['loss']:.4f}, "
                f"train acc {train_acc:.4f}, test acc {test_acc:.4f}, {seconds:.1f} s",
                flush=True,
            )
        if self.callback is not None:
            self.callback(self, record)
        if self._parallel is not None:
            self._parallel.check_identical(self.network, self.current_iter)
        if self.checkpoint is not None and self.rank == 0:
            self.save_checkpoint(self.checkpoint)
        self._period_started = time.perf_counter()

    def train(self) -> None:
        """Train until ``epochs`` epochs are complete (resuming from ``checkpoint`` if asked),
        then measure the final test accuracy on the whole test set (``final_test_acc``)."""
        if self._parallel is None:
            self._train()
            return
        try:
            self._train()
        except (NonFiniteLossError, RankDivergenceError):
            raise  # decided on reduced values: every rank raises it at the same step
        except BaseException as error:
            self._parallel.abort(
                error, f"at epoch {self.current_epoch + 1}, global step {self.current_iter + 1}"
            )
            raise

    def _checkpoint_exists(self, path: str) -> bool:
        if self._parallel is None:
            return os.path.exists(path)
        return self._parallel.exists_on_root(path)

    def _train(self) -> None:
        if self.resume and self.checkpoint is not None and self._checkpoint_exists(self.checkpoint):
            self.load_checkpoint(self.checkpoint)
            if self.verbose:
                print(
                    f"resumed from {self.checkpoint} after epoch {self.current_epoch}/{self.epochs}",
                    flush=True,
                )
            self.resume = False  # a second train() call continues in memory
        self.interrupted = False
        with _InterruptGuard() as guard:
            self._guard = guard
            if self.dlfs_compat:
                self._period_started = time.perf_counter()
                while self.current_iter < self.max_iter:
                    self._dlfs_train_step()
                    if guard.requested:
                        self.interrupted = True
                        break
            else:
                while self.current_epoch < self.epochs:
                    if not self._run_epoch(guard):
                        self.interrupted = True
                        break
        if self.interrupted and self.rank == 0:
            print(
                f"training interrupted after {self.current_iter} steps "
                f"({self.current_epoch} complete epochs)",
                file=sys.stderr,
                flush=True,
            )

        self._guard = None
        if (
            self.evaluate_sample_num_per_epoch is None
            and self.test_acc_list
            and self._iter_at_last_eval == self.current_iter
        ):
            self.final_test_acc = self.test_acc_list[-1]  # measured on the full test set just now
        else:
            self.final_test_acc = self._accuracies([(self.x_test, self.t_test)])[0]
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(self.final_test_acc), flush=True)

    # -- checkpoints --------------------------------------------------------------------------

    def _refuse_checkpoints_in_dlfs_mode(self) -> None:
        if self.dlfs_compat:
            # A checkpoint resumes at an epoch's end; DLfS's schedule evaluates mid-epoch.
            raise ValueError("checkpoints are not available with dlfs_compat=True")

    def _network_state(self) -> dict[str, Array]:
        if isinstance(self.network, Network):
            return {key: np.array(value) for key, value in self.network.state_dict().items()}
        return {key: np.array(value) for key, value in self.network.params.items()}

    def _config(self) -> dict[str, Any]:
        return {
            "train_size": self.train_size,
            "batch_size": self.batch_size,
            "sampling": self.sampling,
            "iter_per_epoch": self.iter_per_epoch,
            "optimizer": type(self.optimizer).__name__,
            "trainer_seeded": self.rng is not None,
        }

    def save_checkpoint(self, path: PathLike) -> None:
        """Write everything needed to continue this run to ``path``, atomically (a pickle of
        plain containers and arrays, read back with the restricted unpickler)."""
        self._refuse_checkpoints_in_dlfs_mode()
        state = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "config": self._config(),
            "network": self._network_state(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"current_epoch": self.current_epoch, "current_iter": self.current_iter},
            "history": {
                "train_loss_list": np.asarray(self.train_loss_list, dtype=np.float64),
                "train_acc_list": list(self.train_acc_list),
                "test_acc_list": list(self.test_acc_list),
                "epoch_time_list": list(self.epoch_time_list),
            },
            "rng": {
                "numpy_global": np.random.get_state(),
                "trainer": _rng_state(self.rng),
                "network": _rng_state(getattr(self.network, "rng", None)),
            },
        }
        save_pickle(state, path)

    def load_checkpoint(self, path: PathLike) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`. The data size, batch size,
        sampling mode and optimizer must match this trainer; ``epochs`` may differ.

        The whole file is checked before anything changes: exactly the expected fields, each of
        the expected type and range; network arrays of this network's keys, shapes and dtypes
        (integer buffers such as a batch norm's ``num_batches_tracked`` included);
        optimizer state as :meth:`Optimizer.load_state_dict <tinyconv.optimizer.Optimizer.load_state_dict>`
        checks it, against this network's parameters; counters consistent with the histories'
        lengths; random states of exactly NumPy's structure for this run's generators, each proven
        on a scratch generator. Any problem raises :class:`CheckpointError` (a
        :class:`~tinyconv.serialization.ParamsFileError`) naming the field, and the network,
        optimizer, random states, counters and histories are left as they were. Then everything
        is applied at once.
        """
        self._refuse_checkpoints_in_dlfs_mode()
        name = os.fspath(path)
        if self._parallel is None:
            state = load_pickle_file(name)
        else:  # rank 0 reads, every rank checks: the same decision everywhere
            state = load_pickle_bytes(self._parallel.bytes_from_root(name), name)
        try:
            checked = self._checked_checkpoint(state, name)
        except _FieldError as exc:
            raise CheckpointError(name, exc.field, exc.problem) from None
        self._apply_checkpoint(checked, name)
        if self._parallel is not None:
            self._parallel.decorrelate_dropout(self.network)

    def _checked_checkpoint(self, state: Any, name: str) -> _Checkpoint:
        format_name = state.get("format") if isinstance(state, dict) else None
        if not isinstance(format_name, str) or format_name != _CHECKPOINT_FORMAT:
            raise _FieldError("format", "this is not a tinyconv training checkpoint")
        if type(state.get("version")) is not int or state["version"] != _CHECKPOINT_VERSION:
            raise _FieldError(
                "version",
                f"unsupported checkpoint version {state.get('version')!r} "
                f"(this tinyconv reads version {_CHECKPOINT_VERSION})",
            )
        _checked_dict(
            state,
            "(top level)",
            ["format", "version", "config", "network", "optimizer", "counters", "history", "rng"],
        )
        # The setup first: a mismatch is the likeliest problem and the clearest to report.
        config = self._config()
        saved_config = _checked_dict(state["config"], "config", list(config))
        mismatched = [
            key
            for key, value in config.items()
            if type(saved_config[key]) is not type(value) or saved_config[key] != value
        ]
        if mismatched:
            details = ", ".join(
                f"{key}: checkpoint {saved_config[key]!r}, now {config[key]!r}"
                for key in mismatched
            )
            raise _FieldError("config", f"written by a different training setup ({details})")

        network = self._checked_network_state(state["network"])
        optimizer = self._checked_optimizer_state(state["optimizer"])

        counters = _checked_dict(state["counters"], "counters", ["current_epoch", "current_iter"])
        current_epoch = _checked_int(counters["current_epoch"], "counters.current_epoch", 0, 2**63)
        # Checkpoints are written at the end of an epoch; save_checkpoint() called by hand after
        # an interrupted epoch holds part of the next one.
        first_iter = current_epoch * self._steps_per_epoch
        current_iter = _checked_int(
            counters["current_iter"],
            "counters.current_iter",
            first_iter,
            first_iter + self._steps_per_epoch,
        )

        history = _checked_dict(
            state["history"],
            "history",
            ["train_loss_list", "train_acc_list", "test_acc_list", "epoch_time_list"],
        )
        losses = history["train_loss_list"]
        if not (
            isinstance(losses, np.ndarray)
            and losses.dtype == np.float64
            and losses.shape == (current_iter,)
        ):
            raise _FieldError(
                "history.train_loss_list",
                f"must be a float64 array of shape ({current_iter},) "
                f"(one loss per step), got {_type_name(losses)}",
            )
        if not np.isfinite(losses).all():  # a non-finite loss stops training before it is recorded
            raise _FieldError("history.train_loss_list", "holds NaN or infinite losses")
        lists = {}
        for key, low, high in (
            ("train_acc_list", 0.0, 1.0),
            ("test_acc_list", 0.0, 1.0),
            ("epoch_time_list", 0.0, math.inf),
        ):
            values = history[key]
            if not isinstance(values, list) or len(values) != current_epoch:
                length = f" of length {len(values)}" if isinstance(values, list) else ""
                raise _FieldError(
                    f"history.{key}",
                    f"must be a list of {current_epoch} floats (one per epoch), "
                    f"got {_type_name(values)}{length}",
                )
            lists[key] = [
                _checked_float(v, f"history.{key}[{i}]", low, high) for i, v in enumerate(values)
            ]

        rng_states = _checked_dict(state["rng"], "rng", ["numpy_global", "trainer", "network"])
        numpy_global = _checked_legacy_state(rng_states["numpy_global"], "rng.numpy_global")
        trainer_rng = _checked_rng_state(rng_states["trainer"], self.rng, "rng.trainer")
        network_rng = _checked_rng_state(
            rng_states["network"], getattr(self.network, "rng", None), "rng.network"
        )
        return _Checkpoint(
            network,
            optimizer,
            numpy_global,
            trainer_rng,
            network_rng,
            current_epoch,
            current_iter,
            [float(v) for v in losses],
            lists["train_acc_list"],
            lists["test_acc_list"],
            lists["epoch_time_list"],
        )

    def _network_targets(self) -> Mapping[str, Array]:
        """The live arrays a checkpoint's ``network`` field is copied into."""
        if isinstance(self.network, Network):
            return self.network.state_dict()
        return self.network.params

    def _checked_network_state(self, saved: Any) -> dict[str, Array]:
        targets = self._network_targets()
        if not isinstance(saved, dict):
            raise _FieldError("network", f"must be a dict of arrays, got {_type_name(saved)}")
        problems = [f"{key!r} is missing" for key in targets if key not in saved]
        problems += [f"unknown key {key!r}" for key in saved if key not in targets]
        for key, target in targets.items():
            value = saved.get(key)
            target = np.asarray(target)
            if key in saved and not (
                isinstance(value, np.ndarray)
                and value.dtype == target.dtype
                and value.shape == target.shape
            ):
                problems.append(
                    f"{key!r} is {_type_name(value)}, the network has a {target.dtype} "
                    f"array of shape {target.shape}"
                )
        if problems:
            raise _FieldError(
                "network",
                f"does not fit this {type(self.network).__name__}: " + "; ".join(problems),
            )
        return {key: saved[key] for key in targets}

    def _checked_optimizer_state(self, saved: Any) -> Any:
        optimizer = self.optimizer
        try:
            if type(optimizer).load_state_dict is Optimizer.load_state_dict:
                return optimizer._checked_state(saved, self.network.params)
            # An optimizer with its own load_state_dict: try it on a copy.
            copy.deepcopy(optimizer).load_state_dict(saved)
            return saved
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise _FieldError("optimizer", str(exc)) from None

    def _apply_checkpoint(self, checked: _Checkpoint, name: str) -> None:
        """Apply a checkpoint checked by :meth:`_checked_checkpoint`: nothing here can fail."""
        if isinstance(self.network, Network):
            self.network.load_state_dict(checked.network, source=name)
        else:
            params = self.network.params
            for key, value in checked.network.items():
                np.copyto(params[key], value)
        if type(self.optimizer).load_state_dict is Optimizer.load_state_dict:
            self.optimizer._apply_state(checked.optimizer)
        else:
            self.optimizer.load_state_dict(checked.optimizer)
        np.random.set_state(checked.numpy_global)
        _set_rng_state(self.rng, checked.trainer_rng)
        _set_rng_state(getattr(self.network, "rng", None), checked.network_rng)
        self.current_epoch = checked.current_epoch
        self.current_iter = checked.current_iter
        self.train_loss_list = checked.train_loss_list
        self.train_acc_list = checked.train_acc_list
        self.test_acc_list = checked.test_acc_list
        self.epoch_time_list = checked.epoch_time_list
        self._iter_at_last_eval = self.current_iter
