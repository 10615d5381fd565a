"""Parameter update rules of *Deep Learning from Scratch* (DLfS), ``common/optimizer.py``.

Every optimizer has DLfS's constructor defaults and ``update(params, grads)``, which changes the
arrays in ``params`` **in place** -- layers hold references to those same arrays, so they see the
new values without being told. The formulas are DLfS's, evaluated in the same order, so in float64
the results are bitwise those of DLfS's code. Each update is one fused pass in C++ per parameter
array (``tinyconv._core.*_update``: the same operations in the same order and precision, so the
same bits), or whole-array NumPy operations for arrays the fused pass does not take (non-contiguous
views); never a Python loop per element. Work is done in the parameter's dtype; the state arrays
(``v``, ``h``, ``m``) take the dtype of their parameter.

Beyond DLfS, for fine-tuning and frozen parameters:

* ``update(params, grads)`` updates exactly the keys of ``grads``, which must all be keys of
  ``params`` (a network with frozen parameters returns gradients for the trainable ones only);
  the state arrays of a key are created the first time it gets a gradient. Adam counts steps per
  key, so a parameter unfrozen mid-run gets the bias correction of its own first steps. Every
  key, shape and state array is checked before the first array changes.
* **Parameter groups** (every optimizer): ``param_groups=[{"prefixes": ("fc",), "lr": 0.1}, ...]``
  or :meth:`Optimizer.set_lr` give the parameters whose names match a prefix their own learning
  rate; the others use ``lr``. A name matches a prefix ``p`` when it equals ``p``, starts with
  ``p + "."``, or -- for a ``p`` that ends with ``"."`` -- starts with ``p``: ``"layer4"`` matches
  ``layer4.0.conv1.weight`` but not ``layer40.weight``, ``"W1"`` matches ``W1`` but not ``W10``.
  A name takes the learning rate of the first group that matches it. Without groups the results
  are bitwise DLfS's. Hyperparameters stay plain attributes: ``opt.lr = 0.001`` between steps
  takes effect at the next step, as in DLfS.

``state_dict()``/``load_state_dict()`` capture and restore an optimizer's hyperparameters, groups
and state for checkpointing (see :class:`tinyconv.trainer.Trainer`); ``load_state_dict`` checks
every field (names, types, finite values, shapes and dtypes against the parameters) before it
changes anything. :meth:`Optimizer.find_unusable_gradient` finds a gradient entry that would make
parameters or state NaN or infinite (NaN, infinity, or for AdaGrad, RMSprop and Adam a square that
overflows) with one vectorised pass in C++ (``tinyconv._core.find_nonfinite``), so that a training
loop can refuse a step before anything changes.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import (
    Any,
    Union,
)

import numpy as np

from . import _core
from ._typing import Array

# "np": DLfS's common/optimizer.py imports numpy at top level and ch06/optimizer_compare_*.py
# rely on getting it from ``from common.optimizer import *`` (they never import numpy).
__all__ = [
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "ParamGroup",
    "RMSprop",
    "find_nonfinite_gradient",
    "get_optimizer",
    "np",
    "prefix_matches",
]

# Added to the denominator of the adaptive methods, as in DLfS.
_EPS = 1e-7

Params = MutableMapping[str, Array]
Grads = Mapping[str, Array]
Prefixes = Union[str, Sequence[str]]


# ----------------------------------------------------------------------------------------------
# Parameter groups


def prefix_matches(prefix: str, key: object) -> bool:
    """Whether parameter name ``key`` belongs to ``prefix``: ``key == prefix``, or ``key`` starts
    with ``prefix + "."``, or ``prefix`` ends with ``"."`` and ``key`` starts with it."""
    if not isinstance(key, str):
        return False
    return key == prefix or key.startswith(prefix if prefix.endswith(".") else prefix + ".")


def _checked_prefixes(value: Any, where: str) -> tuple[str, ...]:
    prefixes = (value,) if isinstance(value, str) else value
    if not isinstance(prefixes, (list, tuple)):
        raise TypeError(
            f"{where} must be a string or a list/tuple of strings, got {type(value).__name__}"
        )
    if not prefixes:
        raise ValueError(f"{where} is empty: a group needs at least one prefix")
    for prefix in prefixes:
        if not isinstance(prefix, str):
            raise TypeError(f"{where} must hold strings, got {prefix!r}")
        if not prefix:
            raise ValueError(f"{where} holds an empty prefix, which matches no parameter name")
    return tuple(prefixes)


def _checked_lr(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{where} must be finite and >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ParamGroup:
    """The parameters whose names match one of ``prefixes`` (see :func:`prefix_matches`) and the
    learning rate ``lr`` they use. Immutable: change a group's rate with
    :meth:`Optimizer.set_lr`, or assign a new list to ``Optimizer.param_groups``."""

    prefixes: tuple[str, ...]
    lr: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "prefixes", _checked_prefixes(self.prefixes, "ParamGroup prefixes")
        )
        object.__setattr__(self, "lr", _checked_lr(self.lr, "ParamGroup lr"))

    def matches(self, key: str) -> bool:
        """Whether parameter ``key`` belongs to this group."""
        return any(prefix_matches(prefix, key) for prefix in self.prefixes)


def _checked_group(value: Any, where: str) -> ParamGroup:
    if isinstance(value, ParamGroup):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{where} must be a dict {{'prefixes': ..., 'lr': ...}} or a ParamGroup, "
            f"got {type(value).__name__}"
        )
    if set(value) != {"prefixes", "lr"}:
        raise ValueError(f"{where} has keys {sorted(map(str, value))}, expected ['lr', 'prefixes']")
    prefixes = _checked_prefixes(value["prefixes"], f"{where}['prefixes']")
    return ParamGroup(prefixes, _checked_lr(value["lr"], f"{where}['lr']"))


def _checked_groups(value: Any, where: str) -> tuple[ParamGroup, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping, ParamGroup)) or not isinstance(value, Iterable):
        raise TypeError(f"{where} must be a list of groups, got {type(value).__name__}")
    return tuple(_checked_group(group, f"{where}[{i}]") for i, group in enumerate(value))


def _group_repr(group: ParamGroup) -> str:
    return repr({"prefixes": group.prefixes, "lr": group.lr})


# ----------------------------------------------------------------------------------------------
# Optimizers


class Optimizer(abc.ABC):
    """Base class: hyperparameters are the constructor arguments, listed in ``_hyper``; per-key
    state arrays live in dicts named in ``_slots`` (``None`` until the first update, as in DLfS;
    then one array per key that has had a gradient)."""

    _hyper: tuple[str, ...] = ()
    _slots: tuple[str, ...] = ()
    #: Slots that accumulate squares: never negative in a real run (a negative one would make
    #: the square root in the step NaN).
    _nonnegative_slots: tuple[str, ...] = ()
    #: Hyperparameters whose valid range is [0, 1) (1 - beta**t must not vanish).
    _unit_interval_hyper: tuple[str, ...] = ()
    #: Whether the optimizer counts steps (``iter``, and ``steps`` per key).
    _counts_steps: bool = False
    #: The learning rate of parameters that no group matches (every optimizer's first argument).
    lr: float
    # Set by the optimizers that count steps (Adam): update calls, and steps per key.
    iter: int
    steps: dict[str, int] | None
    _param_groups: tuple[ParamGroup, ...] = ()
    # (groups, {key: group index}) and (groups, parameter names) last checked: see _group_index
    # and _check_groups_match.
    _group_cache: tuple[tuple[ParamGroup, ...], dict[str, int]] | None = None
    _groups_checked: tuple[tuple[ParamGroup, ...], tuple[str, ...]] | None = None

    #: Whether the update squares gradients (AdaGrad, RMSprop, Adam): then a gradient whose
    #: square overflows poisons the state (Adam's second moment turns NaN on the next step).
    squares_gradients: bool = False

    @abc.abstractmethod
    def update(self, params: Params, grads: Grads) -> None:
        """One step along ``grads``: changes ``params[key]`` in place for every key of ``grads``
        (a subset of the keys of ``params``: frozen parameters have no gradient)."""

    # -- learning rates -----------------------------------------------------------------------

    @property
    def param_groups(self) -> tuple[ParamGroup, ...]:
        """The parameter groups, in matching order (a name takes the first group that matches).
        Assign a list of ``{"prefixes": ..., "lr": ...}`` dicts or :class:`ParamGroup` to
        replace them (checked first; ``[]`` removes them all)."""
        return self._param_groups

    @param_groups.setter
    def param_groups(self, groups: Iterable[Mapping[str, Any] | ParamGroup] | None) -> None:
        self._param_groups = _checked_groups(groups, "param_groups")

    def set_lr(self, prefixes: Prefixes, lr: float) -> None:
        """Give the parameters matching ``prefixes`` (one prefix or several; see
        :func:`prefix_matches`) the learning rate ``lr`` from the next step on. The group goes
        first, so it overrides earlier groups for the names it matches; a group with exactly
        these prefixes is replaced. ``opt.lr = ...`` still sets the rate of all other names."""
        group = ParamGroup(
            _checked_prefixes(prefixes, "set_lr prefixes"), _checked_lr(lr, "set_lr lr")
        )
        self._param_groups = (
            group,
            *tuple(g for g in self._param_groups if g.prefixes != group.prefixes),
        )

    def lr_for(self, key: str) -> float:
        """The learning rate ``update`` uses for parameter ``key``: its first matching group's,
        or ``lr``."""
        index = self._group_index(key)
        return self.lr if index < 0 else self._param_groups[index].lr

    def _group_index(self, key: str) -> int:
        """Index of the first group matching ``key``, or -1; remembered per key for as long as the
        groups stay the same (they are immutable: any change replaces the tuple)."""
        groups = self._param_groups
        cache = self._group_cache
        if cache is None or cache[0] is not groups:
            cache = self._group_cache = (groups, {})
        index = cache[1].get(key)
        if index is None:
            index = next((i for i, group in enumerate(groups) if group.matches(key)), -1)
            cache[1][key] = index
        return index

    def _check_groups_match(self, params: Mapping[str, Any]) -> None:
        """Every group prefix must name at least one parameter (a typo would otherwise leave the
        intended parameters at the base rate, silently). Checked once per set of names."""
        names = tuple(params)
        if self._groups_checked == (self._param_groups, names):
            return
        for group in self._param_groups:
            for prefix in group.prefixes:
                if not any(prefix_matches(prefix, key) for key in names):
                    raise ValueError(
                        f"{type(self).__name__} parameter group prefix {prefix!r} matches no "
                        f"parameter (the parameters are {list(names)})"
                    )
        self._groups_checked = (self._param_groups, names)

    def reset_state(self, prefixes: Prefixes | None = None) -> None:
        """Forget the state arrays (and Adam's step counts) of the parameters matching
        ``prefixes``, or everything when ``None`` (then the optimizer is as new, hyperparameters
        and groups aside). Use it after replacing a parameter, e.g. a new classifier head: its
        old momentum means nothing for the new weights (``update`` refuses state whose shape no
        longer fits)."""
        if prefixes is None:
            for slot in self._slots:
                setattr(self, slot, None)
            if self._counts_steps:
                self.iter, self.steps = 0, None
            return
        group = ParamGroup(_checked_prefixes(prefixes, "reset_state prefixes"), 0.0)
        for name in self._slots + (("steps",) if self._counts_steps else ()):
            table = getattr(self, name)
            if table is not None:
                setattr(
                    self,
                    name,
                    {key: value for key, value in table.items() if not group.matches(key)},
                )

    # -- one step -----------------------------------------------------------------------------

    def _plan(self, params: Params, grads: Grads) -> list[tuple[str, float]]:
        """Check ``grads`` against ``params`` and the state, and return ``(key, lr)`` for every key
        to update, with its state arrays created; raises before anything changes."""
        unknown = [key for key in grads if key not in params]
        if unknown:
            raise KeyError(
                f"gradients {unknown} have no parameter of that name "
                f"(the parameters are {list(params)})"
            )
        groups = self._param_groups
        if groups:
            self._check_groups_match(params)
        tables = [(slot, getattr(self, slot)) for slot in self._slots]
        base_lr = self.lr
        plan = []
        for key, grad in grads.items():
            param = params[key]
            shape = np.shape(param)  # as given: DLfS's scripts may hold other array-likes
            grad_shape = np.shape(grad)
            if grad_shape != shape:
                raise ValueError(
                    f"gradient {key!r} has shape {grad_shape}, the parameter has shape {shape}"
                )
            for slot, table in tables:
                state = None if table is None else table.get(key)
                if state is not None and (
                    state.shape != shape or state.dtype != np.asarray(param).dtype
                ):
                    raise ValueError(
                        f"{type(self).__name__} state {slot}[{key!r}] is {state.dtype} {state.shape}, "
                        f"the parameter is {np.asarray(param).dtype} {shape}: the parameter was "
                        f"replaced; call reset_state({key!r}) to start its state afresh"
                    )
            if groups:
                index = self._group_index(key)
                plan.append((key, base_lr if index < 0 else groups[index].lr))
            else:
                plan.append((key, base_lr))
        for slot, table in tables:
            if table is None:
                table = {}
                setattr(self, slot, table)
            for key, _ in plan:
                if key not in table:
                    table[key] = np.zeros_like(params[key])
        return plan

    def _state(self, slot: str) -> dict[str, Array]:
        """The state arrays of ``slot`` by key (made by :meth:`_plan` for every key it plans)."""
        table: dict[str, Array] = getattr(self, slot)
        return table

    def find_unusable_gradient(self, grads: Grads) -> tuple[str, tuple[int, ...], float] | None:
        """The first gradient entry that :meth:`update` cannot apply without making parameters
        or state NaN or infinite, as ``(key, index, value)``, or ``None``: an entry that is NaN
        or infinite, or, for optimizers that square gradients, whose square overflows. One
        vectorised read per gradient (see :func:`find_nonfinite_gradient`)."""
        return find_nonfinite_gradient(grads, squared=self.squares_gradients)

    # -- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of this optimizer: its class name, hyperparameters, parameter groups and
        state arrays (copies) -- plain containers and arrays only, so it pickles and loads safely."""
        state: dict[str, Any] = {
            "name": type(self).__name__,
            "hyperparameters": {name: float(getattr(self, name)) for name in self._hyper},
            "param_groups": [
                {"prefixes": list(group.prefixes), "lr": group.lr} for group in self._param_groups
            ],
        }
        for slot in self._slots:
            value = getattr(self, slot)
            state[slot] = (
                None if value is None else {key: np.array(arr) for key, arr in value.items()}
            )
        if self._counts_steps:
            state["iter"] = int(self.iter)
            state["steps"] = (
                None if self.steps is None else {key: int(n) for key, n in self.steps.items()}
            )
        return state

    def load_state_dict(
        self, state: Mapping[str, Any], params: Mapping[str, Array] | None = None
    ) -> None:
        """Restore what :meth:`state_dict` returned (hyperparameters and groups included, so a
        resumed run continues exactly as the saved one would have).

        Every field is checked before anything changes: exactly the keys ``state_dict`` writes
        (``param_groups`` and Adam's ``steps`` may be absent, as in files of earlier versions:
        no groups, and every key at ``iter`` steps); ``name`` this class; hyperparameters finite
        real numbers (Adam's betas in [0, 1)); each group a dict of non-empty string prefixes and a
        finite ``lr >= 0``; each state slot ``None`` or a dict of float arrays without NaN
        (squared-gradient accumulators also without negative entries), all slots holding the same
        keys; ``iter`` an int >= 0, zero exactly when the slots are still ``None``; ``steps`` one
        int in [1, iter] per key of the slots. With ``params`` (the parameters this optimizer
        updates), the slots may hold only their keys (frozen parameters have none), each array
        of its parameter's shape and dtype, and every group prefix must match a parameter.
        A violation raises ``TypeError`` (a wrong type) or ``ValueError`` (a wrong value) naming
        the field, and the optimizer is left unchanged.
        """
        self._apply_state(self._checked_state(state, params))

    def _checked_state(
        self, state: Any, params: Mapping[str, Array] | None = None
    ) -> dict[str, Any]:
        """Validate ``state`` (see :meth:`load_state_dict`) and return the attributes to set, with
        fresh copies of the arrays; changes nothing."""
        cls = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"{cls} state must be a dict, got {type(state).__name__}")
        name = state.get("name")
        if not isinstance(name, str) or name != cls:
            raise ValueError(f"optimizer state is for {name!r}, not {cls!r}")
        required = {"name", "hyperparameters", *self._slots} | (
            {"iter"} if self._counts_steps else set()
        )
        optional = {"param_groups"} | ({"steps"} if self._counts_steps else set())
        if not required <= set(state) <= required | optional:
            raise ValueError(
                f"{cls} state has keys {sorted(map(str, state))}, expected {sorted(required)} "
                f"and optionally {sorted(optional)}"
            )

        hyper = state["hyperparameters"]
        if not isinstance(hyper, Mapping):
            raise TypeError(
                f"{cls} state hyperparameters must be a dict, got {type(hyper).__name__}"
            )
        if set(hyper) != set(self._hyper):
            raise ValueError(
                f"{cls} state has hyperparameters {sorted(map(str, hyper))}, "
                f"expected {sorted(self._hyper)}"
            )
        attributes: dict[str, Any] = {}
        for key in self._hyper:
            value = hyper[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"{cls} state hyperparameters[{key!r}] must be a real number, got {value!r}"
                )
            if not math.isfinite(value):
                raise ValueError(
                    f"{cls} state hyperparameters[{key!r}] must be finite, got {value!r}"
                )
            if key in self._unit_interval_hyper and not 0.0 <= value < 1.0:
                raise ValueError(
                    f"{cls} state hyperparameters[{key!r}] must be in [0, 1), got {value!r}"
                )
            attributes[key] = float(value)

        groups = state.get("param_groups", [])
        if not isinstance(groups, (list, tuple)):
            raise TypeError(f"{cls} state param_groups must be a list, got {type(groups).__name__}")
        groups = _checked_groups(groups, f"{cls} state param_groups")
        if params is not None:
            for group in groups:
                for prefix in group.prefixes:
                    if not any(prefix_matches(prefix, key) for key in params):
                        raise ValueError(
                            f"{cls} state param_groups prefix {prefix!r} matches no parameter "
                            f"(the parameters are {list(params)})"
                        )
        attributes["_param_groups"] = groups

        present = []
        for slot in self._slots:
            value = state[slot]
            if value is None:
                attributes[slot] = None
                continue
            attributes[slot] = self._checked_slot(slot, value, params)
            present.append(slot)
        if present and len(present) != len(self._slots):
            raise ValueError(
                f"{cls} state slots {present} are set but {sorted(set(self._slots) - set(present))} "
                "are None: a state has all of them or none"
            )
        keys = [list(attributes[slot]) for slot in present]
        if any(set(k) != set(keys[0]) for k in keys[1:]):
            raise ValueError(f"{cls} state slots {present} hold different keys")

        if self._counts_steps:
            it = state["iter"]
            if isinstance(it, bool) or not isinstance(it, int):
                raise TypeError(f"{cls} state iter must be an int, got {it!r}")
            if not 0 <= it < 2**63:
                raise ValueError(f"{cls} state iter must be in [0, 2**63), got {it}")
            if (it == 0) != (not present):
                raise ValueError(
                    f"{cls} state iter is {it} but its slots are "
                    f"{'None' if not present else 'set'}: they are set exactly when iter > 0"
                )
            attributes["iter"] = it
            attributes["steps"] = self._checked_steps(state, it, keys[0] if present else None)
        return attributes

    def _checked_steps(
        self, state: Mapping[str, Any], it: int, slot_keys: list[str] | None
    ) -> dict[str, int] | None:
        cls = type(self).__name__
        if "steps" not in state:  # written before per-key counts: every key has taken every step
            return None if slot_keys is None else dict.fromkeys(slot_keys, it)
        steps = state["steps"]
        if steps is None or slot_keys is None:
            if (steps is None) != (slot_keys is None):
                raise ValueError(
                    f"{cls} state steps is {'None' if steps is None else 'set'} but the slots are "
                    f"{'None' if slot_keys is None else 'set'}: both or neither"
                )
            return None
        if not isinstance(steps, Mapping):
            raise TypeError(
                f"{cls} state steps must be None or a dict of ints, got {type(steps).__name__}"
            )
        if set(steps) != set(slot_keys):
            raise ValueError(
                f"{cls} state steps has keys {sorted(map(str, steps))}, the slots hold {sorted(slot_keys)}"
            )
        checked = {}
        for key in slot_keys:
            n = steps[key]
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"{cls} state steps[{key!r}] must be an int, got {n!r}")
            if not 1 <= n <= it:
                raise ValueError(f"{cls} state steps[{key!r}] must be in [1, iter={it}], got {n}")
            checked[key] = n
        return checked

    def _checked_slot(
        self, slot: str, value: Any, params: Mapping[str, Array] | None
    ) -> dict[str, Array]:
        cls = type(self).__name__
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{cls} state {slot} must be None or a dict of arrays, got {type(value).__name__}"
            )
        if params is not None:
            unknown = [key for key in value if key not in params]
            if unknown:
                raise ValueError(
                    f"{cls} state {slot} has keys {sorted(map(str, unknown))} that are not parameters "
                    f"(the parameters are {sorted(params)})"
                )
        checked: dict[str, Array] = {}
        for key, arr in value.items():
            field = f"{slot}[{key!r}]"
            if not isinstance(key, str):
                raise TypeError(f"{cls} state {slot} keys must be strings, got {key!r}")
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
                raise TypeError(
                    f"{cls} state {field} must be a float array, got "
                    f"{type(arr).__name__}{' of ' + str(arr.dtype) if isinstance(arr, np.ndarray) else ''}"
                )
            if params is not None:
                target = np.asarray(params[key])
                if arr.dtype != target.dtype or arr.shape != target.shape:
                    raise ValueError(
                        f"{cls} state {field} is {arr.dtype} {arr.shape}, "
                        f"the parameter is {target.dtype} {target.shape}"
                    )
            if np.isnan(arr).any():
                raise ValueError(f"{cls} state {field} contains NaN")
            if slot in self._nonnegative_slots and (arr < 0).any():
                raise ValueError(
                    f"{cls} state {field} has negative entries (it accumulates squares)"
                )
            checked[key] = np.array(
                arr, order="C"
            )  # a writeable copy: the state never aliases the file's arrays
        return checked

    def _apply_state(self, attributes: Mapping[str, Any]) -> None:
        """Set what :meth:`_checked_state` returned (cannot fail)."""
        for key, value in attributes.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        args = [f"{name}={getattr(self, name)!r}" for name in self._hyper]
        if self._param_groups:
            args.append(
                "param_groups=[" + ", ".join(_group_repr(g) for g in self._param_groups) + "]"
            )
        return f"{type(self).__name__}({', '.join(args)})"


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``."""

    _hyper = ("lr",)

    def __init__(self, lr: float = 0.01, *, param_groups: Iterable[Any] | None = None):
        self.lr = lr
        self.param_groups = param_groups

    def update(self, params: Params, grads: Grads) -> None:
        for key, lr in self._plan(params, grads):
            if _fusable(params[key], grads[key]):
                _core.sgd_update(params[key], grads[key], lr)
                continue
            params[key] -= lr * grads[key]


class Momentum(Optimizer):
    """Momentum SGD: ``v = momentum*v - lr*dW``; ``W += v``."""

    _hyper = ("lr", "momentum")
    _slots = ("v",)
    _nesterov = False

    def __init__(
        self, lr: float = 0.01, momentum: float = 0.9, *, param_groups: Iterable[Any] | None = None
    ):
        self.lr = lr
        self.momentum = momentum
        self.param_groups = param_groups
        self.v: dict[str, Array] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        plan = self._plan(params, grads)
        velocities = self._state("v")
        for key, lr in plan:
            v, grad = velocities[key], grads[key]
            if _fusable(params[key], v, grad):
                _core.momentum_update(params[key], v, grad, lr, self.momentum, self._nesterov)
                continue
            v *= self.momentum
            v -= lr * grad
            self._apply(params, key, v, grad, lr)

    def _apply(self, params: Params, key: str, v: Array, grad: Array, lr: float) -> None:
        params[key] += v


class Nesterov(Momentum):
    """Nesterov's accelerated gradient (http://arxiv.org/abs/1212.0901), DLfS's formulation:
    ``v = momentum*v - lr*dW``; ``W += momentum**2 * v - (1 + momentum) * lr * dW``."""

    _nesterov = True

    def _apply(self, params: Params, key: str, v: Array, grad: Array, lr: float) -> None:
        params[key] += self.momentum * self.momentum * v
        params[key] -= (1 + self.momentum) * lr * grad


class AdaGrad(Optimizer):
    """AdaGrad: ``h += dW*dW``; ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    _hyper = ("lr",)
    _slots = ("h",)
    _nonnegative_slots = ("h",)
    squares_gradients = True

    def __init__(self, lr: float = 0.01, *, param_groups: Iterable[Any] | None = None):
        self.lr = lr
        self.param_groups = param_groups
        self.h: dict[str, Array] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        plan = self._plan(params, grads)
        squares = self._state("h")
        for key, lr in plan:
            h, grad = squares[key], grads[key]
            if _fusable(params[key], h, grad):
                _core.adaptive_update(params[key], h, grad, lr, False, 1.0, _EPS)
                continue
            h += grad * grad
            params[key] -= _scaled_step(lr, grad, h)


class RMSprop(Optimizer):
    """RMSprop: ``h = decay_rate*h + (1 - decay_rate) * dW*dW``; ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    _hyper = ("lr", "decay_rate")
    _slots = ("h",)
    _nonnegative_slots = ("h",)
    squares_gradients = True

    def __init__(
        self,
        lr: float = 0.01,
        decay_rate: float = 0.99,
        *,
        param_groups: Iterable[Any] | None = None,
    ):
        self.lr = lr
        self.decay_rate = decay_rate
        self.param_groups = param_groups
        self.h: dict[str, Array] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        plan = self._plan(params, grads)
        squares = self._state("h")
        for key, lr in plan:
            h, grad = squares[key], grads[key]
            if _fusable(params[key], h, grad):
                _core.adaptive_update(params[key], h, grad, lr, True, self.decay_rate, _EPS)
                continue
            h *= self.decay_rate
            h += (1 - self.decay_rate) * grad * grad
            params[key] -= _scaled_step(lr, grad, h)


class Adam(Optimizer):
    """Adam (http://arxiv.org/abs/1412.6980v8), DLfS's formulation with the bias correction folded
    into the step size: ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``;
    ``m += (1 - beta1) * (dW - m)``; ``v += (1 - beta2) * (dW**2 - v)``;
    ``W -= lr_t * m / (sqrt(v) + 1e-7)``.

    ``t`` counts the steps of each key (``steps[key]``; as in PyTorch), so a parameter that gets
    gradients only from some step on (unfrozen mid-run) is bias-corrected for its own first steps;
    ``iter`` counts ``update`` calls, as in DLfS. When every key is updated at every call (no
    frozen parameters), ``t == iter`` and the results are bitwise DLfS's.

    ``lr_t`` is a Python float, so a float32 network steps in float32 (DLfS's NumPy scalar would
    promote the step to float64 under NumPy 2 and round it back when subtracting).
    """

    _hyper = ("lr", "beta1", "beta2")
    _slots = ("m", "v")
    _nonnegative_slots = ("v",)
    squares_gradients = True
    _unit_interval_hyper = ("beta1", "beta2")
    _counts_steps = True

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        *,
        param_groups: Iterable[Any] | None = None,
    ):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.param_groups = param_groups
        self.iter = 0
        self.steps: dict[str, int] | None = None
        self.m: dict[str, Array] | None = None
        self.v: dict[str, Array] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        plan = self._plan(params, grads)
        moments, second_moments = self._state("m"), self._state("v")
        if self.steps is None:
            self.steps = {}
        self.iter += 1
        step_sizes: dict[tuple[float, int], float] = {}  # (lr, t) -> lr_t, computed once per pair
        for key, lr in plan:
            t = self.steps.get(key, 0) + 1
            self.steps[key] = t
            lr_t = step_sizes.get((lr, t))
            if lr_t is None:
                lr_t = step_sizes[lr, t] = float(
                    lr * np.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
                )
            param, m, v, grad = params[key], moments[key], second_moments[key], grads[key]
            if _fusable(param, m, v, grad):
                # One pass in C++, same operations in the same order: the same bits.
                _core.adam_update(param, m, v, grad, lr_t, self.beta1, self.beta2, _EPS)
                continue
            m += (1 - self.beta1) * (grad - m)
            v += (1 - self.beta2) * (grad**2 - v)
            params[key] -= _scaled_step(lr_t, m, v)


def _fusable(param: object, *others: object) -> bool:
    """Whether the fused C++ update applies: writeable, C-contiguous float32/float64 arrays of one
    dtype and shape (anything else takes the NumPy path, with identical results)."""
    if not isinstance(param, np.ndarray) or param.dtype not in (np.float32, np.float64):
        return False
    if not (param.flags.c_contiguous and param.flags.writeable and param.dtype.isnative):
        return False
    return all(
        isinstance(o, np.ndarray)
        and o.dtype == param.dtype
        and o.shape == param.shape
        and o.flags.c_contiguous
        and o.dtype.isnative
        for o in others
    )


def find_nonfinite_gradient(
    grads: Grads, squared: bool = False
) -> tuple[str, tuple[int, ...], float] | None:
    """The first gradient entry ``g`` that is NaN or infinite -- or, with ``squared``, whose square
    ``g * g`` in the gradient's dtype is (``|g| >= 2**64`` in float32, ``2**512`` in float64) -- as
    ``(key, index, value)`` (keys in order, the C-order first entry within an array); ``None``
    when there is none.

    Contiguous float32/float64 arrays are checked by one vectorised pass in C++
    (``tinyconv._core.find_nonfinite``, a plain read, cheaper than any update); other arrays by
    NumPy. Call it on every gradient before updating any parameter, so a refused step changes
    nothing.
    """
    for key, given in grads.items():
        grad: object = given  # checked: DLfS's scripts may hold other array-likes
        if (
            isinstance(grad, np.ndarray)
            and grad.dtype in (np.float32, np.float64)
            and grad.dtype.isnative
            and grad.flags.c_contiguous
            and grad.flags.aligned
        ):
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


def _scaled_step(lr: float, numerator: Array, accumulator: Array) -> Array:
    """``lr * numerator / (sqrt(accumulator) + 1e-7)`` in DLfS's evaluation order, with one
    temporary array fewer than the plain expression."""
    denominator = np.sqrt(accumulator)
    denominator += _EPS
    step: Array = lr * numerator
    step /= denominator
    return step


_OPTIMIZERS = {
    cls.__name__.lower(): cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)
}


def get_optimizer(name: str, **hyperparameters: Any) -> Optimizer:
    """The optimizer called ``name`` (case-insensitive: ``"sgd"``, ``"momentum"``, ``"nesterov"``,
    ``"adagrad"``, ``"rmsprop"``, ``"adam"``), built with ``hyperparameters`` -- what DLfS's
    ``Trainer`` does with its ``optimizer`` and ``optimizer_param`` arguments."""
    try:
        cls = _OPTIMIZERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}"
        ) from None
    return cls(**hyperparameters)
