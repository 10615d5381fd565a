"""DLfS 7.2.4-7.2.5 -- padding and stride.

Padding surrounds the input with zeros (so the output can keep the input's size); the stride is
the step of the sliding window.  The output size is

    OH = (H + 2*P - FH) / S + 1        OW = (W + 2*P - FW) / S + 1

This script checks the formula on the book's cases and on a 7x7 input with padding 1 and stride
2 (-> 4x4), and compares the plain loops of ``tinyconv.reference.conv2d_naive`` with the compiled
``tinyconv.functional.conv2d_forward``.

Run:  python examples/02_padding_and_stride.py
"""

import numpy as np

from tinyconv import functional as F
from tinyconv import reference
from tinyconv.util import conv_output_size


def compare(title, H, W, FH, FW, pad, stride, seed):
    rng = np.random.default_rng(seed)
    # Small integers, so every sum is exact and the two results must be identical.
    x = rng.integers(0, 5, size=(1, 1, H, W)).astype(np.float64)
    w = rng.integers(-2, 3, size=(1, 1, FH, FW)).astype(np.float64)
    b = np.zeros(1)
    oh, ow = conv_output_size(H, FH, stride, pad), conv_output_size(W, FW, stride, pad)
    print(f"{title}: input {H}x{W}, filter {FH}x{FW}, pad {pad}, stride {stride}")
    print(
        f"  OH = ({H} + 2*{pad} - {FH}) / {stride} + 1 = {oh},  OW = ({W} + 2*{pad} - {FW}) / {stride} + 1 = {ow}"
    )
    loop = reference.conv2d_naive(x, w, b, stride=stride, pad=pad)
    fast = F.conv2d_forward(x, w, b, stride=stride, pad=pad)
    print(f"  output shape: loop {loop.shape[2:]}, tinyconv {fast.shape[2:]}")
    print(f"  max |loop - tinyconv| = {np.max(np.abs(loop - fast)):g}")
    return loop, fast


# The book's Figure 7-6: padding 1 keeps a 4x4 input at 4x4 under a 3x3 filter.
x = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], dtype=np.float64)
w = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=np.float64)
padded = np.pad(x, 1)
print("input padded by 1 (6, 6):")
print(padded.astype(int))
y = F.conv2d_forward(x.reshape(1, 1, 4, 4), w.reshape(1, 1, 3, 3), np.zeros(1), stride=1, pad=1)
print("output with pad 1 (4, 4):")
print(y[0, 0].astype(int))
print()

compare("padding (book's figure 7-6)", 4, 4, 3, 3, pad=1, stride=1, seed=1)
compare("stride (book's figure 7-7)", 7, 7, 3, 3, pad=0, stride=2, seed=2)
loop, fast = compare("padding and stride", 7, 7, 3, 3, pad=1, stride=2, seed=3)
print("7x7, pad 1, stride 2 output (loop):")
print(loop[0, 0].astype(int))
print("loop and tinyconv agree:", bool(np.array_equal(loop, fast)))
