"""Reproduce the paper's reference points on the real data in ../shared, one recipe at a time.

    python tools/reproduce.py lenet300        # LeNet-300-100 on MNIST (paper Table 1: 40x at 1.58%)
    python tools/reproduce.py lenet300-max    # the smallest LeNet-300-100 within 1.95% error
    python tools/reproduce.py lenet5          # LeNet-5 on MNIST (paper Table 1: 39x at 0.74%)
    python tools/reproduce.py resnet20        # pretrained ResNet-20 on CIFAR-10, full pipeline
    python tools/reproduce.py resnet20-gradual   # the same, gradual LAMP pruning + distillation
    python tools/reproduce.py resnet20-27   # the same over 27 epochs, sensitivity bits, float16 dense
    python tools/reproduce.py resnet20-30   # 6 fine-tuning epochs, batch norm folded (same pruning)
    python tools/reproduce.py resnet20-28   # 3 bits, 4 fine-tuning epochs
    python tools/reproduce.py resnet20-28d  # the same, biases and batch norm shared
    python tools/reproduce.py resnet20-28m  # the same, rounded to 5 mantissa bits first (shipped)
    python tools/reproduce.py resnet20-35   # LAMP 88% over 40 epochs, 8 fine-tuning epochs
    python tools/reproduce.py resnet20-60   # the same pruning, 20 fine-tuning, 5-bit mantissas
    python tools/reproduce.py study-schemes  # a pruning study of docs/STUDIES.md (tools/studies.py)

Each recipe runs real `deepcomp` commands (printed as they run), times them, and writes
docs/results/RECIPE.md: the commands, the time of each, the machine, and `deepcomp report`'s
tables; docs/RESULTS.md is then rebuilt from every docs/results/*.md. Finished steps are
reused (their outputs exist), and a stage stopped while training resumes from its checkpoint
(`OUTPUT.ckpt`, deepcomp.resume), so an interrupted run goes on where it stopped, to the step;
`--fresh` redoes all.
"""
import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from deepcomp.pipeline import stage_paths
from studies import STUDIES, main as studies_main

ROOT = Path(__file__).resolve().parent.parent
# Paths as the commands are run (from the repository's root) and recorded in every file's
# history: relative, so no file holds the path of the machine that made it.
SHARED = Path(os.path.relpath(os.environ.get("DEEPCOMP_SHARED", ROOT.parent / "shared"), ROOT))
MNIST = f"mnist:{SHARED / 'data' / 'mnist'}"
CIFAR = f"cifar10:{SHARED / 'data' / 'cifar-10-batches-py'}"
RESNET20 = SHARED / "models" / "resnet20-12fca82f.th"

LENET300_TRAIN = ["train", "--model", "lenet300", "--data", MNIST, "--epochs", "30", "--lr", "0.1"]


def _resnet20_long(epochs: int, finetune: int, encoding: list, what: str, bits: float = 4,
                   name: str | None = None, sparsity: float = 0.85, retrain: int = 24) -> dict:
    """Gradual LAMP pruning to ``sparsity`` over ``retrain`` epochs with distillation, ``bits``
    bits on average from a sensitivity scan, ``finetune`` epochs of fine-tuning, a lossy
    encoding (re-evaluated): ``epochs`` in all."""
    return {
        "title": f"ResNet-20 on CIFAR-10 from the pretrained file (91.73% top-1): gradual LAMP "
                 f"pruning to {sparsity:.0%} with distillation over {retrain} epochs, {bits:g} "
                 f"bits per weight on average from a sensitivity scan, {finetune} fine-tuning "
                 f"epochs, {what} (lossy, re-evaluated): {epochs} epochs in all",
        "steps": [
            (f"{name or f'resnet20-{epochs}'}.dc", ["compress", str(RESNET20), "--model", "resnet20",
                                       "--data", CIFAR, "--method", "lamp",
                                       "--sparsity", f"{sparsity:g}", "--gradual",
                                       "--retrain-epochs", str(retrain),
                                       "--retrain-lr", "0.02", "--weight-decay", "1e-4",
                                       "--distill", "--bits", f"auto:{bits:g}",
                                       "--finetune-epochs", str(finetune), *encoding]),
        ],
    }


RECIPES = {
    "lenet300": {
        "title": "LeNet-300-100 on MNIST (paper, Table 1: 40x at 1.58% top-1 error): gradual "
                 "LAMP pruning to 97.5% with distillation over 30 epochs, 3 bits per weight on "
                 "average from a sensitivity scan, biases shared by 4-bit k-means in the file "
                 "(lossy, re-evaluated)",
        "steps": [
            ("lenet300.pt", LENET300_TRAIN),
            ("lenet300.dc", ["compress", "{prev}", "--method", "lamp", "--sparsity", "0.975",
                             "--gradual", "--retrain-epochs", "30", "--retrain-lr", "0.05",
                             "--distill", "--bits", "auto:3", "--finetune-epochs", "4",
                             "--dense-bits", "4"]),
        ],
        "ship": "lenet300-mnist.dc",
    },
    "lenet300-max": {
        "title": "LeNet-300-100 on MNIST, the smallest file within 1.95% top-1 error (soft "
                 "weight sharing's: 64x): gradual LAMP pruning to 98.7% with distillation over "
                 "60 epochs, 2.5 bits per weight on average, biases shared by 4-bit k-means "
                 "(lossy, re-evaluated)",
        "steps": [
            ("lenet300.pt", LENET300_TRAIN),
            ("lenet300-max.dc", ["compress", "{prev}", "--method", "lamp", "--sparsity", "0.987",
                                 "--gradual", "--retrain-epochs", "60", "--retrain-lr", "0.05",
                                 "--distill", "--bits", "auto:2.5", "--finetune-epochs", "6",
                                 "--dense-bits", "4"]),
        ],
        "ship": "lenet300-mnist-max.dc",
    },
    "lenet5": {
        "title": "LeNet-5 on MNIST (paper, Table 1: 39x at 0.74% top-1 error): trained and "
                 "retrained on images shifted by up to 2 pixels, gradual LAMP pruning to 98.5% "
                 "with distillation, 2.5 bits a weight on average from a sensitivity scan, "
                 "biases and dense tensors shared by 4-bit k-means (lossy, re-evaluated)",
        "steps": [
            ("lenet5.pt", ["train", "--model", "lenet5", "--data", MNIST, "--epochs", "30",
                           "--lr", "0.05", "--augment", "shift"]),
            ("lenet5.dc", ["compress", "{prev}", "--method", "lamp", "--sparsity", "0.985",
                           "--gradual", "--retrain-epochs", "30", "--retrain-lr", "0.02",
                           "--distill", "--augment", "shift", "--bits", "auto:2.5",
                           "--finetune-epochs", "4", "--dense-bits", "4"]),
        ],
        "ship": "lenet5-mnist.dc",
    },
    "resnet20-75": {
        "title": "ResNet-20 on CIFAR-10 from the pretrained file (91.73% top-1): 75% pruned, "
                 "5-bit weights, for at most 1 point of top-1 lost",
        "steps": [
            ("resnet20-75.dc", ["compress", str(RESNET20), "--model", "resnet20", "--data", CIFAR,
                                "--method", "global", "--sparsity", "0.75", "--iterations", "2",
                                "--retrain-epochs", "3", "--retrain-lr", "0.01",
                                "--weight-decay", "1e-4", "--bits", "*=5",
                                "--finetune-epochs", "1"]),
        ],
    },
    "resnet20-gradual": {
        "title": "ResNet-20 on CIFAR-10 from the pretrained file (91.73% top-1): gradual LAMP "
                 "pruning to 85% with distillation, 4-bit weights, 11 epochs in all",
        "steps": [
            ("resnet20-gradual.dc", ["compress", str(RESNET20), "--model", "resnet20",
                                     "--data", CIFAR, "--method", "lamp", "--sparsity", "0.85",
                                     "--gradual", "--retrain-epochs", "10", "--retrain-lr", "0.02",
                                     "--weight-decay", "1e-4", "--distill", "--bits", "*=4",
                                     "--finetune-epochs", "1"]),
        ],
    },
    "resnet20-27": _resnet20_long(27, 3, ["--float16"], "float16 dense tensors"),
    "resnet20-30": _resnet20_long(30, 6, ["--fold-bn", "--float16"],
                                  "batch norm folded and dense tensors float16"),
    "resnet20-28": _resnet20_long(28, 4, ["--fold-bn", "--float16"],
                                  "batch norm folded and dense tensors float16", bits=3),
    "resnet20-28d": {**_resnet20_long(28, 4, ["--fold-bn", "--float16", "--dense-bits", "4"],
                                      "batch norm folded, dense tensors float16 and shared by "
                                      "4-bit k-means", bits=3, name="resnet20-28d")},
    "resnet20-28m": {**_resnet20_long(28, 4, ["--fold-bn", "--float16", "--mantissa-bits", "5",
                                              "--dense-bits", "4"],
                                      "batch norm folded, dense tensors float16 with 5-bit "
                                      "mantissas and shared by 4-bit k-means", bits=3,
                                      name="resnet20-28m"),
                     "ship": "resnet20-cifar10.dc"},
    "resnet20-35": _resnet20_long(48, 8, ["--fold-bn", "--float16"],
                                  "batch norm folded and dense tensors float16", bits=3,
                                  name="resnet20-35", sparsity=0.88, retrain=40),
    "resnet20-60": _resnet20_long(60, 20, ["--fold-bn", "--float16", "--mantissa-bits", "5"],
                                  "batch norm folded, dense tensors float16 with 5-bit mantissas",
                                  bits=3, sparsity=0.88, retrain=40),
    "resnet20": {
        "title": "ResNet-20 on CIFAR-10 from the pretrained file (91.73% top-1): the 85% goal",
        "steps": [
            ("resnet20.dc", ["compress", str(RESNET20), "--model", "resnet20", "--data", CIFAR,
                             "--method", "global", "--sparsity", "0.85", "--iterations", "3",
                             "--retrain-epochs", "2", "--retrain-lr", "0.01",
                             "--weight-decay", "1e-4", "--finetune-epochs", "1"]),
        ],
    },
}


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {dev}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def run(name: str, out_dir: Path, fresh: bool) -> None:
    recipe = RECIPES[name]
    out_dir = Path(os.path.relpath(out_dir, ROOT))
    os.chdir(ROOT)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("deepcomp"))
    done, prev, files = [], None, []
    for output, argv in recipe["steps"]:
        out = out_dir / output
        argv = [a.replace("{prev}", str(prev)) for a in argv] + ["-o", str(out), "--no-progress"]
        cmd = ["deepcomp", *argv]
        if out.exists() and not fresh:
            print(f"reusing {out}", flush=True)
            done.append((cmd, None))
        else:
            print("$ " + shlex.join(cmd), flush=True)
            t0 = time.perf_counter()
            subprocess.run([exe, *argv], check=True)
            done.append((cmd, time.perf_counter() - t0))
        if argv[0] == "compress":
            files += list(stage_paths(str(out)).values())     # pruned, quantized, encoded
        else:
            files.append(str(out))
        prev = out
    foreign = name.startswith("resnet20")      # compressed from a checkpoint, not a stage file
    files.insert(0, str(RESNET20) if foreign else str(out_dir / recipe["steps"][0][0]))
    report = subprocess.run([exe, "report", *files, "--layers", "--format", "markdown",
                             "--plot", str(ROOT / "docs" / "plots" / name)]
                            + (["--model", "resnet20"] if foreign else []),
                            check=True, capture_output=True, text=True).stdout
    lines = [f"## {recipe['title']}", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, by "
             f"`python tools/reproduce.py {name}`:", ""]
    for cmd, secs in done:
        when = f"{secs / 60:.1f} min" if secs is not None else "reused from an earlier run"
        lines.append(f"- `{shlex.join(cmd).replace(str(SHARED), '../shared').replace(str(out_dir), 'runs')}` ({when})")
    lines += ["", report.replace(str(SHARED), "../shared").replace(str(out_dir), "runs"), "",
              f"Plots: docs/plots/{name}/", ""]
    if recipe.get("ship"):          # the file this recipe makes is shipped in models/
        import shutil
        shutil.copyfile(files[-1], ROOT / "models" / recipe["ship"])
        lines.append(f"Shipped as models/{recipe['ship']} ({os.path.getsize(files[-1]):,} "
                     "bytes).")
        lines.append("")
    dest = ROOT / "docs" / "results" / f"{name}.md"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines))
    print(f"wrote {dest}")


def rebuild_results() -> None:
    parts = sorted((ROOT / "docs" / "results").glob("*.md"))
    head = ("# Results\n\nEvery table below was written by `tools/reproduce.py` from a real run on "
            "the data in `../shared` (see each section for the command, the time and the "
            "machine). Sizes: the baseline counts every floating-point tensor at 4 bytes; pruned "
            "and quantized rows count as the paper does (docs/STAGEFILE.md); the encoded row is "
            "the `.dc` file, every byte.\n\n")
    body = "\n".join(p.read_text() for p in parts)
    (ROOT / "docs" / "RESULTS.md").write_text(head + body)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="+", choices=sorted(RECIPES) + [f"study-{s}" for s in STUDIES])
    p.add_argument("--runs", default=str(ROOT / "runs"), help="folder for the model files")
    p.add_argument("--fresh", action="store_true", help="redo every step")
    a = p.parse_args()
    try:
        for name in a.recipes:
            if name.startswith("study-"):        # the studies run in-process, resumable alike
                studies_main([name.removeprefix("study-")])
                continue
            run(name, Path(a.runs), a.fresh)
    except subprocess.CalledProcessError as e:   # the step printed its own one-line reason
        cmd = shlex.join(["deepcomp", *e.cmd[1:2]])
        sys.exit(f"reproduce: `{cmd}` exited with {e.returncode}; run the same command to resume")
    rebuild_results()


if __name__ == "__main__":
    main()
