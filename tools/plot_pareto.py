"""Plot compression ratio against top-1 drop from a CSV of measured points (docs/*_pareto.csv).

    python tools/plot_pareto.py docs/resnet20_pareto.csv -o docs/plots/resnet20_pareto.png

Columns: label, format (the .dc format version the size was measured in), bytes, ratio, top1,
drop, epochs, source (where the run that produced the point is described). Every point is
drawn; only the Pareto front (no other point both smaller and more accurate) is labelled and
joined, so that the labels stay readable as points accumulate.
"""
import argparse
import csv

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def front(rows: list) -> list:
    """The rows no other row beats in both ratio and drop, by ratio."""
    pts = [(float(r["ratio"]), float(r["drop"]), r) for r in rows]
    best = [(x, y, r) for x, y, r in pts
            if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2, _ in pts)]
    return [r for _, _, r in sorted(best, key=lambda t: t[0])]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--goal", default="25,-1.0", help="ratio,drop of the goal (a star)")
    a = p.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fmt, marker in (("1", "s"), ("2", "o")):
        pts = [r for r in rows if r["format"] == fmt]
        ax.scatter([float(r["ratio"]) for r in pts], [float(r["drop"]) for r in pts],
                   marker=marker, label=f".dc format {fmt}")
    best = front(rows)
    ax.plot([float(r["ratio"]) for r in best], [float(r["drop"]) for r in best], "--",
            color="gray", lw=1, label="Pareto front")
    for r in best:
        ax.annotate(r["label"], (float(r["ratio"]), float(r["drop"])), fontsize=6,
                    xytext=(-4, 5), textcoords="offset points", ha="right")
    gx, gy = (float(v) for v in a.goal.split(","))
    ax.scatter([gx], [gy], marker="*", s=150, color="gold", edgecolor="k", label="goal")
    ax.set_xlabel("compression ratio (float32 model bytes / .dc bytes)")
    ax.set_ylabel("top-1 change, points (CIFAR-10 test)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.output, dpi=120)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
