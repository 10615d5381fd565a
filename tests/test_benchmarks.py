"""Smoke tests of the benchmark suite (``benchmarks/``): it runs, and writes what it promises.

``benchmarks/run.py --quick`` runs every group on tiny inputs in a subprocess, with PyTorch
disabled so that the test is quick and the same whether or not PyTorch is installed. No timing
is asserted: only that the run succeeds and that the JSON and Markdown files have their
structure. The interleaving order and a few helpers are checked in-process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "benchmarks" / "run.py"
GROUPS = {"gemm", "kernels", "train", "conv", "infer", "rss", "resnet"}


def _load(name: str):
    """A module of benchmarks/ under a private name (benchmarks/ is not put on sys.path, so its
    generic module names cannot shadow anything in the rest of the test session)."""
    spec = importlib.util.spec_from_file_location(
        f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _run(out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYCONV_BENCH_NO_TORCH": "1"}
    return subprocess.run(
        [sys.executable, str(RUN_PY), "--quick", "--no-torch", "--out", str(out_dir), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )


def _only_file(directory: Path, suffix: str) -> Path:
    files = sorted(directory.glob(f"*{suffix}"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    done = _run(out_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, out_dir


def test_quick_run_writes_json_with_expected_keys(quick_run):
    _, out_dir = quick_run
    path = _only_file(out_dir, ".json")
    assert path.name.endswith("-quick.json")
    info = json.loads(path.read_text(encoding="utf-8"))
    for key in (
        "machine",
        "date",
        "cpu",
        "threads",
        "tinyconv_config",
        "versions",
        "blas_thread_control",
        "repeats",
        "load_average",
        "results",
        "notes",
        "torch_note",
    ):
        assert key in info, key
    assert path.name.startswith(info["machine"] + "-" + info["date"])
    assert info["quick"] is True
    assert set(info["cpu"]) >= {"model", "cores"}
    assert info["tinyconv_config"]["version"]
    assert info["versions"]["numpy"]
    assert info["versions"]["torch"] is None
    assert "skipped" in info["torch_note"]
    assert {row["group"] for row in info["results"]} == GROUPS


def test_quick_run_rows_have_medians_ranges_and_ratios(quick_run):
    _, out_dir = quick_run
    rows = json.loads(_only_file(out_dir, ".json").read_text(encoding="utf-8"))["results"]
    for row in rows:
        assert "error" not in row, row
        assert row["unit"] in ("ms", "GFLOP/s", "img/s", "MiB")
        assert "torch" not in row["contenders"]  # disabled
        for figures in row["contenders"].values():
            assert figures["min"] <= figures["median"] <= figures["max"]
            assert figures["samples"]
        if "numpy" in row["contenders"]:
            assert row["ratios"]["numpy"] > 0
        if row["target"] is not None and row["target"]["peer"] == "torch":
            assert row["target_met"] is None  # no peer, no verdict
    gemm = [row for row in rows if row["group"] == "gemm"]
    assert gemm
    assert all(row["target_met"] in (True, False) for row in gemm)


def test_quick_run_writes_and_prints_the_markdown_table(quick_run):
    done, out_dir = quick_run
    text = _only_file(out_dir, ".md").read_text(encoding="utf-8")
    header = "| Workload | threads | unit | tinyconv | NumPy | PyTorch |"
    assert header in text
    assert header in done.stdout
    assert "## Notes" in text
    assert "noisy" in text
    assert "same run" in text
    assert "PyTorch columns skipped" in text


ORT_ROWS = ("infer/SimpleConvNet", "infer/DeepConvNet", "resnet/resnet50_infer")


def test_quick_run_times_onnx_runtime_on_the_inference_rows(quick_run):
    """ONNX Runtime, the inference peer, runs tinyconv's own networks (checked against predict
    before timing). The [test] extra installs it: missing under CI=true is a failure."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the ONNX Runtime peer must run: {error}")
        pytest.skip(f'onnx or onnxruntime not installed ({error}): pip install "tinyconv[test]"')
    _, out_dir = quick_run
    info = json.loads(_only_file(out_dir, ".json").read_text(encoding="utf-8"))
    rows = {row["id"]: row for row in info["results"]}
    for row_id in ORT_ROWS:
        assert rows[row_id]["ratios"]["onnxruntime"] > 0, row_id
        assert "ONNX Runtime" in rows[row_id]["peer_labels"]["onnxruntime"]
    assert [row["id"] for row in info["results"] if "onnxruntime" in row["contenders"]] == list(
        ORT_ROWS
    )
    assert info["versions"]["onnxruntime"] == onnxruntime.__version__
    assert info["onnxruntime_note"] == ""
    assert "| ONNX Runtime |" in _only_file(out_dir, ".md").read_text(encoding="utf-8")


def test_onnx_runtime_can_be_left_out(tmp_path):
    done = _run(tmp_path, "--only", "infer", "--no-onnxruntime")
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(_only_file(tmp_path, ".json").read_text(encoding="utf-8"))
    assert all("onnxruntime" not in row["contenders"] for row in info["results"])
    assert info["versions"]["onnxruntime"] is None
    assert "ONNX Runtime column skipped: disabled" in _only_file(tmp_path, ".md").read_text(
        encoding="utf-8"
    )


def test_several_thread_counts_give_a_row_each(tmp_path):
    done = _run(tmp_path, "--only", "gemm", "--threads", "1,2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(_only_file(tmp_path, ".json").read_text(encoding="utf-8"))["results"]
    assert {row["group"] for row in rows} == {"gemm"}
    assert sorted({row["threads"] for row in rows}) == [1, 2]


def test_unknown_group_is_a_usage_error(tmp_path):
    done = _run(tmp_path, "--only", "gemm,nonsense")
    assert done.returncode == 2
    assert "--only" in done.stderr
    assert not list(tmp_path.iterdir())


def test_rounds_run_every_contender_once_in_rotating_order():
    harness = _load("harness")
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    timings = harness.measure_interleaved(contenders, repeats=3, min_sample_s=0.0)
    assert all(len(t.seconds) == 3 and t.calls_per_sample == 1 for t in timings.values())
    # Warm-up (one call, then one timed call, per contender), then three rotating rounds.
    assert calls == ["a", "a", "b", "b", "c", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_samples_are_long_enough_for_fast_calls():
    harness = _load("harness")
    assert harness.calls_for(0.001, 0.05) == 50
    assert harness.calls_for(1.0, 0.05) == 1
    assert harness.calls_for(0.0, 0.05) >= 1


def test_machine_slug_is_short_and_file_safe():
    environment = _load("environment")
    assert environment.machine_slug("AMD EPYC", 2) == "amd-epyc-2c"
    assert environment.machine_slug("Intel(R) Xeon(R) CPU @ 2.20GHz", 4) == "intel-xeon-4c"
    assert environment.machine_slug("AMD EPYC 7B13 64-Core Processor", 8) == "amd-epyc-7b13-8c"
    assert environment.machine_slug("", 1) == "cpu-1c"
