"""Data-parallel training speed over MPI: steps/s of ``Trainer(comm=...)`` for ranks x threads.

    python benchmarks/distributed.py                          # 1 and 2 ranks x 1 and 2 threads
    python benchmarks/distributed.py --ranks 1,2,4,8 --threads 1,2   # a 16-core machine
    python benchmarks/distributed.py --ranks 1,2,4,8 --threads auto  # cores / ranks each
    python benchmarks/distributed.py --quick                  # tiny sizes: a smoke test (seconds)

For every (net, ranks, threads) the script starts ``mpiexec -n RANKS python distributed.py
--worker ...`` (the mpiexec beside this Python, i.e. the MPICH wheel's, else the one on PATH;
``--mpiexec`` picks another, ``--mpiexec-args`` adds options such as a hostfile). Each worker
trains DeepConvNet (and SimpleConvNet) on random 1x28x28 images with Adam and a *global* batch
of 256 (``--batch``) shared among the ranks: after warm-up steps, rank 0 times ``--steps`` steps
between two barriers, and the time spent in the step's ``Allreduce`` is timed on every rank (the
slowest rank's mean is reported: it includes waiting for the slowest rank's compute).

Reported per row: steps/s and samples/s, the allreduce's share of a step, the bytes each rank
sends per step by the ring-allreduce model (2 (K-1)/K x the buffer), and the scaling efficiency
``steps/s(K ranks) / (K x steps/s(1 rank))`` at the same threads per rank (strong scaling: the
global batch stays 256, so each rank's shard shrinks). Results go to
``<out>/distributed-<machine>-<date>[-quick].json`` and ``.md`` (default ``benchmarks/results``).
The issue's target: efficiency >= 0.8 at 4 ranks for DeepConvNet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import environment  # noqa: E402  (light: no NumPy)

NETS = ("DeepConvNet", "SimpleConvNet")
DEFAULT_OUT = os.path.join(HERE, "results")
TARGET = {"net": "DeepConvNet", "ranks": 4, "efficiency": 0.8}


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}"
        )
    return values


def _thread_list(text: str) -> list[Any]:
    return ["auto"] if text == "auto" else _int_list(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=_int_list, default=[1, 2], help="rank counts (default 1,2)")
    parser.add_argument(
        "--threads",
        type=_thread_list,
        default=[1, 2],
        help="threads per rank, or 'auto' for the host's cores / ranks (default 1,2)",
    )
    parser.add_argument("--nets", default=",".join(NETS), help=f"comma-separated, from {NETS}")
    parser.add_argument("--batch", type=int, default=256, help="global batch (default 256)")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 20; --quick 2)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 3; --quick 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="batch 8, 2 steps: checks that it runs"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="directory for the JSON and Markdown files"
    )
    parser.add_argument(
        "--mpiexec", default=None, help="the launcher (default: beside this Python, else PATH)"
    )
    parser.add_argument(
        "--mpiexec-args", default="", help="extra launcher options, e.g. '-f hosts'"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per job before it counts as hung"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--net", default="DeepConvNet", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.nets = [name for name in args.nets.split(",") if name]
    unknown = [name for name in args.nets if name not in NETS]
    if unknown:
        parser.error(f"--nets: unknown {unknown}; choose from {NETS}")
    if args.quick:
        args.batch = min(args.batch, 8)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    return args


# -- one job (under mpiexec) ---------------------------------------------------------------------


class _TimedComm:
    """The communicator with its ``Allreduce`` timed (everything else passes through)."""

    def __init__(self, comm: Any):
        self._comm, self.seconds, self.calls = comm, 0.0, 0

    def Allreduce(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        self._comm.Allreduce(*args, **kwargs)
        self.seconds += time.perf_counter() - started
        self.calls += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._comm, name)


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    from mpi4py import MPI

    import tinyconv
    from tinyconv import nets
    from tinyconv.trainer import Trainer

    comm = MPI.COMM_WORLD
    network = getattr(nets, args.net)(seed=0)
    rng = np.random.default_rng(0)
    samples = max(args.batch * 4, 64)
    x = rng.random((samples, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, samples)
    trainer = Trainer(
        network,
        x,
        t,
        x[:10],
        t[:10],
        epochs=1,
        mini_batch_size=args.batch,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        seed=0,
        comm=comm,
        check_every=10**9,
    )
    timed = _TimedComm(trainer._parallel.comm)
    trainer._parallel.comm = timed
    for _ in range(args.warmup):
        trainer.train_step()
    timed.seconds, timed.calls = 0.0, 0
    comm.Barrier()
    started = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    comm.Barrier()
    elapsed = time.perf_counter() - started
    allreduce = comm.allreduce(timed.seconds / max(timed.calls, 1), op=MPI.MAX)
    trainer._parallel.comm = timed._comm
    trainer._parallel.check_identical(network, trainer.current_iter)  # the run was a real one
    if comm.Get_rank() == 0:
        parameters = sum(int(value.size) for value in network.params.values())
        print(
            json.dumps(
                {
                    "net": args.net,
                    "ranks": comm.Get_size(),
                    "threads": tinyconv.get_num_threads(),
                    "batch": args.batch,
                    "steps": args.steps,
                    "seconds": elapsed,
                    "steps_per_s": args.steps / elapsed,
                    "samples_per_s": args.steps * args.batch / elapsed,
                    "allreduce_s_per_step": allreduce,
                    "parameters": parameters,
                    "buffer_bytes": (parameters + 2) * network.dtype.itemsize,
                }
            )
        )


# -- the grid (outside mpiexec) ------------------------------------------------------------------


def _mpiexec(args: argparse.Namespace) -> str:
    if args.mpiexec:
        return args.mpiexec
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if found is None:
        sys.exit('mpiexec not found: pip install "tinyconv[mpi]" (or give --mpiexec)')
    return found


def run_job(args: argparse.Namespace, net: str, ranks: int, threads: Any) -> dict[str, Any]:
    cores = environment.available_cores()
    per_rank = max(1, cores // ranks) if threads == "auto" else threads
    env = dict(os.environ, OMP_NUM_THREADS=str(per_rank))
    command = [
        _mpiexec(args),
        "-n",
        str(ranks),
        *args.mpiexec_args.split(),
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--net",
        net,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {
            "net": net,
            "ranks": ranks,
            "threads": per_rank,
            "error": (done.stderr or done.stdout)[-2000:],
        }
    return json.loads(lines[-1])


def with_model(rows: list[dict[str, Any]]) -> None:
    """Add the ring-allreduce bytes, the allreduce's share and the scaling efficiency."""
    single = {
        (row["net"], row["threads"]): row["steps_per_s"]
        for row in rows
        if row.get("ranks") == 1 and "error" not in row
    }
    for row in rows:
        if "error" in row:
            continue
        k = row["ranks"]
        row["ring_bytes_sent_per_rank"] = 2 * (k - 1) / k * row["buffer_bytes"]
        row["allreduce_share"] = row["allreduce_s_per_step"] * row["steps_per_s"]
        base = single.get((row["net"], row["threads"]))
        row["efficiency"] = row["steps_per_s"] / (k * base) if base else None


def markdown(info: dict[str, Any]) -> str:
    lines = [
        f"# tinyconv data-parallel training: {info['machine']}, {info['date']}",
        "",
        f"- CPU: {info['cpu']['model']}, {info['cpu']['cores']} cores available; MPI: {info['mpi']}",
        f"- global batch {info['batch']}, {info['steps']} timed steps after {info['warmup']} warm-up steps, "
        f"Adam, float32; load average before/after: {info['load_average']['before']} / "
        f"{info['load_average']['after']}",
        "",
        "| net | ranks | threads/rank | steps/s | samples/s | allreduce ms/step | allreduce share "
        "| ring bytes sent/rank/step | efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in info["results"]:
        if "error" in row:
            lines.append(f"| {row['net']} | {row['ranks']} | {row['threads']} | failed | | | | | |")
            continue
        efficiency = "--" if row["efficiency"] is None else f"{row['efficiency']:.2f}"
        lines.append(
            f"| {row['net']} | {row['ranks']} | {row['threads']} | {row['steps_per_s']:.2f} | "
            f"{row['samples_per_s']:,.0f} | {1000 * row['allreduce_s_per_step']:.2f} | "
            f"{100 * row['allreduce_share']:.1f} % | {row['ring_bytes_sent_per_rank'] / 1e6:.2f} MB | "
            f"{efficiency} |"
        )
    lines += [
        "",
        "Efficiency: steps/s at K ranks / (K x steps/s at 1 rank), same threads per rank; the "
        f"target is >= {TARGET['efficiency']} for {TARGET['net']} at {TARGET['ranks']} ranks. "
        "Allreduce time includes waiting for the slowest rank. Timings from a shared machine "
        "are noisy; compare rows of one run only.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    load_before = environment.load_average()
    rows = []
    for net in args.nets:
        for threads in args.threads:
            for ranks in args.ranks:
                row = run_job(args, net, ranks, threads)
                rows.append(row)
                status = row.get("error", "").strip().splitlines()[-1:] if "error" in row else None
                print(
                    f"{net} ranks {ranks} threads {row['threads']}: "
                    + (
                        f"failed: {status}"
                        if status is not None
                        else f"{row['steps_per_s']:.2f} steps/s"
                    ),
                    flush=True,
                )
    with_model(rows)
    from tinyconv.distributed import import_mpi, mpi_summary

    machine = environment.machine_slug()
    info = {
        "schema": 1,
        "machine": machine,
        "date": environment.today(),
        "quick": args.quick,
        "cpu": {"model": environment.cpu_model(), "cores": environment.available_cores()},
        "mpi": mpi_summary(import_mpi())["library"],
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "mpiexec_args": args.mpiexec_args,
        "load_average": {"before": load_before, "after": environment.load_average()},
        "results": rows,
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(
        args.out, f"distributed-{machine}-{info['date']}" + ("-quick" if args.quick else "")
    )
    for suffix, text in ((".json", json.dumps(info, indent=1) + "\n"), (".md", markdown(info))):
        with open(stem + suffix + ".tmp", "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(stem + suffix + ".tmp", stem + suffix)
    print(markdown(info))
    print(f"wrote {stem}.json and .md")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
