"""DLfS 7.4 -- convolution and pooling layers built on im2col.

``im2col`` unfolds every filter-sized window of the input into one row, so that a whole
convolution becomes a single matrix product (which BLAS-style code does fast), at the cost of
memory: overlapping windows are copied.  ``tinyconv.util.im2col`` keeps DLfS's signature and
column layout.

This script reproduces the book's shape checks, then writes the ``Convolution`` and ``Pooling``
layers the book's way (im2col + reshape + matrix product / row maximum, and col2im for the
backward pass) and compares them with tinyconv's layers, whose compiled kernels compute the same
thing without materialising the columns.

Run:  python examples/05_im2col_convolution_pooling.py
"""

import numpy as np

from tinyconv import layers
from tinyconv.util import col2im, im2col

rng = np.random.default_rng(0)

# --- 7.4.3: im2col's shapes -----------------------------------------------------------------
x1 = rng.random((1, 3, 7, 7))  # batch 1, 3 channels, 7x7
col1 = im2col(x1, 5, 5, stride=1, pad=0)
print("im2col of (1, 3, 7, 7) with a 5x5 filter:", col1.shape)  # 3x3 positions, 3*5*5 values

x2 = rng.random((10, 3, 7, 7))  # batch 10
col2 = im2col(x2, 5, 5, stride=1, pad=0)
print("im2col of (10, 3, 7, 7) with a 5x5 filter:", col2.shape)  # 10 * 9 rows


# --- 7.4.3: a convolution layer on im2col ---------------------------------------------------
class Convolution:
    """Convolution as in DLfS: unfold the input, multiply by the filters laid out as columns."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        FN, _, FH, FW = self.W.shape
        N, _, H, W = x.shape
        out_h = (H + 2 * self.pad - FH) // self.stride + 1
        out_w = (W + 2 * self.pad - FW) // self.stride + 1
        self.x = x
        self.col = im2col(x, FH, FW, self.stride, self.pad)  # (N*out_h*out_w, C*FH*FW)
        self.col_W = self.W.reshape(FN, -1).T  # (C*FH*FW, FN)
        out = self.col @ self.col_W + self.b  # (N*out_h*out_w, FN)
        # Rows are ordered (n, h, w): reshape, then move the filter axis next to the batch axis.
        return out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = dout.sum(axis=0)
        self.dW = (self.col.T @ dout).T.reshape(FN, C, FH, FW)
        dcol = dout @ self.col_W.T
        return col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)


# --- 7.4.4: a max pooling layer on im2col ---------------------------------------------------
class Pooling:
    """Max pooling as in DLfS: unfold, one row per (window, channel), take each row's maximum."""

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = (H + 2 * self.pad - self.pool_h) // self.stride + 1
        out_w = (W + 2 * self.pad - self.pool_w) // self.stride + 1
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)  # one window of one channel per row
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        return out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size))
        dmax[np.arange(self.arg_max.size), self.arg_max] = dout.ravel()  # only maxima get gradient
        dcol = dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


def max_difference(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


W = rng.normal(0, 0.1, size=(30, 3, 5, 5))
b = rng.normal(0, 0.1, size=30)
ours = Convolution(W, b)
theirs = layers.Convolution(W, b)
y_ours, y_tinyconv = ours.forward(x2), theirs.forward(x2)
print("Convolution forward of (10, 3, 7, 7) with 30 filters of 5x5:", y_ours.shape)
dout = rng.normal(size=y_ours.shape)
dx_ours, dx_tinyconv = ours.backward(dout), theirs.backward(dout)
conv_difference = max(
    max_difference(y_ours, y_tinyconv),
    max_difference(dx_ours, dx_tinyconv),
    max_difference(ours.dW, theirs.dW),
    max_difference(ours.db, theirs.db),
)
print(
    f"  largest difference from tinyconv.layers.Convolution (y, dx, dW, db): {conv_difference:.1e}"
)

x3 = rng.random((10, 3, 8, 8))
ours_pool, theirs_pool = Pooling(2, 2, stride=2), layers.Pooling(2, 2, stride=2)
p_ours, p_tinyconv = ours_pool.forward(x3), theirs_pool.forward(x3)
print("Pooling forward of (10, 3, 8, 8), 2x2 windows, stride 2:", p_ours.shape)
dout = rng.normal(size=p_ours.shape)
pool_difference = max(
    max_difference(p_ours, p_tinyconv),
    max_difference(ours_pool.backward(dout), theirs_pool.backward(dout)),
)
print(f"  largest difference from tinyconv.layers.Pooling (y, dx): {pool_difference:.1e}")
print("agree with tinyconv:", conv_difference < 1e-10 and pool_difference < 1e-10)
