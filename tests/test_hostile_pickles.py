"""Parameter and checkpoint pickles from strangers: the restricted unpickler builds data only.

Each crafted file below is one an attacker could send. On fae188c (Python's Unpickler with an
allow-list of callables) several of them read heap memory into weights, forged object pointers or
overflowed the C stack; here each must be refused with ParamsFileError (or its subclass
UnsafePickleError) and change nothing. The ones that crashed the interpreter run in a child
process, so that a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyconv import serialization
from tinyconv._unpickle import MAX_DEPTH, RestrictedUnpickler
from tinyconv.nets import SimpleConvNet
from tinyconv.serialization import (
    ALLOWED_GLOBALS,
    ParamsFileError,
    UnsafePickleError,
    read_params,
    safe_pickle_loads,
)

SMALL_ARCH = {
    "input_dim": (1, 8, 8),
    "conv_param": {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
    "hidden_size": 4,
    "output_size": 3,
}


# ----------------------------------------------------------------------------------------------
# A few opcodes, to write pickles by hand as an attacker would


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_bytes(raw: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(raw)) + raw


def op_int(value: int) -> bytes:
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_call(func: bytes, *args: bytes) -> bytes:
    return func + op_tuple(*args) + b"R"


def op_dtype(typestr: str) -> bytes:
    return op_call(op_global("numpy", "dtype"), op_str(typestr), b"\x89", b"\x88")


def as_params(value: bytes, key: str = "W1") -> bytes:
    """A protocol-2 pickle of ``{key: value}``."""
    return b"\x80\x02}" + op_str(key) + value + b"s."


def ndarray_call(shape, typestr, raw, offset) -> bytes:
    """``numpy.ndarray(shape, dtype, buffer, offset)`` called by the file itself."""
    return op_call(
        op_global("numpy", "ndarray"),
        op_tuple(*[op_int(n) for n in shape]),
        op_dtype(typestr),
        op_bytes(raw),
        op_int(offset),
    )


def reconstructed_array(shape, typestr, raw, version=True) -> bytes:
    """NumPy's own form: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD with the state."""
    state_items = [op_tuple(*[op_int(n) for n in shape]), op_dtype(typestr), b"\x89", op_bytes(raw)]
    if version:
        state_items.insert(0, op_int(1))
    return (
        op_call(
            op_global("numpy._core.multiarray", "_reconstruct"),
            op_global("numpy", "ndarray"),
            op_tuple(op_int(0)),
            op_bytes(b"b"),
        )
        + op_tuple(*state_items)
        + b"b"
    )


def deep_tuple_key(depth: int) -> bytes:
    return b"\x80\x02})" + b"\x85" * depth + b"K\x01s."


# ----------------------------------------------------------------------------------------------
# Defect 1: arrays only from their own bytes, numeric dtypes only


@pytest.mark.parametrize("offset", [-64, -(2**40), 2**40, 8])
def test_ndarray_called_with_a_buffer_offset_is_refused(offset):
    payload = as_params(ndarray_call((4,), "f8", b"\x00" * 32, offset))
    with pytest.raises(UnsafePickleError, match=r"numpy.ndarray"):
        safe_pickle_loads(payload)


@pytest.mark.parametrize("typestr", ["O8", "O", "U8", "S4", "V8", "M8", "c16", "f16", "i16"])
def test_non_numeric_dtypes_are_refused_in_every_array_form(typestr):
    raw = b"\x41" * 16
    for payload in (
        as_params(reconstructed_array((2,), typestr, raw)),
        as_params(
            op_call(
                op_global("numpy._core.numeric", "_frombuffer"),
                op_bytes(raw),
                op_dtype(typestr),
                op_tuple(op_int(2)),
                op_str("C"),
            )
        ),
        as_params(
            op_call(
                op_global("numpy.core.multiarray", "scalar"), op_dtype(typestr), op_bytes(raw[:8])
            )
        ),
    ):
        with pytest.raises(ParamsFileError, match="dtype"):
            safe_pickle_loads(payload)


@pytest.mark.parametrize(
    "typestr", ["a1", "f8,i4", "2i", "(2,)f8", "f8, (2,3)i4", "1:", "i4(", "O8" * 50, "\x00"]
)
def test_dtype_strings_numpy_would_parse_are_refused_without_parsing_them(typestr):
    # Found by the fuzzer: naming such a string in the error message called np.dtype on it, and
    # NumPy parses comma strings with ast.literal_eval (a SyntaxError escaped the loader).
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_pickle_loads(as_params(reconstructed_array((1,), typestr, b"\x00" * 8)))


@pytest.mark.parametrize(
    ("shape", "nbytes"),
    [((3,), 16), ((3,), 32), ((2, 2), 8), ((2**62, 2**62), 16), ((-1,), 8), ((True,), 8)],
)
def test_array_shape_must_match_the_bytes_present(shape, nbytes):
    payload = as_params(reconstructed_array(shape, "f8", b"\x00" * nbytes))
    with pytest.raises(ParamsFileError):
        safe_pickle_loads(payload)


def test_announced_lengths_beyond_the_file_are_truncation_not_allocation():
    for opcode, size in (
        (b"\x8e", struct.pack("<Q", 2**62)),
        (b"\x96", struct.pack("<Q", 2**62)),
        (b"B", struct.pack("<I", 2**31)),
        (b"X", struct.pack("<I", 2**32 - 1)),
        (b"\x95", struct.pack("<Q", 2**63)),
    ):
        with pytest.raises(ParamsFileError, match="truncated"):
            safe_pickle_loads(b"\x80\x04" + opcode + size + b"abc")


def test_crafted_dtype_states_are_refused():
    # Object fields, sub-arrays and names in a dtype state: NumPy's __setstate__ raised
    # SystemError on some of these. Only (version, byte order, None, None, None, ints...) is data.
    states = [
        op_tuple(
            op_int(3),
            op_str("<"),
            b"N",
            op_tuple(op_str("a")),
            b"N",
            op_int(-1),
            op_int(-1),
            op_int(0),
        ),
        op_tuple(
            op_int(3),
            op_str("<"),
            op_tuple(op_dtype("f8"), op_tuple(op_int(2))),
            b"N",
            b"N",
            op_int(-1),
            op_int(-1),
            op_int(0),
        ),
        op_tuple(op_int(3), op_str("<"), b"N", b"N", b"}", op_int(-1), op_int(-1), op_int(0)),
        op_tuple(op_int(3), op_str("?"), b"N", b"N", b"N", op_int(-1), op_int(-1), op_int(0)),
        op_tuple(op_int(3), op_str("<"), b"N", b"N", b"N", op_int(-1), op_int(-1), op_str("x")),
        op_str("not a tuple"),
    ]
    for state in states:
        with pytest.raises(ParamsFileError):
            safe_pickle_loads(as_params(op_dtype("f8") + state + b"b"))


def test_loaded_arrays_own_a_copy_of_exactly_their_bytes():
    value = np.arange(12, dtype=">f4").reshape(3, 4)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        blob = pickle.dumps({"W": value, "F": np.asfortranarray(value)}, protocol=protocol)
        loaded = safe_pickle_loads(blob)
        for key in ("W", "F"):
            got = loaded[key]
            assert got.dtype == value.dtype
            assert got.shape == value.shape
            np.testing.assert_array_equal(got, value)
            assert got.flags.writeable
            owner = got if got.base is None else got.base
            assert owner.base is None and owner.flags.owndata, (
                "array is a view of memory it does not own"
            )
        assert loaded["F"].flags.f_contiguous


# ----------------------------------------------------------------------------------------------
# Defect 2: nesting and object counts are bounded


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 200_000])
def test_deeply_nested_tuple_key_is_refused(depth):
    with pytest.raises(ParamsFileError, match="nests deeper"):
        safe_pickle_loads(deep_tuple_key(depth))


@pytest.mark.parametrize(("open_op", "close_op"), [(b"]", b"a"), (b"}", None)])
def test_deeply_nested_containers_are_refused(open_op, close_op):
    depth = 100_000
    if close_op is None:  # dicts nested through SETITEM: {'k': {'k': ...}}
        payload = b"\x80\x02" + (b"}" + op_str("k")) * depth + b"}" + b"s" * depth + b"."
    else:
        payload = b"\x80\x02" + open_op * depth + close_op * (depth - 1) + b"."
    with pytest.raises(ParamsFileError, match="nests deeper"):
        safe_pickle_loads(payload)


def test_shallow_nesting_within_the_limit_loads():
    value: object = 1
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert safe_pickle_loads(pickle.dumps(value, protocol=2)) == value


def test_self_referential_containers_are_refused():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(ParamsFileError, match="contains itself"):
        safe_pickle_loads(pickle.dumps(cyclic, protocol=4))
    d: dict = {}
    d["me"] = [d]
    with pytest.raises(ParamsFileError, match="contains itself"):
        safe_pickle_loads(pickle.dumps(d, protocol=2))


def test_shared_references_stay_shared():
    shared = np.ones(3)
    inner = [1, 2]
    loaded = safe_pickle_loads(
        pickle.dumps({"a": shared, "b": shared, "c": (inner, inner)}, protocol=4)
    )
    assert loaded["a"] is loaded["b"]
    assert loaded["c"][0] is loaded["c"][1]


def test_object_count_is_bounded():
    payload = b"\x80\x02]" + b"(" + b"N" * 5000 + b"e."
    assert len(safe_pickle_loads(payload)) == 5000
    with pytest.raises(ParamsFileError, match="more than 1000 objects"):
        RestrictedUnpickler(io.BytesIO(payload), max_objects=1000).load()


# ----------------------------------------------------------------------------------------------
# The allow-list is pinned; risky names and opcodes are refused


def test_the_allowed_globals_are_exactly_these():
    numpy_paths = {
        (f"{base}.multiarray", name)
        for base in ("numpy.core", "numpy._core")
        for name in ("_reconstruct", "scalar")
    }
    numpy_paths |= {(f"{base}.numeric", "_frombuffer") for base in ("numpy.core", "numpy._core")}
    assert (
        frozenset(
            numpy_paths
            | {
                ("numpy", "ndarray"),
                ("numpy", "dtype"),
                ("collections", "OrderedDict"),
                ("_codecs", "encode"),
                ("__builtin__", "bytes"),
                ("builtins", "bytes"),
            }
        )
        == ALLOWED_GLOBALS
    )


RISKY = [
    ("builtins", name)
    for name in (
        "getattr",
        "setattr",
        "delattr",
        "__import__",
        "globals",
        "locals",
        "vars",
        "eval",
        "exec",
        "compile",
        "open",
        "input",
        "breakpoint",
        "print",
        "type",
        "object",
        "dict",
        "list",
        "set",
        "bytearray",
        "memoryview",
        "frozenset",
    )
]
RISKY += [
    ("__builtin__", "eval"),
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "Popen"),
    ("numpy", "load"),
    ("numpy", "fromfile"),
    ("numpy", "frombuffer"),
    ("numpy.lib.format", "read_array"),
    ("numpy.core.multiarray", "fromstring"),
    ("numpy._core.multiarray", "_reconstruct_"),
    ("collections", "defaultdict"),
    ("functools", "partial"),
    ("operator", "attrgetter"),
    ("operator", "getitem"),
    ("codecs", "encode"),
    ("_codecs", "decode"),
    ("pickle", "loads"),
    ("copyreg", "_reconstructor"),
    ("tinyconv.serialization", "read_params"),
]


@pytest.mark.parametrize(("module", "name"), RISKY)
def test_risky_globals_are_refused(module, name, tmp_path):
    marker = tmp_path / "ran"
    for payload in (
        op_global(module, name) + b".",
        b"\x80\x04"
        + b"\x8c"
        + bytes([len(module)])
        + module.encode()
        + b"\x8c"
        + bytes([len(name)])
        + name.encode()
        + b"\x93"
        + b".",
    ):
        with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
            safe_pickle_loads(payload)
    assert not marker.exists()


def test_a_getattr_gadget_chain_is_refused_and_runs_nothing(tmp_path):
    # getattr(getattr(getattr(_codecs.encode, '__globals__'), 'get')('os'), 'system')('touch ...'):
    # on fae188c _codecs.encode resolved to a tinyconv function whose globals hold `os`, so adding
    # builtins.getattr to the allow-list would have been enough to run a shell.
    marker = tmp_path / "pwned"
    getattr_ = op_global("builtins", "getattr")
    globals_ = op_call(getattr_, op_global("_codecs", "encode"), op_str("__globals__"))
    os_module = op_call(op_call(getattr_, globals_, op_str("get")), op_str("os"))
    system = op_call(getattr_, os_module, op_str("system"))
    payload = b"\x80\x02" + op_call(system, op_str(f"touch {marker}")) + b"."
    with pytest.raises(UnsafePickleError):
        safe_pickle_loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("INST", b"(ios\nsystem\nS'true'\n."),
        ("OBJ", b"(cos\nsystem\nS'true'\no."),
        ("NEWOBJ", b"\x80\x02ccollections\nOrderedDict\n)\x81."),
        ("EXT1", b"\x80\x02\x82\x01."),
        ("PERSID", b"P1\n."),
        ("BINPERSID", b"\x80\x02K\x01Q."),
        ("EMPTY_SET", b"\x80\x04\x8f."),
        ("FROZENSET", b"\x80\x04(\x91."),
        ("NEXT_BUFFER", b"\x80\x05\x97."),
    ],
)
def test_opcodes_that_build_objects_are_refused(name, payload):
    with pytest.raises(ParamsFileError):
        safe_pickle_loads(payload)


@pytest.mark.parametrize(
    "payload",
    [
        # reconstruct with a class other than ndarray (np.matrix, a subclass that runs code)
        op_call(
            op_global("numpy._core.multiarray", "_reconstruct"),
            op_global("numpy", "dtype"),
            op_tuple(op_int(0)),
            op_bytes(b"b"),
        ),
        # BUILD on something that is not an array or dtype placeholder
        b"]" + b"}" + b"b",
        # BUILD on an array twice
        reconstructed_array((1,), "f8", b"\x00" * 8)
        + op_tuple(op_int(1), op_tuple(op_int(1)), op_dtype("f8"), b"\x89", op_bytes(b"\x00" * 8))
        + b"b",
        # calling something that is not a global
        op_call(op_str("eval"), op_str("1")),
        # _codecs.encode with another codec
        op_call(op_global("_codecs", "encode"), op_str("x"), op_str("rot13")),
        # the ndarray class itself as a value
        op_global("numpy", "ndarray"),
        # bytes() only ever builds empty bytes
        op_call(op_global("builtins", "bytes"), op_int(2**40)),
        op_call(op_global("__builtin__", "bytes"), op_str("abc"), op_str("utf-8")),
    ],
)
def test_misused_allowed_globals_are_refused(payload):
    with pytest.raises(ParamsFileError):
        safe_pickle_loads(as_params(payload))


# ----------------------------------------------------------------------------------------------
# Everything legitimate still loads, in every protocol


def _arrays():
    return st.builds(
        lambda dtype, shape, seed, fortran: _make_array(dtype, shape, seed, fortran),
        st.sampled_from(
            [
                "<f8",
                ">f8",
                "<f4",
                ">f4",
                "f2",
                "<i8",
                ">i4",
                "i2",
                "i1",
                "<u8",
                ">u4",
                "u2",
                "u1",
                "?",
            ]
        ),
        st.lists(st.integers(0, 4), max_size=4).map(tuple),
        st.integers(0, 2**31),
        st.booleans(),
    )


def _make_array(dtype, shape, seed, fortran):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape) * 100
    array = values.astype(dtype) if np.dtype(dtype).kind != "b" else values > 0
    return np.asfortranarray(array) if fortran else array


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**200), 2**200),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from([np.float64(1.5), np.float32(-2), np.int64(7), np.uint8(3), np.bool_(True)]),
)
_keys = st.one_of(
    st.text(max_size=6), st.integers(-5, 5), st.tuples(st.text(max_size=3), st.integers(0, 3))
)
_values = st.recursive(
    st.one_of(_scalars, _arrays()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_keys, inner, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=3).map(OrderedDict),
    ),
    max_leaves=12,
)


def _assert_same(got, want, where="root"):
    assert type(got) is type(want), f"{where}: {type(got).__name__} vs {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert got.tobytes(order="A") == want.tobytes(order="A"), where
        assert got.flags.f_contiguous == want.flags.f_contiguous, where
    elif isinstance(want, np.generic):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), where
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            _assert_same(got[key], want[key], f"{where}[{key!r}]")
    else:
        assert got == want, where


@given(value=_values, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_plain_data_round_trips_in_every_protocol(value, protocol):
    _assert_same(safe_pickle_loads(pickle.dumps(value, protocol=protocol)), value)


def test_numpy_random_states_round_trip():
    legacy = np.random.RandomState(5).get_state()
    generator = np.random.default_rng(7).bit_generator.state
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_pickle_loads(
            pickle.dumps({"legacy": legacy, "gen": generator}, protocol=protocol)
        )
        _assert_same(loaded["legacy"], legacy)
        assert loaded["gen"] == generator
        np.random.RandomState().set_state(loaded["legacy"])


def test_python2_pickles_of_arrays_load():
    # What NumPy under Python 2 wrote: the data as a latin-1 `str` (SHORT_BINSTRING / BINSTRING).
    raw = np.arange(3, dtype="<f8").tobytes()
    state = op_tuple(
        op_int(1),
        op_tuple(op_int(3)),
        op_call(op_global("numpy", "dtype"), b"U\x02f8", b"\x89", b"\x88")
        + op_tuple(op_int(3), b"U\x01<", b"N", b"N", b"N", op_int(-1), op_int(-1), op_int(0))
        + b"b",
        b"\x89",
        b"T" + struct.pack("<i", len(raw)) + raw,
    )
    array = (
        op_call(
            op_global("numpy.core.multiarray", "_reconstruct"),
            op_global("numpy", "ndarray"),
            op_tuple(op_int(0)),
            b"U\x01b",
        )
        + state
        + b"b"
    )
    loaded = safe_pickle_loads(b"\x80\x02}U\x02W1" + array + b"s.")
    np.testing.assert_array_equal(loaded["W1"], [0.0, 1.0, 2.0])


# ----------------------------------------------------------------------------------------------
# The public entry points, crash payloads in a child process


def _crash_payloads():
    """Files that crashed the interpreter or leaked memory on fae188c."""
    yield "negative offset", as_params(ndarray_call((4,), "f8", b"\x00" * 32, -(2**40)))
    yield "heap read", as_params(ndarray_call((64,), "f8", b"\x00" * 8, -4096))
    yield "object pointers", as_params(ndarray_call((2,), "O8", b"\x41" * 16, 0))
    yield "deep tuple key", deep_tuple_key(200_000)


def test_crash_payloads_are_refused_by_every_entry_point(tmp_path):
    files = []
    for i, (description, payload) in enumerate(_crash_payloads()):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(payload)
        files.append((description, str(path)))
    script = textwrap.dedent(f"""
        import numpy as np
        from tinyconv.nets import SimpleConvNet
        from tinyconv.serialization import ParamsFileError, read_params
        from tinyconv.trainer import Trainer
        net = SimpleConvNet(**{SMALL_ARCH!r}, seed=0)
        before = {{k: v.copy() for k, v in net.params.items()}}
        x = np.zeros((4, 1, 8, 8), np.float32); t = np.zeros(4, int)
        trainer = Trainer(net, x, t, x, t, epochs=1, mini_batch_size=2, verbose=False)
        for description, path in {files!r}:
            for load in (read_params, net.load_params, trainer.load_checkpoint):
                try:
                    load(path)
                except ParamsFileError as exc:
                    pass
                else:
                    raise SystemExit(f"{{description}}: {{load.__qualname__}} accepted the file")
        assert all(np.array_equal(before[k], v) for k, v in net.params.items())
        print("refused", len({files!r}) * 3)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=300
    )
    assert result.returncode == 0, (
        result.returncode,
        result.stdout.decode(),
        result.stderr.decode()[-2000:],
    )
    assert b"refused 12" in result.stdout


def test_load_params_of_a_refused_file_changes_nothing(tmp_path):
    net = SimpleConvNet(**SMALL_ARCH, seed=0)
    before = {k: v.copy() for k, v in net.params.items()}
    for i, (_, payload) in enumerate(_crash_payloads()):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(payload)
        with pytest.raises(ParamsFileError, match=f"evil{i}.pkl"):
            net.load_params(str(path))
        with pytest.raises(ParamsFileError):
            read_params(path)
    for key, value in net.params.items():
        np.testing.assert_array_equal(value, before[key])


@settings(max_examples=200)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 8))
def test_mutated_parameter_pickles_load_or_raise_params_file_error(seed, flips):
    # Random byte flips of a real file: the loader returns data or raises ParamsFileError, and
    # nothing else (no SystemError, no MemoryError from a huge announced size, no crash).
    rng = np.random.default_rng(seed)
    protocol = int(rng.integers(0, pickle.HIGHEST_PROTOCOL + 1))
    blob = bytearray(
        pickle.dumps(
            {"W1": np.arange(6.0).reshape(2, 3), "b": np.float32(2), "n": [1, (2, "x")]},
            protocol=protocol,
        )
    )
    for _ in range(flips):
        blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
    with contextlib.suppress(ParamsFileError):
        serialization._check_arrays(safe_pickle_loads(bytes(blob)), "mutated")


# ----------------------------------------------------------------------------------------------
# NPZ archives: no zip bombs


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    import zipfile

    # A 64 MiB bomb against a 1 MiB floor stands for a 2 GiB one against the real 256 MiB floor.
    monkeypatch.setattr(serialization, "NPZ_MIN_EXPANSION_BYTES", 2**20)
    path = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (2**23,)  # 64 MiB of float64 zeros, 64 KiB compressed
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("W1.npy", "w", force_zip64=True) as member,
    ):
        member.write(buffer.getvalue())
        chunk = bytes(2**24)
        for _ in range(2**26 // len(chunk)):
            member.write(chunk)
    assert path.stat().st_size < 2**20 // 8
    with pytest.raises(ParamsFileError, match="zip bomb"):
        read_params(path)


def test_compressed_npz_of_real_parameters_loads(tmp_path):
    path = tmp_path / "p.npz"
    params = {"W1": np.random.default_rng(0).standard_normal((64, 64)), "b1": np.zeros(64)}
    np.savez_compressed(path, **params)
    loaded = read_params(path)
    for key, value in params.items():
        np.testing.assert_array_equal(loaded[key], value)
