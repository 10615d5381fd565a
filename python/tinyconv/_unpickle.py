"""A pickle reader that can only build data: plain containers, numbers, strings and numeric NumPy
arrays. It never calls anything the file names.

Python's own ``pickle.Unpickler`` with an allow-list of globals is not enough for files from
strangers: an allowed global is *called* with arguments from the file. ``numpy.ndarray(shape,
dtype, buffer, offset)`` called that way reads memory outside the file (a negative or huge
``offset``), an object dtype over file bytes forges object pointers, ``dtype.__setstate__`` with a
crafted state raises ``SystemError``, and a dict key nested 200,000 tuples deep overflows the C
stack when it is hashed. So this module interprets the pickle opcodes itself:

* A global resolves to an inert :class:`_Global` token, never to the object it names. Only the
  names in :data:`ALLOWED_GLOBALS` resolve at all, and each token is understood only in the one
  call shape NumPy (or ``collections``/``_codecs``) emits for it.
* Arrays are built by this module from their own bytes: a numeric dtype from a fixed table, a shape
  of non-negative ints whose product times the item size equals the length of the byte string the
  file holds, and a copy of exactly those bytes. No object, string, structured or sub-array dtype.
* Nesting depth and the number of objects are bounded, a container cannot contain itself, and
  every length the file states is checked against the bytes actually present before it is used.

Every failure raises :class:`ParamsFileError` (or its subclass :class:`UnsafePickleError` when the
file asks for something this reader will never do); nothing else escapes :meth:`load`.
"""

from __future__ import annotations

import codecs
import contextlib
import pickle
import pickletools
import re
import struct
import warnings
from collections import OrderedDict
from typing import IO, Any, Callable

import numpy as np

from ._typing import Array

__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_DEPTH",
    "MAX_OBJECTS",
    "ParamsFileError",
    "RestrictedUnpickler",
    "UnsafePickleError",
]


class ParamsFileError(ValueError):
    """A parameter or checkpoint file is unreadable: truncated, corrupt, of the wrong structure, or
    not matching the network it is loaded into. The message names the file and, where one is to
    blame, the offending key and shapes."""


class UnsafePickleError(ParamsFileError, pickle.UnpicklingError):
    """A pickle asked for something a data file never needs -- a global (function or class)
    outside the allow-list, an opcode that builds arbitrary objects, an object array: it may try
    to run code or forge pointers, so it was refused before anything from it was used."""


#: Deepest nesting of containers a file may hold (a checkpoint needs 4).
MAX_DEPTH = 64
#: Most objects (values pushed by opcodes) one file may create.
MAX_OBJECTS = 10_000_000

# The (module, name) pairs a file may name, and what each one means here. Both NumPy 1 and
# NumPy 2 module paths appear in real files.
_GLOBAL_ROLES: dict[tuple[str, str], str] = {
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("collections", "OrderedDict"): "OrderedDict",
    ("_codecs", "encode"): "encode",
    # Protocols 0-2 write empty bytes (the data of an empty array) as a call bytes().
    ("__builtin__", "bytes"): "empty_bytes",
    ("builtins", "bytes"): "empty_bytes",
}
for _module in ("numpy.core", "numpy._core"):
    _GLOBAL_ROLES[(f"{_module}.multiarray", "_reconstruct")] = "reconstruct"
    _GLOBAL_ROLES[(f"{_module}.multiarray", "scalar")] = "scalar"
    _GLOBAL_ROLES[(f"{_module}.numeric", "_frombuffer")] = "frombuffer"
del _module

#: Every global a parameter or checkpoint file may name. Pinned by a test: widening it is a
#: security decision, not a convenience.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_GLOBAL_ROLES)

# Numeric dtypes an array or scalar may have: booleans, integers and floats of fixed sizes. The
# key is NumPy's pickled type string (kind + item size).
_NUMERIC_TYPESTRS = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
)
_PLAIN_TYPESTR = re.compile(r"[A-Za-z?][0-9]{0,3}")
_BYTEORDERS = frozenset({"<", ">", "|", "="})
_MAX_NDIM = 32


class _Global:
    """What a GLOBAL opcode pushes: the name of an allowed global, not the global itself."""

    __slots__ = ("qualname", "role")
    __hash__ = None  # type: ignore[assignment]  # never a dict key

    def __init__(self, role: str, qualname: str):
        self.role, self.qualname = role, qualname


class _DtypeSpec:
    """``numpy.dtype(typestr, align, copy)`` waiting for its BUILD (the byte order)."""

    __slots__ = ("byteorder", "typestr")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, typestr: str):
        self.typestr, self.byteorder = typestr, "="

    def dtype(self) -> np.dtype[Any]:
        # Spelled as one string so that native-order dtypes come back as NumPy's canonical
        # objects (pickling them again then shares one dtype, exactly like the original's).
        order = self.byteorder if self.byteorder in "<>" else ""
        return np.dtype(order + self.typestr)


class _ArraySpec:
    """``_reconstruct(ndarray, ...)`` waiting for its BUILD (shape, dtype, data)."""

    __slots__ = ("array",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.array: Array | None = None


class _Mark:
    __slots__ = ()


_MARK = _Mark()
_PLACEHOLDERS = (_Global, _DtypeSpec, _ArraySpec, _Mark)


def _describe(value: Any) -> str:
    if isinstance(value, _Global):
        return value.qualname
    text = (
        repr(value)
        if isinstance(value, (int, float, str, bytes, type(None)))
        else type(value).__name__
    )
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Bounds-checked reads from the whole pickle held in memory."""

    def __init__(self, data: bytes):
        self.raw = data
        self.data = memoryview(data)
        self.pos = 0

    def take(self, count: int) -> memoryview:
        if count < 0 or count > len(self.data) - self.pos:
            raise ParamsFileError(
                f"truncated pickle: {count} bytes announced at offset {self.pos}, "
                f"{len(self.data) - self.pos} left"
            )
        start = self.pos
        self.pos += count
        return self.data[start : self.pos]

    def byte(self) -> int:
        return self.take(1)[0]

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> bytes:
        end = self.raw.find(b"\n", self.pos)
        if end < 0:
            raise ParamsFileError(
                f"truncated pickle: unterminated text argument at offset {self.pos}"
            )
        text = bytes(self.take(end + 1 - self.pos))[:-1]
        return text[:-1] if text.endswith(b"\r") else text


class RestrictedUnpickler:
    """Reads one pickle of plain data and numeric NumPy arrays from ``file`` (see the module
    docstring for what is accepted). ``load()`` returns the object or raises
    :class:`ParamsFileError` / :class:`UnsafePickleError`.

    ``max_depth`` and ``max_objects`` bound the nesting and the number of objects a file may
    create (defaults :data:`MAX_DEPTH`, :data:`MAX_OBJECTS`).
    """

    def __init__(
        self, file: IO[bytes], *, max_depth: int = MAX_DEPTH, max_objects: int = MAX_OBJECTS
    ):
        self._file = file
        self.max_depth = int(max_depth)
        self.max_objects = int(max_objects)

    @staticmethod
    def find_class(module: str, name: str) -> _Global:
        """The token an allowed global stands for; :class:`UnsafePickleError` for any other."""
        role = _GLOBAL_ROLES.get((module, name))
        if role is None:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only NumPy arrays and plain containers "
                "may appear in a tinyconv parameter file (this pickle may try to run code)"
            )
        return _Global(role, f"{module}.{name}")

    def load(self) -> Any:
        data = self._file.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"file must be opened in binary mode, read() gave {type(data).__name__}"
            )
        try:
            return self._run(_Reader(bytes(data)))
        except ParamsFileError:
            raise
        except (
            ValueError,
            TypeError,
            OverflowError,
            UnicodeDecodeError,
            struct.error,
            RecursionError,
            MemoryError,
            KeyError,
            IndexError,
        ) as exc:
            raise ParamsFileError(f"corrupt pickle ({type(exc).__name__}: {exc})") from None

    # -- the machine ----------------------------------------------------------------------------

    def _run(self, reader: _Reader) -> Any:
        self._stack: list[Any] = []
        self._marks: list[list[Any]] = []
        self._memo: dict[int, Any] = {}
        self._tuple_depth: dict[int, int] = {}
        self._objects = 0
        while True:
            code = reader.byte()
            if code == _STOP:
                if len(self._stack) != 1 or self._marks:
                    raise ParamsFileError("corrupt pickle: STOP with an unbalanced stack")
                return self._finish(self._stack.pop())
            handler = _DISPATCH.get(code)
            if handler is None:
                name = _OPCODE_NAMES.get(code)
                if name is None:
                    raise ParamsFileError(
                        f"corrupt pickle: unknown opcode {bytes([code])!r} at offset {reader.pos - 1}"
                    )
                raise UnsafePickleError(
                    f"refusing pickle opcode {name}: it builds objects a parameter file never holds"
                )
            handler(self, reader)

    def _push(self, value: Any) -> None:
        self._objects += 1
        if self._objects > self.max_objects:
            raise ParamsFileError(f"pickle creates more than {self.max_objects} objects")
        self._stack.append(value)

    def _pop(self) -> Any:
        if not self._stack:
            raise ParamsFileError("corrupt pickle: stack underflow")
        value = self._stack.pop()
        if value is _MARK:
            raise ParamsFileError("corrupt pickle: a mark where a value was expected")
        return value

    def _top(self) -> Any:
        if not self._stack or self._stack[-1] is _MARK:
            raise ParamsFileError("corrupt pickle: stack underflow")
        return self._stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self._marks:
            raise ParamsFileError("corrupt pickle: no mark to pop to")
        items = self._stack
        self._stack = self._marks.pop()
        return items

    def _make_tuple(self, items: list[Any]) -> tuple[Any, ...]:
        # Tuples are the only containers hashed while loading (as dict keys); CPython hashes a
        # nested tuple recursively without a depth guard, so bound the depth as they are built.
        depth = 1 + max(
            (self._tuple_depth.get(id(item), 1) for item in items if isinstance(item, tuple)),
            default=0,
        )
        if depth > self.max_depth:
            raise ParamsFileError(f"pickle nests deeper than {self.max_depth} levels")
        value = tuple(items)
        self._tuple_depth[id(value)] = depth
        return value

    def _memo_get(self, index: int) -> None:
        try:
            self._push(self._memo[index])
        except KeyError:
            raise ParamsFileError(
                f"corrupt pickle: memo entry {index} read before it was written"
            ) from None

    def _memo_put(self, index: int) -> None:
        if index < 0:
            raise ParamsFileError(f"corrupt pickle: negative memo index {index}")
        self._memo[index] = self._top()

    # -- calls the file may make ----------------------------------------------------------------

    def _call(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Global):
            raise UnsafePickleError(
                f"refusing to call a {_describe(func)}: only array reconstruction may be called"
            )
        if not isinstance(args, tuple):
            raise ParamsFileError(
                f"corrupt pickle: {func.qualname} called with {_describe(args)} instead of a tuple"
            )
        role = func.role
        if role == "reconstruct":
            # NumPy's _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD then fills.
            if len(args) != 3 or not isinstance(args[0], _Global) or args[0].role != "ndarray":
                raise UnsafePickleError(
                    f"refusing {func.qualname}{_describe_args(args)}: only plain numpy.ndarray"
                )
            return _ArraySpec()
        if role == "dtype":
            if not 1 <= len(args) <= 3 or not isinstance(args[0], str):
                raise ParamsFileError(f"corrupt pickle: numpy.dtype{_describe_args(args)}")
            return _DtypeSpec(_numeric_typestr(args[0]))
        if role == "scalar":
            if len(args) != 2 or not isinstance(args[0], _DtypeSpec):
                raise UnsafePickleError(
                    f"refusing {func.qualname}{_describe_args(args)}: only numeric scalars"
                )
            dtype = args[0].dtype()
            raw = _raw_bytes(args[1], "scalar data")
            if len(raw) != dtype.itemsize:
                raise ParamsFileError(
                    f"corrupt pickle: a {dtype} scalar holds {len(raw)} bytes, not {dtype.itemsize}"
                )
            return np.frombuffer(raw, dtype=dtype)[0].copy()
        if role == "frombuffer":
            # Protocol 5: _frombuffer(buffer, dtype, shape, order).
            if len(args) != 4 or not isinstance(args[1], _DtypeSpec):
                raise UnsafePickleError(
                    f"refusing {func.qualname}{_describe_args(args)}: only numeric arrays"
                )
            if not isinstance(args[3], str) or args[3] not in ("C", "F"):
                raise ParamsFileError(f"corrupt pickle: array order {_describe(args[3])}")
            return _build_array(args[2], args[1].dtype(), args[3] == "F", args[0])
        if role == "OrderedDict":
            if args == ():
                return OrderedDict()
            if len(args) == 1 and isinstance(args[0], list):
                result: OrderedDict[Any, Any] = OrderedDict()
                for pair in args[0]:
                    if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                        raise ParamsFileError("corrupt pickle: OrderedDict items must be pairs")
                    result[_checked_key(pair[0])] = pair[1]
                return result
            raise ParamsFileError(f"corrupt pickle: collections.OrderedDict{_describe_args(args)}")
        if role == "encode":
            # Protocols 0-2 store bytes as _codecs.encode(text, 'latin1').
            if len(args) == 1:
                args = (args[0], "utf-8")
            if (
                len(args) != 2
                or not isinstance(args[0], str)
                or not isinstance(args[1], str)
                or args[1].replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591")
            ):
                raise UnsafePickleError(
                    f"refusing _codecs.encode{_describe_args(args)}: only latin-1 text"
                )
            return args[0].encode("latin1")
        if role == "empty_bytes" and args == ():
            return b""
        raise UnsafePickleError(f"refusing {func.qualname}{_describe_args(args)}")

    def _build(self, target: Any, state: Any) -> None:
        if isinstance(target, _DtypeSpec):
            # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
            if not (
                isinstance(state, tuple)
                and len(state) in (8, 9)
                and isinstance(state[1], str)
                and state[1] in _BYTEORDERS
                and state[2] is None
                and state[3] is None
                and state[4] is None
                and all(isinstance(v, int) for v in (state[0], *state[5:8]))
                and (len(state) == 8 or state[8] is None or state[8] == {})
            ):
                raise UnsafePickleError(
                    f"refusing dtype state {_describe_args(state)}: only plain numeric dtypes"
                )
            target.byteorder = state[1]
            return
        if isinstance(target, _ArraySpec):
            if target.array is not None:
                raise ParamsFileError("corrupt pickle: an array built twice")
            # (version, shape, dtype, is_fortran, data); NumPy before 1.0 omitted the version.
            if isinstance(state, tuple) and len(state) == 5 and isinstance(state[0], int):
                state = state[1:]
            if not (isinstance(state, tuple) and len(state) == 4):
                raise ParamsFileError(f"corrupt pickle: array state {_describe_args(state)}")
            shape, dtype_spec, fortran, raw = state
            if not isinstance(dtype_spec, _DtypeSpec):
                raise UnsafePickleError(f"refusing array with dtype {_describe(dtype_spec)}")
            target.array = _build_array(shape, dtype_spec.dtype(), fortran, raw)
            return
        raise UnsafePickleError(
            f"refusing to set the state of a {_describe(target)}: only arrays and dtypes"
        )

    # -- the result -------------------------------------------------------------------------------

    def _finish(self, root: Any) -> Any:
        """Replace array and dtype placeholders by the real objects, refusing cycles, depth beyond
        the limit and anything left unfinished. Shared references stay shared."""
        done: dict[int, Any] = {}
        open_ids: set[int] = set()

        def convert(value: Any, depth: int) -> Any:
            if isinstance(value, (str, bytes, int, float, type(None), np.generic)):
                return value
            if depth > self.max_depth:
                raise ParamsFileError(f"pickle nests deeper than {self.max_depth} levels")
            key = id(value)
            if key in done:
                return done[key]
            if key in open_ids:
                raise ParamsFileError("pickle holds a container that contains itself")
            if isinstance(value, _ArraySpec):
                if value.array is None:
                    raise ParamsFileError("corrupt pickle: an array without its data")
                result: Any = value.array
            elif isinstance(value, _DtypeSpec):
                result = value.dtype()
            elif isinstance(value, np.ndarray):
                result = value
            elif isinstance(value, bytearray):
                result = bytes(value)
            elif isinstance(value, (list, tuple, dict)):
                open_ids.add(key)
                if isinstance(value, list):
                    result = [convert(item, depth + 1) for item in value]
                elif isinstance(value, tuple):
                    result = tuple(convert(item, depth + 1) for item in value)
                else:
                    result = type(value)((k, convert(v, depth + 1)) for k, v in value.items())
                open_ids.discard(key)
            else:
                raise UnsafePickleError(f"refusing {_describe(value)} in a parameter file")
            done[key] = result
            return result

        return convert(root, 0)


def _describe_args(args: Any) -> str:
    if isinstance(args, tuple):
        return (
            "("
            + ", ".join(_describe(a) for a in args[:6])
            + (", ..." if len(args) > 6 else "")
            + ")"
        )
    return f"({_describe(args)})"


def _numeric_typestr(typestr: str) -> str:
    if typestr not in _NUMERIC_TYPESTRS:
        # Name the dtype for the message only when the string is a plain type code: NumPy parses
        # other strings (comma lists, shapes) with ast, which the file does not get to drive.
        shown = repr(typestr[:16])
        if _PLAIN_TYPESTR.fullmatch(typestr):
            with warnings.catch_warnings():  # deprecated aliases ('a1') only name the dtype here
                warnings.simplefilter("ignore")
                with contextlib.suppress(TypeError):
                    shown = str(np.dtype(typestr))
        raise UnsafePickleError(
            f"refusing an array or scalar of dtype {shown}: only booleans, integers "
            "and floats may appear in a parameter file"
        )
    return typestr


def _raw_bytes(raw: Any, what: str) -> bytes:
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, str):  # written by Python 2, decoded as latin-1
        return raw.encode("latin1")
    raise UnsafePickleError(f"refusing {what} of type {_describe(raw)}: only raw bytes")


def _build_array(shape: Any, dtype: np.dtype[Any], fortran: Any, raw: Any) -> Array:
    """A new array of ``shape`` and numeric ``dtype`` holding a copy of exactly the bytes ``raw``."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ParamsFileError(f"corrupt pickle: array shape {_describe_args(shape)}")
    if not isinstance(fortran, (bool, int)) or fortran not in (0, 1):
        raise ParamsFileError(f"corrupt pickle: array order flag {_describe(fortran)}")
    data = _raw_bytes(raw, "array data")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(data):
        raise ParamsFileError(
            f"corrupt pickle: a {dtype} array of shape {shape} needs "
            f"{count * dtype.itemsize} bytes, the file holds {len(data)}"
        )
    flat: Array = np.frombuffer(data, dtype=dtype).copy()
    return flat.reshape(shape, order="F" if fortran else "C")


def _checked_key(key: Any) -> Any:
    if isinstance(key, _PLACEHOLDERS) or not isinstance(
        key, (str, bytes, int, float, bool, type(None), tuple)
    ):
        raise ParamsFileError(f"corrupt pickle: dict key of type {_describe(key)}")
    return key


# ----------------------------------------------------------------------------------------------
# Opcode handlers. Each reads its argument and changes the stack; _DISPATCH maps the opcode byte.

# A handler's return value, if any, is ignored (some lambdas return what they popped).
_Handler = Callable[[RestrictedUnpickler, _Reader], object]


def _text(reader: _Reader) -> str:
    return reader.line().decode("ascii")


def _decode_str(raw: bytes | memoryview, encoding: str) -> str:
    return bytes(raw).decode(encoding, "strict")


def _int_text(value: str) -> Any:
    if value in ("00", "01"):
        return value == "01"  # protocol 0's False/True
    return int(value, 10)


def _long_bytes(raw: memoryview) -> int:
    return int.from_bytes(raw, "little", signed=True)


def _quoted(reader: _Reader) -> str:
    text = reader.line()
    if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
        raise ParamsFileError("corrupt pickle: STRING argument is not quoted")
    # typeshed types escape_decode's result as str; CPython returns bytes.
    return codecs.escape_decode(text[1:-1])[0].decode("latin1")  # type: ignore[attr-defined,no-any-return]


def _mark(vm: RestrictedUnpickler, reader: _Reader) -> None:
    vm._marks.append(vm._stack)
    vm._stack = []


def _pop_op(vm: RestrictedUnpickler, reader: _Reader) -> None:
    if vm._stack:
        vm._stack.pop()
    else:
        vm._pop_mark()


def _dup(vm: RestrictedUnpickler, reader: _Reader) -> None:
    vm._push(vm._top())


def _append(vm: RestrictedUnpickler, reader: _Reader) -> None:
    value = vm._pop()
    target = vm._top()
    if not isinstance(target, list):
        raise UnsafePickleError(f"refusing APPEND to a {_describe(target)}")
    target.append(value)


def _appends(vm: RestrictedUnpickler, reader: _Reader) -> None:
    items = vm._pop_mark()
    target = vm._top()
    if not isinstance(target, list):
        raise UnsafePickleError(f"refusing APPENDS to a {_describe(target)}")
    target.extend(items)


def _setitem(vm: RestrictedUnpickler, reader: _Reader) -> None:
    value = vm._pop()
    key = vm._pop()
    target = vm._top()
    if not isinstance(target, dict):
        raise UnsafePickleError(f"refusing SETITEM on a {_describe(target)}")
    target[_checked_key(key)] = value


def _setitems(vm: RestrictedUnpickler, reader: _Reader) -> None:
    items = vm._pop_mark()
    target = vm._top()
    if not isinstance(target, dict) or len(items) % 2:
        raise UnsafePickleError(f"refusing SETITEMS on a {_describe(target)}")
    for i in range(0, len(items), 2):
        target[_checked_key(items[i])] = items[i + 1]


def _dict(vm: RestrictedUnpickler, reader: _Reader) -> None:
    items = vm._pop_mark()
    if len(items) % 2:
        raise ParamsFileError("corrupt pickle: DICT with an odd number of items")
    vm._push({_checked_key(items[i]): items[i + 1] for i in range(0, len(items), 2)})


def _reduce(vm: RestrictedUnpickler, reader: _Reader) -> None:
    args = vm._pop()
    func = vm._pop()
    vm._push(vm._call(func, args))


def _build_op(vm: RestrictedUnpickler, reader: _Reader) -> None:
    state = vm._pop()
    vm._build(vm._top(), state)


def _global(vm: RestrictedUnpickler, reader: _Reader) -> None:
    module = _text(reader)
    name = _text(reader)
    vm._push(vm.find_class(module, name))


def _stack_global(vm: RestrictedUnpickler, reader: _Reader) -> None:
    name = vm._pop()
    module = vm._pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise ParamsFileError("corrupt pickle: STACK_GLOBAL needs two strings")
    vm._push(vm.find_class(module, name))


def _proto(vm: RestrictedUnpickler, reader: _Reader) -> None:
    version = reader.byte()
    if version > pickle.HIGHEST_PROTOCOL:
        raise ParamsFileError(f"unsupported pickle protocol {version}")


def _frame(vm: RestrictedUnpickler, reader: _Reader) -> None:
    size = reader.unpack("<Q")
    if size > len(reader.data) - reader.pos:
        raise ParamsFileError(f"truncated pickle: a frame of {size} bytes at offset {reader.pos}")


def _memoize(vm: RestrictedUnpickler, reader: _Reader) -> None:
    vm._memo_put(len(vm._memo))


def _tuple_n(n: int) -> _Handler:
    def handler(vm: RestrictedUnpickler, reader: _Reader) -> None:
        if n == 0:
            vm._push(vm._make_tuple([]))
            return
        if len(vm._stack) < n or any(item is _MARK for item in vm._stack[-n:]):
            raise ParamsFileError("corrupt pickle: stack underflow")
        items = vm._stack[-n:]
        del vm._stack[-n:]
        vm._push(vm._make_tuple(items))

    return handler


def _tuple_mark(vm: RestrictedUnpickler, reader: _Reader) -> None:
    vm._push(vm._make_tuple(vm._pop_mark()))


def _list_mark(vm: RestrictedUnpickler, reader: _Reader) -> None:
    vm._push(vm._pop_mark())


_STOP = b"."[0]  # handled by the machine's loop itself
_DISPATCH: dict[int, _Handler] = {
    b"("[0]: _mark,
    b"0"[0]: _pop_op,
    b"1"[0]: lambda vm, r: vm._pop_mark(),
    b"2"[0]: _dup,
    b"\x80"[0]: _proto,
    b"\x95"[0]: _frame,
    b"N"[0]: lambda vm, r: vm._push(None),
    b"\x88"[0]: lambda vm, r: vm._push(True),
    b"\x89"[0]: lambda vm, r: vm._push(False),
    b"I"[0]: lambda vm, r: vm._push(_int_text(_text(r))),
    b"J"[0]: lambda vm, r: vm._push(r.unpack("<i")),
    b"K"[0]: lambda vm, r: vm._push(r.byte()),
    b"M"[0]: lambda vm, r: vm._push(r.unpack("<H")),
    b"L"[0]: lambda vm, r: vm._push(int(_text(r).rstrip("L"), 10)),
    b"\x8a"[0]: lambda vm, r: vm._push(_long_bytes(r.take(r.byte()))),
    b"\x8b"[0]: lambda vm, r: vm._push(_long_bytes(r.take(r.unpack("<i")))),
    b"F"[0]: lambda vm, r: vm._push(float(_text(r))),
    b"G"[0]: lambda vm, r: vm._push(r.unpack(">d")),
    b"S"[0]: lambda vm, r: vm._push(_quoted(r)),
    b"T"[0]: lambda vm, r: vm._push(_decode_str(r.take(r.unpack("<i")), "latin1")),
    b"U"[0]: lambda vm, r: vm._push(_decode_str(r.take(r.byte()), "latin1")),
    b"B"[0]: lambda vm, r: vm._push(bytes(r.take(r.unpack("<I")))),
    b"C"[0]: lambda vm, r: vm._push(bytes(r.take(r.byte()))),
    b"\x8e"[0]: lambda vm, r: vm._push(bytes(r.take(r.unpack("<Q")))),
    b"\x96"[0]: lambda vm, r: vm._push(bytearray(r.take(r.unpack("<Q")))),
    b"V"[0]: lambda vm, r: vm._push(_decode_str(r.line(), "raw-unicode-escape")),
    b"\x8c"[0]: lambda vm, r: vm._push(_decode_str(r.take(r.byte()), "utf-8")),
    b"X"[0]: lambda vm, r: vm._push(_decode_str(r.take(r.unpack("<I")), "utf-8")),
    b"\x8d"[0]: lambda vm, r: vm._push(_decode_str(r.take(r.unpack("<Q")), "utf-8")),
    b"]"[0]: lambda vm, r: vm._push([]),
    b"a"[0]: _append,
    b"e"[0]: _appends,
    b"l"[0]: _list_mark,
    b")"[0]: _tuple_n(0),
    b"\x85"[0]: _tuple_n(1),
    b"\x86"[0]: _tuple_n(2),
    b"\x87"[0]: _tuple_n(3),
    b"t"[0]: _tuple_mark,
    b"}"[0]: lambda vm, r: vm._push({}),
    b"d"[0]: _dict,
    b"s"[0]: _setitem,
    b"u"[0]: _setitems,
    b"g"[0]: lambda vm, r: vm._memo_get(int(_text(r), 10)),
    b"h"[0]: lambda vm, r: vm._memo_get(r.byte()),
    b"j"[0]: lambda vm, r: vm._memo_get(r.unpack("<I")),
    b"p"[0]: lambda vm, r: vm._memo_put(int(_text(r), 10)),
    b"q"[0]: lambda vm, r: vm._memo_put(r.byte()),
    b"r"[0]: lambda vm, r: vm._memo_put(r.unpack("<I")),
    b"\x94"[0]: _memoize,
    b"c"[0]: _global,
    b"\x93"[0]: _stack_global,
    b"R"[0]: _reduce,
    b"b"[0]: _build_op,
}

# The opcodes refused on purpose (named in the error): they build sets, arbitrary instances,
# extension-registry objects, out-of-band buffers or persistent references.
_OPCODE_NAMES = {op.code.encode("latin1")[0]: op.name for op in pickletools.opcodes}
