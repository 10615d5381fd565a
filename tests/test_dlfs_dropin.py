"""Issue 13: the scripts of DLfS chapters 5-8 run with only their imports changed.

Each case runs a book-style snippet -- the book's code with the README table's tinyconv imports,
shrunk where the book's sizes would only cost time -- and checks the book's behaviour. The DLfS
Trainer oracle below is re-stated from the book's algorithm (its source is not on this machine):
``iter_per_epoch = max(train_size / mini_batch_size, 1)`` (a float), ``max_iter = int(epochs *
iter_per_epoch)``, per step ``np.random.choice`` batch -> ``gradient`` -> ``optimizer.update`` ->
``loss`` (a second forward pass) -> evaluation when ``current_iter % iter_per_epoch == 0``.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from pathlib import Path

import dlfs_oracle as oracle
import numpy as np
import pytest

from tinyconv.datasets import load_sample
from tinyconv.nets import DeepConvNet, MultiLayerNetExtend, SimpleConvNet, TwoLayerNet
from tinyconv.trainer import Trainer

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def sample():
    """The shipped Fashion-MNIST sample as DLfS's load_mnist(flatten=False) gives it."""
    return load_sample(flatten=False)


def run_book_snippet(code: str) -> dict:
    """Run ``code`` as a script would run: a fresh module namespace, nothing imported beforehand
    (so a name the script does not import itself must come from its star imports)."""
    namespace = {"__name__": "__book_script__"}
    exec(compile(code, "<book script>", "exec"), namespace)
    return namespace


# ----------------------------------------------------------------------------------------------
# 1. Star imports bring what DLfS's modules bring

_DLFS_FUNCTIONS = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "mean_squared_error",
    "cross_entropy_error",
    "softmax_loss",
]
_DLFS_OPTIMIZERS = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]
# What ``from common.X import *`` binds in DLfS: the module has no __all__, so every public
# top-level name -- its own definitions and whatever it imported.
DLFS_STAR_EXPORTS = {
    "functions": ["np", *_DLFS_FUNCTIONS],
    "util": ["np", "smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im"],
    "gradient": ["np", "numerical_gradient", "numerical_gradient_2d"],
    "optimizer": ["np", *_DLFS_OPTIMIZERS],
    # common/layers.py: import numpy as np; from common.functions import *; from common.util import im2col, col2im
    "layers": [
        "np",
        *_DLFS_FUNCTIONS,
        "im2col",
        "col2im",
        "Relu",
        "Sigmoid",
        "Affine",
        "SoftmaxWithLoss",
        "Dropout",
        "BatchNormalization",
        "Convolution",
        "Pooling",
    ],
    # common/trainer.py: import sys, os; import numpy as np; from common.optimizer import *
    "trainer": ["sys", "os", "np", *_DLFS_OPTIMIZERS, "Trainer"],
}


@pytest.mark.parametrize("module", sorted(DLFS_STAR_EXPORTS))
def test_star_import_gives_what_dlfs_gives(module):
    namespace = run_book_snippet(f"from tinyconv.{module} import *")
    missing = [name for name in DLFS_STAR_EXPORTS[module] if name not in namespace]
    assert missing == [], f"from tinyconv.{module} import * lacks {missing}"
    assert namespace["np"] is np


@pytest.mark.parametrize("module", sorted(DLFS_STAR_EXPORTS))
def test_all_is_honest(module):
    mod = importlib.import_module(f"tinyconv.{module}")
    assert len(mod.__all__) == len(set(mod.__all__))
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []
    namespace = run_book_snippet(f"from tinyconv.{module} import *")
    assert set(namespace) - {"__name__", "__builtins__"} == set(mod.__all__)


def test_layers_star_import_names_are_the_functions_themselves():
    import tinyconv.functions as functions
    import tinyconv.util as util

    namespace = run_book_snippet("from tinyconv.layers import *")
    assert all(namespace[name] is getattr(functions, name) for name in _DLFS_FUNCTIONS)
    assert namespace["im2col"] is util.im2col
    assert namespace["col2im"] is util.col2im


def test_optimizer_compare_mnist_runs_without_importing_numpy():
    # ch06/optimizer_compare_mnist.py never imports numpy: np comes from common.optimizer's star.
    ns = run_book_snippet("""
from tinyconv.datasets import load_sample
from tinyconv.util import smooth_curve
from tinyconv.nets import MultiLayerNet
from tinyconv.optimizer import *

(x_train, t_train), (x_test, t_test) = load_sample(normalize=True)
train_size = x_train.shape[0]
batch_size = 128
max_iterations = 12

optimizers = {}
optimizers['SGD'] = SGD()
optimizers['Momentum'] = Momentum()
optimizers['AdaGrad'] = AdaGrad()
optimizers['Adam'] = Adam()

networks = {}
train_loss = {}
for key in optimizers.keys():
    networks[key] = MultiLayerNet(
        input_size=784, hidden_size_list=[100, 100, 100, 100],
        output_size=10)
    train_loss[key] = []

for i in range(max_iterations):
    batch_mask = np.random.choice(train_size, batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]

    for key in optimizers.keys():
        grads = networks[key].gradient(x_batch, t_batch)
        optimizers[key].update(networks[key].params, grads)

        loss = networks[key].loss(x_batch, t_batch)
        train_loss[key].append(loss)

smoothed = {key: smooth_curve(np.array(train_loss[key])) for key in optimizers.keys()}
""")
    assert all(len(ns["smoothed"][key]) == 12 for key in ns["optimizers"])
    # Adam and AdaGrad leave chance level (ln 10 = 2.30) within a dozen steps, as in the book's plot.
    assert ns["train_loss"]["Adam"][-1] < 2.0
    assert ns["train_loss"]["AdaGrad"][-1] < 2.0


# ----------------------------------------------------------------------------------------------
# 2. Labels of shape (N, 1) and 3. gradient checks in float64 whatever the network's dtype

CH07_GRADIENT_CHECK = """
import numpy as np
from tinyconv.nets import SimpleConvNet

np.random.seed(SEED)
network = SimpleConvNet(input_dim=(1,10, 10),
                        conv_param = {'filter_num':10, 'filter_size':3, 'pad':0, 'stride':1},
                        hidden_size=10, output_size=10, weight_init_std=0.01, dtype=DTYPE)

X = np.random.rand(100).reshape((1, 1, 10, 10))
T = np.array([1]).reshape((1,1))

grad_num = network.numerical_gradient(X, T)
grad = network.gradient(X, T)

diffs = {}
for key, val in grad_num.items():
    diffs[key] = np.abs(grad_num[key] - grad[key]).mean()
"""


def ch07_gradient_check(seed, dtype):
    return run_book_snippet(
        CH07_GRADIENT_CHECK.replace("SEED", str(seed)).replace("DTYPE", f"np.{dtype}")
    )


def test_ch07_gradient_check_runs_and_float32_shows_the_books_magnitudes():
    # Seed 7 keeps every perturbation clear of the ReLU and max-pool kinks, where central
    # differences are off by up to 1e-4 in DLfS's float64 too (see the next test).
    ns = ch07_gradient_check(7, "float32")
    assert set(ns["diffs"]) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert max(ns["diffs"].values()) < 1e-6, ns["diffs"]
    assert all(g.dtype == np.float64 for g in ns["grad_num"].values())
    assert all(p.dtype == np.float32 for p in ns["network"].params.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_gradient_check_adds_nothing_to_dlfs_float64_figures(seed):
    # The float64 network computes DLfS's figures (its weights are DLfS's under the same seed);
    # the float32 one must show the same, not float32's 1e-4..1e-3.
    float32, float64 = (
        ch07_gradient_check(seed, "float32")["diffs"],
        ch07_gradient_check(seed, "float64")["diffs"],
    )
    for key in float64:
        assert float32[key] <= float64[key] + 1e-7, (key, float32[key], float64[key])


def test_numerical_gradient_leaves_the_network_untouched():
    np.random.seed(3)
    network = MultiLayerNetExtend(
        input_size=12, hidden_size_list=[6, 6], output_size=3, use_batchnorm=True
    )
    x, t = np.random.rand(4, 12), np.array([0, 1, 2, 1])
    network.gradient(x, t)  # non-zero running statistics
    before = {key: value.copy() for key, value in network.state_dict().items()}
    arrays = dict(network.state_dict().items())
    layers = list(network.layers.values())
    network.numerical_gradient(x, t)
    after = network.state_dict()
    assert all(after[key] is arrays[key] for key in arrays)  # the same array objects ...
    assert all(
        np.array_equal(after[key], before[key]) and after[key].dtype == np.float32 for key in before
    )  # ... unchanged
    assert network.dtype == np.float32
    assert list(network.layers.values()) == layers
    assert network.layers["Affine1"].W is network.params["W1"]


def test_module_numerical_gradient_evaluates_a_float32_parameter_in_float64():
    from tinyconv.gradient import numerical_gradient

    np.random.seed(5)
    network = TwoLayerNet(input_size=6, hidden_size=4, output_size=3)
    x, t = np.random.rand(2, 6), np.array([[2], [0]])
    W1 = network.params["W1"]
    saved = W1.copy()
    grad = numerical_gradient(lambda W: network.loss(x, t), W1)  # DLfS's ch04 idiom
    assert grad.dtype == np.float64
    assert np.array_equal(W1, saved)
    assert network.params["W1"] is W1
    assert np.array_equal(grad, network.numerical_gradient(x, t)["W1"])
    backprop = network.gradient(x, t)["W1"]
    assert np.abs(grad - backprop).max() < 1e-8


def test_module_numerical_gradient_of_a_plain_array_keeps_dlfs_semantics():
    from tinyconv.gradient import numerical_gradient

    x = np.array([3.0, 4.0], dtype=np.float32)
    grad = numerical_gradient(lambda v: float(np.sum(v.astype(np.float64) ** 2)), x)
    assert grad.dtype == np.float32
    assert np.allclose(grad, [6.0, 8.0], rtol=1e-2)
    x64 = np.array([3.0, 4.0])
    assert np.allclose(numerical_gradient(lambda v: np.sum(v**2), x64), [6.0, 8.0], rtol=1e-9)


def test_ch06_batch_norm_gradient_check_float32_below_dlfs_figures(sample):
    (_x_train, _t_train), _ = load_sample(one_hot_label=True)
    results = {}
    for dtype in ("float32", "float64"):
        results[dtype] = run_book_snippet(f"""
import numpy as np
from tinyconv.datasets import load_sample
from tinyconv.nets import MultiLayerNetExtend

(x_train, t_train), (x_test, t_test) = load_sample(normalize=True, one_hot_label=True)
np.random.seed(1)
network = MultiLayerNetExtend(input_size=784, hidden_size_list=[10, 10], output_size=10,
                              use_batchnorm=True, dtype=np.{dtype})

x_batch = x_train[:1]
t_batch = t_train[:1]

grad_backprop = network.gradient(x_batch, t_batch)
grad_numerical = network.numerical_gradient(x_batch, t_batch)

diffs = {{}}
for key in grad_numerical.keys():
    diff = np.average( np.abs(grad_backprop[key] - grad_numerical[key]) )
    diffs[key] = diff
""")["diffs"]
    float32, dlfs = results["float32"], results["float64"]
    # The float32 figure for b3 was 9.5e-4; DLfS's own run printed 1.8e-7.
    assert float32["b3"] < 1.8e-7
    for key in dlfs:
        # beta2 differs by ~0.2 in DLfS as well: with one sample, batch norm outputs exactly
        # beta = 0, a ReLU kink, where central differences see half the slope.
        assert float32[key] <= dlfs[key] + 1e-8, (key, float32[key], dlfs[key])


def test_labels_as_a_column_mean_the_labels():
    from tinyconv.layers import SoftmaxWithLoss

    x = np.random.default_rng(0).standard_normal((5, 4))
    labels = np.array([3, 0, 1, 1, 2])
    flat, column, row = SoftmaxWithLoss(), SoftmaxWithLoss(), SoftmaxWithLoss()
    assert column.forward(x, labels.reshape(5, 1)) == flat.forward(x, labels)
    assert row.forward(x, labels.reshape(1, 5)) == flat.forward(x, labels)
    assert np.array_equal(column.backward(), flat.backward())
    assert np.array_equal(row.backward(), flat.backward())
    one_class = SoftmaxWithLoss()  # K == 1: t.size == y.size, so (N, 1) is a one-hot target
    assert one_class.forward(np.zeros((3, 1)), np.ones((3, 1))) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="t must"):
        SoftmaxWithLoss().forward(x, labels.reshape(5, 1)[:3])


def test_network_loss_and_accuracy_take_a_label_column(sample):
    (x_train, t_train), _ = sample
    np.random.seed(0)
    network = SimpleConvNet(dtype=np.float64)
    x, t = x_train[:30], t_train[:30]
    assert network.loss(x, t.reshape(-1, 1)) == network.loss(x, t)
    assert network.accuracy(x, t.reshape(-1, 1)) == network.accuracy(x, t)
    grads_flat = {key: value.copy() for key, value in network.gradient(x, t).items()}
    grads_column = network.gradient(x, t.reshape(-1, 1))
    assert all(np.array_equal(grads_column[key], grads_flat[key]) for key in grads_flat)


# ----------------------------------------------------------------------------------------------
# 4. TwoLayerNet


def test_ch05_gradient_check_with_two_layer_net():
    ns = run_book_snippet("""
import numpy as np
from tinyconv.datasets import load_sample
from tinyconv.nets import TwoLayerNet

(x_train, t_train), (x_test, t_test) = load_sample(normalize=True, one_hot_label=True)

network = TwoLayerNet(input_size=784, hidden_size=10, output_size=10)

x_batch = x_train[:3]
t_batch = t_train[:3]

grad_numerical = network.numerical_gradient(x_batch, t_batch)
grad_backprop = network.gradient(x_batch, t_batch)

diffs = {}
for key in grad_numerical.keys():
    diff = np.average( np.abs(grad_backprop[key] - grad_numerical[key]) )
    diffs[key] = diff
""")
    network = ns["network"]
    assert list(network.params) == ["W1", "b1", "W2", "b2"]
    assert isinstance(network.layers, OrderedDict)
    assert list(network.layers) == ["Affine1", "Relu1", "Affine2"]
    assert network.lastLayer is network.last_layer
    assert max(ns["diffs"].values()) < 1e-7, ns["diffs"]  # the book prints 1e-13..1e-10 in float64


def test_ch05_train_neuralnet_learns():
    ns = run_book_snippet("""
import numpy as np
from tinyconv.datasets import load_sample
from tinyconv.nets import TwoLayerNet

(x_train, t_train), (x_test, t_test) = load_sample(normalize=True, one_hot_label=True)
np.random.seed(0)
network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)

iters_num = 300
train_size = x_train.shape[0]
batch_size = 100
learning_rate = 0.1
train_loss_list = []
train_acc_list = []
test_acc_list = []
iter_per_epoch = max(train_size / batch_size, 1)

for i in range(iters_num):
    batch_mask = np.random.choice(train_size, batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]

    grad = network.gradient(x_batch, t_batch)

    for key in ('W1', 'b1', 'W2', 'b2'):
        network.params[key] -= learning_rate * grad[key]

    loss = network.loss(x_batch, t_batch)
    train_loss_list.append(loss)

    if i % iter_per_epoch == 0:
        train_acc = network.accuracy(x_train, t_train)
        test_acc = network.accuracy(x_test, t_test)
        train_acc_list.append(train_acc)
        test_acc_list.append(test_acc)
""")
    assert len(ns["train_acc_list"]) == 6  # i = 0, 50, ..., 250
    assert ns["test_acc_list"][-1] > 0.6 > ns["test_acc_list"][0]
    assert ns["train_loss_list"][-1] < 1.0 < ns["train_loss_list"][0]


def dlfs_two_layer_net(input_size, hidden_size, output_size, weight_init_std=0.01):
    """ch05/two_layer_net.py on the oracle's layers."""
    params = {
        "W1": weight_init_std * np.random.randn(input_size, hidden_size),
        "b1": np.zeros(hidden_size),
        "W2": weight_init_std * np.random.randn(hidden_size, output_size),
        "b2": np.zeros(output_size),
    }
    layers = [
        oracle.Affine(params["W1"], params["b1"]),
        oracle.Relu(),
        oracle.Affine(params["W2"], params["b2"]),
    ]
    return params, layers, oracle.SoftmaxWithLoss()


def test_two_layer_net_computes_dlfs_two_layer_net(sample):
    (x_train, t_train), _ = sample
    x, t = x_train[:20].reshape(20, -1).astype(np.float64), t_train[:20]
    np.random.seed(11)
    params, layers, last = dlfs_two_layer_net(784, 30, 10)
    np.random.seed(11)
    network = TwoLayerNet(784, 30, 10, dtype=np.float64)
    assert all(
        np.array_equal(params[key], network.params[key]) for key in params
    )  # DLfS's initial weights
    y = x
    for layer in layers:
        y = layer.forward(y)
    expected_loss = last.forward(y, t)
    dout = last.backward(1)
    for layer in reversed(layers):
        dout = layer.backward(dout)
    assert network.loss(x, t) == pytest.approx(expected_loss, rel=1e-6)  # DLfS adds 1e-7 in the log
    grads = network.gradient(x, t)
    expected = {"W1": layers[0].dW, "b1": layers[0].db, "W2": layers[2].dW, "b2": layers[2].db}
    assert all(np.allclose(grads[key], expected[key], rtol=1e-6, atol=1e-9) for key in expected)
    assert network.accuracy(x, t) == np.mean(np.argmax(y, axis=1) == t)


def test_two_layer_net_arguments_are_checked():
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        TwoLayerNet(4, 0, 3)
    with pytest.raises(TypeError, match="input_size must be a positive int, got '4'"):
        TwoLayerNet("4", 5, 3)
    with pytest.raises(TypeError, match="weight_init_std must be a number"):
        TwoLayerNet(4, 5, 3, weight_init_std="he")


# ----------------------------------------------------------------------------------------------
# 5. The README table


def readme_table():
    text = README.read_text(encoding="utf-8")
    section = text.split("## From DLfS to tinyconv", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize(
    "dlfs_path",
    [
        "dataset.mnist",
        "common.layers",
        "common.functions",
        "common.util",
        "common.gradient",
        "common.optimizer",
        "common.trainer",
        "common.multi_layer_net import MultiLayerNet",
        "common.multi_layer_net_extend",
        "two_layer_net import TwoLayerNet",
        "simple_convnet",
        "deep_convnet",
    ],
)
def test_readme_table_covers_dlfs_module(dlfs_path):
    assert any(dlfs_path in row.split("|")[1] for row in readme_table()), dlfs_path


def test_readme_table_imports_work():
    rows = readme_table()
    assert len(rows) >= 12
    for row in rows:
        for statement in re.findall(r"`(from tinyconv[^`]*)`", row.split("|")[2]):
            statement = statement.replace("...", "*")
            run_book_snippet(statement)


# ----------------------------------------------------------------------------------------------
# 6. Trainer: DLfS's console output and DLfS's exact schedule


class OracleSGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class OracleAdam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter, self.m, self.v = 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


class DLfSTrainer:
    """DLfS's common/trainer.py, from the book's algorithm."""

    def __init__(
        self,
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=20,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param=None,
        evaluate_sample_num_per_epoch=None,
    ):
        if optimizer_param is None:
            optimizer_param = {"lr": 0.01}
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = {"sgd": OracleSGD, "adam": OracleAdam}[optimizer.lower()](
            **optimizer_param
        )
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []

    def train_step(self):
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)
        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            x_train_sample, t_train_sample = self.x_train, self.t_train
            x_test_sample, t_test_sample = self.x_test, self.t_test
            if self.evaluate_sample_num_per_epoch is not None:
                t = self.evaluate_sample_num_per_epoch
                x_train_sample, t_train_sample = self.x_train[:t], self.t_train[:t]
                x_test_sample, t_test_sample = self.x_test[:t], self.t_test[:t]
            self.train_acc_list.append(self.network.accuracy(x_train_sample, t_train_sample))
            self.test_acc_list.append(self.network.accuracy(x_test_sample, t_test_sample))
        self.current_iter += 1

    def train(self):
        for _ in range(self.max_iter):
            self.train_step()
        self.final_test_acc = self.network.accuracy(self.x_test, self.t_test)


class NumpySimpleConvNet(oracle.SimpleConvNet):
    """The oracle's DLfS SimpleConvNet with DLfS's accuracy (full batches of 100)."""

    def accuracy(self, x, t, batch_size=100):
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            tx, tt = (
                x[i * batch_size : (i + 1) * batch_size],
                t[i * batch_size : (i + 1) * batch_size],
            )
            acc += np.sum(np.argmax(self.predict(tx), axis=1) == tt)
        return acc / x.shape[0]


def make_simple(dtype=np.float64):
    return SimpleConvNet(
        input_dim=(1, 28, 28),
        conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
        dtype=dtype,
    )


def run_both(make_network, data, seed, **options):
    """(tinyconv Trainer with dlfs_compat, oracle trainer), each from the same np.random state."""
    np.random.seed(seed)
    trainer = Trainer(make_network(), *data, verbose=False, dlfs_compat=True, **options)
    trainer.train()
    np.random.seed(seed)
    reference = DLfSTrainer(make_network(), *data, **options)
    reference.train()
    return trainer, reference


def assert_same_lists(trainer, reference):
    assert trainer.train_loss_list == reference.train_loss_list
    assert trainer.train_acc_list == reference.train_acc_list
    assert trainer.test_acc_list == reference.test_acc_list
    assert trainer.final_test_acc == reference.final_test_acc


@pytest.mark.parametrize(("optimizer", "lr"), [("SGD", 0.1), ("Adam", 0.001)])
def test_dlfs_compat_equals_dlfs_trainer_on_simple_convnet(sample, optimizer, lr):
    (x_train, t_train), (x_test, t_test) = sample
    data = (x_train[:1000], t_train[:1000], x_test[:500], t_test[:500])
    trainer, reference = run_both(
        make_simple,
        data,
        42,
        epochs=2,
        mini_batch_size=100,
        optimizer=optimizer,
        optimizer_param={"lr": lr},
    )
    assert len(trainer.train_loss_list) == 20
    assert len(trainer.train_acc_list) == 2
    assert trainer.iter_per_epoch == 10.0
    assert trainer.max_iter == 20
    assert trainer.current_epoch == 2
    assert_same_lists(trainer, reference)
    # Evaluated after the first step of each epoch, not at the end: not the final accuracy.
    assert trainer.test_acc_list[-1] != trainer.final_test_acc


def test_dlfs_compat_matches_dlfs_numpy_simple_convnet(sample):
    # The oracle trainer on DLfS's own (NumPy) network: the book's numbers, to rounding.
    (x_train, t_train), (x_test, t_test) = sample
    data = (x_train[:1000], t_train[:1000], x_test[:200], t_test[:200])
    np.random.seed(7)
    trainer = Trainer(
        make_simple(),
        *data,
        epochs=2,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param={"lr": 0.1},
        verbose=False,
        dlfs_compat=True,
    )
    trainer.train()
    np.random.seed(7)
    reference = DLfSTrainer(
        NumpySimpleConvNet(),
        *data,
        epochs=2,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param={"lr": 0.1},
    )
    reference.train()
    assert trainer.train_acc_list == reference.train_acc_list
    assert trainer.test_acc_list == reference.test_acc_list
    # DLfS's loss adds 1e-7 inside the log; tinyconv's is a log-sum-exp.
    assert np.allclose(trainer.train_loss_list, reference.train_loss_list, rtol=1e-6, atol=0)


def test_dlfs_compat_equals_dlfs_trainer_on_deep_convnet_with_dropout(sample):
    (x_train, t_train), (x_test, t_test) = sample
    data = (x_train[:60], t_train[:60], x_test[:40], t_test[:40])
    trainer, reference = run_both(
        lambda: DeepConvNet(dtype=np.float64),
        data,
        3,
        epochs=2,
        mini_batch_size=20,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
    )
    assert len(trainer.train_loss_list) == 6
    assert len(trainer.train_acc_list) == 2
    # Equal only if the second forward pass draws its dropout masks as DLfS's does.
    assert_same_lists(trainer, reference)


def test_dlfs_compat_fractional_epochs_as_dlfs(sample):
    (x_train, t_train), (x_test, t_test) = sample
    data = (x_train[:250], t_train[:250], x_test[:100], t_test[:100])
    trainer, reference = run_both(
        make_simple,
        data,
        5,
        epochs=3,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param={"lr": 0.1},
        evaluate_sample_num_per_epoch=100,
    )
    assert trainer.iter_per_epoch == 2.5
    assert trainer.max_iter == 7
    assert len(trainer.train_acc_list) == 2  # steps 0 and 5: 2.5 and 7.5 are no step's index
    assert_same_lists(trainer, reference)


def test_default_trainer_is_not_dlfs_schedule(sample):
    (x_train, t_train), (x_test, t_test) = sample
    data = (x_train[:200], t_train[:200], x_test[:100], t_test[:100])
    np.random.seed(1)
    trainer = Trainer(make_simple(), *data, epochs=2, mini_batch_size=100, verbose=False)
    trainer.train()
    np.random.seed(1)
    reference = DLfSTrainer(make_simple(), *data, epochs=2, mini_batch_size=100)
    reference.train()
    assert trainer.train_loss_list != reference.train_loss_list  # losses before the update
    assert trainer.test_acc_list[-1] == trainer.final_test_acc  # measured at the end of the epoch


def test_verbose_prints_what_dlfs_prints(sample, capsys):
    (x_train, t_train), (x_test, t_test) = sample
    # ch07/train_convnet.py with the sample's first 300 images and 2 epochs.
    network = SimpleConvNet(
        input_dim=(1, 28, 28),
        conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
    )
    trainer = Trainer(
        network,
        x_train[:300],
        t_train[:300],
        x_test[:100],
        t_test[:100],
        epochs=2,
        mini_batch_size=100,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
        evaluate_sample_num_per_epoch=100,
    )
    trainer.train()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    loss_lines = [line for line in lines if line.startswith("train loss:")]
    epoch_lines = [line for line in lines if line.startswith("=== epoch:")]
    assert [float(line[len("train loss:") :]) for line in loss_lines] == trainer.train_loss_list
    assert len(epoch_lines) == 2
    for number, (line, train_acc, test_acc) in enumerate(
        zip(epoch_lines, trainer.train_acc_list, trainer.test_acc_list), start=1
    ):
        assert line == f"=== epoch:{number}, train acc:{train_acc}, test acc:{test_acc} ==="
    assert lines[-2:] == [
        "=============== Final Test Accuracy ===============",
        f"test acc:{trainer.final_test_acc}",
    ]
    assert len(lines) == 6 + 2 + 2
    assert err == ""


def test_dlfs_compat_verbose_output_order(sample, capsys):
    (x_train, t_train), (x_test, t_test) = sample
    np.random.seed(0)
    trainer = Trainer(
        make_simple(),
        x_train[:200],
        t_train[:200],
        x_test[:100],
        t_test[:100],
        epochs=2,
        mini_batch_size=100,
        dlfs_compat=True,
    )
    trainer.train()
    lines = capsys.readouterr().out.splitlines()
    kinds = [line.split(":")[0] for line in lines]
    assert kinds == [
        "train loss",
        "=== epoch",
        "train loss",
        "train loss",
        "=== epoch",
        "train loss",
        "=============== Final Test Accuracy ===============",
        "test acc",
    ]


def test_log_epochs_keeps_the_summary(sample, capsys):
    (x_train, t_train), (x_test, t_test) = sample
    Trainer(
        make_simple(),
        x_train[:200],
        t_train[:200],
        x_test[:100],
        t_test[:100],
        epochs=2,
        mini_batch_size=100,
        log="epochs",
    ).train()
    out = capsys.readouterr().out
    assert "train loss:" not in out
    assert re.search(r"^epoch 2/2: loss [0-9.]+, train acc", out, re.MULTILINE)


def test_trainer_new_options_are_checked(sample):
    (x_train, t_train), (x_test, t_test) = sample
    data = (x_train[:10], t_train[:10], x_test[:10], t_test[:10])
    with pytest.raises(ValueError, match=r"log must be one of .*got 'quiet'"):
        Trainer(make_simple(), *data, log="quiet")
    with pytest.raises(TypeError, match="dlfs_compat must be True or False, got 'yes'"):
        Trainer(make_simple(), *data, dlfs_compat="yes")
    with pytest.raises(ValueError, match="sampling must be 'replacement', got 'permutation'"):
        Trainer(make_simple(), *data, dlfs_compat=True, sampling="permutation")
    with pytest.raises(ValueError, match="cannot write checkpoints"):
        Trainer(make_simple(), *data, dlfs_compat=True, checkpoint="x.ckpt")
