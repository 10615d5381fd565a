"""DLfS 7.3 -- max pooling.

A 2x2 window moves over the input with stride 2 and keeps the largest value of each window, so a
4x4 input becomes 2x2.  Pooling has no parameters and treats every channel on its own.

``tinyconv.reference.max_pool2d_naive`` is the plain loop; ``tinyconv.functional.max_pool2d_forward``
the compiled kernel, which also returns where each maximum came from (backpropagation needs it).

Run:  python examples/03_max_pooling.py
"""

import numpy as np

from tinyconv import functional as F
from tinyconv import reference

x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=np.float64)
print("input (4, 4):")
print(x.astype(int))

# The definition, written out: the maximum of each 2x2 window, windows 2 apart.
pool, stride = 2, 2
y = np.zeros((2, 2))
for i in range(2):
    for j in range(2):
        window = x[i * stride : i * stride + pool, j * stride : j * stride + pool]
        y[i, j] = window.max()
        print(f"  window ({i}, {j}): {window.astype(int).tolist()} -> max {int(y[i, j])}")
print("max pooling 2x2, stride 2 (2, 2):")
print(y.astype(int))

loop, _ = reference.max_pool2d_naive(x.reshape(1, 1, 4, 4), pool, pool, stride)
fast, argmax = F.max_pool2d_forward(x.reshape(1, 1, 4, 4), pool, pool, stride)
print("tinyconv.functional.max_pool2d_forward:")
print(fast[0, 0].astype(int))
print("flat index (h * 4 + w) of each maximum in the input:")
print(argmax[0, 0])
print("all agree:", bool(np.array_equal(loop[0, 0], y) and np.array_equal(fast, loop)))
