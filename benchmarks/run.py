"""tinyconv's benchmark suite: one entry point for every workload.

    python benchmarks/run.py [--quick] [--threads N[,N...]] [--only GROUP,...] [--out DIR]
                             [--repeats R] [--no-torch] [--no-onnxruntime]

Runs the workloads of :mod:`workloads` (groups gemm, kernels, train, conv, infer, rss, resnet) at each
thread count, timing tinyconv and its peers interleaved, and writes
``<out>/<machine>-<date>.json`` and ``.md`` (``-quick`` is added to the name with ``--quick``),
then prints the table. See ``benchmarks/README.md``.

PyTorch is optional: without it (or with ``--no-torch``, or ``TINYCONV_BENCH_NO_TORCH=1``) the
PyTorch columns are skipped and the files say why. So is ONNX Runtime, the inference peer of the
``infer`` and ``resnet`` groups (it runs tinyconv's own networks, exported with ``onnx``):
``--no-onnxruntime`` or ``TINYCONV_BENCH_NO_ORT=1`` skip it. ``--rss-child`` is internal: it is how the
peak-memory workload starts its fresh child processes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# Only light modules here: NumPy must not be imported before the BLAS thread environment is set.
import environment  # noqa: E402
import memory  # noqa: E402

ALL_GROUPS = ("gemm", "kernels", "train", "conv", "infer", "rss", "resnet")
DEFAULT_OUT = os.path.join(HERE, "results")
# (rounds per workload, shortest sample in seconds, idle pause before each sample in seconds)
FULL_SETTINGS = (7, 0.05, 0.2)
QUICK_SETTINGS = (2, 0.002, 0.0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 2 rounds: a smoke test (seconds)"
    )
    parser.add_argument("--threads", help="thread counts to run at, e.g. 1,2 (default: all cores)")
    parser.add_argument("--only", help=f"comma-separated groups to run, of {','.join(ALL_GROUPS)}")
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="directory for the results (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="rounds per workload (default: 7, quick: 2; peak memory: at most 3)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    parser.add_argument(
        "--no-onnxruntime", action="store_true", help="skip the ONNX Runtime column"
    )
    parser.add_argument("--rss-child", choices=memory.LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--rss-batch", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--rss-steps", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument(
        "--rss-workload",
        choices=memory.WORKLOADS,
        default=memory.DEEPCONVNET_TRAIN,
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--rss-size", type=int, default=224, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.groups = _groups(parser, args.only)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        args.thread_counts = environment.parse_thread_counts(args.threads)
    except ValueError as error:
        parser.error(str(error))
    return args


def _groups(parser: argparse.ArgumentParser, only: str | None) -> list[str]:
    if only is None:
        return list(ALL_GROUPS)
    groups = [g.strip() for g in only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in ALL_GROUPS]
    if unknown or not groups:
        parser.error(f"--only takes groups from {','.join(ALL_GROUPS)}, got {only!r}")
    return [g for g in ALL_GROUPS if g in groups]  # always in the suite's order


def load_torch(disabled: bool) -> tuple[object | None, str]:
    """PyTorch, or None and the reason it is not used."""
    if disabled or os.environ.get("TINYCONV_BENCH_NO_TORCH", "") not in ("", "0"):
        return None, "PyTorch columns skipped: disabled (--no-torch / TINYCONV_BENCH_NO_TORCH)"
    try:
        import torch
    except ImportError as error:
        return (
            None,
            f"PyTorch columns skipped: not importable ({error}); pip install torch==2.13.0 to add them",
        )
    return torch, ""


def load_onnxruntime(disabled: bool) -> tuple[object | None, str]:
    """ONNX Runtime (with onnx, which exports tinyconv's networks for it), or None and the reason
    it is not used."""
    if disabled or os.environ.get("TINYCONV_BENCH_NO_ORT", "") not in ("", "0"):
        return (
            None,
            "ONNX Runtime column skipped: disabled (--no-onnxruntime / TINYCONV_BENCH_NO_ORT)",
        )
    try:
        import onnx  # noqa: F401  (tinyconv.export needs it)
        import onnxruntime
    except ImportError as error:
        return None, (
            f"ONNX Runtime column skipped: not importable ({error}); "
            f"pip install onnx onnxruntime to add it"
        )
    return onnxruntime, ""


def _set_threads(n: int, torch, blas: environment.BlasThreads) -> None:
    import tinyconv

    tinyconv.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    blas.set(n)


def _error_row(workload_id: str, group: str, name: str, threads: int, error: BaseException) -> dict:
    return {
        "id": workload_id,
        "group": group,
        "name": name,
        "unit": "",
        "threads": threads,
        "contenders": {},
        "peer_labels": {},
        "ratios": {},
        "target": None,
        "target_met": None,
        "error": f"{type(error).__name__}: {error}",
    }


def run_pass(ctx, groups: list[str]) -> tuple[list[dict], int]:
    """Every selected workload at one thread count; returns the rows and the number of failures
    (a failing workload is reported and skipped, so one problem does not cost the whole run)."""
    import workloads

    rows, failures = [], 0
    for workload in workloads.timed_workloads(groups, ctx.quick):
        started = time.perf_counter()
        try:
            rows.append(workloads.measure_timed(workload, ctx))
        except Exception as error:
            traceback.print_exc()
            rows.append(_error_row(workload.id, workload.group, workload.name, ctx.threads, error))
            failures += 1
        print(
            f"  [{ctx.threads} thr] {workload.name}: {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    if "rss" in groups:
        try:
            rows += workloads.measure_rss(ctx)
        except Exception as error:
            traceback.print_exc()
            rows.append(
                _error_row(
                    "rss/DeepConvNet", "rss", "DeepConvNet train peak RSS", ctx.threads, error
                )
            )
            failures += 1
    if "resnet" in groups:
        try:
            rows += workloads.measure_resnet_rss(ctx)
        except Exception as error:
            traceback.print_exc()
            rows.append(
                _error_row(
                    "resnet/resnet50_infer_rss",
                    "resnet",
                    "ResNet-50 predict peak RSS",
                    ctx.threads,
                    error,
                )
            )
            failures += 1
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        memory.child_main(
            args.rss_child,
            args.thread_counts[0],
            args.rss_batch,
            args.rss_steps,
            args.rss_workload,
            args.rss_size,
        )
        return 0

    environment.preset_blas_threads_env(args.thread_counts)
    import report
    import workloads

    import tinyconv

    torch, torch_note = load_torch(args.no_torch)
    if torch_note:
        print(torch_note, file=sys.stderr)
    onnxruntime, onnxruntime_note = load_onnxruntime(args.no_onnxruntime)
    if onnxruntime_note:
        print(onnxruntime_note, file=sys.stderr)
    blas = environment.BlasThreads()
    repeats, min_sample_s, settle_s = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    repeats = args.repeats or repeats

    started = time.time()
    load_before = environment.load_average()
    rows, failures = [], 0
    for threads in args.thread_counts:
        _set_threads(threads, torch, blas)
        ctx = workloads.Context(
            threads=threads,
            repeats=repeats,
            min_sample_s=min_sample_s,
            quick=args.quick,
            settle_s=settle_s,
            torch=torch,
            run_py=os.path.abspath(__file__),
            onnxruntime=onnxruntime,
        )
        pass_rows, pass_failures = run_pass(ctx, args.groups)
        rows += pass_rows
        failures += pass_failures

    cores = environment.available_cores()
    info = {
        "schema": 1,
        "machine": environment.machine_slug(cores=cores),
        "date": environment.today(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "load_average": {"before": load_before, "after": environment.load_average()},
        "quick": args.quick,
        "cpu": {"model": environment.cpu_model(), "cores": cores},
        "threads": args.thread_counts,
        "groups": args.groups,
        "repeats": repeats,
        "min_sample_s": min_sample_s,
        "settle_s": settle_s,
        "tinyconv_config": tinyconv.config(),
        "versions": environment.library_versions(torch, onnxruntime),
        "blas_thread_control": blas.method,
        "torch_note": torch_note,
        "onnxruntime_note": onnxruntime_note,
        "results": rows,
        "notes": report.NOTES,
    }
    paths = report.write(info, args.out)
    print(report.markdown_table(rows))
    for note in (torch_note, onnxruntime_note):
        if note:
            print(f"\n{note}")
    print(f"\nwrote {paths['json']} and {paths['md']} ({info['wall_s']} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
