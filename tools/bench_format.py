"""Bytes of a .dc file, format version 1 against version 2, by part (docs/FORMAT.md).

For each stage file or .dc file given, encodes the same stage both ways and prints the byte
breakdown: header (prefix, header and checksums), dense tensors, codebooks, code tables, the
index stream (Huffman-coded cluster indices), the gap stream (Huffman-coded relative indices),
float32 values of pruned-only layers, the total, and the overhead: everything but the index
and gap streams, as a share of the file.

Version 1 is written here, by :func:`pack_v1`, as deepcomp 0.x before format 2 wrote it
(float32 codebooks, a 4-bit nibble code table per stream, dense tensors in their own dtype, the
full stage history, a CRC32 per section); each file it writes is read back by deepcomp's own
version 1 reader, so it is a valid version 1 file. Version 2 is ``deepcomp encode``'s, also with
``--strip``, with ``--strip --float16`` (lossy: dense tensors rounded to float16), and with the
smallest lossy settings, ``--strip --float16 --dense-bits 4`` and ``--fold-bn`` where the model
has batch norm (bytes only: the accuracy of the lossy files is not measured here).

    python tools/bench_format.py tests/golden/lenet300-mnist-v1.dc lenet5.quantized.pt resnet20.dc
    python tools/bench_format.py --json out.json FILE...

A .dc file given as input is decoded first; its stage history is what the file kept (for a
version 1 file: all of it), so its version 1 figure is the file's own size.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
import zlib
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from deepcomp.dc import huffman  # noqa: E402
from deepcomp.dc.format import (MAGIC, NUMPY, PREFIX_V1, canonical_json, deflate,  # noqa: E402
                                jsonable)
from deepcomp.encode import EncodeConfig, encode_stage, encode_tensors, round_floats  # noqa: E402
from deepcomp.errors import UsageError  # noqa: E402
from deepcomp.loading import decode_bytes, load_stage  # noqa: E402
from deepcomp.stagefile import stage_record  # noqa: E402

PARTS = ["header", "dense", "codebooks", "code_tables", "index_stream", "gap_stream", "values"]


def _sections_v1(t) -> list:
    """A version 2 encoding of one tensor, laid out as version 1 did."""
    e, secs = t.entry, dict(t.sections)
    if e["kind"] == "dense":
        return [("dense", _dense_v1(e, secs["dense"]))]
    tables = [huffman.pack_lengths(L) for L in t.tables.values()]   # weights, then gaps
    cb = []
    if "codebook" in secs:
        dt = "<f2" if e["codebook_dtype"] == "float16" else "<f4"
        cb = [("codebook", np.frombuffer(secs["codebook"], dt).astype("<f4").tobytes())]
    if e["kind"] == "sparse":
        return [("gap_codes", tables[0]), ("gaps", secs["gaps"]), ("values", secs["values"])]
    out = cb + [("weight_codes", tables[0]), ("weights", secs["weights"])]
    if e["kind"] == "quantized":
        out += [("gap_codes", tables[1]), ("gaps", secs["gaps"])]
    return out


def _dense_v1(e: dict, raw: bytes) -> bytes:
    """Version 1 stored a dense tensor in its own dtype (float16 only when asked, lossy)."""
    if e["stored"] == e["dtype"]:
        return raw
    return np.frombuffer(raw, NUMPY[e["stored"]]).astype(NUMPY[e["dtype"]]).tobytes()


def _entry_v1(e: dict) -> dict:
    keep = {"dense": ("stored",), "sparse": ("order", "index_bits", "entries", "nonzeros"),
            "quantized": ("order", "index_bits", "entries", "nonzeros", "bits", "codebook_size",
                          "quant_meta"),
            "quantized_dense": ("bits", "codebook_size", "quant_meta")}[e["kind"]]
    out = {k: e[k] for k in ("name", "dtype", "shape", "kind") + keep}
    if e["kind"] == "dense":
        out["stored"] = e["dtype"]
    return out


def pack_v1(sf, config: EncodeConfig | None = None) -> bytes:
    """The stage file as format version 1 (docs/FORMAT.md, appendix)."""
    from deepcomp.sizes import stage_sizes
    config = config or EncodeConfig()
    tensors = encode_tensors(sf, config)
    sizes = {k: v for k, v in stage_sizes(sf).items() if k not in ("bytes", "ratio")}
    history = [r for r in sf.history if r.get("stage") != "encoded"]
    prev = dict(sf.history[-1].get("metrics") or {}) if sf.history else {}
    cfg = {k: v for k, v in config.to_dict().items() if k != "strip"}
    record = stage_record("encoded", cfg, prev, sizes, 0.0)
    history = round_floats(jsonable(history + [record]))
    entries, blobs, offset = [], [], 0
    for t in sorted(tensors, key=lambda t: t.entry["name"]):
        secs = []
        for name, b in _sections_v1(t):
            secs.append([name, offset, len(b), zlib.crc32(b)])
            blobs.append(b)
            offset += len(b)
        entries.append({**_entry_v1(t.entry), "sections": secs})
    header = deflate(canonical_json(jsonable({"arch": sf.arch, "data": sf.data,
                                              "history": history, "tensors": entries})))
    body = PREFIX_V1.pack(MAGIC, 1, 0, len(header), zlib.crc32(header), offset) \
        + header + b"".join(blobs)
    return body + struct.pack("<I", zlib.crc32(body))


def breakdown(buf: bytes) -> dict:
    """The parts of a .dc file as its reader counts them, the total and the overhead."""
    rec = decode_bytes(buf).history[-1]
    parts = dict(rec["sizes"]["breakdown"])
    out = {p: parts.get(p, 0) for p in PARTS}
    out["total"] = len(buf)
    streams = out["index_stream"] + out["gap_stream"]
    out["overhead_pct"] = 100 * (len(buf) - streams) / len(buf)
    return out


def bench(path: str) -> dict:
    sf = load_stage(path)
    t0 = time.perf_counter()
    v1 = pack_v1(sf)
    if path.endswith(".dc"):
        with open(path, "rb") as f:
            own = f.read()
        if own[8:10] == b"\x01\x00":
            v1 = own                       # a version 1 file: its own bytes
    v2, _ = encode_stage(sf)
    v2s, _ = encode_stage(sf, EncodeConfig(strip=True))
    v2h, _ = encode_stage(sf, EncodeConfig(strip=True, float16=True), metrics={})
    smallest = EncodeConfig(strip=True, float16=True, dense_bits=4, fold_batchnorm=True)
    try:
        v2l, _ = encode_stage(sf, smallest, metrics={})
    except UsageError:                     # no batch norm to fold
        v2l, _ = encode_stage(sf, replace(smallest, fold_batchnorm=False), metrics={})
    return {"file": path, "arch": sf.arch["name"], "v1": breakdown(v1), "v2": breakdown(v2),
            "v2_strip": breakdown(v2s), "v2_strip_f16": breakdown(v2h),
            "v2_smallest": breakdown(v2l),
            "seconds": round(time.perf_counter() - t0, 2)}


def render(results: list) -> str:
    cols = ["v1", "v2", "v2_strip", "v2_strip_f16", "v2_smallest"]
    lines = []
    for r in results:
        lines.append(f"{r['file']} ({r['arch']})")
        lines.append(f"  {'part':14s}" + "".join(f"{c:>13s}" for c in cols))
        for p in PARTS + ["total"]:
            lines.append(f"  {p:14s}" + "".join(f"{r[c][p]:13,d}" for c in cols))
        lines.append(f"  {'overhead %':14s}" + "".join(f"{r[c]['overhead_pct']:13.1f}"
                                                       for c in cols))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="stage files (.pt) or .dc files")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    results = [bench(p) for p in a.files]
    print(render(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
