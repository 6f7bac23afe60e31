"""What each Huffman context buys (issue 13; docs/FORMAT.md, "Contexts").

For every pruned and quantized tensor of each stage file or .dc file given, the cluster index
and gap symbols are coded as format 2.0 does (one table per stream) and with tables selected by
a context, for K = 2..4 tables; each size is the Huffman-coded substreams (each padded to a
byte) plus what their code tables and the context's map (a byte per context value) add to the
file's DEFLATE-compressed ``code_tables`` block (TableCost: appended to the other tensors'
tables as the encoder wrote them, and deflated). The best K of
each context per tensor is kept where it beats one table. Contexts, all known to the decoder
before it decodes the stream (positions are decoded before cluster indices):

- gaps ``line``: the line of the walk (row for csr, column for csc), lines grouped by their
  number of kept weights; both walk orders and the index widths up to the first that needs no
  filler (at most 8 narrower) are tried, for one table as for K, as the encoder does;
- weights ``kpos`` (position in the kernel, convolutions only), ``row`` (output channel),
  ``col`` (column of the [rows, cols] view: input channel and kernel position), ``in`` (input
  channel), ``kcount`` (the number of kept weights in the same kernel, convolutions only).

Also measured, ``prev (seq.)``: the previous symbol of the same stream (previous gap, previous
cluster index in walk order), at the encoder's order and width. Such a context forces
sequential decoding (deepcomp decodes all lanes of all streams at once, which a table that
depends on the symbol before cannot do), so it would have to pay a lot to be worth it.

    python tools/study_contexts.py tests/golden/lenet300-mnist-v1.dc /work/samples/r20.quantized.pt
    python tools/study_contexts.py --index-bits 5 tests/golden/lenet300-mnist-v1.dc   # the paper's width
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepcomp.dc import huffman  # noqa: E402
from deepcomp.dc.format import MAX_BITS, deflate  # noqa: E402
from deepcomp.encode import EncodeConfig, encode_stage, encode_tensors  # noqa: E402
from deepcomp.loading import load_stage  # noqa: E402
from deepcomp.dc.sparse import as_2d, filler_free_bits, gap_symbols  # noqa: E402

MAX_LEN = EncodeConfig().max_code_length
MAX_TABLES = 4                       # tables per stream (K) measured
_CUTS = 10                           # candidate group boundaries among the sorted lines


def context_size(context: str, shape) -> int:
    """Number of values of a weight context for a tensor of ``shape`` (0: not applicable)."""
    rows = int(shape[0])
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    if context == "kpos":
        ks = math.prod(shape[2:]) if len(shape) > 2 else 1
        return ks if ks > 1 else 0
    return rows if context == "row" else cols


def weight_context(context: str, shape, lin: np.ndarray) -> np.ndarray:
    """The context value of each kept weight from its row-major position ``lin`` in the
    ``[rows, cols]`` view: ``kpos`` its position in the kernel (``col % kh*kw``), ``row`` its
    output channel, ``col`` its column (input channel and kernel position)."""
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    if context == "row":
        return lin // cols
    col = lin % cols
    if context == "kpos":
        return col % context_size("kpos", shape)
    return col


def lines_of(m2d: np.ndarray, order: str) -> np.ndarray:
    """The mask as the walk sees it: ``[lines, width]``, rows for csr, columns for csc."""
    return m2d if order == "csr" else m2d.T


def grouped_gaps(lines: np.ndarray, groups: np.ndarray, k: int, bits: int) -> list:
    """The gap stream of each group of lines, its lines laid end to end in line order."""
    return [gap_symbols(np.flatnonzero(lines[groups == j].reshape(-1)), bits) for j in range(k)]


class TableCost:
    """Bytes that code tables and context maps add to the ``code_tables`` block: the growth of
    its DEFLATE stream when they are appended to a reference (the other tensors' tables), so
    that a table much like the others costs little, as it does in the file."""

    def __init__(self, reference: bytes):
        self.ref = reference[-(16 << 10):]          # within DEFLATE's 32 KiB window
        self.base = len(deflate(self.ref))

    def __call__(self, raw: bytes) -> int:
        return len(deflate(self.ref + raw)) - self.base if raw else 0


def huffman_size(streams: list, alphabet: int, max_len: int):
    """(bytes of the streams, each padded to a byte; their code lengths) of one table each."""
    total, tables = 0, []
    for s in streams:
        freqs = np.bincount(s, minlength=alphabet)
        used = int((freqs > 0).sum())
        L = huffman.code_lengths(freqs, min(huffman.MAX_CODE_LENGTH,
                                            max(max_len, math.ceil(math.log2(max(used, 2))))))
        total += -(-int(L.astype(np.int64)[s].sum()) // 8)
        tables.append(L)
    return total, tables


def _entropy_bits(streams) -> float:
    return sum(huffman.shannon_bits(s) for s in streams)


def choose_line_groups(lines: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Lines to ``k`` groups by their number of kept weights: the cut of the lines sorted by
    that number (ties: line order) that gives the least order-0 entropy, among cuts at
    :data:`_CUTS` quantiles."""
    n = len(lines)
    rank = np.argsort(lines.sum(1), kind="stable")
    cands = sorted(set(int(round(n * i / _CUTS)) for i in range(1, _CUTS)) - {0, n})
    best, best_groups = None, None
    for cuts in itertools.combinations(cands, k - 1):
        groups = np.zeros(n, np.int64)
        for c in cuts:
            groups[rank[c:]] += 1
        bits_ = _entropy_bits(grouped_gaps(lines, groups, k, bits))
        if best is None or bits_ < best - 1e-9:
            best, best_groups = bits_, groups
    return best_groups


def choose_weight_groups(values: np.ndarray, symbols: np.ndarray, nvalues: int, alphabet: int,
                         k: int, rounds: int = 8) -> np.ndarray:
    """Context values to ``k`` tables: start from the values sorted by their mean symbol, cut
    into ``k`` parts of equal weight count, then move each value to the table under whose
    symbol distribution its symbols cost least, and repeat (k-means on code length)."""
    hist = np.zeros((nvalues, alphabet), np.int64)
    np.add.at(hist, (values, symbols), 1)
    n = hist.sum(1)
    mean = (hist * np.arange(alphabet)).sum(1) / np.maximum(n, 1)
    rank = np.argsort(mean, kind="stable")
    share = np.cumsum(n[rank]) / max(int(n.sum()), 1)
    groups = np.zeros(nvalues, np.int64)
    groups[rank] = np.minimum((share * k - 1e-9).astype(np.int64), k - 1).clip(0)
    for _ in range(rounds):
        counts = np.stack([hist[groups == j].sum(0) for j in range(k)]) + 0.5
        logp = np.log2(counts / counts.sum(1, keepdims=True))
        new = np.argmin(-(hist @ logp.T), axis=1)
        new[n == 0] = 0
        if np.array_equal(new, groups):
            break
        groups = new
    return groups



def _cost(cost, streams, alphabet, groups=None):
    """Bytes of substreams with a table each, plus their tables and map in the block."""
    size, tables = huffman_size(streams, alphabet, MAX_LEN)
    raw = (b"" if groups is None else np.asarray(groups, np.uint8).tobytes()) \
        + b"".join(t.tobytes() for t in tables)
    return size + cost(raw)


def study_tensor(sf, e, cost, fixed_bits: bool = False) -> dict:
    """{stream: {context: bytes}} of one quantized, pruned tensor."""
    name, shape = e["name"], e["shape"]
    rows, cols = as_2d(shape)
    m = sf.masks[name].numpy().astype(bool).reshape(rows, cols)
    idx = sf.quant[name]["indices"].to(torch.int64).numpy().reshape(rows, cols)
    k = len(sf.quant[name]["codebook"])
    gaps = {}
    for order in ("csr", "csc"):
        lines = lines_of(m, order)
        top = filler_free_bits(np.flatnonzero(lines.reshape(-1)), MAX_BITS)
        widths = [e["index_bits"]] if fixed_bits else range(max(1, top - 8), top + 1)
        for b in widths:                    # the index widths the encoder tries, or the one set
            for K in range(1, min(MAX_TABLES, len(lines)) + 1):
                groups = choose_line_groups(lines, b, K) if K > 1 else np.zeros(len(lines), int)
                size = _cost(cost, grouped_gaps(lines, groups, K, b), (1 << b) + 1,
                             groups if K > 1 else None)
                key = "one table" if K == 1 else "line"
                gaps[key] = min(gaps.get(key, size), size)
    # Previous gap (sequential), at the encoder's order and width.
    g = gap_symbols(np.flatnonzero(lines_of(m, e["order"]).reshape(-1)), e["index_bits"])
    a = (1 << e["index_bits"]) + 1
    prev = np.concatenate([[0], g[:-1]])
    gaps["prev (seq.)"] = min(_cost(cost, [g[groups[prev] == j] for j in range(K)], a, groups)
                              for K in range(2, MAX_TABLES + 1)
                              for groups in [choose_weight_groups(prev, g, a, a, K)])
    lin = np.flatnonzero(m.reshape(-1))
    sym = idx.reshape(-1)[lin]
    weights = {"one table": _cost(cost, [sym], k + 1)}
    walk_sym = lines_of(idx, e["order"]).reshape(-1)[np.flatnonzero(lines_of(m, e["order"]))]
    prev = np.concatenate([[k], walk_sym[:-1]])
    weights["prev (seq.)"] = min(
        _cost(cost, [walk_sym[groups[prev] == j] for j in range(K)], k + 1, groups)
        for K in range(2, MAX_TABLES + 1)
        for groups in [choose_weight_groups(prev, walk_sym, k + 1, k + 1, K)])
    ks = math.prod(shape[2:]) if len(shape) > 2 else 1
    kept_in_kernel = m.reshape(rows, cols // ks, ks).sum(2).reshape(-1)
    for ctx in ("kpos", "row", "col", "in", "kcount"):
        if ctx in ("in", "kcount"):
            if ks == 1:
                continue
            if ctx == "in":
                values, nv = (lin % cols) // ks, cols // ks
            else:
                values, nv = kept_in_kernel[lin // ks] - 1, ks
        else:
            nv = context_size(ctx, shape)
            if not nv:
                continue
            values = weight_context(ctx, shape, lin)
        for K in range(2, MAX_TABLES + 1):
            groups = choose_weight_groups(values, sym, nv, k + 1, K)
            size = _cost(cost, [sym[groups[values] == j] for j in range(K)], k + 1, groups)
            weights[ctx] = min(weights.get(ctx, size), size)
    return {"gaps": gaps, "weights": weights}


def study(path: str, index_bits: str = "") -> dict:
    sf = load_stage(path)
    config = EncodeConfig(index_bits=index_bits)
    buf, _ = encode_stage(sf, config)
    tensors = encode_tensors(sf, config)
    tables = {t.entry["name"]: b"".join(np.asarray(L, np.uint8).tobytes()
                                           for L in t.tables.values())
              for t in tensors}
    per = {t.entry["name"]: study_tensor(sf, t.entry, TableCost(b"".join(
        b for n, b in tables.items() if n != t.entry["name"])), bool(index_bits))
        for t in tensors if t.entry["kind"] == "quantized"}
    return {"file": path, "bytes": len(buf), "tensors": per}


def render(r: dict) -> str:
    lines = [f"{r['file']}: {r['bytes']:,} bytes (format as deepcomp encodes it now)"]
    for stream in ("gaps", "weights"):
        base = sum(t[stream]["one table"] for t in r["tensors"].values())
        ctxs = sorted({c for t in r["tensors"].values() for c in t[stream]} - {"one table"})
        lines.append(f"  {stream}: one table per stream {base:,} bytes (streams and tables)")
        best_all = sum(min(t[stream].values()) for t in r["tensors"].values())
        for c in ctxs + ["best of all"]:
            if c == "best of all":
                got = best_all
            else:
                got = sum(min(t[stream]["one table"], t[stream].get(c, math.inf))
                          for t in r["tensors"].values())
            used = [n for n, t in r["tensors"].items()
                    if c != "best of all" and t[stream].get(c, math.inf) < t[stream]["one table"]]
            lines.append(f"    {c:12s} {got:8,d}  saves {base - got:6,d} bytes = "
                         f"{100 * (base - got) / r['bytes']:4.1f}% of the file"
                         + (f"  ({len(used)} of {len(r['tensors'])} tensors)"
                            if c != "best of all" else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="quantized stage files (.pt) or .dc files")
    ap.add_argument("--per-tensor", action="store_true", help="print every tensor's sizes")
    ap.add_argument("--index-bits", default="", help="fixed index widths, as deepcomp encode's "
                    "--index-bits (default: each tensor's best, measured)")
    a = ap.parse_args(argv)
    for p in a.files:
        r = study(p, a.index_bits)
        print(render(r))
        if a.per_tensor:
            for n, t in r["tensors"].items():
                print(f"    {n}: " + "; ".join(f"{s} " + ", ".join(f"{c} {v:,}"
                                                               for c, v in t[s].items())
                                               for s in ("gaps", "weights")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
