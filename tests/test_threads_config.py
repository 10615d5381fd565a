"""Thread-count control, the build/runtime report, and calls from several Python threads at once."""

from __future__ import annotations

import importlib.metadata
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from checks import assert_bitwise_equal

import tinyconv
from tinyconv import functional as F


@pytest.fixture(autouse=True)
def restore_num_threads():
    before = tinyconv.get_num_threads()
    yield
    tinyconv.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# set_num_threads / get_num_threads


def test_default_thread_count_is_positive():
    n = tinyconv.get_num_threads()
    assert isinstance(n, int)
    assert n >= 1


@pytest.mark.parametrize("n", [1, 2, 3, 7, np.int64(2)])
def test_set_get_round_trip(n):
    tinyconv.set_num_threads(n)
    assert tinyconv.get_num_threads() == int(n)
    assert tinyconv.config()["num_threads"] == int(n)


@pytest.mark.parametrize("bad", [0, -1, -(2**31)])
def test_set_num_threads_rejects_non_positive(bad):
    tinyconv.set_num_threads(2)
    with pytest.raises(ValueError, match=r"^n must"):
        tinyconv.set_num_threads(bad)
    assert tinyconv.get_num_threads() == 2  # unchanged


@pytest.mark.parametrize("bad", [1.5, 2.0, True, False, "2", None, [2]])
def test_set_num_threads_rejects_non_int(bad):
    tinyconv.set_num_threads(2)
    with pytest.raises(TypeError, match=r"^n must be an int"):
        tinyconv.set_num_threads(bad)
    assert tinyconv.get_num_threads() == 2


@pytest.mark.parametrize("absurd", [2**31, 2**40, 2**64])
def test_set_num_threads_rejects_absurd_counts(absurd):
    # A valid int but a wrong value (larger than the C int the core stores): ValueError naming n,
    # never a wrap-around to something small or negative.
    tinyconv.set_num_threads(2)
    with pytest.raises(ValueError, match=r"^n must"):
        tinyconv.set_num_threads(absurd)
    assert tinyconv.get_num_threads() == 2


# ----------------------------------------------------------------------------------------------
# config() / show_config()


def test_config_keys_and_types():
    info = tinyconv.config()
    for key in ("version", "compiler", "openmp", "num_threads", "isa", "available_isas"):
        assert key in info, f"config() lacks {key!r}"
    assert info["version"] == tinyconv.__version__ == importlib.metadata.version("tinyconv")
    assert isinstance(info["compiler"], str)
    assert info["compiler"]
    assert info["openmp"] == "built without OpenMP" or re.search(r"\d+\.\d+", info["openmp"]), info[
        "openmp"
    ]
    # A runtime library exactly when the build has OpenMP (wheels must never lose it silently).
    assert bool(info["openmp_runtime"]) == (info["openmp"] != "built without OpenMP"), info
    if info["compiler"].startswith("GCC") and info["openmp_runtime"]:
        assert info["openmp_runtime"].split(",")[0] == "gomp", info
    assert info["num_threads"] == tinyconv.get_num_threads()
    available = info["available_isas"].split(",")
    assert info["isa"] in available
    assert "generic" in available  # the portable kernel always runs


def test_config_returns_a_fresh_dict():
    info = tinyconv.config()
    info["version"] = "tampered"
    assert tinyconv.config()["version"] == tinyconv.__version__


def test_show_config_prints_the_facts(capsys):
    tinyconv.set_num_threads(3)
    tinyconv.show_config()
    out = capsys.readouterr().out
    info = tinyconv.config()
    assert info["version"] in out
    assert info["compiler"] in out
    assert "OpenMP" in out
    assert info["openmp"] in out
    assert (
        f"runtime {info['openmp_runtime']}" if info["openmp_runtime"] else "single-threaded"
    ) in out
    assert info["isa"] in out
    assert "SIMD" in out
    assert "3" in out  # the thread count just set


# ----------------------------------------------------------------------------------------------
# Several Python threads calling into the core at once (the GIL is released inside kernels)


def conv_inputs(seed: int):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((4, 3, 12, 12)),
        rng.standard_normal((5, 3, 3, 3)),
        rng.standard_normal(5),
    )


def test_concurrent_calls_match_sequential_calls():
    inputs = [conv_inputs(seed) for seed in range(16)]
    sequential = [F.conv2d_forward(x, W, b, 1, 1) for x, W, b in inputs]
    sequential_grads = [
        F.conv2d_backward(np.ones_like(y), x, W, 1, 1) for y, (x, W, _) in zip(sequential, inputs)
    ]

    def work(i):
        x, W, b = inputs[i]
        y = F.conv2d_forward(x, W, b, 1, 1)
        return y, F.conv2d_backward(np.ones_like(y), x, W, 1, 1)

    for _ in range(3):  # a few rounds: interleavings differ
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(work, range(len(inputs))))
        for i, (y, grads) in enumerate(results):
            assert_bitwise_equal(y, sequential[i], f"conv2d_forward #{i}")
            for got, want in zip(grads, sequential_grads[i]):
                assert_bitwise_equal(got, want, f"conv2d_backward #{i}")


def test_concurrent_calls_while_thread_count_changes():
    """Changing the thread count from another Python thread mid-flight may change the speed but
    never the results (they are identical for every count)."""
    inputs = [conv_inputs(100 + seed) for seed in range(8)]
    expected = [F.conv2d_forward(x, W, b, 2, 1) for x, W, b in inputs]
    stop = threading.Event()

    def toggle():
        n = 1
        while not stop.is_set():
            tinyconv.set_num_threads(n)
            n = n % 3 + 1

    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            for _ in range(3):
                results = list(
                    pool.map(lambda i: F.conv2d_forward(*inputs[i], 2, 1), range(len(inputs)))
                )
                for i, y in enumerate(results):
                    assert_bitwise_equal(y, expected[i], f"conv2d_forward #{i}")
    finally:
        stop.set()
        toggler.join()
