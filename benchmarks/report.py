"""Results files: ``<machine>-<date>.json`` (everything) and ``<machine>-<date>.md`` (the table).

The Markdown table has one row per workload and thread count: tinyconv's figure, each peer's
figure (median, with min-max over the rounds in parentheses), the ratio tinyconv / peer of the
medians, and the issue's target for the row with a check mark. Files are written to a temporary
name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import os

TINYCONV, NUMPY, TORCH, ORT = "tinyconv", "numpy", "torch", "onnxruntime"

NOTES = [
    "These figures come from shared, noisy machines (other jobs, frequency scaling, a hypervisor). "
    "Absolute numbers move from run to run; only ratios measured within the same run count.",
    "Every workload runs its contenders interleaved: each round runs every contender once, in rotating "
    "order, after one warm-up round. Cells show the median over the rounds and (min-max).",
    "Ratios are tinyconv / peer of the medians in the row's unit: for ms and MiB lower is better, "
    "for GFLOP/s and img/s higher is better. The target column is the issue's goal for that ratio.",
    "The NumPy peer is numpy.matmul (OpenBLAS) for GEMM, tinyconv.reference (DLfS's im2col "
    "formulation; it computes in float64 and rounds the result to float32) for kernels, and a "
    "DLfS-style float32 NumPy network (tests/dlfs_oracle.py layers, in-place Adam) for train/infer.",
    "The ONNX Runtime peer runs tinyconv's own network (the same weights), exported by "
    "tinyconv.export.to_onnx with the batch size fixed, on its CPU provider with intra_op_num_threads "
    "set to the row's thread count.",
    "Peak RSS comes from a fresh child process per figure (VmHWM on Linux, where a child's ru_maxrss "
    "starts at its parent's peak; ru_maxrss elsewhere). 'peak RSS' is the absolute "
    "peak, which includes each library's own code and import-time allocations (PyTorch's are large); "
    "'minus RSS after imports+data' is what the training steps themselves added.",
]


def file_stem(machine: str, date: str, quick: bool) -> str:
    """``<machine>-<date>``; quick (smoke) runs add ``-quick`` so they never replace a real run."""
    return f"{machine}-{date}" + ("-quick" if quick else "")


def _write_atomically(path: str, text: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def _number(value: float) -> str:
    """Three significant figures without scientific notation (12,300 / 123 / 12.3 / 1.23)."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(row: dict, contender: str) -> str:
    if row.get("error") and contender == TINYCONV:
        return f"error: {row['error']}".replace("|", "/")
    figures = row["contenders"].get(contender)
    if figures is None:
        return "--"
    text = f"{_number(figures['median'])} ({_number(figures['min'])}-{_number(figures['max'])})"
    gflops = row.get("gflops", {}).get(contender)
    if gflops is not None:
        text += f", {_number(gflops)} GFLOP/s"
    return text


def _ratio_cell(row: dict, peer: str) -> str:
    ratio = row["ratios"].get(peer)
    return "--" if ratio is None else f"{ratio:.2f}x"


def _target_cells(row: dict) -> list[str]:
    target = row.get("target")
    if target is None:
        return ["", ""]
    met = row.get("target_met")
    return [target["text"], "n/a (peer skipped)" if met is None else ("✓" if met else "✗")]


def markdown_table(rows: list[dict]) -> str:
    header = [
        "Workload",
        "threads",
        "unit",
        "tinyconv",
        "NumPy",
        "PyTorch",
        "ONNX Runtime",
        "tinyconv/NumPy",
        "tinyconv/PyTorch",
        "tinyconv/ORT",
        "target",
        "met",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["name"],
            str(row["threads"]),
            row["unit"],
            _cell(row, TINYCONV),
            _cell(row, NUMPY),
            _cell(row, TORCH),
            _cell(row, ORT),
            _ratio_cell(row, NUMPY),
            _ratio_cell(row, TORCH),
            _ratio_cell(row, ORT),
            *_target_cells(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _environment_lines(info: dict) -> list[str]:
    config = info["tinyconv_config"]
    versions = info["versions"]
    return [
        f"- CPU: {info['cpu']['model']}, {info['cpu']['cores']} cores available; threads used: "
        + ", ".join(str(n) for n in info["threads"]),
        f"- tinyconv {config.get('version')}: GEMM ISA {config.get('isa')} ({config.get('simd_bits')}-bit), "
        f"{config.get('compiler')}, OpenMP {config.get('openmp')}",
        f"- Python {versions['python']}, NumPy {versions['numpy']}, PyTorch {versions['torch'] or 'not used'}"
        + (f" ({info['torch_note']})" if info.get("torch_note") else "")
        + f", ONNX Runtime {versions.get('onnxruntime') or 'not used'}"
        + (f" ({info['onnxruntime_note']})" if info.get("onnxruntime_note") else ""),
        f"- NumPy BLAS threads set by: {info['blas_thread_control']}",
        f"- Load average (1/5/15 min) before: {_load(info['load_average']['before'])}, "
        f"after: {_load(info['load_average']['after'])}",
        f"- {info['repeats']} rounds per workload, samples of at least {info['min_sample_s'] * 1e3:g} ms"
        + (" (--quick: tiny sizes, smoke test only)" if info["quick"] else ""),
    ]


def _load(values: list[float] | None) -> str:
    return "unknown" if values is None else " / ".join(f"{v:.2f}" for v in values)


def _peer_lines(rows: list[dict]) -> list[str]:
    """Which peer each column means, per group (the NumPy column changes meaning)."""
    seen: dict[str, dict[str, str]] = {}
    for row in rows:
        seen.setdefault(row["group"], {}).update(row["peer_labels"])
    return [
        f"- {group}: " + "; ".join(f"{peer} = {label}" for peer, label in labels.items())
        for group, labels in seen.items()
    ]


def markdown(info: dict) -> str:
    title = f"# tinyconv benchmarks: {info['machine']}, {info['date']}" + (
        " (quick)" if info["quick"] else ""
    )
    parts = [
        title,
        "",
        *_environment_lines(info),
        "",
        markdown_table(info["results"]),
        "",
        "Peers by group:",
        *_peer_lines(info["results"]),
        "",
        "## Notes",
        "",
    ]
    parts += [f"- {note}" for note in info["notes"]]
    return "\n".join(parts) + "\n"


def write(info: dict, out_dir: str) -> dict[str, str]:
    """Write the JSON and Markdown files; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, file_stem(info["machine"], info["date"], info["quick"]))
    paths = {"json": stem + ".json", "md": stem + ".md"}
    _write_atomically(paths["json"], json.dumps(info, indent=1, default=_jsonable) + "\n")
    _write_atomically(paths["md"], markdown(info))
    return paths


def _jsonable(value: object) -> object | None:
    """NumPy scalars and other odds that json cannot write by itself."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
