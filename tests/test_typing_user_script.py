"""Runs ``tests/typing/user_script.py``, the user's script that mypy type-checks (see its
docstring), so that what is checked stays code that works."""

from __future__ import annotations

import runpy
from pathlib import Path

USER_SCRIPT = Path(__file__).parent / "typing" / "user_script.py"


def test_user_script_runs() -> None:
    runpy.run_path(str(USER_SCRIPT), run_name="__main__")
