"""What the ResNet golden files and their test share: seeded state dicts, inputs and probes.

Used by ``tests/make_resnet_goldens.py`` (which runs PyTorch, by hand) and by
``tests/test_resnet_golden.py`` (which runs tinyconv and never imports torch). Everything here is
NumPy only and a pure function of a seed and a parameter's *name*, so both sides build the same
arrays whatever order they list the parameters in:

* :func:`seeded_state_dict` -- one float64 array per ``(key, shape)`` from
  ``np.random.default_rng([seed, crc32(key)])``, drawn by what the key is (see
  :func:`seeded_tensor`); ``num_batches_tracked`` is an int64 0-d zero.
* :func:`input_batch` -- the images (standard normal) and integer labels of one case.
* :func:`probe` -- how a large tensor is checked without storing it: at most ``MAX_SAMPLES``
  flat positions drawn without replacement, and ``PROJECTIONS`` random unit vectors. The golden
  file keeps the tensor's values at those positions, its projections on those vectors, its
  Euclidean norm and its largest magnitude; :func:`probe_summary` computes all four, and
  :func:`pack_probes` / :func:`unpack_probes` store many tensors' summaries as a few arrays (one
  npz member per tensor and field would cost more in zip headers than the numbers themselves).

The generators are NumPy's PCG64 ``Generator`` methods (``standard_normal``, ``uniform``,
``integers``, ``choice``), whose streams have been stable since NumPy 1.17; the golden files also
store a fingerprint of every generated array (:func:`fingerprint`) so that a NumPy that ever draws
differently makes the test say so instead of reporting mysterious mismatches.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# The seed of every golden case (any fixed integer; changing it means regenerating the files).
GOLDEN_SEED = 20261128

# At most this many sampled positions per tensor; a tensor with fewer entries is kept whole.
MAX_SAMPLES = 64
# Random unit vectors each tensor is projected on.
PROJECTIONS = 2

# Third element of the probe generator's seed, so a probe never reuses the stream that drew the
# tensor's own values.
_PROBE_STREAM = 1
# Seed words of the input batch's generator (not a parameter name, so never a crc32 of one).
_INPUT_STREAM = (0x1A9E, 0x7B)

Shape = tuple[int, ...]


def key_rng(seed: int, key: str, *stream: int) -> np.random.Generator:
    """The generator that belongs to parameter ``key``: independent of every other key's."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8")), *stream])


def seeded_tensor(seed: int, key: str, shape: Sequence[int]) -> np.ndarray:
    """The value of ``key`` in the seeded state dict.

    * convolution and linear weights (``*.weight`` with 2+ dimensions): He normal,
      ``N(0, 1) * sqrt(2 / fan_in)`` with ``fan_in = prod(shape[1:])``;
    * batch-norm scale (``*.weight``, 1-D): ``uniform(0.5, 1.5)``;
    * any ``*.bias`` (batch-norm shift, linear bias): ``N(0, 1) * 0.1``;
    * ``*.running_mean``: ``N(0, 1) * 0.1``; ``*.running_var``: ``uniform(0.5, 1.5)``;
    * ``*.num_batches_tracked``: int64 0-d zero.

    Float arrays are float64; BN statistics away from (0, 1) make a wrong use of them visible.
    """
    shape = tuple(int(d) for d in shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        if shape != ():
            raise ValueError(f"{key}: num_batches_tracked must be 0-d, got shape {shape}")
        return np.array(0, dtype=np.int64)
    rng = key_rng(seed, key)
    if leaf == "weight" and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if leaf == "weight" and len(shape) == 1:
        return rng.uniform(0.5, 1.5, size=shape)
    if leaf in ("bias", "running_mean"):
        return rng.standard_normal(shape) * 0.1
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, size=shape)
    raise ValueError(f"no seeded initialisation for {key!r} with shape {shape}")


def seeded_state_dict(
    entries: Iterable[tuple[str, Sequence[int]]], seed: int = GOLDEN_SEED
) -> dict[str, np.ndarray]:
    """``{key: seeded_tensor(seed, key, shape)}`` in the order of ``entries``."""
    return {key: seeded_tensor(seed, key, shape) for key, shape in entries}


def as_dtype(state: Mapping[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """A copy of ``state`` with the floating arrays in ``dtype`` (integer counters unchanged)."""
    return {
        key: (
            np.array(value, dtype=dtype)
            if np.issubdtype(value.dtype, np.floating)
            else np.array(value)
        )
        for key, value in state.items()
    }


def input_batch(seed: int, shape: Sequence[int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N(0, 1)`` of ``shape`` (float64, NCHW) and labels in ``[0, num_classes)`` (int64)."""
    rng = np.random.default_rng([seed, *_INPUT_STREAM])
    x = rng.standard_normal(tuple(shape))
    t = rng.integers(0, num_classes, size=shape[0], dtype=np.int64)
    return x, t


def probe(seed: int, key: str, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted flat positions (int64, at most ``MAX_SAMPLES``, all of them for a small tensor)
    and ``PROJECTIONS`` unit vectors (float64, ``(PROJECTIONS, size)``) for tensor ``key``."""
    size = int(np.prod(shape, dtype=np.int64))
    rng = key_rng(seed, key, _PROBE_STREAM)
    if size <= MAX_SAMPLES:
        positions = np.arange(size, dtype=np.int64)
    else:
        positions = np.sort(rng.choice(size, size=MAX_SAMPLES, replace=False)).astype(np.int64)
    vectors = rng.standard_normal((PROJECTIONS, size))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return positions, vectors


def probe_summary(seed: int, key: str, value: np.ndarray) -> dict[str, np.ndarray]:
    """What a golden file stores of ``value`` (computed in float64):

    ``samples`` (values at :func:`probe`'s positions), ``projections`` (dot products with its unit
    vectors), ``norm`` (Euclidean norm of the whole tensor), ``maxabs`` (its largest magnitude),
    and ``position_sum`` (the sum of the positions, to check that both sides sampled the same).
    """
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    positions, vectors = probe(seed, key, np.shape(value))
    return {
        "samples": flat[positions],
        "projections": vectors @ flat,
        "norm": np.array(np.linalg.norm(flat)),
        "maxabs": np.array(np.max(np.abs(flat)) if flat.size else 0.0),
        "position_sum": np.array(positions.sum(), dtype=np.int64),
    }


def fingerprint(value: np.ndarray) -> np.ndarray:
    """Three numbers that change when a generated array does: sum, sum of squares, and the sum
    weighted by position (catches permutations)."""
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    weights = np.arange(1, flat.size + 1, dtype=np.float64) / max(flat.size, 1)
    return np.array([flat.sum(), (flat * flat).sum(), (flat * weights).sum()])


def pack_probes(
    prefix: str, summaries: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """npz members for ``{key: probe_summary(...)}``: ``<prefix>/keys`` (names, in order),
    ``<prefix>/samples`` (all samples, concatenated) with ``<prefix>/offsets`` (``len(keys) + 1``
    bounds into it), ``<prefix>/projections`` (``len(keys) x PROJECTIONS``), ``<prefix>/norm``,
    ``<prefix>/maxabs`` and ``<prefix>/position_sums`` (the sum of each key's sampled positions:
    a reader checks that it draws the same positions before comparing values at them)."""
    keys = list(summaries)
    sizes = [summaries[key]["samples"].size for key in keys]
    return {
        f"{prefix}/keys": np.array(keys, dtype=str),
        f"{prefix}/samples": np.concatenate([summaries[key]["samples"] for key in keys]),
        f"{prefix}/offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        f"{prefix}/projections": np.stack([summaries[key]["projections"] for key in keys]),
        f"{prefix}/norm": np.array([summaries[key]["norm"] for key in keys], dtype=np.float64),
        f"{prefix}/maxabs": np.array([summaries[key]["maxabs"] for key in keys], dtype=np.float64),
        f"{prefix}/position_sums": np.array(
            [summaries[key]["position_sum"] for key in keys], dtype=np.int64
        ),
    }


def unpack_probes(
    golden: Mapping[str, np.ndarray], prefix: str
) -> dict[str, dict[str, np.ndarray]]:
    """The inverse of :func:`pack_probes`: ``{key: probe summary}``."""
    offsets = golden[f"{prefix}/offsets"]
    return {
        str(key): {
            "samples": golden[f"{prefix}/samples"][offsets[i] : offsets[i + 1]],
            "projections": golden[f"{prefix}/projections"][i],
            "norm": golden[f"{prefix}/norm"][i],
            "maxabs": golden[f"{prefix}/maxabs"][i],
            "position_sum": golden[f"{prefix}/position_sums"][i],
        }
        for i, key in enumerate(golden[f"{prefix}/keys"])
    }


def pack_shapes(shapes: Sequence[Sequence[int]]) -> np.ndarray:
    """Shapes of up to 4 dimensions as one int64 array, one row each, padded with -1."""
    rows = np.full((len(shapes), 4), -1, dtype=np.int64)
    for row, shape in zip(rows, shapes):
        if len(shape) > 4:
            raise ValueError(f"more than 4 dimensions: {tuple(shape)}")
        row[: len(shape)] = shape
    return rows


def unpack_shapes(rows: np.ndarray) -> list:
    """The inverse of :func:`pack_shapes`."""
    return [tuple(int(d) for d in row if d >= 0) for row in rows]


def probe_errors(
    seed: int, key: str, actual: np.ndarray, expected: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Relative errors of tensor ``actual`` against a golden :func:`probe_summary` ``expected``:

    * ``samples``: ``max |a_i - g_i|`` over the sampled positions, divided by ``max|g|`` of the
      whole golden tensor;
    * ``projections``: ``max_v |<a, v> - <g, v>|`` over the unit vectors, divided by ``||g||_2``
      (each is a lower bound of ``||a - g||_2 / ||g||_2``);
    * ``norm``: ``| ||a|| - ||g|| | / ||g||``; ``maxabs``: ``| max|a| - max|g| | / max|g|``.

    Raises ``AssertionError`` when ``actual`` was sampled at other positions than the golden one
    (a NumPy whose generator draws differently).
    """
    mine = probe_summary(seed, key, actual)
    if int(mine["position_sum"]) != int(expected["position_sum"]):
        raise AssertionError(f"{key}: this NumPy samples other positions than the golden file's")
    maxabs, norm = float(expected["maxabs"]), float(expected["norm"])
    return {
        "samples": float(np.max(np.abs(mine["samples"] - expected["samples"]))) / maxabs,
        "projections": float(np.max(np.abs(mine["projections"] - expected["projections"]))) / norm,
        "norm": abs(float(mine["norm"]) - norm) / norm,
        "maxabs": abs(float(mine["maxabs"]) - maxabs) / maxabs,
    }


def relative_error(actual, expected) -> float:
    """``max |actual - expected| / max |expected|`` over whole arrays (logits, a loss)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape}, expected {expected.shape}")
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
