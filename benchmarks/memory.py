"""Peak memory (resident set size) of a DeepConvNet training step and of ResNet-50 inference, one
fresh process per figure.

A process's peak RSS only grows, and whatever ran before in the benchmark process would count, so
every measurement is a child process: ``python benchmarks/run.py --rss-child tinyconv|torch``. The
child imports only NumPy and its own library (the tinyconv child never loads PyTorch and the
PyTorch child never loads tinyconv), creates the batch, notes its RSS (*baseline*), builds the
network and Adam and runs a few training steps (or builds ResNet-50 with 1000 classes and predicts
a batch a few times, in eval mode; PyTorch under ``torch.inference_mode()``), then reports its peak RSS (the address space's
high-water mark ``VmHWM`` on Linux, ``getrusage`` ``ru_maxrss`` elsewhere; see
:func:`_peak_rss_mib` for why not ``ru_maxrss`` on Linux) and the peak minus the baseline (*delta*: the
memory the training or inference itself needed -- parameters, gradients, optimizer state,
activations and scratch buffers). The parent runs the children round-robin, like every other workload.
"""

from __future__ import annotations

import json
import subprocess
import sys

LIBRARIES = ("tinyconv", "torch")
DEEPCONVNET_TRAIN, RESNET50_INFER = "deepconvnet-train", "resnet50-infer"
WORKLOADS = (DEEPCONVNET_TRAIN, RESNET50_INFER)
_MIB = 1024.0 * 1024.0


def _status_mib(field: str) -> float | None:
    """A ``kB`` field of Linux's ``/proc/self/status`` in MiB, or None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mib() -> tuple[float, str]:
    """The process's peak RSS and where the figure came from.

    Linux's ``ru_maxrss`` is inherited: after fork/vfork + exec the child starts with the
    *parent's* peak (the kernel keeps the larger of the old and new address space's high-water
    mark across exec), so a child of a benchmark process that holds PyTorch and large arrays
    would report the parent's few hundred MiB. ``VmHWM`` is the high-water mark of this
    process's own address space, which exec starts afresh; it is what ``ru_maxrss`` would be for
    a process started from nothing. Elsewhere ``ru_maxrss`` is used (KiB on Linux, bytes on macOS).
    """
    high_water = _status_mib("VmHWM")
    if high_water is not None:
        return high_water, "VmHWM (/proc/self/status)"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / _MIB if sys.platform == "darwin" else peak / 1024.0), "getrusage ru_maxrss"


def _current_rss_mib() -> float:
    """RSS now (Linux ``VmRSS``); elsewhere the peak so far, the closest we can get."""
    current = _status_mib("VmRSS")
    return current if current is not None else _peak_rss_mib()[0]


def _tinyconv_steps(threads: int, batch: int, steps: int) -> float:
    import numpy as np

    import tinyconv
    from tinyconv import nets, optimizer

    tinyconv.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, size=batch)
    baseline = _current_rss_mib()
    net = nets.DeepConvNet(seed=0)
    adam = optimizer.Adam()
    for _ in range(steps):
        adam.update(net.params, net.gradient(x, t))
    return baseline


def _torch_steps(threads: int, batch: int, steps: int) -> float:
    import torch
    import torch_nets

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28)
    t = torch.randint(0, 10, (batch,))
    baseline = _current_rss_mib()
    model = torch_nets.deep_conv_net()
    model.train()
    adam = torch_nets.adam(model)
    for _ in range(steps):
        torch_nets.train_step(model, adam, x, t)
    return baseline


def _tinyconv_resnet50_predictions(threads: int, batch: int, calls: int, size: int) -> float:
    import numpy as np

    import tinyconv
    from tinyconv import nets

    tinyconv.set_num_threads(threads)
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    baseline = _current_rss_mib()
    net = nets.resnet50(dtype=np.float32, seed=0)
    for _ in range(calls):
        net.predict(x, train_flg=False)
    return baseline


def _torch_resnet50_predictions(threads: int, batch: int, calls: int, size: int) -> float:
    import torch
    import torch_nets

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch_nets.import_torchvision()  # its import (where it imports) is not part of the figure
    x = torch.rand(batch, 3, size, size)
    baseline = _current_rss_mib()
    model, _ = torch_nets.torchvision_resnet("resnet50")
    model.eval()
    with torch.inference_mode():
        for _ in range(calls):
            model(x)
    return baseline


def child_main(
    library: str,
    threads: int,
    batch: int,
    steps: int,
    workload: str = DEEPCONVNET_TRAIN,
    image_size: int = 224,
) -> None:
    """The child's whole job: train (or predict), then print one JSON line with the figures in MiB."""
    if workload == DEEPCONVNET_TRAIN:
        run = {"tinyconv": _tinyconv_steps, "torch": _torch_steps}[library]
        baseline = run(threads, batch, steps)
    else:
        run = {"tinyconv": _tinyconv_resnet50_predictions, "torch": _torch_resnet50_predictions}[
            library
        ]
        baseline = run(threads, batch, steps, image_size)
    peak, source = _peak_rss_mib()
    print(
        json.dumps(
            {
                "library": library,
                "workload": workload,
                "peak_mib": peak,
                "baseline_mib": baseline,
                "delta_mib": peak - baseline,
                "batch": batch,
                "steps": steps,
                "peak_source": source,
            }
        )
    )


def _run_child(
    run_py: str, library: str, threads: int, batch: int, steps: int, workload: str, image_size: int
) -> dict[str, float]:
    command = [
        sys.executable,
        run_py,
        "--rss-child",
        library,
        "--threads",
        str(threads),
        "--rss-batch",
        str(batch),
        "--rss-steps",
        str(steps),
        "--rss-workload",
        workload,
        "--rss-size",
        str(image_size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(
            f"peak-memory child for {library} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_peak_rss(
    run_py: str,
    libraries: list[str],
    threads: int,
    batch: int,
    steps: int,
    repeats: int,
    workload: str = DEEPCONVNET_TRAIN,
    image_size: int = 224,
) -> tuple[dict[str, dict[str, list[float]]], str]:
    """``{library: {"peak_mib": [...], "baseline_mib": [...], "delta_mib": [...]}}``, one entry
    per repeat, children run round-robin (tinyconv, torch, tinyconv, torch, ...), and how the
    peaks were read."""
    sources = set()
    figures: dict[str, dict[str, list[float]]] = {
        library: {"peak_mib": [], "baseline_mib": [], "delta_mib": []} for library in libraries
    }
    for _ in range(repeats):
        for library in libraries:
            report = _run_child(run_py, library, threads, batch, steps, workload, image_size)
            for key in figures[library]:
                figures[library][key].append(float(report[key]))
            sources.add(report["peak_source"])
    return figures, ", ".join(sorted(sources))
