"""Every internal switch of the convolution kernel, at every GEMM ISA level this CPU runs, against
the definition; and the rule for non-finite values.

csrc/conv.cpp picks a route by shape -- pointwise, or flat (one image a canvas, or 4 small images
a canvas and 16 a backward block; strided convolutions with their stride phases split on the
canvas, phases no tap reads left out) -- and a route for dx (at stride 1 a transposed convolution
with >= 8 channels and pads below the kernel, else folded back), and runs over images or inside the GEMMs by thread count. ``strategies.conv_cases``
draws across all of them, and ``CONV_SWITCH_POINTS`` holds one case per switch point, run as
explicit examples so that the derandomised ``ci`` profile reaches each one on every ISA.

The oracle is the definition itself in NumPy (:func:`conv_by_definition`): for each filter tap,
the output positions whose tap reads inside the input, so padding is no term at all. That makes it
the oracle for non-finite values too: a NaN or an infinity may only reach the outputs whose
definition has it as a term, so every entry the definition leaves finite must be finite and close,
and every NaN, +inf and -inf must sit where the definition puts it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from checks import assert_bitwise_equal, assert_close
from hypothesis import event, example, given, note
from hypothesis import strategies as st
from strategies import (
    CONV_SWITCH_POINTS,
    ConvCase,
    Poison,
    conv_case_values,
    conv_cases,
    conv_switches,
    make_values,
    more_examples,
    poisons,
)

import tinyconv
from tinyconv import _core
from tinyconv import functional as F
from tinyconv import reference as R

AVAILABLE_ISAS = [name for name in tinyconv.config()["available_isas"].split(",") if name]


@contextlib.contextmanager
def isa_and_threads(isa: str, threads: int):
    """Runs the block with GEMM level ``isa`` and ``threads`` threads, then restores both."""
    isa_before, threads_before = tinyconv.config()["isa"], tinyconv.get_num_threads()
    _core.set_isa(isa)
    tinyconv.set_num_threads(threads)
    try:
        yield
    finally:
        _core.set_isa(isa_before)
        tinyconv.set_num_threads(threads_before)


# Inputs are passed as views into larger buffers filled with this value: a route that reads past
# either end of an input (a partial block or canvas taking a full one's size, say) then gets
# values that ruin its result, an assertion rather than a crash or plausible garbage. Finite: a
# NaN would be undone by the kernel's repair of NaN outputs (conv.cpp, non-finite values).
GUARD_VALUE = 1e20


def guarded(*arrays: np.ndarray) -> list[np.ndarray]:
    """Each array's values as a C-contiguous view in the middle of a buffer 33 times its size (at
    least 64 elements either side; a block of 16 images reads at most 15 past the last), the rest
    GUARD_VALUE."""
    views = []
    for a in arrays:
        margin = 16 * a.size + 64
        buffer = np.full(a.size + 2 * margin, GUARD_VALUE, dtype=a.dtype)
        view = buffer[margin : margin + a.size].reshape(a.shape)
        view[...] = a
        views.append(view)
    return views


def with_switch_points(poison: Poison | None = None):
    """Adds every case of CONV_SWITCH_POINTS as an explicit example (with ``poison``, if given)."""

    def decorate(test):
        for case in reversed(CONV_SWITCH_POINTS):
            test = example(case=case, poison=poison)(test) if poison else example(case=case)(test)
        return test

    return decorate


# ----------------------------------------------------------------------------------------------
# The oracle


def _tap_slices(size: int, out: int, stride: int, pad: int, tap: int):
    """The output positions o whose tap reads inside the input (0 <= o*stride - pad + tap < size)
    as a slice of outputs, and the input positions they read as a slice; None when there are none."""
    lo = max(0, -((tap - pad) // stride))  # ceil((pad - tap) / stride)
    hi = min(out, (size - 1 + pad - tap) // stride + 1)
    if hi <= lo:
        return None
    first = lo * stride - pad + tap
    return slice(lo, hi), slice(first, first + (hi - lo - 1) * stride + 1, stride)


def _taps(case: ConvCase):
    """(fh, fw, output rows, output columns, input rows, input columns) of every tap that reads
    inside the input for some output."""
    for fh in range(case.kh):
        rows = _tap_slices(case.H, case.out_h, case.sh, case.ph, fh)
        for fw in range(case.kw):
            cols = _tap_slices(case.W, case.out_w, case.sw, case.pw, fw)
            if rows is not None and cols is not None:
                yield fh, fw, rows[0], cols[0], rows[1], cols[1]


def conv_by_definition(case: ConvCase, x, W, b):
    """y (float64) by the definition: b[f] + sum over the taps inside the input of W * x."""
    x, W, b = (np.asarray(a, dtype=np.float64) for a in (x, W, b))
    y = np.empty(case.y_shape)
    y[...] = b[None, :, None, None]
    with np.errstate(invalid="ignore", over="ignore"):
        for fh, fw, oh, ow, ih, iw in _taps(case):
            y[:, :, oh, ow] += np.einsum("fc,ncij->nfij", W[:, :, fh, fw], x[:, :, ih, iw])
    return y


def conv_backward_by_definition(case: ConvCase, dout, x, W):
    """(dx, dW, db) (float64) by the definition: each term dout * x (dW) and dout * W (dx) of a tap
    inside the input."""
    dout, x, W = (np.asarray(a, dtype=np.float64) for a in (dout, x, W))
    dx = np.zeros(case.x_shape)
    dW = np.zeros(case.w_shape)
    with np.errstate(invalid="ignore", over="ignore"):
        for fh, fw, oh, ow, ih, iw in _taps(case):
            d = dout[:, :, oh, ow]
            dW[:, :, fh, fw] = np.einsum("nfij,ncij->fc", d, x[:, :, ih, iw])
            dx[:, :, ih, iw] += np.einsum("nfij,fc->ncij", d, W[:, :, fh, fw])
        db = dout.sum(axis=(0, 2, 3))
    return dx, dW, db


def relu(y):
    return np.where(y <= 0, 0.0, y)  # NaN stays NaN


def assert_matches_definition(got, want, dtype, magnitude, what: str) -> None:
    """NaN, +inf and -inf exactly where the definition has them; every entry it leaves finite
    within the suite's tolerance (``checks.assert_close``, ``magnitude`` from the absolute values)."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    for kind, is_kind in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        mismatch = is_kind(got) != is_kind(want)
        if mismatch.any():
            at = tuple(int(i) for i in np.argwhere(mismatch)[0])
            raise AssertionError(
                f"{what}: {int(mismatch.sum())} entries disagree on {kind}; first at {at}: "
                f"got {got[at]!r}, the definition gives {want[at]!r}"
            )
    finite = np.isfinite(want)
    assert_close(
        np.where(finite, got, 0.0),
        np.where(finite, want, 0.0),
        dtype,
        np.where(finite, magnitude, 0.0),
        what,
    )


# ----------------------------------------------------------------------------------------------
# Every route, finite values


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@with_switch_points()
@more_examples(4)
@given(case=conv_cases())
def test_every_route_matches_the_definition(isa, case):
    """Forward (plain and with the fused ReLU), backward with and without dx: all close to the
    definition; dW and db the same bits whether dx is asked for or not. (The definition is
    computed first and each result checked as soon as it is made: a route that writes past its
    output may corrupt the heap, and the assertion should come before any later allocation.)"""
    for label in conv_switches(case):
        event(label)
    note(f"switches: {conv_switches(case)}")
    dtype = np.dtype(case.dtype)
    x, W, b, dout = guarded(*conv_case_values(case))
    want = conv_by_definition(case, x, W, b)
    magnitude = conv_by_definition(case, abs(x), abs(W), abs(b))
    wants = conv_backward_by_definition(case, dout, x, W)
    magnitudes = conv_backward_by_definition(case, abs(dout), abs(x), abs(W))
    with isa_and_threads(isa, case.threads):
        y = _core.conv2d_forward(x, W, b, *case.core_args)
        assert_close(y, want, dtype, magnitude, "y")
        grads = _core.conv2d_backward(dout, x, W, *case.core_args)
        for name, got, want_, magnitude_ in zip(("dx", "dW", "db"), grads, wants, magnitudes):
            assert_close(got, want_, dtype, magnitude_, name)
        y_relu = _core.conv2d_forward(x, W, b, *case.core_args, relu=True)
        no_dx = _core.conv2d_backward(dout, x, W, *case.core_args, False)
    assert_bitwise_equal(y_relu, _core.relu_forward(y), "y with the fused ReLU")
    assert no_dx[0] is None
    assert_bitwise_equal(no_dx[1], grads[1], "dW without dx")
    assert_bitwise_equal(no_dx[2], grads[2], "db without dx")


# ----------------------------------------------------------------------------------------------
# Inference's fused convolution -> (ReLU ->) max pooling


#: Pooling windows (pool_h, pool_w, stride_h, stride_w, pad_h, pad_w): the three shapes pool.cpp
#: unrolls (2x2/2, 3x3/2, 3x3/1, here with and without padding) and generic ones (uneven, stride
#: above the window, a 1x1 window). Each is shrunk to fit the convolution's output (fit_pool).
POOL_WINDOWS = [
    (2, 2, 2, 2, 0, 0),
    (3, 3, 2, 2, 1, 1),
    (3, 3, 1, 1, 1, 1),
    (3, 3, 2, 2, 0, 0),
    (2, 3, 1, 2, 1, 0),
    (2, 2, 3, 3, 0, 1),
    (1, 1, 1, 1, 0, 0),
]


def fit_pool(window: tuple[int, ...], out_h: int, out_w: int) -> tuple[int, ...]:
    """``window`` made to fit an (out_h, out_w) input: each side at most the input's, its pad
    below it (max pooling needs a real value in every window)."""
    fh, fw, sh, sw, ph, pw = window
    fh, fw = min(fh, out_h), min(fw, out_w)
    return fh, fw, sh, sw, min(ph, fh - 1), min(pw, fw - 1)


def with_pooled_switch_points(test):
    """Every case of CONV_SWITCH_POINTS as an explicit example, with the pooling windows in turn
    and non-finite values in every fourth (NaN and +-inf where padding meets them)."""
    for i, case in reversed(list(enumerate(CONV_SWITCH_POINTS))):
        poison = Poison(x=2, w=1, b=1, seed=i) if i % 4 == 3 else None
        window = POOL_WINDOWS[i % len(POOL_WINDOWS)]
        test = example(case=case, window=window, relu=i % 2 == 0, poison=poison)(test)
    return test


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@with_pooled_switch_points
@more_examples(2)
@given(
    case=conv_cases(),
    window=st.sampled_from(POOL_WINDOWS),
    relu=st.booleans(),
    poison=st.none() | poisons(),
)
def test_fused_max_pooling_equals_the_two_passes(isa, case, window, relu, poison):
    """``conv2d_max_pool_forward`` (each output plane pooled as it leaves the GEMM) gives the same
    bits as ``conv2d_forward`` then ``max_pool2d_forward``, on every route of the convolution, at
    every ISA level and thread count, NaN and infinities included (the repair of outputs at the
    padding happens before the pooling)."""
    for label in conv_switches(case):
        event(label)
    pool = fit_pool(window, case.out_h, case.out_w)
    note(f"switches: {conv_switches(case)}, pool {pool}")
    x, W, b = conv_case_values(case, with_dout=False)
    if poison is not None:
        poison.apply(x=x, w=W, b=b)
    x, W, b = guarded(x, W, b)
    with isa_and_threads(isa, case.threads):
        got = _core.conv2d_max_pool_forward(x, W, b, *case.core_args, relu, *pool)
        y = _core.conv2d_forward(x, W, b, *case.core_args, relu=relu)
        want = _core.max_pool2d_forward(y, *pool, False)[0]
    assert_bitwise_equal(got, want, "the fused pooling")
    if poison is None:  # and close to the plain loops
        oracle = _core.reference.conv2d_max_pool_forward(x, W, b, *case.core_args, relu, *pool)
        np.testing.assert_allclose(
            got,
            oracle,
            rtol=1e-4 if case.dtype == "float32" else 1e-12,
            atol=1e-4 * float(np.abs(oracle).max(initial=1.0)),
        )


# ----------------------------------------------------------------------------------------------
# Non-finite values: padding and dropped positions contribute nothing, not 0 * inf


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@with_switch_points(Poison(x=2, w=1, dout=2, seed=1))
@more_examples(4)
@given(case=conv_cases(), poison=poisons())
def test_non_finite_values_reach_only_their_own_terms(isa, case, poison):
    """NaN and +-inf at random positions of x, W, b and dout: forward, dx, dW and db have NaN and
    infinities exactly where the definition does, and every other entry close to it."""
    for label in conv_switches(case):
        event(label)
    note(f"switches: {conv_switches(case)}")
    dtype = np.dtype(case.dtype)
    x, W, b, dout = guarded(*conv_case_values(case))
    poison.apply(x=x, w=W, b=b, dout=dout)
    want = conv_by_definition(case, x, W, b)
    magnitude = conv_by_definition(case, abs(x), abs(W), abs(b))
    wants = conv_backward_by_definition(case, dout, x, W)
    magnitudes = conv_backward_by_definition(case, abs(dout), abs(x), abs(W))
    with isa_and_threads(isa, case.threads):
        y = _core.conv2d_forward(x, W, b, *case.core_args)
        assert_matches_definition(y, want, dtype, magnitude, "y")
        grads = _core.conv2d_backward(dout, x, W, *case.core_args)
        for name, got, want_, magnitude_ in zip(("dx", "dW", "db"), grads, wants, magnitudes):
            assert_matches_definition(got, want_, dtype, magnitude_, name)
        y_relu = _core.conv2d_forward(x, W, b, *case.core_args, relu=True)
    assert_matches_definition(y_relu, relu(want), dtype, magnitude, "y with the fused ReLU")


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
def test_nan_in_x_leaves_the_filter_taps_that_never_read_it(isa):
    """The issue's case: a NaN at x[0, 0, 3, 1] (bottom row), pad 1: the top row of taps never
    reads the bottom input row, so dW[:, 0, 0, :] is [9 12 9] (the fast path made it NaN through a
    zero dout at a position that is no output)."""
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 3, 1] = np.nan
    W = np.ones((2, 1, 3, 3))
    with isa_and_threads(isa, 1):
        _, dW, db = F.conv2d_backward(np.ones((1, 2, 4, 4)), x, W, 1, 1)
    np.testing.assert_array_equal(dW[:, 0, 0, :], [[9.0, 12.0, 9.0]] * 2, err_msg="dW[:, 0, 0, :]")
    np.testing.assert_array_equal(db, [16.0, 16.0])
    assert np.isnan(dW[:, 0, 2, 1]).all(), "the bottom-centre tap does read the NaN"
    assert_matches_definition(
        dW,
        conv_backward_by_definition(
            ConvCase(1, 1, 2, 4, 4, 3, 3, ph=1, pw=1), np.ones((1, 2, 4, 4)), x, W
        )[1],
        np.float64,
        0.0,
        "dW",
    )


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@pytest.mark.parametrize("channels", [3, 8, 16])  # dx folded back; dx as a transposed convolution
def test_inf_in_w_stays_out_of_the_padding(isa, channels):
    """An inf in one filter tap: the outputs (and dx entries) whose windows put that tap in the
    padding are finite, as in the definition; the fast path made them NaN (0 * inf) in y, and in dx
    with >= 8 channels (dx as a transposed convolution, whose padding is the same zeros)."""
    case = ConvCase(3, channels, 4, 6, 6, 3, 3, ph=1, pw=1, dtype="float64", seed=5)
    x, W, b, dout = conv_case_values(case)
    W[1, channels - 1, 0, 0] = np.inf  # the top-left tap: in the padding along row 0 and column 0
    with isa_and_threads(isa, 1):
        y = F.conv2d_forward(x, W, b, 1, 1)
        dx, dW, db = F.conv2d_backward(dout, x, W, 1, 1)
    # Filter 1's outputs along the top row and left column; dx along the bottom row and right
    # column (the outputs that would pair the tap with them lie past the end).
    for name, edge in (
        ("y[:, 1, 0, :]", y[:, 1, 0, :]),
        ("y[:, 1, :, 0]", y[:, 1, :, 0]),
        ("dx[:, :, -1, :]", dx[:, :, -1, :]),
        ("dx[:, :, :, -1]", dx[:, :, :, -1]),
    ):
        assert np.isfinite(edge).all(), (
            f"{name} has {int((~np.isfinite(edge)).sum())} non-finite entries"
        )
    assert_matches_definition(
        y,
        conv_by_definition(case, x, W, b),
        np.float64,
        conv_by_definition(case, abs(x), abs(W), abs(b)),
        "y",
    )
    for name, got, want, magnitude in zip(
        ("dx", "dW", "db"),
        (dx, dW, db),
        conv_backward_by_definition(case, dout, x, W),
        conv_backward_by_definition(case, abs(dout), abs(x), abs(W)),
    ):
        assert_matches_definition(got, want, np.float64, magnitude, name)


def test_the_oracle_agrees_with_the_core_loops():
    """The NumPy definition and the C++ loops kept beside the kernel (``_core.reference``) are two
    independent oracles: they agree on every switch-point case, non-finite values included."""
    for case in CONV_SWITCH_POINTS:
        x, W, b, dout = conv_case_values(case)
        Poison(x=2, w=1, dout=2, seed=case.N).apply(x=x, w=W, dout=dout)
        dtype = np.dtype(case.dtype)
        magnitude = conv_by_definition(case, abs(x), abs(W), abs(b))
        assert_matches_definition(
            _core.reference.conv2d_forward(x, W, b, *case.core_args),
            conv_by_definition(case, x, W, b),
            dtype,
            magnitude,
            f"y {case}",
        )
        for name, got, want, magnitude in zip(
            ("dx", "dW", "db"),
            _core.reference.conv2d_backward(dout, x, W, *case.core_args),
            conv_backward_by_definition(case, dout, x, W),
            conv_backward_by_definition(case, abs(dout), abs(x), abs(W)),
        ):
            assert_matches_definition(got, want, dtype, magnitude, f"{name} {case}")


# ----------------------------------------------------------------------------------------------
# Pooling: padding never meets a value in a product, so non-finite values stay in their windows


@given(case=conv_cases(), poison=poisons())
def test_pooling_non_finite_values_match_the_reference(case, poison):
    """Max pooling (pad below the window) and average pooling with NaN and +-inf in x and dout:
    NaN and infinities exactly where the reference has them, other entries close."""
    dtype = np.dtype(case.dtype)
    rng = np.random.default_rng(case.seed)
    x = make_values(rng, case.x_shape, dtype, case.style)
    dout = make_values(rng, (case.N, case.C, case.out_h, case.out_w), dtype, case.style)
    poison.apply(x=x, dout=dout)
    args = (case.kh, case.kw, (case.sh, case.sw), (case.ph, case.pw))
    with np.errstate(invalid="ignore", over="ignore"):
        avg_want = R.avg_pool2d_forward(x, *args)
        avg_back_want = R.avg_pool2d_backward(dout, x.shape, *args)
    assert_matches_definition(
        F.avg_pool2d_forward(x, *args),
        avg_want,
        dtype,
        R.avg_pool2d_forward(abs(x), *args),
        "avg y",
    )
    assert_matches_definition(
        F.avg_pool2d_backward(dout, x.shape, *args),
        avg_back_want,
        dtype,
        R.avg_pool2d_backward(abs(dout), x.shape, *args),
        "avg dx",
    )
    if case.ph < case.kh and case.pw < case.kw:
        y, argmax = F.max_pool2d_forward(x, *args)
        y_want, argmax_want = R.max_pool2d_forward(x, *args)
        np.testing.assert_array_equal(argmax, argmax_want)
        np.testing.assert_array_equal(y, y_want)
        with np.errstate(invalid="ignore", over="ignore"):
            back_want = R.max_pool2d_backward(dout, argmax_want, x.shape)
        assert_matches_definition(
            F.max_pool2d_backward(dout, argmax, x.shape),
            back_want,
            dtype,
            R.max_pool2d_backward(abs(dout), argmax_want, x.shape),
            "max dx",
        )
        assert_matches_definition(
            F.max_pool2d_backward_from_input(dout, x, *args),
            back_want,
            dtype,
            R.max_pool2d_backward(abs(dout), argmax_want, x.shape),
            "max dx from x",
        )
