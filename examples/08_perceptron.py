"""DLfS chapter 2 (recalled at the close of chapter 8) -- the perceptron: AND, NAND and OR are
linearly separable, XOR is not, and stacking perceptrons solves it.

1. AND, NAND and OR as single perceptrons with the book's hand-set weights and biases
   (``y = 1 if w1*x1 + w2*x2 + b > 0 else 0``), and XOR as a two-layer composition,
   ``XOR(x1, x2) = AND(NAND(x1, x2), OR(x1, x2))``; each truth table printed as
   ``AND(0, 1) = 0`` ... ``XOR(1, 1) = 0``.
2. A single linear unit (tinyconv's ``Affine`` + ``SoftmaxWithLoss``) trained on XOR by gradient
   descent: one straight line cannot put (0, 1) and (1, 0) on one side and (0, 0) and (1, 1) on
   the other, so at least one of the four points stays wrong, however long it trains.
3. A two-layer network (``Affine`` -> ``Relu`` -> ``Affine``, tinyconv's ``TwoLayerNet``) trained
   the same way: the hidden layer bends the boundary and all four points come out right.

Writes ``perceptron_xor.png`` (the decision regions of both trained models) when matplotlib is
installed. Runs in a second.

Run:  python examples/08_perceptron.py [--steps 2000] [--seed 0]
"""

import argparse

import numpy as np

from tinyconv.layers import Affine, SoftmaxWithLoss
from tinyconv.nets import TwoLayerNet
from tinyconv.optimizer import Adam

parser = argparse.ArgumentParser(
    description="Perceptrons: AND, NAND, OR, XOR; a linear unit vs two layers on XOR."
)
parser.add_argument(
    "--steps", type=int, default=2000, help="gradient steps for each trained model (default 2000)"
)
parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
args = parser.parse_args()

INPUTS = [(0, 0), (1, 0), (0, 1), (1, 1)]


def perceptron(w1, w2, b):
    """The book's perceptron: fires (1) when the weighted sum plus the bias is positive."""

    def gate(x1, x2):
        return 1 if w1 * x1 + w2 * x2 + b > 0 else 0

    return gate


AND = perceptron(0.5, 0.5, -0.7)
NAND = perceptron(-0.5, -0.5, 0.7)
OR = perceptron(0.5, 0.5, -0.2)


def XOR(x1, x2):
    return AND(NAND(x1, x2), OR(x1, x2))  # two layers: NAND and OR, then AND


print(
    "1. Perceptrons with hand-set weights (w1, w2, b): AND (0.5, 0.5, -0.7), NAND (-0.5, -0.5, 0.7), "
    "OR (0.5, 0.5, -0.2); XOR = AND(NAND, OR)"
)
for name, gate in (("AND", AND), ("NAND", NAND), ("OR", OR), ("XOR", XOR)):
    for x1, x2 in INPUTS:
        print(f"{name}({x1}, {x2}) = {gate(x1, x2)}")
    print()

x = np.array(INPUTS, dtype=np.float64)
t = np.array([XOR(x1, x2) for x1, x2 in INPUTS])


class LinearUnit:
    """One layer: two inputs, two scores (class 0 and class 1), softmax -- a linear classifier,
    whose boundary between the classes is a straight line."""

    def __init__(self, rng):
        self.params = {"W": rng.standard_normal((2, 2)) * 0.1, "b": np.zeros(2)}
        self.affine = Affine(self.params["W"], self.params["b"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        return self.affine.forward(x)

    def gradient(self, x, t):
        self.last_layer.forward(self.predict(x), t)
        self.affine.backward(self.last_layer.backward())
        return {"W": self.affine.dW, "b": self.affine.db}


def train(model, steps):
    optimizer = Adam(lr=0.05)
    for _ in range(steps):
        optimizer.update(model.params, model.gradient(x, t))
    return np.argmax(model.predict(x), axis=1)


def report(title, predicted):
    print(title)
    for (x1, x2), y in zip(INPUTS, predicted):
        print(f"  XOR({x1}, {x2}) -> {y}" + ("" if y == XOR(x1, x2) else "   wrong"))
    correct = int(np.sum(predicted == t))
    print(f"  {correct} of 4 right")
    return correct


rng = np.random.default_rng(args.seed)
linear = LinearUnit(rng)
linear_correct = report(
    f"2. A single linear unit trained on XOR ({args.steps} Adam steps, full batch):",
    train(linear, args.steps),
)
print("  a straight line cannot separate XOR's classes: at most 3 of 4 points can be right\n")

two_layer = TwoLayerNet(
    input_size=2,
    hidden_size=8,
    output_size=2,
    weight_init_std=1.0,
    dtype=np.float64,
    seed=args.seed,
)
two_layer_correct = report(
    f"3. A two-layer network (2 -> 8 ReLU -> 2) trained on XOR ({args.steps} Adam steps):",
    train(two_layer, args.steps),
)
print(f"\nsingle linear unit: {linear_correct}/4, two layers: {two_layer_correct}/4")

try:
    from matplotlib.figure import Figure
except ImportError:
    print('No picture: matplotlib is not installed (pip install "tinyconv[plot]").')
else:
    grid = np.linspace(-0.5, 1.5, 201)
    points = np.array([(a, b) for b in grid for a in grid])
    figure = Figure(figsize=(9, 4.2))
    for index, (title, model) in enumerate(
        (("single linear unit", linear), ("two layers", two_layer)), start=1
    ):
        axes = figure.add_subplot(1, 2, index)
        regions = np.argmax(model.predict(points), axis=1).reshape(len(grid), len(grid))
        axes.contourf(grid, grid, regions, levels=[-0.5, 0.5, 1.5], colors=["#dde6f5", "#f5dede"])
        for label, marker in ((0, "o"), (1, "^")):
            axes.scatter(
                x[t == label, 0], x[t == label, 1], marker=marker, s=90, label=f"XOR = {label}"
            )
        axes.set_title(title)
        axes.set_xlabel("x1")
        axes.set_ylabel("x2")
        axes.legend(loc="center")
    figure.tight_layout()
    figure.savefig("perceptron_xor.png")
    print("Saved perceptron_xor.png")
