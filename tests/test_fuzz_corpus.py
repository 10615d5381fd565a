"""Replays every input the coverage-guided fuzzer kept (tests/fuzz/corpus/<target>/) through the
same target functions, so each one is a regression test that runs without atheris.

A target returns when its entry point accepted the input or refused it with a documented error;
anything else (an unexpected exception type, a state change on refusal, an array that does not
own its memory) fails here with the file's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fuzz import targets

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"


@pytest.fixture(autouse=True)
def _keep_global_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _skip_without_extras(name):
    if name == "safetensors":  # valid files of this corpus need the optional package to load
        pytest.importorskip("safetensors.numpy", reason="the 'safetensors' extra is not installed")


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_fuzz_corpus_replays_cleanly(name):
    _skip_without_extras(name)
    files = sorted((CORPUS / name).iterdir())
    assert len(files) >= 10, f"the {name} corpus is missing or nearly empty ({len(files)} files)"
    failures = []
    for path in files:
        try:
            targets.TARGETS[name](path.read_bytes())
        except (
            Exception
        ) as exc:  # collect all, then report: one broken input should not hide others
            failures.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not failures, (
        f"{len(failures)} of {len(files)} {name} inputs broke a promise:\n"
        + "\n".join(failures[:20])
    )


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seed_inputs_are_accepted(name):
    _skip_without_extras(name)
    # The seeds are valid files: the targets must accept them, or the fuzzer starts from nothing.
    for data in targets.seed_inputs(name):
        targets.TARGETS[name](data)
