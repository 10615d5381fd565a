"""Transfer learning (DLfS 8.4.1's closing note, made concrete): does a network pre-trained on one
task learn a related one from few labels better than the same network trained from scratch?

1. Pre-train a CIFAR-style ResNet-20 on Fashion-MNIST classes 0-4 (T-shirt, trouser, pullover,
   dress, coat; 30,000 training images).
2. For each seed, take only a few labelled training images of classes 5-9 (sandal, shirt,
   sneaker, bag, ankle boot), the same number per class, drawn with that seed: ``--labelled``
   500, 100 and 50 by default, one experiment each.
   * fine-tune: the pre-trained network with a new, untrained head (``replace_head``), every layer
     trained, the backbone with a 10x smaller learning rate than the head (a parameter group);
   * from scratch: a freshly initialised ResNet-20, the same steps and the head's learning rate.
3. Both are measured on all 5,000 test images of classes 5-9; the script prints each seed's
   accuracies and the means. Classes 5-9 are easy to tell apart: with 500 labels a network
   trained from scratch already does about as well as the fine-tuned one; the gain shows with
   fewer labels.

Results (the defaults, seeds 0-2, all 5,000 test images of classes 5-9; mean test accuracy
fine-tuned / from scratch): 500 labels 93.77 % / 93.63 %, 100 labels 84.68 % / 82.98 %, 50 labels
72.55 % / 55.69 %. Writes ``transfer_learning.png`` (both arms per number of labels) when
matplotlib is installed.

Run:  python examples/12_transfer_learning.py            (about 10 minutes on 2 cores)
      python examples/12_transfer_learning.py --labelled 500   (the 500-image experiment only)
      python examples/12_transfer_learning.py --freeze layer1 layer2   (also freeze early stages)
      python examples/12_transfer_learning.py --dataset sample   (offline: the shipped sample)
Needs the full Fashion-MNIST (``apt-get install dataset-fashion-mnist``, or tinyconv's loader
downloads it where the internet is reachable); ``--dataset sample`` runs on the 5,000 + 1,000
images shipped with tinyconv instead (about 2,500 for pre-training: a weaker starting point).
"""

import argparse
import time

import numpy as np

from tinyconv.datasets import load_fashion_mnist, load_sample
from tinyconv.nets import resnet20
from tinyconv.optimizer import Momentum
from tinyconv.trainer import Trainer

parser = argparse.ArgumentParser(
    description="Pre-train ResNet-20 on classes 0-4, fine-tune on 5-9 with few labels."
)
parser.add_argument(
    "--dataset",
    choices=("fashion-mnist", "sample"),
    default="fashion-mnist",
    help="the full Fashion-MNIST (default) or the sample shipped with tinyconv (offline)",
)
parser.add_argument("--pretrain-epochs", type=int, default=3)
parser.add_argument(
    "--pretrain-size", type=int, default=None, help="use only N pre-training images"
)
parser.add_argument(
    "--labelled",
    type=int,
    nargs="+",
    default=[500, 100, 50],
    help="labelled images of classes 5-9, one experiment per number (default 500 100 50)",
)
parser.add_argument(
    "--epochs", type=int, default=30, help="epochs over the labelled images (default 30)"
)
parser.add_argument(
    "--seeds", type=int, default=3, help="repetitions with different samples (default 3)"
)
parser.add_argument(
    "--test-size", type=int, default=None, help="use only N test images of classes 5-9"
)
parser.add_argument(
    "--freeze",
    nargs="*",
    default=[],
    metavar="PREFIX",
    help="parameters not to fine-tune at all, e.g. conv1 bn1 layer1",
)
args = parser.parse_args()

load = load_fashion_mnist if args.dataset == "fashion-mnist" else load_sample
(x_train, t_train), (x_test, t_test) = load(normalize=True, flatten=False)


def classes(x, t, wanted):
    """The images of the ``wanted`` classes, labels renumbered 0..len(wanted)-1."""
    keep = np.isin(t, wanted)
    return x[keep], np.searchsorted(np.asarray(wanted), t[keep])


def train(net, x, t, xt, tt, epochs, batch_size, optimizer, seed):
    """Train with the learning rates decaying along a cosine over the run (the head's and the
    backbone's alike); the test accuracy at the end."""
    trainer = Trainer(
        net,
        x,
        t,
        xt,
        tt,
        epochs=epochs,
        mini_batch_size=batch_size,
        optimizer=optimizer,
        verbose=False,
        seed=seed,
        sampling="permutation",
        lr_schedule="cosine",
        evaluate_sample_num_per_epoch=100,
    )  # per-epoch numbers are not shown: keep them cheap
    trainer.train()
    return trainer.final_test_acc


started = time.perf_counter()
source_classes, target_classes = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
xs, ts = classes(x_train, t_train, source_classes)
xs_test, ts_test = classes(x_test, t_test, source_classes)
if args.pretrain_size is not None:
    xs, ts = xs[: args.pretrain_size], ts[: args.pretrain_size]
pretrained = resnet20(num_classes=5, seed=0)
xs_test, ts_test = xs_test[:1000], ts_test[:1000]
accuracy = train(
    pretrained,
    xs,
    ts,
    xs_test,
    ts_test,
    args.pretrain_epochs,
    128,
    Momentum(lr=0.1, momentum=0.9),
    seed=0,
)
print(
    f"pre-trained on classes 0-4 ({len(xs)} images, {args.pretrain_epochs} epochs): "
    f"test accuracy {accuracy:.4f} on {len(xs_test)} of their test images"
)
weights = {key: value.copy() for key, value in pretrained.state_dict().items()}

xt, tt = classes(x_train, t_train, target_classes)
xt_test, tt_test = classes(x_test, t_test, target_classes)
if args.test_size is not None:
    xt_test, tt_test = xt_test[: args.test_size], tt_test[: args.test_size]
summary = []
for labelled in args.labelled:
    per_class = labelled // len(target_classes)
    batch = min(50, per_class * len(target_classes))
    results = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        picked = np.concatenate(
            [
                rng.choice(np.flatnonzero(tt == c), per_class, replace=False)
                for c in range(len(target_classes))
            ]
        )
        x_few, t_few = xt[picked], tt[picked]

        finetuned = resnet20(num_classes=5, seed=seed)
        finetuned.load_state_dict(weights)
        finetuned.replace_head(len(target_classes), seed=seed)
        if args.freeze:
            finetuned.freeze(*args.freeze)
        fine = train(
            finetuned,
            x_few,
            t_few,
            xt_test,
            tt_test,
            args.epochs,
            batch,
            Momentum(lr=0.01, momentum=0.9, param_groups=[{"prefixes": "fc", "lr": 0.1}]),
            seed,
        )

        scratch_net = resnet20(num_classes=5, seed=seed)
        scratch = train(
            scratch_net,
            x_few,
            t_few,
            xt_test,
            tt_test,
            args.epochs,
            batch,
            Momentum(lr=0.1, momentum=0.9),
            seed,
        )
        results.append((fine, scratch))
        print(
            f"seed {seed}: {len(x_few)} labelled images of classes 5-9 -> test accuracy "
            f"fine-tuned {fine:.4f}, from scratch {scratch:.4f}",
            flush=True,
        )

    fine_mean, scratch_mean = np.mean(results, axis=0)
    summary.append((per_class * len(target_classes), fine_mean, scratch_mean))
    print(
        f"mean over {args.seeds} seeds ({len(xt_test)} test images of classes 5-9): "
        f"fine-tuned {fine_mean:.4f}, from scratch {scratch_mean:.4f}, gain {fine_mean - scratch_mean:+.4f}",
        flush=True,
    )

print("labelled images | fine-tuned | from scratch | gain")
for labelled, fine_mean, scratch_mean in summary:
    print(
        f"{labelled:15d} | {fine_mean:10.4f} | {scratch_mean:12.4f} | {fine_mean - scratch_mean:+.4f}"
    )
print(f"took {(time.perf_counter() - started) / 60:.1f} minutes")

try:
    from matplotlib.figure import Figure
except ImportError:
    print('No picture: matplotlib is not installed (pip install "tinyconv[plot]").')
else:
    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.add_subplot()
    positions = np.arange(len(summary))
    axes.bar(positions - 0.2, [fine for _, fine, _ in summary], 0.4, label="fine-tuned")
    axes.bar(positions + 0.2, [scratch for _, _, scratch in summary], 0.4, label="from scratch")
    axes.set_xticks(positions)
    axes.set_xticklabels([f"{labelled} labels" for labelled, _, _ in summary])
    axes.set_ylabel(f"test accuracy, classes 5-9 (mean of {args.seeds} seeds)")
    axes.set_ylim(0, 1)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig("transfer_learning.png")
    print("Saved transfer_learning.png")
