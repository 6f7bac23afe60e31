"""The paper's Figure 8 for our models: top-1 against bits per weight for the three centroid
initialisations, without and with fine-tuning of the codebooks (Han et al. 2016, section 3).

Measure (one CSV per model; each point quantizes every conv and fc layer at the same bits):

    .venv/bin/python tools/fig8_bits.py run /work/runs/lenet300_mnist_pruned.pt \\
        --finetune-epochs 1 --csv docs/fig8_bits_lenet300.csv
    .venv/bin/python tools/fig8_bits.py run /work/runs/resnet20_pruned.pt \\
        --finetune-epochs 1 --finetune-subset 5000 --csv docs/fig8_bits_resnet20.csv

Plot and tabulate (one panel per CSV):

    .venv/bin/python tools/fig8_bits.py plot docs/fig8_bits_lenet300.csv \\
        docs/fig8_bits_resnet20.csv --png docs/fig8_bits.png --md docs/fig8_bits.md
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import shlex
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deepcomp.data import load_data  # noqa: E402
from deepcomp.quantize import INITS, QuantizeConfig, quantize  # noqa: E402
from deepcomp.loading import load_stage  # noqa: E402
from deepcomp.stagefile import atomic_write  # noqa: E402
from deepcomp.train import TrainConfig, evaluate  # noqa: E402

FIELDS = ["model", "input", "input_top1", "init", "bits", "top1", "top1_finetuned", "loss",
          "loss_finetuned", "finetune_epochs", "finetune_lr", "finetune_images", "test_images",
          "seconds"]


def subset(data, n: int, split: str = "train", seed: int = 0):
    """The same data set with a fixed random ``n`` of its ``split`` images (0: all)."""
    import torch
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if not n or n >= len(y):
        return data
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return replace(data, **{f"{split}_x": x[idx], f"{split}_y": y[idx]})


def run(a):
    sf = load_stage(a.input, model=a.model)
    data = subset(load_data(a.data or sf.data["spec"]), a.test_subset, "test")
    tune = subset(data, a.finetune_subset)
    base = evaluate(sf.build_model(), data, a.device)["top1"]
    print(f"{a.input}: top-1 {base:.2f}% before quantization", flush=True)
    rows = []
    for init in a.inits.split(","):
        for bits in range(a.min_bits, a.max_bits + 1):
            t0 = time.perf_counter()
            ft = TrainConfig(epochs=a.finetune_epochs, lr=a.finetune_lr, device=a.device,
                             progress=False)
            q = quantize(sf, tune, QuantizeConfig(bits=bits, init=init, finetune=ft))
            m = q.history[-1]["metrics"]
            b, f = m["before_finetune"], m["after_finetune"]
            rows.append({"model": sf.arch["name"], "input": os.path.basename(a.input),
                         "input_top1": base, "init": init, "bits": bits, "top1": b["top1"],
                         "top1_finetuned": f["top1"], "loss": b["loss"],
                         "loss_finetuned": f["loss"], "finetune_epochs": a.finetune_epochs,
                         "finetune_lr": a.finetune_lr, "finetune_images": len(tune.train_y),
                         "test_images": len(data.test_y),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{init:8s} {bits} bits: top-1 {b['top1']:.2f}% -> {f['top1']:.2f}% "
                  f"fine-tuned ({rows[-1]['seconds']}s)", flush=True)
            write_csv(a.csv, rows, a)           # after every point: a long run can be watched


def write_csv(path, rows, a):
    buf = io.StringIO()
    buf.write(f"# {shlex.join(['.venv/bin/python'] + sys.argv)}\n")
    w = csv.DictWriter(buf, FIELDS, lineterminator="\r\n")   # csv's default, as before
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_csv(path):
    with open(path) as f:
        command = f.readline().lstrip("# ").strip()
        rows = list(csv.DictReader(f))
    return command, rows


def plot(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tables = [(p, *read_csv(p)) for p in a.csvs]
    fig, axes = plt.subplots(2, len(tables), figsize=(5.4 * len(tables), 7.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    colors = {"linear": "tab:red", "density": "tab:blue", "forgy": "tab:green"}
    md = []
    for col, (path, command, rows) in enumerate(tables):
        r0 = rows[0]
        tuned = int(r0["finetune_epochs"]) > 0
        base = float(r0["input_top1"])
        for ax in axes[:, col]:
            for init in INITS:
                rs = sorted((r for r in rows if r["init"] == init), key=lambda r: int(r["bits"]))
                if not rs:
                    continue
                bits = [int(r["bits"]) for r in rs]
                ax.plot(bits, [float(r["top1"]) for r in rs], "--o" if tuned else "-o",
                        color=colors[init], ms=3, label=f"{init}, no fine-tuning")
                if tuned:
                    ax.plot(bits, [float(r["top1_finetuned"]) for r in rs], "-s",
                            color=colors[init], ms=3, label=f"{init}, fine-tuned")
            ax.axhline(base, color="gray", lw=0.8, ls=":", label=f"before quantization {base:.2f}%")
            ax.set_xticks(sorted({int(r["bits"]) for r in rows}))
            ax.set_ylabel("top-1 accuracy (%)")
            ax.grid(alpha=0.3)
        vals = [float(r[k]) for r in rows for k in ("top1", "top1_finetuned")]
        top = max(base, *vals)         # fine-tuning can end above the unquantized input
        axes[0, col].set_ylim(max(min(vals) - 2, 0), top + 1)
        axes[1, col].set_ylim(base - 2, top + 0.3)
        axes[1, col].set_title("the same, near the top", fontsize=8)
        axes[1, col].set_xlabel("bits per weight (all conv and fc layers)")
        axes[0, col].legend(fontsize=7, loc="lower right")
        ft = (f"{r0['finetune_epochs']} epoch on {int(r0['finetune_images']):,} training "
              f"images, lr {r0['finetune_lr']}" if tuned else "none")
        n = r0.get("test_images")
        test = f"{int(n):,} test images" if n else "the whole test set"
        axes[0, col].set_title(f"{r0['model']} ({r0['input']}), {test}\nfine-tuning: {ft}",
                               fontsize=9)
        md += [f"### {r0['model']} ({r0['input']}, top-1 {base:.2f}% before quantization, "
               f"{test}; fine-tuning: {ft})", "", f"`{command}`", "",
               "| bits | " + " | ".join(f"{i} | {i} fine-tuned" if tuned else i
                                        for i in INITS) + " |",
               "|---:|" + "---:|" * ((1 + tuned) * len(INITS))]
        for b in sorted({int(r["bits"]) for r in rows}):
            cells = []
            for init in INITS:
                r = next((r for r in rows if r["init"] == init and int(r["bits"]) == b), None)
                vals = [r["top1"], r["top1_finetuned"]][: 1 + tuned] if r else [""] * (1 + tuned)
                cells += [f"{float(v):.2f}" if v else "" for v in vals]
            md.append(f"| {b} | " + " | ".join(cells) + " |")
        md.append("")
    fig.suptitle("Top-1 against bits per weight by centroid initialisation\n"
                 "(cf. Han et al. 2016, Figure 8)", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)
    print(f"wrote {a.png}")
    if a.md:
        with open(a.md, "w") as f:
            f.write(f"<!-- made by: {shlex.join(['tools/fig8_bits.py'] + sys.argv[1:])} -->\n\n"
                    + "\n".join(md))
        print(f"wrote {a.md}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure one model")
    r.add_argument("input", help="stage file (pruned) or checkpoint with --model")
    r.add_argument("--model")
    r.add_argument("--data", help="data spec (default: the file's)")
    r.add_argument("--inits", default=",".join(INITS))
    r.add_argument("--min-bits", type=int, default=2)
    r.add_argument("--max-bits", type=int, default=8)
    r.add_argument("--finetune-epochs", type=int, default=1)
    r.add_argument("--finetune-lr", type=float, default=QuantizeConfig().finetune.lr)
    r.add_argument("--finetune-subset", type=int, default=0,
                   help="fine-tune on this many random training images (0: all)")
    r.add_argument("--test-subset", type=int, default=0,
                   help="measure on this many random test images (0: all)")
    r.add_argument("--device", default="auto")
    r.add_argument("--csv", required=True)
    r.set_defaults(fn=run)
    q = sub.add_parser("plot", help="PNG and markdown table from CSVs")
    q.add_argument("csvs", nargs="+")
    q.add_argument("--png", required=True)
    q.add_argument("--md")
    q.set_defaults(fn=plot)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
