"""DLfS 7.2.3 -- the convolution operation, step by step.

A 4x4 input and a 3x3 filter: the filter slides over the input, and at every position the
element-wise products are summed (a "multiply-accumulate").  With stride 1 and no padding the
output is 2x2.  Then a bias is added to every output element.

The loops below are the definition; ``tinyconv.reference.conv2d_naive`` is the same loop over
whole batches and channels, and ``tinyconv.functional.conv2d_forward`` is the fast compiled
kernel.  All three must agree.

Run:  python examples/01_naive_convolution.py
"""

import numpy as np

from tinyconv import functional as F
from tinyconv import reference

x = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], dtype=np.float64)
w = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=np.float64)
bias = 3.0

print("input (4, 4):")
print(x.astype(int))
print("filter (3, 3):")
print(w.astype(int))

# The definition: one multiply-accumulate per output position.
out_h = x.shape[0] - w.shape[0] + 1
out_w = x.shape[1] - w.shape[1] + 1
y = np.zeros((out_h, out_w))
for i in range(out_h):
    for j in range(out_w):
        window = x[i : i + w.shape[0], j : j + w.shape[1]]
        y[i, j] = np.sum(window * w)
        print(f"  position ({i}, {j}): sum of window * filter = {int(y[i, j])}")

print("output (2, 2):")
print(y.astype(int))
print(f"output + bias {bias:g}:")
print((y + bias).astype(int))

# The same with tinyconv, in the (N, C, H, W) layout that layers use.
x4 = x.reshape(1, 1, 4, 4)
w4 = w.reshape(1, 1, 3, 3)
b1 = np.array([bias])
loop = reference.conv2d_naive(x4, w4, b1)
fast = F.conv2d_forward(x4, w4, b1)
print("tinyconv.reference.conv2d_naive with bias:")
print(loop[0, 0].astype(int))
print("tinyconv.functional.conv2d_forward with bias:")
print(fast[0, 0].astype(int))
print("all agree:", bool(np.array_equal(loop[0, 0], y + bias) and np.array_equal(fast, loop)))
