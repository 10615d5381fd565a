"""DLfS 7.6.1 -- the first layer's filters before and after training (ch07/visualize_filter.py).

Randomly initialised filters show no structure; after training they respond to edges and blobs
(oriented light-to-dark transitions).  As in the book, the trained weights come from params.pkl,
written by 06_train_simple_convnet.py.  When there is no params.pkl yet, this script trains a
SimpleConvNet on the shipped sample for --epochs first, so it also runs on its own.

The pictures are saved as filters_before.png and filters_after.png (``filter_show``'s ``save=``);
--show opens them in windows instead, as the book does.

Run:  python examples/07_visualize_filters.py [--params params.pkl] [--epochs 5] [--show]
"""

import argparse
import os

import numpy as np

from tinyconv.nets import SimpleConvNet
from tinyconv.visualize import filter_show

parser = argparse.ArgumentParser(
    description="Draw SimpleConvNet's filters before and after training."
)
parser.add_argument("--params", default="params.pkl", help="trained parameters (from example 06)")
parser.add_argument(
    "--epochs", type=int, default=5, help="epochs to train when --params is missing"
)
parser.add_argument(
    "--train-size", type=int, default=None, help="training images when training here"
)
parser.add_argument("--seed", type=int, default=None, help="seed np.random for a repeatable run")
parser.add_argument("--show", action="store_true", help="show the pictures instead of saving them")
args = parser.parse_args()
if args.seed is not None:
    np.random.seed(args.seed)


def save_as(file_name):
    return None if args.show else file_name


network = SimpleConvNet()
# The weights after random initialisation
before = network.params["W1"].copy()
filter_show(network.params["W1"], save=save_as("filters_before.png"))

# The weights after training
if os.path.exists(args.params):
    network.load_params(args.params)
    print(f"Loaded trained parameters from {args.params}")
else:
    from tinyconv.datasets import load_sample
    from tinyconv.trainer import Trainer

    print(
        f"{args.params} not found (run 06_train_simple_convnet.py to make it); "
        f"training for {args.epochs} epochs instead"
    )
    (x_train, t_train), (x_test, t_test) = load_sample(flatten=False)
    if args.train_size is not None:
        x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    trainer = Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=args.epochs,
        mini_batch_size=100,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
        evaluate_sample_num_per_epoch=1000,
        log="epochs",
    )
    trainer.train()
after = network.params["W1"]
filter_show(network.params["W1"], save=save_as("filters_after.png"))

print(f"W1 holds {after.shape[0]} filters of {after.shape[2]}x{after.shape[3]}")
print(f"mean |W1| before training: {np.mean(np.abs(before)):.4f}")
print(f"mean |W1| after training:  {np.mean(np.abs(after)):.4f}")
if not args.show:
    print("Saved filters_before.png and filters_after.png")
