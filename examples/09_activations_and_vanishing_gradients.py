"""DLfS 6.2 and the closing notes of chapter 8 -- activation functions and initial weights: why
a deep network of sigmoids barely learns in its first layers, and why ReLU (with He's
initialisation) is preferred.

The same fully connected network -- tinyconv's ``MultiLayerNet``, 784 inputs, 5 hidden layers of
100 units, 10 outputs -- is built four ways:

* sigmoid with weights of standard deviation 1 (the book's figure 6-10: activations pile up at 0
  and 1, where the sigmoid is flat),
* sigmoid with Xavier's initialisation (sqrt(1/n); figure 6-13: activations spread out),
* ReLU with standard deviation 0.01 (figure 6-14: activations collapse towards 0),
* ReLU with He's initialisation (sqrt(2/n); activations keep their spread through every layer).

For each, one batch of the shipped Fashion-MNIST sample goes forward and back:

1. the activations of each hidden layer -- histograms as in the book (``activations.png``) and,
   printed, the share of values that are saturated (sigmoid: below 0.01 or above 0.99) or zero
   (ReLU);
2. the mean absolute gradient of each layer's weights, |dL/dW|, printed as a table: the sigmoid's
   derivative is at most 1/4, so every layer the gradient passes back through shrinks it, and the
   first layer of the sigmoid network gets a gradient orders of magnitude smaller than the ReLU
   network's -- it learns that much more slowly (the vanishing gradient).

The last line prints the ratio of the first-layer gradients (sigmoid with Xavier against ReLU with
He). Writes ``activations.png`` and ``gradients.png`` when matplotlib is installed.

Measured (the defaults: 1,000 sample images, seed 0, float64): mean |dL/dW1| 4.4e-06 for sigmoid
with Xavier against 6.4e-03 for ReLU with He (ratio 6.9e-04); with standard deviation 0.01 the
ReLU network's gradients are ~1e-8 throughout (its activations have collapsed).

Run:  python examples/09_activations_and_vanishing_gradients.py [--batch 1000] [--seed 0]
"""

import argparse

import numpy as np

from tinyconv.datasets import load_sample
from tinyconv.nets import MultiLayerNet

parser = argparse.ArgumentParser(
    description="Sigmoid vs ReLU, Xavier vs He: activations and gradients per layer."
)
parser.add_argument("--batch", type=int, default=1000, help="images in the batch (default 1000)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
args = parser.parse_args()

HIDDEN_LAYERS = 5
SETUPS = [  # (label, activation, weight_init_std)
    ("sigmoid, std 1", "sigmoid", 1.0),
    ("sigmoid, Xavier", "sigmoid", "xavier"),
    ("ReLU, std 0.01", "relu", 0.01),
    ("ReLU, He", "relu", "he"),
]

(x_train, t_train), _ = load_sample(normalize=True, flatten=True)
x, t = x_train[: args.batch], t_train[: args.batch]


def hidden_activations(network, x):
    """The output of each hidden layer's activation function, layer by layer."""
    activations = []
    for name, layer in network.layers.items():
        x = layer.forward(x)
        if name.startswith("Activation_function"):
            activations.append(np.array(x))
    return activations


def off_share(values, activation):
    """Share of outputs where the activation function passes (almost) no gradient back."""
    if activation == "sigmoid":
        return float(np.mean((values < 0.01) | (values > 0.99)))
    return float(np.mean(values == 0))


results = {}
for label, activation, init in SETUPS:
    network = MultiLayerNet(
        784,
        [100] * HIDDEN_LAYERS,
        10,
        activation=activation,
        weight_init_std=init,
        dtype=np.float64,
        seed=args.seed,
    )
    activations = hidden_activations(network, x)
    grads = network.gradient(x, t)
    mean_grads = [float(np.mean(np.abs(grads[f"W{i}"]))) for i in range(1, HIDDEN_LAYERS + 2)]
    results[label] = (activation, activations, mean_grads)

print(
    f"{HIDDEN_LAYERS}-hidden-layer MultiLayerNet (784 -> {' -> '.join(['100'] * HIDDEN_LAYERS)} -> 10), "
    f"one batch of {len(x)} sample images, float64\n"
)
print(
    "1. Share of hidden activations passing no gradient back (sigmoid: < 0.01 or > 0.99; ReLU: exactly 0)"
)
print("setup".ljust(18) + "".join(f"layer {i}".rjust(10) for i in range(1, HIDDEN_LAYERS + 1)))
for label, (activation, activations, _) in results.items():
    print(label.ljust(18) + "".join(f"{off_share(a, activation):10.1%}" for a in activations))

print("\n2. Mean |dL/dW| of each layer (layer 6 is the output layer)")
print(
    "setup".ljust(18)
    + "".join(f"W{i}".rjust(11) for i in range(1, HIDDEN_LAYERS + 2))
    + "   W1 / W6"
)
for label, (_, _, mean_grads) in results.items():
    print(
        label.ljust(18)
        + "".join(f"{g:11.3e}" for g in mean_grads)
        + f"   {mean_grads[0] / mean_grads[-1]:.1e}"
    )

sigmoid_first = results["sigmoid, Xavier"][2][0]
relu_first = results["ReLU, He"][2][0]
print(
    f"\nfirst-layer gradient: sigmoid (Xavier) {sigmoid_first:.3e}, ReLU (He) {relu_first:.3e}, "
    f"ratio {sigmoid_first / relu_first:.1e}"
)

try:
    from matplotlib.figure import Figure
except ImportError:
    print('No pictures: matplotlib is not installed (pip install "tinyconv[plot]").')
else:
    figure = Figure(figsize=(13, 9))
    for row, (label, (activation, activations, _)) in enumerate(results.items()):
        for column, values in enumerate(activations):
            axes = figure.add_subplot(len(results), HIDDEN_LAYERS, row * HIDDEN_LAYERS + column + 1)
            axes.hist(values.ravel(), bins=30, range=(0, 1) if activation == "sigmoid" else None)
            axes.set_yticks([])
            if row == 0:
                axes.set_title(f"layer {column + 1}")
            if column == 0:
                axes.set_ylabel(label)
    figure.tight_layout()
    figure.savefig("activations.png")
    print("Saved activations.png")

    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.add_subplot()
    layers = np.arange(1, HIDDEN_LAYERS + 2)
    for label, (_, _, mean_grads) in results.items():
        axes.semilogy(layers, mean_grads, marker="o", label=label)
    axes.set_xlabel("layer (1 = first, 6 = output)")
    axes.set_ylabel("mean |dL/dW|")
    axes.legend()
    figure.tight_layout()
    figure.savefig("gradients.png")
    print("Saved gradients.png")
