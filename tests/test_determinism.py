"""Results do not depend on the thread count: every kernel gives bitwise identical output with 1
thread, 2, 3, 4 and the default ("all") threads.

Sizes are chosen so that the kernels really go parallel (the work exceeds each kernel's grain for
every thread count used here), and for convolution so that both parallel strategies run: over
images when the batch has at least as many images as threads, inside the GEMMs otherwise (N=1, 3).
"""

from __future__ import annotations

import numpy as np
import pytest
from checks import assert_bitwise_equal

import tinyconv
from tinyconv import functional as F
from tinyconv import util

DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def thread_counts():
    """1 (the baseline) and then 2, 3, 4 and the default count, whatever the machine has."""
    default = tinyconv.get_num_threads()
    return [1, *sorted({2, 3, 4, default} - {1})]


@pytest.fixture(autouse=True)
def restore_num_threads():
    before = tinyconv.get_num_threads()
    yield
    tinyconv.set_num_threads(before)


def results_for_each_thread_count(compute, thread_counts):
    """``compute()`` (returning an array or a tuple of arrays/floats) once per thread count."""
    out = {}
    for n in thread_counts:
        tinyconv.set_num_threads(n)
        assert tinyconv.get_num_threads() == n
        result = compute()
        out[n] = result if isinstance(result, tuple) else (result,)
    return out


def assert_same_bits_for_all_counts(compute, thread_counts):
    runs = results_for_each_thread_count(compute, thread_counts)
    baseline = runs[thread_counts[0]]
    for n, result in runs.items():
        assert len(result) == len(baseline)
        for i, (got, want) in enumerate(zip(result, baseline)):
            if isinstance(want, float):
                assert float(got).hex() == want.hex(), (
                    f"output {i}: {n} threads give {got!r}, 1 thread {want!r}"
                )
            else:
                assert_bitwise_equal(got, want, f"output {i} with {n} threads vs 1 thread")


def random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3, 16, 64])
@pytest.mark.parametrize("size", [16, 7])  # one image per canvas, and several (conv.cpp)
def test_conv2d_forward_and_backward(thread_counts, dtype, batch, size):
    x = random((batch, 8, size, size), dtype, 1)
    W = random((16, 8, 3, 3), dtype, 2)
    b = random((16,), dtype, 3)
    dout = random((batch, 16, size, size), dtype, 4)
    assert_same_bits_for_all_counts(lambda: F.conv2d_forward(x, W, b, 1, 1), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.conv2d_backward(dout, x, W, 1, 1), thread_counts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [3, 8])  # dx folded back; dx as a transposed convolution
def test_conv2d_with_non_finite_values(thread_counts, dtype, channels):
    """The NaN outputs that padding would have made are summed again over their real terms
    (conv.cpp, non-finite values), in parallel too: the same bits for every thread count."""
    x = random((16, channels, 10, 10), dtype, 26)
    x[3, 1, 0, 4], x[9, 2, 9, 9] = np.inf, np.nan
    W = random((16, channels, 3, 3), dtype, 27)
    W[4, 1, 0, 0] = -np.inf
    b = random((16,), dtype, 28)
    dout = random((16, 16, 10, 10), dtype, 29)
    dout[0, 3, 0, 5] = np.inf
    assert_same_bits_for_all_counts(lambda: F.conv2d_forward(x, W, b, 1, 1), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.conv2d_backward(dout, x, W, 1, 1), thread_counts)
    strided = random((16, 16, 5, 5), dtype, 30)  # stride 2: the unfolded route
    strided[2, 5, 0, 0] = np.nan
    assert_same_bits_for_all_counts(lambda: F.conv2d_forward(x, W, b, 2, 1), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.conv2d_backward(strided, x, W, 2, 1), thread_counts)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_strided_and_pointwise(thread_counts, dtype):
    x = random((16, 8, 17, 15), dtype, 5)
    W = random((12, 8, 5, 3), dtype, 6)
    b = random((12,), dtype, 7)
    y = F.conv2d_forward(x, W, b, (2, 1), (2, 1))
    dout = random(y.shape, dtype, 8)
    assert_same_bits_for_all_counts(
        lambda: F.conv2d_forward(x, W, b, (2, 1), (2, 1)), thread_counts
    )
    assert_same_bits_for_all_counts(
        lambda: F.conv2d_backward(dout, x, W, (2, 1), (2, 1)), thread_counts
    )
    W1 = random((12, 8, 1, 1), dtype, 9)  # 1x1 convolution: no im2col
    dout1 = random((16, 12, 17, 15), dtype, 10)
    assert_same_bits_for_all_counts(lambda: F.conv2d_forward(x, W1, b), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.conv2d_backward(dout1, x, W1), thread_counts)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling(thread_counts, dtype):
    x = random((32, 8, 16, 16), dtype, 11)
    # Overlapping windows (3x3, stride 1 and 2): the backward passes accumulate.
    for pool, stride, pad in [(3, 1, 1), (3, 2, 0), (2, 2, 0)]:
        y, argmax = F.max_pool2d_forward(x, pool, pool, stride, pad)
        dout = random(y.shape, dtype, 12)
        assert_same_bits_for_all_counts(
            lambda: F.max_pool2d_forward(x, pool, pool, stride, pad), thread_counts
        )
        assert_same_bits_for_all_counts(
            lambda: F.max_pool2d_backward(dout, argmax, x.shape), thread_counts
        )
        assert_same_bits_for_all_counts(
            lambda: F.avg_pool2d_forward(x, pool, pool, stride, pad), thread_counts
        )
        assert_same_bits_for_all_counts(
            lambda: F.avg_pool2d_backward(dout, x.shape, pool, pool, stride, pad), thread_counts
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im(thread_counts, dtype):
    x = random((32, 8, 16, 16), dtype, 13)
    col = util.im2col(x, 3, 3, 1, 1)
    assert_same_bits_for_all_counts(lambda: util.im2col(x, 3, 3, 1, 1), thread_counts)
    assert_same_bits_for_all_counts(lambda: util.col2im(col, x.shape, 3, 3, 1, 1), thread_counts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm(thread_counts, dtype, trans_a, trans_b):
    # Larger than one block in every direction (K > KC = 256, M > MC, N > NC for some ISAs).
    M, N, K = 301, 1100, 300
    a = random((K, M) if trans_a else (M, K), dtype, 14)
    b = random((N, K) if trans_b else (K, N), dtype, 15)
    c = random((M, N), dtype, 16)
    assert_same_bits_for_all_counts(
        lambda: F.gemm(a, b, c, alpha=0.5, beta=-1.5, trans_a=trans_a, trans_b=trans_b),
        thread_counts,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine(thread_counts, dtype):
    x = random((64, 8, 8, 8), dtype, 17)
    W = random((512, 200), dtype, 18)
    b = random((200,), dtype, 19)
    dout = random((64, 200), dtype, 20)
    assert_same_bits_for_all_counts(lambda: F.affine_forward(x, W, b), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.affine_backward(dout, x, W), thread_counts)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(thread_counts, dtype):
    # N*K well above the row kernels' grain, so the rows are split across threads and the loss is
    # a reduction over all of them.
    n, k = 8192, 10
    x = random((n, k), dtype, 21) * 4
    labels = np.random.default_rng(22).integers(0, k, size=n)
    soft = np.random.default_rng(23).dirichlet(np.ones(k), size=n).astype(dtype)
    _, y = F.softmax_cross_entropy_forward(x, labels)
    for t in (labels, soft):
        assert_same_bits_for_all_counts(
            lambda: F.softmax_cross_entropy_forward(x, t), thread_counts
        )
        assert_same_bits_for_all_counts(
            lambda: F.softmax_cross_entropy_backward(y, t, 0.5), thread_counts
        )
    assert_same_bits_for_all_counts(lambda: F.softmax(x), thread_counts)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations(thread_counts, dtype):
    x = random((64, 8, 16, 16), dtype, 24) * 5
    dout = random(x.shape, dtype, 25)
    y = F.sigmoid_forward(x)
    assert_same_bits_for_all_counts(lambda: F.relu_forward(x), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.relu_backward(dout, x), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.sigmoid_forward(x), thread_counts)
    assert_same_bits_for_all_counts(lambda: F.sigmoid_backward(dout, y), thread_counts)
