"""The pruning studies researchers run, one command each (docs/STUDIES.md).

    python tools/studies.py schemes              # LeNet-300-100, MNIST: four schemes, 0-95%
    python tools/studies.py layer-sweep          # ResNet-20, CIFAR-10: each layer alone, 0-95%
    python tools/studies.py sensitivity          # LeNet-5, MNIST: scan, allocation, histograms
    python tools/studies.py oneshot-iterative    # ResNet-20, CIFAR-10: 50/75/90%, same budget

Each runs real `deepcomp` commands (each resumable: a stopped study run again goes on where it
stopped, finished steps are reused), writes a CSV, a Markdown table and a plot into
docs/studies/, and records the commands, the time and the machine in docs/studies/NAME.md;
docs/STUDIES.md says what each shows. `--data`, `--base`, `--grid` and `--epochs` make a
study small (the tests run each on scikit-learn's digits in seconds).
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.path.relpath(os.environ.get("DEEPCOMP_SHARED", ROOT.parent / "shared"), ROOT))
MNIST = f"mnist:{SHARED / 'data' / 'mnist'}"
CIFAR = f"cifar10:{SHARED / 'data' / 'cifar-10-batches-py'}"
RESNET20 = str(SHARED / "models" / "resnet20-12fca82f.th")


class Study:
    """One study's commands, run (or reused) in ``runs``, and its outputs in ``docs``."""

    def __init__(self, name: str, runs: Path, docs: Path, quiet: bool = False,
                 command: str | None = None):
        self.name, self.runs, self.docs, self.quiet = name, runs, docs, quiet
        self.command = command or f"python tools/studies.py {name}"   # as recorded in docs
        self.log: list = []
        self.t0 = time.perf_counter()
        runs.mkdir(parents=True, exist_ok=True)
        docs.mkdir(parents=True, exist_ok=True)

    def run(self, argv: list, output: Path) -> Path:
        """``deepcomp ARGV -o OUTPUT`` (in this process) unless OUTPUT exists (a finished step)."""
        import contextlib
        import io
        from deepcomp.cli import main
        cmd = ["deepcomp", *map(str, argv), "-o", str(output)] + \
            ([] if argv[0] in ("sensitivity", "sweep") else ["--no-progress"])
        if not (output.exists() or Path(str(output) + ".csv").exists()):
            if not self.quiet:
                print("$ " + shlex.join(cmd), flush=True)
            with contextlib.redirect_stdout(io.StringIO()) if self.quiet else \
                    contextlib.nullcontext():
                rc = main(cmd[1:])
            if rc:
                raise SystemExit(f"studies: `{shlex.join(cmd)}` failed (exit {rc})")
        self.log.append(shlex.join(cmd))
        return output

    def write(self, rows: list[dict], table: str, title: str, plot) -> None:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.docs / f"{self.name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, keys, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        plot(self.docs / f"{self.name}.png")
        import platform
        minutes = (time.perf_counter() - self.t0) / 60
        cmds = "\n".join(f"    {c}" for c in self.log)
        text = (f"## {title}\n\nMeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU "
                f"cores, Python {platform.python_version()}, by `{self.command}` "
                f"({minutes:.1f} min, finished steps reused):\n\n{cmds}\n\n"
                f"{table}\n\n![{self.name}]({self.name}.png)\n")
        (self.docs / f"{self.name}.md").write_text(text)


def _rel(path: Path) -> Path:
    """PATH relative to the working directory where it lies below it (the commands recorded in
    docs/studies/ and in each file's history then name no machine's folders)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def _csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _md(rows: list[dict], keys: list[str], heads: list[str]) -> str:
    out = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
    for r in rows:
        out.append("| " + " | ".join("-" if r.get(k) in (None, "") else str(r[k])
                                     for k in keys) + " |")
    return "\n".join(out)


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _layers(base: str, model: str | None) -> list[list[str]]:
    """Each prunable layer's setting patterns: its weight's layer name and its bias's name."""
    from deepcomp.loading import load_stage
    from deepcomp.prune import prunable_names
    out = []
    for n in prunable_names(load_stage(base, model=model), include_bias=True):
        if n.endswith(".weight"):
            out.append([n.removesuffix(".weight")])
        else:
            out[-1].append(n)
    return out


def _top1(path: Path, model: str | None = None) -> float:
    from deepcomp.loading import load_stage
    return round(float(load_stage(str(path), model=model).history[-1]["metrics"]["top1"]), 2)


# --- 3. four schemes on one Pareto plot --------------------------------------------------

def schemes(st: Study, base: str, data: str, grid: str, epochs: int, lr: float) -> None:
    """Global and layer-wise thresholds without retraining (one sweep), freeze-layer retraining
    (the layers pruned one after another, each frozen once pruned, the rest retrained) and
    masked retraining (every layer pruned to the sparsity, all retrained with the pruned
    weights held at zero); weights and biases pruned alike."""
    from deepcomp.analysis import parse_range
    model = None
    sweep = st.run(["sweep", base, "--data", data, "--sparsities", grid, "--method",
                    "global,layer", "--include-bias"], st.runs / "threshold")
    rows = {}
    for r in _csv(f"{sweep}.csv"):
        rows.setdefault(float(r["target"]), {"sparsity": float(r["target"])})[
            f"{r['method']}_threshold"] = round(float(r["top1"]), 2)
    layers = _layers(base, model)
    for s in parse_range(grid):
        tag = f"{int(round(1000 * s)):03d}"
        masked = st.run(["prune", base, "--data", data, "--method", "layer", "--sparsity",
                         str(s), "--include-bias", "--retrain-epochs", epochs, "--retrain-lr",
                         lr], st.runs / f"masked-{tag}.pt")
        prev = base
        for k, layer in enumerate(layers):       # prune layer k, freeze what is pruned so far
            setting = ",".join(f"{n}={s if j == k else 0}" for j, ns in enumerate(layers)
                               for n in ns)
            prev = st.run(["prune", prev, "--data", data, "--method", "layer", "--sparsity",
                           setting, "--include-bias", "--retrain", "freeze",
                           "--retrain-epochs", max(1, epochs // len(layers)), "--retrain-lr",
                           lr], st.runs / f"freeze-{tag}-{k}.pt")
        rows[s].update(masked_retrain=_top1(masked), freeze_retrain=_top1(prev))
    rows = [rows[s] for s in sorted(rows)]
    keys = ["sparsity", "global_threshold", "layer_threshold", "freeze_retrain",
            "masked_retrain"]
    plt = _figure()

    def plot(path):
        fig = plt.figure(figsize=(7, 4.5), dpi=110)
        ax = fig.add_subplot()
        for k in keys[1:]:
            ax.plot([100 * r["sparsity"] for r in rows], [r[k] for r in rows], marker="o",
                    ms=3, label=k.replace("_", " "))
        ax.set(xlabel="sparsity of weights and biases (%)", ylabel="top-1 (%)",
               title="Four pruning schemes")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    st.write(rows, _md(rows, keys, ["sparsity", "global, no retraining", "layer, no retraining",
                                    "freeze-layer retraining", "masked retraining"]),
             f"Four pruning schemes ({_subject(base, data)})", plot)


# --- 2. each layer alone -------------------------------------------------------------------

def layer_sweep(st: Study, base: str, data: str, grid: str, model: str | None,
                images: int) -> None:
    """Every prunable layer pruned alone, by magnitude, no retraining: how much each gives for
    free (the largest sparsity within 0.5 and 1 point of the unpruned model)."""
    argv = ["sensitivity", base, "--data", data, "--sparsities", grid, "--max-images", images]
    sens = st.run(argv + (["--model", model] if model else []), st.runs / "layers")
    curves: dict = {}
    for r in _csv(f"{sens}.csv"):
        curves.setdefault(r["layer"], []).append((float(r["sparsity"]), float(r["top1"])))
    rows = []
    for layer, c in curves.items():
        c.sort()
        ref = c[0][1]
        free = {d: max((s for s, t in c if t >= ref - d), default=0.0) for d in (0.5, 1.0)}
        rows.append({"layer": layer.removesuffix(".weight"), "unpruned": round(ref, 2),
                     "free_within_0.5": free[0.5], "free_within_1": free[1.0],
                     "at_90": next((round(t, 2) for s, t in c if abs(s - 0.9) < 1e-9), None)})
    plt = _figure()

    def plot(path):
        fig = plt.figure(figsize=(8, 5), dpi=110)
        ax = fig.add_subplot()
        for layer, c in curves.items():
            ax.plot([100 * s for s, _ in c], [t for _, t in c], lw=1,
                    label=layer.removesuffix(".weight"))
        ax.set(xlabel="sparsity of that layer alone (%)", ylabel="top-1 (%)",
               title="Each layer pruned alone, no retraining")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    st.write(rows, _md(rows, ["layer", "free_within_0.5", "free_within_1", "at_90"],
                       ["layer", "sparsity free within 0.5 pt", "within 1 pt",
                        "top-1 at 90%"]),
             f"Each layer alone ({_subject(base, data)})", plot)


# --- 4. a sensitivity scan that drives the pruning ----------------------------------------

def sensitivity(st: Study, base: str, data: str, grid: str, target: float, epochs: int,
                lr: float) -> None:
    """The sensitivity scan (deepcomp's allocation: each layer's loss curve on training images)
    yields a per-layer sparsity dictionary for one overall target; the pruning it drives, and
    the weight histograms before and after."""
    from deepcomp.loading import load_stage
    sens = st.run(["sensitivity", base, "--data", data, "--sparsities", grid],
                  st.runs / "scan")
    pruned = st.run(["prune", base, "--data", data, "--method", "sensitivity", "--sparsity",
                     target, "--retrain-epochs", epochs, "--retrain-lr", lr],
                    st.runs / "sensitivity.pt")
    rec = load_stage(str(pruned)).history[-1]
    rows = [{"layer": n.removesuffix(".weight"), "sparsity": round(v["sparsity"], 4),
             "weights": v["weights"]} for n, v in rec["layers"].items()]
    plots = st.docs / f"{st.name}-plots"
    import contextlib
    import io
    from deepcomp.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        main(["report", base, str(pruned), "--plot", str(plots)])
    m = rec["metrics"]
    table = (_md(rows, ["layer", "sparsity", "weights"], ["layer", "allocated sparsity",
                                                           "weights"]) +
             f"\n\nThe dictionary as a setting: `--method layer --sparsity '" +
             ",".join(f"{r['layer']}={r['sparsity']}" for r in rows) + "'`\n\n"
             f"top-1: {m['before']['top1']:.2f}% unpruned, {m['pruned']['top1']:.2f}% pruned "
             f"to {100 * float(target):.0f}% overall, {m['top1']:.2f}% after {epochs} "
             f"retraining epochs. Histograms: {plots.name}/weights_histogram.png; per-layer "
             f"curves of the scan: the plot below.")
    import shutil

    def plot(path):
        shutil.copyfile(f"{sens}.png", path)
    st.write(rows, table, f"A sensitivity scan drives the pruning ({_subject(base, data)})", plot)


# --- 1. one-shot against iterative ---------------------------------------------------------

def oneshot_iterative(st: Study, base: str, data: str, model: str | None, targets: list,
                      budget: int, rounds: int, seeds: list, lr: float) -> None:
    """Global magnitude pruning to each target: one-shot (prune once, retrain ``budget``
    epochs) against iterative (``rounds`` rounds on the cubic ramp, ``budget / rounds``
    epochs each), the same total retraining, over several seeds (the spread)."""
    import statistics
    if budget % rounds:
        raise SystemExit(f"studies: the budget of {budget} epochs does not split into {rounds} "
                         "rounds")
    rows = []
    for s in targets:
        row = {"sparsity": s}
        for kind, its, ep in (("oneshot", 1, budget), ("iterative", rounds, budget // rounds)):
            tops = []
            for seed in seeds:
                out = st.run(["prune", base, "--data", data, "--method", "global",
                              "--sparsity", s, "--iterations", its, "--retrain-epochs", ep,
                              "--retrain-lr", lr, "--seed", seed]
                             + (["--model", model] if model else []),
                             st.runs / f"{kind}-{int(round(100 * s))}-{seed}.pt")
                tops.append(_top1(out))
            row[kind] = round(statistics.mean(tops), 2)
            row[f"{kind}_spread"] = round(max(tops) - min(tops), 2)
        rows.append(row)
    plt = _figure()

    def plot(path):
        fig = plt.figure(figsize=(7, 4.5), dpi=110)
        ax = fig.add_subplot()
        for kind in ("oneshot", "iterative"):
            ax.errorbar([100 * r["sparsity"] for r in rows], [r[kind] for r in rows],
                        yerr=[r[f"{kind}_spread"] / 2 for r in rows], marker="o", capsize=3,
                        label=kind)
        ax.set(xlabel="sparsity (%)", ylabel="top-1 (%)",
               title=f"One-shot vs {rounds} rounds, {budget} retraining epochs each way")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    st.write(rows, _md(rows, ["sparsity", "oneshot", "oneshot_spread", "iterative",
                              "iterative_spread"],
                       ["sparsity", "one-shot top-1", "spread", "iterative top-1", "spread"]),
             f"One-shot against iterative global pruning ({_subject(base, data)})", plot)


STUDIES = ("schemes", "layer-sweep", "sensitivity", "oneshot-iterative")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", choices=STUDIES)
    ap.add_argument("--base", help="the model to study (default: each study's own)")
    ap.add_argument("--model", help="its architecture, for a plain checkpoint")
    ap.add_argument("--data", help="data spec (default: each study's own)")
    ap.add_argument("--grid", help="sparsities (default: 0:0.95:0.05; oneshot-iterative: "
                    "0.5,0.75,0.9)")
    ap.add_argument("--epochs", type=int, help="retraining epochs (default: each study's own)")
    ap.add_argument("--seeds", default="0,1", help="oneshot-iterative: the seeds (default: %(default)s)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "studies"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "studies"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    given = [(f"--{k}", v) for k, v in (("base", a.base), ("model", a.model), ("data", a.data),
                                       ("grid", a.grid), ("epochs", a.epochs))
             if v is not None] + ([("--seeds", a.seeds)] if a.seeds != "0,1" else [])
    command = shlex.join(["python", "tools/studies.py", a.study,
                          *(str(x) for kv in given for x in kv)])
    st = Study(a.study, _rel(Path(a.runs) / a.study), _rel(Path(a.docs)), a.quiet, command)
    from deepcomp.analysis import parse_range
    grid = a.grid or ("0.5,0.75,0.9" if a.study == "oneshot-iterative" else "0:0.95:0.05")
    if a.study == "schemes":
        base = a.base or str(_lenet_baseline(st, "lenet300"))
        schemes(st, base, a.data or MNIST, grid, a.epochs or 2, 0.01)
    elif a.study == "layer-sweep":
        layer_sweep(st, a.base or RESNET20, a.data or CIFAR, grid,
                    a.model or (None if a.base else "resnet20"), 2000)
    elif a.study == "sensitivity":
        base = a.base or str(_lenet_baseline(st, "lenet5"))
        sensitivity(st, base, a.data or MNIST, grid, 0.9, a.epochs or 2, 0.01)
    else:
        oneshot_iterative(st, a.base or RESNET20, a.data or CIFAR,
                          a.model or (None if a.base else "resnet20"), parse_range(grid),
                          a.epochs or 3, 3, [int(x) for x in a.seeds.split(",")], 0.01)
    print(f"wrote {Path(a.docs) / a.study}.md, .csv and .png")
    return 0


def _subject(base: str, data: str) -> str:
    """What a study ran on, for its title: the model file and the data set."""
    return f"{Path(base).name} on {data.split(':')[0]}"


def _lenet_baseline(st: Study, name: str) -> Path:
    """The LeNet baseline of tools/reproduce.py (trained here if that has not run)."""
    made = _rel(ROOT / "runs" / f"{name}.pt")
    if made.exists():
        return made
    epochs, lr = ("30", "0.1") if name == "lenet300" else ("20", "0.05")
    return st.run(["train", "--model", name, "--data", MNIST, "--epochs", epochs, "--lr", lr],
                  st.runs / f"{name}.pt")


if __name__ == "__main__":
    sys.exit(main())
