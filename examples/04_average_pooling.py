"""DLfS 7.3 -- average pooling.

The same 2x2 windows with stride 2 as max pooling, but each window is replaced by its mean.  (The
book mentions it; image recognition mostly uses max pooling.)

Run:  python examples/04_average_pooling.py
"""

import numpy as np

from tinyconv import functional as F
from tinyconv import reference
from tinyconv.layers import Pooling

x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=np.float64)
print("input (4, 4):")
print(x.astype(int))

pool, stride = 2, 2
y = np.zeros((2, 2))
for i in range(2):
    for j in range(2):
        window = x[i * stride : i * stride + pool, j * stride : j * stride + pool]
        y[i, j] = window.mean()
        print(f"  window ({i}, {j}): {window.astype(int).tolist()} -> mean {y[i, j]:g}")
print("average pooling 2x2, stride 2 (2, 2):")
print(y)

x4 = x.reshape(1, 1, 4, 4)
loop = reference.avg_pool2d_naive(x4, pool, pool, stride)
fast = F.avg_pool2d_forward(x4, pool, pool, stride)
layer = Pooling(pool, pool, stride=stride, mode="avg").forward(x4)
print("tinyconv.layers.Pooling(2, 2, stride=2, mode='avg'):")
print(layer[0, 0])
print(
    "all agree:",
    bool(
        np.array_equal(loop[0, 0], y) and np.array_equal(fast, loop) and np.array_equal(layer, loop)
    ),
)
