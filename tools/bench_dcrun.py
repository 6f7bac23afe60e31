"""The compressed model run by c/dcrun against onnxruntime on the dense ONNX export and PyTorch
on the decoded model: load time, latency of one input (batch 1), peak resident memory, and
whether dcrun's answers agree with PyTorch's, in one run.

    python tools/bench_dcrun.py models/lenet300-mnist.dc models/lenet5-mnist.dc \\
        models/resnet20-cifar10.dc --runs 200

Each file is encoded again with a graph where it has none (`deepcomp encode --graph`, lossless);
every engine runs on one thread in a process of its own (its peak resident memory is the
process's VmHWM), on the same random inputs of the model's input size; latency is the median over
``--runs`` single-input calls after a warm-up. Agreement: dcrun's argmax against PyTorch's on
``--agree`` inputs and the largest relative difference of their logits. Prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

ENGINE = r"""
import json, sys, time
import numpy as np
engine, model, inputs, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(inputs)
t0 = time.perf_counter()
if engine == "onnxruntime":
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    run = lambda a: sess.run(["logits"], {"input": a})[0]
else:
    import torch
    torch.set_num_threads(1)
    from deepcomp.loading import load
    net = load(model)
    def run(a):
        with torch.no_grad():
            return net(torch.from_numpy(a)).numpy()
load_ms = 1e3 * (time.perf_counter() - t0)
for i in range(10):
    run(x[i % len(x)][None])
times = []
for i in range(runs):
    a = x[i % len(x)][None]
    t = time.perf_counter()
    run(a)
    times.append(time.perf_counter() - t)
out = np.concatenate([run(x[i][None]) for i in range(len(x))])
np.save(inputs + "." + engine + ".npy", out)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
print(json.dumps({"load_ms": load_ms, "us": 1e6 * float(np.median(times)),
                  "rss_kb": int(hwm[0].split()[1]) if hwm else 0}))
"""


def bench_file(path: str, runs: int, agree: int, tmp: Path, dcrun: str) -> dict:
    from deepcomp.cli import main
    from deepcomp.loading import load_stage
    name = Path(path).stem
    dc = tmp / f"{name}.dc"
    if main(["encode", path, "--graph", "-o", str(dc)]) != 0:
        raise SystemExit(f"bench_dcrun: cannot encode {path} with a graph")
    sf = load_stage(str(dc))
    size = sf.data["input_size"]
    x = np.random.default_rng(0).standard_normal((agree, *size)).astype(np.float32)
    inputs = tmp / f"{name}.npy"
    np.save(inputs, x)
    x.astype("<f4").tofile(tmp / f"{name}.f32")
    onnx = tmp / f"{name}.onnx"
    have_onnx = main(["export", str(dc), "-o", str(onnx)]) == 0
    row = {"file": path, "bytes": os.path.getsize(path), "dc_graph_bytes": os.path.getsize(dc)}
    # dcrun: its own timing (--bench), then its answers, in processes of their own
    out = subprocess.run([dcrun, "--bench", str(runs), str(dc), str(tmp / f"{name}.f32"), "1"],
                         capture_output=True, text=True, check=True).stdout
    row["dcrun"] = {"load_ms": float(out.split("load ")[1].split(" ms")[0]),
                    "us": float(out.split("us best, ")[1].split(" us")[0]),
                    "rss_kb": int(out.split("peak resident ")[1].split(" kB")[0]),
                    "weights": int(out.split("weights ")[1].split(" bytes")[0])}
    r = subprocess.run([dcrun, str(dc), str(tmp / f"{name}.f32"), str(agree)],
                       capture_output=True, text=True, check=True)
    c_logits = np.array([[float(v) for v in ln.split()[1:]] for ln in r.stdout.splitlines()])
    for engine in (["onnxruntime"] if have_onnx else []) + ["pytorch"]:
        model = str(onnx if engine == "onnxruntime" else dc)
        out = subprocess.run([sys.executable, "-c", ENGINE, engine, model, str(inputs),
                              str(runs)], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
        row[engine] = json.loads(out.strip().splitlines()[-1])
    ref = np.load(f"{inputs}.pytorch.npy")
    row["agree"] = float((c_logits.argmax(1) == ref.argmax(1)).mean())
    row["max_rel"] = float((np.abs(c_logits - ref) / np.maximum(1, np.abs(ref))).max())
    return row


def _has_avx2() -> bool:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx2" in flags and "fma" in flags


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--agree", type=int, default=1000, help="inputs compared (default 1,000)")
    a = ap.parse_args()
    flags = "-O3 -mavx2 -mfma" if _has_avx2() else "-O3"     # as onnxruntime's AVX2 kernels
    subprocess.run(["make", "-s", "-B", "-C", str(ROOT / "c"), "dcrun", f"DCRUN_FLAGS={flags}"],
                   check=True)
    print(f"dcrun built with {flags}")
    dcrun = str(ROOT / "c" / "dcrun")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_file(p, a.runs, a.agree, Path(tmp), dcrun) for p in a.files]
    print("\n| file | engine | load (ms) | one input (us) | peak RSS (MB) | weight memory |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        for engine in ("dcrun", "onnxruntime", "pytorch"):
            if engine not in r:
                continue
            e = r[engine]
            w = (f"{e['weights']:,} bytes ({e['weights'] / r['bytes']:.2f}x the file)"
                 if engine == "dcrun" else "dense float32")
            print(f"| {Path(r['file']).name} ({r['bytes']:,} bytes) | {engine} | "
                  f"{e['load_ms']:.2f} | {e['us']:.1f} | {e['rss_kb'] / 1024:.1f} | {w} |")
    print()
    for r in rows:
        print(f"{r['file']}: dcrun's argmax equals PyTorch's on {100 * r['agree']:.1f}% of "
              f"{a.agree} random inputs; logits within {r['max_rel']:.1e} (relative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
