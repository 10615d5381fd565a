"""Comparison helpers with the suite's fixed tolerances.

A kernel result ``got`` passes against the reference ``want`` when, elementwise,

    |got - want| <= RTOL * |want| + ATOL_FACTOR * magnitude + tiny

* ``RTOL``: float64 1e-10, float32 1e-4.
* ``magnitude``: the size of the terms that were summed to make each element, e.g. for a
  convolution the same convolution of ``|x|`` and ``|W|`` plus ``|b|``. Rounding error of a sum
  scales with its terms, not with its (possibly cancelled) value, so this is what an absolute
  tolerance must be measured against. ``ATOL_FACTOR``: float64 1e-12 (about 4500 ulps of the
  terms: far above any sum these tests make, far below the effect of a single misplaced term),
  float32 1e-5 (about 80 ulps).
* ``tiny``: the smallest normal number of the dtype, so that results in the subnormal range
  (which carry no relative precision) are not held to a relative tolerance.

These numbers are fixed for the whole suite; no test loosens them.
"""

from __future__ import annotations

import numpy as np

RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
ATOL_FACTOR = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def assert_close(got, want, dtype, magnitude=0.0, what: str = "result") -> None:
    """Assert ``got`` matches ``want`` within the suite tolerances for ``dtype`` (see module doc);
    ``got`` must have exactly the shape of ``want``."""
    dtype = np.dtype(dtype)
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(w)), (
        f"{what}: NaN where the reference has none (or vice versa)"
    )
    finite = ~np.isnan(w)
    bound = (
        RTOL[dtype] * np.abs(w)
        + ATOL_FACTOR[dtype] * np.abs(np.asarray(magnitude, dtype=np.float64))
        + np.finfo(dtype).tiny
    )
    bound = np.broadcast_to(bound, w.shape)
    error = np.where(finite, np.abs(g - w), 0.0)
    # inf == inf (same sign) is a match; inf - inf would be NaN.
    same_inf = np.isinf(w) & (g == w)
    error = np.where(same_inf, 0.0, error)
    bad = ~(error <= bound)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what} ({dtype}): {int(bad.sum())} of {bad.size} elements differ; first at {idx}: "
            f"got {g[idx]!r}, expected {w[idx]!r}, error {error[idx]:.3g} > bound {bound[idx]:.3g}"
        )


def assert_exact(got, want, what: str = "result") -> None:
    """Same shape and the same values (for selections and copies, which involve no rounding).
    Unlike ``np.testing.assert_array_equal`` this does not let a (1,) result stand for a 0-d one."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_array_equal(got, want, err_msg=what)


def assert_dtype(result, dtype, what: str = "result") -> None:
    assert isinstance(result, np.ndarray), (
        f"{what} is a {type(result).__name__}, expected an ndarray"
    )
    assert result.dtype == np.dtype(dtype), (
        f"{what} has dtype {result.dtype}, expected {np.dtype(dtype)}"
    )


def assert_bitwise_equal(
    a: np.ndarray, b: np.ndarray, what: str = "result", *, nan_payloads: bool = True
) -> None:
    """Same shape, dtype and bytes (so also the same signed zeros and NaN payloads). With
    ``nan_payloads=False``, NaNs must sit at the same places but their sign and payload may
    differ: which NaN operand an instruction passes on depends on the operand order the compiler
    chose, which two differently vectorised loops need not share."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (
        f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    )
    if not nan_payloads and a.dtype.kind == "f":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        assert np.array_equal(nan_a, nan_b), f"{what}: NaNs at different places"
        a, b = np.where(nan_a, 0, a), np.where(nan_b, 0, b)
    if a.tobytes() != b.tobytes():
        diff = np.argwhere(
            np.frombuffer(a.tobytes(), np.uint8) != np.frombuffer(b.tobytes(), np.uint8)
        )
        raise AssertionError(
            f"{what}: bytes differ ({len(diff)} bytes), first byte offset {int(diff[0][0])}"
        )


def abs_of(value) -> np.ndarray:
    """``|value|`` as float64 (for magnitudes)."""
    return np.abs(np.asarray(value, dtype=np.float64))
