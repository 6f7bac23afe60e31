"""Writing a ``.dc`` file, version 2 (docs/FORMAT.md, "Layout"): each tensor's sections from
numpy arrays, the header, then the side blocks and the streams in the order that
:mod:`deepcomp.dc.format` gives and :mod:`deepcomp.dc.read` reads.

The writer chooses what the format leaves open, the smallest of each: a sparse tensor's walk
order and index width (measured), a codebook's width (float16 where that is exact), the
Huffman codes. The stage's checks and conversions (which tensors are sparse or quantized, and
their consistency) are :mod:`deepcomp.encode`'s. Numpy only: no torch.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import huffman
from .format import (BLOCKS, CODEBOOK_DTYPES, CODED, FIELDS_V2, MAGIC, MAX_BITS, NUMPY, PREFIX_V2,
                     SECTIONS_V2, TRAILER, VERSION, canonical_json, deflate, delta_code,
                     jsonable, shuffle)
from .sparse import filler_free_bits, gap_symbols, walk

__all__ = ["EncodedTensor", "dense_tensor", "sparse_tensor", "quantized_tensor", "stored_bytes",
           "side_blocks", "header_entry", "pack"]


@dataclass
class EncodedTensor:
    entry: dict                                   # name, dtype, shape, kind and its fields
    sections: dict                                # section name -> bytes (codebook, dense too)
    tables: dict = field(default_factory=dict)    # Huffman stream -> its code lengths


def _code_lengths(symbols: np.ndarray, alphabet: int, max_len: int) -> np.ndarray:
    freqs = np.bincount(symbols, minlength=alphabet)
    used = int((freqs > 0).sum())
    max_len = min(huffman.MAX_CODE_LENGTH, max(max_len, math.ceil(math.log2(max(used, 2)))))
    return huffman.code_lengths(freqs, max_len)


def _huffman(symbols: np.ndarray, alphabet: int, max_len: int) -> tuple[np.ndarray, bytes]:
    """(code lengths, stream) of a symbol stream."""
    lengths = _code_lengths(symbols, alphabet, max_len)
    stream, _ = huffman.encode(symbols, lengths)
    return lengths, stream


def dense_tensor(name: str, dtype: str, shape: list, stored: str, data: bytes) -> EncodedTensor:
    """A dense tensor: its elements' little-endian bytes in dtype ``stored`` (row-major)."""
    return EncodedTensor({"name": name, "dtype": dtype, "shape": list(shape), "kind": "dense",
                          "stored": stored}, {"dense": data})


def _codebook_section(cb: np.ndarray) -> tuple[str, bytes]:
    """Float16 when every centroid is a float16 number (the quantizer rounds them so), else
    float32: (codebook dtype, section)."""
    half = cb.astype("<f2")
    if np.array_equal(half.astype(np.float32), cb):
        return "float16", half.tobytes()
    return "float32", cb.astype("<f4").tobytes()


def _gaps(m, ibits, max_len):
    """The walk order (row or column) and relative index width (``ibits``, or where it is None
    every width up to the first that needs no filler) that give the fewest bytes of gap stream
    and code table, the table counted as 4-bit lengths up to its last used symbol (ties: csr,
    then the narrower index): (order, index bits,
    positions, entries, gap code lengths, gap stream). The weights' symbols are the same
    multiset either way, so their Huffman code and byte count are too. Candidates are sized in
    the order of their Shannon bound, which no Huffman code beats: once the bound reaches the
    best size so far, no later candidate can win."""
    cands = []
    for i, order in enumerate(("csr", "csc")):
        pos = walk(m, order)
        for bits in [ibits] if ibits else range(1, filler_free_bits(pos, MAX_BITS) + 1):
            stored = gap_symbols(pos, bits)
            cands.append((huffman.shannon_bits(stored) / 8, (i, bits), order, bits, pos, stored))
    best = None
    for bound, rank, order, bits, pos, stored in sorted(cands, key=lambda c: c[:2]):
        if best is not None and bound >= best[0][0]:
            break
        lengths = _code_lengths(stored, (1 << bits) + 1, max_len)
        size = (-(-int(lengths.astype(np.int64)[stored].sum()) // 8)
                + len(huffman.pack_lengths(lengths)), rank)
        if best is None or size < best[0]:
            best = (size, order, bits, pos, stored, lengths)
    _, order, bits, pos, stored, lengths = best
    return order, bits, pos, len(stored), lengths, huffman.encode(stored, lengths)[0]


def _sparse_entry(name, shape, m, ibits, max_len):
    """A mask's entry fields, kept positions in walk order, gap code lengths and gap stream."""
    order, ibits, pos, entries, glen, gstream = _gaps(m, ibits, max_len)
    entry = {"name": name, "dtype": "float32", "shape": list(shape), "order": order,
             "index_bits": ibits, "entries": entries, "nonzeros": int(len(pos))}
    return entry, pos, glen, gstream


def sparse_tensor(name: str, shape: list, w: np.ndarray, m: np.ndarray, ibits: int | None,
                  max_len: int) -> EncodedTensor:
    """A pruned float32 weight: ``w`` and its mask ``m`` as ``[rows, cols]`` arrays (zeros
    outside the mask); ``ibits`` the index width, or None to measure the best."""
    entry, pos, glen, gstream = _sparse_entry(name, shape, m, ibits, max_len)
    flat = (w if entry["order"] == "csr" else w.T).reshape(-1)
    return EncodedTensor({**entry, "kind": "sparse"},
                         {"gaps": gstream, "values": flat[pos].astype("<f4").tobytes()},
                         {"gaps": glen})


def quantized_tensor(name: str, shape: list, cb: np.ndarray, idx: np.ndarray, m: np.ndarray | None,
                     bits: int, meta: dict, ibits: int | None, max_len: int) -> EncodedTensor:
    """A quantized float32 weight: codebook ``cb`` (float32), cluster indices ``idx`` as a
    ``[rows, cols]`` int64 array (-1: no cluster), its mask ``m`` (None: not pruned, every
    element gets a symbol), ``bits`` and the quantizer's other fields ``meta``."""
    k = len(cb)
    cb_dtype, codebook = _codebook_section(cb)
    fields = {"bits": bits, "codebook_size": k, "codebook_dtype": cb_dtype, "quant_meta": meta}
    if m is None:                                   # quantized, not pruned: every index, no gaps
        wlen, wstream = _huffman(np.where(idx >= 0, idx, k).reshape(-1), k + 1, max_len)
        return EncodedTensor({"name": name, "dtype": "float32", "shape": list(shape), **fields,
                              "kind": "quantized_dense"},
                             {"codebook": codebook, "weights": wstream}, {"weights": wlen})
    entry, pos, glen, gstream = _sparse_entry(name, shape, m, ibits, max_len)
    sym = (idx if entry["order"] == "csr" else idx.T).reshape(-1)[pos]
    wlen, wstream = _huffman(np.where(sym >= 0, sym, k), k + 1, max_len)
    return EncodedTensor({**entry, **fields, "kind": "quantized"},
                         {"codebook": codebook, "weights": wstream, "gaps": gstream},
                         {"weights": wlen, "gaps": glen})


def stored_bytes(t: EncodedTensor) -> int:
    """Bytes of a tensor's sections, code tables (4-bit lengths) and header entry, before any
    DEFLATE."""
    return (sum(len(b) for b in t.sections.values())
            + sum(len(huffman.pack_lengths(L)) for L in t.tables.values())
            + len(canonical_json(jsonable(header_entry(t, {})))))


# --- the header (docs/FORMAT.md, "Header") ------------------------------------------------------

def _compact_data(data: dict) -> dict:
    """The data set's description; class names 0..n-1 written as their count n."""
    d = dict(data)
    if d.get("classes") == [str(i) for i in range(len(d.get("classes") or []))] and d["classes"]:
        d["classes"] = len(d["classes"])
    return d


def _layout(tensors: list[EncodedTensor]) -> dict:
    """Every tensor's name, dtype and shape, sorted by name (``state``, with ``explicit``): the
    file describes itself, so a reader that cannot build the architecture (the C reader, c/)
    reads it too; about 1% of a ResNet-20 file (docs/FORMAT.md, "Names, dtypes and shapes")."""
    return {"explicit": True,
            "state": [[t.entry["name"], t.entry["dtype"], list(t.entry["shape"])]
                      for t in sorted(tensors, key=lambda t: t.entry["name"])]}


def header_entry(t: EncodedTensor, quant_meta: dict):
    """A tensor's version 2 header entry: 0 for a dense tensor stored in its own dtype, else
    ``[kind, fields...]`` (format.FIELDS_V2; ``*_len`` are section lengths), then the
    quantizer fields where they are not the shared ones."""
    e, secs = t.entry, t.sections
    if e["kind"] == "dense" and e["stored"] == e["dtype"]:
        return 0
    out = [e["kind"]] + [len(secs[f[:-len("_len")]]) if f.endswith("_len") else e[f]
                         for f in FIELDS_V2[e["kind"]]]
    if "quant_meta" in e and e["quant_meta"] != quant_meta:
        out.append(e["quant_meta"])
    return out


def _shared_meta(tensors: list[EncodedTensor]) -> dict:
    """The quantizer fields most tensors share (ties: the first in name order)."""
    metas = [canonical_json(t.entry["quant_meta"]) for t in tensors if "quant_meta" in t.entry]
    if not metas:
        return {}
    best = max(dict.fromkeys(metas), key=metas.count)
    return next(t.entry["quant_meta"] for t in tensors
                if "quant_meta" in t.entry and canonical_json(t.entry["quant_meta"]) == best)


def side_blocks(tensors: list[EncodedTensor]) -> dict:
    """The three side blocks of the data area (docs/FORMAT.md, "Side blocks"), each raw
    DEFLATE of (or empty when there is nothing to put in it): ``code_tables``, every stream's
    code lengths, a byte per symbol of its alphabet; ``codebooks``, every codebook
    delta-coded; ``dense``, every dense tensor's bytes as byte planes. Tensors in name order."""
    tables, codebooks, dense = [], [], []
    for t in tensors:
        e, secs = t.entry, t.sections
        tables += [np.asarray(t.tables[s], np.uint8).tobytes()
                   for s in SECTIONS_V2[e["kind"]] if s in CODED]
        if "codebook" in secs:
            codebooks.append(delta_code(secs["codebook"], CODEBOOK_DTYPES[e["codebook_dtype"]]))
        if "dense" in secs:
            dense.append(shuffle(secs["dense"], np.dtype(NUMPY[e["stored"]]).itemsize))
    return {k: deflate(b"".join(v)) if any(v) else b""
            for k, v in (("code_tables", tables), ("codebooks", codebooks), ("dense", dense))}


def pack(arch: dict, data: dict, history: list, tensors: list[EncodedTensor],
         graph: list | None = None) -> bytes:
    """The bytes of a version 2 .dc file (docs/FORMAT.md, "Layout"); 2.1 with a graph."""
    tensors = sorted(tensors, key=lambda t: t.entry["name"])
    meta = _shared_meta(tensors)
    blocks = side_blocks(tensors)
    header = {"arch": arch, "data": _compact_data(data), "history": history,
              "quant_meta": meta, "blocks": {k: len(b) for k, b in blocks.items()},
              "tensors": [header_entry(t, meta) for t in tensors], **_layout(tensors)}
    if graph is not None:
        header["graph"] = graph
    header = deflate(canonical_json(jsonable(header)))
    streams = [t.sections[s] for t in tensors for s in SECTIONS_V2[t.entry["kind"]]]
    data_area = b"".join(blocks[k] for k in BLOCKS) + b"".join(streams)
    version = VERSION if graph is None else (VERSION[0], 1)
    body = PREFIX_V2.pack(MAGIC, *version, len(header), len(data_area)) + header + data_area
    return body + TRAILER.pack(zlib.crc32(body))
