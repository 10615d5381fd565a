"""Hypothesis strategies shared by the kernel tests.

Array *values* come from a NumPy generator seeded by Hypothesis (fast, and the seed is printed on
failure); the *structure* -- shapes, window geometry, dtypes, memory layout, value style -- is
drawn by Hypothesis directly, so it shrinks to small, readable counterexamples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st


def more_examples(factor: int) -> settings:
    """``factor`` times the active profile's example count, for the cheap tests that guard the
    most intricate kernels (the profile, ``ci`` or ``thorough``, still sets the scale)."""
    return settings(max_examples=factor * settings.default.max_examples)

# ----------------------------------------------------------------------------------------------
# Window geometry (convolution and pooling)


@dataclass(frozen=True)
class Geometry:
    """A batch of inputs and a sliding window over it. ``stride``/``pad`` are spelled the way
    they are passed to the function under test (an int, a tuple, a list, NumPy ints)."""

    N: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    stride: object
    pad: object

    @property
    def out_h(self) -> int:
        return (self.H + 2 * self.ph - self.kh) // self.sh + 1

    @property
    def out_w(self) -> int:
        return (self.W + 2 * self.pw - self.kw) // self.sw + 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)


def spelled_pair(h: int, w: int) -> st.SearchStrategy:
    """The ways a user may write a stride or pad of (h, w): an int when h == w, a tuple, a list,
    NumPy integers."""
    spellings = [(h, w), [h, w], (np.int64(h), np.int32(w))]
    if h == w:
        spellings += [h, np.int64(h)]
    return st.sampled_from(spellings)


@st.composite
def geometries(draw, *, max_batch: int = 3, max_channels: int = 3, max_size: int = 8,
               max_pad: int = 3, max_stride: int = 4, pad_below_kernel: bool = False) -> Geometry:
    """A window geometry. Kernels range from 1x1 up to the padded input size (rectangular too);
    with ``pad_below_kernel`` (max pooling) the pad is kept below the kernel size."""
    N = draw(st.integers(1, max_batch))
    C = draw(st.integers(1, max_channels))
    H = draw(st.integers(1, max_size))
    W = draw(st.integers(1, max_size))
    ph = draw(st.integers(0, max_pad))
    pw = draw(st.integers(0, max_pad))
    lowest_kh = ph + 1 if pad_below_kernel else 1
    lowest_kw = pw + 1 if pad_below_kernel else 1
    kh = draw(st.integers(lowest_kh, H + 2 * ph))
    kw = draw(st.integers(lowest_kw, W + 2 * pw))
    sh = draw(st.integers(1, max_stride))
    sw = draw(st.integers(1, max_stride))
    return Geometry(N, C, H, W, kh, kw, sh, sw, ph, pw, draw(spelled_pair(sh, sw)), draw(spelled_pair(ph, pw)))


# ----------------------------------------------------------------------------------------------
# Dtypes


INT_DTYPES = [np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64)]


@st.composite
def dtype_plans(draw, n_inputs: int):
    """Storage dtypes for ``n_inputs`` arrays and the compute (= output) dtype the contract
    promises for them: float32 iff every floating input is float32/float16 (integers adopt it),
    float64 otherwise, including when no input is floating. Mostly all-float64 or all-float32
    (the main paths), sometimes mixed with float16 and integer inputs."""
    case = draw(st.sampled_from(["float64", "float32", "float64", "float32", "mixed32", "mixed64", "ints"]))
    f32 = np.dtype(np.float32)
    f64 = np.dtype(np.float64)
    if case == "float64":
        return [f64] * n_inputs, f64
    if case == "float32":
        return [f32] * n_inputs, f32
    if case == "ints":
        return [draw(st.sampled_from(INT_DTYPES)) for _ in range(n_inputs)], f64
    if case == "mixed32":
        choices = [f32, np.dtype(np.float16)] + INT_DTYPES
        dtypes = [draw(st.sampled_from(choices)) for _ in range(n_inputs)]
        anchor = draw(st.integers(0, n_inputs - 1))
        dtypes[anchor] = draw(st.sampled_from([f32, np.dtype(np.float16)]))
        return dtypes, f32
    choices = [f64, f32, np.dtype(np.float16)] + INT_DTYPES
    dtypes = [draw(st.sampled_from(choices)) for _ in range(n_inputs)]
    dtypes[draw(st.integers(0, n_inputs - 1))] = f64
    return dtypes, f64


# ----------------------------------------------------------------------------------------------
# Values and memory layout

# small_ints: few distinct values, so ties (max pooling) and exact cancellations really happen.
VALUE_STYLES = ["small_ints", "uniform", "scaled", "normal"]


def make_values(rng: np.random.Generator, shape, dtype: np.dtype, style: str) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` with values in ``style``. Integer dtypes always get small
    integers that fit (non-negative for unsigned)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        low = 0 if dtype.kind == "u" else -3
        return rng.integers(low, low + 7, size=shape).astype(dtype)
    if style == "small_ints":
        values = rng.integers(-3, 4, size=shape).astype(np.float64)
    elif style == "uniform":
        values = rng.uniform(-1.0, 1.0, size=shape)
    elif style == "scaled":
        values = rng.uniform(-1.0, 1.0, size=shape) * 10.0 ** rng.integers(-3, 4)
    else:
        values = rng.standard_normal(size=shape)
    return values.astype(dtype)


def _fortran(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(a)


def _every_other(a: np.ndarray) -> np.ndarray:
    """A view with stride 2 on the last axis (like ``x[:, :, ::2]``)."""
    if a.ndim == 0:
        return a
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _transposed_back(a: np.ndarray) -> np.ndarray:
    """Same values, memory in reversed axis order: ``.transpose(...)`` of a contiguous array."""
    order = tuple(reversed(range(a.ndim)))
    return np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))


def _reversed_rows(a: np.ndarray) -> np.ndarray:
    """Same values through a negative stride on axis 0."""
    if a.ndim == 0:
        return a
    return np.ascontiguousarray(a[::-1])[::-1]


def _as_list(a: np.ndarray):
    """A nested Python list: only for small arrays, and only where the dtype survives (floats
    become float64, so lists are used only for float64 inputs)."""
    return a.tolist()


LAYOUTS = {
    "contiguous": lambda a: a,
    "fortran": _fortran,
    "every_other": _every_other,
    "transposed_back": _transposed_back,
    "reversed_rows": _reversed_rows,
}


@st.composite
def arrays(draw, shape, dtype, *, style: str | None = None, allow_list: bool = True):
    """An array of ``shape`` and storage ``dtype`` in a random memory layout (non-contiguous views
    included); float64 data is sometimes passed as a nested list (any array-like is accepted)."""
    seed = draw(st.integers(0, 2**32 - 1))
    chosen_style = style if style is not None else draw(st.sampled_from(VALUE_STYLES))
    values = make_values(np.random.default_rng(seed), shape, dtype, chosen_style)
    # A 0-d array has only one layout (np.asfortranarray would even make it 1-d).
    layouts = list(LAYOUTS) if values.ndim > 0 else ["contiguous"]
    if allow_list and np.dtype(dtype) == np.float64 and values.size <= 64:
        layouts.append("list")
    layout = draw(st.sampled_from(layouts))
    if layout == "list":
        return _as_list(values)
    out = LAYOUTS[layout](values)
    assert np.array_equal(out, values)
    return out


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**32 - 1)
