"""Read a ``.dc`` file back into a stage file, a state dict or a model (docs/FORMAT.md).

The reader takes files from anyone: every malformed input raises a subclass of
:class:`deepcomp.errors.FormatError`, and no array is sized from a declared count before that
count is checked against the file size and the architecture's shapes.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib

import numpy as np
import torch

from . import huffman
from .stagefile import DC_MAGIC, StageFile
from .encode import (BREAKDOWN, DC_VERSION, DTYPES, MAX_BITS, MAX_HEADER_BYTES, PREFIX,
                     complete_record)
from .sparse import as_2d
from .errors import (BadMagicError, ChecksumError, CountMismatchError, HeaderError,
                     HeaderTooLargeError, InvalidOffsetError, TruncatedFileError,
                     UnknownArchitectureError, UnsupportedVersionError, UnknownModelError,
                     UntrustedModelError)

__all__ = ["read_dc", "decode_bytes", "decode", "load", "MAX_HEADER_BYTES", "MAX_ELEMENTS"]

MAX_ELEMENTS = 1 << 30            # at most 2**30 decoded elements (4 GiB of float32) per file
SECTIONS = {"dense": ["dense"],
            "sparse": ["gap_codes", "gaps", "values"],
            "quantized": ["codebook", "weight_codes", "weights", "gap_codes", "gaps"],
            "quantized_dense": ["codebook", "weight_codes", "weights"]}
KEYS = {"dense": {"stored"},
        "sparse": {"order", "index_bits", "entries", "nonzeros"},
        "quantized": {"order", "index_bits", "entries", "nonzeros", "bits", "codebook_size",
                      "quant_meta"},
        "quantized_dense": {"bits", "codebook_size", "quant_meta"}}
NUMPY = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<i2", "int64": "<i8",
         "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "u1"}


def read_dc(path: str, template: torch.nn.Module | None = None) -> StageFile:
    """The stage file stored in the .dc file ``path``. ``template``: the user's own module,
    whose shapes the file must fit (instead of building the architecture the file names)."""
    with open(path, "rb") as f:
        buf = f.read()
    return decode_bytes(buf, os.path.basename(path), template)


def decode(src: str, out: str | None = None, model: str | None = None) -> dict:
    """The effective state dict of a .dc file; also written to ``out`` (a plain ``torch.save``
    state dict that loads with ``weights_only=True``) when given. A file whose architecture is
    a ``module:factory`` reference needs ``model`` to name it (deepcomp.models)."""
    from .loading import load_stage
    from .stagefile import atomic_write
    sd = load_stage(src, model=model).state_dict
    if out:
        atomic_write(out, lambda f: torch.save(sd, f))
    return sd


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

def _prefix(buf: bytes, name: str) -> tuple[int, int]:
    if buf[:len(DC_MAGIC)] != DC_MAGIC[:min(len(buf), len(DC_MAGIC))] or not buf:
        raise BadMagicError(f"{name}: not a .dc file (it does not start with {DC_MAGIC.decode()})")
    if len(buf) < PREFIX.size:
        raise TruncatedFileError(f"{name}: {len(buf)} bytes, shorter than the "
                                 f"{PREFIX.size}-byte prefix")
    _, major, minor, hlen, hcrc, dlen = PREFIX.unpack_from(buf)
    if major != DC_VERSION[0]:
        raise UnsupportedVersionError(f"{name}: format version {major}.{minor}; this reader "
                                      f"knows version {DC_VERSION[0]}")
    if hlen > MAX_HEADER_BYTES:
        raise HeaderTooLargeError(f"{name}: header of {hlen} bytes exceeds the "
                                  f"{MAX_HEADER_BYTES}-byte cap")
    want = PREFIX.size + hlen + dlen + 4
    if len(buf) < want:
        raise TruncatedFileError(f"{name}: {len(buf)} bytes, the prefix declares {want}")
    if len(buf) > want:
        raise InvalidOffsetError(f"{name}: {len(buf) - want} trailing bytes after the declared end")
    header = buf[PREFIX.size:PREFIX.size + hlen]
    if zlib.crc32(header) != hcrc:
        raise ChecksumError(f"{name}: header checksum mismatch (the file is damaged)")
    if zlib.crc32(buf[:-4]) != struct.unpack_from("<I", buf, len(buf) - 4)[0]:
        raise ChecksumError(f"{name}: file checksum mismatch (the file is damaged)")
    return hlen, dlen


def _is_int(x, lo=0, hi=None):
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo and (hi is None or x <= hi)


def _header(raw: bytes, name: str) -> dict:
    d = zlib.decompressobj(-15)
    try:
        text = d.decompress(raw, MAX_HEADER_BYTES + 1)
    except zlib.error as e:
        raise HeaderError(f"{name}: header is not valid DEFLATE data ({e})") from None
    if len(text) > MAX_HEADER_BYTES or d.unconsumed_tail:
        raise HeaderTooLargeError(f"{name}: header inflates past the {MAX_HEADER_BYTES}-byte cap")
    if not d.eof or d.unused_data:
        raise HeaderError(f"{name}: header DEFLATE stream is truncated or followed by bytes")
    try:
        h = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise HeaderError(f"{name}: header is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(h, dict) or set(h) != {"arch", "data", "history", "tensors"}:
        raise HeaderError(f"{name}: header must hold exactly arch, data, history and tensors")
    arch = h["arch"]
    if not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
            and isinstance(arch.get("kwargs", {}), dict)):
        raise HeaderError(f"{name}: header 'arch' must be {{'name': str, 'kwargs': {{...}}}}")
    if not isinstance(h["data"], dict) or not isinstance(h["history"], list) \
            or not all(isinstance(r, dict) for r in h["history"]):
        raise HeaderError(f"{name}: header 'data' must be an object and 'history' a list of objects")
    if not isinstance(h["tensors"], list):
        raise HeaderError(f"{name}: header 'tensors' must be a list")
    return h


def _check_tensor(t, name: str) -> None:
    """The schema of one tensor entry (docs/FORMAT.md, "Header")."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise HeaderError(f"{name}: a tensor entry without a name")
    where = f"{name}: tensor {t['name']!r}"
    kind = t.get("kind")
    if not isinstance(kind, str) or kind not in SECTIONS:
        raise HeaderError(f"{where}: unknown kind {kind!r}")
    if set(t) != {"name", "dtype", "shape", "kind", "sections"} | KEYS[kind]:
        raise HeaderError(f"{where}: keys {sorted(t)} do not match kind {kind!r}")
    if not isinstance(t["dtype"], str) or t["dtype"] not in DTYPES:
        raise HeaderError(f"{where}: unknown dtype {t['dtype']!r}")
    if not (isinstance(t["shape"], list) and len(t["shape"]) <= 8
            and all(_is_int(d, 0, MAX_ELEMENTS) for d in t["shape"])):
        raise HeaderError(f"{where}: bad shape {t['shape']!r}")
    secs = t["sections"]
    if not (isinstance(secs, list) and [s[0] if isinstance(s, list) and s else None
                                         for s in secs] == SECTIONS[kind]
            and all(len(s) == 4 and all(_is_int(v, 0) for v in s[1:]) for s in secs)):
        raise HeaderError(f"{where}: sections must be {SECTIONS[kind]} as [name, offset, "
                          "length, crc32]")
    if kind == "dense":
        ok = isinstance(t["stored"], str) and t["stored"] == t["dtype"] or (t["stored"] == "float16" and
                                           t["dtype"] in ("float32", "float64", "bfloat16"))
        if not ok:
            raise HeaderError(f"{where}: stored dtype {t['stored']!r} for a {t['dtype']} tensor")
        return
    if t["dtype"] != "float32" or not t["shape"]:
        raise HeaderError(f"{where}: a {kind} tensor must be float32 with at least one dimension")
    if kind in ("sparse", "quantized"):
        if t["order"] not in ("csr", "csc") or not _is_int(t["index_bits"], 1, MAX_BITS) \
                or not _is_int(t["entries"]) or not _is_int(t["nonzeros"]):
            raise HeaderError(f"{where}: bad order, index_bits, entries or nonzeros")
    if kind in ("quantized", "quantized_dense"):
        if not _is_int(t["bits"], 1, MAX_BITS) or not _is_int(t["codebook_size"], 1, 1 << MAX_BITS) \
                or not isinstance(t["quant_meta"], dict):
            raise HeaderError(f"{where}: bad bits, codebook_size or quant_meta")


def _meta_model(arch: dict, name: str):
    """The architecture's state dict shapes, from a model built on the meta device."""
    from .models import create
    import warnings
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")      # e.g. zero-element tensors of forged sizes
            net = create(arch["name"], **arch.get("kwargs", {}))
    except UntrustedModelError:
        raise
    except UnknownModelError as e:
        if ":" in arch["name"]:          # a user's module:factory: say why it cannot be built
            raise UnknownArchitectureError(f"{name}: {e}") from None
        raise UnknownArchitectureError(f"{name}: unknown architecture {arch['name']!r}") from None
    except Exception as e:       # constructor arguments forged or from another version
        raise HeaderError(f"{name}: cannot build {arch['name']!r} with "
                          f"{arch.get('kwargs')}: {str(e)[:100]}") from None
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def decode_bytes(buf: bytes, name: str = "<bytes>", template: torch.nn.Module | None = None):
    """The stage file stored in the bytes of a .dc file (``template``: see :func:`read_dc`)."""
    hlen, dlen = _prefix(buf, name)
    h = _header(buf[PREFIX.size:PREFIX.size + hlen], name)
    data = memoryview(buf)[PREFIX.size + hlen:PREFIX.size + hlen + dlen]
    offset = 0
    names = []
    for t in h["tensors"]:
        _check_tensor(t, name)
        names.append(t["name"])
        for sec, off, length, crc in t["sections"]:
            if off != offset or off + length > dlen:
                raise InvalidOffsetError(f"{name}: section {sec} of {t['name']!r} at {off}+{length}; "
                                         f"expected offset {offset} within {dlen} data bytes")
            offset += length
    if offset != dlen:
        raise InvalidOffsetError(f"{name}: sections cover {offset} of {dlen} data bytes")
    if names != sorted(set(names)):
        raise HeaderError(f"{name}: tensors must be sorted by name, each once")
    model = _meta_model(h["arch"], name) if template is None else \
        {k: (tuple(v.shape), v.dtype) for k, v in template.state_dict().items()}
    required = {k for k in model if not k.endswith("num_batches_tracked")}
    missing, unknown = sorted(required - set(names)), sorted(set(names) - set(model))
    if missing or unknown:
        raise HeaderError(f"{name}: tensors do not fit {h['arch']['name']}: "
                          f"missing {missing[:3]}, unexpected {unknown[:3]}")
    total = 0
    for t in h["tensors"]:
        if tuple(t["shape"]) != model[t["name"]][0]:
            raise HeaderError(f"{name}: tensor {t['name']!r} has shape {t['shape']}, "
                              f"{h['arch']['name']} expects {list(model[t['name']][0])}")
        total += math.prod(t["shape"])
    if total > MAX_ELEMENTS:
        raise HeaderError(f"{name}: {total} elements exceed the reader's cap of {MAX_ELEMENTS}")
    for t in h["tensors"]:
        for sec, off, length, crc in t["sections"]:
            if zlib.crc32(data[off:off + length]) != crc:
                raise ChecksumError(f"{name}: checksum mismatch in section {sec} of {t['name']!r}")

    # Decode: all Huffman streams of the file in one batch.
    secs = {t["name"]: {s[0]: bytes(data[s[1]:s[1] + s[2]]) for s in t["sections"]}
            for t in h["tensors"]}
    jobs, slots = [], []
    for t in h["tensors"]:
        kind, s = t["kind"], secs[t["name"]]
        where = f"{name}: {t['name']}"
        numel = math.prod(t["shape"])
        if kind in ("sparse", "quantized"):
            if t["nonzeros"] > min(numel, t["entries"]) or \
                    t["entries"] - t["nonzeros"] > numel >> t["index_bits"]:
                raise CountMismatchError(f"{where}: {t['nonzeros']} non-zeros in {t['entries']} "
                                         f"entries do not fit {numel} elements")
            lengths = huffman.unpack_lengths(s["gap_codes"], (1 << t["index_bits"]) + 1,
                                             f"{where} gap codes")
            jobs.append((s["gaps"], lengths, t["entries"], f"{where} gaps"))
            slots.append((t["name"], "gaps"))
        if kind in ("quantized", "quantized_dense"):
            count = numel if kind == "quantized_dense" else t["nonzeros"]
            lengths = huffman.unpack_lengths(s["weight_codes"], t["codebook_size"] + 1,
                                             f"{where} weight codes")
            jobs.append((s["weights"], lengths, count, f"{where} weights"))
            slots.append((t["name"], "weights"))
    streams = {}
    for key, sym in zip(slots, huffman.decode_many(jobs)):
        streams[key] = sym

    state, masks, quant = {}, {}, {}
    for t in h["tensors"]:
        n = t["name"]
        state[n], mask, q = _tensor(t, secs[n], streams, f"{name}: {n}")
        if mask is not None:
            masks[n] = mask
        if q is not None:
            quant[n] = q
    order = [k for k in model if k in state]           # the model's own order
    history = h["history"]
    rec = history[-1] if history else {}
    if rec.get("stage") == "encoded" and isinstance(rec.get("sizes"), dict) \
            and "bytes" not in rec["sizes"] and _is_int(rec["sizes"].get("dense_bytes")):
        parts = dict.fromkeys(BREAKDOWN.values(), 0)
        for t in h["tensors"]:
            for sec, _, length, _ in t["sections"]:
                parts[BREAKDOWN[sec]] += length
        stats = {t["name"]: _stats(t, jobs, slots, streams) for t in h["tensors"]
                 if t["kind"] != "dense"}
        complete_record(rec, len(buf), parts, stats)
    return StageFile(h["arch"], h["data"], {k: state[k] for k in order}, masks, quant, history,
                     template=template)


def _stats(t, jobs, slots, streams) -> dict:
    """A sparse or quantized tensor's figures for the encoded record: entries, fillers, mean
    Huffman bits per weight and per gap, fixed widths, Huffman efficiency, bytes."""
    def bits(part):
        k = slots.index((t["name"], part))
        sym, lengths = streams[(t["name"], part)], jobs[k][1]
        used = int(lengths.astype(np.int64)[sym].sum()) if len(sym) else 0
        eff = huffman.shannon_bits(sym) / used if used else None
        return used, eff, len(sym)
    numel = math.prod(t["shape"])
    out = {"kind": t["kind"], "order": t.get("order", "csr"),
           "raw_weight_bits": t.get("bits", 32), "raw_index_bits": t.get("index_bits", 0),
           "bytes": sum(s[2] for s in t["sections"])}
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
        k = t["codebook_size"]
        if len(s["codebook"]) != 4 * k:
            raise CountMismatchError(f"{where}: codebook of {len(s['codebook'])} bytes, "
                                     f"expected {4 * k}")
        cb = np.frombuffer(s["codebook"], "<f4").astype(np.float32)
        sym = streams[(t["name"], "weights")].astype(np.int64)
        idx_vals = np.where(sym < k, sym, -1)
        vals = np.where(sym < k, cb[np.minimum(sym, k - 1)], np.float32(0)).astype(np.float32)
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
