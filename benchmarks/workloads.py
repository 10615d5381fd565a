"""The workloads, by group, and how each is measured.

Groups (``--only`` takes these names):

* ``gemm``    -- ``tinyconv.functional.gemm`` vs ``numpy.matmul`` (OpenBLAS), float32 and float64,
  square sizes and the per-image GEMMs of the two large convolutions; GFLOP/s.
* ``kernels`` -- im2col, convolution forward/backward, max/avg pooling forward/backward vs the
  NumPy reference (``tinyconv.reference``, DLfS's im2col formulation) and ``torch``'s kernels; ms.
* ``train``   -- one training step (forward, backward, Adam) of SimpleConvNet and DeepConvNet,
  batch 100, float32, vs a DLfS-style NumPy implementation and ``torch.nn``; ms.
* ``conv``    -- convolution forward + backward of two ResNet-like layers vs PyTorch; ms (and
  GFLOP/s).
* ``infer``   -- SimpleConvNet prediction, batch 1000, vs DLfS NumPy, PyTorch and ONNX Runtime;
  DeepConvNet prediction, batch 500, vs PyTorch and ONNX Runtime; images/s.
* ``rss``     -- peak RSS of a DeepConvNet training step, batch 256, vs PyTorch; MiB (see
  :mod:`memory`).
* ``resnet``  -- ResNet-50 inference (batch 8, 3x224x224; also vs ONNX Runtime) and a ResNet-20
  training step (batch 128, 1x28x28, SGD with momentum) vs PyTorch, ms; peak RSS of the ResNet-50
  inference, MiB.

Each workload builds its inputs and contenders only when it runs and drops them afterwards, so
one workload's arrays never sit in memory during another. Contender keys are ``tinyconv``,
``numpy``, ``torch`` and ``onnxruntime``; results report ``tinyconv / peer`` ratios of medians in
the row's unit, so for times lower is better and for throughputs higher is better.

ONNX Runtime runs the very network tinyconv times, exported by :func:`tinyconv.export.to_onnx`
(same weights, the batch size fixed), on its CPU provider with the pass's thread count as
``intra_op_num_threads`` (and one inter-op thread).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

import harness
import memory
import numpy as np

TINYCONV, NUMPY, TORCH, ORT = "tinyconv", "numpy", "torch", "onnxruntime"
ORT_LABEL = "ONNX Runtime, CPU provider, tinyconv.export model (same weights)"


@dataclass
class Context:
    """What every workload needs to know about this pass."""

    threads: int
    repeats: int
    min_sample_s: float
    quick: bool
    torch: ModuleType | None  # None: PyTorch unavailable or disabled
    run_py: str  # path of run.py, for the peak-memory child processes
    settle_s: float = 0.0  # idle pause before each sample (see harness.measure_interleaved)
    onnxruntime: ModuleType | None = None  # None: ONNX Runtime (or onnx) unavailable or disabled


@dataclass(frozen=True)
class Target:
    """The issue's goal for a row: ``tinyconv / peer`` compared with ``ratio``."""

    peer: str
    ratio: float
    at_least: bool  # True: ratio must be >= (throughputs); False: <= (times, memory)

    def text(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.ratio:g}x {self.peer}"

    def met(self, achieved: float) -> bool:
        return achieved >= self.ratio if self.at_least else achieved <= self.ratio


@dataclass
class Workload:
    """One row of the results: a set of contenders doing the same work.

    ``build`` makes the contenders (zero-argument callables) for a context; ``work`` is the
    FLOP count (unit GFLOP/s) or image count (unit img/s) of one call, used to turn times into
    throughputs; ``flops``, for rows reported in ms, adds GFLOP/s as a secondary figure.
    """

    id: str
    group: str
    name: str
    unit: str
    build: Callable[[Context], dict[str, harness.Contender]] | None  # None: not a timed row
    peer_labels: dict[str, str]
    work: float | None = None
    flops: float | None = None
    target: Target | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return self.unit in ("GFLOP/s", "img/s")


# ----------------------------------------------------------------------------------------------
# Summaries


def summarize(values: Sequence[float]) -> dict[str, object]:
    """Median, min and max of one contender's figures, and the figures themselves."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }


def _in_unit(workload: Workload, seconds: float) -> float:
    if workload.unit == "ms":
        return seconds * 1e3
    if workload.unit == "GFLOP/s":
        return workload.work / seconds / 1e9
    if workload.unit == "img/s":
        return workload.work / seconds
    raise ValueError(f"no time conversion for unit {workload.unit}")


def _result(
    workload: Workload,
    ctx: Context,
    figures: dict[str, dict[str, object]],
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """The JSON record of one row: summaries per contender, ratios to tinyconv, target check."""
    mine = figures[TINYCONV]["median"]
    ratios = {peer: mine / figures[peer]["median"] for peer in figures if peer != TINYCONV}
    target = workload.target
    met = None
    if target is not None and target.peer in ratios:
        met = target.met(ratios[target.peer])
    record = {
        "id": workload.id,
        "group": workload.group,
        "name": workload.name,
        "unit": workload.unit,
        "higher_is_better": workload.higher_is_better,
        "threads": ctx.threads,
        "contenders": figures,
        "peer_labels": {p: workload.peer_labels[p] for p in figures if p != TINYCONV},
        "ratios": ratios,
        "target": None
        if target is None
        else {
            "peer": target.peer,
            "ratio": target.ratio,
            "at_least": target.at_least,
            "text": target.text(),
        },
        "target_met": met,
        "details": workload.details,
    }
    record.update(extra or {})
    return record


def measure_timed(workload: Workload, ctx: Context) -> dict[str, object]:
    contenders = workload.build(ctx)
    timings = harness.measure_interleaved(
        contenders, ctx.repeats, ctx.min_sample_s, settle_s=ctx.settle_s
    )
    figures = {}
    for name, timing in timings.items():
        figures[name] = summarize([_in_unit(workload, s) for s in timing.seconds])
        figures[name]["calls_per_sample"] = timing.calls_per_sample
    extra = {}
    if workload.flops:
        extra["gflops"] = {
            name: workload.flops / timing.median / 1e9 for name, timing in timings.items()
        }
    return _result(workload, ctx, figures, extra)


# ----------------------------------------------------------------------------------------------
# Inputs


def _rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _normal(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return _rng().standard_normal(shape).astype(dtype)


def _images_and_labels(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped float32 images in [0, 1) and integer labels."""
    rng = _rng()
    return rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, size=batch)


def _conv_out(size: int, k: int, pad: int, stride: int = 1) -> int:
    return (size + 2 * pad - k) // stride + 1


def _conv_forward_flops(
    n: int, c: int, size: int, fn: int, k: int, pad: int, stride: int = 1
) -> float:
    """FLOPs of one convolution forward pass over square images (a multiply-add is 2)."""
    out = _conv_out(size, k, pad, stride)
    return 2.0 * n * fn * c * k * k * out * out


# ----------------------------------------------------------------------------------------------
# GEMM


def _gemm_workload(m: int, k: int, n: int, dtype, label: str) -> Workload:
    def build(ctx: Context) -> dict[str, harness.Contender]:
        from tinyconv import functional as F

        a, b = _normal((m, k), dtype), _normal((k, n), dtype)
        return {TINYCONV: lambda: F.gemm(a, b), NUMPY: lambda: np.matmul(a, b)}

    dt = np.dtype(dtype).name
    return Workload(
        id=f"gemm/{dt}/{m}x{k}x{n}",
        group="gemm",
        name=f"GEMM {dt} {label}",
        unit="GFLOP/s",
        build=build,
        peer_labels={NUMPY: "numpy.matmul (OpenBLAS)"},
        work=2.0 * m * n * k,
        target=Target(NUMPY, 0.8, at_least=True),
        details={"m": m, "k": k, "n": n, "dtype": dt},
    )


def gemm_workloads(quick: bool) -> list[Workload]:
    squares = [96] if quick else [256, 512, 1024, 2048]
    # The per-image GEMMs of the "conv" group: (filters) x (C*FH*FW) times (C*FH*FW) x (OH*OW).
    conv_shapes = (
        []
        if quick
        else [
            (64, 576, 3136, "conv3x3 64->64 56x56 per image"),
            (64, 256, 3136, "conv1x1 256->64 56x56 per image"),
        ]
    )
    workloads = []
    for dtype in (np.float32, np.float64):
        workloads += [_gemm_workload(s, s, s, dtype, f"{s}x{s}x{s}") for s in squares]
        workloads += [
            _gemm_workload(m, k, n, dtype, f"{m}x{k}x{n} ({label})")
            for m, k, n, label in conv_shapes
        ]
    return workloads


# ----------------------------------------------------------------------------------------------
# Kernels


def _kernel_shapes(quick: bool) -> dict[str, int]:
    if quick:
        return {"n": 4, "c": 4, "size": 12, "fn": 4}
    return {"n": 32, "c": 32, "size": 28, "fn": 32}


def _kernel_contenders(op: str, shapes: dict[str, int], torch) -> dict[str, harness.Contender]:
    """tinyconv, the NumPy reference and (when given) PyTorch doing kernel ``op`` on the same
    float32 data: 3x3 filters with pad 1 for im2col/conv, 2x2 windows with stride 2 for pooling."""
    from tinyconv import functional as F
    from tinyconv import reference as R
    from tinyconv import util

    n, c, size, fn = shapes["n"], shapes["c"], shapes["size"], shapes["fn"]
    x, W, b = _normal((n, c, size, size)), _normal((fn, c, 3, 3)), _normal((fn,))
    conv_dout = _normal((n, fn, size, size))
    pool_dout = _normal((n, c, size // 2, size // 2))
    argmax = F.max_pool2d_forward(x, 2, 2, 2)[1]
    ours_and_reference = {
        "im2col": (lambda: util.im2col(x, 3, 3, 1, 1), lambda: R.im2col(x, 3, 3, 1, 1)),
        "conv_forward": (
            lambda: F.conv2d_forward(x, W, b, 1, 1),
            lambda: R.conv2d_forward(x, W, b, 1, 1),
        ),
        "conv_backward": (
            lambda: F.conv2d_backward(conv_dout, x, W, 1, 1),
            lambda: R.conv2d_backward(conv_dout, x, W, 1, 1),
        ),
        "max_pool_forward": (
            lambda: F.max_pool2d_forward(x, 2, 2, 2),
            lambda: R.max_pool2d_forward(x, 2, 2, 2),
        ),
        "max_pool_backward": (
            lambda: F.max_pool2d_backward(pool_dout, argmax, x.shape),
            lambda: R.max_pool2d_backward(pool_dout, argmax, x.shape),
        ),
        "avg_pool_forward": (
            lambda: F.avg_pool2d_forward(x, 2, 2, 2),
            lambda: R.avg_pool2d_forward(x, 2, 2, 2),
        ),
        "avg_pool_backward": (
            lambda: F.avg_pool2d_backward(pool_dout, x.shape, 2, 2, 2),
            lambda: R.avg_pool2d_backward(pool_dout, x.shape, 2, 2, 2),
        ),
    }
    ours, reference = ours_and_reference[op]
    contenders = {TINYCONV: ours, NUMPY: reference}
    if torch is not None:
        contenders[TORCH] = _torch_kernel(op, torch, x, W, b, conv_dout, pool_dout)
    return contenders


def _torch_kernel(op: str, torch, x, W, b, conv_dout, pool_dout) -> harness.Contender:
    """PyTorch's kernel for ``op``, called directly (``torch.ops.aten`` for the backward passes),
    so no autograd bookkeeping is timed."""
    import torch.nn.functional as TF

    aten = torch.ops.aten
    tx, tW, tb = torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(b)
    tconv_dout, tpool_dout = torch.from_numpy(conv_dout), torch.from_numpy(pool_dout)
    _, indices = TF.max_pool2d(tx, 2, 2, return_indices=True)
    fn = W.shape[0]
    calls = {
        "im2col": lambda: TF.unfold(tx, 3, padding=1),
        "conv_forward": lambda: TF.conv2d(tx, tW, tb, padding=1),
        "conv_backward": lambda: aten.convolution_backward(
            tconv_dout, tx, tW, [fn], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]
        ),
        "max_pool_forward": lambda: TF.max_pool2d(tx, 2, 2, return_indices=True),
        "max_pool_backward": lambda: aten.max_pool2d_with_indices_backward(
            tpool_dout, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        ),
        "avg_pool_forward": lambda: TF.avg_pool2d(tx, 2, 2),
        "avg_pool_backward": lambda: aten.avg_pool2d_backward(
            tpool_dout, tx, [2, 2], [2, 2], [0, 0], False, True, None
        ),
    }
    return calls[op]


_KERNEL_NAMES = {
    "im2col": "im2col 3x3 pad 1",
    "conv_forward": "conv forward 3x3 pad 1",
    "conv_backward": "conv backward 3x3 pad 1",
    "max_pool_forward": "max pool forward 2x2/2",
    "max_pool_backward": "max pool backward 2x2/2",
    "avg_pool_forward": "avg pool forward 2x2/2",
    "avg_pool_backward": "avg pool backward 2x2/2",
}


def kernel_workloads(quick: bool) -> list[Workload]:
    shapes = _kernel_shapes(quick)
    where = f"x {shapes['n']}x{shapes['c']}x{shapes['size']}x{shapes['size']}"
    workloads = []
    for op, label in _KERNEL_NAMES.items():
        filters = f", {shapes['fn']} filters" if op.startswith("conv") else ""
        workloads.append(
            Workload(
                id=f"kernels/{op}",
                group="kernels",
                name=f"{label} ({where}{filters})",
                unit="ms",
                build=lambda ctx, op=op: _kernel_contenders(op, shapes, ctx.torch),
                peer_labels={
                    NUMPY: "tinyconv.reference (NumPy, DLfS im2col)",
                    TORCH: "torch.nn.functional / aten",
                },
                details={**shapes, "dtype": "float32"},
            )
        )
    return workloads


# ----------------------------------------------------------------------------------------------
# Training steps


def _tinyconv_train_step(network: str, batch: int) -> harness.Contender:
    from tinyconv import nets, optimizer

    net = {"SimpleConvNet": nets.SimpleConvNet, "DeepConvNet": nets.DeepConvNet}[network](seed=0)
    adam = optimizer.Adam()
    x, t = _images_and_labels(batch)
    return lambda: adam.update(net.params, net.gradient(x, t))


def _dlfs_train_step(network: str, batch: int) -> harness.Contender:
    import dlfs_numpy

    from tinyconv import nets

    np.random.seed(0)  # DLfS initialises (and draws dropout masks) from np.random
    if network == "SimpleConvNet":
        net = dlfs_numpy.simple_conv_net()
    else:
        net = dlfs_numpy.DeepConvNet(nets.DeepConvNet(seed=0).conv_params)
    adam = dlfs_numpy.Adam()
    x, t = _images_and_labels(batch)
    return lambda: dlfs_numpy.train_step(net, adam, x, t)


def _torch_train_step(network: str, batch: int, torch) -> harness.Contender:
    import torch_nets

    from tinyconv import nets

    torch.manual_seed(0)
    if network == "SimpleConvNet":
        model = torch_nets.simple_conv_net()
    else:
        conv_params = nets.DeepConvNet(seed=0).conv_params
        if [dict(p) for p in conv_params] != [dict(p) for p in torch_nets.DLFS_DEEP_CONV_PARAMS]:
            raise RuntimeError(
                "torch_nets.DLFS_DEEP_CONV_PARAMS no longer matches tinyconv.nets.DeepConvNet"
            )
        model = torch_nets.deep_conv_net(conv_params)
    model.train()
    adam = torch_nets.adam(model)
    x, t = _images_and_labels(batch)
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)
    return lambda: torch_nets.train_step(model, adam, tx, tt)


def _train_contenders(network: str, batch: int, ctx: Context) -> dict[str, harness.Contender]:
    contenders = {
        TINYCONV: _tinyconv_train_step(network, batch),
        NUMPY: _dlfs_train_step(network, batch),
    }
    if ctx.torch is not None:
        contenders[TORCH] = _torch_train_step(network, batch, ctx.torch)
    return contenders


def train_workloads(quick: bool) -> list[Workload]:
    batch = 8 if quick else 100
    targets = {
        "SimpleConvNet": Target(TORCH, 0.33, at_least=False),
        "DeepConvNet": Target(TORCH, 0.8, at_least=False),
    }
    return [
        Workload(
            id=f"train/{network}",
            group="train",
            name=f"{network} train step (batch {batch}, Adam)",
            unit="ms",
            build=lambda ctx, network=network: _train_contenders(network, batch, ctx),
            peer_labels={NUMPY: "DLfS-style NumPy", TORCH: "torch.nn + torch.optim.Adam"},
            target=target,
            details={"batch": batch, "dtype": "float32", "optimizer": "Adam"},
        )
        for network, target in targets.items()
    ]


# ----------------------------------------------------------------------------------------------
# Large convolutions, forward + backward


def _conv_pass_contenders(
    n, c, size, fn, k, pad, ctx: Context, stride: int = 1
) -> dict[str, harness.Contender]:
    from tinyconv import functional as F

    x, W, b = _normal((n, c, size, size)), _normal((fn, c, k, k)), _normal((fn,))
    out = _conv_out(size, k, pad, stride)
    dout = _normal((n, fn, out, out))

    def tinyconv_pass():
        F.conv2d_forward(x, W, b, stride, pad)
        return F.conv2d_backward(dout, x, W, stride, pad)

    contenders = {TINYCONV: tinyconv_pass}
    if ctx.torch is not None:
        torch = ctx.torch
        tx, tW, tb, tdout = (torch.from_numpy(a) for a in (x, W, b, dout))

        def torch_pass():
            torch.nn.functional.conv2d(tx, tW, tb, stride=stride, padding=pad)
            return torch.ops.aten.convolution_backward(
                tdout,
                tx,
                tW,
                [fn],
                [stride, stride],
                [pad, pad],
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, True],
            )

        contenders[TORCH] = torch_pass
    return contenders


def conv_workloads(quick: bool) -> list[Workload]:
    # (name, N, C, H=W, filters, kernel, stride, pad, target ratio vs PyTorch); 3x3/2 is
    # ResNet-20's downsampling layer (stage 1 -> 2), the strided route of conv.cpp.
    layers = [
        ("3x3", 32, 64, 56, 64, 3, 1, 1, 1.0),
        ("1x1", 32, 256, 56, 64, 1, 1, 0, 0.5),
        ("3x3/2", 128, 16, 28, 32, 3, 2, 1, 1.0),
    ]
    if quick:
        layers = [
            ("3x3", 2, 8, 14, 8, 3, 1, 1, 1.0),
            ("1x1", 2, 16, 14, 8, 1, 1, 0, 0.5),
            ("3x3/2", 2, 4, 14, 8, 3, 2, 1, 1.0),
        ]
    workloads = []
    for kind, n, c, size, fn, k, stride, pad, ratio in layers:
        forward_flops = _conv_forward_flops(n, c, size, fn, k, pad, stride)
        workloads.append(
            Workload(
                id=f"conv/{kind}",
                group="conv",
                name=f"conv {kind} {c}->{fn} {size}x{size} N={n} fwd+bwd",
                unit="ms",
                build=lambda ctx, n=n, c=c, size=size, fn=fn, k=k, pad=pad, stride=stride: (
                    _conv_pass_contenders(n, c, size, fn, k, pad, ctx, stride)
                ),
                peer_labels={TORCH: "torch conv2d + aten.convolution_backward"},
                flops=3 * forward_flops,  # forward, dW and dx each cost one forward's FLOPs
                target=Target(TORCH, ratio, at_least=False),
                details={
                    "n": n,
                    "c": c,
                    "size": size,
                    "filters": fn,
                    "kernel": k,
                    "stride": stride,
                    "pad": pad,
                    "dtype": "float32",
                },
            )
        )
    return workloads


# ----------------------------------------------------------------------------------------------
# Inference


def _torch_inference(model, x: np.ndarray, torch) -> harness.Contender:
    model.eval()
    tx = torch.from_numpy(x)

    def torch_predict():
        with torch.inference_mode():
            return model(tx)

    return torch_predict


# ONNX Runtime must compute what tinyconv computes (same weights, same function), within float32
# rounding, or its timing compares different work.
_ORT_AGREEMENT = 1e-3


def _onnxruntime_inference(network, x: np.ndarray, ctx: Context) -> harness.Contender:
    """ONNX Runtime running ``network`` itself, exported for batches of ``len(x)``; checked once
    against ``network.predict``."""
    from tinyconv.export import to_onnx

    ort = ctx.onnxruntime
    options = ort.SessionOptions()
    options.intra_op_num_threads = ctx.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    with tempfile.TemporaryDirectory(prefix="tinyconv-bench-") as directory:
        path = os.path.join(directory, "model.onnx")
        to_onnx(network, path, batch_size=x.shape[0], input_shape=x.shape[1:])
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {"input": x}
    expected = network.predict(x)
    difference = float(np.max(np.abs(session.run(["logits"], feed)[0] - expected)))
    if not difference <= _ORT_AGREEMENT * float(np.max(np.abs(expected))):
        raise RuntimeError(f"ONNX Runtime's logits differ from tinyconv's by {difference:.3g}")
    return lambda: session.run(["logits"], feed)


def _inference_contenders(network: str, batch: int, ctx: Context) -> dict[str, harness.Contender]:
    import dlfs_numpy

    from tinyconv import nets

    x, _ = _images_and_labels(batch)
    net = {"SimpleConvNet": nets.SimpleConvNet, "DeepConvNet": nets.DeepConvNet}[network](seed=0)
    contenders = {TINYCONV: lambda: net.predict(x)}
    if network == "SimpleConvNet":
        np.random.seed(0)
        dlfs_net = dlfs_numpy.simple_conv_net()
        contenders[NUMPY] = lambda: dlfs_net.predict(x)
    if ctx.torch is not None:
        import torch_nets

        model = (
            torch_nets.simple_conv_net()
            if network == "SimpleConvNet"
            else torch_nets.deep_conv_net(net.conv_params)
        )
        contenders[TORCH] = _torch_inference(model, x, ctx.torch)
    if ctx.onnxruntime is not None:
        contenders[ORT] = _onnxruntime_inference(net, x, ctx)
    return contenders


def infer_workloads(quick: bool) -> list[Workload]:
    batches = (
        {"SimpleConvNet": 50, "DeepConvNet": 10}
        if quick
        else {"SimpleConvNet": 1000, "DeepConvNet": 500}
    )
    targets = {"SimpleConvNet": Target(TORCH, 3.0, at_least=True), "DeepConvNet": None}
    return [
        Workload(
            id=f"infer/{network}",
            group="infer",
            name=f"{network} predict (batch {batch})",
            unit="img/s",
            build=lambda ctx, network=network, batch=batch: _inference_contenders(
                network, batch, ctx
            ),
            peer_labels={
                NUMPY: "DLfS-style NumPy",
                TORCH: "torch.nn, inference_mode",
                ORT: ORT_LABEL,
            },
            work=float(batch),
            target=targets[network],
            details={"batch": batch, "dtype": "float32"},
        )
        for network, batch in batches.items()
    ]


# ----------------------------------------------------------------------------------------------
# Peak memory


def measure_rss(ctx: Context) -> list[dict[str, object]]:
    """Two rows, absolute peak RSS and peak minus the post-import baseline, both against the
    issue's target (see :mod:`memory` for the method)."""
    batch, steps = (16, 1) if ctx.quick else (256, 3)
    libraries = [TINYCONV] + ([TORCH] if ctx.torch is not None else [])
    # Peaks vary little from run to run and every figure costs a process start (PyTorch's import
    # takes seconds), so at most 3 rounds here.
    rounds = 1 if ctx.quick else min(ctx.repeats, 3)
    figures, peak_source = memory.measure_peak_rss(
        ctx.run_py, libraries, ctx.threads, batch, steps, rounds
    )
    rows = []
    for key, label in (
        ("peak_mib", "peak RSS"),
        ("delta_mib", "peak RSS minus RSS after imports+data"),
    ):
        workload = Workload(
            id=f"rss/DeepConvNet/{key.split('_')[0]}",
            group="rss",
            name=f"DeepConvNet train (batch {batch}, {steps} step{'s' if steps != 1 else ''}) {label}",
            unit="MiB",
            build=None,
            peer_labels={TORCH: "torch.nn + torch.optim.Adam"},
            target=Target(TORCH, 0.7, at_least=False),
            details={"batch": batch, "steps": steps, "process": "fresh child per figure"},
        )
        summaries = {library: summarize(figures[library][key]) for library in libraries}
        baselines = {library: summarize(figures[library]["baseline_mib"]) for library in libraries}
        rows.append(
            _result(
                workload, ctx, summaries, {"baseline_mib": baselines, "peak_source": peak_source}
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------
# ResNets


def resnet_sizes(quick: bool) -> dict[str, int]:
    """ResNet-50 inference batch and image size, ResNet-20 training batch (its images are
    Fashion-MNIST's 1x28x28, what tinyconv trains it on)."""
    if quick:
        return {"infer_batch": 1, "infer_size": 32, "train_batch": 4}
    return {"infer_batch": 8, "infer_size": 224, "train_batch": 128}


def _resnet50_inference_contenders(
    batch: int, size: int, ctx: Context, details: dict[str, object]
) -> dict[str, harness.Contender]:
    """tinyconv's and PyTorch's ResNet-50 predicting; records in ``details`` where PyTorch's model
    came from (``torchvision.models`` or ``torch_nets.ResNet``)."""
    from tinyconv import nets

    x = _rng().random((batch, 3, size, size), dtype=np.float32)
    net = nets.resnet50(dtype=np.float32, seed=0)
    contenders = {TINYCONV: lambda: net.predict(x, train_flg=False)}
    if ctx.torch is not None:
        import torch_nets

        model, details["torch_model"] = torch_nets.torchvision_resnet("resnet50")
        contenders[TORCH] = _torch_inference(model, x, ctx.torch)
    if ctx.onnxruntime is not None:
        contenders[ORT] = _onnxruntime_inference(net, x, ctx)
    return contenders


def _resnet20_train_contenders(batch: int, ctx: Context) -> dict[str, harness.Contender]:
    from tinyconv import nets, optimizer

    x, t = _images_and_labels(batch)
    net = nets.resnet20(num_classes=10, in_channels=1, dtype=np.float32, seed=0)
    momentum = optimizer.Momentum(lr=0.01, momentum=0.9)
    contenders = {TINYCONV: lambda: momentum.update(net.params, net.gradient(x, t))}
    if ctx.torch is not None:
        import torch_nets

        torch = ctx.torch
        torch.manual_seed(0)
        model = torch_nets.cifar_resnet("resnet20", num_classes=10, in_channels=1)
        model.train()
        sgd = torch_nets.sgd_momentum(model, lr=0.01, momentum=0.9)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        contenders[TORCH] = lambda: torch_nets.train_step(model, sgd, tx, tt)
    return contenders


TORCH_RESNET50_LABEL = "torch.nn ResNet-50 (torchvision's), eval + inference_mode"


def resnet_workloads(quick: bool) -> list[Workload]:
    sizes = resnet_sizes(quick)
    infer_batch, infer_size, train_batch = (
        sizes["infer_batch"],
        sizes["infer_size"],
        sizes["train_batch"],
    )
    inference = Workload(
        id="resnet/resnet50_infer",
        group="resnet",
        name=f"ResNet-50 predict (batch {infer_batch}, 3x{infer_size}x{infer_size})",
        unit="ms",
        build=None,
        peer_labels={TORCH: TORCH_RESNET50_LABEL, ORT: ORT_LABEL},
        target=Target(TORCH, 1.2, at_least=False),
        details={
            "batch": infer_batch,
            "image": [3, infer_size, infer_size],
            "classes": 1000,
            "dtype": "float32",
            "mode": "eval (running statistics)",
        },
    )
    inference.build = lambda ctx: _resnet50_inference_contenders(
        infer_batch, infer_size, ctx, inference.details
    )
    return [
        inference,
        Workload(
            id="resnet/resnet20_train",
            group="resnet",
            name=f"ResNet-20 train step (batch {train_batch}, 1x28x28, momentum SGD)",
            unit="ms",
            build=lambda ctx: _resnet20_train_contenders(train_batch, ctx),
            peer_labels={TORCH: "torch.nn option-A ResNet-20 + torch.optim.SGD(momentum=0.9)"},
            target=Target(TORCH, 1.0, at_least=False),
            details={
                "batch": train_batch,
                "image": [1, 28, 28],
                "classes": 10,
                "dtype": "float32",
                "optimizer": "momentum SGD, lr 0.01, momentum 0.9",
                "mode": "train (batch statistics)",
            },
        ),
    ]


def measure_resnet_rss(ctx: Context) -> list[dict[str, object]]:
    """Peak RSS of ResNet-50 inference (1000 classes, ``resnet_sizes``' batch and size, fresh
    child processes as for DeepConvNet): absolute peak and peak minus the post-import baseline,
    each against ``<= 1x`` PyTorch."""
    sizes = resnet_sizes(ctx.quick)
    batch, size = sizes["infer_batch"], sizes["infer_size"]
    steps = 1 if ctx.quick else 2
    libraries = [TINYCONV] + ([TORCH] if ctx.torch is not None else [])
    rounds = 1 if ctx.quick else min(ctx.repeats, 3)
    figures, peak_source = memory.measure_peak_rss(
        ctx.run_py,
        libraries,
        ctx.threads,
        batch,
        steps,
        rounds,
        workload=memory.RESNET50_INFER,
        image_size=size,
    )
    rows = []
    for key, label in (
        ("peak_mib", "peak RSS"),
        ("delta_mib", "peak RSS minus RSS after imports+data"),
    ):
        workload = Workload(
            id=f"resnet/resnet50_infer_rss/{key.split('_')[0]}",
            group="resnet",
            name=f"ResNet-50 predict (batch {batch}, 3x{size}x{size}, {steps} call{'s' if steps != 1 else ''}) {label}",
            unit="MiB",
            build=None,
            peer_labels={TORCH: TORCH_RESNET50_LABEL},
            target=Target(TORCH, 1.0, at_least=False),
            details={
                "batch": batch,
                "image": [3, size, size],
                "calls": steps,
                "process": "fresh child per figure",
            },
        )
        summaries = {library: summarize(figures[library][key]) for library in libraries}
        baselines = {library: summarize(figures[library]["baseline_mib"]) for library in libraries}
        rows.append(
            _result(
                workload, ctx, summaries, {"baseline_mib": baselines, "peak_source": peak_source}
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Everything


def timed_workloads(groups: Sequence[str], quick: bool) -> list[Workload]:
    makers = {
        "gemm": gemm_workloads,
        "kernels": kernel_workloads,
        "train": train_workloads,
        "conv": conv_workloads,
        "infer": infer_workloads,
        "resnet": resnet_workloads,
    }
    return [w for group in groups if group in makers for w in makers[group](quick)]
