"""Reading a ``.dc`` file, versions 1 and 2 (docs/FORMAT.md), into numpy arrays: every tensor
with its mask and quantizer entry, the header, and the file's figures about itself (the byte
breakdown and each stream's statistics). :mod:`deepcomp.loading` turns what this returns into
a stage file and a model.

The reader takes files from anyone: every malformed input raises a subclass of
:class:`deepcomp.errors.FormatError`, and no array is sized from a declared count before that
count is checked against the file size and the tensors' shapes. A file that lists its tensors
(what the encoder writes) reads with nothing but this package; version 1 files and version 2
files that imply their tensors from the architecture need the caller's ``arch_layout``, which
builds it. Numpy only: no torch.

Each version turns its header into "plans", one per tensor in name order: the fields of a
version 1 entry (name, dtype, shape, kind and the kind's fields, plus ``codebook_dtype``),
``secs`` (section name -> bytes) and ``tables`` (stream name -> code lengths). The rest of the
reader is the same for both versions.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ChecksumError, CountMismatchError, HeaderError, InvalidOffsetError, UsageError
from . import huffman
from .format import (BLOCKS, BREAKDOWN, CODEBOOK_DTYPES, CODED, DTYPES, NUMPY, SECTIONS_V2,
                     alphabet, check_entry_v1, check_entry_v2, check_shape, check_total,
                     delta_decode, inflate, is_int, parse_header, read_prefix, tile, unshuffle)
from .graph import check_graph
from .sparse import as_2d, gap_positions, row_major

__all__ = ["DecodedTensor", "DcFile", "read", "read_file"]

MAX_CLASSES = 100_000          # class names a header may abbreviate as a count

# ``arch_layout(arch, name, required)``: ``{tensor name: (dtype name, shape)}`` of the
# architecture the header names, in the model's order; it may return None where ``required``
# is False (the file lists its tensors) and it will not build the model.
ArchLayout = Callable[[dict, str, bool], "dict | None"]


@dataclass
class DecodedTensor:
    """One tensor of a file, decoded."""
    name: str
    dtype: str                  # the tensor's dtype (format.DTYPES)
    shape: tuple
    kind: str                   # dense, sparse, quantized or quantized_dense (format.KINDS)
    stored: str                 # the dtype of ``array``: a dense tensor's stored dtype, else float32
    array: np.ndarray           # the values, shaped; bfloat16 as the int16 of its bits
    mask: np.ndarray | None = None   # sparse and quantized: True where a weight is kept
    quant: dict | None = None   # quantized kinds: the quantizer's fields, "codebook" (float32),
    #                             "bits", "indices" (int16, shaped, -1: no cluster)


@dataclass
class DcFile:
    """What a ``.dc`` file holds."""
    version: tuple[int, int]    # (major, minor)
    header: dict                # arch, data (class names expanded), history, ...
    tensors: dict               # name -> DecodedTensor, in the state dict's order
    nbytes: int                 # the file's size
    parts: dict                 # bytes per part of the file but the header (format.BREAKDOWN)
    stats: dict                 # per sparse or quantized tensor: entries, bits, efficiency, ...


def read_file(path: str, arch_layout: ArchLayout | None = None) -> DcFile:
    """The .dc file at ``path``; see :func:`read`."""
    with open(path, "rb") as f:
        buf = f.read()
    return read(buf, os.path.basename(path), arch_layout)


def read(buf: bytes, name: str = "<bytes>", arch_layout: ArchLayout | None = None) -> DcFile:
    """The bytes of a .dc file, checked and decoded. ``name`` starts every error message;
    ``arch_layout`` builds the architecture's layout (above): without it, only files that
    list their tensors are read, their tensors in name order."""
    version, hoff, hlen, dlen = read_prefix(buf, name)
    raw = buf[hoff:hoff + hlen]
    data = memoryview(buf)[hoff + hlen:hoff + hlen + dlen]
    plans_of = _plans_v1 if version[0] == 1 else _plans_v2
    h, plans, order = plans_of(raw, data, name, arch_layout, len(buf))
    streams = _decode_streams(plans, name)
    tensors = {t["name"]: _tensor(t, streams, f"{name}: {t['name']}") for t in plans}
    parts = _parts_v1(plans) if version[0] == 1 else _parts_v2(plans, h["blocks"])
    return DcFile(version, h, {k: tensors[k] for k in order}, len(buf), parts,
                  {t["name"]: _stats(t, streams) for t in plans if t["kind"] != "dense"})


def _arch_layout(arch_layout: ArchLayout | None, arch: dict, name: str, required: bool):
    if arch_layout is None:
        if required:
            raise HeaderError(f"{name}: the file does not list its tensors; reading it needs "
                              f"the architecture {arch['name']!r} (deepcomp.loading)")
        return None
    return arch_layout(arch, name, required)


# --- version 1 (docs/FORMAT.md, appendix) ----------------------------------------------------

def _plans_v1(raw: bytes, data, name: str, arch_layout, nbytes: int):
    h = parse_header(raw, name, {"arch", "data", "history", "tensors"})
    if not isinstance(h["tensors"], list):
        raise HeaderError(f"{name}: header 'tensors' must be a list")
    offset, names = 0, []
    for t in h["tensors"]:
        check_entry_v1(t, name)
        names.append(t["name"])
        for sec, off, length, crc in t["sections"]:
            if off != offset or off + length > len(data):
                raise InvalidOffsetError(f"{name}: section {sec} of {t['name']!r} at {off}+{length}; "
                                         f"expected offset {offset} within {len(data)} data bytes")
            offset += length
    if offset != len(data):
        raise InvalidOffsetError(f"{name}: sections cover {offset} of {len(data)} data bytes")
    if names != sorted(set(names)):
        raise HeaderError(f"{name}: tensors must be sorted by name, each once")
    model = _arch_layout(arch_layout, h["arch"], name, True)
    _check_fit_v1(h, model, names, name, nbytes)
    for t in h["tensors"]:
        for sec, off, length, crc in t["sections"]:
            if zlib.crc32(data[off:off + length]) != crc:
                raise ChecksumError(f"{name}: checksum mismatch in section {sec} of {t['name']!r}")
    return h, [_plan_v1(t, data, name) for t in h["tensors"]], [k for k in model if k in names]


def _check_fit_v1(h: dict, model: dict, names: list, name: str, nbytes: int) -> None:
    """The entries are the architecture's tensors, of its shapes, within the reader's limits."""
    check_total([s for _, s in model.values()], name, nbytes)
    required = {k for k in model if not k.endswith("num_batches_tracked")}
    missing, unknown = sorted(required - set(names)), sorted(set(names) - set(model))
    if missing or unknown:
        raise HeaderError(f"{name}: tensors do not fit {h['arch']['name']}: "
                          f"missing {missing[:3]}, unexpected {unknown[:3]}")
    for t in h["tensors"]:
        if tuple(t["shape"]) != model[t["name"]][1]:
            raise HeaderError(f"{name}: tensor {t['name']!r} has shape {t['shape']}, "
                              f"{h['arch']['name']} expects {list(model[t['name']][1])}")
    check_total([t["shape"] for t in h["tensors"]], name, nbytes)


def _plan_v1(t: dict, data, name: str) -> dict:
    secs = {s[0]: bytes(data[s[1]:s[1] + s[2]]) for s in t["sections"]}
    p = {**{k: v for k, v in t.items() if k != "sections"}, "secs": secs, "tables": {},
         "codebook_dtype": "float32"}
    where = f"{name}: {t['name']}"
    if "gap_codes" in secs:
        p["tables"]["gaps"] = huffman.unpack_lengths(
            secs["gap_codes"], alphabet(t, "gaps"), f"{where} gap codes")
    if "weight_codes" in secs:
        p["tables"]["weights"] = huffman.unpack_lengths(
            secs["weight_codes"], alphabet(t, "weights"), f"{where} weight codes")
    return p


def _parts_v1(plans: list) -> dict:
    parts = dict.fromkeys(dict.fromkeys(BREAKDOWN.values()), 0)
    for t in plans:
        for sec, b in t["secs"].items():
            parts[BREAKDOWN[sec]] += len(b)
    return parts


# --- version 2 (docs/FORMAT.md, "Header" and "Data") ----------------------------------------

def _plans_v2(raw: bytes, data, name: str, arch_layout, nbytes: int):
    h = parse_header(raw, name, {"arch", "data", "history", "quant_meta", "blocks", "tensors"},
                     {"state", "drop", "explicit", "graph"})
    if not isinstance(h["quant_meta"], dict) or not isinstance(h["tensors"], list):
        raise HeaderError(f"{name}: 'quant_meta' must be an object and 'tensors' a list")
    _check_blocks(h["blocks"], name)
    layout, order = _layout_v2(h, name, arch_layout, nbytes)
    names = sorted(layout)
    if len(h["tensors"]) != len(names):
        raise HeaderError(f"{name}: {len(h['tensors'])} tensor entries for the "
                          f"{len(names)} tensors of the state dict")
    plans = [check_entry_v2(e, n, *layout[n], h["quant_meta"], name)
             for e, n in zip(h["tensors"], names)]
    lengths = [[(sec, _length(t, sec)) for sec in SECTIONS_V2[t["kind"]]] for t in plans]
    spans = tile([h["blocks"][k] for k in BLOCKS] + [n for secs in lengths for _, n in secs],
                 0, len(data), name)
    if spans[-1][0] + spans[-1][1] != len(data):
        raise InvalidOffsetError(f"{name}: sections cover {spans[-1][0] + spans[-1][1]} of "
                                 f"{len(data)} data bytes")
    blocks = {k: bytes(data[off:off + n]) for k, (off, n) in zip(BLOCKS, spans)}
    _side_blocks(plans, blocks, name)
    i = len(BLOCKS)
    for t, secs in zip(plans, lengths):
        for sec, _ in secs:
            off, n = spans[i]
            t["secs"][sec] = bytes(data[off:off + n])
            i += 1
    h["data"] = _expand_data(h["data"], name)
    if "graph" in h:
        _check_graph(h, layout, name)
    return h, plans, order


def _length(t: dict, sec: str) -> int:
    """A version 2 section's length: ``weights_len``, ``gaps_len``, 4 bytes per value."""
    return 4 * t["nonzeros"] if sec == "values" else t[f"{sec}_len"]


def _layout_v2(h: dict, name: str, arch_layout, nbytes: int) -> tuple[dict, list]:
    """``({tensor name: (dtype, shape)}, names in the model's order)`` of a version 2 header:
    the architecture's state dict with the header's ``state`` and ``drop`` applied, or the
    ``state`` list alone when ``explicit`` (:func:`_explicit_layout`)."""
    explicit = h.get("explicit", False)
    state, drop = h.get("state", []), h.get("drop", [])
    if explicit is not True and explicit is not False or (explicit and ("drop" in h
                                                                        or "state" not in h)):
        raise HeaderError(f"{name}: 'explicit' must be true, with 'state' and without 'drop'")
    if not (isinstance(state, list) and all(isinstance(s, list) and len(s) == 3
                                            and isinstance(s[0], str) for s in state)):
        raise HeaderError(f"{name}: 'state' must be a list of [name, dtype, shape]")
    if not (isinstance(drop, list) and all(isinstance(d, str) for d in drop)) \
            or drop != sorted(set(drop)) or [s[0] for s in state] != sorted({s[0] for s in state}):
        raise HeaderError(f"{name}: 'state' and 'drop' must be sorted by name, each name once")
    for n, dtype, shape in state:
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise HeaderError(f"{name}: tensor {n!r}: unknown dtype {dtype!r}")
        check_shape(shape, f"{name}: tensor {n!r}")
    if explicit:
        return _explicit_layout(h, state, name, arch_layout, nbytes)
    layout = _arch_layout(arch_layout, h["arch"], name, True)
    check_total([s for _, s in layout.values()], name, nbytes)
    if set(drop) - set(layout) or set(drop) & {s[0] for s in state}:
        raise HeaderError(f"{name}: 'drop' names a tensor the architecture does not build "
                          "or 'state' sets")
    order = list(layout)
    for n in drop:
        del layout[n]
    for n, dtype, shape in state:
        if n not in layout:
            order.append(n)
        layout[n] = (dtype, tuple(shape))
    check_total([s for _, s in layout.values()], name, nbytes)
    return layout, [n for n in order if n in layout]


def _explicit_layout(h: dict, state: list, name: str, arch_layout, nbytes: int
                     ) -> tuple[dict, list]:
    """The layout of a file that lists every tensor (``explicit``, what deepcomp encode
    writes). The architecture only orders the state dict like the model's: where the caller
    builds it (a registry name, on the meta device) it is checked as in an implicit file, its
    size too; a user's ``module:factory`` reference is never imported to read a file (building
    the model is), and without ``arch_layout`` the tensors keep their name order."""
    layout = {n: (dtype, tuple(shape)) for n, dtype, shape in state}
    check_total([s for _, s in layout.values()], name, nbytes)
    built = _arch_layout(arch_layout, h["arch"], name, False)
    if built is None:
        return layout, list(layout)
    check_total([s for _, s in built.values()], name, nbytes)   # what loading the model builds
    return layout, [n for n in built if n in layout] + [n for n in layout if n not in built]


def _check_blocks(blocks, name: str) -> None:
    if not (isinstance(blocks, dict) and set(blocks) == set(BLOCKS)
            and all(is_int(v) for v in blocks.values())):
        raise HeaderError(f"{name}: 'blocks' must give the lengths of {', '.join(BLOCKS)}")


def _check_graph(h: dict, layout: dict, name: str) -> None:
    """A version 2.1 file's graph (docs/FORMAT.md, "Graph") against its tensors and input."""
    size = h["data"].get("input_size")
    if not (isinstance(size, list) and size and all(is_int(d, 1, 1 << 16) for d in size)):
        raise HeaderError(f"{name}: a graph needs data.input_size, a list of sizes")
    try:
        check_graph(h["graph"], {k: s for k, (_, s) in layout.items()}, size, "graph")
    except UsageError as e:
        raise HeaderError(f"{name}: {e}") from None


def _inflate_block(block: bytes, want: int, what: str) -> bytes:
    """A side block: empty when it holds nothing, else DEFLATE of exactly ``want`` bytes."""
    if not block and want:
        raise CountMismatchError(f"{what}: an empty block for {want} bytes")
    if block and not want:
        raise CountMismatchError(f"{what}: {len(block)} bytes where nothing is stored")
    raw = inflate(block, want, what) if block else b""
    if len(raw) != want:
        raise CountMismatchError(f"{what}: {len(raw)} bytes, {want} expected")
    return raw


def _side_blocks(plans: list, blocks: dict, name: str) -> None:
    """Give each plan its code lengths (``tables``), codebook and dense bytes (``secs``), in
    the layout of version 1's sections, from the side blocks (docs/FORMAT.md)."""
    coded = [[s for s in SECTIONS_V2[t["kind"]] if s in CODED] for t in plans]
    raw = _inflate_block(blocks["code_tables"], sum(alphabet(t, s) for t, ss in zip(plans, coded)
                                                    for s in ss), f"{name}: code tables")
    lengths = np.frombuffer(raw, np.uint8)
    if len(lengths) and lengths.max() > huffman.MAX_CODE_LENGTH:
        raise CountMismatchError(f"{name}: a code length over {huffman.MAX_CODE_LENGTH}")
    cb_width = {id(t): CODEBOOK_DTYPES[t["codebook_dtype"]] for t in plans if "codebook_dtype" in t}
    dense_width = {id(t): np.dtype(NUMPY[t["stored"]]).itemsize for t in plans
                   if t["kind"] == "dense"}
    cbs = _inflate_block(blocks["codebooks"], sum(t["codebook_size"] * cb_width[id(t)]
                                                  for t in plans if id(t) in cb_width),
                         f"{name}: codebooks")
    dense = _inflate_block(blocks["dense"], sum(math.prod(t["shape"]) * dense_width[id(t)]
                                                for t in plans if id(t) in dense_width),
                           f"{name}: dense tensors")
    at = {"tables": 0, "codebooks": 0, "dense": 0}
    for t, streams in zip(plans, coded):
        t["secs"], t["tables"] = {}, {}
        for stream in streams:
            n = alphabet(t, stream)
            t["tables"][stream] = lengths[at["tables"]:at["tables"] + n]
            at["tables"] += n
        if id(t) in cb_width:
            n = t["codebook_size"] * cb_width[id(t)]
            t["secs"]["codebook"] = delta_decode(cbs[at["codebooks"]:at["codebooks"] + n],
                                                 cb_width[id(t)])
            at["codebooks"] += n
        if id(t) in dense_width:
            n = math.prod(t["shape"]) * dense_width[id(t)]
            t["secs"]["dense"] = unshuffle(dense[at["dense"]:at["dense"] + n], dense_width[id(t)])
            at["dense"] += n


def _expand_data(data: dict, name: str) -> dict:
    """Class names written as their count n are 0..n-1."""
    n = data.get("classes")
    if isinstance(n, int) and not isinstance(n, bool):
        if not is_int(n, 1, MAX_CLASSES):
            raise HeaderError(f"{name}: 'classes' must be a list or a count up to {MAX_CLASSES}")
        data = {**data, "classes": [str(i) for i in range(n)]}
    return data


def _parts_v2(plans: list, blocks: dict) -> dict:
    """Bytes per part: the side blocks, then the streams (a bias or batch norm shared by
    --dense-bits counts as dense)."""
    parts = dict.fromkeys(dict.fromkeys(BREAKDOWN.values()), 0)
    parts.update(blocks)
    for t in plans:
        vector = len(t["shape"]) < 2
        for sec in SECTIONS_V2[t["kind"]]:
            parts["dense" if vector else BREAKDOWN[sec]] += len(t["secs"][sec])
    return parts


# --- both versions: streams and tensors ----------------------------------------------------

def _decode_streams(plans: list, name: str) -> dict:
    """Every Huffman stream of the file, decoded in one batch: {(tensor, stream): symbols}.
    Counts are checked against the shapes before anything is sized from them."""
    jobs, slots = [], []
    for t in plans:
        where = f"{name}: {t['name']}"
        numel = math.prod(t["shape"])
        if t["kind"] in ("sparse", "quantized"):
            if t["nonzeros"] > min(numel, t["entries"]) or \
                    t["entries"] - t["nonzeros"] > numel >> t["index_bits"]:
                raise CountMismatchError(f"{where}: {t['nonzeros']} non-zeros in {t['entries']} "
                                         f"entries do not fit {numel} elements")
            jobs.append((t["secs"]["gaps"], t["tables"]["gaps"], t["entries"], f"{where} gaps"))
            slots.append((t["name"], "gaps"))
        if t["kind"] in ("quantized", "quantized_dense"):
            count = numel if t["kind"] == "quantized_dense" else t["nonzeros"]
            jobs.append((t["secs"]["weights"], t["tables"]["weights"], count, f"{where} weights"))
            slots.append((t["name"], "weights"))
    return dict(zip(slots, huffman.decode_many(jobs)))


def _stats(t, streams) -> dict:
    """A sparse or quantized tensor's figures for the encoded record: entries, fillers, mean
    Huffman bits per weight and per gap, fixed widths, Huffman efficiency, bytes."""
    def bits(part):
        sym, lengths = streams[(t["name"], part)], t["tables"][part]
        used = int(lengths.astype(np.int64)[sym].sum()) if len(sym) else 0
        eff = huffman.shannon_bits(sym) / used if used else None
        return used, eff, len(sym)
    numel = math.prod(t["shape"])
    out = {"kind": t["kind"], "shape": list(t["shape"]), "order": t.get("order", "-"),
           "raw_weight_bits": t.get("bits", 32), "raw_index_bits": t.get("index_bits", 0),
           "bytes": sum(len(b) for b in t["secs"].values())}
    if t["kind"] in ("sparse", "quantized"):
        g_used, g_eff, n = bits("gaps")
        span = 1 << t["index_bits"]
        out.update(entries=n, fillers=int((streams[(t["name"], "gaps")] == span).sum()),
                   index_bits=g_used / max(n, 1), efficiency_gaps=g_eff)
    else:
        out.update(entries=numel, fillers=0, index_bits=0.0, efficiency_gaps=None)
    if t["kind"] in ("quantized", "quantized_dense"):
        w_used, w_eff, n = bits("weights")
        out.update(weight_bits=w_used / max(n, 1), efficiency_weights=w_eff)
    else:
        out.update(weight_bits=32.0, efficiency_weights=None)
    return out


def _tensor(t: dict, streams: dict, where: str) -> DecodedTensor:
    """The tensor of one plan, its mask and quantizer entry."""
    shape, kind = tuple(t["shape"]), t["kind"]
    if kind == "dense":
        return DecodedTensor(t["name"], t["dtype"], shape, kind, t["stored"],
                             _dense(t, where).reshape(shape))
    if kind != "sparse":                      # quantized: a symbol per weight, from a codebook
        cb = _codebook(t, where)
        sym = streams[(t["name"], "weights")].astype(np.int64)     # < k + 1: the alphabet
        idx = np.where(sym < t["codebook_size"], sym, -1)
        values = np.append(cb, np.float32(0))[sym]                 # symbol k: no cluster, 0.0
    if kind == "quantized_dense":
        return DecodedTensor(t["name"], t["dtype"], shape, kind, "float32", values.reshape(shape),
                             None, _quant(t, cb, idx.astype(np.int16).reshape(shape)))
    lin = _positions(t, streams, where)
    if kind == "sparse":
        if len(t["secs"]["values"]) != 4 * t["nonzeros"]:
            raise CountMismatchError(f"{where}: {len(t['secs']['values'])} value bytes for "
                                     f"{t['nonzeros']} non-zeros")
        values = np.frombuffer(t["secs"]["values"], "<f4").astype(np.float32)
    numel = math.prod(shape)
    flat, mask = np.zeros(numel, np.float32), np.zeros(numel, bool)
    flat[lin] = values
    mask[lin] = True
    q = None
    if kind == "quantized":
        full = np.full(numel, -1, np.int16)
        full[lin] = idx
        q = _quant(t, cb, full.reshape(shape))
    return DecodedTensor(t["name"], t["dtype"], shape, kind, "float32", flat.reshape(shape),
                         mask.reshape(shape), q)


def _dense(t: dict, where: str) -> np.ndarray:
    """A dense tensor's elements in its stored dtype (bool as bool, bfloat16 as int16)."""
    s, numel = t["secs"], math.prod(t["shape"])
    item = np.dtype(NUMPY[t["stored"]]).itemsize
    if len(s["dense"]) != numel * item:
        raise CountMismatchError(f"{where}: {len(s['dense'])} bytes for {numel} "
                                 f"{t['stored']} elements")
    a = np.frombuffer(s["dense"], NUMPY[t["stored"]])
    a = a.astype(a.dtype.newbyteorder("="))
    if t["stored"] == "bool":
        if a.max(initial=0) > 1:
            raise CountMismatchError(f"{where}: bool bytes other than 0 and 1")
        a = a.astype(bool)
    return a


def _codebook(t: dict, where: str) -> np.ndarray:
    k, cb_dtype, raw = t["codebook_size"], t["codebook_dtype"], t["secs"]["codebook"]
    if len(raw) != CODEBOOK_DTYPES[cb_dtype] * k:
        raise CountMismatchError(f"{where}: codebook of {len(raw)} bytes, "
                                 f"expected {CODEBOOK_DTYPES[cb_dtype] * k}")
    return np.frombuffer(raw, NUMPY[cb_dtype]).astype(np.float32)


def _quant(t: dict, cb: np.ndarray, idx: np.ndarray) -> dict:
    return {**t["quant_meta"], "codebook": cb.copy(), "bits": t["bits"], "indices": idx}


def _positions(t: dict, streams: dict, where: str) -> np.ndarray:
    """The kept weights' row-major indices, from the gap stream (docs/FORMAT.md, "Sparse
    positions"), checked against the header's count and the shape."""
    g = streams[(t["name"], "gaps")]
    pos = gap_positions(g, t["index_bits"])
    if len(pos) != t["nonzeros"] or (len(g) and g[-1] == 1 << t["index_bits"]):
        raise CountMismatchError(f"{where}: the gap stream holds {len(pos)} non-zeros, "
                                 f"the header says {t['nonzeros']}")
    numel = math.prod(t["shape"])
    if len(pos) and pos[-1] >= numel:
        raise CountMismatchError(f"{where}: a position beyond the {numel} elements")
    return row_major(pos, t["order"], *as_2d(t["shape"]))
