"""Structural types for objects the package takes from users (private: for annotations only).

``TrainableNetwork`` is the part of DLfS's network interface that
:class:`~tinyconv.trainer.Trainer` uses, so that a tinyconv network and a network class copied
from the book (``params`` dict, ``gradient``, ``loss``, ``accuracy``) both type-check.
``TrainingHistory`` is what :func:`~tinyconv.visualize.plot_history` reads from a trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Protocol, SupportsFloat

from ._typing import Array

__all__ = ["TrainableNetwork", "TrainingHistory"]


class TrainableNetwork(Protocol):
    """A network with DLfS's training interface.

    ``params`` holds the arrays the optimizer updates in place; ``gradient(x, t)`` returns the
    gradients of the loss with the same keys (frozen parameters may be left out); ``loss`` and
    ``accuracy`` return anything ``float()`` accepts (DLfS's return NumPy scalars).
    """

    @property
    def params(self) -> MutableMapping[str, Array]: ...

    def gradient(self, x: Array, t: Array) -> Mapping[str, Array]: ...

    def loss(self, x: Array, t: Array) -> SupportsFloat: ...

    def accuracy(self, x: Array, t: Array) -> SupportsFloat: ...


class TrainingHistory(Protocol):
    """The learning curves of a training run, as :class:`~tinyconv.trainer.Trainer` keeps them:
    one accuracy per epoch, one loss per step."""

    @property
    def train_acc_list(self) -> Sequence[float]: ...

    @property
    def test_acc_list(self) -> Sequence[float]: ...

    @property
    def train_loss_list(self) -> Sequence[float]: ...
