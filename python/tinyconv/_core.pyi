"""Type stubs of the private compiled module (use tinyconv.functional / tinyconv.util)."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

_F = NDArray[np.floating[Any]]
_I = NDArray[np.int64]

def gemm(
    a: _F, b: _F, c: _F | None, alpha: float, beta: float, trans_a: bool, trans_b: bool
) -> _F: ...
def im2col(
    input_data: _F,
    filter_h: int,
    filter_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
) -> _F: ...
def col2im(
    col: _F,
    n: int,
    c: int,
    h: int,
    w: int,
    filter_h: int,
    filter_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
) -> _F: ...
def conv2d_forward(
    x: _F, W: _F, b: _F, stride_h: int, stride_w: int, pad_h: int, pad_w: int, relu: bool = False
) -> _F: ...
def conv2d_backward(
    dout: _F,
    x: _F,
    W: _F,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    need_dx: bool = True,
) -> tuple[_F | None, _F, _F]: ...
def max_pool2d_forward(
    x: _F,
    pool_h: int,
    pool_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    with_argmax: bool = True,
) -> tuple[_F, _I | None]: ...
def max_pool2d_backward_from_input(
    dout: _F,
    x: _F,
    pool_h: int,
    pool_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    through_relu: bool = False,
) -> _F: ...
def max_pool2d_backward(
    dout: _F, argmax: _I, n: int, c: int, h: int, w: int, relu_output: _F | None = None
) -> _F: ...
def avg_pool2d_forward(
    x: _F, pool_h: int, pool_w: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int
) -> _F: ...
def avg_pool2d_backward(
    dout: _F,
    n: int,
    c: int,
    h: int,
    w: int,
    pool_h: int,
    pool_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
) -> _F: ...
def global_avg_pool2d_forward(x: _F) -> _F: ...
def global_avg_pool2d_backward(dout: _F, n: int, c: int, h: int, w: int) -> _F: ...
def batch_norm2d_forward(
    x: _F,
    gamma: _F,
    beta: _F,
    running_mean: _F,
    running_var: _F,
    train: bool,
    momentum: float,
    eps: float,
    unbiased: bool = False,
    relu: bool = False,
) -> tuple[_F, _F, _F]: ...
def batch_norm2d_backward(
    dout: _F, x: _F, gamma: _F, mean: _F, invstd: _F, train: bool, relu_output: _F | None = None
) -> tuple[_F, _F, _F]: ...
def add_forward(a: _F, b: _F, relu: bool = False, out: _F | None = None) -> _F: ...
def relu_forward(x: _F, out: _F | None = None) -> _F: ...
def relu_backward(dout: _F, x: _F, out: _F | None = None) -> _F: ...
def sigmoid_forward(x: _F) -> _F: ...
def sigmoid_backward(dout: _F, y: _F, out: _F | None = None) -> _F: ...
def softmax_forward(x: _F) -> _F: ...
def softmax_cross_entropy_forward(x: _F, t: _F | _I) -> tuple[float, _F]: ...
def softmax_cross_entropy_backward(y: _F, t: _F | _I, dout: float) -> _F: ...
def affine_forward(x: _F, W: _F, b: _F) -> _F: ...
def affine_backward(dout: _F, x: _F, W: _F, need_dx: bool = True) -> tuple[_F | None, _F, _F]: ...
def sgd_update(param: _F, grad: _F, lr: float) -> None: ...
def momentum_update(
    param: _F, v: _F, grad: _F, lr: float, momentum: float, nesterov: bool
) -> None: ...
def adaptive_update(
    param: _F, h: _F, grad: _F, lr: float, rmsprop: bool, decay: float, eps: float
) -> None: ...
def adam_update(
    param: _F, m: _F, v: _F, grad: _F, lr_t: float, beta1: float, beta2: float, eps: float
) -> None: ...
def find_nonfinite(values: _F, squared: bool = False) -> int: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_isa(isa: str) -> None: ...
def config() -> dict[str, Any]: ...

class reference:
    """Plain-loop oracles (tests only); same arguments as the fast functions."""

    gemm = gemm
    im2col = im2col
    col2im = col2im
    conv2d_forward = conv2d_forward
    conv2d_backward = conv2d_backward
    max_pool2d_forward = max_pool2d_forward
    avg_pool2d_forward = avg_pool2d_forward
    global_avg_pool2d_forward = global_avg_pool2d_forward
    batch_norm2d_forward = batch_norm2d_forward
    batch_norm2d_backward = batch_norm2d_backward
    find_nonfinite = find_nonfinite
