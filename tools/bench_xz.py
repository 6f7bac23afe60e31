"""A .dc file against general-purpose compressors of the same quantized model (issue 13).

For each stage file or .dc file given, the ``.dc`` column is the size of the file as given
(a stage file is encoded as ``deepcomp encode`` writes it; a ``.dc`` file is measured as it is,
and also encoded again by this version, the ``re-encoded`` column), and the same model is laid
out naively and
compressed by ``xz -9e``, ``bzip2 -9`` and ``zstd -19``. The naive layout, tensors in the
state dict's order:

1. per quantized tensor (pruned or not), one unsigned integer per weight element in row-major
   order: 0 for a pruned weight, cluster index + 1 for a kept one (uint8; uint16 little-endian
   for more than 255 clusters); a tensor pruned but not quantized is stored here as its float32
   elements (zeros where pruned);
2. then every quantized tensor's codebook, float32;
3. then every other (dense) tensor as float32 (integer buffers too, converted).

xz is Python's ``lzma`` with preset ``9 | PRESET_EXTREME`` (what ``xz -9e`` does), bzip2 is
``bz2`` at level 9, zstd level 19 is the ``zstandard`` package where it is installed, else the
``zstd`` program, else 'n/a'. The last columns are the order-0 entropy (Shannon bound, bytes) of
the model's cluster index and gap symbols as format 2.0 lays them out (one stream of each per
tensor, fillers included, in the walk order the encoder chose): what Huffman coding each symbol
on its own cannot beat.

    python tools/bench_xz.py tests/golden/lenet300-mnist-v1.dc /work/samples/r20.quantized.pt
"""
from __future__ import annotations

import argparse
import bz2
import json
import lzma
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepcomp.dc import huffman  # noqa: E402
from deepcomp.encode import EncodeConfig, encode_stage, encode_tensors  # noqa: E402
from deepcomp.loading import load_stage  # noqa: E402
from deepcomp.dc.sparse import as_2d, relative_index, walk  # noqa: E402


def naive_layout(sf) -> bytes:
    """The model laid out as the module docstring says."""
    indices, codebooks, dense = [], [], []
    for name, t in sf.state_dict.items():
        q, m = sf.quant.get(name), sf.masks.get(name)
        if q is not None:
            idx = q["indices"].to(torch.int64).reshape(-1).numpy() + 1   # -1 (pruned) -> 0
            k = len(q["codebook"])
            indices.append(idx.astype(np.uint8 if k < 256 else "<u2").tobytes())
            codebooks.append(q["codebook"].to(torch.float32).numpy().astype("<f4").tobytes())
        elif m is not None:
            indices.append(t.to(torch.float32).numpy().astype("<f4").tobytes())
        else:
            dense.append(t.to(torch.float32).numpy().astype("<f4").tobytes())
    return b"".join(indices + codebooks + dense)


def zstd19(raw: bytes) -> int | None:
    try:
        import zstandard
        return len(zstandard.ZstdCompressor(level=19).compress(raw))
    except ImportError:
        pass
    if shutil.which("zstd"):
        return len(subprocess.run(["zstd", "-19", "-q", "-c"], input=raw, capture_output=True,
                                  check=True).stdout)
    return None


def stream_entropy(sf, tensors) -> dict:
    """Order-0 entropy in bytes of the index (cluster) and gap symbols, per stream as format
    2.0 stores them, summed over the tensors."""
    out = {"index": 0.0, "gap": 0.0}
    for t in tensors:
        e, name = t.entry, t.entry["name"]
        if e["kind"] == "dense":
            continue
        rows, cols = as_2d(e["shape"])
        q, m = sf.quant.get(name), sf.masks.get(name)
        if q is not None:
            idx = q["indices"].to(torch.int64).numpy().reshape(rows, cols)
            k = len(q["codebook"])
        if m is None:                       # quantized, not pruned
            out["index"] += huffman.shannon_bits(np.where(idx >= 0, idx, k).reshape(-1)) / 8
            continue
        mask = m.numpy().astype(bool).reshape(rows, cols)
        pos = walk(mask, e["order"])
        stored, slots = relative_index(pos, e["index_bits"])
        filler = np.ones(len(stored), bool)
        filler[slots] = False
        stored[filler] = 1 << e["index_bits"]
        out["gap"] += huffman.shannon_bits(stored) / 8
        if q is not None:
            out["index"] += huffman.shannon_bits((idx if e["order"] == "csr" else idx.T)
                                                 .reshape(-1)[pos]) / 8
    return out


def bench(path: str, config: EncodeConfig) -> dict:
    sf = load_stage(path)
    buf, rec = encode_stage(sf, config)
    given = os.path.getsize(path) if path.endswith(".dc") else len(buf)
    raw = naive_layout(sf)
    ent = stream_entropy(sf, encode_tensors(sf, config))
    parts = rec["sizes"]["breakdown"]
    return {"file": path, "arch": sf.arch["name"], "dc": given, "reencoded": len(buf),
            "naive": len(raw),
            "xz": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
            "bzip2": len(bz2.compress(raw, 9)), "zstd": zstd19(raw),
            "index_stream": parts["index_stream"], "gap_stream": parts["gap_stream"],
            "index_entropy": round(ent["index"]), "gap_entropy": round(ent["gap"]),
            "breakdown": parts}


def render(results: list) -> str:
    cols = ["dc", "reencoded", "xz", "bzip2", "zstd"]
    lines = [f"| file | naive | .dc | re-encoded | xz -9e | bzip2 -9 | zstd -19 | xz / .dc | "
             f"index stream (order-0 bound) | gap stream (order-0 bound) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = [f"{r[c]:,}" if r[c] is not None else "n/a (zstandard not installed)"
                 for c in cols]
        lines.append(f"| {r['file']} ({r['arch']}) | {r['naive']:,} | " + " | ".join(cells)
                     + f" | {r['xz'] / r['dc']:.3f} | {r['index_stream']:,} "
                     f"({r['index_entropy']:,}) | {r['gap_stream']:,} ({r['gap_entropy']:,}) |")
    lines.append("")
    for r in results:
        lines.append(f"{r['file']}: parts of the re-encoded .dc " + ", ".join(f"{k} {v:,}"
                                                            for k, v in r["breakdown"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="quantized stage files (.pt) or .dc files")
    ap.add_argument("--strip", action="store_true", help="encode without the stage history")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    results = [bench(p, EncodeConfig(strip=a.strip)) for p in a.files]
    print(render(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
