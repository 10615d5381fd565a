"""Interleaved timing: every contender of a workload is timed in the same rounds.

A shared machine drifts (other jobs start and stop, clocks change, caches fill), so timing
contender A for a minute and then contender B for a minute compares two different machines.
Here each *round* runs every contender once (one *sample* each), and the rounds are repeated;
the start of each round rotates so that no contender always runs right after the same one. The
figures kept per contender are the per-call times of all samples, summarised as median, min and
max. Only ratios taken within one run mean anything.

A sample times ``calls`` back-to-back calls (chosen once, during warm-up, so that a sample lasts
at least ``min_sample_s``) and divides by ``calls``: this keeps the timer's resolution and the
loop's overhead out of the figures for fast kernels.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

Contender = Callable[[], object]

# No sample loops more often than this, however fast the call (keeps calibration mistakes cheap).
_MAX_CALLS_PER_SAMPLE = 10_000


@dataclass
class Timing:
    """Per-call wall times (seconds) of one contender, one entry per round."""

    calls_per_sample: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)


def round_robin_order(names: Sequence[str], round_index: int) -> list[str]:
    """The order in which round ``round_index`` runs ``names``: all of them, once each, starting
    one place further along every round."""
    if not names:
        return []
    start = round_index % len(names)
    return list(names[start:]) + list(names[:start])


def _time_calls(fn: Contender, calls: int) -> float:
    """Seconds per call of ``calls`` back-to-back calls, with the garbage collector paused (as
    ``timeit`` does) so that a collection triggered by someone else's garbage is not billed here."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / calls


def calls_for(seconds_per_call: float, min_sample_s: float) -> int:
    """How many calls make a sample last at least ``min_sample_s``."""
    if seconds_per_call <= 0:
        return _MAX_CALLS_PER_SAMPLE
    return max(1, min(_MAX_CALLS_PER_SAMPLE, math.ceil(min_sample_s / seconds_per_call)))


def measure_interleaved(
    contenders: dict[str, Contender],
    repeats: int,
    min_sample_s: float,
    warmup_calls: int = 1,
    settle_s: float = 0.0,
) -> dict[str, Timing]:
    """Time every contender ``repeats`` times, round-robin, after a warm-up round.

    The warm-up runs each contender ``warmup_calls`` times (first-call costs: page faults, lazy
    initialisation, caches, OpenMP thread start-up) and then times one more call to choose how
    many calls a sample needs.

    ``settle_s``: idle time before every sample. The contenders bring their own thread pools
    (OpenMP in tinyconv and PyTorch, OpenBLAS's in NumPy), whose workers keep spinning on the
    cores for a while after a call -- OpenBLAS's for about 0.1 s. Without a pause, each sample
    would start with the previous contender's spinners holding the cores it wants.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(contenders)
    timings: dict[str, Timing] = {}
    for name in names:
        for _ in range(warmup_calls):
            contenders[name]()
        timings[name] = Timing(
            calls_per_sample=calls_for(_time_calls(contenders[name], 1), min_sample_s)
        )
    for round_index in range(repeats):
        gc.collect()
        for name in round_robin_order(names, round_index):
            timing = timings[name]
            if settle_s > 0:
                time.sleep(settle_s)
            timing.seconds.append(_time_calls(contenders[name], timing.calls_per_sample))
    return timings
