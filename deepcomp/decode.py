"""Read a ``.dc`` file back into a stage file, a state dict or a model (docs/FORMAT.md).

The reader takes files from anyone: every malformed input raises a subclass of
:class:`deepcomp.errors.FormatError`, and no array is sized from a declared count before that
count is checked against the file size and the architecture's shapes. It reads format versions
1 and 2; the byte layout is :mod:`deepcomp.dcformat`'s.
"""
from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np
import torch

from . import huffman
from .dcformat import (BLOCKS, BREAKDOWN, CODEBOOK_DTYPES, DTYPE_NAMES, DTYPES, MAX_ELEMENTS,
                       MAX_HEADER_BYTES, NUMPY, arch_state, check_entry_v1, check_entry_v2,
                       check_shape, check_total, delta_decode, inflate, is_int, parse_header,
                       read_prefix, STREAM_SECTIONS, tile, unshuffle)
from .errors import (ChecksumError, CountMismatchError, HeaderError, InvalidOffsetError)
from .models import is_reference
from .sparse import as_2d
from .stagefile import StageFile

__all__ = ["read_dc", "decode_bytes", "decode", "load", "MAX_HEADER_BYTES", "MAX_ELEMENTS"]

MAX_CLASSES = 100_000          # class names a header may abbreviate as a count


def read_dc(path: str, template: torch.nn.Module | None = None) -> StageFile:
    """The stage file stored in the .dc file ``path``. ``template``: the user's own module,
    whose state dict the file is read against (instead of building the architecture it names)."""
    with open(path, "rb") as f:
        buf = f.read()
    return decode_bytes(buf, os.path.basename(path), template)


def decode(src: str, out: str | None = None, model: str | None = None,
           sparse: bool = False) -> dict:
    """The effective state dict of a .dc file; also written to ``out`` when given: a
    safetensors file where ``out`` ends in ``.safetensors``, else a plain ``torch.save`` state
    dict (loads with ``weights_only=True``). A file whose architecture is a ``module:factory``
    reference needs ``model`` to name it (deepcomp.models).

    ``sparse=True`` returns every pruned weight as a ``scipy.sparse.csr_matrix`` of its 2-D
    view ``[out, in * kh * kw]`` (the paper's layout; its explicit zeros none, its non-zeros
    exactly the kept weights), for analysis and sparse inference; other tensors as they are."""
    from .loading import load_stage
    from .stagefile import atomic_write
    sf = load_stage(src, model=model)
    sd = sf.state_dict
    if out:
        if out.endswith(".safetensors"):
            from safetensors.torch import save
            blob = save({k: v.contiguous() for k, v in sd.items()},
                        metadata={"format": "pt", "deepcomp.arch": json.dumps(sf.arch)})
            atomic_write(out, lambda f: f.write(blob))
        else:
            atomic_write(out, lambda f: torch.save(sd, f))
    if sparse:
        return {k: _csr(v, sf.masks[k]) if k in sf.masks else v for k, v in sd.items()}
    return sd


def _csr(w: torch.Tensor, mask: torch.Tensor):
    """A pruned weight as a CSR matrix of its 2-D view, holding exactly the kept weights."""
    from scipy.sparse import csr_matrix
    rows, cols = as_2d(w.shape)
    m = mask.reshape(rows, cols).numpy()
    r, c = np.nonzero(m)
    values = w.detach().reshape(rows, cols).numpy()[r, c]
    return csr_matrix((values, (r, c)), shape=(rows, cols))


def load(src: str, device: str = "cpu", model: str | torch.nn.Module | None = None
         ) -> torch.nn.Module:
    """The model of a .dc file (or stage file), on ``device``, in eval mode. ``model``: for a
    file of your own architecture, its ``module:factory`` reference (which allows deepcomp to
    import it), or an instance of it, which the weights are loaded into a copy of."""
    from .loading import load_stage
    if isinstance(model, torch.nn.Module):
        sf = load_stage(src, template=model)
    else:
        sf = load_stage(src, model=model)
    return sf.build_model().to(device).eval()


# --- the reader ----------------------------------------------------------------------------
#
# Each version turns its header into "plans", one per tensor in name order: the fields of a
# version 1 entry (name, dtype, shape, kind and the kind's fields, plus ``codebook_dtype``),
# ``secs`` (section name -> bytes) and ``tables`` (stream name -> code lengths). The rest of the
# reader is the same for both versions.

def decode_bytes(buf: bytes, name: str = "<bytes>", template: torch.nn.Module | None = None):
    """The stage file stored in the bytes of a .dc file (``template``: see :func:`read_dc`)."""
    version, hoff, hlen, dlen = read_prefix(buf, name)
    raw = buf[hoff:hoff + hlen]
    data = memoryview(buf)[hoff + hlen:hoff + hlen + dlen]
    read = _plans_v1 if version[0] == 1 else _plans_v2
    h, plans, order = read(raw, data, name, template, len(buf))
    streams = _decode_streams(plans, name)
    state, masks, quant = {}, {}, {}
    for t in plans:
        n = t["name"]
        state[n], mask, q = _tensor(t, t["secs"], streams, f"{name}: {n}")
        if mask is not None:
            masks[n] = mask
        if q is not None:
            quant[n] = q
    sf = StageFile(h["arch"], h["data"], {k: state[k] for k in order}, masks, quant,
                   h["history"], template=template)
    if version[0] == 1:
        _complete_v1(sf, plans, streams, len(buf))
    else:
        _complete_v2(sf, plans, streams, len(buf), h["blocks"])
    return sf


def _arch_layout(arch: dict, name: str, template) -> dict:
    """``{key: (dtype name, shape)}`` of the architecture, or of the user's ``template``."""
    if template is None:
        return arch_state(arch, name)
    return {k: (DTYPE_NAMES[v.dtype], tuple(v.shape)) for k, v in template.state_dict().items()}


def _plans_v1(raw: bytes, data, name: str, template, nbytes: int):
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
    model = _arch_layout(h["arch"], name, template)
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
    for t in h["tensors"]:
        for sec, off, length, crc in t["sections"]:
            if zlib.crc32(data[off:off + length]) != crc:
                raise ChecksumError(f"{name}: checksum mismatch in section {sec} of {t['name']!r}")
    plans = []
    for t in h["tensors"]:
        secs = {s[0]: bytes(data[s[1]:s[1] + s[2]]) for s in t["sections"]}
        p = {**{k: v for k, v in t.items() if k != "sections"}, "secs": secs, "tables": {},
             "codebook_dtype": "float32"}
        where = f"{name}: {t['name']}"
        if "gap_codes" in secs:
            p["tables"]["gaps"] = huffman.unpack_lengths(
                secs["gap_codes"], (1 << t["index_bits"]) + 1, f"{where} gap codes")
        if "weight_codes" in secs:
            p["tables"]["weights"] = huffman.unpack_lengths(
                secs["weight_codes"], t["codebook_size"] + 1, f"{where} weight codes")
        plans.append(p)
    return h, plans, [k for k in model if k in names]


def _layout_v2(h: dict, name: str, template, nbytes: int) -> tuple[dict, list]:
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
        return _explicit_layout(h, state, name, template, nbytes)
    layout = _arch_layout(h["arch"], name, template)
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


def _explicit_layout(h: dict, state: list, name: str, template, nbytes: int
                     ) -> tuple[dict, list]:
    """The layout of a file that lists every tensor (``explicit``, what deepcomp encode
    writes). The architecture only orders the state dict like the model's: a registry name
    is built (on the meta device) and so checked as in an implicit file, its size too; a user's
    ``module:factory`` reference is never imported to read a file (building the model is)."""
    layout = {n: (dtype, tuple(shape)) for n, dtype, shape in state}
    check_total([s for _, s in layout.values()], name, nbytes)
    if template is None and is_reference(h["arch"]["name"]):
        return layout, list(layout)
    built = _arch_layout(h["arch"], name, template)
    check_total([s for _, s in built.values()], name, nbytes)   # what loading the model builds
    return layout, [n for n in built if n in layout] + [n for n in layout if n not in built]


def _sections_v2(t: dict) -> list[tuple[str, int]]:
    """(section, length) of a version 2 entry's streams, in file order (docs/FORMAT.md)."""
    kind = t["kind"]
    out = []
    if kind in ("quantized", "quantized_dense"):
        out.append(("weights", t["weights_len"]))
    if kind in ("quantized", "sparse"):
        out.append(("gaps", t["gaps_len"]))
    if kind == "sparse":
        out.append(("values", 4 * t["nonzeros"]))
    return out


def _alphabets(t: dict) -> list[tuple[str, int]]:
    """(stream, alphabet size) of a tensor's Huffman streams, in file order."""
    out = []
    if t["kind"] in ("quantized", "quantized_dense"):
        out.append(("weights", t["codebook_size"] + 1))
    if t["kind"] in ("quantized", "sparse"):
        out.append(("gaps", (1 << t["index_bits"]) + 1))
    return out


def _check_blocks(blocks, name: str) -> None:
    if not (isinstance(blocks, dict) and set(blocks) == set(BLOCKS)
            and all(is_int(v) for v in blocks.values())):
        raise HeaderError(f"{name}: 'blocks' must give the lengths of {', '.join(BLOCKS)}")


def _plans_v2(raw: bytes, data, name: str, template, nbytes: int):
    h = parse_header(raw, name, {"arch", "data", "history", "quant_meta", "blocks", "tensors"},
                     {"state", "drop", "explicit", "graph"})
    if not isinstance(h["quant_meta"], dict) or not isinstance(h["tensors"], list):
        raise HeaderError(f"{name}: 'quant_meta' must be an object and 'tensors' a list")
    _check_blocks(h["blocks"], name)
    layout, order = _layout_v2(h, name, template, nbytes)
    names = sorted(layout)
    if len(h["tensors"]) != len(names):
        raise HeaderError(f"{name}: {len(h['tensors'])} tensor entries for the "
                          f"{len(names)} tensors of the state dict")
    plans = [check_entry_v2(e, n, *layout[n], h["quant_meta"], name)
             for e, n in zip(h["tensors"], names)]
    lengths = [_sections_v2(t) for t in plans]
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


def _check_graph(h: dict, layout: dict, name: str) -> None:
    """A version 2.1 file's graph (docs/FORMAT.md, "Graph") against its tensors and input."""
    from .errors import UsageError
    from .graph import check_graph
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
    sizes = [n for t in plans for _, n in _alphabets(t)]
    raw = _inflate_block(blocks["code_tables"], sum(sizes), f"{name}: code tables")
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
    for t in plans:
        t["secs"], t["tables"] = {}, {}
        for stream, n in _alphabets(t):
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


def _complete_v1(sf: StageFile, plans: list, streams: dict, nbytes: int) -> None:
    """A version 1 file stores part of its encoded record's sizes; fill in the rest."""
    rec = sf.history[-1] if sf.history else {}
    if rec.get("stage") == "encoded" and isinstance(rec.get("sizes"), dict) \
            and "bytes" not in rec["sizes"] and is_int(rec["sizes"].get("dense_bytes")):
        parts = dict.fromkeys(dict.fromkeys(BREAKDOWN.values()), 0)
        for t in plans:
            for sec, b in t["secs"].items():
                parts[BREAKDOWN[sec]] += len(b)
        complete_record(rec, nbytes, parts, _all_stats(plans, streams))


def _complete_v2(sf: StageFile, plans: list, streams: dict, nbytes: int, blocks: dict) -> None:
    """A version 2 file stores no sizes of its own: the encoded record gets them from the
    decoded stage and the file; a stripped file gets an encoded record of its own."""
    from .sizes import stage_sizes
    if not sf.history or sf.history[-1].get("stage") != "encoded":
        sf.history.append({"stage": "encoded", "metrics": {}, "stripped": True})
    rec = sf.history[-1]
    parts = dict.fromkeys(dict.fromkeys(BREAKDOWN.values()), 0)
    parts.update(blocks)
    for t in plans:              # a bias or batch norm shared by --dense-bits counts as dense
        vector = len(t["shape"]) < 2
        for sec in STREAM_SECTIONS:
            parts["dense" if vector else BREAKDOWN[sec]] += len(t["secs"].get(sec, b""))
    rec["sizes"] = {k: v for k, v in stage_sizes(sf).items() if k not in ("bytes", "ratio")}
    complete_record(rec, nbytes, parts, _all_stats(plans, streams))
    for r in sf.history[:-1]:       # sizes every record shares are stored once: the file's
        z = r.get("sizes")
        if isinstance(z, dict) and is_int(z.get("bytes"), 1):
            z.setdefault("params", rec["sizes"]["params"])
            z.setdefault("dense_bytes", rec["sizes"]["dense_bytes"])
            z.setdefault("ratio", z["dense_bytes"] / z["bytes"])


def complete_record(record: dict, nbytes: int, parts: dict, tensors: dict) -> dict:
    """Fill in what the file does not store about itself: its size and ratio, the byte
    breakdown (``parts``: bytes per section kind; the header is the rest) and the per-tensor
    Huffman figures."""
    sizes = record["sizes"]
    sizes["bytes"] = nbytes
    sizes["ratio"] = sizes["dense_bytes"] / max(nbytes, 1)
    sizes["breakdown"] = {**parts, "header": nbytes - sum(parts.values())}
    sizes["tensors"] = tensors
    return record


def _all_stats(plans, streams) -> dict:
    return {t["name"]: _stats(t, streams) for t in plans if t["kind"] != "dense"}


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


def _tensor(t, s, streams, where):
    """(tensor, mask or None, quantizer entry or None) of one header entry."""
    shape, kind, numel = tuple(t["shape"]), t["kind"], math.prod(t["shape"])
    if kind == "dense":
        item = np.dtype(NUMPY[t["stored"]]).itemsize
        if len(s["dense"]) != numel * item:
            raise CountMismatchError(f"{where}: {len(s['dense'])} bytes for {numel} "
                                     f"{t['stored']} elements")
        a = np.frombuffer(s["dense"], NUMPY[t["stored"]])
        a = a.astype(a.dtype.newbyteorder("="))
        if t["stored"] == "bool":
            if a.max(initial=0) > 1:
                raise CountMismatchError(f"{where}: bool bytes other than 0 and 1")
            x = torch.from_numpy(a.astype(bool))
        elif t["stored"] == "bfloat16":
            x = torch.from_numpy(a).view(torch.bfloat16)
        else:
            x = torch.from_numpy(a)
        return x.to(DTYPES[t["dtype"]]).reshape(shape), None, None
    rows, cols = as_2d(shape)
    q = None
    if kind in ("quantized", "quantized_dense"):
        k, cb_dtype = t["codebook_size"], t["codebook_dtype"]
        if len(s["codebook"]) != CODEBOOK_DTYPES[cb_dtype] * k:
            raise CountMismatchError(f"{where}: codebook of {len(s['codebook'])} bytes, "
                                     f"expected {CODEBOOK_DTYPES[cb_dtype] * k}")
        cb = np.frombuffer(s["codebook"], NUMPY[cb_dtype]).astype(np.float32)
        sym = streams[(t["name"], "weights")].astype(np.int64)     # < k + 1: the alphabet
        idx_vals = np.where(sym < k, sym, -1)
        vals = np.append(cb, np.float32(0))[sym]                   # symbol k: no cluster, 0.0
    if kind == "quantized_dense":
        w = torch.from_numpy(vals.reshape(shape))
        q = {**t["quant_meta"], "codebook": torch.from_numpy(cb.copy()), "bits": t["bits"],
             "indices": torch.from_numpy(idx_vals.astype(np.int16).reshape(shape))}
        return w, None, q
    # Sparse: positions from the gap stream (docs/FORMAT.md, "Sparse positions").
    span = 1 << t["index_bits"]
    g = streams[(t["name"], "gaps")].astype(np.int64)
    real = g != span
    if int(real.sum()) != t["nonzeros"] or (len(g) and not real[-1]):
        raise CountMismatchError(f"{where}: the gap stream holds {int(real.sum())} non-zeros, "
                                 f"the header says {t['nonzeros']}")
    pos = (np.cumsum(np.where(real, g + 1, span)) - 1)[real]
    if len(pos) and pos[-1] >= numel:
        raise CountMismatchError(f"{where}: a position beyond the {numel} elements")
    if kind == "sparse":
        if len(s["values"]) != 4 * t["nonzeros"]:
            raise CountMismatchError(f"{where}: {len(s['values'])} value bytes for "
                                     f"{t['nonzeros']} non-zeros")
        vals = np.frombuffer(s["values"], "<f4").astype(np.float32)
    flat = np.zeros(numel, np.float32)
    m = np.zeros(numel, bool)
    if t["order"] == "csr":
        lin = pos
    else:                                             # csc: position c*rows + r
        lin = (pos % rows) * cols + pos // rows if rows else pos
    flat[lin] = vals
    m[lin] = True
    w = torch.from_numpy(flat.reshape(shape))
    mask = torch.from_numpy(m.reshape(shape))
    if kind == "quantized":
        idx = np.full(numel, -1, np.int16)
        idx[lin] = idx_vals
        q = {**t["quant_meta"], "codebook": torch.from_numpy(cb.copy()), "bits": t["bits"],
             "indices": torch.from_numpy(idx.reshape(shape))}
    return w, mask, q
