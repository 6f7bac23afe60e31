"""Training-step speed of a model on this machine: eager against channels-last and torch.compile.

    python tools/bench_compile.py                       # resnet20, batch 128, CPU
    python tools/bench_compile.py --model resnet56 --steps 30 --device cuda

Each variant trains the same model (same seed, same synthetic CIFAR-shaped batches) with SGD
and cross-entropy, as deepcomp.train does; after warm-up steps (which include torch.compile's
compilation, timed separately), the median of the timed steps is reported with the speed-up over
plain eager. Variants run in alternating order, twice, so a change in machine load hits all.
A variant that fails (e.g. no C compiler for inductor) is reported as such, not fatal.
"""
import argparse
import statistics
import time

import torch
from torch import nn

from deepcomp.models import create


def variants(device: str):
    yield "eager", {}
    yield "channels-last", {"channels_last": True}
    yield "compile", {"compile": True}
    yield "compile + channels-last", {"compile": True, "channels_last": True}


def bench(args, channels_last=False, compile=False) -> dict:
    torch.manual_seed(0)
    model = create(args.model).to(args.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g).to(args.device, memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(step_model(x), y)
        loss.backward()
        opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"median": statistics.median(times), "warmup": warm}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant and pass")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation included)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--passes", type=int, default=2, help="passes over the variants, order "
                   "reversed every other pass")
    args = p.parse_args()
    print(f"{args.model}, batch {args.batch}, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results: dict = {}
    order = list(variants(args.device))
    for k in range(args.passes):
        for name, kw in (order if k % 2 == 0 else order[::-1]):
            try:
                r = bench(args, **kw)
            except Exception as e:          # report and go on: a variant may not be available
                results.setdefault(name, []).append(f"failed: {type(e).__name__}: "
                                                    f"{str(e).splitlines()[0][:100]}")
                continue
            results.setdefault(name, []).append(r)
    base = statistics.median(r["median"] for r in results["eager"] if isinstance(r, dict))
    print(f"{'variant':26s} {'ms/step':>9s} {'speed-up':>9s} {'warm-up s':>10s}")
    for name, rs in results.items():
        ok = [r for r in rs if isinstance(r, dict)]
        if not ok:
            print(f"{name:26s} {rs[0]}")
            continue
        med = statistics.median(r["median"] for r in ok)
        warm = max(r["warmup"] for r in ok)
        print(f"{name:26s} {1000 * med:9.1f} {base / med:8.2f}x {warm:10.1f}")


if __name__ == "__main__":
    main()
