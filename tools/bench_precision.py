"""Whole retraining epochs under each precision, memory layout and torch.compile setting.

The workload is the ResNet recipe's: ResNet-20 on CIFAR-10, random crop + flip, batch 128,
SGD with momentum, distillation from a teacher (weight 0.9, T = 4), deepcomp's own `fit`. Each
variant trains the same starting weights for `--epochs` whole epochs; the variants alternate
within a round, `--rounds` rounds, so machine load hits all of them alike.

    python tools/bench_precision.py --data cifar10:../shared/data/cifar-10-batches-py
    python tools/bench_precision.py --data synthetic:3x32x32 --epochs 1 --rounds 1   # smoke run

Prints one line per run and a Markdown table: the first epoch (it includes torch.compile's
compilation), the median of the later ones, and the best whole epoch without compilation (on a
machine shared with other jobs the best is the steadiest figure); then each variant's speed,
by its best epoch, against the old default (float32, contiguous, compiled for long runs) and
against float32 with the same layout and compile.
"""
import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch

from deepcomp.data import load_data
from deepcomp.models import create
from deepcomp.stagefile import arch_for
from deepcomp.train import TrainConfig, fast_bf16, fit

VARIANTS = [(p, cl, c) for p in ("fp32", "bf16") for c in ("off", "on") for cl in ("off", "on")]


def name(v) -> str:
    p, cl, c = v
    return p + (" + channels-last" if cl == "on" else "") + (" + compile" if c == "on" else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="cifar10:../shared/data/cifar-10-batches-py")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--images", type=int, default=0, help="training images (0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="comma-separated variants by name, e.g. "
                    "'bf16 + channels-last,bf16 + channels-last + compile' (default: all)")
    a = ap.parse_args()
    data = load_data(a.data)
    if a.images:
        data = replace(data, train_x=data.train_x[:a.images], train_y=data.train_y[:a.images])
    arch = arch_for(a.model, data.meta())
    torch.manual_seed(0)
    init = create(arch["name"], **arch["kwargs"]).state_dict()
    variants = [v for v in VARIANTS if v[0] == "fp32" or fast_bf16(torch.device(a.device))]
    if a.only:
        wanted = [w.strip() for w in a.only.split(",")]
        variants = [v for v in variants if name(v) in wanted]
        if len(variants) != len(wanted):
            ap.error(f"--only: unknown variants among {wanted}; known: "
                     f"{', '.join(name(v) for v in VARIANTS)}")
    print(f"{a.model} on {a.data.split(':')[0]}, {len(data.train_y)} images, {a.epochs} epochs "
          f"per run, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    first, later = {v: [] for v in variants}, {v: [] for v in variants}
    for r in range(a.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            def build():
                m = create(arch["name"], **arch["kwargs"])
                m.load_state_dict(init)
                return m
            model, teacher = build(), build()
            cfg = TrainConfig(epochs=a.epochs, lr=0.02, weight_decay=1e-4, precision=v[0],
                              channels_last=v[1], compile=v[2], distill_weight=0.9,
                              device=a.device, progress=False)
            t0 = time.perf_counter()
            hist = fit(model, data, cfg, teacher=teacher)
            total = time.perf_counter() - t0
            first[v].append(hist[0]["seconds"])
            later[v] += [h["seconds"] for h in hist[1:]]
            print(f"round {r + 1}: {name(v):32s} epochs "
                  + " ".join(f"{h['seconds']:.1f}s" for h in hist)
                  + f" (run {total:.1f}s, train top-1 {hist[-1]['train_top1']:.2f}%)", flush=True)
    med = {v: statistics.median(later[v] or first[v]) for v in variants}
    best = {v: min(later[v] + (first[v] if v[2] == "off" else [])) if later[v] or v[2] == "off"
            else min(first[v]) for v in variants}
    base = best.get(("fp32", "off", "on"))
    print("\n| variant | first epoch (s) | later epochs, median (s) | best epoch (s) | "
          "vs old default | vs fp32, same layout and compile |")
    print("|---|---:|---:|---:|---:|---:|")
    def ratio(ref, v):
        return f"{ref / best[v]:.2f}x" if ref else "-"
    for v in variants:
        print(f"| {name(v)} | {statistics.median(first[v]):.1f} | {med[v]:.1f} | "
              f"{best[v]:.1f} | {ratio(base, v)} | {ratio(best.get(('fp32',) + v[1:]), v)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
