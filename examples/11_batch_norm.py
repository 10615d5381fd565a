"""DLfS 6.3 (and its use in chapter 8's deep convnets) -- batch normalisation speeds up training.

Two networks are trained with and without batch normalisation, from the same initial weights, on
the same mini-batches, with plain SGD at the same learning rate (the book's ch06/batch_norm_test.py
setting: a small training set, SGD lr 0.01, batches of 100):

* the book's deep fully connected network -- ``MultiLayerNetExtend``, 784 -> 5 x 100 -> 10, ReLU,
  weights of standard deviation 0.05 -- with ``use_batchnorm`` True and False;
* a small convnet -- conv 3x3 (16) -> [batch norm] -> ReLU -> max pool -> conv 3x3 (32) ->
  [batch norm] -> ReLU -> max pool -> affine (10), He's initialisation -- with and without the
  per-channel batch norms (``BatchNorm2d``).

After every epoch the accuracy on the training images and on 1,000 test images is measured;
printed are the epochs each needs to reach the stated test accuracy (``--target``, default 0.70)
and the accuracies at the end. Batch normalisation keeps every layer's inputs centred and scaled,
so the same learning rate makes progress from the first epochs. Writes ``batch_norm_accuracy.png``
when matplotlib is installed.

Measured (the defaults: 1,000 images, SGD lr 0.01, 20 epochs, seed 0): epochs to 70 % test
accuracy -- deep MLP 8 with batch norm, never without (it stays at 10 %: the signal fades through
five layers of small weights); small convnet 6 with, 12 without. After 20 epochs: 77.4 % vs 10.0 %
and 79.3 % vs 71.0 %.

Run:  python examples/11_batch_norm.py [--epochs 20] [--train-size 1000] [--target 0.70] [--seed 0]
"""

import argparse
import math
from collections import OrderedDict

import numpy as np

from tinyconv.datasets import load_sample
from tinyconv.layers import Affine, BatchNorm2d, Convolution, Pooling, Relu, SoftmaxWithLoss
from tinyconv.nets import MultiLayerNetExtend
from tinyconv.network import Network
from tinyconv.trainer import Trainer

parser = argparse.ArgumentParser(
    description="Train a deep MLP and a small convnet with and without batch norm."
)
parser.add_argument("--epochs", type=int, default=20, help="epochs for each run (default 20)")
parser.add_argument(
    "--train-size", type=int, default=1000, help="training images (default 1000, as the book)"
)
parser.add_argument(
    "--target", type=float, default=0.70, help="test accuracy to reach (default 0.70)"
)
parser.add_argument(
    "--lr", type=float, default=0.01, help="SGD learning rate (default 0.01, as the book)"
)
parser.add_argument(
    "--seed", type=int, default=0, help="seed of the weights and the batch order (default 0)"
)
args = parser.parse_args()


class SmallConvNet(Network):
    """conv3x3(16) [-> BN] -> ReLU -> pool -> conv3x3(32) [-> BN] -> ReLU -> pool -> affine(10)."""

    def __init__(self, batch_norm, seed):
        super().__init__(np.float32, seed, None)
        layers = OrderedDict()
        channels, side = 1, 28
        for index, filters in enumerate((16, 32), start=1):
            std = math.sqrt(2.0 / (channels * 9))  # He
            layers[f"conv{index}"] = Convolution(
                self._random_normal(std, (filters, channels, 3, 3)), self._zeros(filters), 1, 1
            )
            if batch_norm:
                layers[f"bn{index}"] = BatchNorm2d(filters)
            layers[f"relu{index}"] = Relu()
            layers[f"pool{index}"] = Pooling(2, 2, stride=2)
            channels, side = filters, side // 2
        features = channels * side * side
        layers["fc"] = Affine(
            self._random_normal(math.sqrt(2.0 / features), (features, 10)), self._zeros(10)
        )
        self.layers = layers
        self.last_layer = SoftmaxWithLoss()
        self._register_tree(self._root())

    def default_input_shape(self):
        return (1, 28, 28)


def deep_mlp(batch_norm, seed):
    return MultiLayerNetExtend(
        784, [100] * 5, 10, weight_init_std=0.05, use_batchnorm=batch_norm, seed=seed
    )


def train(network, flatten):
    x_train, t_train, x_test, t_test = data[flatten]
    trainer = Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=args.epochs,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param={"lr": args.lr},
        evaluate_sample_num_per_epoch=1000,
        verbose=False,
        seed=args.seed,
        sampling="permutation",
    )
    trainer.train()
    return trainer.train_acc_list, trainer.test_acc_list


def epochs_to_reach(accuracies, target):
    return next(
        (epoch for epoch, accuracy in enumerate(accuracies, start=1) if accuracy >= target), None
    )


data = {}
for flatten in (True, False):
    (x_train, t_train), (x_test, t_test) = load_sample(normalize=True, flatten=flatten)
    data[flatten] = (
        x_train[: args.train_size],
        t_train[: args.train_size],
        x_test[:1000],
        t_test[:1000],
    )

runs = OrderedDict()
for title, make, flatten in (("deep MLP", deep_mlp, True), ("small convnet", SmallConvNet, False)):
    for batch_norm in (False, True):
        label = f"{title}, {'with' if batch_norm else 'without'} batch norm"
        runs[label] = train(make(batch_norm, args.seed), flatten)

print(
    f"{args.train_size} training images, 1000 test images, SGD lr {args.lr}, batches of 100, {args.epochs} epochs, "
    f"seed {args.seed}\n"
)
print(
    f"{'network':40s} {'epochs to test acc ' + format(args.target, '.2f'):>24s} {'train acc':>10s} {'test acc':>9s}"
)
for label, (train_acc, test_acc) in runs.items():
    reached = epochs_to_reach(test_acc, args.target)
    when = str(reached) if reached is not None else f"not in {args.epochs}"
    print(f"{label:40s} {when:>24s} {train_acc[-1]:10.4f} {test_acc[-1]:9.4f}")
print("\ntest accuracy per epoch:")
for label, (_, test_acc) in runs.items():
    print(f"  {label}: " + " ".join(f"{accuracy:.3f}" for accuracy in test_acc))

try:
    from matplotlib.figure import Figure
except ImportError:
    print('No picture: matplotlib is not installed (pip install "tinyconv[plot]").')
else:
    figure = Figure(figsize=(11, 4.5))
    epochs = np.arange(1, args.epochs + 1)
    for index, title in enumerate(("deep MLP", "small convnet"), start=1):
        axes = figure.add_subplot(1, 2, index)
        for label, (train_acc, test_acc) in runs.items():
            if label.startswith(title):
                (line,) = axes.plot(epochs, test_acc, label=f"{label[len(title) + 2 :]}: test")
                axes.plot(
                    epochs, train_acc, linestyle="--", color=line.get_color(), label="... train"
                )
        axes.axhline(args.target, color="grey", linewidth=0.8)
        axes.set_title(title)
        axes.set_xlabel("epochs")
        axes.set_ylabel("accuracy")
        axes.set_ylim(0, 1)
        axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig("batch_norm_accuracy.png")
    print("Saved batch_norm_accuracy.png")
