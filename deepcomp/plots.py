"""PNG plots made from plain data (matplotlib, headless). Every function writes one file."""
from __future__ import annotations

import io

import numpy as np

from .stagefile import atomic_write

__all__ = ["plot_sensitivity", "plot_sweep", "plot_histograms", "plot_kept", "plot_accuracy_ratio"]


def _figure(width=7.0, height=4.5):
    # matplotlib deferred on purpose: heavy (about a second), optional, and only plots need it
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt, plt.figure(figsize=(width, height), dpi=110)


def save(fig, plt, path):
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot_sensitivity(result: dict, path: str, title: str = "Pruning sensitivity") -> None:
    """One curve per layer: top-1 against the sparsity of that layer alone."""
    plt, fig = _figure(8, 5)
    ax = fig.add_subplot()
    cmap = plt.get_cmap("viridis")
    names = list(result)
    for i, name in enumerate(names):
        xs = sorted(result[name])
        ax.plot([100 * x for x in xs], [result[name][x]["top1"] for x in xs], marker=".",
                color=cmap(i / max(len(names) - 1, 1)), label=name.removesuffix(".weight"))
    ax.set_xlabel("sparsity of the layer (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2 if len(names) > 12 else 1, loc="lower left")
    save(fig, plt, path)


def plot_sweep(rows: list[dict], path: str, title: str = "Accuracy against sparsity") -> None:
    plt, fig = _figure()
    ax = fig.add_subplot()
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        line, = ax.plot([100 * r["sparsity"] for r in rs], [r["top1"] for r in rs], marker="o",
                        ms=3, label=f"{method}, no retraining")
        if "retrained_top1" in rs[0]:
            ax.plot([100 * r["sparsity"] for r in rs], [r["retrained_top1"] for r in rs],
                    marker="s", ms=3, ls="--", color=line.get_color(), label=f"{method}, retrained")
    ax.set_xlabel("sparsity of conv and linear weights (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, plt, path)


def plot_histograms(series: list, path: str, title: str) -> None:
    """Weight histograms of one layer at several stages, stacked (paper, Figure 5 style)."""
    plt, fig = _figure(7, 2.2 * max(len(series), 1))
    lo = min((float(s.min()) for _, s in series if len(s)), default=-1)
    hi = max((float(s.max()) for _, s in series if len(s)), default=1)
    bins = np.linspace(lo, hi, 121)
    for i, (label, values) in enumerate(series):
        ax = fig.add_subplot(len(series), 1, i + 1)
        distinct = np.unique(values)
        if len(distinct) <= 256:     # a quantized layer: one bar per shared weight
            counts = [(values == v).sum() for v in distinct]
            ax.vlines(distinct, 0, counts, color="C3", lw=1.2)
            label += f", {len(distinct)} distinct values"
        else:
            ax.hist(values, bins=bins, color="C0")
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
    fig.axes[-1].set_xlabel("weight value")
    fig.suptitle(title, fontsize=10)
    save(fig, plt, path)


def plot_kept(rows: list[dict], path: str, title: str) -> None:
    plt, fig = _figure(8, 4)
    ax = fig.add_subplot()
    names = [r["name"].removesuffix(".weight") for r in rows]
    ax.bar(range(len(rows)), [100 * r["kept_share"] for r in rows], color="C2")
    ax.set_xticks(range(len(rows)), names, rotation=70, fontsize=7)
    ax.set_ylabel("weights kept (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    save(fig, plt, path)


def plot_accuracy_ratio(rows: list[dict], path: str, title: str) -> None:
    plt, fig = _figure(6, 4)
    ax = fig.add_subplot()
    xs = [r["ratio"] for r in rows]
    ys = [r["top1"] for r in rows]
    ax.plot(xs, ys, marker="o")
    for i, r in enumerate(rows):     # labels alternate above and below: neighbours can be close
        ax.annotate(r["stage"], (r["ratio"], r["top1"]), textcoords="offset points",
                    xytext=(4, 4 if i % 2 == 0 else -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio against dense float32 (log)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    save(fig, plt, path)
