"""The private module ``tinyconv._core`` is as safe as the public one: every entry point checks
every argument in the binding, before any memory is touched, and a wrong one is a TypeError or
ValueError whose message names it. (fae188c reinterpreted a str or a list passed as an optional
array, e.g. ``gemm``'s ``c`` or ``relu_forward``'s ``out``, as an ndarray: a segfault.)

The table below lists every function of ``_core`` and ``_core.reference`` with one valid call and
the kind of each argument. Each case replaces exactly one argument of the valid call with junk of
that kind's opposite (not an array, the wrong dtype, byte order, layout or number of dimensions, a
read-only output, an int too large for 64 bits, a float too large for a double, a bool where an
int goes, ...). The cases run in a child interpreter, so that a segfault is a failed test that
names the case, not a dead test run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyconv import _core


def f64(*shape):
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 5 - 2


def i64(*shape):
    return np.zeros(shape, dtype=np.int64)


# name -> (valid arguments, kind of each). Kinds: "array" (an input of fixed ndim), "any_shape"
# (an elementwise input: a 0-d array is valid there), "out" (an optional output, written to),
# "optional" (an optional input), "inplace" (updated in place), "int64" (indices), "labels",
# "index", "real", "bool", "str".
def table():
    x, W, b = f64(1, 1, 4, 4), f64(1, 1, 3, 3), f64(1)
    dout = f64(1, 1, 2, 2)
    conv = [x, W, b, 1, 1, 0, 0, False]
    conv_kinds = ["array", "array", "array", "index", "index", "index", "index", "bool"]
    convb = [dout, x, W, 1, 1, 0, 0, True]
    convb_kinds = ["array", "array", "array", "index", "index", "index", "index", "bool"]
    window = ["index"] * 6
    entries = {
        "gemm": (
            [f64(2, 3), f64(3, 4), f64(2, 4), 1.0, 1.0, False, False],
            ["array", "array", "optional", "real", "real", "bool", "bool"],
        ),
        "im2col": ([x, 3, 3, 1, 1, 0, 0], ["array", *window]),
        "col2im": ([f64(4, 9), 1, 1, 4, 4, 3, 3, 1, 1, 0, 0], ["array"] + ["index"] * 10),
        "conv2d_forward": (conv, conv_kinds),
        "conv2d_backward": (convb, convb_kinds),
        "conv2d_max_pool_forward": (
            [*conv[:7], True, 2, 2, 2, 2, 0, 0],
            [*conv_kinds[:7], "bool", *window],
        ),
        "max_pool2d_forward": ([x, 2, 2, 2, 2, 0, 0, True], ["array", *window, "bool"]),
        "max_pool2d_backward_from_input": (
            [dout, x, 2, 2, 2, 2, 0, 0, False],
            ["array", "array", *window, "bool"],
        ),
        "max_pool2d_backward": (
            [dout, i64(1, 1, 2, 2), 1, 1, 4, 4, x],
            ["array", "int64", "index", "index", "index", "index", "optional"],
        ),
        "avg_pool2d_forward": ([x, 2, 2, 2, 2, 0, 0], ["array", *window]),
        "avg_pool2d_backward": ([dout, 1, 1, 4, 4, 2, 2, 2, 2, 0, 0], ["array"] + ["index"] * 10),
        "relu_forward": ([f64(2, 3), f64(2, 3)], ["any_shape", "out"]),
        "relu_backward": ([f64(2, 3), f64(2, 3), f64(2, 3)], ["any_shape", "any_shape", "out"]),
        "sigmoid_forward": ([f64(2, 3)], ["any_shape"]),
        "sigmoid_backward": ([f64(2, 3), f64(2, 3), f64(2, 3)], ["any_shape", "any_shape", "out"]),
        "softmax_forward": ([f64(2, 3)], ["array"]),
        "softmax_cross_entropy_forward": ([f64(2, 3), i64(2)], ["array", "labels"]),
        "softmax_cross_entropy_backward": ([f64(2, 3), i64(2), 1.0], ["array", "labels", "real"]),
        "affine_forward": ([f64(2, 3), f64(3, 4), f64(4)], ["array", "array", "array"]),
        "affine_backward": (
            [f64(2, 4), f64(2, 3), f64(3, 4), True],
            ["array", "array", "array", "bool"],
        ),
        "sgd_update": ([f64(3), f64(3), 0.1], ["inplace", "array", "real"]),
        "momentum_update": (
            [f64(3), f64(3), f64(3), 0.1, 0.9, False],
            ["inplace", "inplace", "array", "real", "real", "bool"],
        ),
        "adaptive_update": (
            [f64(3), f64(3), f64(3), 0.1, True, 0.99, 1e-7],
            ["inplace", "inplace", "array", "real", "bool", "real", "real"],
        ),
        "adam_update": (
            [f64(3), f64(3), f64(3), f64(3), 0.1, 0.9, 0.999, 1e-7],
            ["inplace", "inplace", "inplace", "array", "real", "real", "real", "real"],
        ),
        "find_nonfinite": ([f64(3), False], ["any_shape", "bool"]),
        "add_forward": (
            [f64(2, 3), f64(2, 3), True, f64(2, 3)],
            ["any_shape", "any_shape", "bool", "out"],
        ),
        "global_avg_pool2d_forward": ([x], ["array"]),
        "global_avg_pool2d_backward": ([f64(2, 3), 2, 3, 4, 4], ["array"] + ["index"] * 4),
        "batch_norm2d_forward": (
            [f64(2, 3, 2, 2), f64(3), f64(3), f64(3), f64(3) + 3, True, 0.9, 1e-5, True, True],
            [
                "array",
                "array",
                "array",
                "inplace",
                "inplace",
                "bool",
                "real",
                "real",
                "bool",
                "bool",
            ],
        ),
        "batch_norm2d_backward": (
            [f64(2, 3, 2, 2), f64(2, 3, 2, 2), f64(3), f64(3), f64(3), True, f64(2, 3, 2, 2)],
            ["array", "array", "array", "array", "array", "bool", "optional"],
        ),
        "set_num_threads": ([_core.get_num_threads()], ["index"]),
        "set_isa": ([_core.config()["isa"]], ["str"]),
    }
    for name in (
        "gemm",
        "im2col",
        "col2im",
        "conv2d_forward",
        "conv2d_backward",
        "conv2d_max_pool_forward",
        "max_pool2d_forward",
        "avg_pool2d_forward",
        "find_nonfinite",
        "global_avg_pool2d_forward",
        "batch_norm2d_forward",
        "batch_norm2d_backward",
    ):
        entries[f"reference.{name}"] = entries[name]
    return entries


def unaligned_f64(shape):
    """A C-contiguous float64 array whose data starts one byte past an 8-byte boundary."""
    size = int(np.prod(shape))
    raw = np.zeros(size * 8 + 1, dtype=np.uint8)
    return np.frombuffer(raw.data, dtype=np.float64, count=size, offset=1).reshape(shape)


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def non_contiguous(a):
    """A strided view with a's values, or None where every such view is C-contiguous (no
    dimension longer than 1: NumPy calls any stride of a length-1 dimension contiguous)."""
    if a.ndim == 0:
        return None
    view = np.repeat(a, 2, axis=a.ndim - 1)[..., ::2]
    return None if view.flags.c_contiguous else view


NOT_ARRAYS = [
    ("None", None),
    ("str", "abc"),
    ("list", [1.0, 2.0]),
    ("int", 3),
    ("float", 2.5),
    ("object", object()),
    ("bytes", b"\x00" * 64),
]


def array_junk(valid: np.ndarray, kind: str):
    """(id, junk) pairs for an array argument whose valid value is ``valid``."""
    cases = [(i, v) for i, v in NOT_ARRAYS if not (kind in ("optional", "out") and v is None)]
    if kind != "any_shape":
        cases.append(("0-d", np.array(1.0)))
    if kind in ("int64", "labels"):
        cases += [
            ("float64", valid.astype(np.float64)),
            ("int32", valid.astype(np.int32)),
            ("uint64", valid.astype(np.uint64)),
            ("big-endian", valid.astype(">i8")),
        ]
        if kind == "int64":
            cases += [("non-contiguous", non_contiguous(valid)), ("bool", valid.astype(bool))]
        return cases
    cases += [
        ("int32", valid.astype(np.int32)),
        ("int64", valid.astype(np.int64)),
        ("bool", valid.astype(bool)),
        ("float16", valid.astype(np.float16)),
        ("complex", valid.astype(complex)),
        ("object", valid.astype(object)),
        ("str-array", valid.astype("U3")),
        ("big-endian", valid.astype(">f8")),
        ("unaligned", unaligned_f64(valid.shape)),
    ]
    if valid.ndim >= 1:
        cases.append(("non-contiguous", non_contiguous(valid)))
    if valid.ndim >= 2:
        cases.append(("fortran", np.asfortranarray(valid)))
    if kind in ("out", "inplace"):
        cases.append(("read-only", read_only(valid)))
    return cases


SCALAR_JUNK = {
    "index": [
        ("None", None),
        ("str", "1"),
        ("float", 1.5),
        ("integral-float", 2.0),
        ("numpy-float", np.float64(1.0)),
        ("bool", True),
        ("numpy-bool", np.bool_(True)),
        ("complex", 1j),
        ("list", [1]),
        ("array", np.array([1, 2])),
        ("2**64", 2**64),
        ("-2**64", -(2**64)),
        ("10**400", 10**400),
    ],
    "real": [
        ("None", None),
        ("str", "1.0"),
        ("complex", 1j),
        ("numpy-complex", np.complex128(1.0)),
        ("bool", True),
        ("list", [1.0]),
        ("array", np.array([1.0, 2.0])),
        ("object", object()),
        ("10**400", 10**400),
        ("-10**400", -(10**400)),
    ],
    "bool": [
        ("None", None),
        ("int-0", 0),
        ("int-1", 1),
        ("str", "yes"),
        ("float", 1.0),
        ("array", np.array([True, False])),
    ],
    "str": [("None", None), ("int", 3), ("bytes", b"avx2")],
}


def cases_for(name):
    args, kinds = table()[name]
    for slot, kind in enumerate(kinds):
        junk = SCALAR_JUNK[kind] if kind in SCALAR_JUNK else array_junk(args[slot], kind)
        for junk_id, value in junk:
            if value is not None or junk_id == "None":
                yield slot, junk_id, value


def function(name):
    target = _core
    for part in name.split("."):
        target = getattr(target, part)
    return target


def argument_names(name):
    """The parameter names from the binding's signature line, e.g. ``gemm(a: object, ...)``."""
    first_line = function(name).__doc__.splitlines()[0]
    return re.findall(r"(\w+): ", first_line[first_line.index("(") :])


def run_cases(names, out):
    """The child: for each function, the valid call, then every junk case; one JSON line before
    each call (so a crash names it) and one after."""
    isa, threads = _core.config()["isa"], _core.get_num_threads()
    for name in names:
        args, kinds = table()[name]
        params = argument_names(name)
        for slot, junk_id, value in [(None, "valid", None), *cases_for(name)]:
            args = table()[name][0]  # fresh arrays: the valid call updates some in place
            call = list(args) if slot is None else [*args[:slot], value, *args[slot + 1 :]]
            before = [
                a.copy()
                for a, k in zip(call, kinds)
                if k == "inplace" and isinstance(a, np.ndarray)
            ]
            print(
                json.dumps(
                    {"name": name, "slot": None if slot is None else params[slot], "junk": junk_id}
                ),
                file=out,
                flush=True,
            )
            try:
                function(name)(*call)
                outcome = {"error": None}
            except Exception as exc:  # the parent decides which errors are right
                outcome = {"error": type(exc).__name__, "message": str(exc)}
            after = [a for a, k in zip(call, kinds) if k == "inplace" and isinstance(a, np.ndarray)]
            outcome["inplace_unchanged"] = all(
                p.tobytes() == q.tobytes() for p, q in zip(before, after)
            )
            print(json.dumps(outcome), file=out, flush=True)
        _core.set_isa(isa)
        _core.set_num_threads(threads)


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import test_core_bindings
test_core_bindings.run_cases(sys.argv[2:], sys.stdout)
"""


def all_names():
    return sorted(table())


@pytest.fixture(scope="module")
def outcomes():
    """{name: [(slot, junk, outcome)] or a crash report}: one child for all functions, and after a
    crash a fresh one for the functions after the one that crashed."""
    results: dict[str, object] = {}
    pending = all_names()
    while pending:
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-c", CHILD, str(Path(__file__).parent), *pending],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, OMP_NUM_THREADS="2"),
        )
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        started = None
        for line in lines:
            if "name" in line:
                started = line
            else:
                results.setdefault(started["name"], []).append(
                    (started["slot"], started["junk"], line)
                )
                started = None
        if proc.returncode == 0:
            break
        if started is None:  # died outside any case
            pytest.fail(f"the child failed (exit code {proc.returncode}):\n{proc.stderr[-3000:]}")
        how = (
            f"signal {signal.Signals(-proc.returncode).name}"
            if proc.returncode < 0
            else f"exit code {proc.returncode}"
        )
        results[started["name"]] = (
            f"{started['name']}: junk {started['junk']!r} as {started['slot']!r} killed the interpreter ({how})\n{proc.stderr[-2000:]}"
        )
        pending = pending[pending.index(started["name"]) + 1 :]
    return results


def test_the_table_covers_every_entry_point():
    public = {n for n in dir(_core) if callable(getattr(_core, n)) and not n.startswith("_")} - {
        "reference"
    }
    reference = {f"reference.{n}" for n in dir(_core.reference) if not n.startswith("_")}
    no_arguments = {"config", "get_num_threads"}
    assert public | reference == set(table()) | no_arguments
    for name, (args, kinds) in table().items():
        assert len(args) == len(kinds) == len(argument_names(name)), name


def word(name: str) -> str:
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


@pytest.mark.parametrize("name", all_names())
def test_junk_in_any_argument_is_a_clean_error_naming_it(outcomes, name):
    result = outcomes.get(name)
    assert not isinstance(result, str), result
    assert result, f"no outcome recorded for {name}"
    problems = []
    for slot, junk, outcome in result:
        if slot is None:
            if outcome["error"] is not None:
                problems.append(f"the valid call failed: {outcome}")
            continue
        if outcome["error"] not in ("TypeError", "ValueError"):
            problems.append(f"{junk} as {slot}: {outcome}")
        elif not re.search(word(slot), outcome["message"]):
            problems.append(
                f"{junk} as {slot}: the message does not name {slot!r}: {outcome['message']}"
            )
        elif not outcome["inplace_unchanged"]:
            problems.append(
                f"{junk} as {slot}: an array updated in place changed although the call failed"
            )
    assert not problems, f"{name}:\n" + "\n".join(problems)
