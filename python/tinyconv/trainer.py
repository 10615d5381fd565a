"""Mini-batch training loop with the interface of DLfS's ``common/trainer.py``.

``Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None, verbose=True)``,
then ``train()``; afterwards ``train_loss_list`` (one loss per step) and ``train_acc_list`` /
``test_acc_list`` (one accuracy per epoch) are filled as DLfS's scripts expect. Any network with
DLfS's ``params``/``gradient``/``loss``/``accuracy`` works, tinyconv's or DLfS's own.

What differs from DLfS, and why:

* **Output.** No line per step. When ``verbose`` and standard error is a terminal, a progress bar
  per epoch shows the running loss and the speed (tqdm when installed, a plain one-line display
  otherwise); every epoch ends with one summary line: mean loss, train and test accuracy, seconds.
  The final test accuracy is printed as in DLfS.
* **Epochs.** An epoch is ``iter_per_epoch = max(ceil(train_size / mini_batch_size), 1)`` steps
  (DLfS: ``train_size / mini_batch_size``, a float), and accuracy is measured at the *end* of each
  epoch (DLfS measures after the first step of each epoch), so ``train_acc_list`` has ``epochs``
  entries, as in DLfS, and its last entry describes the trained network.
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
  is applied, for tinyconv networks). Ctrl-C (SIGINT) finishes the current step, then ``train()``
  returns normally with ``interrupted = True``: ``train_loss_list`` holds every completed step and
  the accuracy lists every completed epoch. A second Ctrl-C raises ``KeyboardInterrupt`` at once.
* **Checkpoints.** With ``checkpoint="path"`` the network, optimizer state, random states,
  counters and histories are saved atomically at the end of every epoch; ``resume=True`` continues
  from that file (or starts afresh when it does not exist yet). A resumed run ends with bitwise the
  same parameters as an uninterrupted one, and ``epochs`` may be raised to train further.
  Resuming restores the global ``np.random`` state as well, since DLfS-style sampling and dropout
  draw from it.
* ``callback(trainer, record)`` is called after each epoch with a dict (``epoch``, ``loss``,
  ``train_acc``, ``test_acc``, ``seconds``); its return value is ignored.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from .nets import Network
from .optimizer import Optimizer, get_optimizer
from .serialization import ParamsFileError, load_pickle_file, save_pickle

__all__ = ["Trainer", "NonFiniteLossError"]

_CHECKPOINT_FORMAT = "tinyconv.trainer.checkpoint"
_CHECKPOINT_VERSION = 1
_SAMPLING_MODES = ("replacement", "permutation")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite, so training stopped.

    Attributes: ``loss``, ``epoch`` (1-based, the epoch in progress) and ``step`` (1-based within
    that epoch).
    """

    def __init__(self, loss: float, epoch: int, step: int):
        self.loss, self.epoch, self.step = loss, epoch, step
        super().__init__(
            f"training loss became {loss} at epoch {epoch}, step {step}; training stopped. "
            "The learning rate may be too high, or the data may contain NaN or infinite values."
        )


# ----------------------------------------------------------------------------------------------
# Progress display


class _NoProgress:
    def update(self, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


class _TqdmProgress:
    def __init__(self, tqdm_class: Any, total: int, description: str, batch_size: int):
        self._bar = tqdm_class(total=total, desc=description, unit="step", leave=False,
                               file=sys.stderr, dynamic_ncols=True)
        self._loss_sum, self._count, self._batch_size = 0.0, 0, batch_size

    def update(self, loss: float) -> None:
        self._loss_sum += loss
        self._count += 1
        elapsed = self._bar.format_dict.get("elapsed") or 0.0
        rate = self._count * self._batch_size / elapsed if elapsed > 0 else 0.0
        self._bar.set_postfix_str(f"loss {self._loss_sum / self._count:.4f}, {rate:,.0f} samples/s", refresh=False)
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
            line = (f"{self._description}: {self._count}/{self._total} steps, "
                    f"loss {self._loss_sum / self._count:.4f}, {rate:.1f} steps/s, "
                    f"{rate * self._batch_size:,.0f} samples/s")
            self._width = max(self._width, len(line))
            sys.stderr.write("\r" + line.ljust(self._width))
            sys.stderr.flush()

    def close(self) -> None:
        if self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()


def _make_progress(enabled: bool, total: int, description: str, batch_size: int):
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

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("\nInterrupted: stopping after the current step (Ctrl-C again to abort at once)\n")
        sys.stderr.flush()

    def __enter__(self) -> "_InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except (ValueError, OSError):  # e.g. embedded interpreters without signal support
                self._installed = False
        return self

    def __exit__(self, *exc_info) -> None:
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


def _set_rng_state(rng: Any, saved: Any, what: str) -> None:
    if saved is None or rng is None:
        if (saved is None) != (rng is None):
            raise ParamsFileError(f"checkpoint {what} random state does not match this run "
                                  f"(saved: {'none' if saved is None else saved.get('kind')}, "
                                  f"now: {'none' if rng is None else type(rng).__name__})")
        return
    if saved.get("kind") != type(rng).__name__:
        raise ParamsFileError(f"checkpoint {what} random state is a {saved.get('kind')}, this run uses a {type(rng).__name__}")
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = saved["state"]
    else:
        rng.set_state(saved["state"])


# ----------------------------------------------------------------------------------------------
# Trainer


class Trainer:
    """Train ``network`` with mini-batches; see the module docstring for the differences from DLfS.

    Parameters (DLfS's first, then tinyconv's keyword-only extras):
        network: a tinyconv network, or any object with DLfS's ``params``, ``gradient(x, t)``,
            ``loss(x, t)`` and ``accuracy(x, t)``.
        x_train, t_train, x_test, t_test: data and labels (integer labels or one-hot rows).
        epochs: number of epochs. mini_batch_size: samples per step.
        optimizer: a name (``'SGD'``, ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``, ``'RMSprop'``,
            ``'Adam'``, any case) built with ``optimizer_param`` (default ``{'lr': 0.01}``), or an
            :class:`~tinyconv.optimizer.Optimizer` instance.
        evaluate_sample_num_per_epoch: if set, accuracies are measured on the first that many
            training and test samples only (faster).
        verbose: print the per-epoch summary and final accuracy (and show the progress bar when
            standard error is a terminal).
        seed: seed of a private random generator for the batch order (default: ``np.random``).
        sampling: ``"replacement"`` (DLfS) or ``"permutation"``; see the module docstring.
        callback: ``callback(trainer, record)`` after every epoch.
        checkpoint: path of a checkpoint file written atomically after every epoch.
        resume: continue from ``checkpoint`` if that file exists.
        progress: force the progress display on or off (default: verbose and a terminal).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test,
                 epochs: int = 20, mini_batch_size: int = 100,
                 optimizer: Union[str, Optimizer] = "SGD", optimizer_param: Optional[Mapping[str, Any]] = None,
                 evaluate_sample_num_per_epoch: Optional[int] = None, verbose: bool = True,
                 *, seed: Optional[int] = None, sampling: str = "replacement",
                 callback: Optional[Callable[["Trainer", Dict[str, Any]], Any]] = None,
                 checkpoint: Optional[Union[str, "os.PathLike[str]"]] = None, resume: bool = False,
                 progress: Optional[bool] = None):
        if sampling not in _SAMPLING_MODES:
            raise ValueError(f"sampling must be 'replacement' or 'permutation', got {sampling!r}")
        if int(mini_batch_size) < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        if len(x_train) != len(t_train) or len(x_test) != len(t_test):
            raise ValueError("x_train/t_train and x_test/t_test must hold the same number of samples")
        if len(x_train) == 0:
            raise ValueError("x_train is empty")
        if resume and checkpoint is None:
            raise ValueError("resume=True needs a checkpoint= path")

        self.network = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.sampling = sampling
        self.callback = callback
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.resume = resume
        self.progress = progress
        self.rng = None if seed is None else np.random.default_rng(seed)

        if isinstance(optimizer, Optimizer):
            self.optimizer = optimizer
        else:
            self.optimizer = get_optimizer(optimizer, **dict(optimizer_param if optimizer_param is not None else {"lr": 0.01}))

        self.train_size = len(x_train)
        self.iter_per_epoch = max(math.ceil(self.train_size / self.batch_size), 1)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list: List[float] = []
        self.train_acc_list: List[float] = []
        self.test_acc_list: List[float] = []
        self.epoch_time_list: List[float] = []
        self.final_test_acc: Optional[float] = None
        self.interrupted = False
        self._iter_at_last_eval: Optional[int] = None
        self._permutation: Optional[np.ndarray] = None

    @property
    def max_iter(self) -> int:
        """Total steps of a full run (DLfS's attribute)."""
        return self.epochs * self.iter_per_epoch

    # -- one step -----------------------------------------------------------------------------

    def _random(self):
        return np.random if self.rng is None else self.rng

    def _batch_indices(self, step: int) -> np.ndarray:
        if self.sampling == "permutation":
            return self._permutation[step * self.batch_size:(step + 1) * self.batch_size]
        if self.rng is None:
            return np.random.choice(self.train_size, self.batch_size)  # exactly DLfS's draw
        return self.rng.integers(0, self.train_size, size=self.batch_size)

    def train_step(self, step: int = 0) -> float:
        """One optimisation step on a mini-batch (``step`` is its index within the epoch, used by
        ``sampling="permutation"``). Returns the loss and appends it to ``train_loss_list``."""
        batch = self._batch_indices(step)
        x_batch, t_batch = self.x_train[batch], self.t_train[batch]
        # A diverging run overflows in NumPy code (weight decay, batch norm) before the loss turns
        # non-finite; NonFiniteLossError reports that more clearly than a stream of warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            grads = self.network.gradient(x_batch, t_batch)
            if isinstance(self.network, Network):
                loss = float(self.network.last_loss)
                self._check_loss(loss, step)  # before the update: the parameters stay usable
                self.optimizer.update(self.network.params, grads)
            else:
                self.optimizer.update(self.network.params, grads)
                loss = float(self.network.loss(x_batch, t_batch))
                self._check_loss(loss, step)
        self.train_loss_list.append(loss)
        self.current_iter += 1
        return loss

    def _check_loss(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLossError(loss, self.current_epoch + 1, step + 1)

    # -- epochs -------------------------------------------------------------------------------

    def _evaluate(self):
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if self.evaluate_sample_num_per_epoch is not None:
            n = self.evaluate_sample_num_per_epoch
            x_train, t_train, x_test, t_test = x_train[:n], t_train[:n], x_test[:n], t_test[:n]
        train_acc = float(self.network.accuracy(x_train, t_train))
        test_acc = float(self.network.accuracy(x_test, t_test))
        self._iter_at_last_eval = self.current_iter
        return train_acc, test_acc

    def _show_progress(self) -> bool:
        if self.progress is not None:
            return bool(self.progress)
        try:
            return bool(self.verbose) and sys.stderr.isatty()
        except (AttributeError, ValueError):  # replaced or closed stderr
            return False

    def _run_epoch(self, guard: _InterruptGuard) -> bool:
        """Train one epoch; False if it was cut short by Ctrl-C."""
        epoch = self.current_epoch + 1
        started = time.perf_counter()
        if self.sampling == "permutation":
            self._permutation = self._random().permutation(self.train_size)
        width = len(str(self.epochs))
        bar = _make_progress(self._show_progress(), self.iter_per_epoch,
                             f"epoch {epoch:>{width}}/{self.epochs}", self.batch_size)
        losses = []
        try:
            for step in range(self.iter_per_epoch):
                losses.append(self.train_step(step))
                bar.update(losses[-1])
                if guard.requested:
                    return False
        finally:
            bar.close()

        train_acc, test_acc = self._evaluate()
        seconds = time.perf_counter() - started
        self.current_epoch = epoch
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        self.epoch_time_list.append(seconds)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "train_acc": train_acc,
                  "test_acc": test_acc, "seconds": seconds}
        if self.verbose:
            print(f"epoch {epoch:>{width}}/{self.epochs}: loss {record['loss']:.4f}, "
                  f"train acc {train_acc:.4f}, test acc {test_acc:.4f}, {seconds:.1f} s", flush=True)
        if self.callback is not None:
            self.callback(self, record)
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)
        return True

    def train(self) -> None:
        """Train until ``epochs`` epochs are complete (resuming from ``checkpoint`` if asked),
        then measure the final test accuracy on the whole test set (``final_test_acc``)."""
        if self.resume and self.checkpoint is not None and os.path.exists(self.checkpoint):
            self.load_checkpoint(self.checkpoint)
            if self.verbose:
                print(f"resumed from {self.checkpoint} after epoch {self.current_epoch}/{self.epochs}", flush=True)
            self.resume = False  # a second train() call continues in memory
        self.interrupted = False
        with _InterruptGuard() as guard:
            while self.current_epoch < self.epochs:
                if not self._run_epoch(guard):
                    self.interrupted = True
                    break
        if self.interrupted:
            print(f"training interrupted after {self.current_iter} steps "
                  f"({self.current_epoch} complete epochs)", file=sys.stderr, flush=True)

        if (self.evaluate_sample_num_per_epoch is None and self.test_acc_list
                and self._iter_at_last_eval == self.current_iter):
            self.final_test_acc = self.test_acc_list[-1]  # measured on the full test set just now
        else:
            self.final_test_acc = float(self.network.accuracy(self.x_test, self.t_test))
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(self.final_test_acc), flush=True)

    # -- checkpoints --------------------------------------------------------------------------

    def _network_state(self) -> Dict[str, np.ndarray]:
        if isinstance(self.network, Network):
            return {key: np.array(value) for key, value in self.network.state_dict().items()}
        return {key: np.array(value) for key, value in self.network.params.items()}

    def _config(self) -> Dict[str, Any]:
        return {"train_size": self.train_size, "batch_size": self.batch_size, "sampling": self.sampling,
                "iter_per_epoch": self.iter_per_epoch, "optimizer": type(self.optimizer).__name__,
                "trainer_seeded": self.rng is not None}

    def save_checkpoint(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write everything needed to continue this run to ``path``, atomically (a pickle of
        plain containers and arrays, read back with the restricted unpickler)."""
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

    def load_checkpoint(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`. The data size, batch size,
        sampling mode and optimizer must match this trainer; ``epochs`` may differ. Everything is
        checked before anything changes."""
        name = os.fspath(path)
        state = load_pickle_file(name)
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise ParamsFileError(f"{name} is not a tinyconv training checkpoint")
        if state.get("version") != _CHECKPOINT_VERSION:
            raise ParamsFileError(f"{name}: unsupported checkpoint version {state.get('version')!r}")
        try:
            saved_config, network_state = state["config"], state["network"]
            optimizer_state, counters = state["optimizer"], state["counters"]
            history, rng_states = state["history"], state["rng"]
        except KeyError as exc:
            raise ParamsFileError(f"{name}: checkpoint lacks {exc.args[0]!r}") from None
        config = self._config()
        mismatched = {key: (saved_config.get(key), value) for key, value in config.items()
                      if saved_config.get(key) != value}
        if mismatched:
            details = ", ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in mismatched.items())
            raise ParamsFileError(f"{name} was written by a different training setup ({details})")

        # Validate the optimizer state on a scratch instance, then the network (which checks
        # before copying), and only then change anything.
        probe = type(self.optimizer).__new__(type(self.optimizer))
        probe.__dict__.update(self.optimizer.__dict__)
        try:
            probe.load_state_dict(optimizer_state)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ParamsFileError(f"{name}: optimizer state does not fit: {exc}") from exc
        network_rng = getattr(self.network, "rng", None)
        for what, rng in (("trainer", self.rng), ("network", network_rng)):
            saved = rng_states.get(what)
            if (saved is None) != (_rng_state(rng) is None):
                raise ParamsFileError(f"{name}: the {what}'s random source differs from the checkpointed run")
        if isinstance(self.network, Network):
            self.network.load_state_dict(network_state, source=name)
        else:
            self._load_plain_network_state(network_state, name)

        self.optimizer.load_state_dict(optimizer_state)
        np.random.set_state(rng_states["numpy_global"])
        _set_rng_state(self.rng, rng_states.get("trainer"), "trainer")
        _set_rng_state(network_rng, rng_states.get("network"), "network")
        self.current_epoch = int(counters["current_epoch"])
        self.current_iter = int(counters["current_iter"])
        self.train_loss_list = [float(v) for v in history["train_loss_list"]]
        self.train_acc_list = [float(v) for v in history["train_acc_list"]]
        self.test_acc_list = [float(v) for v in history["test_acc_list"]]
        self.epoch_time_list = [float(v) for v in history.get("epoch_time_list", [])]
        self._iter_at_last_eval = self.current_iter

    def _load_plain_network_state(self, state: Mapping[str, Any], name: str) -> None:
        params = self.network.params
        problems = [f"{key!r}: shape {np.shape(state.get(key))} in checkpoint, {np.shape(value)} in network"
                    for key, value in params.items() if key not in state or np.shape(state[key]) != np.shape(value)]
        if problems or set(state) != set(params):
            raise ParamsFileError(f"{name}: network parameters do not fit: " + "; ".join(problems or ["different keys"]))
        for key, value in params.items():
            np.copyto(value, state[key], casting="unsafe")
