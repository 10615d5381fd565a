"""BatchNorm2d, global average pooling and the residual add: tinyconv against PyTorch's CPU kernels.

    python benchmarks/batchnorm.py [--threads N] [--repeats R] [--dtype float32|float64] [--quick]

Times, interleaved (see harness.py), on ResNet's shapes (float32, NCHW):

* batch norm training forward (batch statistics, running-statistics update): ``F.batch_norm2d_forward``
  vs ``torch.nn.functional.batch_norm(training=True)``; with the fused ReLU vs ``batch_norm`` + ``relu_``;
* batch norm training backward (through the batch statistics): ``F.batch_norm2d_backward`` vs
  ``torch.ops.aten.native_batch_norm_backward`` (no autograd bookkeeping timed);
* batch norm inference forward: running statistics, vs ``batch_norm(training=False)``;
* global average pooling forward and the residual add (+ ReLU) on the shapes ResNet-50 uses them.

PyTorch (``pip install torch==2.13.0``, the CPU build) is needed for the comparison; without it only
tinyconv's times are printed. Both libraries get the same thread count. Prints one table (median
ms per call, min-max in brackets, and tinyconv / PyTorch).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from harness import measure_interleaved  # noqa: E402

import tinyconv  # noqa: E402
from tinyconv import functional as F  # noqa: E402

# (label, N, C, H, W): ResNet-50's stem BN at batch 8, a CIFAR ResNet-20 stage at batch 128, the
# last ResNet-50 stage at batch 8, and a few channels over large planes (blocks split across threads).
BN_SHAPES = [
    ("resnet50 stem", 8, 64, 112, 112),
    ("resnet20 stage 1", 128, 16, 28, 28),
    ("resnet50 layer4", 8, 2048, 7, 7),
    ("resnet50 layer1", 8, 256, 56, 56),
    ("3 channels", 16, 3, 224, 224),
]
QUICK_SHAPES = [("small", 4, 8, 16, 16), ("few channels", 2, 3, 64, 64)]


def bn_contenders(shape, dtype, torch):
    rng = np.random.default_rng(0)
    _n, c, _h, _w = shape
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    running_mean, running_var = np.zeros(c, dtype), np.ones(c, dtype)
    _y, mean, invstd = F.batch_norm2d_forward(
        x, gamma, beta, running_mean, running_var, train=True, momentum=0.9, eps=1e-5
    )
    rows = {
        "train forward": {
            "tinyconv": lambda: F.batch_norm2d_forward(
                x, gamma, beta, running_mean, running_var, train=True, momentum=0.9, eps=1e-5
            )
        },
        "train forward + relu": {
            "tinyconv": lambda: F.batch_norm2d_forward(
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                train=True,
                momentum=0.9,
                eps=1e-5,
                relu=True,
            )
        },
        "train backward": {
            "tinyconv": lambda: F.batch_norm2d_backward(dout, x, gamma, mean, invstd, train=True)
        },
        "inference forward": {
            "tinyconv": lambda: F.batch_norm2d_forward(
                x, gamma, beta, running_mean, running_var, train=False, momentum=0.9, eps=1e-5
            )
        },
    }
    if torch is not None:
        tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)
        tg, tb = torch.from_numpy(gamma), torch.from_numpy(beta)
        trm, trv = torch.zeros(c, dtype=tx.dtype), torch.ones(c, dtype=tx.dtype)
        tF = torch.nn.functional
        _, tmean, tinvstd = torch.ops.aten.native_batch_norm(tx, tg, tb, trm, trv, True, 0.1, 1e-5)
        rows["train forward"]["torch"] = lambda: tF.batch_norm(
            tx, trm, trv, tg, tb, training=True, momentum=0.1
        )
        rows["train forward + relu"]["torch"] = lambda: torch.relu_(
            tF.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.1)
        )
        rows["train backward"]["torch"] = lambda: torch.ops.aten.native_batch_norm_backward(
            tdout, tx, tg, trm, trv, tmean, tinvstd, True, 1e-5, [True, True, True]
        )
        rows["inference forward"]["torch"] = lambda: tF.batch_norm(
            tx, trm, trv, tg, tb, training=False
        )
    return rows


def other_contenders(dtype, torch, quick):
    rng = np.random.default_rng(1)
    pool_shape = (2, 8, 7, 7) if quick else (8, 2048, 7, 7)
    add_shape = (2, 8, 16, 16) if quick else (8, 256, 56, 56)
    x = rng.standard_normal(pool_shape).astype(dtype)
    a, b = (
        rng.standard_normal(add_shape).astype(dtype),
        rng.standard_normal(add_shape).astype(dtype),
    )
    out = np.empty_like(a)
    rows = {
        f"global avg pool {pool_shape}": {"tinyconv": lambda: F.global_avg_pool2d_forward(x)},
        f"add + relu {add_shape}": {"tinyconv": lambda: F.add_forward(a, b, relu=True, out=out)},
    }
    if torch is not None:
        tx, ta, tb, tout = (torch.from_numpy(v) for v in (x, a, b, out))
        rows[f"global avg pool {pool_shape}"]["torch"] = lambda: (
            torch.nn.functional.adaptive_avg_pool2d(tx, 1)
        )
        rows[f"add + relu {add_shape}"]["torch"] = lambda: torch.relu_(torch.add(ta, tb, out=tout))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=tinyconv.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds (a smoke test)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch is not installed: tinyconv's times only")
    tinyconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    repeats, min_sample = (2, 0.002) if args.quick else (args.repeats, 0.05)
    print(
        f"{args.dtype}, {args.threads} thread(s), median ms per call [min-max]"
        + (f", torch {torch.__version__}" if torch is not None else "")
    )
    rows = []
    for label, *shape in QUICK_SHAPES if args.quick else BN_SHAPES:
        for what, contenders in bn_contenders(tuple(shape), dtype, torch).items():
            rows.append((f"BN {what}, {label} {tuple(shape)}", contenders))
    rows += list(other_contenders(dtype, torch, args.quick).items())
    for name, contenders in rows:
        timings = measure_interleaved(
            contenders,
            repeats=repeats,
            min_sample_s=min_sample,
            warmup_calls=2,
            settle_s=0.0 if args.quick else 0.2,
        )  # as run.py: let thread pools go idle
        cells = [
            f"{who} {t.median * 1e3:8.3f} [{t.min * 1e3:.3f}-{t.max * 1e3:.3f}]"
            for who, t in timings.items()
        ]
        ratio = (
            f"  ratio {timings['tinyconv'].median / timings['torch'].median:.2f}"
            if "torch" in timings
            else ""
        )
        print(f"{name:58s} " + "  ".join(cells) + ratio, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
