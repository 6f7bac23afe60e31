"""Decoding a .dc file: the C reader (c/) against deepcomp's Python reader, in the same run.

    .venv/bin/python tools/bench_c_decode.py FILE [--repeat 200] [--py-repeat 20]

Builds c/dcdump with the system C compiler (-std=c99 -O2) in a temporary folder, then times:
- C: ``dcdump --bench N FILE``: dc_open (CRC, header, side blocks, every check) and
  dc_decode_tensor of every tensor into one float buffer, CPU time of each pass, best and
  median of N; with the reader's peak heap, counted by its allocation hooks;
- Python: ``deepcomp.decode.decode_bytes`` on the same bytes (the state dict, as
  ``deepcomp decode`` and ``deepcomp.load`` read it), one torch thread, CPU time
  (time.process_time) of each pass, best and median;
- peak memory: the maximum resident set of a process that reads the file and decodes it, one
  ``dcdump FILE``, one Python process (its torch import alone measured too).
Both readers' values are compared (dcdump's CRC32 of each tensor's float32 values against the
Python tensors'), so the figures are of the same, correct decoding.

Measured on this project's 2 shared CPU cores, gcc 12.2, torch 2.13, Python 3.11, on
ResNet-20 (LAMP 85%, 4 bits), encoded by this deepcomp (Python's time moves with the machine's
load: 23.5 to 30.9 ms median over runs; C's stays within 0.01 ms):

    $ deepcomp encode r20.quantized.pt -o r20x.dc
    $ .venv/bin/python tools/bench_c_decode.py r20x.dc
    r20x.dc: 47,437 bytes, 116 tensors, the same values from both readers
    C reader (dcdump --bench): 0.820 ms best, 0.845 ms median of 200; its heap 47,069 bytes at
      most, largest tensor 147,456 bytes
    Python reader (decode_bytes, 1 thread): 22.36 ms best, 23.45 ms median of 20
    C is 28x faster (medians)
    peak resident memory: dcdump 1.7 MB; Python 301.1 MB (importing torch and deepcomp alone:
      221.5 MB)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_sources import READER  # noqa: E402  (the reader's .c files, as c/Makefile lists them)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def build(folder: str) -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("bench_c_decode: no C compiler (gcc or cc) on PATH")
    exe = os.path.join(folder, "dcdump")
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    *READER, os.path.join(ROOT, "c", "dcdump.c"), "-o", exe], check=True)
    return exe


def max_rss_mb(argv: list[str], tmp: str) -> float | None:
    """Peak resident memory of one run of ``argv``, by GNU time (a child forked from this large
    Python process would carry its resident size over, so it is not measured from here);
    None without /usr/bin/time."""
    if not os.path.exists("/usr/bin/time"):
        return None
    out = os.path.join(tmp, "rss")
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out, *argv], check=True,
                   stdout=subprocess.DEVNULL)
    with open(out) as f:
        return int(f.read().split()[-1]) / 1024          # kilobytes


def python_ms(buf: bytes, repeat: int) -> list[float]:
    import torch
    from deepcomp.decode import decode_bytes
    torch.set_num_threads(1)
    decode_bytes(buf)                          # warm-up: imports, first allocations
    out = []
    for _ in range(repeat):
        t = time.process_time()
        decode_bytes(buf)
        out.append(1000 * (time.process_time() - t))
    return out


def same_values(exe: str, path: str, buf: bytes) -> int:
    """Tensors whose C checksum matches the Python reader's values (all, or exit)."""
    import torch
    from deepcomp.decode import decode_bytes
    sd = decode_bytes(buf).state_dict
    r = subprocess.run([exe, path], capture_output=True, text=True, check=True)
    for line in r.stdout.splitlines():
        name, crc = line.split(" ")[0], int(line.rsplit(" ", 1)[1], 16)
        v = sd[name].to(torch.float32).contiguous().numpy().astype("<f4")
        if zlib.crc32(v.tobytes()) != crc:
            sys.exit(f"bench_c_decode: {name} decodes differently in C")
    return len(sd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=200, help="C passes (default 200)")
    ap.add_argument("--py-repeat", type=int, default=20, help="Python passes (default 20)")
    args = ap.parse_args(argv)
    with open(args.file, "rb") as f:
        buf = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        n = same_values(exe, args.file, buf)
        r = subprocess.run([exe, "--bench", str(args.repeat), args.file], capture_output=True,
                           text=True, check=True)
        c_line = r.stdout.strip()
        py = python_ms(buf, args.py_repeat)
        rss_c = max_rss_mb([exe, args.file], tmp)
        code = ("import sys; from deepcomp.decode import decode_bytes; "
                "decode_bytes(open(sys.argv[1], 'rb').read())")
        rss_py = max_rss_mb([sys.executable, "-c", code, args.file], tmp)
        rss_torch = max_rss_mb([sys.executable, "-c", "import torch, deepcomp.decode"], tmp)
    name = os.path.basename(args.file)
    print(f"{name}: {len(buf):,} bytes, {n} tensors, the same values from both readers")
    best, median, runs, heap, tensor = map(float, re.search(
        r"([\d.]+) ms best, ([\d.]+) ms median of (\d+); reader's peak heap (\d+) bytes, "
        r"largest tensor (\d+) bytes", c_line).groups())
    print(f"C reader (dcdump --bench): {best:.3f} ms best, {median:.3f} ms median of "
          f"{runs:.0f}; its heap {heap:,.0f} bytes at most, largest tensor {tensor:,.0f} bytes")
    print(f"Python reader (decode_bytes, 1 thread): {min(py):.2f} ms best, "
          f"{statistics.median(py):.2f} ms median of {len(py)}")
    print(f"C is {statistics.median(py) / median:.0f}x faster (medians)")
    if rss_c is not None:
        print(f"peak resident memory: dcdump {rss_c:.1f} MB; Python {rss_py:.1f} MB "
              f"(importing torch and deepcomp alone: {rss_torch:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
