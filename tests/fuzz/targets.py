"""Fuzz targets: each takes the bytes a fuzzer made and checks one promise of tinyconv.

A target returns normally when the entry point either accepted the input or refused it with one
of its documented errors, and raises (an ``AssertionError``, or the unexpected exception itself)
when a promise broke. A crash of the interpreter is the fuzzer's to see. The same functions serve
the coverage-guided driver (``run.py``, with atheris) and the corpus replay in pytest
(``tests/test_fuzz_corpus.py``), so every input the fuzzer kept is a regression test.

Promises checked:
* ``pickle``: :func:`tinyconv.serialization.safe_pickle_loads` returns plain data or raises
  ``ParamsFileError``; what it returns holds only plain containers, numbers, strings, bytes and
  numeric arrays that own their memory.
* ``params``: :func:`read_params` on a file with these bytes (pickle or NPZ) returns a dict of
  numeric arrays or raises ``ParamsFileError``; ``load_params`` of such a file leaves the network
  unchanged when it fails.
* ``safetensors``: the same promises as ``params`` for files that start as safetensors files (an
  8-byte header length, then a JSON header): :func:`read_params` returns a dict of numeric arrays
  that own their memory or raises ``ParamsFileError``, and a refused file leaves the network
  unchanged.
* ``checkpoint``: ``Trainer.load_checkpoint`` accepts or raises ``ParamsFileError``, and changes
  nothing (network, optimizer, trainer counters, ``np.random``) when it refuses.
* ``idx``: :func:`tinyconv.datasets.idx.decode_idx` returns a uint8 array or raises
  ``IdxFormatError``, never expanding gzip data past what the header claims.
* ``core``: every function of the private ``tinyconv._core`` (and the public functional API)
  called with arguments chosen by the fuzzer raises only ``ValueError``/``TypeError``/
  ``MemoryError`` when it refuses them.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import warnings
from typing import Any, Callable

import numpy as np

# ----------------------------------------------------------------------------------------------
# Byte-level targets


def _assert_plain(value: Any, depth: int = 0) -> None:
    assert depth <= 80, "nesting deeper than the unpickler's limit came through"
    if isinstance(value, np.ndarray):
        assert value.dtype.kind in "biuf", f"array of dtype {value.dtype} came through"
        owner = value if value.base is None else value.base
        assert isinstance(owner, np.ndarray) and owner.flags.owndata, (
            "array does not own its memory"
        )
    elif isinstance(value, np.generic):
        assert value.dtype.kind in "biuf", f"scalar of dtype {value.dtype} came through"
    elif isinstance(value, (list, tuple)):
        for item in value:
            _assert_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_plain(key, depth + 1)
            _assert_plain(item, depth + 1)
    else:
        assert isinstance(value, (str, bytes, int, float, type(None), np.dtype)), type(
            value
        ).__name__


def fuzz_pickle(data: bytes) -> None:
    from tinyconv.serialization import ParamsFileError, safe_pickle_loads

    try:
        value = safe_pickle_loads(data)
    except ParamsFileError:
        return
    _assert_plain(value)


_SCRATCH: dict[str, str] = {}


def _scratch_file(data: bytes, suffix: str) -> str:
    """One reused temporary file per suffix (a new file per input would dominate the run time)."""
    path = _SCRATCH.get(suffix)
    if path is None:
        handle, path = tempfile.mkstemp(prefix="tinyconv-fuzz-", suffix=suffix)
        os.close(handle)
        _SCRATCH[suffix] = path
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _small_network():
    from tinyconv.nets import SimpleConvNet

    return SimpleConvNet(
        input_dim=(1, 6, 6),
        conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=3,
        output_size=2,
        seed=0,
    )


_NETWORK: list[Any] = []


def fuzz_params(data: bytes, suffix: str = ".pkl") -> None:
    from tinyconv.serialization import ParamsFileError, read_params

    path = _scratch_file(data, suffix)
    try:
        arrays = read_params(path)
    except ParamsFileError:
        arrays = None
    if arrays is not None:
        assert isinstance(arrays, dict)
        for key, value in arrays.items():
            assert isinstance(key, str)
            _assert_plain(value)
    if not _NETWORK:
        _NETWORK.append(_small_network())
    network = _NETWORK[0]
    before = {key: value.copy() for key, value in network.params.items()}
    try:
        network.load_params(path)
    except ParamsFileError:
        for key, value in network.params.items():
            assert np.array_equal(value, before[key], equal_nan=True), (
                f"{key} changed by a refused file"
            )
    else:  # accepted: put the network back for the next input
        network.load_state_dict(before)


def fuzz_safetensors(data: bytes) -> None:
    # read_params tells formats by content; inputs that do not start as a safetensors file would
    # take the pickle reader, which the pickle and params targets cover, and lead the fuzzer
    # there (its code is larger, so it rewards the fuzzer with more coverage): skip them.
    if len(data) < 9 or data[8:9] != b"{":
        return
    fuzz_params(data, ".safetensors")


_TRAINER: list[Any] = []


def checkpoint_trainer():
    """A tiny trainer whose checkpoint file seeds the ``checkpoint`` corpus."""
    from tinyconv.trainer import Trainer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    t = rng.integers(0, 2, 8)
    return Trainer(
        _small_network(),
        x,
        t,
        x,
        t,
        epochs=1,
        mini_batch_size=4,
        optimizer="Adam",
        optimizer_param={"lr": 0.01},
        verbose=False,
        seed=3,
        progress=False,
    )


def _trainer_snapshot(trainer) -> dict[str, Any]:
    return {
        "params": {key: value.copy() for key, value in trainer.network.params.items()},
        "optimizer": pickle.dumps(trainer.optimizer.state_dict()),
        "counters": (trainer.current_epoch, trainer.current_iter),
        "history": pickle.dumps(
            (trainer.train_loss_list, trainer.train_acc_list, trainer.test_acc_list)
        ),
        "np_random": pickle.dumps(np.random.get_state()),
        "rng": pickle.dumps(trainer.rng.bit_generator.state),
    }


def fuzz_checkpoint(data: bytes) -> None:
    from tinyconv.serialization import ParamsFileError

    if not _TRAINER:
        _TRAINER.append(checkpoint_trainer())
    trainer = _TRAINER[0]
    path = _scratch_file(data, ".ckpt")
    before = _trainer_snapshot(trainer)
    try:
        trainer.load_checkpoint(path)
    except ParamsFileError:
        after = _trainer_snapshot(trainer)
        for key in before:
            if key == "params":
                for name, value in before[key].items():
                    assert np.array_equal(after[key][name], value, equal_nan=True), (
                        f"{name} changed by a refused checkpoint"
                    )
            else:
                assert after[key] == before[key], f"{key} changed by a refused checkpoint"
    else:  # accepted: start the next input from a fresh trainer
        _TRAINER[0] = checkpoint_trainer()


def fuzz_idx(data: bytes) -> None:
    from tinyconv.datasets.idx import IdxFormatError, decode_idx

    for ndim in (None, 1, 3):
        try:
            array = decode_idx(data, ndim=ndim)
        except IdxFormatError:
            continue
        assert array.dtype == np.uint8
        assert array.flags.writeable
        assert (
            array.nbytes <= 64 * len(data) + 4096
            or data[:2] != b"\x1f\x8b"
            or array.nbytes <= 2**31
        )


# ----------------------------------------------------------------------------------------------
# The compiled core, argument by argument


class _Chooser:
    """Turns fuzzer bytes into choices among options (the ``pick`` of tests/fuzzing.py)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def __call__(self, options):
        options = list(options)
        if self.pos < len(self.data):
            index = self.data[self.pos] % len(options)
            self.pos += 1
        else:
            index = 0
        return options[index]


def _core_signatures() -> dict[str, tuple]:
    from tinyconv import _core

    # Argument kinds as tests/fuzzing.py names them; positional, as the binding takes them.
    pair = ["int", "int"]
    window = ["int", "int", *pair, *pair]
    table = {
        "gemm": ["array:2", "array:2", "array_or_none:2", "float", "float", "bool", "bool"],
        "im2col": ["array:4", *window],
        "col2im": ["array:2", "int", "int", "int", "int", *window],
        "conv2d_forward": ["array:4", "array:4", "array:1", *pair, *pair, "bool"],
        "conv2d_backward": ["array:4", "array:4", "array:4", *pair, *pair, "bool"],
        "max_pool2d_forward": ["array:4", *window, "bool"],
        "max_pool2d_backward_from_input": ["array:4", "array:4", *window, "bool"],
        "max_pool2d_backward": [
            "array:4",
            "array:4",
            "int",
            "int",
            "int",
            "int",
            "array_or_none:4",
        ],
        "avg_pool2d_forward": ["array:4", *window],
        "avg_pool2d_backward": ["array:4", "int", "int", "int", "int", *window],
        "relu_forward": ["array", "array_or_none"],
        "relu_backward": ["array", "array", "array_or_none"],
        "sigmoid_forward": ["array"],
        "sigmoid_backward": ["array", "array", "array_or_none"],
        "softmax_forward": ["array:2"],
        "softmax_cross_entropy_forward": ["array:2", "array:1"],
        "softmax_cross_entropy_backward": ["array:2", "array:1", "float"],
        "affine_forward": ["array:2", "array:2", "array:1"],
        "affine_backward": ["array:2", "array:2", "array:2", "bool"],
        "sgd_update": ["array", "array", "float"],
        "momentum_update": ["array", "array", "array", "float", "float", "bool"],
        "adaptive_update": ["array", "array", "array", "float", "bool", "float", "float"],
        "adam_update": ["array", "array", "array", "array", "float", "float", "float", "float"],
        "add_forward": ["array", "array", "bool", "array_or_none"],
        "global_avg_pool2d_forward": ["array:4"],
        "global_avg_pool2d_backward": ["array:2", "int", "int", "int", "int"],
        "batch_norm2d_forward": [
            "array:4",
            "array:1",
            "array:1",
            "array:1",
            "array:1",
            "bool",
            "float",
            "float",
            "bool",
            "bool",
        ],
        "batch_norm2d_backward": [
            "array:4",
            "array:4",
            "array:1",
            "array:1",
            "array:1",
            "bool",
            "array_or_none:4",
        ],
    }
    return {
        name: (getattr(_core, name), kinds) for name, kinds in table.items() if hasattr(_core, name)
    }


_CORE: dict[str, tuple] = {}


def fuzz_core(data: bytes) -> None:
    import fuzzing  # tests/fuzzing.py: the junk generators

    from tinyconv import _core

    if not _CORE:
        _CORE.update(_core_signatures())
        _CORE.update({f"public.{name}": entry for name, entry in fuzzing.SIGNATURES.items()})
    pick = _Chooser(data)
    name = pick(sorted(_CORE))
    function, kinds = _CORE[name]
    if name.startswith("public.") and pick([True, False]):
        args = fuzzing.plausible_args(name[len("public.") :], pick)
        i = pick(range(len(args)))
        args[i] = fuzzing.junk_argument(pick, fuzzing.SIGNATURES[name[len("public.") :]][1][i])
    else:
        args = [fuzzing.junk_argument(pick, kind) for kind in kinds]
        # Extra trailing arguments, or fewer, now and then.
        extra = pick([0, 0, 0, 1, -1])
        if extra > 0:
            args.append(fuzzing.junk_argument(pick, "int"))
        elif extra < 0 and args:
            args.pop()
    threads = _core.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function(*args)
    except fuzzing.ALLOWED_ERRORS:
        pass
    finally:
        _core.set_num_threads(threads)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "pickle": fuzz_pickle,
    "params": fuzz_params,
    "safetensors": fuzz_safetensors,
    "checkpoint": fuzz_checkpoint,
    "idx": fuzz_idx,
    "core": fuzz_core,
}


def seed_inputs(name: str) -> list[bytes]:
    """Valid inputs each target starts from (written into its corpus by ``run.py --seed``)."""
    from collections import OrderedDict

    if name in ("pickle", "params"):
        params = {"W1": np.arange(6, dtype=np.float32).reshape(2, 3), "b1": np.zeros(2)}
        seeds = [pickle.dumps(params, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
        seeds.append(pickle.dumps(OrderedDict(params), protocol=2))
        seeds.append(
            pickle.dumps(
                {
                    "s": np.float64(1.5),
                    "n": [1, (2, "x")],
                    "r": np.random.RandomState(0).get_state(),
                },
                protocol=4,
            )
        )
        if name == "params":
            buffer = io.BytesIO()
            np.savez(buffer, **params)
            seeds.append(buffer.getvalue())
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **params)
            seeds.append(buffer.getvalue())
        return seeds
    if name == "safetensors":
        import safetensors.numpy

        state = {key: np.array(value) for key, value in _small_network().state_dict().items()}
        return [
            safetensors.numpy.save(state),  # a file load_params accepts
            safetensors.numpy.save(
                {
                    "W1": np.arange(6, dtype=np.float32).reshape(2, 3),
                    "b1": np.zeros(2),
                    "n": np.array(3, dtype=np.int64),
                    "h": np.ones(2, dtype=np.float16),
                    "m": np.array([True, False]),
                    "u": np.arange(3, dtype=np.uint16),
                    "e": np.zeros((0, 2), dtype=np.int8),
                },
                metadata={"format": "np"},
            ),
            safetensors.numpy.save({}),
        ]
    if name == "checkpoint":
        trainer = checkpoint_trainer()
        trainer.train()
        path = _scratch_file(b"", ".seed.ckpt")
        trainer.save_checkpoint(path)
        with open(path, "rb") as handle:
            return [handle.read()]
    if name == "idx":
        from tinyconv.datasets.idx import _gzip_reproducibly, encode_idx

        images = encode_idx(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
        labels = encode_idx(np.array([1, 2, 3], dtype=np.uint8))
        return [images, labels, _gzip_reproducibly(images), _gzip_reproducibly(labels)]
    if name == "core":
        return [bytes([i]) * 24 for i in range(64)]
    raise KeyError(name)
