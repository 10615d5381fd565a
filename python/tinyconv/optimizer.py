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
hyperparameters and state for checkpointing (see :class:`tinyconv.trainer.Trainer`).
"""
from __future__ import annotations

import abc
from typing import Any, Dict, Mapping, MutableMapping, Optional

import numpy as np

from . import _core

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "get_optimizer"]

# Added to the denominator of the adaptive methods, as in DLfS.
_EPS = 1e-7

Params = MutableMapping[str, np.ndarray]
Grads = Mapping[str, np.ndarray]


class Optimizer(abc.ABC):
    """Base class: hyperparameters are the constructor arguments, listed in ``_hyper``; per-key
    state arrays live in dicts named in ``_slots`` (``None`` until the first update, as in DLfS)."""

    _hyper: tuple = ()
    _slots: tuple = ()

    @abc.abstractmethod
    def update(self, params: Params, grads: Grads) -> None:
        """Change every array in ``params`` in place, one step along ``grads`` (same keys)."""

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

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (hyperparameters included, so a resumed run
        continues exactly as the saved one would have). Everything is checked before anything
        changes."""
        name = state.get("name")
        if name != type(self).__name__:
            raise ValueError(f"optimizer state is for {name!r}, not {type(self).__name__!r}")
        hyper = state.get("hyperparameters", {})
        if set(hyper) != set(self._hyper):
            raise ValueError(f"{name} state has hyperparameters {sorted(hyper)}, expected {sorted(self._hyper)}")
        slots = {}
        for slot in self._slots:
            value = state.get(slot)
            if value is not None:
                if not isinstance(value, Mapping) or not all(isinstance(v, np.ndarray) for v in value.values()):
                    raise ValueError(f"{name} state {slot!r} must be a dict of arrays")
                value = {key: np.array(arr) for key, arr in value.items()}
            slots[slot] = value
        for key, value in hyper.items():
            setattr(self, key, float(value))
        for slot, value in slots.items():
            setattr(self, slot, value)
        if hasattr(self, "iter"):
            self.iter = int(state.get("iter", 0))

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
