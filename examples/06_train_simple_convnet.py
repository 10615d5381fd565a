"""DLfS 7.5 -- training SimpleConvNet (the book's ch07/train_convnet.py on tinyconv).

The script follows the book's train_convnet.py line by line: only the imports differ (tinyconv's
loader, network and trainer instead of the book's dataset/, simple_convnet.py and common/), and
the data is the Fashion-MNIST sample shipped with tinyconv -- 5,000 training and 1,000 test
images, the reduced size that the book's script suggests for slow machines -- so it runs offline.
On MNIST the book reaches about 99 % test accuracy; Fashion-MNIST is harder.

Additions for convenience: --epochs, --train-size and --seed for short or repeatable runs, the
accuracy plot is also saved as accuracy.png (and shown only when a window can be opened), and the
plot is skipped with a hint when matplotlib is not installed.

Run:  python examples/06_train_simple_convnet.py [--epochs 20]
Writes params.pkl (read by 07_visualize_filters.py) and accuracy.png into the current directory.
"""

import argparse

import numpy as np

from tinyconv.datasets import load_sample
from tinyconv.nets import SimpleConvNet
from tinyconv.trainer import Trainer

parser = argparse.ArgumentParser(description="Train DLfS's SimpleConvNet on the shipped sample.")
parser.add_argument("--epochs", type=int, default=20, help="number of epochs (the book: 20)")
parser.add_argument("--train-size", type=int, default=None, help="use the first N training images")
parser.add_argument("--seed", type=int, default=None, help="seed np.random for a repeatable run")
args = parser.parse_args()
if args.seed is not None:
    np.random.seed(args.seed)  # the network and the trainer draw from np.random, as in DLfS

# Load the data
(x_train, t_train), (x_test, t_test) = load_sample(flatten=False)
if args.train_size is not None:
    x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]

max_epochs = args.epochs

network = SimpleConvNet(
    input_dim=(1, 28, 28),
    conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
    hidden_size=100,
    output_size=10,
    weight_init_std=0.01,
)

trainer = Trainer(
    network,
    x_train,
    t_train,
    x_test,
    t_test,
    epochs=max_epochs,
    mini_batch_size=100,
    optimizer="Adam",
    optimizer_param={"lr": 0.001},
    evaluate_sample_num_per_epoch=1000,
    log="epochs",
)
trainer.train()

# Save the parameters
network.save_params("params.pkl")
print("Saved Network Parameters!")

# Draw the graph
try:
    import matplotlib
    import matplotlib.pyplot as plt
except ImportError:
    print('No plot: matplotlib is not installed (pip install "tinyconv[plot]").')
else:
    markers = {"train": "o", "test": "s"}
    x = np.arange(max_epochs)
    plt.plot(x, trainer.train_acc_list, marker="o", label="train", markevery=2)
    plt.plot(x, trainer.test_acc_list, marker="s", label="test", markevery=2)
    plt.xlabel("epochs")
    plt.ylabel("accuracy")
    plt.ylim(0, 1.0)
    plt.legend(loc="lower right")
    plt.savefig("accuracy.png")
    print("Saved accuracy.png")
    if matplotlib.get_backend().lower() != "agg":  # Agg (no display) cannot open a window
        plt.show()
