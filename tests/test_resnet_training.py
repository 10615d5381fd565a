"""A real ResNet-20 training run on Fashion-MNIST, short enough for CI: it must beat a floor.

The full run (60,000 images, >= 92 % test accuracy) is in README.md and the issue notes; this one
trains on 2,000 images for 3 epochs (96 steps) with the learning rate decayed to zero (cosine).
The decay matters: at a constant rate the last epoch's accuracy swung between 0.50 and 0.70 with
nothing but the instruction set changed (AVX2 against AVX-512 rounding), so a floor either failed
at random or proved little. With it, seeds 0, 1 and 2 on AVX-512 and on AVX2 all ended between
0.731 and 0.747 on the first 1,000 test images. The floor, 0.65, leaves room for other builds and
still fails a network that does not learn (chance is 0.10; a broken residual or batch-norm
backward pass stalls far below it).
"""

from __future__ import annotations

import time

import numpy as np
from test_trainer import load_fashion_mnist_or_skip

from tinyconv.nets import resnet20
from tinyconv.trainer import Trainer


def test_resnet20_learns_fashion_mnist():
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist_or_skip()
    x_train, t_train, x_test, t_test = x_train[:2000], t_train[:2000], x_test[:1000], t_test[:1000]
    network = resnet20(num_classes=10, in_channels=1, seed=0)
    trainer = Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=3,
        mini_batch_size=64,
        optimizer="Momentum",
        optimizer_param={"lr": 0.05},
        verbose=False,
        seed=0,
        sampling="permutation",
        lr_schedule="cosine",
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    print(
        f"ResNet-20, 2,000 Fashion-MNIST images, 3 epochs: test accuracy {trainer.test_acc_list[-1]:.3f} "
        f"in {seconds:.1f} s ({trainer.test_acc_list})"
    )
    assert len(trainer.train_loss_list) == 3 * 32
    assert np.all(np.isfinite(trainer.train_loss_list))
    assert trainer.test_acc_list[-1] >= 0.65
    # Training mode moved every batch norm's statistics; inference uses them.
    assert int(network.state_dict()["layer3.2.bn2.num_batches_tracked"]) == 96
