"""Plain-loop oracles of the fast kernels (tests only): the same arguments, defaults and
validation as the functions of the same name in ``tinyconv._core`` (csrc/module.cpp binds both
with the same ``py::arg`` lists)."""

from tinyconv._core import avg_pool2d_forward as avg_pool2d_forward
from tinyconv._core import batch_norm2d_backward as batch_norm2d_backward
from tinyconv._core import batch_norm2d_forward as batch_norm2d_forward
from tinyconv._core import col2im as col2im
from tinyconv._core import conv2d_backward as conv2d_backward
from tinyconv._core import conv2d_forward as conv2d_forward
from tinyconv._core import conv2d_max_pool_forward as conv2d_max_pool_forward
from tinyconv._core import find_nonfinite as find_nonfinite
from tinyconv._core import gemm as gemm
from tinyconv._core import global_avg_pool2d_forward as global_avg_pool2d_forward
from tinyconv._core import im2col as im2col
from tinyconv._core import max_pool2d_forward as max_pool2d_forward
