"""Deploy a .dc file: to ONNX for any runtime, and to C, reading it on the device itself.

    python examples/deploy.py MODEL.dc [OUT_DIR]      # default: models/lenet300-mnist.dc

1. ONNX (`deepcomp export`, needs `pip install 'deepcomp-pytorch[onnx]'`): the decoded model with
   dense float32 weights, checked against PyTorch in onnxruntime.
2. C: `c/dc.h` and the reader's sources in `c/` (`dc.c`, `crc.c`, `inflate.c`, `json.c`,
   `huffman.c`: c/Makefile's READER) read the file as it is, with no dependency; this example
   builds `dcdump` with the system C compiler and lists the tensors it decodes.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from deepcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from c_sources import READER  # noqa: E402  (the reader's .c files, as c/Makefile lists them)

src = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "models" / "lenet300-mnist.dc")
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else ".")

# 1. ONNX
try:
    import onnxruntime  # noqa: F401
    code = main(["export", src, "-o", str(out_dir / "model.onnx")])
    assert code == 0, "export failed"
except ImportError:
    print("onnxruntime is not installed: skipping the ONNX export "
          "(pip install 'deepcomp-pytorch[onnx]')")

# 2. C: build the reader's command and decode every tensor of the file
cc = shutil.which("cc") or shutil.which("gcc")
if cc is None:
    sys.exit("no C compiler on PATH: the C reader is C99 and needs one")
exe = out_dir / "dcdump"
subprocess.run([cc, "-std=c99", "-O2", *READER, str(ROOT / "c" / "dcdump.c"), "-o", str(exe)],
               check=True)
r = subprocess.run([str(exe), src], capture_output=True, text=True)
if "DC_E_UNSUPPORTED_VERSION" in r.stderr:     # a format 1 file: written again as format 2
    src = str(out_dir / "model-v2.dc")
    assert main(["encode", sys.argv[1] if len(sys.argv) > 1 else
                 str(ROOT / "models" / "lenet300-mnist.dc"), "-o", src]) == 0
    r = subprocess.run([str(exe), src], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(r.stderr.strip())
lines = r.stdout.splitlines()
print(f"C reader: {len(lines)} tensors decoded from {os.path.basename(src)}; the first:")
print("  " + lines[0])
# Expected output (2026-12-04), for the shipped LeNet-300-100:
#   models/lenet300-mnist.dc -> model.onnx: ONNX opset 17, input Nx1x28x28, dense float32 weights, ...
#   C reader: 6 tensors decoded from lenet300-mnist.dc; the first:
#     fc1.bias float32 [300] dense ...
