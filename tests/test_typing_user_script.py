"""Runs the scripts of ``tests/typing/``, which mypy type-checks as users' code (see their
docstrings and tests/typing/README.md), so that what is checked stays code that works."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parent / "typing").glob("*.py"))


def test_there_are_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"user_script.py", "user_functional.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_user_script_runs(script: Path) -> None:
    runpy.run_path(str(script), run_name="__main__")
