"""Size and inference speed of a model exported to ONNX, against the same model in PyTorch.

    .venv/bin/python tools/bench_export.py                          # tests/golden/lenet300-mnist-v1.dc
    .venv/bin/python tools/bench_export.py FILE --batch 1,64 --repeat 200

Exports FILE (a .dc or stage file) with deepcomp.export.to_onnx into a temporary folder and
prints: the sizes of the .dc file, of the ONNX file (dense float32 weights) and of that ONNX file
deflated (zlib level 9, what a zip or an HTTP transfer would get); the time to get a runnable
model from each file; and the time of one forward pass per batch size, PyTorch (eval mode,
no_grad) against onnxruntime (CPU provider, all graph optimizations). Both run on --threads
threads (default 1: a phone core, and steadier figures on a shared machine); times are CPU
milliseconds (time.process_time), the best of --repeat passes after --warmup, so that other
processes on a shared machine disturb them less. The outputs are compared too.

Measured on this project's 2 shared CPU cores (load average about 7.6), torch 2.13.0 CPU,
onnxruntime 1.32.0, Python 3.11 (two runs agreed within 0.5 ms on loading, 0.01 ms per pass):

    $ .venv/bin/python tools/bench_export.py
    lenet300-mnist.dc: 21,113 bytes; ONNX opset 17 (dense float32): 1,067,667 bytes, 33,956 deflated; onnxruntime agrees to 1.4e-06
    load: .dc -> PyTorch model 7.5 ms; .onnx -> onnxruntime session 2.5 ms
    batch    1: PyTorch 0.036 ms, onnxruntime 0.016 ms (2.3x), max abs difference 7.2e-07  [1 thread(s)]
    batch   64: PyTorch 0.271 ms, onnxruntime 0.191 ms (1.4x), max abs difference 1.4e-06  [1 thread(s)]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deepcomp.export import to_onnx  # noqa: E402
from deepcomp.loading import load_stage  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                       "lenet300-mnist-v1.dc")


def best_ms(fn, repeat: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return 1000 * best


def once_ms(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return 1000 * (time.process_time() - t), out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("input", nargs="?", default=SHIPPED, help=".dc or stage file "
                   "(default: tests/golden/lenet300-mnist-v1.dc)")
    p.add_argument("--batch", default="1,64", help="batch sizes (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="threads, both runtimes (default: 1)")
    p.add_argument("--repeat", type=int, default=200, help="timed passes (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="untimed passes (default: %(default)s)")
    a = p.parse_args(argv)
    import onnxruntime as ort
    torch.set_num_threads(a.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        r = to_onnx(a.input, path)
        blob = open(path, "rb").read()
        dc_bytes = os.path.getsize(a.input)
        print(f"{os.path.basename(a.input)}: {dc_bytes:,} bytes; ONNX opset {r['opset']} "
              f"(dense float32): {len(blob):,} bytes, {len(zlib.compress(blob, 9)):,} deflated; "
              f"onnxruntime agrees to {r['max_abs_diff']:.1e}")

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = a.threads
        so.log_severity_level = 3
        t_pt, net = once_ms(lambda: load_stage(a.input).build_model().eval())
        t_ort, sess = once_ms(lambda: ort.InferenceSession(
            path, so, providers=["CPUExecutionProvider"]))
        print(f"load: {os.path.splitext(a.input)[1]} -> PyTorch model {t_pt:.1f} ms; "
              f".onnx -> onnxruntime session {t_ort:.1f} ms")

        size = r["input_shape"][1:]
        for n in (int(b) for b in a.batch.split(",")):
            x = torch.randn(n, *size, generator=torch.Generator().manual_seed(n))
            xn = x.numpy()

            def run_pt():
                with torch.no_grad():
                    return net(x)
            diff = float(np.abs(sess.run(None, {"input": xn})[0] - run_pt().numpy()).max())
            pt = best_ms(run_pt, a.repeat, a.warmup)
            ox = best_ms(lambda: sess.run(None, {"input": xn}), a.repeat, a.warmup)
            print(f"batch {n:4d}: PyTorch {pt:.3f} ms, onnxruntime {ox:.3f} ms "
                  f"({pt / ox:.1f}x), max abs difference {diff:.1e}  [{a.threads} thread(s)]")


if __name__ == "__main__":
    main()
