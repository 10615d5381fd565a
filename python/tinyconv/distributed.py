"""Data-parallel training over MPI (mpi4py): what :class:`~tinyconv.trainer.Trainer` does with
``comm=`` (see its docstring for the user's view, and docs/architecture.md for the cost model).

Every rank holds the whole network and the whole data set, draws the same global batch order from
the shared seed and computes the gradient of its contiguous shard of each global batch. The
gradients, weighted by shard size / global batch size (so that their sum is the full batch's mean
gradient, also for uneven shards), the weighted loss and a stop flag go into one flat buffer that a
single in-place ``Allreduce`` sums; every rank then applies the same optimizer update to the same
parameters, so they stay bitwise identical (checked every ``check_every`` steps by a fingerprint
``Allgather``). Nothing here imports mpi4py before a communicator is given: ``import tinyconv``
never initialises MPI.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._typing import Array

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

    from ._protocols import TrainableNetwork
    from .network import Network

__all__ = ["MPI_INSTALL_HINT", "DataParallel", "RankDivergenceError", "import_mpi", "mpi_summary"]

#: What to install when mpi4py (or an MPI library) is missing.
MPI_INSTALL_HINT = (
    'pip install "tinyconv[mpi]" (mpi4py and the MPICH wheel), or mpi4py over a system MPI'
)


class RankDivergenceError(RuntimeError):
    """The ranks of a data-parallel run no longer hold bitwise identical parameters (found by the
    fingerprint check every ``check_every`` steps). Raised on every rank at the same step.
    ``ranks`` lists the ranks whose parameters differ from rank 0's; ``step`` is the global step."""

    def __init__(self, ranks: Sequence[int], step: int, size: int):
        self.ranks, self.step = list(ranks), step
        super().__init__(
            f"data-parallel ranks diverged: after step {step} the parameters of rank(s) "
            f"{', '.join(map(str, self.ranks))} differ from rank 0's (of {size} ranks). Every rank must "
            "run the same code on the same data with the same optimizer settings; a callback that "
            "changes the learning rate from something rank-specific (e.g. the epoch's seconds) or "
            "a network built differently on one rank does this."
        )


def import_mpi() -> ModuleType:
    """``mpi4py.MPI`` (importing it initialises MPI), or ImportError naming what to install."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"data-parallel training needs mpi4py and an MPI library ({error}); "
            f"install them with: {MPI_INSTALL_HINT}"
        ) from None
    return MPI


def mpi_summary(MPI: ModuleType) -> dict[str, Any]:
    """The MPI library (first line of its version string), the MPI standard version, mpi4py's
    version and the size of ``COMM_WORLD``: what ``tinyconv info`` and history.json record."""
    import mpi4py

    library = MPI.Get_library_version().strip().splitlines()
    return {
        "library": " ".join(library[0].split()) if library else "unknown",
        "standard": "{}.{}".format(*MPI.Get_version()),
        "mpi4py": mpi4py.__version__,
        "world_size": MPI.COMM_WORLD.Get_size(),
    }


def _checked_comm(comm: object) -> tuple[ModuleType, Intracomm]:
    """``(MPI module, comm)`` for an mpi4py intra-communicator; TypeError otherwise."""
    module = type(comm).__module__ or ""
    if not module.startswith("mpi4py"):
        raise TypeError(
            f"comm must be an mpi4py communicator (e.g. mpi4py.MPI.COMM_WORLD), got {comm!r}"
        )
    MPI = import_mpi()
    intracomm: type[Intracomm] = MPI.Intracomm
    if not isinstance(comm, intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(
            f"comm must be an mpi4py intra-communicator such as MPI.COMM_WORLD, got {comm!r}"
        )
    return MPI, comm


def _words(array: Array) -> Array:
    """The bits of ``array`` as unsigned integers of its item size (for the fingerprint)."""
    contiguous = np.ascontiguousarray(array)
    return contiguous.reshape(-1).view(np.dtype(f"u{contiguous.dtype.itemsize}"))


class DataParallel:
    """The communication of one data-parallel :class:`~tinyconv.trainer.Trainer` (one per rank).

    Construction is collective (every rank of ``comm`` must construct it at the same point): it
    broadcasts rank 0's parameters and buffers, so the ranks start identical however each built
    its network, and gives each rank's dropout generator a stream of its own.
    """

    # Slots after the gradients in the reduced buffer.
    _LOSS, _STOP = -2, -1

    def __init__(self, comm: Intracomm, network: Network, check_every: int):
        self.MPI, self.comm = _checked_comm(comm)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.check_every = check_every
        self._buffer: Array | None = None
        self._layout: tuple[tuple[str, tuple[int, ...]], ...] = ()
        self._views: dict[str, Array] = {}
        for value in network.state_dict().values():
            self.comm.Bcast(_contiguous_target(value), root=0)
        self.decorrelate_dropout(network)

    # -- what each rank computes ------------------------------------------------------------

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (sizes differ by at most one; some are
        empty when ``n`` < ranks)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def shared_seed(self, seed: int | None) -> int:
        """``seed``, or rank 0's fresh one when None: the batch order must be the same everywhere."""
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if self.rank == 0 else None
        shared: int = self.comm.bcast(seed, root=0)
        return shared

    def exists_on_root(self, path: str) -> bool:
        """Whether rank 0 sees ``path``: the ranks must agree on resuming, also across hosts
        without a shared file system."""
        exists: bool = self.comm.bcast(os.path.exists(path) if self.rank == 0 else None, root=0)
        return exists

    def bytes_from_root(self, path: str) -> bytes:
        """The bytes of the file ``path`` as rank 0 reads it (only rank 0 needs it on disk), or the
        same OSError on every rank."""
        data: bytes | None = None
        problem: tuple[int | None, str] | None = None
        if self.rank == 0:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as error:
                problem = (error.errno, error.strerror or str(error))
        data, problem = self.comm.bcast((data, problem), root=0)
        if problem is not None:
            raise OSError(problem[0], f"{problem[1]} (read by rank 0)", path)
        assert data is not None  # rank 0 sends bytes or a problem
        return data

    def decorrelate_dropout(self, network: object) -> None:
        """Rank r's dropout masks come from the network's generator (``np.random`` when it has
        none, as in DLfS) jumped r times (2**127 draws for PCG64, 2**128 for MT19937): independent
        streams, and rank 0's is the one checkpoints record, so a resume with any number of ranks
        continues it. A bit generator that cannot jump (SFC64, or a RandomState over anything but
        MT19937) is left alone."""
        if self.rank == 0:
            return
        rng = getattr(network, "rng", None)
        if isinstance(rng, np.random.Generator):
            jumped = getattr(rng.bit_generator, "jumped", None)
            if jumped is not None:
                rng.bit_generator.state = jumped(self.rank).state
            return
        legacy = np.random if rng is None else rng
        try:
            name, key, position, _, _ = legacy.get_state()
        except ValueError:  # a RandomState over another bit generator has no legacy state
            return
        mersenne = np.random.MT19937()
        mersenne.state = {"bit_generator": name, "state": {"key": key, "pos": position}}
        state = mersenne.jumped(self.rank).state["state"]
        legacy.set_state((name, state["key"], state["pos"], 0, 0.0))

    # -- the one message per step -----------------------------------------------------------

    def _buffer_for(self, network: Network) -> tuple[Array, dict[str, Array]]:
        """The flat buffer and views into it, one per trainable parameter (rebuilt only when the
        set of trainable parameters changes, e.g. after ``freeze``)."""
        frozen = set(network.frozen_keys)
        layout = tuple(
            (key, value.shape) for key, value in network.params.items() if key not in frozen
        )
        if self._buffer is None or layout != self._layout or self._buffer.dtype != network.dtype:
            total = sum(int(np.prod(shape)) for _, shape in layout)
            self._buffer = np.empty(total + 2, dtype=network.dtype)
            self._views, offset = {}, 0
            for key, shape in layout:
                size = int(np.prod(shape))
                self._views[key] = self._buffer[offset : offset + size].reshape(shape)
                offset += size
            self._layout = layout
        return self._buffer, self._views

    def averaged_gradient(
        self, network: Network, x: Array, t: Array, global_batch: int, stop: bool
    ) -> tuple[dict[str, Array], float, bool]:
        """The full global batch's gradient and loss, from this rank's shard ``x, t`` and the
        others', in one in-place ``Allreduce``; and whether any rank asked to stop (Ctrl-C).
        Identical on every rank, so every rank takes the same decisions after it (a NaN anywhere
        makes the loss NaN everywhere). The gradients returned are views into the buffer, valid
        until the next call."""
        buffer, views = self._buffer_for(network)
        weight = len(x) / global_batch
        if len(x):
            grads = network.gradient(x, t)
            if list(grads) != list(views):
                raise RuntimeError(
                    f"network.gradient returned the keys {list(grads)}, expected the trainable "
                    f"parameters {list(views)}"
                )
            for key, view in views.items():
                np.multiply(grads[key], weight, out=view)
            buffer[self._LOSS] = float(network.last_loss) * weight  # type: ignore[arg-type]  # set by gradient()
        else:  # an empty shard (global batch smaller than the number of ranks) adds nothing
            buffer[: self._LOSS] = 0
            buffer[self._LOSS] = 0
        buffer[self._STOP] = 1 if stop else 0
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return views, float(buffer[self._LOSS]), bool(buffer[self._STOP] > 0)

    # -- consistency, evaluation, buffers ---------------------------------------------------

    def check_identical(self, network: TrainableNetwork, step: int) -> None:
        """Raise :class:`RankDivergenceError` on every rank if any rank's parameters differ from
        rank 0's: each rank sends a 16-byte fingerprint (wrapping sum and XOR of the parameters'
        bits; any single changed word changes both)."""
        # Per array, then over arrays: array reductions wrap around silently (scalars would warn).
        parts = np.zeros((len(network.params), 2), dtype=np.uint64)
        for i, value in enumerate(network.params.values()):
            words = _words(value)
            parts[i] = (
                words.sum(dtype=np.uint64),
                np.bitwise_xor.reduce(words, dtype=np.uint64, initial=0),
            )
        fingerprint = np.array(
            [parts[:, 0].sum(dtype=np.uint64), np.bitwise_xor.reduce(parts[:, 1], initial=0)],
            dtype=np.uint64,
        )
        fingerprints = np.empty((self.size, 2), dtype=np.uint64)
        self.comm.Allgather(fingerprint, fingerprints)
        differing = [
            rank
            for rank in range(1, self.size)
            if not np.array_equal(fingerprints[rank], fingerprints[0])
        ]
        if differing:
            raise RankDivergenceError(differing, step, self.size)

    def correct_counts(
        self, network: TrainableNetwork, sets: Sequence[tuple[Array, Array]]
    ) -> list[float]:
        """Accuracies of ``network`` on each ``(x, t)`` of ``sets``, each rank predicting its
        shard and one ``Allreduce`` summing the counts of correct predictions: the same numbers
        as one process's ``network.accuracy`` (the network is identical everywhere)."""
        counts: npt.NDArray[np.float64] = np.zeros(len(sets), dtype=np.float64)
        for i, (x, t) in enumerate(sets):
            part = self.shard(len(x))
            if part.stop > part.start:
                counts[i] = round(
                    float(network.accuracy(x[part], t[part])) * (part.stop - part.start)
                )
        self.comm.Allreduce(self.MPI.IN_PLACE, counts, op=self.MPI.SUM)
        return [float(count / len(x)) for count, (x, _) in zip(counts, sets)]

    def average_buffers(self, network: Network) -> None:
        """Average the floating buffers (batch norm's running statistics, which each rank
        gathers from its own shards) over the ranks, in one ``Allreduce``, so that every rank
        evaluates and rank 0 checkpoints the same statistics."""
        params = set(network.params)
        buffers = [
            value
            for key, value in network.state_dict().items()
            if key not in params and value.dtype.kind == "f"
        ]
        if not buffers:
            return
        flat = np.concatenate([value.reshape(-1).astype(np.float64) for value in buffers])
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        flat /= self.size
        offset = 0
        for value in buffers:
            value[...] = flat[offset : offset + value.size].reshape(value.shape)
            offset += value.size

    def threads_per_rank(self, num_procs: int) -> int:
        """The host's processors divided among the ranks on this host (MPI's shared-memory split
        counts them); collective."""
        host = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            ranks_here: int = host.Get_size()
        finally:
            host.Free()
        return max(1, num_procs // ranks_here)

    def abort(self, error: BaseException, where: str) -> None:
        """Report ``error`` with this rank's name and end every rank (``MPI_Abort``): the others
        are waiting in a collective that this rank will never enter, so raising would hang.
        Returns (the caller raises) when this is the only rank."""
        if self.size == 1:
            return
        sys.stderr.write(
            f"tinyconv: rank {self.rank} of {self.size} on {socket.gethostname()} failed {where}: "
            f"{type(error).__name__}: {error}\n"
        )
        sys.stderr.write(
            "".join(traceback.format_exception(type(error), error, error.__traceback__))
        )
        sys.stderr.write(f"tinyconv: aborting all {self.size} ranks\n")
        sys.stderr.flush()
        self.comm.Abort(1)


def _contiguous_target(value: object) -> Array:
    if not (isinstance(value, np.ndarray) and value.flags.c_contiguous and value.flags.writeable):
        raise TypeError(
            f"cannot broadcast a network array that is not a writable C-contiguous ndarray "
            f"({type(value).__name__})"
        )
    return value
