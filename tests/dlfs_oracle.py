"""A NumPy re-statement of the maths of *Deep Learning from Scratch* (DLfS), used as the oracle
that tinyconv's layers, networks, optimizers and parameter files are checked against.

Everything here follows DLfS's ``common/`` code operation for operation -- im2col-based
convolution and pooling, ``softmax`` then ``log(y + 1e-7)`` for the loss, DLfS's batch norm and
dropout, DLfS's initialisation order -- but is written independently and uses no tinyconv code.
It is deliberately plain and slow. Only test code imports it.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np

# ----------------------------------------------------------------------------------------------
# functions


def softmax(x):
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        y, t = y.reshape(1, -1), np.asarray(t).reshape(1, -1)
    if t.size == y.size:
        t = t.argmax(axis=1)
    n = y.shape[0]
    return -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------------------------
# im2col / col2im, rows layout: (N*OH*OW, C*FH*FW)


def im2col(images, fh, fw, stride=1, pad=0):
    n, c, h, w = images.shape
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    padded = np.pad(images, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((n, c, fh, fw, oh, ow), dtype=images.dtype)
    for dy in range(fh):
        for dx in range(fw):
            col[:, :, dy, dx, :, :] = padded[
                :, :, dy : dy + stride * oh : stride, dx : dx + stride * ow : stride
            ]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def col2im(col, shape, fh, fw, stride=1, pad=0):
    n, c, h, w = shape
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    col = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    image = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for dy in range(fh):
        for dx in range(fw):
            image[:, :, dy : dy + stride * oh : stride, dx : dx + stride * ow : stride] += col[
                :, :, dy, dx, :, :
            ]
    return image[:, :, pad : h + pad, pad : w + pad]


# ----------------------------------------------------------------------------------------------
# layers


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class Sigmoid:
    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return (dout @ self.W.T).reshape(self.shape)


class SoftmaxWithLoss:
    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        return cross_entropy_error(self.y, t)

    def backward(self, dout=1):
        n = self.t.shape[0]
        if self.t.size == self.y.size:
            return (self.y - self.t) / n
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return dx / n


class Dropout:
    def __init__(self, ratio=0.5):
        self.ratio = ratio

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.ratio
            return x * self.mask
        return x * (1.0 - self.ratio)

    def backward(self, dout):
        return dout * self.mask


class BatchNormalization:
    """Per-feature batch norm over (N, D) (4-D input flattened), DLfS's formulas."""

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, train_flg=True):
        self.shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.zeros(x.shape[1])
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc**2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.n, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + 10e-7)
        return (self.gamma * xn + self.beta).reshape(self.shape)

    def backward(self, dout):
        dout = dout.reshape(dout.shape[0], -1)
        self.dbeta = dout.sum(axis=0)
        self.dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / self.n) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        return (dxc - dmu / self.n).reshape(self.shape)


class Convolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        fn, _, fh, fw = self.W.shape
        n, _, h, w = x.shape
        oh = (h + 2 * self.pad - fh) // self.stride + 1
        ow = (w + 2 * self.pad - fw) // self.stride + 1
        self.x = x
        self.col = im2col(x, fh, fw, self.stride, self.pad)
        self.col_W = self.W.reshape(fn, -1).T
        out = self.col @ self.col_W + self.b
        return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        fn, c, fh, fw = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, fn)
        self.db = dout.sum(axis=0)
        self.dW = (self.col.T @ dout).transpose(1, 0).reshape(fn, c, fh, fw)
        dcol = dout @ self.col_W.T
        return col2im(dcol, self.x.shape, fh, fw, self.stride, self.pad)


class Pooling:
    """Max pooling as DLfS (pad=0 only; DLfS pads with zeros)."""

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        n, c, h, w = x.shape
        oh = (h + 2 * self.pad - self.pool_h) // self.stride + 1
        ow = (w + 2 * self.pad - self.pool_w) // self.stride + 1
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad).reshape(
            -1, self.pool_h * self.pool_w
        )
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        return np.max(col, axis=1).reshape(n, oh, ow, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, size), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape((*dout.shape, size))
        dcol = dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


class AvgPooling:
    """Average pooling with zero padding counted in (DLfS has none; the same im2col scheme)."""

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        n, c, h, w = x.shape
        oh = (h + 2 * self.pad - self.pool_h) // self.stride + 1
        ow = (w + 2 * self.pad - self.pool_w) // self.stride + 1
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad).reshape(
            -1, self.pool_h * self.pool_w
        )
        return np.mean(col, axis=1).reshape(n, oh, ow, c).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------
# networks (DLfS's initialisation order and layer stacks)


class SimpleConvNet:
    def __init__(
        self,
        input_dim=(1, 28, 28),
        conv_param=None,
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
    ):
        conv_param = conv_param or {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        fn, fs = conv_param["filter_num"], conv_param["filter_size"]
        conv_out = (input_dim[1] - fs + 2 * conv_param["pad"]) / conv_param["stride"] + 1
        pool_out = int(fn * (conv_out / 2) * (conv_out / 2))
        self.params = {
            "W1": weight_init_std * np.random.randn(fn, input_dim[0], fs, fs),
            "b1": np.zeros(fn),
            "W2": weight_init_std * np.random.randn(pool_out, hidden_size),
            "b2": np.zeros(hidden_size),
            "W3": weight_init_std * np.random.randn(hidden_size, output_size),
            "b3": np.zeros(output_size),
        }
        self.conv_param = conv_param
        self._build()

    def _build(self):
        p = self.params
        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(
            p["W1"], p["b1"], self.conv_param["stride"], self.conv_param["pad"]
        )
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(2, 2, stride=2)
        self.layers["Affine1"] = Affine(p["W2"], p["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(p["W3"], p["b3"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
            grads[f"W{i}"], grads[f"b{i}"] = self.layers[name].dW, self.layers[name].db
        return grads

    def save_params(self, file_name):
        """Exactly DLfS's way: pickle.dump of a plain dict, default protocol."""
        params = dict(self.params.items())
        with open(file_name, "wb") as f:
            pickle.dump(params, f)


class DeepConvNet:
    """Forward pass (test mode) of DLfS's ch08 network for 1x28x28 input."""

    def __init__(self, hidden_size=50, output_size=10):
        convs = [
            (16, 1),
            (16, 1),
            (32, 1),
            (32, 2),
            (64, 1),
            (64, 1),
        ]  # (filters, pad), 3x3, stride 1
        pre_node_nums = np.array(
            [
                1 * 3 * 3,
                16 * 3 * 3,
                16 * 3 * 3,
                32 * 3 * 3,
                32 * 3 * 3,
                64 * 3 * 3,
                64 * 4 * 4,
                hidden_size,
            ]
        )
        scales = np.sqrt(2.0 / pre_node_nums)
        self.params = {}
        channels = 1
        for i, (fn, _) in enumerate(convs):
            self.params[f"W{i + 1}"] = scales[i] * np.random.randn(fn, channels, 3, 3)
            self.params[f"b{i + 1}"] = np.zeros(fn)
            channels = fn
        self.params["W7"] = scales[6] * np.random.randn(64 * 4 * 4, hidden_size)
        self.params["b7"] = np.zeros(hidden_size)
        self.params["W8"] = scales[7] * np.random.randn(hidden_size, output_size)
        self.params["b8"] = np.zeros(output_size)
        self.convs = convs

    def predict(self, x, train_flg=False):
        p = self.params
        layers = []
        for i, (_, pad) in enumerate(self.convs, start=1):
            layers += [Convolution(p[f"W{i}"], p[f"b{i}"], 1, pad), Relu()]
            if i % 2 == 0:
                layers.append(Pooling(2, 2, stride=2))
        layers += [
            Affine(p["W7"], p["b7"]),
            Relu(),
            Dropout(0.5),
            Affine(p["W8"], p["b8"]),
            Dropout(0.5),
        ]
        for layer in layers:
            x = layer.forward(x, train_flg) if isinstance(layer, Dropout) else layer.forward(x)
        return x


# ----------------------------------------------------------------------------------------------
# optimizers: DLfS's update formulas, applied to copies (returns new dicts, leaves inputs alone)


def sgd_step(params, grads, lr=0.01):
    return {k: params[k] - lr * grads[k] for k in params}


def momentum_step(params, grads, v, lr=0.01, momentum=0.9):
    v = {k: momentum * v[k] - lr * grads[k] for k in params}
    return {k: params[k] + v[k] for k in params}, v


def nesterov_step(params, grads, v, lr=0.01, momentum=0.9):
    new_v, new_p = {}, {}
    for k in params:
        new_v[k] = v[k] * momentum
        new_v[k] = new_v[k] - lr * grads[k]
        p = params[k] + momentum * momentum * new_v[k]
        new_p[k] = p - (1 + momentum) * lr * grads[k]
    return new_p, new_v


def adagrad_step(params, grads, h, lr=0.01):
    h = {k: h[k] + grads[k] * grads[k] for k in params}
    return {k: params[k] - lr * grads[k] / (np.sqrt(h[k]) + 1e-7) for k in params}, h


def rmsprop_step(params, grads, h, lr=0.01, decay_rate=0.99):
    h = {k: h[k] * decay_rate + (1 - decay_rate) * grads[k] * grads[k] for k in params}
    return {k: params[k] - lr * grads[k] / (np.sqrt(h[k]) + 1e-7) for k in params}, h


def adam_step(params, grads, m, v, it, lr=0.001, beta1=0.9, beta2=0.999):
    it += 1
    lr_t = lr * np.sqrt(1.0 - beta2**it) / (1.0 - beta1**it)
    m = {k: m[k] + (1 - beta1) * (grads[k] - m[k]) for k in params}
    v = {k: v[k] + (1 - beta2) * (grads[k] ** 2 - v[k]) for k in params}
    return {k: params[k] - lr_t * m[k] / (np.sqrt(v[k]) + 1e-7) for k in params}, m, v, it
