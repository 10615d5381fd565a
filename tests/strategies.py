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


class _OutputSize:
    """Output height and width of a sliding window (fields H, W, kh, kw, sh, sw, ph, pw)."""

    @property
    def out_h(self) -> int:
        return (self.H + 2 * self.ph - self.kh) // self.sh + 1  # type: ignore[attr-defined]

    @property
    def out_w(self) -> int:
        return (self.W + 2 * self.pw - self.kw) // self.sw + 1  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Geometry(_OutputSize):
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
def geometries(
    draw,
    *,
    max_batch: int = 3,
    max_channels: int = 3,
    max_size: int = 8,
    max_pad: int = 3,
    max_stride: int = 4,
    pad_below_kernel: bool = False,
) -> Geometry:
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
    return Geometry(
        N, C, H, W, kh, kw, sh, sw, ph, pw, draw(spelled_pair(sh, sw)), draw(spelled_pair(ph, pw))
    )


# ----------------------------------------------------------------------------------------------
# Dtypes


INT_DTYPES = [np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64)]


@st.composite
def dtype_plans(draw, n_inputs: int):
    """Storage dtypes for ``n_inputs`` arrays and the compute (= output) dtype the contract
    promises for them: float32 iff every floating input is float32/float16 (integers adopt it),
    float64 otherwise, including when no input is floating. Mostly all-float64 or all-float32
    (the main paths), sometimes mixed with float16 and integer inputs."""
    case = draw(
        st.sampled_from(["float64", "float32", "float64", "float32", "mixed32", "mixed64", "ints"])
    )
    f32 = np.dtype(np.float32)
    f64 = np.dtype(np.float64)
    if case == "float64":
        return [f64] * n_inputs, f64
    if case == "float32":
        return [f32] * n_inputs, f32
    if case == "ints":
        return [draw(st.sampled_from(INT_DTYPES)) for _ in range(n_inputs)], f64
    if case == "mixed32":
        choices = [f32, np.dtype(np.float16), *INT_DTYPES]
        dtypes = [draw(st.sampled_from(choices)) for _ in range(n_inputs)]
        anchor = draw(st.integers(0, n_inputs - 1))
        dtypes[anchor] = draw(st.sampled_from([f32, np.dtype(np.float16)]))
        return dtypes, f32
    choices = [f64, f32, np.dtype(np.float16), *INT_DTYPES]
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
    big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
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


# ----------------------------------------------------------------------------------------------
# Convolutions that reach every internal switch of the kernel
#
# csrc/conv.cpp picks a route by shape, and the GEMMs it calls (csrc/gemm_kernel.inc) pick their
# own; a bug on one route is invisible on the others. The constants below are copies of the
# switch points, used to aim the draws and to label cases (keep them in step with the C++).

FLAT_MIN_POSITIONS = 1024  # conv.cpp kFlatMinPositions: fewer wide positions -> several a canvas
CANVAS_BUDGET = 1 << 18  # conv.cpp kCanvasBudget: elements of a canvas of several images
BLOCK = 4  # conv.cpp kBlock: the backward block of large images and of the pointwise route
SMALL_IMAGE_BLOCK = 16  # conv.cpp kSmallImageBlock: backward block of small images
TRANSPOSED_DX_MIN_CHANNELS = 8  # conv.cpp kMinChannelsForTransposedConv
GEMM_KC = 256  # gemm_kernel.inc Tiles::KC: k blocks
GEMM_MC_MAX = 128  # Tiles::MC = MR * 16: 96 (generic, avx2), 128 (avx512)
GEMM_NC_MAX = 4096  # Tiles::NC = NR * 128: 512 (generic, double) .. 4096 (avx512, float)
# (gemm_kernel.inc kSmallWork = 2**15 multiply-adds: products at or below skip packing; most
# cases here are small, the gemm_blocks route makes them large.)


@dataclass(frozen=True)
class ConvCase(_OutputSize):
    """One convolution call: shapes, window, the thread count to run it with, and how to make its
    values (dtype name, value style of :func:`make_values`, seed)."""

    N: int
    C: int
    FN: int
    H: int
    W: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0
    threads: int = 1
    dtype: str = "float32"
    style: str = "normal"
    seed: int = 0

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.FN, self.C, self.kh, self.kw)

    @property
    def y_shape(self):
        return (self.N, self.FN, self.out_h, self.out_w)

    @property
    def core_args(self):
        """stride_h, stride_w, pad_h, pad_w as ``tinyconv._core`` takes them."""
        return (self.sh, self.sw, self.ph, self.pw)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def conv_switches(case: ConvCase) -> list[str]:
    """The switch points of conv.cpp that ``case`` reaches, as labels (for ``hypothesis.event``
    statistics and failure notes): the route, the canvas and block shapes, the dx route, column
    tiles, K past the GEMM's k block, the thread count."""
    g = case
    pointwise = g.kh == g.kw == 1 and g.sh == g.sw == 1 and g.ph == g.pw == 0
    strided = g.sh > 1 or g.sw > 1
    K = g.C * g.kh * g.kw
    per_block = BLOCK
    labels = []
    if pointwise:
        labels.append("pointwise")
    else:
        # conv.cpp's Canvas: padded columns per image rounded up to the column stride, planes
        # of ceil((PW + images * that) / SW) columns and ceil(Hp / SH) rows, one per channel and
        # stored phase.
        per_image = -(-(g.W + g.pw) // g.sw) * g.sw
        plane_width = -(-(g.pw + per_image) // g.sw)
        planes = g.C * min(g.sh, g.kh) * min(g.sw, g.kw)
        rows = -(-(g.H + 2 * g.ph) // g.sh)
        small = (g.out_h - 1) * plane_width + g.out_w < FLAT_MIN_POSITIONS
        if small:  # conv.cpp images_per_canvas
            most = SMALL_IMAGE_BLOCK
            while most > 1 and planes * rows * -(-(g.pw + most * per_image) // g.sw) > (
                CANVAS_BUDGET
            ):
                most //= 2
            canvases = min(g.N, _ceil_div(_ceil_div(g.N, most), 4) * 4)
            images = _ceil_div(g.N, canvases) if canvases >= 1 else 1
            small = images > 1
        if small:
            per_block = images
            labels.append("flat: several small images a canvas (a block)")
            if most < SMALL_IMAGE_BLOCK:
                labels.append("flat: fewer than 16 a canvas (the canvas budget)")
            if images < most:
                labels.append("flat: fewer a canvas, canvases a multiple of 4")
            if g.N % images:
                labels.append("flat: partial last canvas")
        else:
            labels.append("flat: one image a canvas")
            if g.ph == g.pw == 0 and not strided:
                labels.append("flat: the canvas is x")
            if plane_width == g.out_w:
                labels.append("flat: the wide output is y")
        if strided:
            labels.append("strided: stride phases on the canvas")
            if g.sh > g.kh or g.sw > g.kw:
                labels.append("stride > kernel: phases left out")
            if g.sh == 1 or g.sw == 1:
                labels.append("strided one way only")
            labels.append("dx: folded, strided")
        elif g.C < TRANSPOSED_DX_MIN_CHANNELS:
            labels.append("dx: folded, few channels")
        elif g.ph < g.kh and g.pw < g.kw:
            labels.append("dx: transposed convolution")
            if g.ph == g.kh - 1 or g.pw == g.kw - 1:
                labels.append("dx: transposed, pad = kernel - 1")
        else:
            labels.append("dx: folded, pad >= kernel")
    if per_block < g.N and g.N % per_block:
        labels.append("partial last block")
    if g.C >= 2 * TRANSPOSED_DX_MIN_CHANNELS:
        labels.append(">= 16 channels")
    if g.ph >= g.kh or g.pw >= g.kw:
        labels.append("pad >= kernel")
    if g.kh == g.H + 2 * g.ph and g.kw == g.W + 2 * g.pw:
        labels.append("kernel = padded input")
    if g.kh == g.kw == 1 and not pointwise:
        labels.append("1x1 kernel, not pointwise")
    if K > GEMM_KC:
        labels.append("K > the GEMM's k block")
    labels.append(f"{g.threads} thread{'s' if g.threads > 1 else ''}")
    return labels


def _pad_near(draw, kernel: int) -> int:
    """A pad at the switch points around the kernel size: 0, 1, kernel - 1, kernel, kernel + 1."""
    return draw(st.sampled_from(sorted({0, 1, max(0, kernel - 1), kernel, kernel + 1})))


CONV_ROUTES = [
    "pointwise",
    "flat",
    "flat",
    "flat",
    "strided",
    "strided",
    "large",
    "kernel_fills_input",
    "gemm_blocks",
]


@st.composite
def conv_cases(draw) -> ConvCase:
    """A convolution on one of conv.cpp's routes (pointwise, flat with one or several images a
    canvas, strided with stride phases on the canvas), with batches that leave partial canvases and blocks, channel counts on both
    sides of the transposed-dx switches (8, 16), pads at kernel - 1, kernel and above, strides
    above the kernel, kernels that fill the padded input, GEMMs past their k, row and column
    blocks, and one or two threads. See :func:`conv_switches` for the labels."""
    route = draw(st.sampled_from(CONV_ROUTES))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    style = draw(st.sampled_from(["normal", "small_ints"]))
    threads = draw(st.sampled_from([1, 2]))
    seed = draw(st.integers(0, 2**32 - 1))
    N = draw(st.sampled_from([1, 2, 3, 4, 5, 9, 16, 17, 20]))
    C = draw(st.sampled_from([1, 2, 3, 7, 8, 9, 16, 17]))
    FN = draw(st.integers(1, 6) | st.sampled_from([8, 16, 17]))
    sh = sw = 1
    if route == "pointwise":
        kh = kw = 1
        ph = pw = 0
        H, W = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    elif route == "large":  # one image a canvas (at least FLAT_MIN_POSITIONS wide positions)
        kh = kw = draw(st.sampled_from([1, 3]))
        ph, pw = draw(st.sampled_from([(0, 0), (1, 1), (1, 0)]))
        if kh == 1 and ph == pw == 0:
            ph = 1
        sh = sw = draw(st.sampled_from([1, 1, 2]))
        H = W = draw(st.integers(34, 40)) * sh
        N, C = draw(st.sampled_from([1, 2, 5])), draw(st.sampled_from([1, 3, 8, 9]))
    elif route in ("flat", "strided"):
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        ph, pw = _pad_near(draw, kh), _pad_near(draw, kw)
        if route == "flat" and kh == kw == 1 and ph == pw == 0:
            ph = 1  # else it is the pointwise route
        H = draw(st.integers(max(1, kh - 2 * ph), 20))
        W = draw(st.integers(max(1, kw - 2 * pw), 20))
        if route == "strided":
            sh, sw = draw(st.integers(1, kh + 2)), draw(st.integers(1, kw + 2))
            if sh == sw == 1:
                sw = 2
    elif route == "kernel_fills_input":
        H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        kh, kw = H + 2 * ph, W + 2 * pw
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    else:  # gemm_blocks: one GEMM dimension past its block size, the rest small
        # (past GEMM_KC, GEMM_MC_MAX, GEMM_NC_MAX)
        which = draw(st.sampled_from(["k", "rows", "channel rows", "columns", "positions"]))
        N = draw(st.integers(1, 3))
        kh = kw = 3
        ph = pw = 1
        if which == "k":  # K = C * 9 > KC, at stride 1 or 2
            C, FN = draw(st.sampled_from([29, 32])), draw(st.integers(1, 4))
            H = W = draw(st.integers(8, 33))
            sh = sw = draw(st.sampled_from([1, 2]))
        elif which == "rows":  # FN > MC: the forward GEMM's rows
            FN, C = draw(st.sampled_from([97, 130])), draw(st.integers(1, 2))
            H = W = draw(st.integers(3, 6))
        elif which == "channel rows":  # C > MC: dx's rows (folded, or the transposed convolution's)
            C, FN = draw(st.sampled_from([97, 130])), draw(st.integers(1, 3))
            H = W = draw(st.integers(3, 6))
        elif which == "columns":  # wide positions > NC: the flat GEMM's column panels
            C, FN, N = 1, draw(st.integers(1, 2)), 1
            H = W = draw(st.sampled_from([46, 66]))
        else:  # positions > KC, strided: dW's dot products over long rows
            C, FN = 2, 3
            H = W = draw(st.integers(33, 36))
            sh = sw = 2
    return ConvCase(N, C, FN, H, W, kh, kw, sh, sw, ph, pw, threads, dtype, style, seed)


def conv_case_values(case: ConvCase, *, with_dout: bool = True):
    """x, W, b (and dout) for ``case``, from its seed and style, in its dtype."""
    rng = np.random.default_rng(case.seed)
    dtype = np.dtype(case.dtype)
    x = make_values(rng, case.x_shape, dtype, case.style)
    w = make_values(rng, case.w_shape, dtype, case.style)
    b = make_values(rng, (case.FN,), dtype, case.style)
    if not with_dout:
        return x, w, b
    return x, w, b, make_values(rng, case.y_shape, dtype, case.style)


# One case per switch point, for explicit examples: the derandomised ``ci`` profile runs each of
# them on every ISA level, whatever else it draws. The comment names the switch.
CONV_SWITCH_POINTS = [
    ConvCase(3, 5, 4, 6, 7, 1, 1),  # pointwise, small GEMM
    ConvCase(2, 64, 64, 3, 3, 1, 1, dtype="float64"),  # pointwise, packed, C^T orientation
    ConvCase(2, 3, 5, 12, 12, 3, 3, ph=1, pw=1),  # flat, 16 a canvas
    ConvCase(2, 3, 5, 34, 34, 3, 3, ph=1, pw=1),  # flat, one image a canvas
    ConvCase(3, 2, 3, 36, 36, 3, 3, dtype="float64"),  # one image a canvas, the canvas is x
    ConvCase(2, 3, 4, 40, 40, 3, 1, ph=1),  # one image a canvas, the wide output is y
    ConvCase(5, 17, 9, 34, 34, 3, 3, ph=1, pw=1, threads=2),  # transposed dx, one a canvas
    ConvCase(9, 3, 8, 34, 34, 3, 3, ph=1, pw=1, threads=2),  # blocks of 4, waves, last partial
    ConvCase(2, 3, 4, 70, 70, 3, 3, 2, 2, 1, 1),  # stride 2, one image a canvas
    ConvCase(2, 5, 3, 72, 72, 1, 1, 2, 2),  # 1x1 stride 2, one a canvas, the wide output is y
    ConvCase(40, 64, 5, 20, 20, 3, 3, ph=1, pw=1),  # at most 8 a canvas: the canvas budget
    ConvCase(3, 2, 3, 14, 14, 3, 3, dtype="float64"),  # flat, the canvas is x
    ConvCase(2, 3, 4, 14, 14, 3, 1, ph=1),  # flat, the wide output is y
    ConvCase(19, 3, 4, 6, 6, 3, 3, ph=1, pw=1),  # flat, 5 a canvas (4 canvases), the last partial
    ConvCase(63, 2, 3, 6, 6, 3, 3, ph=1, pw=1),  # flat, 16 a canvas (a block), the last partial
    ConvCase(16, 2, 3, 5, 4, 2, 3, ph=1, pw=2, dtype="float64"),  # flat small, one full block
    ConvCase(6, 8, 5, 5, 5, 3, 3, ph=2, pw=2),  # dx transposed, pad = kernel - 1
    ConvCase(5, 9, 3, 6, 6, 2, 2, ph=2, pw=2),  # C >= 8, pad = kernel: dx folded
    ConvCase(3, 8, 3, 5, 6, 2, 2, ph=3, pw=1),  # C >= 8, pad > kernel in one direction
    ConvCase(5, 8, 4, 7, 6, 3, 2, ph=1, pw=2, dtype="float64"),  # C >= 8, pw = kernel, ph below
    ConvCase(4, 16, 16, 10, 10, 3, 3, style="small_ints"),  # dx transposed, 16 channels, pad 0
    ConvCase(
        5, 17, 9, 16, 16, 3, 3, ph=1, pw=1, threads=2
    ),  # transposed, one image a canvas, 2 threads
    ConvCase(5, 3, 4, 9, 9, 3, 3, 2, 2, 1, 1),  # stride 2, small: one partial canvas
    ConvCase(2, 3, 4, 30, 30, 3, 3, 2, 2, 1, 1),  # stride 2, one image a canvas
    ConvCase(18, 9, 5, 8, 8, 3, 3, 2, 2, 1, 1, dtype="float64"),  # stride 2, partial 16-block
    ConvCase(2, 5, 3, 24, 24, 1, 1, 2, 2),  # 1x1 stride 2: one phase, the wide output is y
    ConvCase(3, 2, 3, 11, 9, 2, 1, 3, 4, 0, 1, dtype="float64"),  # stride > kernel: phases left out
    ConvCase(4, 3, 2, 8, 9, 3, 3, 1, 2, 3, 0),  # strided one way only, pad = kernel
    ConvCase(3, 9, 4, 10, 7, 3, 3, 2, 1, 1, 1),  # strided one way, C >= 8: dx still folded
    ConvCase(2, 2, 3, 13, 14, 5, 5, 3, 3, 2, 2),  # stride 3, W + PW not a multiple of it
    ConvCase(2, 3, 2, 15, 16, 7, 7, 2, 2, 3, 3),  # a 7x7/2 stem (ResNet-50's, small)
    ConvCase(1, 32, 3, 21, 21, 3, 3, 2, 2, 1, 1, dtype="float64"),  # stride 2, K > KC (float64)
    ConvCase(1, 32, 2, 31, 31, 3, 3, 2, 2, 1, 1),  # stride 2, K > KC (float32)
    ConvCase(2, 8, 3, 4, 5, 6, 7, ph=1, pw=1),  # kernel = padded input, flat, transposed dx
    ConvCase(
        3, 2, 3, 4, 5, 6, 7, 2, 3, 1, 1, dtype="float64"
    ),  # kernel = padded input, strided (L = 1)
    ConvCase(3, 8, 3, 5, 4, 1, 1, ph=1, pw=1),  # 1x1 kernel with padding (flat)
    ConvCase(2, 29, 3, 12, 12, 3, 3, ph=1, pw=1),  # K > KC: GEMM k blocks
    ConvCase(2, 2, 130, 6, 5, 3, 3, ph=1, pw=1),  # FN > MC: GEMM row blocks
    ConvCase(2, 130, 2, 5, 5, 3, 3, ph=1, pw=1),  # C > MC: dx rows, transposed
    ConvCase(1, 1, 2, 66, 66, 3, 3, ph=1, pw=1),  # wide positions > NC (every ISA)
    ConvCase(2, 2, 3, 35, 35, 3, 3, 2, 2, 1, 1, dtype="float64"),  # positions > KC, strided
    ConvCase(1, 1, 16, 36, 36, 2, 2, 2, 2),  # dW as C^T (FN > K), positions > KC
    ConvCase(1, 60, 2, 19, 19, 3, 3, 2, 2, 1, 1, dtype="float64"),  # K > 512, strided
    ConvCase(1, 120, 2, 19, 19, 3, 3, 2, 2, 1, 1),  # K > 1024, strided (float32)
    ConvCase(1, 8, 8, 16, 16, 3, 3, ph=1, pw=1, threads=2),  # one unit, GEMMs on 2 threads
    ConvCase(1, 8, 8, 20, 20, 3, 1, ph=1, threads=2),  # the wide output is y, 2 threads
    ConvCase(1, 8, 8, 20, 20, 3, 1, ph=1, threads=2, dtype="float64"),
    ConvCase(1, 3, 16, 24, 24, 3, 3, ph=1, pw=1, threads=2),  # folded dx GEMM on 2 threads
    ConvCase(9, 3, 8, 12, 12, 3, 3, ph=1, pw=1, threads=2),  # waves of blocks, last one partial
    ConvCase(40, 3, 8, 6, 6, 3, 3, ph=1, pw=1, threads=2),  # waves of 16-image blocks
    ConvCase(1, 16, 16, 20, 20, 3, 3, 2, 2, 1, 1, threads=2),  # strided, GEMMs on 2 threads
    ConvCase(7, 4, 5, 9, 8, 3, 3, 2, 1, 1, 1, threads=3),  # 3 threads: odd team, partial wave
]


@dataclass(frozen=True)
class Poison:
    """How many non-finite values (NaN, +inf, -inf, at random) to put into each input of a
    convolution, and a seed for their positions and kinds."""

    x: int = 0
    w: int = 0
    b: int = 0
    dout: int = 0
    seed: int = 0

    def apply(self, **arrays: np.ndarray) -> None:
        """Writes the non-finite values into the named arrays (x, w, b, dout), in place."""
        rng = np.random.default_rng(self.seed)
        for name, array in arrays.items():
            count = getattr(self, name)
            if count and array.size:
                flat = array.reshape(-1)  # the arrays are contiguous: a view
                flat[rng.integers(0, flat.size, count)] = rng.choice(
                    [np.nan, np.inf, -np.inf], count
                )


def poisons() -> st.SearchStrategy[Poison]:
    """Mostly a few non-finite values in x, W and dout (each sometimes none), rarely in b."""
    counts = st.sampled_from([0, 1, 1, 2, 5])
    return st.builds(
        Poison, x=counts, w=counts, b=st.sampled_from([0, 0, 0, 1]), dout=counts, seed=seeds()
    )
