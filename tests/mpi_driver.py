"""What tests/test_distributed.py runs under ``mpiexec -n K`` (and, with ``--single``, in one
process without MPI): train a small network on synthetic data and write every rank's parameters.

Usage: ``python mpi_driver.py OUT_DIR JSON_SETTINGS``. The settings (all optional) pick the net
(``net``: simple/resnet20/multi_bn), ``dtype``, ``seed``, ``epochs``, ``batch``, ``train_size``,
``optimizer``, ``sampling``, ``checkpoint`` and ``resume``, ``check_every``, and the faults this
test injects, on one rank at one global step: ``kill`` (SIGKILL), ``raise`` (RuntimeError),
``nan`` (a NaN in that rank's shard), ``interrupt`` (SIGINT), ``diverge`` (one parameter nudged on that rank). The faults
live here, not in the library. ``only_root_has_checkpoint`` gives the other ranks a checkpoint path
that does not exist. Writes ``rank<R>.npz`` (the parameters), ``done<R>.json`` and, from rank 0,
``rank0.json`` (losses and accuracies); a NonFiniteLossError or RankDivergenceError is reported in
``stopped<R>.json`` and exits with 3.
"""

import json
import os
import signal
import sys

import numpy as np

import tinyconv
from tinyconv.layers import Dropout
from tinyconv.nets import MultiLayerNetExtend, SimpleConvNet, resnet20
from tinyconv.trainer import NonFiniteLossError, Trainer


def data(train_size, seed=123):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((train_size + 40, 1, 10, 10))
    t = (x[:, 0, :5].sum(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 5:, :5].sum(axis=(1, 2)) > 0)
    return x[:train_size], t[:train_size], x[train_size:], t[train_size:]


def network(settings):
    dtype = np.dtype(settings.get("dtype", "float64"))
    if settings.get("net", "simple") == "resnet20":
        return resnet20(num_classes=3, in_channels=1, dtype=dtype, seed=7)
    if (
        settings.get("net") == "multi_bn"
    ):  # batch norm and dropout, masks from the network's generator
        return MultiLayerNetExtend(
            100, [16, 16], 3, use_batchnorm=True, use_dropout=True, dtype=dtype, seed=7
        )
    if (
        settings.get("net") == "multi_bn_global"
    ):  # ... from np.random, and weights too (rank 0's win)
        return MultiLayerNetExtend(
            100, [16, 16], 3, use_batchnorm=True, use_dropout=True, dtype=dtype
        )
    return SimpleConvNet(
        (1, 10, 10),
        {"filter_num": 6, "filter_size": 3, "pad": 1, "stride": 1},
        hidden_size=16,
        output_size=3,
        weight_init_std=0.1,
        dtype=dtype,
        seed=7,
    )


def inject_fault(net, rank, settings):
    """Wrap ``net.gradient`` so that the chosen fault happens on the chosen rank and step."""
    fault, fault_rank, fault_step = (
        settings.get("fault"),
        settings.get("fault_rank", 1),
        settings.get("fault_step", 3),
    )
    if fault is None or rank != fault_rank:
        return
    original, calls = net.gradient, [0]

    def gradient(x, t):
        calls[0] += 1
        if calls[0] == fault_step:
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "interrupt":  # Ctrl-C reaching this rank alone
                os.kill(os.getpid(), signal.SIGINT)
            if fault == "raise":
                raise RuntimeError("injected failure")
            if fault == "nan":
                x = x.copy()
                x[0, 0, 0, 0] = np.nan
            if fault == "diverge":
                first = next(iter(net.params.values()))
                first.reshape(-1)[0] += 1e-3
        return original(x, t)

    net.gradient = gradient


def main():
    out, settings = sys.argv[1], json.loads(sys.argv[2])
    single = settings.get("single", False)
    comm = None
    if not single:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank = 0 if comm is None else comm.Get_rank()
    net = network(settings)
    inject_fault(net, rank, settings)
    x_train, t_train, x_test, t_test = data(settings.get("train_size", 64))
    checkpoint = settings.get("checkpoint")
    if checkpoint and rank != 0 and settings.get("only_root_has_checkpoint"):
        checkpoint += f".rank{rank}-has-none"  # as on a host without the shared file system
    if settings.get("net", "").startswith("multi_bn"):
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    trainer = Trainer(
        net,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=settings.get("epochs", 2),
        mini_batch_size=settings.get("batch", 16),
        optimizer=settings.get("optimizer", "Adam"),
        optimizer_param={"lr": settings.get("lr", 0.01)},
        verbose=settings.get("verbose", False),
        seed=settings.get("seed", 5),
        sampling=settings.get("sampling", "replacement"),
        checkpoint=checkpoint,
        resume=settings.get("resume", False),
        comm=comm,
        check_every=settings.get("check_every", 100),
    )
    try:
        trainer.train()
    except NonFiniteLossError as error:
        with open(os.path.join(out, f"stopped{rank}.json"), "w") as f:
            json.dump(
                {
                    "type": type(error).__name__,
                    "epoch": error.epoch,
                    "step": error.step,
                    "current_iter": trainer.current_iter,
                },
                f,
            )
        sys.exit(3)
    except RuntimeError as error:  # RankDivergenceError; an injected RuntimeError aborts before
        with open(os.path.join(out, f"stopped{rank}.json"), "w") as f:
            json.dump(
                {
                    "type": type(error).__name__,
                    "step": getattr(error, "step", None),
                    "ranks": getattr(error, "ranks", None),
                },
                f,
            )
        sys.exit(3)
    np.savez(os.path.join(out, f"rank{rank}.npz"), **net.state_dict())
    masks = [layer.mask for layer in net.layers.values() if isinstance(layer, Dropout)]
    if masks:
        np.save(os.path.join(out, f"mask{rank}.npy"), masks[0])
    with open(os.path.join(out, f"done{rank}.json"), "w") as f:
        json.dump(
            {
                "current_iter": trainer.current_iter,
                "interrupted": trainer.interrupted,
                "threads": tinyconv.get_num_threads(),
            },
            f,
        )
    if rank == 0:
        with open(os.path.join(out, "rank0.json"), "w") as f:
            json.dump(
                {
                    "loss": trainer.train_loss_list,
                    "train_acc": trainer.train_acc_list,
                    "test_acc": trainer.test_acc_list,
                    "final_test_acc": trainer.final_test_acc,
                    "num_ranks": trainer.num_ranks,
                    "current_iter": trainer.current_iter,
                },
                f,
            )


if __name__ == "__main__":
    main()
