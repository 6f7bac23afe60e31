"""Plot compression ratio against top-1 drop from a CSV of measured points (docs/*_pareto.csv).

    python tools/plot_pareto.py docs/resnet20_pareto.csv -o docs/plots/resnet20_pareto.png

Columns: label, format (the .dc format version the size was measured in), bytes, ratio, top1,
drop, epochs, source (where the run that produced the point is described).
"""
import argparse
import csv

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
        for r in pts:
            ax.annotate(r["label"], (float(r["ratio"]), float(r["drop"])), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
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
