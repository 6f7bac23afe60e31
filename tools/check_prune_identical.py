"""Pruning makes the same files before and after a change: a determinism baseline.

Runs every pruning method of ``deepcomp prune`` (std, global, layer, lamp, sensitivity; per-layer
settings, iterative, gradual, distilled, ``--retrain freeze``, ``--include-bias``), ``sweep``,
``sensitivity``, ``compress`` (as tools/reproduce.py's recipes run it, and its target mode
``--max-drop``), the usage errors of bad settings, and the Python API's ``prune_masks`` on
scikit-learn's digits, with LeNet-300-100 and ResNet-20 (a small convolutional network with
batch norm), a fixed seed and few epochs; then hashes what each wrote: weights, masks,
codebooks, the stage history (wall times, and the header bytes that hold them, left out), CSV rows (the
``seconds`` column left out), and the exit code and message of each error. The ResNets' state
dict names and initial weights are hashed too (pretrained files load by those names).

    PYTHONPATH=. python tools/check_prune_identical.py --write before.json   # before a change
    PYTHONPATH=. python tools/check_prune_identical.py --check before.json   # after: same hashes

Training is seeded and bit-exact on one CPU thread (OMP_NUM_THREADS=1 is set for the commands).
It takes about five minutes on a busy CPU; ``--only NAME`` runs the steps whose name contains
NAME (and the ones they read from).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import torch

TIMINGS = {"wall_time", "seconds", "elapsed"}      # what differs from run to run

L, C = "lenet.pt", "resnet.pt"
Q = ["--no-progress", "--seed", "0"]               # quiet, seeded
R1 = ["--retrain-epochs", "1"]

# (name, arguments of `deepcomp`, files it writes): run in order, in one folder, so the
# commands recorded in the files' histories are the same from run to run.
STEPS = [
    ("train-lenet", ["train", "--model", "lenet300", "--data", "digits", "--epochs", "5",
                     "--lr", "0.05", "-o", L, *Q], [L]),
    ("train-resnet", ["train", "--model", "resnet20", "--data", "digits", "--epochs", "2",
                      "--lr", "0.05", "-o", C, *Q], [C]),
    # prune: every method, one-shot, with a round of retraining
    ("prune-std", ["prune", L, "-o", "std.pt", *R1, *Q], ["std.pt"]),
    ("prune-std-layers", ["prune", L, "-o", "stdl.pt", "--sensitivity", "*=1.0,fc3=0.5,first=0.8",
                          *R1, *Q], ["stdl.pt"]),
    ("prune-std-noretrain", ["prune", L, "-o", "std0.pt", "--retrain-epochs", "0", *Q],
     ["std0.pt"]),
    ("prune-global", ["prune", L, "-o", "glob.pt", "--method", "global", "--sparsity", "0.8",
                      *R1, *Q], ["glob.pt"]),
    ("prune-layer", ["prune", L, "-o", "layer.pt", "--method", "layer", "--sparsity",
                     "fc1=0.9,*=0.5", *R1, *Q], ["layer.pt"]),
    ("prune-layer-one", ["prune", L, "-o", "layer1.pt", "--method", "layer", "--sparsity",
                         "0.7", *R1, *Q], ["layer1.pt"]),
    ("prune-lamp", ["prune", L, "-o", "lamp.pt", "--method", "lamp", "--sparsity", "0.85",
                    "--min-keep", "0.05", *R1, *Q], ["lamp.pt"]),
    ("prune-sensitivity", ["prune", L, "-o", "sens.pt", "--method", "sensitivity",
                           "--sparsity", "0.8", *R1, *Q], ["sens.pt"]),
    ("prune-iterative", ["prune", L, "-o", "iter.pt", "--method", "global", "--sparsity", "0.9",
                         "--iterations", "3", *R1, *Q], ["iter.pt"]),
    ("prune-gradual", ["prune", L, "-o", "grad.pt", "--method", "lamp", "--sparsity", "0.9",
                       "--gradual", "--mask-every", "5", "--retrain-epochs", "2", *Q],
     ["grad.pt"]),
    ("prune-gradual-std", ["prune", L, "-o", "grads.pt", "--method", "std", "--sensitivity",
                           "1.0", "--gradual", "--mask-every", "5", "--ramp-fraction", "0.5",
                           "--retrain-epochs", "2", *Q], ["grads.pt"]),
    ("prune-distill", ["prune", L, "-o", "dist.pt", "--method", "global", "--sparsity", "0.9",
                       "--distill", "--retrain-lr", "0.02", *R1, *Q], ["dist.pt"]),
    ("prune-freeze", ["prune", L, "-o", "frz.pt", "--method", "layer", "--sparsity",
                      "fc1=0.8,*=0", "--retrain", "freeze", *R1, *Q], ["frz.pt"]),
    ("prune-bias", ["prune", L, "-o", "bias.pt", "--method", "global", "--sparsity", "0.8",
                    "--include-bias", *R1, *Q], ["bias.pt"]),
    ("prune-again", ["prune", "glob.pt", "-o", "again.pt", "--method", "std", "--sensitivity",
                     "0.3", *R1, *Q], ["again.pt"]),
    ("prune-resnet-global", ["prune", C, "-o", "rglob.pt", "--method", "global", "--sparsity",
                             "0.7", *R1, *Q], ["rglob.pt"]),
    ("prune-resnet-layer", ["prune", C, "-o", "rlayer.pt", "--method", "layer", "--sparsity",
                            "layer1*=0.5,last=0.3,*=0.7", "--include-bias", *R1, *Q],
     ["rlayer.pt"]),
    ("prune-resnet-std", ["prune", C, "-o", "rstd.pt", "--retrain", "freeze", *R1, *Q],
     ["rstd.pt"]),
    ("prune-resnet-gradual", ["prune", C, "-o", "rgrad.pt", "--method", "lamp", "--sparsity",
                              "0.8", "--gradual", "--mask-every", "4", *R1, *Q], ["rgrad.pt"]),
    # analyses
    ("sweep", ["sweep", L, "--method", "std,global,layer,lamp,sensitivity", "--sparsities",
               "0.5,0.9", "--max-images", "300", "-o", "sweep"], ["sweep.csv"]),
    ("sweep-retrain", ["sweep", L, "--method", "global,lamp", "--sparsities", "0.6:0.9:0.3",
                       "--retrain-epochs", "1", "--retrain", "freeze", "--include-bias",
                       "-o", "sweepr", *Q], ["sweepr.csv"]),
    ("sweep-resnet", ["sweep", C, "--method", "std,layer", "--sparsities", "0.5", "--max-images",
                      "200", "-o", "sweepc"], ["sweepc.csv"]),
    ("sensitivity", ["sensitivity", L, "--sparsities", "0:0.9:0.3", "-o", "scan"], ["scan.csv"]),
    ("sensitivity-resnet", ["sensitivity", C, "--sparsities", "0.5,0.9", "--max-images", "200",
                            "-o", "scanc"], ["scanc.csv"]),
    # compress, as tools/reproduce.py's recipes run it (lenet300: gradual LAMP, distillation,
    # bits from a scan, shared biases; resnet20-30: batch norm folded), and its target mode
    ("compress", ["compress", L, "-o", "c.dc", "--method", "lamp", "--sparsity", "0.9",
                  "--gradual", "--retrain-epochs", "2", "--retrain-lr", "0.05", "--distill",
                  "--bits", "auto:3", "--finetune-epochs", "1", "--dense-bits", "4", *Q],
     ["c.pruned.pt", "c.quantized.pt", "c.dc"]),
    ("compress-resnet", ["compress", C, "-o", "rc.dc", "--method", "layer", "--sparsity",
                         "*=0.6,first=0.3", "--retrain-epochs", "1", "--bits", "*=4,last=6",
                         "--finetune-epochs", "1", "--fold-bn", *Q],
     ["rc.pruned.pt", "rc.quantized.pt", "rc.dc"]),
    ("compress-target", ["compress", L, "-o", "t.dc", "--max-drop", "3", "--budget-epochs", "8",
                         "--retrain-epochs", "1", "--finetune-epochs", "1", *Q],
     ["t.pruned.pt", "t.quantized.pt", "t.dc"]),
    ("compress-target-sens", ["compress", L, "-o", "ts.dc", "--max-drop", "3",
                              "--budget-epochs", "4", "--method", "sensitivity",
                              "--retrain-epochs", "1", "--finetune-epochs", "1", *Q],
     ["ts.pruned.pt", "ts.quantized.pt", "ts.dc"]),
]

# (name, arguments): usage errors and help texts; their exit code, output and the files left
# are hashed.
ERRORS = [
    ("help-prune", ["prune", "--help"]),
    ("help-sweep", ["sweep", "--help"]),
    ("help-compress", ["compress", "--help"]),
    ("err-pattern", ["prune", L, "-o", "e.pt", "--method", "layer", "--sparsity",
                     "*=0.5,conv9=0.3", *Q]),
    ("err-one-value", ["prune", L, "-o", "e.pt", "--method", "global", "--sparsity", "*=0.5", *Q]),
    ("err-range", ["prune", L, "-o", "e.pt", "--method", "global", "--sparsity", "1.5", *Q]),
    ("err-range-layer", ["prune", L, "-o", "e.pt", "--method", "layer", "--sparsity",
                         "fc1=1.5,*=0.5", *Q]),
    ("err-bad-number", ["prune", L, "-o", "e.pt", "--sensitivity", "fc1=x", *Q]),
    ("err-no-default", ["prune", L, "-o", "e.pt", "--method", "layer", "--sparsity", "fc1=0.5",
                        *Q]),
    ("err-method", ["prune", L, "-o", "e.pt", "--method", "magic", *Q]),
    ("err-sweep-method", ["sweep", L, "--method", "global,magic", "-o", "e"]),
    ("err-not-applying", ["prune", L, "-o", "e.pt", "--sparsity", "0.5", *Q]),
    ("err-compress-pattern", ["compress", L, "-o", "e.dc", "--method", "layer", "--sparsity",
                              "*=0.5,conv9=0.3", *Q]),
    ("err-fold-bn", ["compress", L, "-o", "e.dc", "--fold-bn", *Q]),
    ("err-target-method", ["compress", L, "-o", "e.dc", "--max-drop", "1", "--method", "std",
                           *Q]),
]


def _plain(x):
    """``x`` without timings, as JSON-able data; a pipeline key as the settings it holds (in
    either format: [settings, the input's history with wall times, arch] before 2026-12-05,
    the checkpoint's fingerprint since; the input itself is hashed with the stage that read it)."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k in TIMINGS:
                continue
            if k == "pipeline_key":
                key = json.loads(v)
                v = key[0] if isinstance(key, list) else key["config"]
            out[str(k)] = _plain(v)
        return out
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return f"tensor {t.dtype} {tuple(t.shape)} " + hashlib.sha256(
            t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
    if isinstance(x, float):
        return repr(x)
    return x


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str) -> dict:
    """Per part of a written file: its hash (stage files and .dc files as read back)."""
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(f)]
        return {"rows": _digest(rows)}
    from deepcomp.loading import load_stage
    sf = load_stage(path)
    out = {part: _digest(getattr(sf, part))
           for part in ("arch", "data", "state_dict", "masks", "quant")}
    out.update({f"history[{i}] {r.get('stage')}": _digest(_untimed(r))
                for i, r in enumerate(sf.history)})
    return out


def _untimed(rec: dict) -> dict:
    """A stage record without what depends on timings: an encoded record's header bytes (and
    the file's size and ratio with them) hold the history's wall times, whose digits vary."""
    if rec.get("stage") != "encoded" or "sizes" not in rec:
        return rec
    sizes = {k: v for k, v in rec["sizes"].items() if k not in ("bytes", "ratio")}
    sizes["breakdown"] = {k: v for k, v in sizes.get("breakdown", {}).items() if k != "header"}
    return {**rec, "sizes": sizes}


def deepcomp(argv: list[str], cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="100")    # help wraps at COLUMNS
    return subprocess.run([sys.executable, "-m", "deepcomp", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True)


def models_digest() -> dict:
    """Each ResNet's state dict names, shapes and initial weights at seed 0, and its output."""
    from deepcomp.models import create, list_models
    out = {}
    for name in list_models("resnet*"):
        torch.manual_seed(0)
        model = create(name, num_classes=10).eval()
        with torch.no_grad():
            y = model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
        out[name] = _digest({"keys": list(model.state_dict()), "state": model.state_dict(),
                             "out": y})
    return out


def api_digest(work: str) -> dict:
    """The Python API's masks (deepcomp.prune_masks) of every method, and a record made by
    deepcomp.prune with a setting given as a string."""
    import deepcomp
    from deepcomp.data import load_data
    from deepcomp.loading import load_stage
    from deepcomp.prune import PruneConfig, prune
    sf = load_stage(os.path.join(work, L))
    data = load_data("digits")
    out = {}
    for method, kw in [("std", {"sensitivity": 0.9}), ("global", {"sparsity": 0.8}),
                       ("layer", {"sparsity": {"*": 0.6, "last": 0.2}}),
                       ("lamp", {"sparsity": 0.9}), ("sensitivity", {"sparsity": 0.7})]:
        out[f"prune_masks {method}"] = _digest(deepcomp.prune_masks(
            sf.build_model(), method=method, data=data if method == "sensitivity" else None,
            **kw))
    rec = prune(sf, None, PruneConfig(method="layer", sparsity="*=0.5, fc2=0.9")).history[-1]
    out["prune record"] = _digest({k: v for k, v in rec.items() if k != "command"})
    return out


def run_all(work: str, only: str | None) -> dict:
    result = {}
    for name, argv, outputs in STEPS:
        if only and only not in name and not name.startswith("train"):
            continue
        print(f"{name}: deepcomp {' '.join(argv)}", flush=True)
        r = deepcomp(argv, work)
        if r.returncode != 0:
            sys.exit(f"{name} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        for path in outputs:
            for part, h in file_digest(os.path.join(work, path)).items():
                result[f"{name} {path} {part}"] = h
    for name, argv in ERRORS:
        if only and only not in name:
            continue
        before = set(os.listdir(work))
        r = deepcomp(argv, work)
        left = sorted(set(os.listdir(work)) - before)
        result[name] = {"rc": r.returncode, "stderr": r.stderr.strip(), "files": left,
                        "stdout": hashlib.sha256(r.stdout.encode()).hexdigest()[:16]}
        print(f"{name}: {r.returncode} {r.stderr.strip()}", flush=True)
    if not only or "api" in only:
        result.update({f"api {k}": v for k, v in api_digest(work).items()})
    if not only or "models" in only:
        result.update({f"models {k}": v for k, v in models_digest().items()})
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="JSON", help="write the hashes here")
    g.add_argument("--check", metavar="JSON", help="compare with the hashes written before")
    p.add_argument("--only", help="the steps whose name contains this")
    p.add_argument("--keep", metavar="DIR", help="run in DIR and keep the files")
    a = p.parse_args()
    torch.set_num_threads(1)
    work = a.keep or tempfile.mkdtemp(prefix="prune-identical-")
    os.makedirs(work, exist_ok=True)
    result = run_all(work, a.only)
    if a.write:
        with open(a.write, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
        print(f"wrote {len(result)} hashes to {a.write}")
        return 0
    with open(a.check) as f:
        want = json.load(f)
    if a.only:
        want = {k: v for k, v in want.items() if k in result}
    diff = sorted(k for k in set(want) | set(result) if want.get(k) != result.get(k))
    for k in diff:
        print(f"DIFFERS {k}:\n  before {want.get(k)}\n  now    {result.get(k)}")
    print(f"{len(result) - len(diff)} of {len(set(want) | set(result))} hashes the same")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
