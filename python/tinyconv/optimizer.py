"""Parameter update rules of *Deep Learning from Scratch* (DLfS), ``common/optimizer.py``.

Every optimizer has DLfS's constructor defaults and ``update(params, grads)``, which changes the
arrays in ``params`` **in place** -- layers hold references to those same arrays, so they see the
new values without being told. The formulas are DLfS's, evaluated in the same order, so in float64
the results are bitwise those of DLfS's code. Each update is one fused pass in C++ per parameter
array (``tinyconv._core.*_update``: the same operations in the same order and precision, so the
same bits), or whole-array NumPy operations for arrays the fused pass does not take (non-contiguous
views); never a Python loop per element. Work is done in the parameter's dtype; the state arrays
(``v``, ``h``, ``m``) take the dtype of their parameter.

Beyond DLfS, ``state_dict()``/``load_state_dict()`` capture and restore an optimizer's
hyperparameters and state for checkpointing (see :class:`tinyconv.trainer.Trainer`);
``load_state_dict`` checks every field (names, types, finite values, shapes and dtypes against the
parameters) before it changes anything. :meth:`Optimizer.find_unusable_gradient` finds a
gradient entry that would make parameters or state NaN or infinite (NaN, infinity, or for
AdaGrad, RMSprop and Adam a square that overflows) with one vectorised pass in C++
(``tinyconv._core.find_nonfinite``), so that a training loop can refuse a step before anything
changes.
"""
from __future__ import annotations

import abc
import math
from typing import Any, Dict, Mapping, MutableMapping, Optional, Tuple

import numpy as np

from . import _core

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "get_optimizer",
           "find_nonfinite_gradient"]

# Added to the denominator of the adaptive methods, as in DLfS.
_EPS = 1e-7

Params = MutableMapping[str, np.ndarray]
Grads = Mapping[str, np.ndarray]


class Optimizer(abc.ABC):
    """Base class: hyperparameters are the constructor arguments, listed in ``_hyper``; per-key
    state arrays live in dicts named in ``_slots`` (``None`` until the first update, as in DLfS)."""

    _hyper: tuple = ()
    _slots: tuple = ()
    #: Slots that accumulate squares: never negative in a real run (a negative one would make
    #: the square root in the step NaN).
    _nonnegative_slots: tuple = ()
    #: Hyperparameters whose valid range is [0, 1) (1 - beta**t must not vanish).
    _unit_interval_hyper: tuple = ()

    #: Whether the update squares gradients (AdaGrad, RMSprop, Adam): then a gradient whose
    #: square overflows poisons the state (Adam's second moment turns NaN on the next step).
    squares_gradients: bool = False

    @abc.abstractmethod
    def update(self, params: Params, grads: Grads) -> None:
        """Change every array in ``params`` in place, one step along ``grads`` (same keys)."""

    def find_unusable_gradient(self, grads: Grads) -> Optional[Tuple[str, Tuple[int, ...], float]]:
        """The first gradient entry that :meth:`update` cannot apply without making parameters
        or state NaN or infinite, as ``(key, index, value)``, or ``None``: an entry that is NaN
        or infinite, or, for optimizers that square gradients, whose square overflows. One
        vectorised read per gradient (see :func:`find_nonfinite_gradient`)."""
        return find_nonfinite_gradient(grads, squared=self.squares_gradients)

    def _init_slots(self, params: Params) -> None:
        for slot in self._slots:
            if getattr(self, slot) is None:
                setattr(self, slot, {key: np.zeros_like(val) for key, val in params.items()})

    # -- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """A snapshot of this optimizer: its class name, hyperparameters and state arrays (copies)
        -- plain containers and arrays only, so it pickles and loads safely."""
        state: Dict[str, Any] = {
            "name": type(self).__name__,
            "hyperparameters": {name: float(getattr(self, name)) for name in self._hyper},
        }
        for slot in self._slots:
            value = getattr(self, slot)
            state[slot] = None if value is None else {key: np.array(arr) for key, arr in value.items()}
        if hasattr(self, "iter"):
            state["iter"] = int(self.iter)
        return state

    def load_state_dict(self, state: Mapping[str, Any], params: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """Restore what :meth:`state_dict` returned (hyperparameters included, so a resumed run
        continues exactly as the saved one would have).

        Every field is checked before anything changes: exactly the keys ``state_dict`` writes;
        ``name`` this class; hyperparameters finite real numbers (Adam's betas in [0, 1));
        each state slot ``None`` or a dict of float arrays without NaN (squared-gradient
        accumulators also without negative entries), all slots alike; ``iter`` an int >= 0, zero
        exactly when the slots are still ``None``. With ``params`` (the parameters this optimizer
        updates), each slot must hold exactly their keys, each array their shape and dtype.
        A violation raises ``TypeError`` (a wrong type) or ``ValueError`` (a wrong value) naming
        the field, and the optimizer is left unchanged.
        """
        self._apply_state(self._checked_state(state, params))

    def _checked_state(self, state: Any, params: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, Any]:
        """Validate ``state`` (see :meth:`load_state_dict`) and return the attributes to set, with
        fresh copies of the arrays; changes nothing."""
        cls = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"{cls} state must be a dict, got {type(state).__name__}")
        name = state.get("name")
        if not isinstance(name, str) or name != cls:
            raise ValueError(f"optimizer state is for {name!r}, not {cls!r}")
        expected_keys = {"name", "hyperparameters", *self._slots} | ({"iter"} if hasattr(self, "iter") else set())
        if set(state) != expected_keys:
            raise ValueError(f"{cls} state has keys {sorted(map(str, state))}, expected {sorted(expected_keys)}")

        hyper = state["hyperparameters"]
        if not isinstance(hyper, Mapping):
            raise TypeError(f"{cls} state hyperparameters must be a dict, got {type(hyper).__name__}")
        if set(hyper) != set(self._hyper):
            raise ValueError(f"{cls} state has hyperparameters {sorted(map(str, hyper))}, "
                             f"expected {sorted(self._hyper)}")
        attributes: Dict[str, Any] = {}
        for key in self._hyper:
            value = hyper[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{cls} state hyperparameters[{key!r}] must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{cls} state hyperparameters[{key!r}] must be finite, got {value!r}")
            if key in self._unit_interval_hyper and not 0.0 <= value < 1.0:
                raise ValueError(f"{cls} state hyperparameters[{key!r}] must be in [0, 1), got {value!r}")
            attributes[key] = float(value)

        present = []
        for slot in self._slots:
            value = state[slot]
            if value is None:
                attributes[slot] = None
                continue
            attributes[slot] = self._checked_slot(slot, value, params)
            present.append(slot)
        if present and len(present) != len(self._slots):
            raise ValueError(f"{cls} state slots {present} are set but {sorted(set(self._slots) - set(present))} "
                             "are None: a state has all of them or none")
        keys = [list(attributes[slot]) for slot in present]
        if any(set(k) != set(keys[0]) for k in keys[1:]):
            raise ValueError(f"{cls} state slots {present} hold different keys")

        if hasattr(self, "iter"):
            it = state["iter"]
            if isinstance(it, bool) or not isinstance(it, int):
                raise TypeError(f"{cls} state iter must be an int, got {it!r}")
            if not 0 <= it < 2 ** 63:
                raise ValueError(f"{cls} state iter must be in [0, 2**63), got {it}")
            if (it == 0) != (not present):
                raise ValueError(f"{cls} state iter is {it} but its slots are "
                                 f"{'None' if not present else 'set'}: they are set exactly when iter > 0")
            attributes["iter"] = it
        return attributes

    def _checked_slot(self, slot: str, value: Any, params: Optional[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
        cls = type(self).__name__
        if not isinstance(value, Mapping):
            raise TypeError(f"{cls} state {slot} must be None or a dict of arrays, got {type(value).__name__}")
        if params is not None and set(value) != set(params):
            raise ValueError(f"{cls} state {slot} has keys {sorted(map(str, value))}, "
                             f"the parameters are {sorted(params)}")
        checked: Dict[str, np.ndarray] = {}
        for key in (params if params is not None else value):
            arr = value[key]
            field = f"{slot}[{key!r}]"
            if not isinstance(key, str):
                raise TypeError(f"{cls} state {slot} keys must be strings, got {key!r}")
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
                raise TypeError(f"{cls} state {field} must be a float array, got "
                                f"{type(arr).__name__}{' of ' + str(arr.dtype) if isinstance(arr, np.ndarray) else ''}")
            if params is not None:
                target = np.asarray(params[key])
                if arr.dtype != target.dtype or arr.shape != target.shape:
                    raise ValueError(f"{cls} state {field} is {arr.dtype} {arr.shape}, "
                                     f"the parameter is {target.dtype} {target.shape}")
            if np.isnan(arr).any():
                raise ValueError(f"{cls} state {field} contains NaN")
            if slot in self._nonnegative_slots and (arr < 0).any():
                raise ValueError(f"{cls} state {field} has negative entries (it accumulates squares)")
            checked[key] = np.array(arr, order="C")  # a writeable copy: the state never aliases the file's arrays
        return checked

    def _apply_state(self, attributes: Mapping[str, Any]) -> None:
        """Set what :meth:`_checked_state` returned (cannot fail)."""
        for key, value in attributes.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._hyper)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``."""

    _hyper = ("lr",)

    def __init__(self, lr: float = 0.01):
        self.lr = lr

    def update(self, params: Params, grads: Grads) -> None:
        for key in params.keys():
            if _fusable(params[key], grads[key]):
                _core.sgd_update(params[key], grads[key], self.lr)
                continue
            params[key] -= self.lr * grads[key]


class Momentum(Optimizer):
    """Momentum SGD: ``v = momentum*v - lr*dW``; ``W += v``."""

    _hyper = ("lr", "momentum")
    _slots = ("v",)
    _nesterov = False

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        self.lr = lr
        self.momentum = momentum
        self.v: Optional[Dict[str, np.ndarray]] = None

    def update(self, params: Params, grads: Grads) -> None:
        self._init_slots(params)
        for key in params.keys():
            v, grad = self.v[key], grads[key]
            if _fusable(params[key], v, grad):
                _core.momentum_update(params[key], v, grad, self.lr, self.momentum, self._nesterov)
                continue
            v *= self.momentum
            v -= self.lr * grad
            self._apply(params, key, v, grad)

    def _apply(self, params: Params, key: str, v: np.ndarray, grad: np.ndarray) -> None:
        params[key] += v


class Nesterov(Momentum):
    """Nesterov's accelerated gradient (http://arxiv.org/abs/1212.0901), DLfS's formulation:
    ``v = momentum*v - lr*dW``; ``W += momentum**2 * v - (1 + momentum) * lr * dW``."""

    _nesterov = True

    def _apply(self, params: Params, key: str, v: np.ndarray, grad: np.ndarray) -> None:
        params[key] += self.momentum * self.momentum * v
        params[key] -= (1 + self.momentum) * self.lr * grad


class AdaGrad(Optimizer):
    """AdaGrad: ``h += dW*dW``; ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    _hyper = ("lr",)
    _slots = ("h",)
    _nonnegative_slots = ("h",)
    squares_gradients = True

    def __init__(self, lr: float = 0.01):
        self.lr = lr
        self.h: Optional[Dict[str, np.ndarray]] = None

    def update(self, params: Params, grads: Grads) -> None:
        self._init_slots(params)
        for key in params.keys():
            h, grad = self.h[key], grads[key]
            if _fusable(params[key], h, grad):
                _core.adaptive_update(params[key], h, grad, self.lr, False, 1.0, _EPS)
                continue
            h += grad * grad
            params[key] -= _scaled_step(self.lr, grad, h)


class RMSprop(Optimizer):
    """RMSprop: ``h = decay_rate*h + (1 - decay_rate) * dW*dW``; ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    _hyper = ("lr", "decay_rate")
    _slots = ("h",)
    _nonnegative_slots = ("h",)
    squares_gradients = True

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h: Optional[Dict[str, np.ndarray]] = None

    def update(self, params: Params, grads: Grads) -> None:
        self._init_slots(params)
        for key in params.keys():
            h, grad = self.h[key], grads[key]
            if _fusable(params[key], h, grad):
                _core.adaptive_update(params[key], h, grad, self.lr, True, self.decay_rate, _EPS)
                continue
            h *= self.decay_rate
            h += (1 - self.decay_rate) * grad * grad
            params[key] -= _scaled_step(self.lr, grad, h)


class Adam(Optimizer):
    """Adam (http://arxiv.org/abs/1412.6980v8), DLfS's formulation with the bias correction folded
    into the step size: ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``;
    ``m += (1 - beta1) * (dW - m)``; ``v += (1 - beta2) * (dW**2 - v)``;
    ``W -= lr_t * m / (sqrt(v) + 1e-7)``.

    ``lr_t`` is a Python float, so a float32 network steps in float32 (DLfS's NumPy scalar would
    promote the step to float64 under NumPy 2 and round it back when subtracting).
    """

    _hyper = ("lr", "beta1", "beta2")
    _slots = ("m", "v")
    _nonnegative_slots = ("v",)
    squares_gradients = True
    _unit_interval_hyper = ("beta1", "beta2")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m: Optional[Dict[str, np.ndarray]] = None
        self.v: Optional[Dict[str, np.ndarray]] = None

    def update(self, params: Params, grads: Grads) -> None:
        self._init_slots(params)
        self.iter += 1
        lr_t = float(self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter))
        for key in params.keys():
            param, m, v, grad = params[key], self.m[key], self.v[key], grads[key]
            if _fusable(param, m, v, grad):
                # One pass in C++, same operations in the same order: the same bits.
                _core.adam_update(param, m, v, grad, lr_t, self.beta1, self.beta2, _EPS)
                continue
            m += (1 - self.beta1) * (grad - m)
            v += (1 - self.beta2) * (grad ** 2 - v)
            params[key] -= _scaled_step(lr_t, m, v)


def _fusable(param: np.ndarray, *others: np.ndarray) -> bool:
    """Whether the fused C++ update applies: writeable, C-contiguous float32/float64 arrays of one
    dtype and shape (anything else takes the NumPy path, with identical results)."""
    if not isinstance(param, np.ndarray) or param.dtype not in (np.float32, np.float64):
        return False
    if not (param.flags.c_contiguous and param.flags.writeable and param.dtype.isnative):
        return False
    return all(isinstance(o, np.ndarray) and o.dtype == param.dtype and o.shape == param.shape
               and o.flags.c_contiguous and o.dtype.isnative for o in others)


def find_nonfinite_gradient(grads: Grads, squared: bool = False) -> Optional[Tuple[str, Tuple[int, ...], float]]:
    """The first gradient entry ``g`` that is NaN or infinite -- or, with ``squared``, whose square
    ``g * g`` in the gradient's dtype is (``|g| >= 2**64`` in float32, ``2**512`` in float64) -- as
    ``(key, index, value)`` (keys in order, the C-order first entry within an array); ``None``
    when there is none.

    Contiguous float32/float64 arrays are checked by one vectorised pass in C++
    (``tinyconv._core.find_nonfinite``, a plain read, cheaper than any update); other arrays by
    NumPy. Call it on every gradient before updating any parameter, so a refused step changes
    nothing.
    """
    for key, grad in grads.items():
        if (isinstance(grad, np.ndarray) and grad.dtype in (np.float32, np.float64) and grad.dtype.isnative
                and grad.flags.c_contiguous and grad.flags.aligned):
            flat_index = int(_core.find_nonfinite(grad, squared))
            if flat_index < 0:
                continue
        else:
            array = np.asarray(grad)
            with np.errstate(over="ignore", invalid="ignore"):
                usable = np.isfinite(array * array if squared else array)
            if usable.all():
                continue
            flat_index = int(np.argmin(usable.reshape(-1)))
        array = np.asarray(grad)
        index = tuple(int(i) for i in np.unravel_index(flat_index, array.shape))
        return key, index, float(array[index])
    return None


def _scaled_step(lr: float, numerator: np.ndarray, accumulator: np.ndarray) -> np.ndarray:
    """``lr * numerator / (sqrt(accumulator) + 1e-7)`` in DLfS's evaluation order, with one
    temporary array fewer than the plain expression."""
    denominator = np.sqrt(accumulator)
    denominator += _EPS
    step = lr * numerator
    step /= denominator
    return step


_OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)}


def get_optimizer(name: str, **hyperparameters: Any) -> Optimizer:
    """The optimizer called ``name`` (case-insensitive: ``"sgd"``, ``"momentum"``, ``"nesterov"``,
    ``"adagrad"``, ``"rmsprop"``, ``"adam"``), built with ``hyperparameters`` -- what DLfS's
    ``Trainer`` does with its ``optimizer`` and ``optimizer_param`` arguments."""
    try:
        cls = _OPTIMIZERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}") from None
    return cls(**hyperparameters)
