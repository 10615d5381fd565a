"""Type stubs of the private compiled module (use tinyconv.functional / tinyconv.util).

A stub package rather than a single ``_core.pyi`` so that the submodule ``_core.reference``
(``reference.pyi``) has stubs too, and stubtest checks it. Python imports the extension module,
never this directory: a directory without ``__init__.py`` is only a namespace package, which the
import system takes only when no module of that name exists on the path.

The bindings take every argument as a plain object and check it by name (csrc/module.cpp,
``def_checked``): arrays must be C-contiguous, aligned, native-order float32/float64 (int64 for
indices and labels), and all arrays of a call one dtype. The parameter names and defaults are
pybind11's (``py::arg``); tests/test_core_stubs.py keeps them equal to the runtime docstrings.
"""

from typing import Any, Literal, TypedDict, overload

import numpy as np

# The submodule is an attribute of the module as soon as it is imported, as at runtime.
from . import reference as reference

# ndarray[...] rather than numpy.typing.NDArray: NDArray is an alias that some NumPy releases'
# stubs define only for Python >= 3.10, and this package is checked as Python 3.9.
_F = np.ndarray[Any, np.dtype[np.floating[Any]]]
_I = np.ndarray[Any, np.dtype[np.int64]]

class _Config(TypedDict):
    version: str
    compiler: str
    openmp: str
    openmp_runtime: str
    num_procs: int
    num_threads: int
    isa: str
    available_isas: str
    simd_bits: int
    baseline_simd_bits: int
    sanitizers: str

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
def conv2d_max_pool_forward(
    x: _F,
    W: _F,
    b: _F,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    relu: bool,
    pool_h: int,
    pool_w: int,
    pool_stride_h: int,
    pool_stride_w: int,
    pool_pad_h: int,
    pool_pad_w: int,
) -> _F: ...
@overload
def conv2d_backward(
    dout: _F,
    x: _F,
    W: _F,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    need_dx: Literal[True] = True,
) -> tuple[_F, _F, _F]: ...
@overload
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
@overload
def max_pool2d_forward(
    x: _F,
    pool_h: int,
    pool_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    with_argmax: Literal[True] = True,
) -> tuple[_F, _I]: ...
@overload
def max_pool2d_forward(
    x: _F,
    pool_h: int,
    pool_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    with_argmax: Literal[False],
) -> tuple[_F, None]: ...
@overload
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
@overload
def affine_backward(dout: _F, x: _F, W: _F, need_dx: Literal[True] = True) -> tuple[_F, _F, _F]: ...
@overload
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
def config() -> _Config: ...
