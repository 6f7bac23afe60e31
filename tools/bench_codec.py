"""Codec speed and Huffman efficiency of a .dc file's streams, against dahuffman.

    .venv/bin/python tools/bench_codec.py                      # ResNet-20, pruned + quantized here
    .venv/bin/python tools/bench_codec.py --stage runs/x.pt    # any quantized or pruned stage file
    .venv/bin/python tools/bench_codec.py --stage x.pt --index-bits '*=8,linear=5'   # fixed widths

Without --stage, the pretrained ResNet-20 (/work/shared/models) is pruned by magnitude per layer
(--keep, default 0.3) and quantized by k-means (deepcomp.quantize, 8 bits conv / 5 bits fc, no
fine-tuning): accuracy plays no part in codec speed. Every Huffman stream of the encoded file
(format 2, as the reader finds them) is decoded by deepcomp.dc.huffman (all streams in one batch,
as deepcomp.dc.read does) and by dahuffman's PrefixCodec with the very same code table; both must give the same symbols.
Times are CPU seconds (time.process_time), best of --repeat for deepcomp, one pass for
dahuffman, so that other processes on a shared machine disturb them less.

Measured on 2 shared CPU cores (load average about 6), numpy 2, Python 3.11:

    $ .venv/bin/python tools/bench_codec.py --stage runs/resnet20_pq.pt   # pruned 50%, quantized 8/5 bits
    40 streams, 268,358 symbols, 1,250,865 bits; file 196,304 bytes (5.5x of dense)
    decode: deepcomp 7.0 ms (batched), 33.4 ms (stream by stream); dahuffman 170.5 ms -> 24.4x, 5.1x
    encode: deepcomp 12.9 ms; dahuffman 37.1 ms -> 2.9x
    Huffman efficiency (Shannon bound / bits used): 99.26% overall
    $ .venv/bin/python tools/bench_codec.py
    40 streams, 161,036 symbols, 834,367 bits; file 142,920 bytes (7.6x of dense)
    decode: deepcomp 5.5 ms (batched), 30.0 ms (stream by stream); dahuffman 111.3 ms -> 20.2x, 3.7x
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deepcomp.dc import huffman  # noqa: E402
from deepcomp.dc.format import read_prefix  # noqa: E402
from deepcomp.dc.read import _plans_v2  # noqa: E402
from deepcomp.encode import EncodeConfig, encode_stage  # noqa: E402
from deepcomp.loading import load_stage  # noqa: E402
from deepcomp.stagefile import StageFile  # noqa: E402

RESNET20 = "/work/shared/models/resnet20-12fca82f.th"


def make_stage(keep: float) -> StageFile:
    from deepcomp.quantize import QuantizeConfig, quantize
    from deepcomp.sizes import is_prunable_weight
    from deepcomp.train import TrainConfig
    sf = load_stage(RESNET20, model="resnet20")
    for n, w in sf.state_dict.items():
        if is_prunable_weight(n, w):
            k = max(1, int(w.numel() * (1 - keep)))
            m = w.abs() > w.abs().flatten().kthvalue(k)[0]
            sf.masks[n] = m
            sf.state_dict[n] = w * m
    return quantize(sf, None, QuantizeConfig(finetune=TrainConfig(epochs=0)))


def streams_of(buf: bytes) -> list[tuple]:
    """(name, bytes, code lengths, count) of every Huffman stream in a version 2 .dc file, as
    the reader finds them (deepcomp.dc.read; the file lists its tensors, as encode writes)."""
    _, hoff, hlen, dlen = read_prefix(buf, "bench")
    _, plans, _ = _plans_v2(buf[hoff:hoff + hlen], memoryview(buf)[hoff + hlen:hoff + hlen + dlen],
                            "bench", None, len(buf))
    out = []
    for t in plans:
        numel = int(np.prod(t["shape"]))
        if "gaps" in t["secs"]:
            out.append((t["name"] + " gaps", t["secs"]["gaps"], t["tables"]["gaps"], t["entries"]))
        if "weights" in t["secs"]:
            count = numel if t["kind"] == "quantized_dense" else t["nonzeros"]
            out.append((t["name"] + " weights", t["secs"]["weights"], t["tables"]["weights"],
                        count))
    return out


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.process_time()
        r = fn()
        times.append(time.process_time() - t)
    return min(times), r


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", help="quantized or pruned stage file (default: ResNet-20 made here)")
    p.add_argument("--keep", type=float, default=0.3, help="share of weights kept (default 0.3)")
    p.add_argument("--repeat", type=int, default=5, help="timing repeats, best taken")
    p.add_argument("--index-bits", default="", help="deepcomp encode's --index-bits (default: "
                   "measured per layer; '*=8,linear=5' is the paper's for ResNet-20)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args()
    torch.set_num_threads(1)
    sf = load_stage(a.stage) if a.stage else make_stage(a.keep)
    buf, rec = encode_stage(sf, EncodeConfig(index_bits=a.index_bits))
    streams = streams_of(buf)
    jobs = [(b, L, n, name) for name, b, L, n in streams]

    from dahuffman.huffmancodec import PrefixCodec
    t_ours, ours = best(lambda: huffman.decode_many(jobs), a.repeat)
    t_each = sum(best(lambda j=j: huffman.decode(*j), a.repeat)[0] for j in jobs)
    t_enc = 0.0
    rows, t_da, t_da_enc = [], 0.0, 0.0
    for (name, b, L, n), sym in zip(streams, ours):
        codes = huffman.canonical_codes(L)
        table = {int(s): (int(L[s]), int(codes[s])) for s in np.flatnonzero(L)}
        codec = PrefixCodec(table, check=False, eof=-1)
        t = time.process_time()
        theirs = list(codec.decode_streaming(b))[:n]
        t_da += time.process_time() - t
        if not np.array_equal(np.asarray(theirs), sym):
            raise SystemExit(f"{name}: dahuffman decodes different symbols")
        # dahuffman needs an end symbol to finish a byte; time its encoding up to there
        gen = codec.encode_streaming(sym.tolist())
        t = time.process_time()
        enc = bytearray()
        try:
            for byte in gen:
                enc.append(byte)
        except KeyError:
            pass
        t_da_enc += time.process_time() - t
        dt, (ours_b, nbits) = best(lambda: huffman.encode(sym, L), a.repeat)
        t_enc += dt
        assert ours_b[:len(enc)] == bytes(enc)
        bound = huffman.shannon_bits(sym)
        rows.append({"stream": name, "symbols": int(n), "bits": nbits,
                     "bits_per_symbol": nbits / max(n, 1),
                     "efficiency": bound / nbits if nbits else None})
    total_bits = sum(r["bits"] for r in rows)
    total_bound = sum(r["efficiency"] * r["bits"] for r in rows if r["efficiency"] is not None)
    res = {"file_bytes": len(buf), "ratio": rec["sizes"]["ratio"],
           "breakdown": rec["sizes"]["breakdown"], "streams": len(rows),
           "symbols": sum(r["symbols"] for r in rows), "stream_bits": total_bits,
           "efficiency": total_bound / total_bits,
           "decode_s": {"deepcomp_batched": t_ours, "deepcomp_per_stream": t_each,
                        "dahuffman": t_da},
           "encode_s": {"deepcomp": t_enc, "dahuffman": t_da_enc},
           "speedup_decode_batched": t_da / t_ours, "speedup_decode_per_stream": t_da / t_each,
           "speedup_encode": t_da_enc / t_enc, "rows": rows}
    print(f"{len(rows)} streams, {res['symbols']:,} symbols, {total_bits:,} bits; file "
          f"{len(buf):,} bytes ({res['ratio']:.1f}x of dense)")
    print(f"decode: deepcomp {1e3 * t_ours:.1f} ms (batched), {1e3 * t_each:.1f} ms (stream by "
          f"stream); dahuffman {1e3 * t_da:.1f} ms -> {res['speedup_decode_batched']:.1f}x, "
          f"{res['speedup_decode_per_stream']:.1f}x")
    print(f"encode: deepcomp {1e3 * t_enc:.1f} ms; dahuffman {1e3 * t_da_enc:.1f} ms -> "
          f"{res['speedup_encode']:.1f}x")
    print(f"Huffman efficiency (Shannon bound / bits used): {100 * res['efficiency']:.2f}% overall")
    print(f"| {'stream':30s} | symbols | bits/symbol | efficiency |")
    print(f"|{'-' * 32}|---------|-------------|------------|")
    for r in rows:
        eff = f"{100 * r['efficiency']:.2f}%" if r["efficiency"] is not None else "-"
        print(f"| {r['stream']:30s} | {r['symbols']:7d} | {r['bits_per_symbol']:11.2f} | {eff:>10s} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
