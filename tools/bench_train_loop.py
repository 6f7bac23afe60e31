"""Cost of deepcomp's training loop against a bare PyTorch loop over the same in-memory tensors.

Both train ResNet-20 on CIFAR-10 with SGD (momentum 0.9, batch 128) from the same weights. The
bare loop indexes pre-normalized float tensors and does nothing else (no augmentation, no
schedule, no metrics, no progress bar); deepcomp's `fit` does all of those, including random
crop + flip of every batch. They alternate, `--rounds` times, so both see the same machine load.

    python tools/bench_train_loop.py --data cifar10:../shared/data/cifar-10-batches-py
    python tools/bench_train_loop.py --data cifar10:... --steps 0     # whole epochs (slow)

Prints one line per run and the ratio of medians (goal: at most 1.15).
"""
import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from deepcomp.data import load_data
from deepcomp.models import create
from deepcomp.train import TrainConfig, fit


def bare_loop(model, x, y, batch_size, steps, seed):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        b = perm[i * batch_size:(i + 1) * batch_size]
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="cifar10:../shared/data/cifar-10-batches-py")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--steps", type=int, default=100, help="steps per run; 0 = a whole epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    a = p.parse_args()
    data = load_data(a.data)
    n = a.steps * a.batch_size if a.steps else len(data.train_y)
    data = replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
    steps = -(-n // a.batch_size)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = (data.train_x.float() / 255 - mean) / std        # pre-normalized, in memory
    y = data.train_y
    torch.manual_seed(0)
    init = create(a.model).state_dict()
    print(f"{a.model}, {steps} steps of {a.batch_size} per run, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)
    times = {"bare": [], "deepcomp": []}
    for r in range(a.rounds):
        m = create(a.model)
        m.load_state_dict(init)
        times["bare"].append(bare_loop(m, x, y, a.batch_size, steps, r))
        m = create(a.model)
        m.load_state_dict(init)
        t0 = time.perf_counter()
        fit(m, data, TrainConfig(epochs=1, lr=0.05, weight_decay=1e-4, batch_size=a.batch_size,
                                 seed=r, device="cpu", progress=True))
        times["deepcomp"].append(time.perf_counter() - t0)
        print(f"round {r + 1}: bare {times['bare'][-1]:.2f}s  deepcomp {times['deepcomp'][-1]:.2f}s",
              flush=True)
    b, d = statistics.median(times["bare"]), statistics.median(times["deepcomp"])
    print(f"median: bare {b:.2f}s, deepcomp {d:.2f}s, ratio {d / b:.3f} (goal <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
