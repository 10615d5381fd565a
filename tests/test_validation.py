"""Every validation path of every public function raises the documented exception, with a message
that names the offending argument, and leaves the interpreter in working order:

* ValueError for wrong values and shapes (ndim, channels, stride < 1, pad < 0, windows larger
  than the padded input, max pooling with pad >= pool, labels / argmax out of range, a wrong
  input_shape);
* TypeError for data that is not real numbers (complex, object, strings) and for non-int
  stride / pad / sizes (1.5, True, strings);
* MemoryError (or ValueError) for absurd sizes whose products overflow or exceed memory.

Then a bounded random fuzz checks that junk of every kind only ever raises those three, in
process (Hypothesis) and in a child interpreter, where a segfault shows up as a failed exit code
instead of killing pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import fuzzing
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyconv
from tinyconv import _core, util
from tinyconv import functional as F
from tinyconv import reference as R

# Small valid arguments; each case below breaks exactly one thing.
X = np.zeros((1, 1, 4, 4))
W = np.zeros((1, 1, 3, 3))
B = np.zeros(1)
DOUT = np.zeros(
    (1, 1, 2, 2)
)  # conv output of X, W (3x3, stride 1, no pad); also 2x2/2 pooling output
ARGMAX = np.zeros((1, 1, 2, 2), dtype=np.int64)
LOGITS = np.zeros((2, 3))
LABELS = np.array([0, 2])
COL = np.zeros((4, 9))  # im2col(X, 3, 3)
C2 = np.ones(2)  # a per-channel vector of XBN
XBN = np.zeros((2, 2, 3, 3))  # batch normalisation input, 2 channels


def bn(x=XBN, gamma=C2, beta=C2, running_mean=None, running_var=None, **options):
    """batch_norm2d_forward with valid defaults (fresh, writeable running statistics; train=True)."""
    options = {"train": True, "momentum": 0.9, "eps": 1e-5, **options}
    running_mean = np.zeros(2) if running_mean is None else running_mean
    running_var = np.ones(2) if running_var is None else running_var
    return F.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, **options)


def bnb(dout=XBN, x=XBN, gamma=C2, mean=C2, invstd=C2, **options):
    return F.batch_norm2d_backward(dout, x, gamma, mean, invstd, **{"train": True, **options})


def fold(W=None, b=C2, gamma=C2, beta=C2, running_mean=C2, running_var=C2, eps=1e-5):
    W = np.ones((2, 1, 3, 3)) if W is None else W
    return F.fold_batch_norm(W, b, gamma, beta, running_mean, running_var, eps)


def read_only_array(shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


def case(id_, call, error, match):
    return pytest.param(call, error, match, id=id_)


def word(name: str) -> str:
    """A regex matching ``name`` as a whole word in the error message."""
    return rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])"


VALUE_ERRORS = [
    # convolution: shapes
    case("conv-x-3d", lambda: F.conv2d_forward(X[0], W, B), ValueError, word("x")),
    case("conv-x-5d", lambda: F.conv2d_forward(X[None], W, B), ValueError, word("x")),
    case("conv-W-3d", lambda: F.conv2d_forward(X, W[0], B), ValueError, word("W")),
    case("conv-b-2d", lambda: F.conv2d_forward(X, W, B[None]), ValueError, word("b")),
    case("conv-b-length", lambda: F.conv2d_forward(X, W, np.zeros(2)), ValueError, word("b")),
    case(
        "conv-channels",
        lambda: F.conv2d_forward(X, np.zeros((1, 2, 3, 3)), B),
        ValueError,
        word("W"),
    ),
    case(
        "conv-x-no-channels",
        lambda: F.conv2d_forward(np.zeros((1, 0, 4, 4)), np.zeros((1, 0, 3, 3)), B),
        ValueError,
        word("x"),
    ),
    case(
        "conv-x-no-rows",
        lambda: F.conv2d_forward(np.zeros((1, 1, 0, 4)), W, B),
        ValueError,
        word("x"),
    ),
    case(
        "conv-no-filters",
        lambda: F.conv2d_forward(X, np.zeros((0, 1, 3, 3)), np.zeros(0)),
        ValueError,
        word("W"),
    ),
    case(
        "conv-kernel-too-big",
        lambda: F.conv2d_forward(X, np.zeros((1, 1, 5, 3)), B),
        ValueError,
        word("W"),
    ),
    case(
        "conv-kernel-too-big-w",
        lambda: F.conv2d_forward(X, np.zeros((1, 1, 3, 7)), B, 1, (1, 1)),
        ValueError,
        word("W"),
    ),
    # convolution: stride and pad values
    case("conv-stride-0", lambda: F.conv2d_forward(X, W, B, 0), ValueError, word("stride")),
    case("conv-stride-negative", lambda: F.conv2d_forward(X, W, B, -1), ValueError, word("stride")),
    case(
        "conv-stride-pair-0", lambda: F.conv2d_forward(X, W, B, (1, 0)), ValueError, word("stride")
    ),
    case(
        "conv-stride-3-entries",
        lambda: F.conv2d_forward(X, W, B, (1, 1, 1)),
        ValueError,
        word("stride"),
    ),
    case("conv-stride-empty", lambda: F.conv2d_forward(X, W, B, ()), ValueError, word("stride")),
    case("conv-pad-negative", lambda: F.conv2d_forward(X, W, B, 1, -1), ValueError, word("pad")),
    case(
        "conv-pad-pair-negative",
        lambda: F.conv2d_forward(X, W, B, 1, (0, -2)),
        ValueError,
        word("pad"),
    ),
    case(
        "conv-pad-3-entries",
        lambda: F.conv2d_forward(X, W, B, 1, [0, 0, 0]),
        ValueError,
        word("pad"),
    ),
    case(
        "conv-stride-absurd", lambda: F.conv2d_forward(X, W, B, 2**64), ValueError, word("stride")
    ),
    case("conv-pad-absurd", lambda: F.conv2d_forward(X, W, B, 1, 2**63), ValueError, word("pad")),
    # convolution backward
    case(
        "convb-dout-shape",
        lambda: F.conv2d_backward(np.zeros((1, 1, 3, 3)), X, W),
        ValueError,
        word("dout"),
    ),
    case("convb-dout-3d", lambda: F.conv2d_backward(DOUT[0], X, W), ValueError, word("dout")),
    case(
        "convb-dout-filters",
        lambda: F.conv2d_backward(np.zeros((1, 2, 2, 2)), X, W),
        ValueError,
        word("dout"),
    ),
    case(
        "convb-channels",
        lambda: F.conv2d_backward(DOUT, X, np.zeros((1, 3, 3, 3))),
        ValueError,
        word("W"),
    ),
    case("convb-stride-0", lambda: F.conv2d_backward(DOUT, X, W, 0), ValueError, word("stride")),
    case(
        "convb-pad-negative", lambda: F.conv2d_backward(DOUT, X, W, 1, -3), ValueError, word("pad")
    ),
    # max pooling
    case("maxpool-x-3d", lambda: F.max_pool2d_forward(X[0], 2, 2, 2), ValueError, word("x")),
    case("maxpool-pool_h-0", lambda: F.max_pool2d_forward(X, 0, 2, 2), ValueError, word("pool_h")),
    case(
        "maxpool-pool_w-negative",
        lambda: F.max_pool2d_forward(X, 2, -1, 2),
        ValueError,
        word("pool_w"),
    ),
    case(
        "maxpool-pool-too-big", lambda: F.max_pool2d_forward(X, 5, 2, 1), ValueError, word("pool")
    ),
    case(
        "maxpool-pad-equals-pool",
        lambda: F.max_pool2d_forward(X, 2, 2, 2, 2),
        ValueError,
        word("pad"),
    ),
    case(
        "maxpool-pad-w-above-pool",
        lambda: F.max_pool2d_forward(X, 3, 2, 1, (1, 3)),
        ValueError,
        word("pad"),
    ),
    case(
        "maxpool-stride-0",
        lambda: F.max_pool2d_forward(X, 2, 2, (2, 0)),
        ValueError,
        word("stride"),
    ),
    case(
        "maxpool-pad-negative",
        lambda: F.max_pool2d_forward(X, 2, 2, 2, -1),
        ValueError,
        word("pad"),
    ),
    # fused convolution + max pooling: the convolution's arguments, then the pooling's
    case(
        "convpool-b-length",
        lambda: F.conv2d_max_pool2d(X, W, np.zeros(2), pool_h=2, pool_w=2),
        ValueError,
        word("b"),
    ),
    case(
        "convpool-channels",
        lambda: F.conv2d_max_pool2d(X, np.zeros((1, 2, 3, 3)), B, pool_h=2, pool_w=2),
        ValueError,
        word("W"),
    ),
    case(
        "convpool-kernel-too-big",
        lambda: F.conv2d_max_pool2d(X, np.zeros((1, 1, 5, 3)), B, pool_h=1, pool_w=1),
        ValueError,
        word("W"),
    ),
    case(
        "convpool-pool-too-big",
        lambda: F.conv2d_max_pool2d(X, W, B, pool_h=3, pool_w=2),
        ValueError,
        word("pool"),
    ),
    case(
        "convpool-pool-h-0",
        lambda: F.conv2d_max_pool2d(X, W, B, pool_h=0, pool_w=2),
        ValueError,
        word("pool_h"),
    ),
    case(
        "convpool-pool-pad-equals-pool",
        lambda: F.conv2d_max_pool2d(X, W, B, pool_h=2, pool_w=2, pool_pad=(0, 2)),
        ValueError,
        word("pool_pad"),
    ),
    case(
        "convpool-pool-stride-0",
        lambda: F.conv2d_max_pool2d(X, W, B, pool_h=2, pool_w=2, pool_stride=(1, 0)),
        ValueError,
        word("pool_stride"),
    ),
    case(
        "convpool-stride-0",
        lambda: F.conv2d_max_pool2d(X, W, B, 0, pool_h=2, pool_w=2),
        ValueError,
        word("stride"),
    ),
    case(
        "convpool-relu-not-a-flag",
        lambda: F.conv2d_max_pool2d(X, W, B, pool_h=2, pool_w=2, relu="yes"),
        TypeError,
        word("relu"),
    ),
    case("maxpoolv-pad-equals-pool", lambda: F.max_pool2d(X, 2, 2, 2, 2), ValueError, word("pad")),
    case("maxpoolv-pool-too-big", lambda: F.max_pool2d(X, 5, 2, 1), ValueError, word("pool")),
    case(
        "maxpoolx-dout-shape",
        lambda: F.max_pool2d_backward_from_input(DOUT[:, :, :1], X, 2, 2, 2),
        ValueError,
        word("dout"),
    ),
    case(
        "maxpoolx-x-3d",
        lambda: F.max_pool2d_backward_from_input(DOUT, X[0], 2, 2, 2),
        ValueError,
        word("x"),
    ),
    case(
        "maxpoolx-pad-equals-pool",
        lambda: F.max_pool2d_backward_from_input(DOUT, X, 2, 2, 2, 2),
        ValueError,
        word("pad"),
    ),
    case(
        "maxpoolb-argmax-too-large",
        lambda: F.max_pool2d_backward(DOUT, np.full((1, 1, 2, 2), 16), X.shape),
        ValueError,
        word("argmax"),
    ),
    case(
        "maxpoolb-argmax-negative",
        lambda: F.max_pool2d_backward(DOUT, np.full((1, 1, 2, 2), -1), X.shape),
        ValueError,
        word("argmax"),
    ),
    case(
        "maxpoolb-argmax-shape",
        lambda: F.max_pool2d_backward(DOUT, np.zeros((1, 1, 2, 3), dtype=np.int64), X.shape),
        ValueError,
        word("argmax"),
    ),
    case(
        "maxpoolb-argmax-huge-float",
        lambda: F.max_pool2d_backward(DOUT, np.full((1, 1, 2, 2), 1e20), X.shape),
        ValueError,
        word("argmax"),
    ),
    case(
        "maxpoolb-dout-3d",
        lambda: F.max_pool2d_backward(DOUT[0], ARGMAX, X.shape),
        ValueError,
        word("dout"),
    ),
    case(
        "maxpoolb-shape-batch",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (2, 1, 4, 4)),
        ValueError,
        word("input_shape"),
    ),
    case(
        "maxpoolb-shape-3-entries",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (1, 4, 4)),
        ValueError,
        word("input_shape"),
    ),
    case(
        "maxpoolb-shape-zero",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (1, 1, 0, 4)),
        ValueError,
        word("input_shape"),
    ),
    case(
        "maxpoolb-shape-negative",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (1, 1, 4, -4)),
        ValueError,
        word("input_shape"),
    ),
    # average pooling
    case("avgpool-x-2d", lambda: F.avg_pool2d_forward(X[0, 0], 2, 2, 2), ValueError, word("x")),
    case("avgpool-pool_h-0", lambda: F.avg_pool2d_forward(X, 0, 2), ValueError, word("pool_h")),
    case(
        "avgpool-pool-too-big",
        lambda: F.avg_pool2d_forward(X, 2, 7, 1, 1),
        ValueError,
        word("pool"),
    ),
    case("avgpool-stride-0", lambda: F.avg_pool2d_forward(X, 2, 2, 0), ValueError, word("stride")),
    case(
        "avgpool-pad-negative",
        lambda: F.avg_pool2d_forward(X, 2, 2, 2, (-1, 0)),
        ValueError,
        word("pad"),
    ),
    case(
        "avgpoolb-dout-shape",
        lambda: F.avg_pool2d_backward(np.zeros((1, 1, 3, 3)), X.shape, 2, 2, 2),
        ValueError,
        word("dout"),
    ),
    case(
        "avgpoolb-shape-channels",
        lambda: F.avg_pool2d_backward(DOUT, (1, 2, 4, 4), 2, 2, 2),
        ValueError,
        word("dout"),
    ),
    case(
        "avgpoolb-shape-5-entries",
        lambda: F.avg_pool2d_backward(DOUT, (1, 1, 1, 4, 4), 2, 2, 2),
        ValueError,
        word("input_shape"),
    ),
    case(
        "avgpoolb-shape-no-channels",
        lambda: F.avg_pool2d_backward(DOUT, (1, 0, 4, 4), 2, 2, 2),
        ValueError,
        word("input_shape"),
    ),
    case(
        "avgpoolb-shape-empty-batch-vs-dout",
        lambda: F.avg_pool2d_backward(DOUT, (0, 1, 4, 4), 2, 2, 2),
        ValueError,
        word("dout"),
    ),
    case(
        "avgpoolb-pool-too-big",
        lambda: F.avg_pool2d_backward(DOUT, X.shape, 5, 2, 2),
        ValueError,
        word("pool"),
    ),
    # global average pooling
    case("gap-x-3d", lambda: F.global_avg_pool2d_forward(X[0]), ValueError, word("x")),
    case(
        "gap-x-no-rows",
        lambda: F.global_avg_pool2d_forward(np.zeros((1, 1, 0, 4))),
        ValueError,
        word("x"),
    ),
    case(
        "gapb-dout-3d",
        lambda: F.global_avg_pool2d_backward(np.zeros((1, 1, 1)), X.shape),
        ValueError,
        word("dout"),
    ),
    case(
        "gapb-dout-shape",
        lambda: F.global_avg_pool2d_backward(np.zeros((1, 2)), X.shape),
        ValueError,
        word("dout"),
    ),
    case(
        "gapb-shape-3-entries",
        lambda: F.global_avg_pool2d_backward(np.zeros((1, 1)), (1, 4, 4)),
        ValueError,
        word("input_shape"),
    ),
    case(
        "gapb-shape-zero",
        lambda: F.global_avg_pool2d_backward(np.zeros((1, 1)), (1, 1, 0, 4)),
        ValueError,
        word("input_shape"),
    ),
    # batch normalisation
    case("bn-x-3d", lambda: bn(x=XBN[0]), ValueError, word("x")),
    case(
        "bn-x-no-channels",
        lambda: bn(
            x=np.zeros((2, 0, 3, 3)),
            gamma=[],
            beta=[],
            running_mean=np.zeros(0),
            running_var=np.zeros(0),
        ),
        ValueError,
        word("x"),
    ),
    case("bn-gamma-length", lambda: bn(gamma=np.ones(3)), ValueError, word("gamma")),
    case("bn-beta-2d", lambda: bn(beta=np.ones((1, 2))), ValueError, word("beta")),
    case(
        "bn-running_mean-length",
        lambda: bn(running_mean=np.zeros(3)),
        ValueError,
        word("running_mean"),
    ),
    case(
        "bn-running_var-length-inference",
        lambda: bn(running_var=np.ones(1), train=False),
        ValueError,
        word("running_var"),
    ),
    case(
        "bn-running_mean-read-only",
        lambda: bn(running_mean=read_only_array(2)),
        ValueError,
        word("running_mean"),
    ),
    case(
        "bn-running_var-read-only",
        lambda: bn(running_var=read_only_array(2)),
        ValueError,
        word("running_var"),
    ),
    case(
        "bn-statistics-share-memory",
        lambda: bn(running_mean=(both := np.zeros(3))[:2], running_var=both[1:]),
        ValueError,
        word("running_var"),
    ),
    case(
        "bn-running_mean-inside-x",
        lambda: bn(x=(data := np.zeros((2, 2, 3, 3))), running_mean=data[0, 0, 0, :2]),
        ValueError,
        word("running_mean"),
    ),
    case("bn-momentum-above-1", lambda: bn(momentum=1.5), ValueError, word("momentum")),
    case("bn-momentum-negative", lambda: bn(momentum=-0.1), ValueError, word("momentum")),
    case("bn-momentum-nan", lambda: bn(momentum=float("nan")), ValueError, word("momentum")),
    case("bn-momentum-10**400", lambda: bn(momentum=10**400), ValueError, word("momentum")),
    case("bn-eps-0", lambda: bn(eps=0.0), ValueError, word("eps")),
    case("bn-eps-negative", lambda: bn(eps=-1e-5, train=False), ValueError, word("eps")),
    case("bn-eps-inf", lambda: bn(eps=float("inf")), ValueError, word("eps")),
    case("bn-eps-nan", lambda: bn(eps=float("nan")), ValueError, word("eps")),
    case(
        "bn-unbiased-single-value",
        lambda: bn(x=np.zeros((1, 2, 1, 1)), unbiased=True),
        ValueError,
        word("unbiased"),
    ),
    case("bnb-dout-shape", lambda: bnb(dout=np.zeros((2, 2, 3, 2))), ValueError, word("dout")),
    case("bnb-x-3d", lambda: bnb(x=XBN[0]), ValueError, word("x")),
    case("bnb-gamma-length", lambda: bnb(gamma=np.ones(1)), ValueError, word("gamma")),
    case("bnb-mean-length", lambda: bnb(mean=np.ones(3)), ValueError, word("mean")),
    case("bnb-invstd-2d", lambda: bnb(invstd=np.ones((2, 1))), ValueError, word("invstd")),
    case(
        "bnb-relu_output-shape", lambda: bnb(relu_output=XBN[:1]), ValueError, word("relu_output")
    ),
    case("fold-W-3d", lambda: fold(W=np.ones((2, 3, 3))), ValueError, word("W")),
    case("fold-b-length", lambda: fold(b=np.ones(3)), ValueError, word("b")),
    case("fold-gamma-length", lambda: fold(gamma=np.ones(1)), ValueError, word("gamma")),
    case(
        "fold-running_var-2d",
        lambda: fold(running_var=np.ones((2, 1))),
        ValueError,
        word("running_var"),
    ),
    case("fold-eps-0", lambda: fold(eps=0), ValueError, word("eps")),
    case("fold-eps-nan", lambda: fold(eps=float("nan")), ValueError, word("eps")),
    # residual add
    case(
        "add-shapes",
        lambda: F.add_forward(np.zeros((2, 3)), np.zeros((3, 2))),
        ValueError,
        word("a"),
    ),
    case(
        "add-out-shape",
        lambda: F.add_forward(np.zeros((2, 3)), np.zeros((2, 3)), out=np.zeros(6)),
        ValueError,
        word("out"),
    ),
    case(
        "add-out-read-only",
        lambda: F.add_forward(np.zeros(3), np.zeros(3), out=read_only_array(3)),
        ValueError,
        word("out"),
    ),
    case(
        "add-out-partial-overlap",
        lambda: F.add_forward((data := np.zeros(4))[:3], np.zeros(3), out=data[1:]),
        ValueError,
        word("out"),
    ),
    # activations
    case(
        "relub-shapes", lambda: F.relu_backward(np.zeros(3), np.zeros(4)), ValueError, word("dout")
    ),
    case(
        "relub-shapes-2d",
        lambda: F.relu_backward(np.zeros((2, 3)), np.zeros((3, 2))),
        ValueError,
        word("x"),
    ),
    case(
        "sigmoidb-shapes",
        lambda: F.sigmoid_backward(np.zeros((2, 2)), np.zeros(4)),
        ValueError,
        word("y"),
    ),
    # softmax and loss
    case("softmax-3d", lambda: F.softmax(np.zeros((1, 2, 3))), ValueError, word("x")),
    case("softmax-0d", lambda: F.softmax(np.float64(1.0)), ValueError, word("x")),
    case("softmax-no-classes", lambda: F.softmax(np.zeros((2, 0))), ValueError, word("x")),
    case(
        "ce-x-1d", lambda: F.softmax_cross_entropy_forward(np.zeros(3), [0]), ValueError, word("x")
    ),
    case(
        "ce-no-rows",
        lambda: F.softmax_cross_entropy_forward(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)),
        ValueError,
        word("x"),
    ),
    case(
        "ce-label-too-large",
        lambda: F.softmax_cross_entropy_forward(LOGITS, [0, 3]),
        ValueError,
        word("t"),
    ),
    case(
        "ce-label-negative",
        lambda: F.softmax_cross_entropy_forward(LOGITS, [-1, 0]),
        ValueError,
        word("t"),
    ),
    case(
        "ce-label-huge-float",
        lambda: F.softmax_cross_entropy_forward(LOGITS, np.array([0.0, 1e20])),
        ValueError,
        word("t"),
    ),
    case(
        "ce-labels-count",
        lambda: F.softmax_cross_entropy_forward(LOGITS, [0, 1, 2]),
        ValueError,
        word("t"),
    ),
    case(
        "ce-targets-shape",
        lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((2, 4))),
        ValueError,
        word("t"),
    ),
    case(
        "ce-targets-3d",
        lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((2, 3, 1))),
        ValueError,
        word("t"),
    ),
    case(
        "ceb-y-3d",
        lambda: F.softmax_cross_entropy_backward(np.zeros((2, 3, 1)), LABELS),
        ValueError,
        word("y"),
    ),
    case(
        "ceb-label-too-large",
        lambda: F.softmax_cross_entropy_backward(LOGITS, [3, 0]),
        ValueError,
        word("t"),
    ),
    case(
        "ceb-targets-shape",
        lambda: F.softmax_cross_entropy_backward(LOGITS, np.zeros((3, 3))),
        ValueError,
        word("t"),
    ),
    # affine
    case(
        "affine-W-rows",
        lambda: F.affine_forward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5)),
        ValueError,
        word("W"),
    ),
    case(
        "affine-W-rows-flattened",
        lambda: F.affine_forward(np.zeros((2, 2, 3)), np.zeros((5, 5)), np.zeros(5)),
        ValueError,
        word("W"),
    ),
    case(
        "affine-W-1d",
        lambda: F.affine_forward(np.zeros((2, 3)), np.zeros(3), np.zeros(1)),
        ValueError,
        word("W"),
    ),
    case(
        "affine-b-length",
        lambda: F.affine_forward(np.zeros((2, 3)), np.zeros((3, 5)), np.zeros(4)),
        ValueError,
        word("b"),
    ),
    case(
        "affine-x-0d",
        lambda: F.affine_forward(np.float64(1.0), np.zeros((1, 1)), np.zeros(1)),
        ValueError,
        word("x"),
    ),
    case(
        "affineb-dout-shape",
        lambda: F.affine_backward(np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((3, 5))),
        ValueError,
        word("dout"),
    ),
    case(
        "affineb-W-rows",
        lambda: F.affine_backward(np.zeros((2, 5)), np.zeros((2, 3)), np.zeros((4, 5))),
        ValueError,
        word("W"),
    ),
    # gemm
    case("gemm-a-1d", lambda: F.gemm(np.zeros(3), np.zeros((3, 2))), ValueError, word("a")),
    case("gemm-b-3d", lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 2, 1))), ValueError, word("b")),
    case("gemm-inner", lambda: F.gemm(np.zeros((2, 3)), np.zeros((4, 2))), ValueError, word("a")),
    case(
        "gemm-inner-trans",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 2)), trans_a=True),
        ValueError,
        word("b"),
    ),
    case(
        "gemm-c-shape",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((2, 3)), beta=1.0),
        ValueError,
        word("c"),
    ),
    case(
        "gemm-c-1d",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(8), beta=1.0),
        ValueError,
        word("c"),
    ),
    case(
        "gemm-beta-without-c",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), beta=0.5),
        ValueError,
        word("beta"),
    ),
    # scalars too large for a float64: a ValueError naming them, not Python's OverflowError
    case(
        "gemm-alpha-10**400",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), alpha=10**400),
        ValueError,
        word("alpha"),
    ),
    case(
        "gemm-beta--10**400",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((2, 4)), beta=-(10**400)),
        ValueError,
        word("beta"),
    ),
    case(
        "ceb-dout-10**400",
        lambda: F.softmax_cross_entropy_backward(LOGITS, LABELS, 10**400),
        ValueError,
        word("dout"),
    ),
    # util: im2col / col2im
    case("im2col-3d", lambda: util.im2col(X[0], 3, 3), ValueError, word("input_data")),
    case("im2col-filter_h-0", lambda: util.im2col(X, 0, 3), ValueError, word("filter_h")),
    case("im2col-filter_w-negative", lambda: util.im2col(X, 3, -3), ValueError, word("filter_w")),
    case("im2col-filter-too-big", lambda: util.im2col(X, 3, 5), ValueError, word("filter")),
    case("im2col-stride-0", lambda: util.im2col(X, 3, 3, 0), ValueError, word("stride")),
    case("im2col-pad-negative", lambda: util.im2col(X, 3, 3, 1, -1), ValueError, word("pad")),
    case(
        "col2im-col-shape",
        lambda: util.col2im(np.zeros((4, 8)), X.shape, 3, 3),
        ValueError,
        word("col"),
    ),
    case(
        "col2im-col-1d", lambda: util.col2im(np.zeros(36), X.shape, 3, 3), ValueError, word("col")
    ),
    case(
        "col2im-shape-3-entries",
        lambda: util.col2im(COL, (1, 4, 4), 3, 3),
        ValueError,
        word("input_shape"),
    ),
    case(
        "col2im-shape-zero",
        lambda: util.col2im(COL, (1, 0, 4, 4), 3, 3),
        ValueError,
        word("input_shape"),
    ),
    case(
        "col2im-filter-too-big", lambda: util.col2im(COL, X.shape, 5, 3), ValueError, word("filter")
    ),
]

TYPE_ERRORS = [
    # data that is not real numbers
    case("conv-x-complex", lambda: F.conv2d_forward(X.astype(complex), W, B), TypeError, word("x")),
    case(
        "conv-W-complex",
        lambda: F.conv2d_forward(X, W.astype(np.complex64), B),
        TypeError,
        word("W"),
    ),
    case(
        "conv-b-object",
        lambda: F.conv2d_forward(X, W, np.array([None], dtype=object)),
        TypeError,
        word("b"),
    ),
    case(
        "conv-x-strings",
        lambda: F.conv2d_forward(np.full((1, 1, 4, 4), "a"), W, B),
        TypeError,
        word("x"),
    ),
    case(
        "conv-x-datetime",
        lambda: F.conv2d_forward(np.zeros((1, 1, 4, 4), dtype="M8[s]"), W, B),
        TypeError,
        word("x"),
    ),
    case(
        "convb-dout-complex",
        lambda: F.conv2d_backward(DOUT.astype(complex), X, W),
        TypeError,
        word("dout"),
    ),
    case(
        "maxpool-x-object",
        lambda: F.max_pool2d_forward(X.astype(object), 2, 2),
        TypeError,
        word("x"),
    ),
    case(
        "maxpoolx-x-complex",
        lambda: F.max_pool2d_backward_from_input(DOUT, X.astype(complex), 2, 2, 2),
        TypeError,
        word("x"),
    ),
    case(
        "maxpoolb-argmax-float",
        lambda: F.max_pool2d_backward(DOUT, np.full((1, 1, 2, 2), 0.5), X.shape),
        TypeError,
        word("argmax"),
    ),
    case(
        "maxpoolb-argmax-complex",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX.astype(complex), X.shape),
        TypeError,
        word("argmax"),
    ),
    case(
        "avgpool-x-strings",
        lambda: F.avg_pool2d_forward(np.full((1, 1, 4, 4), "ab"), 2, 2),
        TypeError,
        word("x"),
    ),
    case(
        "avgpoolb-dout-complex",
        lambda: F.avg_pool2d_backward(DOUT.astype(complex), X.shape, 2, 2, 2),
        TypeError,
        word("dout"),
    ),
    case("relu-complex", lambda: F.relu_forward(np.zeros(3, dtype=complex)), TypeError, word("x")),
    case("relu-ragged", lambda: F.relu_forward([[1.0, 2.0], [3.0]]), TypeError, word("x")),
    case("relu-none", lambda: F.relu_forward(None), TypeError, word("x")),
    case(
        "relub-x-object",
        lambda: F.relu_backward(np.zeros(2), np.array([1, "a"], dtype=object)),
        TypeError,
        word("x"),
    ),
    case("sigmoid-strings", lambda: F.sigmoid_forward(["a", "b"]), TypeError, word("x")),
    case(
        "sigmoidb-y-complex",
        lambda: F.sigmoid_backward(np.zeros(2), np.zeros(2, dtype=complex)),
        TypeError,
        word("y"),
    ),
    case(
        "softmax-complex", lambda: F.softmax(np.zeros((2, 2), dtype=complex)), TypeError, word("x")
    ),
    case(
        "ce-labels-fractional",
        lambda: F.softmax_cross_entropy_forward(LOGITS, np.array([0.5, 1.0])),
        TypeError,
        word("t"),
    ),
    case(
        "ce-labels-strings",
        lambda: F.softmax_cross_entropy_forward(LOGITS, ["a", "b"]),
        TypeError,
        word("t"),
    ),
    case(
        "ce-labels-ragged",
        lambda: F.softmax_cross_entropy_forward(LOGITS, [[1.0, 2.0], [3.0]]),
        TypeError,
        word("t"),
    ),
    case(
        "ce-x-complex",
        lambda: F.softmax_cross_entropy_forward(LOGITS.astype(complex), LABELS),
        TypeError,
        word("x"),
    ),
    case(
        "ceb-targets-complex",
        lambda: F.softmax_cross_entropy_backward(LOGITS, np.zeros((2, 3), dtype=complex)),
        TypeError,
        word("t"),
    ),
    case(
        "affine-b-complex",
        lambda: F.affine_forward(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(2, dtype=complex)),
        TypeError,
        word("b"),
    ),
    case(
        "affineb-dout-object",
        lambda: F.affine_backward(
            np.zeros((2, 2), dtype=object), np.zeros((2, 3)), np.zeros((3, 2))
        ),
        TypeError,
        word("dout"),
    ),
    case(
        "gemm-a-complex",
        lambda: F.gemm(np.zeros((2, 2), dtype=complex), np.zeros((2, 2))),
        TypeError,
        word("a"),
    ),
    case(
        "gemm-c-strings",
        lambda: F.gemm(np.zeros((2, 2)), np.zeros((2, 2)), np.full((2, 2), "c"), beta=1.0),
        TypeError,
        word("c"),
    ),
    case(
        "im2col-complex",
        lambda: util.im2col(X.astype(complex), 3, 3),
        TypeError,
        word("input_data"),
    ),
    case(
        "col2im-object",
        lambda: util.col2im(COL.astype(object), X.shape, 3, 3),
        TypeError,
        word("col"),
    ),
    case(
        "gap-x-object", lambda: F.global_avg_pool2d_forward(X.astype(object)), TypeError, word("x")
    ),
    case(
        "gapb-dout-complex",
        lambda: F.global_avg_pool2d_backward(np.zeros((1, 1), complex), X.shape),
        TypeError,
        word("dout"),
    ),
    case("bn-x-complex", lambda: bn(x=XBN.astype(complex)), TypeError, word("x")),
    case("bn-gamma-strings", lambda: bn(gamma=["a", "b"]), TypeError, word("gamma")),
    case(
        "bn-running_mean-list-training",
        lambda: bn(running_mean=[0.0, 0.0]),
        TypeError,
        word("running_mean"),
    ),
    case(
        "bn-running_var-float32-training",
        lambda: bn(running_var=np.ones(2, np.float32)),
        TypeError,
        word("running_var"),
    ),
    case(
        "bn-running_mean-view-training",
        lambda: bn(running_mean=np.zeros(4)[::2]),
        TypeError,
        word("running_mean"),
    ),
    case(
        "bn-running_mean-complex-inference",
        lambda: bn(running_mean=np.zeros(2, complex), train=False),
        TypeError,
        word("running_mean"),
    ),
    case("bn-train-none", lambda: bn(train=None), TypeError, word("train")),
    case("bn-momentum-string", lambda: bn(momentum="0.9"), TypeError, word("momentum")),
    case("bn-eps-none", lambda: bn(eps=None), TypeError, word("eps")),
    case("bn-unbiased-int", lambda: bn(unbiased=1), TypeError, word("unbiased")),
    case("bn-relu-string", lambda: bn(relu="yes"), TypeError, word("relu")),
    case("bnb-dout-complex", lambda: bnb(dout=XBN.astype(complex)), TypeError, word("dout")),
    case(
        "bnb-invstd-object",
        lambda: bnb(invstd=np.array([1, None], dtype=object)),
        TypeError,
        word("invstd"),
    ),
    case("bnb-train-int", lambda: bnb(train=0), TypeError, word("train")),
    case(
        "bnb-relu_output-strings",
        lambda: bnb(relu_output=np.full(XBN.shape, "a")),
        TypeError,
        word("relu_output"),
    ),
    case("fold-W-complex", lambda: fold(W=np.ones((2, 1, 3, 3), complex)), TypeError, word("W")),
    case("fold-b-strings", lambda: fold(b=["a", "b"]), TypeError, word("b")),
    case("fold-eps-string", lambda: fold(eps="1e-5"), TypeError, word("eps")),
    case(
        "add-a-complex",
        lambda: F.add_forward(np.zeros(2, complex), np.zeros(2)),
        TypeError,
        word("a"),
    ),
    case(
        "add-b-ragged",
        lambda: F.add_forward(np.zeros(2), [[1.0], [2.0, 3.0]]),
        TypeError,
        word("b"),
    ),
    case(
        "add-relu-int",
        lambda: F.add_forward(np.zeros(2), np.zeros(2), relu=1),
        TypeError,
        word("relu"),
    ),
    case(
        "add-out-list",
        lambda: F.add_forward(np.zeros(2), np.zeros(2), out=[0.0, 0.0]),
        TypeError,
        word("out"),
    ),
    case(
        "add-out-float32",
        lambda: F.add_forward(np.zeros(2), np.zeros(2), out=np.zeros(2, np.float32)),
        TypeError,
        word("out"),
    ),
    case(
        "add-out-view",
        lambda: F.add_forward(np.zeros(2), np.zeros(2), out=np.zeros(4)[::2]),
        TypeError,
        word("out"),
    ),
    # non-int stride / pad / sizes
    case("conv-stride-float", lambda: F.conv2d_forward(X, W, B, 1.5), TypeError, word("stride")),
    case(
        "conv-stride-integral-float",
        lambda: F.conv2d_forward(X, W, B, 2.0),
        TypeError,
        word("stride"),
    ),
    case("conv-stride-bool", lambda: F.conv2d_forward(X, W, B, True), TypeError, word("stride")),
    case("conv-stride-string", lambda: F.conv2d_forward(X, W, B, "2"), TypeError, word("stride")),
    case("conv-stride-none", lambda: F.conv2d_forward(X, W, B, None), TypeError, word("stride")),
    case(
        "conv-stride-pair-float",
        lambda: F.conv2d_forward(X, W, B, (1, 1.5)),
        TypeError,
        word("stride"),
    ),
    case(
        "conv-stride-pair-bool",
        lambda: F.conv2d_forward(X, W, B, (True, 1)),
        TypeError,
        word("stride"),
    ),
    case("conv-pad-float", lambda: F.conv2d_forward(X, W, B, 1, 0.5), TypeError, word("pad")),
    case("conv-pad-bool", lambda: F.conv2d_forward(X, W, B, 1, False), TypeError, word("pad")),
    case(
        "conv-pad-numpy-bool",
        lambda: F.conv2d_forward(X, W, B, 1, np.bool_(True)),
        TypeError,
        word("pad"),
    ),
    case(
        "convb-stride-float", lambda: F.conv2d_backward(DOUT, X, W, 1.0), TypeError, word("stride")
    ),
    case(
        "maxpool-pool_h-float", lambda: F.max_pool2d_forward(X, 2.0, 2), TypeError, word("pool_h")
    ),
    case(
        "maxpool-pool_w-bool", lambda: F.max_pool2d_forward(X, 2, True), TypeError, word("pool_w")
    ),
    case(
        "maxpool-pad-float", lambda: F.max_pool2d_forward(X, 2, 2, 2, 0.0), TypeError, word("pad")
    ),
    case(
        "avgpool-stride-bool",
        lambda: F.avg_pool2d_forward(X, 2, 2, True),
        TypeError,
        word("stride"),
    ),
    case(
        "avgpoolb-pool_w-float",
        lambda: F.avg_pool2d_backward(DOUT, X.shape, 2, 2.5, 2),
        TypeError,
        word("pool_w"),
    ),
    case(
        "maxpoolb-shape-not-sequence",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, 16),
        TypeError,
        word("input_shape"),
    ),
    case(
        "maxpoolb-shape-float-entry",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (1, 1, 4.0, 4)),
        TypeError,
        word("input_shape"),
    ),
    case(
        "avgpoolb-shape-bool-entry",
        lambda: F.avg_pool2d_backward(DOUT, (True, 1, 4, 4), 2, 2, 2),
        TypeError,
        word("input_shape"),
    ),
    case("im2col-filter_h-float", lambda: util.im2col(X, 3.0, 3), TypeError, word("filter_h")),
    case("im2col-pad-bool", lambda: util.im2col(X, 3, 3, 1, True), TypeError, word("pad")),
    case("col2im-shape-none", lambda: util.col2im(COL, None, 3, 3), TypeError, word("input_shape")),
    # scalars and flags of the wrong type
    case(
        "gemm-alpha-string",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), alpha="2"),
        TypeError,
        word("alpha"),
    ),
    case(
        "gemm-alpha-complex",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), alpha=1j),
        TypeError,
        word("alpha"),
    ),
    case(
        "gemm-beta-none",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), beta=None),
        TypeError,
        word("beta"),
    ),
    case(
        "gemm-trans_a-array",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), trans_a=np.array([True, False])),
        TypeError,
        word("trans_a"),
    ),
    case(
        "gemm-trans_b-string",
        lambda: F.gemm(np.zeros((2, 3)), np.zeros((3, 4)), trans_b="no"),
        TypeError,
        word("trans_b"),
    ),
    case(
        "conv-relu-string", lambda: F.conv2d_forward(X, W, B, relu="yes"), TypeError, word("relu")
    ),
    case(
        "convb-need_dx-none",
        lambda: F.conv2d_backward(DOUT, X, W, need_dx=None),
        TypeError,
        word("need_dx"),
    ),
    case(
        "maxpoolx-through_relu-int",
        lambda: F.max_pool2d_backward_from_input(DOUT, X, 2, 2, 2, through_relu=1),
        TypeError,
        word("through_relu"),
    ),
    case(
        "affineb-need_dx-array",
        lambda: F.affine_backward(
            np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((3, 2)), need_dx=np.ones(2)
        ),
        TypeError,
        word("need_dx"),
    ),
    case(
        "ceb-dout-none",
        lambda: F.softmax_cross_entropy_backward(LOGITS, LABELS, None),
        TypeError,
        word("dout"),
    ),
    case(
        "ceb-dout-bool",
        lambda: F.softmax_cross_entropy_backward(LOGITS, LABELS, True),
        TypeError,
        word("dout"),
    ),
]

# Absurd sizes: the products overflow 64 bits or exceed any memory. MemoryError, or ValueError
# when the value is refused outright; never a crash, a hang or a huge allocation.
SIZE_ERRORS = [
    case(
        "conv-pad-2**40",
        lambda: F.conv2d_forward(X, W, B, 1, 2**40),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "conv-pad-2**40-h-only",
        lambda: F.conv2d_forward(X, W, B, 1, (2**40, 0)),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "conv-empty-batch-pad-2**40",
        lambda: F.conv2d_forward(X[:0], W, B, 1, 2**40),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "convb-pad-2**40",
        lambda: F.conv2d_backward(DOUT, X, W, 1, 2**40),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "avgpool-pad-2**40",
        lambda: F.avg_pool2d_forward(X, 1, 1, 1, (2**40, 2**40)),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "im2col-pad-2**40", lambda: util.im2col(X, 3, 3, 1, 2**40), (MemoryError, ValueError), None
    ),
    case(
        "maxpoolb-shape-2**40",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (1, 1, 2**40, 2**40)),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "avgpoolb-shape-2**40",
        lambda: F.avg_pool2d_backward(DOUT, (2**40, 2**40, 1, 1), 2, 2, 2),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "col2im-shape-2**40",
        lambda: util.col2im(COL, (2**40, 2**40, 2**40, 2**40), 3, 3),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "gapb-shape-2**40",
        lambda: F.global_avg_pool2d_backward(np.zeros((1, 1)), (1, 1, 2**40, 2**40)),
        (MemoryError, ValueError),
        None,
    ),
    case(
        "maxpoolb-shape-2**64",
        lambda: F.max_pool2d_backward(DOUT, ARGMAX, (1, 1, 4, 2**64)),
        (MemoryError, ValueError),
        word("input_shape"),
    ),
]


def assert_interpreter_still_works():
    """A small correct call still gives the right answer (DLfS figure 7-4 plus bias 3)."""
    x = np.array(
        [[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], dtype=np.float64
    ).reshape(1, 1, 4, 4)
    w = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=np.float64).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(F.conv2d_forward(x, w, [3.0])[0, 0], [[18, 19], [9, 18]])


@pytest.mark.parametrize(("call", "error", "match"), VALUE_ERRORS + TYPE_ERRORS + SIZE_ERRORS)
def test_invalid_arguments_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()
    assert_interpreter_still_works()


def test_every_public_function_has_validation_cases():
    """Guards the tables above against a public function being added without its cases."""
    ids = " ".join(p.id for p in VALUE_ERRORS + TYPE_ERRORS + SIZE_ERRORS)
    prefixes = {
        "gemm": "gemm-",
        "conv2d_forward": "conv-",
        "conv2d_backward": "convb-",
        "conv2d_max_pool2d": "convpool-",
        "max_pool2d_forward": "maxpool-",
        "max_pool2d_backward": "maxpoolb-",
        "max_pool2d": "maxpoolv-",
        "max_pool2d_backward_from_input": "maxpoolx-",
        "avg_pool2d_forward": "avgpool-",
        "avg_pool2d_backward": "avgpoolb-",
        "relu_forward": "relu-",
        "relu_backward": "relub-",
        "sigmoid_forward": "sigmoid-",
        "sigmoid_backward": "sigmoidb-",
        "softmax": "softmax-",
        "softmax_cross_entropy_forward": "ce-",
        "softmax_cross_entropy_backward": "ceb-",
        "affine_forward": "affine-",
        "affine_backward": "affineb-",
        "global_avg_pool2d_forward": "gap-",
        "global_avg_pool2d_backward": "gapb-",
        "batch_norm2d_forward": "bn-",
        "batch_norm2d_backward": "bnb-",
        "fold_batch_norm": "fold-",
        "add_forward": "add-",
    }
    assert set(prefixes) == set(F.__all__)
    for name, prefix in prefixes.items():
        assert prefix in ids, f"no validation case for {name}"


@pytest.mark.parametrize("t_shape", [(2, 3), (2, 4)], ids=["matching", "wrong-shape"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_float64_targets_beyond_float32_range_do_not_warn(t_shape, backward):
    """Targets are converted to the logits' dtype (float32 here). Values that do not fit must not
    surface as a cast RuntimeWarning (an error under this suite's warning policy): either a clean
    result or ValueError. (Found by the thorough fuzz.)"""
    x = np.full((2, 3), 1 / 3, dtype=np.float32)
    t = np.full(t_shape, 1e300)
    call = (
        (lambda: F.softmax_cross_entropy_backward(x, t))
        if backward
        else (lambda: F.softmax_cross_entropy_forward(x, t))
    )
    if t_shape != (2, 3):
        with pytest.raises(ValueError, match=word("t")):
            call()
    else:
        # Finite logits with huge targets: a result, or an error that names t.
        try:
            call()
        except ValueError as exc:
            # Raising is allowed here, not required: pytest.raises cannot say that.
            assert re.search(word("t"), str(exc)), exc  # noqa: PT017
    assert_interpreter_still_works()


def unaligned(values: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``values`` whose data starts one byte past an aligned address."""
    raw = np.zeros(values.nbytes + 1, dtype=np.uint8)
    view = np.frombuffer(raw.data, dtype=values.dtype, count=values.size, offset=1).reshape(
        values.shape
    )
    view[...] = values
    return view


def test_unaligned_arrays_are_converted_not_refused():
    """The core needs aligned data; the public functions copy what is not (fae188c passed an
    unaligned view on and the core refused it, saying that tinyconv.functional converts it)."""
    x = np.arange(16.0).reshape(1, 1, 4, 4) - 7.5
    y, argmax = F.max_pool2d_forward(x, 2, 2, 2)
    assert not unaligned(x).flags.aligned
    np.testing.assert_array_equal(F.max_pool2d_forward(unaligned(x), 2, 2, 2)[0], y)
    np.testing.assert_array_equal(F.relu_forward(unaligned(x)), F.relu_forward(x))
    dx = F.max_pool2d_backward(np.ones((1, 1, 2, 2)), argmax, x.shape)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(unaligned(np.ones((1, 1, 2, 2))), unaligned(argmax), x.shape), dx
    )
    logits = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    loss = F.softmax_cross_entropy_forward(logits, [2, 0])[0]
    assert (
        F.softmax_cross_entropy_forward(unaligned(logits), unaligned(np.array([2, 0])))[0] == loss
    )


# ----------------------------------------------------------------------------------------------
# Absurd windows: every function that slides a window, in every layer (the public functions, the
# compiled core, its plain-loop oracles, the NumPy references), refuses a window whose unfolded
# size N*C*OH*OW*FH*FW overflows 64 bits. (fae188c: avg pooling with a 2**40 window returned inf,
# and a (2**31+1, 2**32+1) window gave the wrong sign: the window area overflowed.)

X4 = np.ones((1, 1, 4, 4))
ONE = np.ones(
    (1, 1)
)  # a col / dout of the wrong shape: the window is refused before shapes are compared


def windowed_calls():
    """id -> call(window, stride, pad) for every function that takes a window size."""

    def pairs(window, stride, pad):
        return (*window, *stride, *pad)

    return {
        "F.max_pool2d_forward": lambda w, s, p: F.max_pool2d_forward(X4, *w, s, p),
        "F.max_pool2d": lambda w, s, p: F.max_pool2d(X4, *w, s, p),
        "F.max_pool2d_backward_from_input": lambda w, s, p: F.max_pool2d_backward_from_input(
            X4, X4, *w, s, p
        ),
        "F.avg_pool2d_forward": lambda w, s, p: F.avg_pool2d_forward(X4, *w, s, p),
        "F.avg_pool2d_backward": lambda w, s, p: F.avg_pool2d_backward(X4, X4.shape, *w, s, p),
        # the pooling window of the fused convolution + max pooling (over its 2x2 output)
        "F.conv2d_max_pool2d": lambda w, s, p: F.conv2d_max_pool2d(
            X4, W, B, pool_h=w[0], pool_w=w[1], pool_stride=s, pool_pad=p
        ),
        "_core.conv2d_max_pool_forward": lambda w, s, p: _core.conv2d_max_pool_forward(
            X4, W, B, 1, 1, 0, 0, False, *pairs(w, s, p)
        ),
        "_core.reference.conv2d_max_pool_forward": lambda w, s, p: (
            _core.reference.conv2d_max_pool_forward(X4, W, B, 1, 1, 0, 0, False, *pairs(w, s, p))
        ),
        "util.im2col": lambda w, s, p: util.im2col(X4, *w, s, p),
        "util.col2im": lambda w, s, p: util.col2im(ONE, X4.shape, *w, s, p),
        "_core.im2col": lambda w, s, p: _core.im2col(X4, *pairs(w, s, p)),
        "_core.col2im": lambda w, s, p: _core.col2im(ONE, 1, 1, 4, 4, *pairs(w, s, p)),
        "_core.max_pool2d_forward": lambda w, s, p: _core.max_pool2d_forward(X4, *pairs(w, s, p)),
        "_core.max_pool2d_backward_from_input": lambda w, s, p: (
            _core.max_pool2d_backward_from_input(X4, X4, *pairs(w, s, p))
        ),
        "_core.avg_pool2d_forward": lambda w, s, p: _core.avg_pool2d_forward(X4, *pairs(w, s, p)),
        "_core.avg_pool2d_backward": lambda w, s, p: _core.avg_pool2d_backward(
            X4, 1, 1, 4, 4, *pairs(w, s, p)
        ),
        "_core.reference.im2col": lambda w, s, p: _core.reference.im2col(X4, *pairs(w, s, p)),
        "_core.reference.col2im": lambda w, s, p: _core.reference.col2im(
            ONE, 1, 1, 4, 4, *pairs(w, s, p)
        ),
        "_core.reference.max_pool2d_forward": lambda w, s, p: _core.reference.max_pool2d_forward(
            X4, *pairs(w, s, p)
        ),
        "_core.reference.avg_pool2d_forward": lambda w, s, p: _core.reference.avg_pool2d_forward(
            X4, *pairs(w, s, p)
        ),
        "R.im2col": lambda w, s, p: R.im2col(X4, *w, s, p),
        "R.col2im": lambda w, s, p: R.col2im(ONE, X4.shape, *w, s, p),
        "R.max_pool2d_forward": lambda w, s, p: R.max_pool2d_forward(X4, *w, s, p),
        "R.max_pool2d": lambda w, s, p: R.max_pool2d(X4, *w, s, p),
        "R.max_pool2d_naive": lambda w, s, p: R.max_pool2d_naive(X4, *w, s, p),
        "R.max_pool2d_backward_from_input": lambda w, s, p: R.max_pool2d_backward_from_input(
            X4, X4, *w, s, p
        ),
        "R.conv2d_max_pool2d": lambda w, s, p: R.conv2d_max_pool2d(
            X4, W, B, pool_h=w[0], pool_w=w[1], pool_stride=s, pool_pad=p
        ),
        "R.avg_pool2d_forward": lambda w, s, p: R.avg_pool2d_forward(X4, *w, s, p),
        "R.avg_pool2d_naive": lambda w, s, p: R.avg_pool2d_naive(X4, *w, s, p),
        "R.avg_pool2d_backward": lambda w, s, p: R.avg_pool2d_backward(X4, X4.shape, *w, s, p),
    }


def convolutions():
    """id -> call(pad) for every convolution (its window is W's shape, 3x3 here: only the padding
    can make the unfolded size absurd)."""
    x, w, b = X4, np.ones((1, 1, 3, 3)), np.ones(1)
    return {
        "F.conv2d_forward": lambda p: F.conv2d_forward(x, w, b, 1, p),
        "F.conv2d_backward": lambda p: F.conv2d_backward(X4, x, w, 1, p),
        "F.conv2d_max_pool2d": lambda p: F.conv2d_max_pool2d(x, w, b, 1, p, pool_h=1, pool_w=1),
        "_core.conv2d_max_pool_forward": lambda p: _core.conv2d_max_pool_forward(
            x, w, b, 1, 1, *p, False, 1, 1, 1, 1, 0, 0
        ),
        "_core.reference.conv2d_max_pool_forward": lambda p: (
            _core.reference.conv2d_max_pool_forward(x, w, b, 1, 1, *p, False, 1, 1, 1, 1, 0, 0)
        ),
        "_core.conv2d_forward": lambda p: _core.conv2d_forward(x, w, b, 1, 1, *p),
        "_core.conv2d_backward": lambda p: _core.conv2d_backward(X4, x, w, 1, 1, *p),
        "_core.reference.conv2d_forward": lambda p: _core.reference.conv2d_forward(
            x, w, b, 1, 1, *p
        ),
        "_core.reference.conv2d_backward": lambda p: _core.reference.conv2d_backward(
            X4, x, w, 1, 1, *p
        ),
        "R.conv2d_forward": lambda p: R.conv2d_forward(x, w, b, 1, p),
        "R.conv2d_backward": lambda p: R.conv2d_backward(X4, x, w, 1, p),
        "R.conv2d_naive": lambda p: R.conv2d_naive(x, w, b, 1, p),
        "R.conv2d_max_pool2d": lambda p: R.conv2d_max_pool2d(x, w, b, 1, p, pool_h=1, pool_w=1),
    }


# (window, stride, pad) whose unfolded size overflows 64 bits; pad < window, so max pooling
# accepts them otherwise.
OVERFLOWING_WINDOWS = {
    "2**40-window": ((2**40, 2**40), (2**40, 2**40), (2**39, 2**39)),
    "2**31+1-by-2**32+1-window": ((2**31 + 1, 2**32 + 1), (1, 1), (2**30, 2**31)),
}


@pytest.mark.parametrize("geometry", OVERFLOWING_WINDOWS.values(), ids=OVERFLOWING_WINDOWS.keys())
@pytest.mark.parametrize("name", sorted(windowed_calls()))
def test_windows_whose_unfolded_size_overflows_are_refused(name, geometry):
    with pytest.raises(ValueError, match="overflows 64 bits"):
        windowed_calls()[name](*geometry)
    assert_interpreter_still_works()


@pytest.mark.parametrize("name", sorted(convolutions()))
def test_convolutions_whose_unfolded_size_overflows_are_refused(name):
    # OH = OW = 2**41 + 2 and a 3x3 filter: 2**84 taps. (A pad of 2**40 on one side only is
    # merely too large for memory: a MemoryError, see SIZE_ERRORS.)
    with pytest.raises(ValueError, match="overflows 64 bits"):
        convolutions()[name]((2**40, 2**40))
    assert_interpreter_still_works()


def test_every_windowed_function_is_in_the_absurd_window_tables():
    def windowed(n):  # global pooling has no window
        return ("pool" in n or "col" in n) and not n.startswith("global")

    public = {f"F.{n}" for n in F.__all__ if windowed(n) and n != "max_pool2d_backward"} | {
        "util.im2col",
        "util.col2im",
    }
    core = {f"_core.{n}" for n in dir(_core) if windowed(n)} - {"_core.max_pool2d_backward"}
    core_reference = {f"_core.reference.{n}" for n in dir(_core.reference) if windowed(n)}
    reference = {f"R.{n}" for n in R.__all__ if windowed(n) and n != "max_pool2d_backward"}
    assert public | core | core_reference | reference == set(windowed_calls())
    conv = {f"F.{n}" for n in F.__all__ if "conv" in n} | {
        f"_core.{n}" for n in dir(_core) if "conv" in n
    }
    conv |= {f"_core.reference.{n}" for n in dir(_core.reference) if "conv" in n}
    conv |= {f"R.{n}" for n in R.__all__ if n.startswith("conv2d")}
    assert conv == set(convolutions())


# A window of 2**20 x 2**20 over a 4x4 input padded by 2**19: absurd but valid (5x5 outputs, each
# window holding the whole input). The pooling kernels visit only the real inputs and answer at
# once; so do the plain-loop oracles (fae188c's looped over all 2**40 taps of each window: hours).
# The NumPy references that unfold the windows (2**40 taps) must fail with a quick MemoryError
# instead of trying.
HUGE_POOL = ((2**20, 2**20), (1, 1), (2**19, 2**19))


def test_huge_valid_pooling_windows_agree_or_fail_cleanly():
    x = np.arange(16.0).reshape(1, 1, 4, 4) - 7.5
    (kh, kw), stride, pad = HUGE_POOL
    area = float(kh) * kw
    avg = F.avg_pool2d_forward(x, kh, kw, stride, pad)
    np.testing.assert_array_equal(avg, np.full((1, 1, 5, 5), x.sum() / area))
    np.testing.assert_array_equal(_core.reference.avg_pool2d_forward(x, kh, kw, *stride, *pad), avg)
    np.testing.assert_array_equal(R.avg_pool2d_naive(x, kh, kw, stride, pad), avg)
    y, argmax = F.max_pool2d_forward(x, kh, kw, stride, pad)
    np.testing.assert_array_equal(y, np.full((1, 1, 5, 5), 7.5))
    np.testing.assert_array_equal(argmax, np.full((1, 1, 5, 5), 15))
    for oracle in (
        _core.reference.max_pool2d_forward(x, kh, kw, *stride, *pad),
        R.max_pool2d_naive(x, kh, kw, stride, pad),
    ):
        np.testing.assert_array_equal(oracle[0], y)
        np.testing.assert_array_equal(oracle[1], argmax)
    dx = F.avg_pool2d_backward(np.ones((1, 1, 5, 5)), x.shape, kh, kw, stride, pad)
    np.testing.assert_array_equal(dx, np.full(x.shape, 25 / area))
    for unfolding in (
        lambda: R.avg_pool2d_forward(x, kh, kw, stride, pad),
        lambda: R.max_pool2d_forward(x, kh, kw, stride, pad),
        lambda: R.avg_pool2d_backward(np.ones((1, 1, 5, 5)), x.shape, kh, kw, stride, pad),
        lambda: R.im2col(x, kh, kw, stride, pad),
        lambda: util.im2col(x, kh, kw, stride, pad),
    ):
        with pytest.raises(MemoryError):
            unfolding()


# ----------------------------------------------------------------------------------------------
# An empty batch (N = 0): every NumPy reference does what the compiled path does (empty results of
# the right shapes and dtype, or the same error).


def _empty_batch_cases():
    x0, w, b = (
        np.ones((0, 2, 5, 5), np.float32),
        np.ones((3, 2, 3, 3), np.float32),
        np.ones(3, np.float32),
    )
    dconv = np.ones((0, 3, 3, 3), np.float32)
    dpool = np.ones((0, 2, 2, 2), np.float32)
    argmax = np.zeros((0, 2, 2, 2), np.int64)
    logits, labels = np.ones((0, 4), np.float32), np.zeros(0, np.int64)
    rows = np.ones((0, 3), np.float32)
    c2 = np.ones(2, np.float32)
    vectorised = {
        "im2col": lambda m: m.im2col(x0, 3, 3, 1, 1),
        "col2im": lambda m: m.col2im(np.ones((0, 18), np.float32), x0.shape, 3, 3, 1, 1),
        "conv2d_forward": lambda m: m.conv2d_forward(x0, w, b, 1, 0),
        "conv2d_backward": lambda m: m.conv2d_backward(dconv, x0, w, 1, 0),
        "conv2d_max_pool2d": lambda m: m.conv2d_max_pool2d(
            x0, w, b, 1, 1, pool_h=2, pool_w=2, pool_stride=2, relu=True
        ),
        "max_pool2d_forward": lambda m: m.max_pool2d_forward(x0, 2, 2, 2),
        "max_pool2d_backward": lambda m: m.max_pool2d_backward(
            dpool, argmax, x0.shape, relu_output=x0
        ),
        "max_pool2d": lambda m: m.max_pool2d(x0, 2, 2, 2),
        "max_pool2d_backward_from_input": lambda m: m.max_pool2d_backward_from_input(
            dpool, x0, 2, 2, 2, through_relu=True
        ),
        "avg_pool2d_forward": lambda m: m.avg_pool2d_forward(x0, 2, 2, 2),
        "avg_pool2d_backward": lambda m: m.avg_pool2d_backward(dpool, x0.shape, 2, 2, 2),
        "gemm": lambda m: m.gemm(
            rows, np.ones((3, 4), np.float32), np.ones((0, 4), np.float32), beta=1.0
        ),
        "relu_forward": lambda m: m.relu_forward(rows),
        "relu_backward": lambda m: m.relu_backward(rows, rows),
        "sigmoid_forward": lambda m: m.sigmoid_forward(rows),
        "sigmoid_backward": lambda m: m.sigmoid_backward(rows, rows),
        "softmax": lambda m: m.softmax(rows),
        "softmax_cross_entropy_forward": lambda m: m.softmax_cross_entropy_forward(logits, labels),
        "softmax_cross_entropy_backward": lambda m: m.softmax_cross_entropy_backward(
            logits, labels
        ),
        "affine_forward": lambda m: m.affine_forward(
            np.ones((0, 2, 3), np.float32), np.ones((6, 4), np.float32), np.ones(4, np.float32)
        ),
        "affine_backward": lambda m: m.affine_backward(
            np.ones((0, 4), np.float32), np.ones((0, 2, 3), np.float32), np.ones((6, 4), np.float32)
        ),
        "global_avg_pool2d_forward": lambda m: m.global_avg_pool2d_forward(x0),
        "global_avg_pool2d_backward": lambda m: m.global_avg_pool2d_backward(
            np.ones((0, 2), np.float32), x0.shape
        ),
        "batch_norm2d_forward": lambda m: m.batch_norm2d_forward(
            x0,
            c2,
            c2,
            np.zeros(2, np.float32),
            np.ones(2, np.float32),
            train=True,
            momentum=0.9,
            eps=1e-5,
            unbiased=True,
        ),
        "batch_norm2d_backward": lambda m: m.batch_norm2d_backward(
            x0, x0, c2, c2, c2, train=True, relu_output=x0
        ),
        "fold_batch_norm": lambda m: m.fold_batch_norm(
            np.ones((2, 0, 3, 3), np.float32), None, c2, c2, c2, c2, 1e-5
        ),
        "add_forward": lambda m: m.add_forward(rows, rows, relu=True),
    }
    # The naive loops, against the vectorised references they check.
    naive = {
        "conv2d_naive": ("conv2d_forward", lambda: R.conv2d_naive(x0, w, b, 1, 0)),
        "max_pool2d_naive": ("max_pool2d_forward", lambda: R.max_pool2d_naive(x0, 2, 2, 2)),
        "avg_pool2d_naive": ("avg_pool2d_forward", lambda: R.avg_pool2d_naive(x0, 2, 2, 2)),
    }
    return vectorised, naive


def _outcome(call):
    """The result's arrays as (shape, dtype) (None stays None), or the name of the error raised."""
    try:
        result = call()
    except (ValueError, TypeError, MemoryError) as exc:
        return type(exc).__name__
    items = result if isinstance(result, tuple) else (result,)
    return [None if a is None else (np.shape(a), np.asarray(a).dtype) for a in items]


def test_every_reference_function_is_checked_with_an_empty_batch():
    vectorised, naive = _empty_batch_cases()
    assert set(vectorised) | set(naive) == set(R.__all__) - {"conv_output_size"}


@pytest.mark.parametrize("name", sorted(_empty_batch_cases()[0]))
def test_references_handle_an_empty_batch_like_the_compiled_path(name):
    call = _empty_batch_cases()[0][name]
    compiled = util if name in ("im2col", "col2im") else F
    assert _outcome(lambda: call(R)) == _outcome(lambda: call(compiled))


@pytest.mark.parametrize("name", sorted(_empty_batch_cases()[1]))
def test_naive_references_handle_an_empty_batch(name):
    vectorised, call = _empty_batch_cases()[1][name]
    assert _outcome(call) == _outcome(lambda: _empty_batch_cases()[0][vectorised](R))


# ----------------------------------------------------------------------------------------------
# Fuzz: junk of every kind raises only ValueError / TypeError / MemoryError


def hypothesis_picker(data):
    return lambda options: data.draw(st.sampled_from(options))


@settings(max_examples=10 * settings.default.max_examples)
@given(data=st.data())
def test_fuzz_junk_arguments_in_process(data):
    _name, function, args = fuzzing.junk_call(hypothesis_picker(data))
    fuzzing.call_and_classify(function, args)  # anything but the allowed errors propagates
    assert tinyconv.get_num_threads() >= 1


FUZZ_CHILD = textwrap.dedent(
    """
    import resource, sys
    # Cap the address space: should a bug request a huge buffer, it fails here instead of
    # taking the machine's memory.
    limit = 8 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path.insert(0, sys.argv[1])
    import fuzzing
    problems = fuzzing.run_fuzz(seed=int(sys.argv[2]), iterations=int(sys.argv[3]))
    for line in problems:
        print(line)
    print(f"fuzz done: {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
    """
)


# ASan reserves terabytes of address space for its shadow memory at start-up: under the cap above
# the sanitizer build's child cannot even start. (The in-process fuzz above runs there.)
SANITIZED = bool(tinyconv.config().get("sanitizers"))


@pytest.mark.skipif(
    SANITIZED,
    reason="the child caps its address space, which AddressSanitizer's shadow memory exceeds",
)
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzz_junk_arguments_in_child_process(seed):
    """The same junk in a fresh interpreter (warnings as errors, as under pytest): a segfault or an
    abort there is a failed exit code here, not a dead test run."""
    iterations = 200 * settings.default.max_examples  # ci: 8000 calls per seed, a few seconds
    env = dict(os.environ, OMP_NUM_THREADS="2")
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            FUZZ_CHILD,
            str(Path(__file__).parent),
            str(seed),
            str(iterations),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    report = f"exit code {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode >= 0, f"the child died from signal {-result.returncode}\n{report}"
    assert result.returncode == 0, report
    assert "fuzz done: 0 problem(s)" in result.stdout, report
