"""A script written the way users write them, against tinyconv.functional, tinyconv.functions,
tinyconv.util and tinyconv.gradient. mypy (strict) checks it with the package (pyproject's
[tool.mypy] files), and tests/test_typing_user_script.py runs it. Each line relies on what the
annotations promise: array-likes and (h, w) pairs accepted, an array (not None) for dx unless
need_dx=False says otherwise, int64 argmax indices, a float loss."""

from __future__ import annotations

import numpy as np

from tinyconv import functional as F
from tinyconv.functions import cross_entropy_error, sigmoid, softmax, step_function
from tinyconv.gradient import numerical_gradient
from tinyconv.util import col2im, conv_output_size, im2col

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
W = rng.standard_normal((4, 3, 3, 3))
b = [0.0, 0.1, 0.2, 0.3]  # any array-like

y = F.conv2d_forward(x, W, b, stride=(1, 1), pad=1, relu=True)
dx, dW, db = F.conv2d_backward(np.ones_like(y), x, W, 1, 1)
print(dx.shape, dW.dtype, db.sum())  # need_dx defaults to True: dx is an array
first_dx, _, _ = F.conv2d_backward(np.ones_like(y), x, W, pad=1, need_dx=False)
if first_dx is not None:
    print(first_dx.shape)

pooled, argmax = F.max_pool2d_forward(y, 2, 2, stride=2)
index: np.int64 = argmax.ravel()[0]
grad = F.max_pool2d_backward(np.ones_like(pooled), argmax, y.shape, relu_output=y)
print(grad.mean(), index)

loss, probabilities = F.softmax_cross_entropy_forward(rng.standard_normal((2, 5)), [1, 4])
total: float = loss + 1.0
affine_dx = F.affine_backward(np.ones((2, 5)), np.ones((2, 7)), np.ones((7, 5)))[0]
print(total, probabilities.argmax(axis=1), affine_dx.shape)

col = im2col(x, 3, 3, stride=1, pad=1)
size: int = conv_output_size(28, 5)
print(col2im(col, x.shape, 3, 3, 1, 1).shape, size)

steps = step_function(np.array([-1.0, 2.0]))
activations = sigmoid([[0.5, -1.0]])
print(steps.tolist(), activations.shape, softmax(activations).sum())
print(float(cross_entropy_error(softmax([[2.0, 1.0]]), [0])))

weights = rng.standard_normal((3, 2))
print(numerical_gradient(lambda _: float(np.sum(weights**2)), weights).shape)
