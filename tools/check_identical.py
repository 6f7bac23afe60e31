"""Hashes of everything the .dc code reads and writes, to show a refactor changed no byte.

    python tools/check_identical.py --write /tmp/dc-baseline.json   # before the change
    python tools/check_identical.py --check /tmp/dc-baseline.json   # after: exit 1 on a change

Cases (each a SHA-256):
- read: every ``tests/golden/*.dc`` and ``models/*.dc`` read back (``load_stage``): arch, data,
  every tensor (name, dtype, shape, bytes) in order, masks, quantizer entries and the history
  with the reader's completed sizes; and ``deepcomp report --layers`` of each.
- write: stage files (the tiny stage of docs/FORMAT.md, the shipped baseline and .dc files read
  back, a ResNet-20 with batch norm) encoded with varied options (index bits, float16, folded
  batch norm, shared dense, graph, strip, code length), the file's bytes and the record; and
  ``deepcomp encode``'s printed table.
- compress: a short ``compress`` run on the bundled digits (lossy options on): the file, the
  stage files' tensors and records, and the log.

Wall times are made 0 (``time.perf_counter`` returns 0.0) and the recorded command line fixed,
so a run writes the same bytes every time. Uses only the entry points a refactor keeps
(``deepcomp.loading``, ``deepcomp.encode``, ``deepcomp.pipeline``, ``deepcomp.cli``).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
time.perf_counter = lambda: 0.0          # every wall time 0: the same bytes on every run

import torch  # noqa: E402

from deepcomp.cli import main as cli  # noqa: E402
from deepcomp.encode import EncodeConfig, encode_stage  # noqa: E402
from deepcomp.loading import load_stage  # noqa: E402
from deepcomp.models import _registry, create  # noqa: E402
from deepcomp.stagefile import StageFile, recording_command, save_stage  # noqa: E402


def _test_module(name: str):
    """A module of tests/: the tiny network and stage the golden files are made of live in
    tests/test_dcfile.py, one copy for the tests and this check."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_dcfile = _test_module("test_dcfile")
tiny_stage = _dcfile.tiny_stage
_registry.register(_registry.ModelInfo("dctiny", _dcfile.Tiny, (1, 2, 2), 2, 35, "test"))


def resnet_stage() -> StageFile:
    """ResNet-20 (batch norm), seeded: convolutions pruned at 70%, every other one quantized
    to a float16 codebook of 16 values, batch norm statistics spread out."""
    torch.manual_seed(0)
    net = create("resnet20", num_classes=10)
    g = torch.Generator().manual_seed(1)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for k, v in sd.items():
        if k.endswith("running_mean") or k.endswith("bias"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
    masks, quant = {}, {}
    for i, (k, v) in enumerate(sorted((k, v) for k, v in sd.items() if v.dim() == 4)):
        mask = v.abs() > v.abs().flatten().quantile(0.7)
        if i % 2:
            cb = torch.linspace(-0.5, 0.5, 16).half().float()
            idx = (v.unsqueeze(-1) - cb).abs().argmin(-1).to(torch.int16)
            idx = torch.where(mask, idx, torch.tensor(-1, dtype=torch.int16))
            sd[k] = torch.where(mask, cb[idx.long().clamp(min=0)], torch.tensor(0.0))
            quant[k] = {"codebook": cb, "indices": idx, "bits": 4, "init": "linear"}
        else:
            sd[k] = v * mask
        masks[k] = mask
    data = {"spec": "cifar10:none", "mean": [0.5] * 3, "std": [0.25] * 3,
            "input_size": [3, 32, 32], "classes": [str(i) for i in range(10)], "augment": "none"}
    return StageFile({"name": "resnet20", "kwargs": {"num_classes": 10}}, data, sd, masks, quant,
                     [{"stage": "quantized", "metrics": {"top1": 90.0}, "wall_time": 1.0}])


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    return f"{t.dtype} {list(t.shape)} ".encode() + raw.numpy().tobytes()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return hashlib.sha256(_tensor_bytes(x)).hexdigest()
    return x if x is None or isinstance(x, (str, int, float, bool)) else repr(x)


def stage_hash(sf: StageFile, wall_times: bool = True) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([sf.arch, sf.data], sort_keys=True).encode())
    for part in (sf.state_dict, sf.masks):
        for k, v in part.items():
            h.update(k.encode() + b"\0" + _tensor_bytes(v))
    h.update(json.dumps(_jsonable(sf.quant), sort_keys=True).encode())
    history = _jsonable(sf.history) if wall_times else _no_wall(_jsonable(sf.history))
    h.update(json.dumps(history, sort_keys=True).encode())
    return h.hexdigest()


def _no_wall(x):
    """``x`` without wall times; a pipeline key as the settings it holds (its format changed
    on 2026-12-05: [settings, the input's history, arch], then the checkpoint's fingerprint)."""
    if isinstance(x, dict):
        return {k: _no_wall(_key_settings(v) if k == "pipeline_key" else v)
                for k, v in x.items() if k not in ("wall_time", "seconds")}
    if isinstance(x, list):
        return [_no_wall(v) for v in x]
    return x


def _key_settings(key: str):
    key = json.loads(key)
    return key[0] if isinstance(key, list) else key["config"]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def run_cli(argv) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli(argv)
    return f"rc={rc}\n{out.getvalue()}\n--stderr--\n{err.getvalue()}"


def read_cases(res: dict) -> None:
    files = sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "*.dc"))
                   + glob.glob(os.path.join(ROOT, "models", "*.dc")))
    for path in files:
        rel = os.path.relpath(path, ROOT)
        res[f"read {rel}"] = stage_hash(load_stage(path))
        res[f"report {rel}"] = sha(run_cli(["report", path, "--layers"]).encode())


ENCODINGS = {
    "default": EncodeConfig(),
    "index5": EncodeConfig(index_bits="5"),
    "index-mixed": EncodeConfig(index_bits="*=auto,fc1.weight=8"),
    "float16": EncodeConfig(float16=True),
    "dense4": EncodeConfig(dense_bits=4),
    "dense2-float16": EncodeConfig(dense_bits=2, float16=True),
    "graph": EncodeConfig(graph=True),
    "strip": EncodeConfig(strip=True),
    "maxlen6": EncodeConfig(max_code_length=6),
}


def write_cases(res: dict, tmp: str) -> None:
    lenet = os.path.join(ROOT, "models", "lenet300-mnist.dc")
    stages = {"tiny": (tiny_stage, ["default", "index5", "float16", "dense2-float16", "strip",
                                    "maxlen6"]),
              "lenet-baseline": (lambda: load_stage(os.path.join(ROOT, "models",
                                                                 "lenet300-mnist.pt")),
                                 ["default", "float16", "dense4"]),
              "lenet-dc": (lambda: load_stage(lenet), list(ENCODINGS)),
              "lenet-max-dc": (lambda: load_stage(os.path.join(ROOT, "models",
                                                               "lenet300-mnist-max.dc")),
                               ["default", "dense4"]),
              "lenet-v1": (lambda: load_stage(os.path.join(ROOT, "tests", "golden",
                                                           "lenet300-mnist-v1.dc")),
                           ["default", "index5"]),
              "resnet20": (resnet_stage, ["default", "float16", "dense4", "graph"])}
    for name, (make, configs) in stages.items():
        for c in configs:
            buf, rec = encode_stage(make(), ENCODINGS[c])
            res[f"encode {name} {c}"] = sha(buf)
            res[f"record {name} {c}"] = sha(json.dumps(_jsonable(rec), sort_keys=True).encode())
    sf = resnet_stage()
    for c in ("fold", "fold-float16-dense3"):
        cfg = EncodeConfig(fold_batchnorm=True, float16=c != "fold", dense_bits=3 * (c != "fold"))
        buf, rec = encode_stage(sf, cfg)
        res[f"encode resnet20 {c}"] = sha(buf)
        res[f"record resnet20 {c}"] = sha(json.dumps(_jsonable(rec), sort_keys=True).encode())
    # the command: its printed byte breakdown and per-tensor table, and the file
    # input and output by relative names: the recorded command line and the printed text are the
    # same each run, wherever the checkout is (the baseline runs in another worktree)
    out, src = "cli.dc", "lenet300-mnist.dc"
    shutil.copyfile(lenet, src)
    for args in (["--index-bits", "*=6"], ["--graph"], ["--json"]):
        text = run_cli(["encode", src, "-o", out, "--force", *args]).replace(tmp, "TMP")
        res[f"cli encode {' '.join(args)}"] = sha(text.encode())
        with open(out, "rb") as f:
            res[f"cli encode {' '.join(args)} file"] = sha(f.read())
    tiny = "tiny.pt"
    save_stage(tiny, tiny_stage())
    text = run_cli(["encode", tiny, "-o", out, "--force"]).replace(tmp, "TMP")
    res["cli encode tiny"] = sha(text.encode())


def compress_case(res: dict, tmp: str) -> None:
    from deepcomp.data import load_data
    from deepcomp.pipeline import CompressConfig, compress
    from deepcomp.prune import PruneConfig
    from deepcomp.quantize import QuantizeConfig
    from deepcomp.train import TrainConfig, fit
    from deepcomp.stagefile import arch_for
    digits = load_data("digits")
    torch.manual_seed(0)
    arch = arch_for("lenet300", digits.meta())
    net = create(arch["name"], **arch["kwargs"])
    fit(net, digits, TrainConfig(epochs=2, lr=0.05, progress=False))
    sf = StageFile.from_model(net, arch, digits.meta())
    cfg = CompressConfig(
        prune=PruneConfig(method="global", sparsity="0.8", retrain_epochs=1,
                          train=TrainConfig(progress=False)),
        quantize=QuantizeConfig(finetune=TrainConfig(epochs=1, lr=1e-3, progress=False)),
        encode=EncodeConfig(dense_bits=4, float16=True))
    log = []
    out = "c.dc"
    paths = compress(sf, digits, out, cfg, log=log.append)
    for p in paths[:-1]:
        res[f"compress {os.path.basename(p)}"] = stage_hash(load_stage(p), wall_times=False)
    with open(out, "rb") as f:
        res["compress c.dc"] = sha(f.read())
    res["compress c.dc read"] = stage_hash(load_stage(out))
    res["compress log"] = sha("\n".join(log).replace(tmp, "TMP").encode())
    res["compress log text"] = "\n".join(log).replace(tmp, "TMP")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="JSON", help="write the hashes here")
    g.add_argument("--check", metavar="JSON", help="compare with the hashes written here")
    ap.add_argument("--skip-compress", action="store_true", help="leave out the compress run")
    a = ap.parse_args()
    path = os.path.abspath(a.write or a.check)
    res: dict = {}
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)     # outputs by relative names: recorded command lines are the same each run
        try:
            with recording_command("deepcomp check-identical"):   # a command line fixed
                read_cases(res)
                write_cases(res, tmp)
                if not a.skip_compress:
                    compress_case(res, tmp)
        finally:
            os.chdir(here)
    if a.write:
        with open(path, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
        print(f"{len(res)} hashes written to {a.write}")
        return 0
    with open(path) as f:
        want = json.load(f)
    bad = [k for k in sorted(set(want) | set(res)) if k in res and want.get(k) != res[k]
           and not (a.skip_compress and k.startswith("compress"))]
    for k in bad:
        print(f"CHANGED: {k}")
        if k == "compress log text":
            print(f"--- was:\n{want.get(k)}\n--- now:\n{res.get(k)}")
    print(f"{len(res) - len(bad)} of {len(res)} hashes identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
