"""Random junk calls to every public function, for the robustness fuzz in test_validation.py.

One generator, two drivers: ``junk_call(pick)`` takes a chooser ``pick(options) -> option``;
Hypothesis passes one that draws (so failures shrink), the subprocess fuzz passes one backed by a
seeded NumPy generator (so it needs nothing but NumPy and tinyconv).

The junk is bounded on purpose: arrays have at most 5 dimensions of at most 4 entries, and the
integer arguments are either small (-3..5) or absurd (2**40 and beyond, negative powers of two).
Absurd values must be rejected (their size products overflow or exceed memory); mid-sized values
such as a pad of 2**20 are *valid* and would make a correct kernel allocate gigabytes, so they are
left out.
"""

from __future__ import annotations

import numpy as np

import tinyconv
from tinyconv import functional as F
from tinyconv import util

# The only exceptions a public function may raise on bad input.
ALLOWED_ERRORS = (ValueError, TypeError, MemoryError)

SMALL_INTS = [-3, -1, 0, 1, 2, 3, 4, 5]
ABSURD_INTS = [-(2**63), -(2**40), 2**40, 2**40 + 1, 2**62, 2**63 - 1, 2**63, 2**64]
NOT_INTS = [1.5, 2.0, True, False, None, "2", "ab", 1j, np.float64(2.0), np.bool_(True), [2], {}]
INT_LIKE = [np.int32(2), np.int64(3), np.uint8(1)]
PAIRS = [
    (1, 2),
    [2, 1],
    (0, 1),
    (-1, 1),
    (1, -1),
    (2**40, 1),
    (1, 2**63),
    (1, 2, 3),
    (),
    (1,),
    (1.5, 1),
    (True, 1),
    (None, 1),
    np.array([1, 2]),
    np.array([[1, 2]]),
]

# Real dtypes (float64 and float32 above all) are listed more than once so that junk often gets
# past the dtype checks and into the shape checks and kernels.
DTYPES = [
    "float64",
    "float64",
    "float64",
    "float32",
    "float32",
    "float16",
    "int8",
    "int64",
    "uint8",
    "uint64",
    "bool",
    "complex64",
    "object",
    "U3",
    "M8[s]",
]
FILLS = [0.0, 1.0, -1.0, 2.0, np.nan, np.inf, -np.inf, 1e300, 0.5]


def junk_int(pick):
    return pick(
        [
            lambda: pick(SMALL_INTS),
            lambda: pick(ABSURD_INTS),
            lambda: pick(NOT_INTS),
            lambda: pick(INT_LIKE),
        ]
    )()


def junk_pair(pick):
    return pick(
        [
            lambda: junk_int(pick),
            lambda: pick(PAIRS),
            lambda: (pick(SMALL_INTS + ABSURD_INTS), pick(SMALL_INTS + ABSURD_INTS)),
        ]
    )()


def junk_shape_arg(pick):
    """An ``input_shape`` argument: 4 entries of any kind, a wrong count, or not a sequence."""

    def entry():
        return pick([lambda: pick(SMALL_INTS), lambda: pick(ABSURD_INTS), lambda: pick(NOT_INTS)])()

    return pick(
        [
            lambda: tuple(entry() for _ in range(4)),
            lambda: tuple(pick([1, 2, 3, 4]) for _ in range(4)),  # plausible
            lambda: tuple(entry() for _ in range(pick([0, 1, 3, 5]))),
            lambda: [pick([1, 2, 3]) for _ in range(4)],
            lambda: np.array([pick([1, 2, 3]) for _ in range(4)]),
            lambda: pick([None, 5, "abcd", 1.5]),
        ]
    )()


def junk_array(pick, ndim_hint: int | None):
    """An array of random dtype and shape (zeros allowed), or something that is not an array."""
    kind = pick(["array", "array", "array", "array", "other"])
    if kind == "other":
        return pick([None, "abc", 1.5, 3, [[1.0, 2.0], [3.0]], {}, [1, "a"], (), np.float32(2.0)])
    ndim = ndim_hint if ndim_hint is not None and pick([True, False]) else pick([0, 1, 2, 3, 4, 5])
    shape = tuple(pick([0, 1, 1, 2, 3, 4]) for _ in range(ndim))
    dtype = np.dtype(pick(DTYPES))
    if dtype.kind == "O":
        return np.full(shape, pick([None, 1, "a"]), dtype=object)
    if dtype.kind == "U":
        return np.full(shape, "ab", dtype=dtype)
    if dtype.kind == "M":
        return np.zeros(shape, dtype=dtype)
    fill = pick(FILLS)
    if dtype.kind in "iub":
        fill = pick([0, 1, 2, 3]) if dtype.kind != "i" else pick([0, 1, -1, 2, 2**40])
        if dtype.itemsize == 1 and dtype.kind != "b":
            fill = min(abs(fill), 3)
    elif abs(fill) == 1e300 and dtype != np.float64:
        fill = np.inf  # 1e300 does not fit: spell the overflow ourselves, without a cast warning
    array = np.full(shape, fill, dtype=dtype)
    # Sometimes a non-contiguous view of the same values.
    if array.ndim >= 1 and pick([False, False, True]):
        array = np.asfortranarray(array) if array.ndim >= 2 else np.repeat(array, 2)[::2]
    return array


def junk_float(pick):
    return pick([1.0, 0.0, -2.5, np.nan, np.inf, 3, None, "x", 1j, np.float32(0.5)])


def junk_bool(pick):
    return pick([True, False, 0, 1, None, "yes", np.bool_(True), np.array([True, False])])


# name -> (callable, list of argument kinds); "array:N" is an array with N dimensions expected.
SIGNATURES = {
    "gemm": (
        lambda a, b, c, alpha, beta, ta, tb: F.gemm(
            a, b, c, alpha=alpha, beta=beta, trans_a=ta, trans_b=tb
        ),
        ["array:2", "array:2", "array_or_none:2", "float", "float", "bool", "bool"],
    ),
    "conv2d_forward": (F.conv2d_forward, ["array:4", "array:4", "array:1", "pair", "pair"]),
    "conv2d_backward": (F.conv2d_backward, ["array:4", "array:4", "array:4", "pair", "pair"]),
    "conv2d_max_pool2d": (
        lambda x, W, b, stride, pad, ph, pw, ps, pp, relu: F.conv2d_max_pool2d(
            x, W, b, stride, pad, pool_h=ph, pool_w=pw, pool_stride=ps, pool_pad=pp, relu=relu
        ),
        ["array:4", "array:4", "array:1", "pair", "pair", "int", "int", "pair", "pair", "bool"],
    ),
    "max_pool2d_forward": (F.max_pool2d_forward, ["array:4", "int", "int", "pair", "pair"]),
    "max_pool2d_backward": (F.max_pool2d_backward, ["array:4", "array:4", "shape"]),
    "max_pool2d": (F.max_pool2d, ["array:4", "int", "int", "pair", "pair"]),
    "max_pool2d_backward_from_input": (
        F.max_pool2d_backward_from_input,
        ["array:4", "array:4", "int", "int", "pair", "pair"],
    ),
    "avg_pool2d_forward": (F.avg_pool2d_forward, ["array:4", "int", "int", "pair", "pair"]),
    "avg_pool2d_backward": (
        F.avg_pool2d_backward,
        ["array:4", "shape", "int", "int", "pair", "pair"],
    ),
    "relu_forward": (F.relu_forward, ["array"]),
    "relu_backward": (F.relu_backward, ["array", "array"]),
    "sigmoid_forward": (F.sigmoid_forward, ["array"]),
    "sigmoid_backward": (F.sigmoid_backward, ["array", "array"]),
    "softmax": (F.softmax, ["array:2"]),
    "softmax_cross_entropy_forward": (F.softmax_cross_entropy_forward, ["array:2", "array:1"]),
    "softmax_cross_entropy_backward": (
        F.softmax_cross_entropy_backward,
        ["array:2", "array:1", "float"],
    ),
    "affine_forward": (F.affine_forward, ["array:2", "array:2", "array:1"]),
    "affine_backward": (F.affine_backward, ["array:2", "array:2", "array:2"]),
    "im2col": (util.im2col, ["array:4", "int", "int", "pair", "pair"]),
    "col2im": (util.col2im, ["array:2", "shape", "int", "int", "pair", "pair"]),
    "set_num_threads": (tinyconv.set_num_threads, ["int"]),
    "global_avg_pool2d_forward": (F.global_avg_pool2d_forward, ["array:4"]),
    "global_avg_pool2d_backward": (F.global_avg_pool2d_backward, ["array:2", "shape"]),
    "batch_norm2d_forward": (
        lambda x, g, b, rm, rv, train, momentum, eps, unbiased, relu: F.batch_norm2d_forward(
            x, g, b, rm, rv, train=train, momentum=momentum, eps=eps, unbiased=unbiased, relu=relu
        ),
        [
            "array:4",
            "array:1",
            "array:1",
            "array:1",
            "array:1",
            "bool",
            "float",
            "float",
            "bool",
            "bool",
        ],
    ),
    "batch_norm2d_backward": (
        lambda d, x, g, m, i, train, r: F.batch_norm2d_backward(
            d, x, g, m, i, train=train, relu_output=r
        ),
        ["array:4", "array:4", "array:1", "array:1", "array:1", "bool", "array_or_none:4"],
    ),
    "fold_batch_norm": (
        F.fold_batch_norm,
        ["array:4", "array_or_none:1", "array:1", "array:1", "array:1", "array:1", "float"],
    ),
    "add_forward": (
        lambda a, b, relu, out: F.add_forward(a, b, relu=relu, out=out),
        ["array", "array", "bool", "array_or_none"],
    ),
}
assert set(F.__all__) <= set(SIGNATURES), "a public function is missing from the fuzz"


def junk_argument(pick, kind: str):
    base, _, hint = kind.partition(":")
    ndim = int(hint) if hint else None
    if base == "array":
        return junk_array(pick, ndim)
    if base == "array_or_none":
        return None if pick([True, False]) else junk_array(pick, ndim)
    if base == "int":
        return junk_int(pick)
    if base == "pair":
        return junk_pair(pick)
    if base == "shape":
        return junk_shape_arg(pick)
    if base == "float":
        return junk_float(pick)
    if base == "bool":
        return junk_bool(pick)
    raise AssertionError(kind)


# ----------------------------------------------------------------------------------------------
# Plausible calls: valid arguments of odd but legal geometry (empty batches, stride larger than
# the input, windows as large as the padded input, huge strides), which reach the kernels.

VALID_DTYPES = ["float64", "float32", "float16", "int32", "bool"]
VALID_FILLS = [0.0, 1.0, -2.5, np.nan, np.inf, -np.inf]


def valid_array(pick, shape):
    dtype = np.dtype(pick(VALID_DTYPES))
    size = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "f" and pick([True, False]):
        values = np.full(shape, pick(VALID_FILLS))  # special values included
    else:
        values = (np.arange(size) % 7 - 3).reshape(shape) * pick([1, -1])
    array = values.astype(dtype)
    return np.asfortranarray(array) if array.ndim >= 2 and pick([False, True]) else array


def window(pick, *, pad_below_kernel=False):
    """(N, C, H, W), (kh, kw), (sh, sw), (ph, pw) of a legal sliding window."""
    n, c, h, w = pick([0, 1, 2, 3]), pick([1, 2, 3]), pick([1, 2, 3, 5]), pick([1, 2, 4, 6])
    ph, pw = pick([0, 1, 2, 3]), pick([0, 1, 3])
    kh = pick(list(range(ph + 1 if pad_below_kernel else 1, h + 2 * ph + 1)))
    kw = pick(list(range(pw + 1 if pad_below_kernel else 1, w + 2 * pw + 1)))
    sh, sw = pick([1, 2, 3, 7, 2**40]), pick([1, 2, 5])
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw)


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def plausible_args(name, pick):
    if name == "gemm":
        m, n, k = pick([0, 1, 2, 3, 17]), pick([0, 1, 2, 5, 33]), pick([0, 1, 3, 7, 300])
        ta, tb = pick([False, True]), pick([False, True])
        a = valid_array(pick, (k, m) if ta else (m, k))
        b = valid_array(pick, (n, k) if tb else (k, n))
        c = pick([None, "c"]) and valid_array(pick, (m, n))
        beta = 0.0 if c is None else pick([0.0, 1.0, -0.5])
        return [a, b, c, pick([1.0, 0.0, -2.0]), beta, ta, tb]
    if name in ("relu_forward", "sigmoid_forward"):
        return [valid_array(pick, tuple(pick([0, 1, 2, 3]) for _ in range(pick([0, 1, 2, 3, 4]))))]
    if name in ("relu_backward", "sigmoid_backward"):
        shape = tuple(pick([0, 1, 2, 3]) for _ in range(pick([0, 1, 2, 3])))
        return [valid_array(pick, shape), valid_array(pick, shape)]
    if name == "softmax":
        return [valid_array(pick, pick([(pick([1, 4]),), (pick([0, 1, 3]), pick([1, 2, 5]))]))]
    if name in ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"):
        n, k = pick([1, 2, 5]), pick([1, 2, 7])
        t = pick([np.arange(n) % k, np.eye(k)[np.arange(n) % k], np.full((n, k), 1.0 / k)])
        first = valid_array(pick, (n, k))
        return [first, t] if name.endswith("forward") else [first, t, pick([1.0, 0.5, -3.0])]
    if name in ("affine_forward", "affine_backward"):
        n, features, m = pick([0, 1, 3]), pick([(2,), (0,), (2, 3), (1, 2, 2)]), pick([1, 4])
        d = int(np.prod(features))
        x, W = valid_array(pick, (n, *features)), valid_array(pick, (d, m))
        return (
            [x, W, valid_array(pick, (m,))]
            if name == "affine_forward"
            else [valid_array(pick, (n, m)), x, W]
        )
    if name == "set_num_threads":
        return [pick([1, 2, 3])]
    if name == "add_forward":
        shape = tuple(pick([0, 1, 2, 3]) for _ in range(pick([0, 1, 2, 3, 4])))
        a, b = valid_array(pick, shape), valid_array(pick, shape)
        out = pick([None, "a", "new"])
        out = a if out == "a" else (valid_array(pick, shape) if out == "new" else None)
        return [a, b, pick([False, True]), out]
    if name in (
        "global_avg_pool2d_forward",
        "global_avg_pool2d_backward",
        "batch_norm2d_forward",
        "batch_norm2d_backward",
        "fold_batch_norm",
    ):
        n, c, h, w = pick([0, 1, 2, 3]), pick([1, 2, 3]), pick([1, 2, 5]), pick([1, 3, 4])
        vector = lambda: valid_array(pick, (c,))  # noqa: E731
        if name == "global_avg_pool2d_forward":
            return [valid_array(pick, (n, c, h, w))]
        if name == "global_avg_pool2d_backward":
            return [valid_array(pick, (n, c)), (n, c, h, w)]
        if name == "batch_norm2d_forward":
            return [
                valid_array(pick, (n, c, h, w)),
                vector(),
                vector(),
                vector(),
                vector(),
                pick([True, False]),
                pick([0.9, 0.0, 1.0, 0.1]),
                pick([1e-5, 1.0, 1e-300, 1e300]),
                pick([False, True]),
                pick([False, True]),
            ]
        if name == "batch_norm2d_backward":
            relu_output = pick([None, "given"]) and valid_array(pick, (n, c, h, w))
            return [
                valid_array(pick, (n, c, h, w)),
                valid_array(pick, (n, c, h, w)),
                vector(),
                vector(),
                vector(),
                pick([True, False]),
                relu_output,
            ]
        b = pick([None, "given"]) and vector()
        return [
            valid_array(pick, (c, pick([1, 2]), h, w)),
            b,
            vector(),
            vector(),
            vector(),
            vector(),
            pick([1e-5, 1.0, 1e-300, 1e300]),
        ]

    (n, c, h, w), (kh, kw), (sh, sw), (ph, pw) = window(
        pick, pad_below_kernel=name.startswith("max_pool")
    )
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    stride = sh if sh == sw and pick([True, False]) else (sh, sw)
    pad = ph if ph == pw and pick([True, False]) else (ph, pw)
    if name in ("conv2d_forward", "conv2d_backward", "conv2d_max_pool2d"):
        fn = pick([1, 2])
        x, W = valid_array(pick, (n, c, h, w)), valid_array(pick, (fn, c, kh, kw))
        if name == "conv2d_forward":
            return [x, W, valid_array(pick, (fn,)), stride, pad]
        if name == "conv2d_max_pool2d":  # a pooling window over the (oh, ow) output
            pool_pad = pick([0, 1])
            pool_h = pick(list(range(min(pool_pad, oh - 1) + 1, oh + 2 * pool_pad + 1)))
            pool_w = pick(list(range(min(pool_pad, ow - 1) + 1, ow + 2 * pool_pad + 1)))
            pool_stride = (pick([1, 2, 3, 2**40]), pick([1, 2]))
            return [
                x,
                W,
                valid_array(pick, (fn,)),
                stride,
                pad,
                pool_h,
                pool_w,
                pool_stride,
                pool_pad,
                pick([False, True]),
            ]
        return [valid_array(pick, (n, fn, oh, ow)), x, W, stride, pad]
    n = max(n, 1)  # an input_shape needs N >= 1
    if name in ("max_pool2d_forward", "max_pool2d", "avg_pool2d_forward", "im2col"):
        return [valid_array(pick, (n, c, h, w)), kh, kw, stride, pad]
    if name == "max_pool2d_backward_from_input":
        return [
            valid_array(pick, (n, c, oh, ow)),
            valid_array(pick, (n, c, h, w)),
            kh,
            kw,
            stride,
            pad,
        ]
    if name == "max_pool2d_backward":
        argmax = (np.arange(n * c * oh * ow) % (h * w)).reshape(n, c, oh, ow)
        return [valid_array(pick, (n, c, oh, ow)), argmax, (n, c, h, w)]
    if name == "avg_pool2d_backward":
        return [valid_array(pick, (n, c, oh, ow)), (n, c, h, w), kh, kw, stride, pad]
    if name == "col2im":
        return [valid_array(pick, (n * oh * ow, c * kh * kw)), (n, c, h, w), kh, kw, stride, pad]
    raise AssertionError(name)


def junk_call(pick):
    """(name, function, args) for one random call: all junk, a plausible call, or a plausible call
    with one argument replaced by junk."""
    name = pick(sorted(SIGNATURES))
    function, kinds = SIGNATURES[name]
    style = pick(["junk", "plausible", "one_junk_argument", "one_junk_argument"])
    if style == "junk":
        return name, function, [junk_argument(pick, kind) for kind in kinds]
    args = plausible_args(name, pick)
    if style == "one_junk_argument":
        i = pick(list(range(len(args))))
        args[i] = junk_argument(pick, kinds[i])
    return name, function, args


def call_and_classify(function, args):
    """Calls ``function(*args)``; returns None on success or on an allowed error, and re-raises
    anything else. Restores the thread count, which ``set_num_threads`` junk may change."""
    threads = tinyconv.get_num_threads()
    try:
        function(*args)
    except ALLOWED_ERRORS:
        pass
    finally:
        tinyconv.set_num_threads(threads)


def numpy_picker(rng: np.random.Generator):
    return lambda options: options[int(rng.integers(len(options)))]


def run_fuzz(seed: int, iterations: int) -> list[str]:
    """The subprocess driver: ``iterations`` junk calls. Returns one line per distinct disallowed
    outcome (function and exception type) and keeps going after one, so that a later crash is
    still reached. A crash of the interpreter itself ends the process: the parent sees that."""
    pick = numpy_picker(np.random.default_rng(seed))
    problems: dict[tuple[str, str], str] = {}
    for i in range(iterations):
        name, function, args = junk_call(pick)
        try:
            call_and_classify(function, args)
        except Exception as exc:  # anything but ValueError/TypeError/MemoryError, warnings included
            key = (name, type(exc).__name__)
            problems.setdefault(
                key, f"call #{i}: {name}{tuple(args)!r} raised {type(exc).__name__}: {exc}"
            )
    return list(problems.values())
