"""Data-parallel training over MPI (Trainer(comm=...), tinyconv train --distributed), with real
``mpiexec -n 2`` jobs on localhost running tests/mpi_driver.py.

Tolerances against one process training on the same global batches: float64 relative 1e-12 (the
only difference is the order of the sum over the ranks; measured 7e-16 after 8 Adam steps),
float32 relative 1e-5 (measured 7e-7 after 12 steps). The ranks among themselves: bitwise equal.
Without mpiexec or mpi4py the tests skip with the reason, except under CI=true, where they fail
(.ci/run installs the [mpi] extra).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinyconv.nets import SimpleConvNet
from tinyconv.trainer import Trainer

DRIVER = Path(__file__).with_name("mpi_driver.py")
# A generous bound for jobs of a few seconds: reached only when a job hangs.
JOB_TIMEOUT = 120


def _mpiexec():
    """The mpiexec beside this Python (the MPICH wheel's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _require_mpi():
    missing = []
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        missing.append("mpi4py")
    if _mpiexec() is None:
        missing.append("mpiexec")
    if missing:
        reason = f'{" and ".join(missing)} not found: pip install "tinyconv[mpi]"'
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI the MPI tests must run: {reason}")
        pytest.skip(reason)


def _environment():
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    environment["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), environment.get("PATH", "")]
    )
    return environment


def run_job(out, ranks, **settings):
    """Run the driver on ``ranks`` processes (0: one process without MPI); the finished process."""
    _require_mpi()
    out.mkdir(exist_ok=True)
    command = [sys.executable, str(DRIVER), str(out), json.dumps(settings)]
    if ranks:
        command = [_mpiexec(), "-n", str(ranks), *command]
    else:
        command[-1] = json.dumps({**settings, "single": True})
    return subprocess.run(
        command, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=_environment()
    )


def finished(out, ranks, **settings):
    result = run_job(out, ranks, **settings)
    assert result.returncode == 0, result.stdout + result.stderr
    return [dict(np.load(out / f"rank{rank}.npz")) for rank in range(max(ranks, 1))]


def relative_difference(a, b):
    return max(
        float(np.max(np.abs(a[key] - b[key])) / max(np.max(np.abs(b[key])), 1e-300)) for key in b
    )


@pytest.mark.parametrize(
    ("batch", "sampling"),
    [(16, "replacement"), (15, "replacement"), (16, "permutation"), (1, "replacement")],
)
def test_two_ranks_match_one_process_float64(tmp_path, batch, sampling):
    # batch 15: shards of 7 and 8; permutation of 60 samples: a last global batch of 12; batch 1:
    # rank 1's shard is always empty.
    settings = {"batch": batch, "sampling": sampling, "train_size": 60, "epochs": 2}
    rank0, rank1 = finished(tmp_path / "two", 2, **settings)
    (single,) = finished(tmp_path / "one", 0, **settings)
    for key in rank0:
        assert np.array_equal(rank0[key], rank1[key]), key  # bitwise identical ranks
    assert relative_difference(rank0, single) < 1e-12
    history = json.loads((tmp_path / "two" / "rank0.json").read_text())
    single_history = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert history["num_ranks"] == 2
    assert single_history["num_ranks"] == 1
    np.testing.assert_allclose(history["loss"], single_history["loss"], rtol=1e-12)
    # Sharded evaluation counts every sample once: the same accuracies as one process.
    assert history["test_acc"] == single_history["test_acc"]
    assert history["final_test_acc"] == single_history["final_test_acc"]


def test_two_ranks_match_one_process_float32(tmp_path):
    rank0, rank1 = finished(tmp_path / "two", 2, dtype="float32", epochs=3)
    (single,) = finished(tmp_path / "one", 0, dtype="float32", epochs=3)
    assert all(np.array_equal(rank0[key], rank1[key]) for key in rank0)
    assert relative_difference(rank0, single) < 1e-5


@pytest.mark.parametrize("net", ["multi_bn", "multi_bn_global"])
def test_batch_norm_and_dropout_ranks_stay_identical(tmp_path, net):
    # Per-rank batch statistics (as DDP), running statistics averaged at evaluation: the whole
    # state, buffers included, is the same on both ranks (multi_bn_global: although each rank
    # drew its own initial weights from np.random). Dropout masks of equal shards differ.
    rank0, rank1 = finished(tmp_path, 2, net=net, check_every=1)
    for key in rank0:
        assert np.array_equal(rank0[key], rank1[key]), key
    mask0, mask1 = np.load(tmp_path / "mask0.npy"), np.load(tmp_path / "mask1.npy")
    assert mask0.shape == mask1.shape == (8, 16)
    assert not np.array_equal(mask0, mask1)


def test_threads_per_rank_default_to_the_cores_shared_among_the_ranks(tmp_path):
    import tinyconv

    _require_mpi()
    environment = _environment()
    del environment["OMP_NUM_THREADS"]
    command = [_mpiexec(), "-n", "2", sys.executable, str(DRIVER), str(tmp_path), "{}"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=environment
    )
    assert result.returncode == 0, result.stderr
    expected = max(1, tinyconv.config()["num_procs"] // 2)
    assert [
        json.loads((tmp_path / f"done{rank}.json").read_text())["threads"] for rank in (0, 1)
    ] == [expected] * 2


def test_a_killed_rank_ends_the_job(tmp_path):
    started = time.monotonic()
    result = run_job(tmp_path, 2, fault="kill", fault_step=3, epochs=50)
    assert result.returncode != 0
    assert "signal 9" in result.stdout + result.stderr or "Killed" in result.stdout + result.stderr
    assert time.monotonic() - started < JOB_TIMEOUT  # ended by itself, not by the timeout


def test_a_rank_that_raises_aborts_every_rank_with_its_name(tmp_path):
    result = run_job(tmp_path, 2, fault="raise", fault_step=2, epochs=50)
    assert result.returncode != 0
    assert "rank 1 of 2" in result.stderr
    assert "RuntimeError: injected failure" in result.stderr
    assert "aborting all 2 ranks" in result.stderr
    assert not (tmp_path / "rank0.npz").exists()


def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    result = run_job(tmp_path, 2, fault="nan", fault_step=3, epochs=50)
    assert result.returncode == 3, result.stderr
    stops = [json.loads((tmp_path / f"stopped{rank}.json").read_text()) for rank in (0, 1)]
    assert (
        stops[0]
        == stops[1]
        == {"type": "NonFiniteLossError", "epoch": 1, "step": 3, "current_iter": 2}
    )


def test_diverged_ranks_are_reported_on_every_rank(tmp_path):
    result = run_job(tmp_path, 2, fault="diverge", fault_step=3, check_every=2, epochs=50)
    assert result.returncode == 3, result.stderr
    stops = [json.loads((tmp_path / f"stopped{rank}.json").read_text()) for rank in (0, 1)]
    assert stops[0] == stops[1] == {"type": "RankDivergenceError", "step": 4, "ranks": [1]}


def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    rank0, rank1 = finished(tmp_path, 2, fault="interrupt", fault_step=3, epochs=50)
    done = [json.loads((tmp_path / f"done{rank}.json").read_text()) for rank in (0, 1)]
    # The signal comes during step 3's gradient; its flag travels in step 4's message.
    assert done[0] == done[1] == {"current_iter": 4, "interrupted": True, "threads": 1}
    assert all(np.array_equal(rank0[key], rank1[key]) for key in rank0)


@pytest.mark.parametrize(("first", "second"), [(2, 0), (0, 2), (2, 2)])
def test_resume_with_another_number_of_ranks(tmp_path, first, second):
    (uninterrupted,) = finished(tmp_path / "whole", 0, epochs=4)[:1]
    checkpoint = str(tmp_path / "run.ckpt")
    # Rank 0 alone writes and reads the checkpoint: the others need no shared file system.
    finished(tmp_path / "a", first, epochs=2, checkpoint=checkpoint, only_root_has_checkpoint=True)
    assert not list(tmp_path.glob("run.ckpt.rank*"))
    resumed = finished(
        tmp_path / "b",
        second,
        epochs=4,
        checkpoint=checkpoint,
        resume=True,
        only_root_has_checkpoint=True,
    )
    assert relative_difference(resumed[0], uninterrupted) < 1e-12
    history = json.loads((tmp_path / "b" / "rank0.json").read_text())
    assert history["current_iter"] == 16
    assert len(history["loss"]) == 16


def test_cli_distributed_train_writes_once(tmp_path):
    _require_mpi()
    out = tmp_path / "run"
    command = [
        _mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "tinyconv",
        "train",
        "--distributed",
        "--epochs",
        "1",
        "--train-size",
        "200",
        "--test-size",
        "100",
        "--eval-samples",
        "100",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=_environment()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Final Test Accuracy") == 1  # rank 0 alone prints
    assert "2 processes x 1 thread" in result.stdout
    history = json.loads((out / "history.json").read_text())
    assert history["status"] == "completed"
    assert history["settings"]["distributed"]["ranks"] == 2
    assert (out / "params.pkl").exists()


def test_cli_error_found_by_rank_0_alone_ends_every_rank(tmp_path):
    # Rank 0 alone checks --out; rank 1 would wait for it in the next collective without the abort.
    _require_mpi()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    command = [
        _mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "tinyconv",
        "train",
        "--distributed",
        "--epochs",
        "1",
        "--out",
        str(blocker / "run"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=_environment()
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: cannot create the output directory" in result.stderr
    assert "rank 0 of 2 stopped; aborting all ranks" in result.stderr


def test_cli_info_names_the_mpi_library():
    _require_mpi()
    result = subprocess.run(
        [sys.executable, "-m", "tinyconv", "info"],
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT,
        env=_environment(),
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "mpi4py (--distributed)" in line)
    assert "library:" in line
    assert "world size 1" in line


# -- without a job: argument checks and the message without mpi4py ----------------------------


def _small_trainer(**kwargs):
    x = np.zeros((4, 1, 10, 10))
    network = SimpleConvNet((1, 10, 10), hidden_size=4, output_size=2, dtype=np.float64, seed=0)
    return Trainer(
        network, x, np.zeros(4, np.int64), x, np.zeros(4, np.int64), verbose=False, **kwargs
    )


@pytest.mark.parametrize("comm", [object(), "COMM_WORLD", 1])
def test_comm_must_be_an_mpi4py_communicator(comm):
    with pytest.raises(TypeError, match="comm must be an mpi4py"):
        _small_trainer(comm=comm)


@pytest.mark.parametrize("check_every", [0, -1, 1.5, True, "10"])
def test_check_every_is_validated(check_every):
    with pytest.raises(ValueError, match="check_every"):
        _small_trainer(check_every=check_every)


def test_distributed_without_mpi4py_says_what_to_install(monkeypatch, capsys):
    from tinyconv.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    assert main(["train", "--distributed", "--epochs", "1"]) == 2
    assert 'pip install "tinyconv[mpi]"' in capsys.readouterr().err


def test_benchmark_script_runs_at_tiny_size(tmp_path):
    _require_mpi()
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "distributed.py"
    command = [
        sys.executable,
        str(script),
        "--quick",
        "--ranks",
        "1,2",
        "--threads",
        "1",
        "--nets",
        "SimpleConvNet",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=_environment()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("distributed-*-quick.json")
    rows = json.loads(path.read_text())["results"]
    assert [(row["ranks"], row["threads"]) for row in rows] == [(1, 1), (2, 1)]
    assert rows[0]["efficiency"] == 1.0
    assert rows[1]["ring_bytes_sent_per_rank"] == rows[1]["buffer_bytes"]
    assert path.with_suffix(".md").exists()
