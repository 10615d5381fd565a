"""What a network is made of, layer by layer: output shapes, parameters and multiply-adds
(:meth:`tinyconv.network.Network.summary`, ``tinyconv summary``).

Each layer answers for itself (:meth:`~tinyconv.layers.Layer.output_shape`,
:meth:`~tinyconv.layers.Layer.multiply_adds`, :meth:`~tinyconv.layers.Layer.summary_rows`);
containers walk their children the way data flows through them (a residual block gives its input
to both the body and the shortcut), so this module only collects and prints rows.

**Multiply-adds** are those of the convolutions and fully connected layers: ``N * FN * OH * OW *
C * FH * FW`` for a convolution, ``N * D * M`` for an affine layer. Batch norm, activations,
pooling, dropout and residual sums are not counted (they cost one or two operations per value,
and at inference batch norm is folded into the convolution before it): this is how the usual
figures are counted, e.g. ResNet-50's 4.09 G multiply-adds for one 224x224 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["NetworkSummary", "SummaryRow", "format_count"]


class SummaryRow(NamedTuple):
    """One layer (or, with ``leaf=False``, one container with the totals of what it holds)."""

    name: str  #: dotted path (``layer1.0.conv1``), as the parameter names
    kind: str  #: the layer's class name
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    parameters: int  #: trainable and frozen parameters (buffers not counted)
    trainable: int  #: parameters that are not frozen
    multiply_adds: int
    leaf: bool
    layer: Any  #: the layer object itself

    @property
    def depth(self) -> int:
        """How deep the row lies: ``conv1`` 1, ``layer1.0`` 2, ``layer1.0.conv1`` 3."""
        return self.name.count(".") + 1


def container_row(
    name: str,
    layer: Any,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    children: Sequence[SummaryRow],
) -> SummaryRow:
    """The row of a container ``layer`` named ``name``: the totals of the leaves in ``children``."""
    leaves = [row for row in children if row.leaf]
    return SummaryRow(
        name,
        type(layer).__name__,
        tuple(input_shape),
        tuple(output_shape),
        sum(row.parameters for row in leaves),
        sum(row.trainable for row in leaves),
        sum(row.multiply_adds for row in leaves),
        False,
        layer,
    )


def format_count(count: int) -> str:
    """``25557032`` -> ``'25.56 M'``; small counts as they are."""
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return str(count)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class NetworkSummary:
    """The rows of a network's summary and their totals; ``str()`` (and ``repr()``, so a
    notebook or REPL shows it) is the table. ``rows`` holds every layer and container, in the
    order data reaches them; ``table(depth)`` prints down to ``depth`` (``None``: every layer;
    ``2``: ResNet blocks such as ``layer1.0`` as one row each)."""

    def __init__(
        self,
        title: str,
        input_shape: tuple[int, ...],
        rows: list[SummaryRow],
        depth: int | None = None,
    ):
        self.title = title
        self.input_shape = tuple(input_shape)
        self.rows = rows
        self.depth = depth
        leaves = [row for row in rows if row.leaf]
        self.output_shape = leaves[-1].output_shape if leaves else self.input_shape
        self.total_parameters = sum(row.parameters for row in leaves)
        self.trainable_parameters = sum(row.trainable for row in leaves)
        self.total_multiply_adds = sum(row.multiply_adds for row in leaves)

    def shown_rows(self, depth: int | None = None) -> list[SummaryRow]:
        """The rows a table of ``depth`` shows: every layer no deeper than ``depth`` that is a
        leaf, and the containers exactly ``depth`` deep (their totals stand for their contents)."""
        if depth is None:
            return [row for row in self.rows if row.leaf]
        return [row for row in self.rows if row.depth == depth or (row.leaf and row.depth < depth)]

    def table(self, depth: int | None = None) -> str:
        header = ("layer", "type", "output shape", "parameters", "multiply-adds")
        body = [
            (
                row.name,
                row.kind,
                _shape_text(row.output_shape),
                f"{row.parameters:,}",
                f"{row.multiply_adds:,}",
            )
            for row in self.shown_rows(depth)
        ]
        total = (
            "total",
            "",
            _shape_text(self.output_shape),
            f"{self.total_parameters:,}",
            f"{self.total_multiply_adds:,}",
        )
        widths = [max(len(line[i]) for line in [header, *body, total]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                cell.ljust(width) if i < 3 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths))
            ).rstrip()

        rule = "-" * len(line(header))
        lines = [f"{self.title}, input {_shape_text(self.input_shape)}", rule, line(header), rule]
        lines += [line(cells) for cells in body] + [rule, line(total), rule]
        frozen = self.total_parameters - self.trainable_parameters
        lines.append(
            f"parameters: {self.total_parameters:,} ({format_count(self.total_parameters)})"
            + (f", of which {frozen:,} frozen" if frozen else "")
        )
        lines.append(
            f"multiply-adds (convolutions and fully connected layers): {self.total_multiply_adds:,} "
            f"({format_count(self.total_multiply_adds)})"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table(self.depth)

    __repr__ = __str__
