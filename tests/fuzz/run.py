"""Coverage-guided fuzzing of tinyconv's entry points with atheris (``pip install atheris``).

    python tests/fuzz/run.py pickle --runs 250000          # one target
    python tests/fuzz/run.py all --runs 250000             # every target, one after another
    python tests/fuzz/run.py all --seed                    # (re)write the seed inputs only

Each target (see ``targets.py``) reads and extends its corpus in ``tests/fuzz/corpus/<target>/``:
the inputs libFuzzer found to reach new code, committed and replayed by
``tests/test_fuzz_corpus.py``. A crash or a broken promise stops the target, writes the input to
``tests/fuzz/crashes/`` and makes this script exit non-zero; each such input is added to the
corpus as ``found-<hash>`` once fixed.

Python code of tinyconv is instrumented for coverage; the compiled core is not (it would need a
``-fsanitize=fuzzer-no-link`` clang build), so ``core`` is guided by the Python validation paths
and the bytes' choices of functions and arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # tests/ (fuzzing.py) and tests/fuzz/ (targets.py)

CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
MAX_LEN = {
    "pickle": 4096,
    "params": 8192,
    "safetensors": 4096,
    "checkpoint": 65536,
    "idx": 4096,
    "core": 256,
}


def write_seeds(name: str) -> int:
    import targets

    directory = CORPUS / name
    directory.mkdir(parents=True, exist_ok=True)
    for data in targets.seed_inputs(name):
        (directory / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)
    return len(list(directory.iterdir()))


def fuzz_one(name: str, runs: int) -> int:
    """Run one target in this process (atheris owns the process until it is done)."""
    import atheris
    import targets

    import tinyconv.datasets.idx
    import tinyconv.functional
    import tinyconv.serialization
    import tinyconv.trainer  # noqa: F401

    # Instrument the bytecode of every function loaded so far (tinyconv's, the targets', NumPy's
    # Python parts): works whatever import machinery loaded them (editable installs included).
    atheris.instrument_all()
    target = targets.TARGETS[name]
    CRASHES.mkdir(exist_ok=True)
    corpus = CORPUS / name
    write_seeds(name)  # the valid starting points, always present (same names each time)
    args = [
        sys.argv[0],
        f"-runs={runs}",
        f"-max_len={MAX_LEN[name]}",
        "-timeout=60",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={CRASHES}/{name}-",
        "-print_final_stats=1",
    ]
    atheris.Setup([*args, str(corpus)], target)
    atheris.Fuzz()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=[*sorted(MAX_LEN), "all"])
    parser.add_argument(
        "--runs", type=int, default=100_000, help="inputs per target (default 100000)"
    )
    parser.add_argument(
        "--seed", action="store_true", help="only write the seed inputs into the corpus"
    )
    args = parser.parse_args()
    names = sorted(MAX_LEN) if args.target == "all" else [args.target]
    if args.seed:
        for name in names:
            print(f"{name}: {write_seeds(name)} corpus files")
        return 0
    if len(names) == 1:
        return fuzz_one(names[0], args.runs)
    failed = []
    for name in names:  # one process per target: atheris exits the process when it is done
        command = [sys.executable, __file__, name, f"--runs={args.runs}"]
        print("==", " ".join(command), flush=True)
        if subprocess.run(command, env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode != 0:
            failed.append(name)
    print("failed:" if failed else "all targets passed", " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
