"""Cost of deepcomp's retraining loop against a bare PyTorch loop over the same in-memory tensors.

Both train ResNet-20 (CIFAR-shaped data) with SGD (momentum 0.9, batch 128) from the same
weights, in the same precision and memory layout (deepcomp's defaults on that device: bfloat16
autocast and channels-last where the device has fast bfloat16). The bare loop indexes
pre-normalized tensors already on the device and does nothing else (no augmentation, schedule,
metrics or progress bar). deepcomp's is the pruning stage's retraining: `fit` with random crop +
flip, a MaskKeeper holding 85% of the weights at zero (`--masks`, default on) and distillation
from a teacher (`--distill`, default on: one more forward pass a step, which the bare loop does
not pay). They alternate, `--rounds` times, so both see the same machine load.

    python tools/bench_train_loop.py --data cifar10:../shared/data/cifar-10-batches-py
    python tools/bench_train_loop.py --data synthetic:3x32x32 --device cuda --steps 0 --images 50000

Prints one line per run, then images per second and the ratio of medians (goal on a GPU: at
most 1.2 with masks and distillation).
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
from deepcomp.prune import MaskKeeper, compute_masks, prunable_names
from deepcomp.stagefile import arch_for
from deepcomp.train import TrainConfig, fit, resolve_device, resolve_precision


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, x, y, batch_size, steps, seed, device, bf16, channels_last):
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g).to(device)
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        b = perm[i * batch_size:(i + 1) * batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="cifar10:../shared/data/cifar-10-batches-py")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--steps", type=int, default=100, help="steps per run; 0 = a whole epoch")
    p.add_argument("--images", type=int, default=0,
                   help="with --steps 0: training images (synthetic data repeated up to it)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-masks", dest="masks", action="store_false")
    p.add_argument("--no-distill", dest="distill", action="store_false")
    a = p.parse_args()
    device = resolve_device(a.device)
    bf16 = resolve_precision("auto", device) == "bf16"
    data = load_data(a.data)
    if a.images:
        reps = -(-a.images // len(data.train_y))
        data = replace(data, train_x=data.train_x.repeat(reps, 1, 1, 1)[:a.images],
                       train_y=data.train_y.repeat(reps)[:a.images])
    n = a.steps * a.batch_size if a.steps else len(data.train_y)
    data = replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
    steps = -(-n // a.batch_size)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = ((data.train_x.float() / 255 - mean) / std).to(device)   # pre-normalized, on the device
    y = data.train_y.to(device)
    arch = arch_for(a.model, data.meta())
    torch.manual_seed(0)
    init = create(arch["name"], **arch["kwargs"]).state_dict()

    def build():
        m = create(arch["name"], **arch["kwargs"])
        m.load_state_dict(init)
        return m
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{a.model} on {name}, {steps} steps of {a.batch_size} per run, "
          f"{'bf16' if bf16 else 'fp32'}, masks {a.masks}, distillation {a.distill}, "
          f"torch {torch.__version__}", flush=True)
    times = {"bare": [], "deepcomp": []}
    for r in range(a.rounds):
        times["bare"].append(bare_loop(build(), x, y, a.batch_size, steps, r, device, bf16,
                                       data.train_x.ndim == 4))
        m = build()
        keeper = None
        if a.masks:
            names = prunable_names(m)
            params = dict(m.named_parameters())
            masks, _ = compute_masks({k: params[k] for k in names}, "global", 0.85)
            keeper = MaskKeeper(m, masks)
        cfg = TrainConfig(epochs=1, lr=0.05, weight_decay=1e-4, batch_size=a.batch_size, seed=r,
                          device=str(device), progress=False, compile="off",
                          distill_weight=0.9 if a.distill else 0.0)
        _sync(device)
        t0 = time.perf_counter()
        fit(m, data, cfg, after_step=keeper, teacher=build() if a.distill else None)
        _sync(device)
        times["deepcomp"].append(time.perf_counter() - t0)
        print(f"round {r + 1}: bare {times['bare'][-1]:.2f}s  deepcomp {times['deepcomp'][-1]:.2f}s",
              flush=True)
    b, d = statistics.median(times["bare"]), statistics.median(times["deepcomp"])
    print(f"median: bare {b:.2f}s ({n / b:,.0f} images/s), deepcomp {d:.2f}s "
          f"({n / d:,.0f} images/s), ratio {d / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
