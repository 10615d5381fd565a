"""Write the ResNet golden files that ``tests/test_resnet_golden.py`` checks tinyconv against.

Run by hand, from the repository root, where PyTorch 2.13.0 (CPU) is installed -- never by pytest,
and tinyconv is not needed::

    python3 -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install torch==2.13.0 numpy
    /tmp/venv-torch/bin/python tests/make_resnet_goldens.py

It rewrites ``tests/golden/resnet_*.npz`` (one file per case of :data:`CASES`) and
``tests/golden/resnet_keys.json``; commit them together with any change to this script, to
``tests/resnet_golden_common.py`` or to the networks in ``benchmarks/torch_nets.py``.

The networks are ``benchmarks/torch_nets.py``'s: torchvision's ResNet-18/50 (``torchvision.models``
when it imports; otherwise the same architecture defined there -- the torchvision wheel that
matches torch 2.13 is built against CUDA and does not import beside the CPU torch) and He et
al.'s CIFAR ResNet-20 with option-A shortcuts. Each case, in float64 throughout:

1. the network gets the seeded state dict of ``resnet_golden_common`` (``load_state_dict``,
   strict) and the seeded input batch and labels;
2. ``eval/logits``: ``model.eval()`` logits (running statistics of the seeded state);
3. one training-mode step on a fresh copy of that state: ``model.train()``, logits
   (``train/logits``), mean cross-entropy (``train/loss``), ``backward()``; then for every
   parameter, in ``named_parameters()`` order, a probe summary of its gradient (``grad/*``, see
   ``resnet_golden_common.probe_summary`` and ``pack_probes``), for every float BN buffer its
   value after the step (``after/*`` likewise), and each ``num_batches_tracked`` after the step
   (``counts/keys``, ``counts/values``);
4. ``torch_fp32/*``: PyTorch's own float32 errors against these float64 goldens, in the test's
   measures (``resnet_golden_common.probe_errors`` and ``relative_error``);
5. ``state/keys``, ``state/shapes`` (``resnet_golden_common.pack_shapes``) and ``state/fingerprints`` (``resnet_golden_common.fingerprint`` of every seeded
   array) and ``input/x_fingerprint``, so that the test can tell a NumPy that draws differently
   from a tinyconv that computes differently.

``resnet_keys.json`` holds, per architecture (resnet18/34/50 at 1000 classes and 3 input channels,
resnet20/32/56 at 10 classes and 1 input channel), torch's ``state_dict()`` as ``[name, shape,
"parameter" | "buffer"]`` in its order (``named_parameters()`` is its parameters in that order)
and the parameter count.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, HERE)

import resnet_golden_common as common  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_nets  # noqa: E402

GOLDEN_DIR = os.path.join(HERE, "golden")
EXPECTED_TORCH = "2.13.0"

# name -> (architecture, num_classes, in_channels, input shape NCHW)
CASES: dict[str, tuple[str, int, int, tuple[int, int, int, int]]] = {
    "resnet18_64x64": ("resnet18", 10, 3, (2, 3, 64, 64)),
    # Odd sizes: every padded convolution and the max pooling see a ragged right/bottom edge.
    "resnet18_33x37": ("resnet18", 7, 3, (2, 3, 33, 37)),
    # Batch 4 at 96x96: 36 values per channel in the last stage keep training-mode BatchNorm well
    # enough conditioned that float32 logits are within 3e-5 of float64 (at 2x64x64: 9e-5).
    "resnet50_96x96": ("resnet50", 10, 3, (4, 3, 96, 96)),
    "resnet20_28x28": ("resnet20", 10, 1, (4, 1, 28, 28)),
    "resnet20_32x32": ("resnet20", 10, 3, (2, 3, 32, 32)),
}
# Architectures whose key lists resnet_keys.json records: (num_classes, in_channels).
KEY_LISTS = {
    "resnet18": (1000, 3),
    "resnet34": (1000, 3),
    "resnet50": (1000, 3),
    "resnet20": (10, 1),
    "resnet32": (10, 1),
    "resnet56": (10, 1),
}


def build(arch: str, num_classes: int, in_channels: int) -> tuple[torch.nn.Module, str]:
    if arch in torch_nets.CIFAR_DEPTHS:
        return torch_nets.cifar_resnet(
            arch, num_classes, in_channels
        ), "benchmarks/torch_nets.CifarResNet"
    return torch_nets.torchvision_resnet(arch, num_classes, in_channels)


def check_against_torchvision() -> None:
    """Where torchvision imports, its ResNets must have our names and shapes (they are the same
    modules); where it does not, say so."""
    try:
        import torchvision
    except Exception as error:
        print(
            f"torchvision not importable ({type(error).__name__}); using benchmarks/torch_nets.ResNet"
        )
        return
    for arch in ("resnet18", "resnet34", "resnet50"):
        block, layers = torch_nets.RESNET_SPECS[arch]
        ours = [
            (k, tuple(v.shape)) for k, v in torch_nets.ResNet(block, layers).state_dict().items()
        ]
        theirs = [
            (k, tuple(v.shape)) for k, v in getattr(torchvision.models, arch)().state_dict().items()
        ]
        if ours != theirs:
            raise SystemExit(
                f"torch_nets.ResNet differs from torchvision {torchvision.__version__}'s {arch}"
            )
    print(f"torch_nets.ResNet matches torchvision {torchvision.__version__} key for key")


def run_torch(
    model: torch.nn.Module,
    state: dict[str, np.ndarray],
    x: np.ndarray,
    t: np.ndarray,
    dtype: torch.dtype,
) -> dict[str, object]:
    """Eval logits, then one training-mode step from a fresh copy of ``state``, in ``dtype``:
    ``eval_logits``, ``train_logits``, ``loss``, ``grads`` and ``buffers`` (after the step)."""
    model = model.to(dtype)
    as_torch = {
        k: torch.from_numpy(v.copy()).to(dtype)
        if v.dtype.kind == "f"
        else torch.from_numpy(v.copy())
        for k, v in state.items()
    }
    tx, tt = torch.from_numpy(x).to(dtype), torch.from_numpy(t)
    model.load_state_dict(as_torch, strict=True)
    model.eval()
    with torch.no_grad():
        eval_logits = model(tx).double().numpy().copy()
    model.load_state_dict(as_torch, strict=True)
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(tx)
    loss = F.cross_entropy(logits, tt)
    loss.backward()
    return {
        "eval_logits": eval_logits,
        "train_logits": logits.detach().double().numpy().copy(),
        "loss": np.array(loss.item()),
        "grads": {k: p.grad.double().numpy().copy() for k, p in model.named_parameters()},
        "buffers": {k: b.numpy().copy() for k, b in model.named_buffers()},
    }


def max_probe_error(
    summaries: dict[str, dict[str, np.ndarray]], tensors: dict[str, np.ndarray]
) -> float:
    return max(
        max(common.probe_errors(common.GOLDEN_SEED, key, tensors[key], summary).values())
        for key, summary in summaries.items()
    )


def make_case(name: str) -> dict[str, np.ndarray]:
    arch, num_classes, in_channels, input_shape = CASES[name]
    model, source = build(arch, num_classes, in_channels)
    entries = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    state = common.seeded_state_dict(entries)
    x, t = common.input_batch(common.GOLDEN_SEED, input_shape, num_classes)

    out: dict[str, np.ndarray] = {
        "meta/arch": np.array(arch),
        "meta/source": np.array(source),
        "meta/torch_version": np.array(torch.__version__),
        "meta/numpy_version": np.array(np.__version__),
        "meta/num_classes": np.array(num_classes),
        "meta/in_channels": np.array(in_channels),
        "meta/input_shape": np.array(input_shape),
        "meta/seed": np.array(common.GOLDEN_SEED),
        "meta/max_samples": np.array(common.MAX_SAMPLES),
        "meta/projections": np.array(common.PROJECTIONS),
        "input/x_fingerprint": common.fingerprint(x),
        "input/t": t,
        "state/keys": np.array(list(state), dtype=str),
        "state/shapes": common.pack_shapes([shape for _, shape in entries]),
        "state/fingerprints": np.stack([common.fingerprint(value) for value in state.values()]),
    }
    seed = common.GOLDEN_SEED
    fp64 = run_torch(model, state, x, t, torch.float64)
    out["eval/logits"], out["train/logits"], out["train/loss"] = (
        fp64["eval_logits"],
        fp64["train_logits"],
        fp64["loss"],
    )
    grad_summaries = {key: common.probe_summary(seed, key, g) for key, g in fp64["grads"].items()}
    counts = [key for key in fp64["buffers"] if key.endswith("num_batches_tracked")]
    running_summaries = {
        key: common.probe_summary(seed, key, b)
        for key, b in fp64["buffers"].items()
        if key not in counts
    }
    out.update(common.pack_probes("grad", grad_summaries))
    out.update(common.pack_probes("after", running_summaries))
    out["counts/keys"] = np.array(counts, dtype=str)
    out["counts/values"] = np.array([int(fp64["buffers"][key]) for key in counts], dtype=np.int64)

    # PyTorch's own float32 errors against these goldens, in the test's measures: where its
    # gradient error is large, the float64 point lies within float32 rounding of a ReLU or
    # max-pooling kink, and no float32 implementation can match the float64 gradient there.
    fp32 = run_torch(model, state, x, t, torch.float32)
    out["torch_fp32/eval_logits_error"] = np.array(
        common.relative_error(fp32["eval_logits"], out["eval/logits"])
    )
    out["torch_fp32/train_logits_error"] = np.array(
        common.relative_error(fp32["train_logits"], out["train/logits"])
    )
    out["torch_fp32/loss_error"] = np.array(common.relative_error(fp32["loss"], out["train/loss"]))
    out["torch_fp32/gradient_error"] = np.array(max_probe_error(grad_summaries, fp32["grads"]))
    out["torch_fp32/running_error"] = np.array(max_probe_error(running_summaries, fp32["buffers"]))
    print(
        f"{name}: PyTorch float32 vs these goldens: "
        + ", ".join(
            f"{k.split('/')[1]} {float(v):.1e}"
            for k, v in out.items()
            if k.startswith("torch_fp32/")
        )
    )
    return out


def key_lists() -> dict[str, dict[str, object]]:
    lists = {}
    for arch, (num_classes, in_channels) in KEY_LISTS.items():
        model, source = build(arch, num_classes, in_channels)
        parameters = dict(model.named_parameters())
        state_dict = [
            [key, list(value.shape), "parameter" if key in parameters else "buffer"]
            for key, value in model.state_dict().items()
        ]
        if [k for k, _, kind in state_dict if kind == "parameter"] != list(parameters):
            raise SystemExit(
                f"{arch}: named_parameters() is not state_dict()'s parameters in order"
            )
        lists[arch] = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "source": source,
            "parameter_count": sum(p.numel() for p in parameters.values()),
            "state_dict": state_dict,
        }
    return lists


def main() -> None:
    if torch.__version__.split("+")[0] != EXPECTED_TORCH:
        raise SystemExit(
            f"the golden files are made with torch {EXPECTED_TORCH}, this is {torch.__version__}"
        )
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one fixed summation order, the same on any machine
    check_against_torchvision()
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    for name in CASES:
        path = os.path.join(GOLDEN_DIR, f"{name}.npz")
        np.savez_compressed(path, **make_case(name))
        print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.0f} KiB)")
    path = os.path.join(GOLDEN_DIR, "resnet_keys.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump(key_lists(), out, separators=(",", ":"))
        out.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
