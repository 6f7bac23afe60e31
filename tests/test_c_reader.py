"""The C reader (c/dc.h and the sources c/Makefile lists as READER, c/dcdump.c;
docs/FORMAT.md): built here with the system C compiler, it decodes the golden files and files
the pipeline makes exactly as deepcomp's reader does, and, built with AddressSanitizer and
UBSan, it reads thousands of damaged and forged files (tests/test_dcfile_fuzz.py's mutations)
with no finding, agreeing with deepcomp's reader on which are valid. Skipped, saying why, where
there is no C compiler or no sanitizer runtime."""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from test_dcfile import (GOLDEN, GOLDEN_IMPLICIT, GOLDEN_V1, dctiny,  # noqa: F401
                         forge_v2, split_v2, synthetic_stage)
from test_dcfile_fuzz import _leaves, base, header_edit, header_json, mutate_bytes

from deepcomp import errors
from deepcomp.loading import decode_bytes, read_dc
from deepcomp.encode import EncodeConfig, encode_stage
from deepcomp.stagefile import StageFile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.append(os.path.join(ROOT, "tools"))
from c_sources import READER  # noqa: E402  (the reader's .c files, as c/Makefile lists them)

SOURCES = READER + [os.path.join(ROOT, "c", "dcdump.c")]
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZE = ["-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic",
            "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
FINDINGS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "UndefinedBehavior")
# C status -> the error deepcomp's Python reader raises for the same file
PYTHON_ERROR = {"DC_E_BAD_MAGIC": "BadMagicError", "DC_E_TRUNCATED": "TruncatedFileError",
                "DC_E_UNSUPPORTED_VERSION": "UnsupportedVersionError",
                "DC_E_HEADER_TOO_LARGE": "HeaderTooLargeError",
                "DC_E_INVALID_OFFSET": "InvalidOffsetError", "DC_E_CHECKSUM": "ChecksumError",
                "DC_E_HEADER": "HeaderError", "DC_E_COUNT_MISMATCH": "CountMismatchError",
                "DC_E_BAD_CODE": "FormatError"}


def compiler():
    return shutil.which("gcc") or shutil.which("cc")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """``build(flags, name, sources)``: the path of the compiled program."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc or cc) on PATH to build the C reader")
    out = tmp_path_factory.mktemp("c")

    def make(flags, name, sources):
        exe = str(out / name)
        r = subprocess.run([cc, *flags, "-I", os.path.join(ROOT, "c"), *sources, "-o", exe],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{cc} {' '.join(flags)} failed:\n{r.stderr}"
        return exe
    return make


@pytest.fixture(scope="module")
def dcdump(build):
    return build(STRICT, "dcdump", SOURCES)


@pytest.fixture(scope="module")
def sanitize(build, tmp_path_factory):
    """The sanitizer flags, if this compiler has the runtimes (a program built with them runs)."""
    cc = compiler()
    hello = tmp_path_factory.mktemp("probe") / "hello.c"
    hello.write_text("#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n")
    exe = str(hello)[:-2]
    r = subprocess.run([cc, *SANITIZE, str(hello), "-o", exe], capture_output=True, text=True)
    if r.returncode != 0 or subprocess.run([exe], capture_output=True).returncode != 0:
        pytest.skip(f"{cc} cannot build and run with -fsanitize=address,undefined "
                    f"(no sanitizer runtime): {r.stderr.strip()[:200]}")
    return SANITIZE


@pytest.fixture(scope="module")
def dcdump_asan(build, sanitize):
    return build(sanitize, "dcdump-asan", SOURCES)


def run(exe, *args):
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1"}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env)


def c_decode(dcdump, path, tmp_path) -> list[tuple[str, str, list, str, np.ndarray]]:
    """(name, dtype, shape, kind, float32 values) of every tensor, by ``dcdump --raw``."""
    raw = tmp_path / "values.raw"
    r = run(dcdump, "--raw", raw, path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    values = np.fromfile(raw, "<f4")
    out, at = [], 0
    for line in r.stdout.splitlines():
        name, dtype, shape, kind, crc = line.rsplit(" ", 4)
        shape = json.loads(shape)
        n = int(np.prod(shape))
        v = values[at:at + n]
        at += n
        assert int(crc, 16) == zlib.crc32(v.tobytes()), name
        out.append((name, dtype, shape, kind, v))
    assert at == len(values)
    return out


def same_bits(c: np.ndarray, py: torch.Tensor) -> bool:
    """Bit for bit; NaN where NaN (PyTorch's own conversions keep a NaN's payload or not
    depending on the tensor's length, so payloads are not compared)."""
    p = py.detach().to(torch.float32).contiguous().numpy().reshape(-1)
    nan = np.isnan(p)
    return bool(np.array_equal(nan, np.isnan(c))
                and np.array_equal(p[~nan].view("<u4"), c[~nan].view("<u4")))


def assert_decodes_like_python(dcdump, buf: bytes, tmp_path):
    """The C reader and deepcomp's reader give the same tensors (dcdump --raw)."""
    path = tmp_path / "file.dc"
    path.write_bytes(buf)
    sd = decode_bytes(buf).state_dict
    got = c_decode(dcdump, path, tmp_path)
    assert [g[0] for g in got] == sorted(sd)
    for name, dtype, shape, kind, values in got:
        t = sd[name]
        assert dtype == str(t.dtype).removeprefix("torch.") and shape == list(t.shape), name
        assert same_bits(values, t), name
    return {g[0]: g[3] for g in got}


# --- bit-exact decoding -------------------------------------------------------------------

def test_golden_files(dcdump, tmp_path):
    """The explicit golden file decodes exactly; the implied-layout one and the version 1 one
    are refused with their named errors (docs/FORMAT.md; the C reader reads version 2 files
    that list their tensors)."""
    with open(GOLDEN, "rb") as f:
        kinds = assert_decodes_like_python(dcdump, f.read(), tmp_path)
    assert kinds == {"fc1.bias": "dense", "fc1.weight": "quantized", "fc2.bias": "dense",
                     "fc2.weight": "sparse", "fc3.bias": "dense",
                     "fc3.weight": "quantized_dense"}
    for path, status, words in ((GOLDEN_IMPLICIT, "DC_E_NO_LAYOUT", "does not store tensor "
                                 "shapes"),
                                (GOLDEN_V1, "DC_E_UNSUPPORTED_VERSION", "format version 1.0")):
        r = run(dcdump, path)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"dcdump: error: {path}: ")
        assert words in r.stderr and f"({status})" in r.stderr
    r = run(dcdump, tmp_path / "missing.dc")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot read" in r.stderr
    assert run(dcdump).returncode == 2 and run(dcdump, "--raw", "x").returncode == 2


def test_named_errors(dcdump, tmp_path):
    """test_dcfile.py's malformations, each with its status, one line on stderr."""
    with open(GOLDEN, "rb") as f:
        buf = f.read()
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    bomb = bomb.compress(b" " * (17 << 20)) + bomb.flush()      # inflates past 16 MiB
    body = b"DEEPCOMP" + struct.pack("<HHIQ", 2, 0, len(bomb), 0) + bomb
    flip = bytearray(buf)
    flip[40] ^= 0x40
    cases = [(b"PK\x03\x04" + buf[4:], "DC_E_BAD_MAGIC"), (b"", "DC_E_BAD_MAGIC"),
             (b"DEEP", "DC_E_TRUNCATED"), (buf[:20], "DC_E_TRUNCATED"),
             (buf[:8] + struct.pack("<H", 3) + buf[10:], "DC_E_UNSUPPORTED_VERSION"),
             (buf[:-10], "DC_E_TRUNCATED"), (buf + b"\0", "DC_E_INVALID_OFFSET"),
             (bytes(flip), "DC_E_CHECKSUM"),
             (buf[:12] + struct.pack("<I", 1 << 30) + buf[16:], "DC_E_HEADER_TOO_LARGE"),
             (body + struct.pack("<I", zlib.crc32(body)), "DC_E_HEADER_TOO_LARGE"),
             (forge_v2(buf, lambda h, d: h["blocks"].update(dense=16)), "DC_E_INVALID_OFFSET"),
             (forge_v2(buf, lambda h, d: h["state"].reverse()), "DC_E_HEADER"),
             (forge_v2(buf, lambda h, d: h["tensors"][1].__setitem__(7, 4)),
              "DC_E_COUNT_MISMATCH")]
    for i, (bad, status) in enumerate(cases):
        path = tmp_path / f"{i}.dc"
        path.write_bytes(bad)
        r = run(dcdump, path)
        assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.endswith(f"({status})\n"), (i, r.stderr)


@pytest.mark.parametrize("path", ["tests/golden/lenet300-mnist-v1.dc", "models/lenet300-mnist.dc",
                                  "models/lenet300-mnist-max.dc", "models/lenet5-mnist.dc",
                                  "models/resnet20-cifar10.dc"])
def test_shipped_models(dcdump, tmp_path, path):
    """The shipped files read as they are, and the previous LeNet-300-100 (trained, pruned,
    quantized with float32 codebooks; version 1) written again as version 2."""
    buf = open(os.path.join(ROOT, path), "rb").read()
    if buf[8] == 1:
        buf = encode_stage(read_dc(os.path.join(ROOT, path)))[0]
    assert_decodes_like_python(dcdump, buf, tmp_path)


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "resnet20"])
def test_pipeline_files_of_registered_models(dcdump, tmp_path, name):
    """synthetic_stage: quantized, quantized-dense, sparse and dense tensors (BatchNorm's
    counters as int8), at the paper's index bits (8 conv, 5 fc)."""
    kinds = assert_decodes_like_python(dcdump, encode_stage(synthetic_stage(name))[0], tmp_path)
    assert set(kinds.values()) == {"dense", "sparse", "quantized", "quantized_dense"}


@pytest.mark.parametrize("config", [
    EncodeConfig(index_bits="*=1"), EncodeConfig(index_bits="*=3"),
    EncodeConfig(index_bits="*=12"), EncodeConfig(float16=True), EncodeConfig(dense_bits=3),
    EncodeConfig(max_code_length=15, strip=True)],
    ids=["1-bit", "3-bit", "12-bit", "float16", "shared-dense", "15-bit-codes"])
def test_pipeline_file_settings(dcdump, tmp_path, config):
    """Fillers (1-bit indices), wide indices, the lossy float16 and shared (k-means) dense
    tensors, long codes."""
    assert_decodes_like_python(dcdump, encode_stage(synthetic_stage("lenet5"), config)[0],
                               tmp_path)


def edge_stage() -> StageFile:
    """Every layout's edge: a layer pruned to nothing (k = 0), kept weights of no cluster
    (symbol k) and of value 0, row and column order, a float32 codebook, 4,096 clusters with
    15-bit codes (the decoder's slow path), a quantized layer of no cluster at all, and dense
    tensors of every dtype with infinities, NaNs, -0, subnormals, huge and tiny integers."""
    g = torch.Generator().manual_seed(3)
    sd, masks, quant = {}, {}, {}

    def quantized(name, idx, cb, mask=None):
        table = torch.cat([cb, torch.zeros(1)])               # index -1: no cluster, 0.0
        w = table[torch.where(idx >= 0, idx, len(cb))]
        sd[name] = w
        quant[name] = {"codebook": cb, "indices": idx.to(torch.int16), "bits": 12,
                       "init": "linear"}
        if mask is not None:
            masks[name] = mask
    quantized("a.empty", torch.full((4, 6), -1), torch.zeros(0), torch.zeros(4, 6, dtype=bool))
    idx = torch.full((5, 40), -1)
    idx[:, 2] = torch.tensor([0, -1, 1, 2, -1])                 # kept, with no cluster
    quantized("b.column", idx, torch.tensor([0.1, -0.7, 3.3]),  # float32 codebook, csc
              torch.zeros(5, 40, dtype=bool).index_fill_(1, torch.tensor([2]), True))
    skew = torch.distributions.Geometric(torch.tensor(0.002)).sample((40000,)).long() % 4096
    idx = torch.cat([torch.arange(4096), skew]).reshape(44096 // 208, 208)
    cb = torch.linspace(-4, 4, 4096).half().float().unique()
    quantized("c.wide", idx.clamp(max=len(cb) - 1), cb)         # quantized, not pruned
    quantized("d.nocluster", torch.full((3, 3), -1), torch.tensor([0.5]))
    w = torch.zeros(6, 5, 2)
    w[0, 0, 0], w[5, 4, 1], w[2, 2, 0] = 1e-40, -0.0, 7.5     # kept zeros and a subnormal
    sd["e.sparse"], masks["e.sparse"] = w, torch.zeros(6, 5, 2, dtype=bool)
    masks["e.sparse"][0, 0, 0] = masks["e.sparse"][5, 4, 1] = masks["e.sparse"][2, 2, 0] = True
    masks["e.sparse"][3, 1, 1] = True
    bits = np.array([0x7fa00001, 0xffc00123, 0x7f800000, 0xff800000, 0x80000000, 1, 0x00800000,
                     0x7f7fffff], np.uint32)
    sd.update({
        "f.f32": torch.cat([torch.from_numpy(bits.view(np.float32)), torch.randn(5, generator=g)]),
        "g.f32half": torch.tensor([0.5, -0.0, 65504.0, 6e-8, float("inf"), float("nan")]),
        "h.f64": torch.tensor([1 / 3, -1e300, 1e-310, 2.5, float("nan")], dtype=torch.float64),
        "i.f16": torch.tensor([1.0, -3.5, 6e-8, float("-inf")], dtype=torch.float16),
        "j.bf16": torch.tensor([1.0, -3.5, 1e30, 1e-30, float("nan")], dtype=torch.bfloat16),
        "k.i64": torch.tensor([2 ** 53 + 1, -2 ** 63, 2 ** 63 - 1, 7, -1]),
        "l.i64small": torch.tensor([[1, -2], [300, 40000]]),
        "m.i32": torch.tensor([-2 ** 31, 2 ** 31 - 1, 16777217], dtype=torch.int32),
        "n.i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "o.i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "p.u8": torch.tensor([0, 255, 128], dtype=torch.uint8),
        "q.bool": torch.tensor([[True, False, True]]),
        "r.scalar": torch.tensor(3.25),
        "s.empty": torch.zeros(0, 5),
        "t.unicode é\u2603\U0001f600": torch.tensor([1.0])})
    return StageFile({"name": "no_such_package:Edges", "kwargs": {}}, {"spec": "synthetic"},
                     sd, masks, quant, [])


@pytest.mark.parametrize("float16", [False, True], ids=["exact", "float16"])
def test_edge_cases(dcdump, tmp_path, float16):
    buf, rec = encode_stage(edge_stage(), EncodeConfig(max_code_length=15, float16=float16))
    h = split_v2(buf)[0]
    entries = dict(zip([s[0] for s in h["state"]], h["tensors"]))
    assert entries["b.column"][4] == "csc" and entries["b.column"][3] == "float32"
    assert entries["a.empty"][2] == 0 and entries["c.wide"][0] == "quantized_dense"
    tables = zlib.decompress(split_v2(buf)[1][:h["blocks"]["code_tables"]], -15)
    assert max(tables) > 10                           # codes past the decoder's 10-bit table
    kinds = assert_decodes_like_python(dcdump, buf, tmp_path)
    assert kinds["e.sparse"] == "sparse" and kinds["j.bf16"] == "dense"


def test_api_allocation_hooks_and_failures(build, sanitize):
    """tests/c_api.c: argument errors, dc_close twice, and every allocation of opening and
    decoding failing in turn: DC_E_NO_MEMORY, nothing left allocated (under the sanitizers)."""
    exe = build(sanitize, "c_api", READER + [os.path.join(ROOT, "tests", "c_api.c")])
    buf = encode_stage(synthetic_stage("lenet5"))[0]
    path = os.path.join(os.path.dirname(exe), "lenet5.dc")
    with open(path, "wb") as f:
        f.write(buf)
    r = run(exe, path)
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr
    assert int(r.stdout.split()[1]) > 20 and not any(w in r.stderr for w in FINDINGS)


def test_reader_exports_only_prefixed_names(tmp_path):
    """A program that embeds the reader links its objects with its own code: every name they
    export is dc_ (the API, declared in c/dc.h) or dci_ (internal, shared between the reader's
    files), never a bare name such as fail or le that the program may have too."""
    cc, nm = compiler(), shutil.which("nm")
    if cc is None or nm is None:
        pytest.skip("no C compiler (gcc or cc) or no nm on PATH to list the reader's symbols")
    with open(os.path.join(ROOT, "c", "dc.h")) as f:
        api = f.read()
    exported = {}
    for src in READER:
        obj = str(tmp_path / (os.path.basename(src)[:-2] + ".o"))
        r = subprocess.run([cc, *STRICT, "-I", os.path.join(ROOT, "c"), "-c", src, "-o", obj],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{cc} -c {src} failed:\n{r.stderr}"
        r = subprocess.run([nm, "-g", "--defined-only", obj], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            fields = line.split()
            if len(fields) == 3:                  # address, type, name
                name = fields[2][1:] if sys.platform == "darwin" else fields[2]  # Mach-O's _
                exported[name] = os.path.basename(src)
    assert "dc_open" in exported and "dc_crc32" in exported, exported   # nm's output was read
    bare = sorted(f"{n} ({src})" for n, src in exported.items()
                  if not n.startswith(("dc_", "dci_")))
    assert not bare, f"the reader exports names without the dc_ or dci_ prefix: {bare}"
    undeclared = sorted(n for n in exported if n.startswith("dc_") and
                        not re.search(rf"\b{n}\s*\(", api))
    assert not undeclared, f"dc_ names c/dc.h does not declare (dci_ if internal): {undeclared}"


# --- the inflater against zlib ------------------------------------------------------------

def _streams(rnd: random.Random) -> list[tuple[bytes, int]]:
    """DEFLATE streams of every block type (stored, fixed, dynamic, in turn, and empty
    stored blocks of flushes) and window size, and damaged ones: (stream, cap)."""
    texts = [b"", b"a", bytes(range(256)) * 3, b"abc" * 5000,
             bytes(rnd.randrange(256) for _ in range(70000)),
             json.dumps({"k": list(range(3000))}).encode(),
             bytes(rnd.choice(b"ACGT") for _ in range(40000)),
             b"abc" * 3000 + bytes(rnd.randrange(256) for _ in range(40000)) + b"xyz" * 3000]
    out = []
    for text in texts:
        for level, wbits, strategy in ((0, -15, 0), (1, -9, 0), (6, -12, zlib.Z_FILTERED),
                                       (9, -15, zlib.Z_HUFFMAN_ONLY), (9, -15, zlib.Z_RLE),
                                       (9, -15, zlib.Z_FIXED), (9, -15, 0)):
            c = zlib.compressobj(level, zlib.DEFLATED, wbits, 9, strategy)
            s = c.compress(text) + c.flush()
            out += [(s, len(text)), (s, len(text) + 5), (s, max(len(text) - 1, 0))]
            c = zlib.compressobj(level, zlib.DEFLATED, wbits, 9, strategy)
            s = b"".join(c.compress(text[i:i + 9000]) + c.flush(zlib.Z_SYNC_FLUSH)
                         for i in range(0, len(text), 9000)) + c.flush()
            out.append((s, len(text)))                        # empty stored blocks between
            for _ in range(6):                                # damaged: flips, cuts, tails
                b = bytearray(s)
                op = rnd.randrange(3)
                if op == 0 and b:
                    b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
                elif op == 1:
                    b = b[:rnd.randrange(len(b) + 1)]
                else:
                    b += bytes([rnd.randrange(256)])
                out.append((bytes(b), len(text) + 10))
    for _ in range(300):                                       # random bytes
        out.append((bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 60))), 1 << 16))
    return out


def _zlib(stream: bytes, cap: int):
    """zlib's reading, as deepcomp's reader takes it (deepcomp.dc.format.inflate)."""
    d = zlib.decompressobj(-15)
    try:
        text = d.decompress(stream, cap + 1)
    except zlib.error:
        return "error"
    if len(text) > cap or d.unconsumed_tail:
        return "too large"
    if not d.eof or d.unused_data:
        return "error"
    return text


def test_inflate_agrees_with_zlib(build):
    # c_inflate.c includes c/dc.c itself (for the inflater's internals): the rest is linked
    exe = build(STRICT, "c_inflate", [os.path.join(ROOT, "tests", "c_inflate.c")] +
                [s for s in READER if os.path.basename(s) != "dc.c"])
    cases = _streams(random.Random(11))
    stdin = b"".join(struct.pack("<II", cap, len(s)) + s for s, cap in cases)
    r = subprocess.run([exe], input=stdin, capture_output=True)
    assert r.returncode == 0, r.returncode
    out, at, seen = r.stdout, 0, {}
    for stream, cap in cases:
        status, n = out[at], struct.unpack_from("<I", out, at + 1)[0]
        at += 5
        got = out[at:at + n] if status == 0 else ("too large" if status == 3 else "error")
        at += n if status == 0 else 0
        assert got == _zlib(stream, cap), (stream[:20], cap, status)
        seen[status] = seen.get(status, 0) + 1
    assert at == len(out) and set(seen) == {0, 1, 2, 3, 4}


# --- damaged and forged files under the sanitizers ----------------------------------------

def _corpus(rnd: random.Random) -> list[tuple[str, bytes]]:
    """(base, file) pairs: tests/test_dcfile_fuzz.py's mutations of its four base files, every
    truncation, and every single bit flip of the explicit file with the CRC made right."""
    out = []
    for version in (1, "2-implicit", 2, "2-reference"):
        buf = base(version)
        start = 28 if version == 1 else 24
        for i in range(len(buf)):
            out.append((version, buf[:i]))
        for _ in range(300):                                   # bytes changed, cut, added
            out.append((version, mutate_bytes(buf, rnd, ops=4)))
        if version == 1:
            continue
        paths = [p for p in _leaves(header_json(version, buf)) if p and p[0] != "history"]
        for _ in range(500):                                   # header fields, CRC right
            out.append((version, forge_v2(buf, header_edit(paths, rnd))))
        for _ in range(300):                                   # data bytes, CRC right
            def edit(h, d):
                for _ in range(rnd.randrange(1, 4)):
                    d[rnd.randrange(len(d))] = rnd.randrange(256)
            out.append((version, forge_v2(buf, edit)))
        hlen = struct.unpack_from("<I", buf, 12)[0]
        text = zlib.decompress(buf[start:start + hlen], -15)
        for i in range(200):                                   # header text and bytes, CRC right
            if i % 2:
                t = bytearray(text)
                t[rnd.randrange(len(t))] = rnd.randrange(256)
                h = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
                h = h.compress(bytes(t)) + h.flush()
            else:
                h = bytearray(buf[start:start + hlen])
                h[rnd.randrange(len(h))] = rnd.randrange(256)
            body = buf[:12] + struct.pack("<IQ", len(h), len(buf) - 28 - hlen) + bytes(h) \
                + buf[start + hlen:-4]
            out.append((version, body + struct.pack("<I", zlib.crc32(body))))
    buf = base(2)
    for i in range((len(buf) - 4) * 8):                        # every bit, CRC right
        b = bytearray(buf[:-4])
        b[i // 8] ^= 1 << (i % 8)
        out.append(("2-bits", bytes(b) + struct.pack("<I", zlib.crc32(b))))
    data = encode_stage(synthetic_stage("lenet5"), EncodeConfig(index_bits="*=3"))[0]
    for _ in range(300):                                       # streams of a real model
        def edit(h, d):
            for _ in range(rnd.randrange(1, 3)):
                i = rnd.randrange(len(d))
                d[i] ^= 1 << rnd.randrange(8)
        out.append(("lenet5", forge_v2(data, edit)))
    return out


def _python(buf: bytes):
    """deepcomp's reading of a file: its state dict, or its error."""
    try:
        return decode_bytes(buf).state_dict
    except errors.FormatError as e:
        return e


def _about_the_architecture(e: Exception) -> bool:
    """An error of deepcomp's reader that the C reader, which builds no model, cannot see."""
    return isinstance(e, errors.UnknownArchitectureError) or isinstance(e, errors.HeaderError) \
        and ("cannot build" in str(e) or "elements exceed" in str(e))


def test_damaged_and_forged_files_under_sanitizers(dcdump_asan, tmp_path):
    """Every file of the corpus: exit 0 or the one error line, never a crash or a sanitizer
    finding; a file that deepcomp reads, the C reader reads to the same values (checksums);
    one deepcomp refuses, the C reader refuses too, mostly with the same error."""
    corpus = _corpus(random.Random(2024))
    paths = []
    for i, (_, buf) in enumerate(corpus):
        p = tmp_path / f"{i:05d}.dc"
        p.write_bytes(buf)
        paths.append(str(p))
    lines, errs = {}, {}
    for at in range(0, len(paths), 1500):
        chunk = paths[at:at + 1500]
        r = run(dcdump_asan, *chunk)
        assert r.returncode in (0, 1), r.stderr[-3000:]
        assert not any(w in r.stderr for w in FINDINGS), r.stderr[-3000:]
        for line in r.stdout.splitlines():
            path, rest = line.split(": ", 1)
            lines.setdefault(path, []).append(rest)
        for line in r.stderr.splitlines():
            assert line.startswith("dcdump: error: "), line
            path, msg = line[len("dcdump: error: "):].split(": ", 1)
            assert path not in errs
            errs[path] = msg[msg.rindex("(") + 1:-1]
    same_error, both_fail, agree = 0, 0, {}
    for (version, buf), path in zip(corpus, paths):
        py = _python(buf)
        c = errs.get(path, "ok")
        if version in (1, "2-implicit"):                 # no layout: refused, not crashed
            assert c != "ok", version
            continue
        if isinstance(py, dict):
            assert c == "ok", (version, path, c)
            crc = {r.split(" ")[0]: int(r.rsplit(" ", 1)[1], 16) for r in lines[path]}
            assert list(crc) == sorted(py)
            for name, t in py.items():
                v = t.detach().to(torch.float32).contiguous().numpy()
                if crc[name] != zlib.crc32(v.astype("<f4").tobytes()):
                    values = c_decode(dcdump_asan, path, tmp_path)   # NaN payloads only
                    assert all(same_bits(x[4], py[x[0]]) for x in values), (path, name)
        elif c == "ok":                                  # the C reader builds no model
            assert _about_the_architecture(py), (version, path, str(py))
        else:
            both_fail += 1
            same_error += PYTHON_ERROR.get(c) == type(py).__name__
            agree.setdefault((type(py).__name__, c), 0)
            agree[(type(py).__name__, c)] += 1
    assert both_fail > 2000
    assert same_error > 0.95 * both_fail, sorted(agree.items(), key=lambda x: -x[1])[:12]


def test_bench_tool_builds_and_compares(tmp_path, dcdump):
    """tools/bench_c_decode.py: its build and its check that both readers agree."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "bench_c_decode", os.path.join(ROOT, "tools", "bench_c_decode.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with open(GOLDEN, "rb") as f:
        buf = f.read()
    assert bench.same_values(bench.build(str(tmp_path)), GOLDEN, buf) == 6
