"""DLfS 8.2 and the closing notes of chapter 8 -- ResNet-50: residual blocks, 1x1 bottlenecks,
pretrained models.

1. The layer table of torchvision's ResNet-50 (v1.5), built by tinyconv: stage, block, output
   shape and parameters of each residual block (``Network.summary(depth=2)``), summing to
   25,557,032 parameters -- torchvision's count.
2. Where the multiply-adds go, for one 224x224 image: 4.09 G in all (convolutions and the fully
   connected layer), split by kernel size -- the 7x7 stem, the 3x3 convolutions inside the blocks
   and the 1x1 convolutions that narrow and widen them (and the 1x1 projection shortcuts): 51.8 %
   in 1x1 convolutions, 45.2 % in 3x3, 2.9 % in the stem, 0.1 % in ``fc``. Why the
   bottleneck pays: a block on 256 channels that narrows to 64 with a 1x1 convolution, works at 64
   with the 3x3 and widens back with a 1x1 costs 17x fewer multiply-adds per position than two 3x3
   convolutions at 256 channels would.
3. One timed forward pass (batch 1, 3x224x224, after one warm-up pass).
4. ``--weights FILE``: a torchvision ResNet-50 state dict saved as ``.safetensors``, ``.npz`` or a
   pickle of NumPy arrays -- torchvision's own names (``conv1.weight``, ``layer1.0.bn1.running_mean``,
   ``fc.bias``), no renaming -- is loaded (checked before anything changes) and run. From PyTorch:
   ``safetensors.numpy.save_file({k: v.numpy() for k, v in model.state_dict().items()}, "r50.safetensors")``.
   The input is a synthetic image, so the printed top-5 classes only show that the file runs.

Writes ``resnet50_multiply_adds.png`` (multiply-adds and parameters per stage) when matplotlib is
installed.

Run:  python examples/13_resnet50.py [--weights resnet50.safetensors] [--threads N]
"""

import argparse
import time
from collections import OrderedDict

import numpy as np

import tinyconv
from tinyconv.nets import resnet50
from tinyconv.serialization import ParamsFileError

parser = argparse.ArgumentParser(
    description="ResNet-50: layer table, multiply-adds by kernel size, a timed pass."
)
parser.add_argument(
    "--weights",
    metavar="FILE",
    default=None,
    help="a torchvision ResNet-50 state dict (.safetensors, .npz or a pickle of arrays)",
)
parser.add_argument(
    "--threads", type=int, default=None, help="threads for the forward pass (default: all)"
)
args = parser.parse_args()
if args.threads is not None:
    tinyconv.set_num_threads(args.threads)

network = resnet50(num_classes=1000, in_channels=3, seed=0)
if args.weights is not None:
    try:
        network.load_params(args.weights)
    except (OSError, ParamsFileError, ImportError) as error:
        parser.error(f"--weights: {error}")
    state = network.state_dict()
    print(
        f"loaded {args.weights}: {len(state)} arrays, sum of |conv1.weight| = "
        f"{float(np.abs(state['conv1.weight']).astype(np.float64).sum()):.6f}\n"
    )

summary = network.summary((3, 224, 224), depth=2)


def stage_and_block(name):
    """('conv2_x', '0') for 'layer1.0': the paper's stage names; the stem and head as such."""
    if name.startswith("layer"):
        stage, block = name.split(".")
        return f"conv{int(stage[5:]) + 1}_x", block
    return ("stem" if name in ("conv1", "bn1", "relu", "maxpool") else "head"), name


print("1. ResNet-50 (torchvision v1.5), input 1x3x224x224")
print(f"{'stage':8s} {'block':8s} {'output shape':20s} {'parameters':>12s}")
for row in summary.shown_rows(2):
    stage, block = stage_and_block(row.name)
    print(f"{stage:8s} {block:8s} {row.output_shape!s:20s} {row.parameters:12,d}")
counted = sum(int(value.size) for value in network.params.values())
print(
    f"{'total':38s}{summary.total_parameters:12,d} parameters "
    f"(the arrays in network.params: {counted:,})\n"
)

# 2. Multiply-adds by kernel size, over every convolution; and per stage, for the picture.
by_kernel = OrderedDict([("7x7 (stem)", 0), ("3x3", 0), ("1x1", 0), ("fully connected", 0)])
per_stage = OrderedDict()
for row in summary.rows:
    if not row.leaf or row.multiply_adds == 0:
        continue
    if row.kind == "Convolution":
        height, width = row.layer.W.shape[2:]
        kind = "7x7 (stem)" if height == 7 else f"{height}x{width}"
    else:
        kind = "fully connected"
    by_kernel[kind] += row.multiply_adds
    stage = stage_and_block(row.name.split(".conv")[0].split(".downsample")[0])[0]
    per_stage.setdefault(stage, OrderedDict((key, 0) for key in by_kernel))[kind] += (
        row.multiply_adds
    )
total = summary.total_multiply_adds
print(
    f"2. Multiply-adds for one 224x224 image: {total:,} ({total / 1e9:.2f} G; convolutions and the fully "
    f"connected layer)"
)
for kind, count in by_kernel.items():
    print(f"   {kind:16s} {count:15,d}  {count / total:6.1%}")
bottleneck = 256 * 64 + 9 * 64 * 64 + 64 * 256
plain = 2 * 9 * 256 * 256
print(
    f"   per position, a bottleneck block on 256 channels (1x1 256->64, 3x3 64->64, 1x1 64->256): "
    f"{bottleneck:,} multiply-adds; two 3x3 convolutions at 256 channels: {plain:,} ({plain / bottleneck:.0f}x)\n"
)

# 3. One timed forward pass.
x = np.linspace(-2.0, 2.0, 3 * 224 * 224, dtype=np.float32).reshape(1, 3, 224, 224)
network.predict(x)  # warm-up: first-touch of the memory, thread start
started = time.perf_counter()
logits = network.predict(x)
seconds = time.perf_counter() - started
print(
    f"3. Forward pass, batch 1, 3x224x224, {tinyconv.get_num_threads()} thread(s): {seconds * 1e3:.1f} ms "
    f"({total / seconds / 1e9:.1f} G multiply-adds per second)"
)
top5 = np.argsort(logits[0])[::-1][:5]
print(
    "   top-5 classes for the synthetic input: "
    + ", ".join(f"{c} ({logits[0, c]:.4f})" for c in top5)
)

try:
    from matplotlib.figure import Figure
except ImportError:
    print('No picture: matplotlib is not installed (pip install "tinyconv[plot]").')
else:
    figure = Figure(figsize=(11, 4.5))
    axes = figure.add_subplot(1, 2, 1)
    stages = list(per_stage)
    bottom = np.zeros(len(stages))
    for kind in by_kernel:
        heights = np.array([per_stage[stage][kind] for stage in stages]) / 1e9
        axes.bar(stages, heights, bottom=bottom, label=kind)
        bottom += heights
    axes.set_ylabel("G multiply-adds (224x224)")
    axes.set_title("multiply-adds per stage, by kernel size")
    axes.legend()
    axes = figure.add_subplot(1, 2, 2)
    parameters = OrderedDict()
    for row in summary.shown_rows(2):
        stage = stage_and_block(row.name)[0]
        parameters[stage] = parameters.get(stage, 0) + row.parameters
    axes.bar(list(parameters), np.array(list(parameters.values())) / 1e6)
    axes.set_ylabel("M parameters")
    axes.set_title("parameters per stage")
    figure.tight_layout()
    figure.savefig("resnet50_multiply_adds.png")
    print("Saved resnet50_multiply_adds.png")
