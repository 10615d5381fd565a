"""The type stubs of the compiled module (python/tinyconv/_core/__init__.pyi and reference.pyi)
tell the truth about it: the same functions, and for each the parameter names, their order and
their defaults that pybind11 exposes (its docstring signature, the one place a pybind11 function
states them: ``inspect.signature`` cannot read one, so mypy's stubtest checks only that the names
exist), and a return type of the same kind. The stubs are shipped with the package (a wheel
without them leaves every user's type checker blind to the core).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tinyconv
from tinyconv import _core

# What the docstring's return annotation is, for each kind of return annotation in the stubs.
_RETURN_KINDS = {"_F": "numpy.ndarray", "_I": "numpy.ndarray", "_Config": "dict"}


def _stub_path(name: str) -> Path:
    for directory in tinyconv.__path__:
        path = Path(directory) / "_core" / name
        if path.is_file():
            return path
    raise AssertionError(f"_core/{name} is not installed beside tinyconv ({tinyconv.__path__})")


def _parse(name: str) -> ast.Module:
    return ast.parse(_stub_path(name).read_text(encoding="utf-8"))


def _stub_functions(module: ast.Module) -> dict[str, list[ast.FunctionDef]]:
    """name -> its definitions in the stub (several when overloaded)."""
    functions: dict[str, list[ast.FunctionDef]] = {}
    for node in module.body:
        if isinstance(node, ast.FunctionDef):
            functions.setdefault(node.name, []).append(node)
    return functions


def _reexports(module: ast.Module) -> dict[str, str]:
    """``from tinyconv._core import x as x`` lines of reference.pyi: name -> name in _core."""
    return {
        alias.asname or alias.name: alias.name
        for node in module.body
        if isinstance(node, ast.ImportFrom) and node.module == "tinyconv._core"
        for alias in node.names
    }


def _parameters(function: ast.FunctionDef) -> list[tuple[str, str | None]]:
    """(name, default as source or None) of every parameter, in order."""
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + arguments.defaults
    pairs = list(zip(positional, defaults)) + list(zip(arguments.kwonlyargs, arguments.kw_defaults))
    return [(arg.arg, None if default is None else ast.unparse(default)) for arg, default in pairs]


def _return_kind(function: ast.FunctionDef) -> str:
    assert function.returns is not None, f"{function.name} has no return annotation in the stub"
    text = ast.unparse(function.returns)
    return "tuple" if text.startswith("tuple[") else _RETURN_KINDS.get(text, text)


def _runtime_signature(function: object) -> ast.FunctionDef:
    """pybind11's signature line, ``name(a: object, b: object = None) -> numpy.ndarray``."""
    line = (function.__doc__ or "").splitlines()[0]
    parsed = ast.parse(f"def {line}: ...").body[0]
    assert isinstance(parsed, ast.FunctionDef)
    return parsed


def _public(module: object) -> set[str]:
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), type(_core))
    }


_MAIN = _stub_functions(_parse("__init__.pyi"))
_REFERENCE = _reexports(_parse("reference.pyi"))
_CASES = [(_core, name, name) for name in sorted(_public(_core))] + [
    (_core.reference, name, _REFERENCE.get(name, name)) for name in sorted(_public(_core.reference))
]


def test_the_stubs_name_every_function_and_nothing_else():
    assert set(_MAIN) == _public(_core)
    assert set(_REFERENCE) == _public(_core.reference)
    assert all(name == _REFERENCE[name] for name in _REFERENCE)  # the oracle of the same name


@pytest.mark.parametrize(
    ("module", "name", "stub_name"),
    _CASES,
    ids=[f"{module.__name__.rpartition('.')[2]}.{name}" for module, name, _ in _CASES],
)
def test_stub_signature_is_the_binding_s(module, name, stub_name):
    runtime = _runtime_signature(getattr(module, name))
    expected = _parameters(runtime)
    expected_names = [parameter for parameter, _ in expected]
    definitions = _MAIN[stub_name]
    # Overloads narrow a flag to a Literal and may drop its default; the last one is the general
    # signature and repeats the binding's defaults exactly.
    for definition in definitions:
        stated = _parameters(definition)
        assert [parameter for parameter, _ in stated] == expected_names
        for (parameter, default), (_, runtime_default) in zip(stated, expected):
            assert default in (None, runtime_default), (parameter, default, runtime_default)
        assert _return_kind(definition) == ast.unparse(runtime.returns), definition.lineno
    assert _parameters(definitions[-1]) == expected
    assert len(definitions) == 1 or all(
        isinstance(d, ast.FunctionDef)
        and any(ast.unparse(decorator) == "overload" for decorator in d.decorator_list)
        for d in definitions
    )
