"""Encode a stage file as a ``.dc`` file (Han et al. 2016, sections 2 and 4; docs/FORMAT.md).

Each weight with a mask is stored sparse: its kept positions as Huffman-coded relative indices
(CSR or CSC, and the index width, whichever are smaller), its values as Huffman-coded cluster indices when it is
quantized, else as float32. A quantized weight without a mask stores a cluster index for every
element. Everything else is raw, in the narrowest dtype that holds it exactly (float16 for all
floating-point ones on explicit, lossy, request). The encoder writes format version 2; the byte
layout itself is :mod:`deepcomp.dcformat`'s.
"""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from . import huffman
from .dcformat import (BLOCKS, CODEBOOK_DTYPES, DTYPE_NAMES, DTYPES, FIELDS_V2, MAGIC,
                       MAX_BITS, NARROWER, NUMPY, PREFIX_V2, STREAM_SECTIONS, TRAILER,
                       VERSION, canonical_json, deflate, delta_code, shuffle)
from .errors import CheckpointError, FormatError, UsageError
from .sparse import as_2d, filler_free_bits, gap_symbols, walk

__all__ = ["EncodeConfig", "encode", "encode_stage", "encode_tensors", "stored_stage", "pack",
           "compact_history", "share_dense", "check_dense_bits"]


@dataclass
class EncodeConfig:
    # Bits of a relative index per layer ('*=5,conv*=8'; the paper, section 2, uses 8 for
    # convolutions and 5 for fully connected layers); a layer not named, or named 'auto', gets
    # the width that gives its smallest gap stream and code table, measured (docs/FORMAT.md).
    index_bits: str = ""
    # Store dense tensors (biases, batch norm) as float16 even where that rounds them: lossy,
    # off by default (the paper keeps them at 32 bits). Without it a dense tensor is float16
    # only where that is exact.
    float16: bool = False
    # Fold each batch norm's running statistics into its scale and shift, as inference engines
    # do (Jacob et al. 2018, section 3.2): weight' = weight*sqrt(1+eps)/sqrt(var+eps),
    # bias' = bias - mean*weight/sqrt(var+eps), mean 0, variance 1. The same function in
    # evaluation mode up to float32 rounding, and the constant statistics cost the file almost
    # nothing; lossy (re-evaluated), and the statistics further training would start from are
    # gone, so off by default (the paper stores them as they are).
    fold_batchnorm: bool = False
    # Share the values of each one-dimensional float32 tensor (biases, batch norm) among at
    # most 2**dense_bits float16 centroids by k-means, linear init: the paper's weight
    # sharing (section 3) applied to what it keeps at 32 bits, stored as a ``quantized_dense``
    # tensor where that is smaller (docs/FORMAT.md). Lossy, re-evaluated, not fine-tuned; 0: off.
    dense_bits: int = 0
    # Longest Huffman code the encoder writes (the format allows 15): decoding tables of at
    # most 2**12 entries per stream, at a cost of a few hundredths of a percent of the bits.
    max_code_length: int = 12
    # Leave the stage history out of the file (the report then shows the encoded stage only,
    # from what the file itself holds), like TF-MOT's strip_pruning for deployment.
    strip: bool = False
    # Record the network's computation (deepcomp.graph: conv2d, linear, batch norm, ReLU, add,
    # pooling, flatten, ...) so c/dcrun runs the file without PyTorch; format 2.1. Off by
    # default: it costs header bytes (ResNet-20: about 700) that only a runtime needs.
    graph: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lossy(self) -> str:
        """What the file changes ("" when it stores the stage exactly)."""
        return ", ".join(w for w, on in (("folded batch norm", self.fold_batchnorm),
                                        ("float16", self.float16),
                                        (f"{self.dense_bits}-bit shared dense", self.dense_bits))
                         if on)


@dataclass
class _Tensor:
    entry: dict                                   # name, dtype, shape, kind and its fields
    sections: list                                # [(section name, bytes)], in file order
    tables: list = field(default_factory=list)    # code lengths of its Huffman streams, in order


def resolve_index_bits(sf, setting: str) -> dict:
    """Index bits for every sparse tensor: the setting's value, or None (chosen by measured
    size) where it names none or says 'auto'. A setting for a model with no pruned layer is an
    error, not ignored."""
    from .patterns import resolve_setting
    names = sorted(sf.masks)
    if not setting:
        return dict.fromkeys(names)
    if not names:
        raise UsageError("--index-bits: the model has no pruned layer to store sparse")
    bits = resolve_setting(setting, names, "index-bits", lambda v: v if v == "auto" else int(v),
                           lambda v: v == "auto" or 1 <= v <= MAX_BITS,
                           f"1 to {MAX_BITS} bits or auto", default=lambda n: "auto")
    return {n: None if b == "auto" else b for n, b in bits.items()}


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


def _check_float32(name, t):
    if t.dtype != torch.float32:
        raise CheckpointError(f"{name}: sparse and quantized tensors must be float32, not "
                              f"{DTYPE_NAMES.get(t.dtype, t.dtype)}")


def _exact_in(t: torch.Tensor, dtype: str) -> bool:
    return torch.equal(t.to(DTYPES[dtype]).to(t.dtype), t)


def dense_storage(t: torch.Tensor, float16: bool) -> str:
    """The dtype a dense tensor is stored in: the narrowest that holds every value exactly
    (float16 for float32 values that are float16 numbers, int16 for small int64 counters), or
    float16 for every floating-point tensor when the lossy ``float16`` is asked for."""
    dtype = DTYPE_NAMES[t.dtype]
    if float16 and t.is_floating_point():
        return "float16"
    for cand in reversed(NARROWER.get(dtype, ())):           # narrowest first
        if _exact_in(t, cand):
            return cand
    return dtype


def _dense(name, t, float16) -> _Tensor:
    dtype = DTYPE_NAMES[t.dtype]
    stored = dense_storage(t, float16)
    raw = t.to(DTYPES[stored]).numpy() if stored != "bfloat16" else t.view(torch.int16).numpy()
    data = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
    return _Tensor({"name": name, "dtype": dtype, "shape": list(t.shape), "kind": "dense",
                    "stored": stored}, [("dense", data)])


def _check_mask(name, t, w, mask, rows, cols):
    if tuple(mask.shape) != tuple(t.shape):
        raise CheckpointError(f"{name}: mask shape {list(mask.shape)} differs from the weight's")
    m = mask.detach().cpu().numpy().astype(bool).reshape(rows, cols)
    if (w[~m] != 0).any():
        raise CheckpointError(f"{name}: weights outside the mask are not zero; "
                              "the stage file is inconsistent")
    return m


def _check_quant(name, t, w, q, m, rows, cols):
    """(codebook, cluster indices as [rows, cols] int64, bits, other quantizer fields) of a
    quantizer entry that reproduces the weight; an empty codebook is a layer with no weight."""
    cb = q["codebook"].detach().cpu().to(torch.float32).reshape(-1).numpy()
    k = len(cb)
    idx = q["indices"].detach().cpu().numpy().astype(np.int64)
    if idx.shape != tuple(t.shape) or not 0 <= k <= 1 << MAX_BITS:
        raise CheckpointError(f"{name}: quantizer entry does not fit the weight")
    idx = idx.reshape(rows, cols)
    if idx.min(initial=0) < -1 or idx.max(initial=-1) >= k:
        raise CheckpointError(f"{name}: cluster indices outside -1..{k - 1}")
    table = np.append(cb, np.float32(0))                   # index -1: no cluster, value 0
    if not np.array_equal(table[np.where(idx >= 0, idx, k)], w):
        raise CheckpointError(f"{name}: weights differ from codebook[indices]; "
                              "the stage file is inconsistent")
    if m is not None and (idx[~m] != -1).any():
        raise CheckpointError(f"{name}: pruned weights have cluster indices")
    bits = int(q.get("bits", max(1, math.ceil(math.log2(max(k, 2))))))
    if not 1 <= bits <= MAX_BITS:
        raise CheckpointError(f"{name}: {bits}-bit quantization; the format allows 1..{MAX_BITS}")
    meta = {a: b for a, b in q.items() if a not in ("codebook", "indices", "bits")
            and isinstance(b, (str, int, float, bool))}
    return cb, idx, bits, meta


def _codebook_section(cb: np.ndarray) -> tuple[str, tuple]:
    """Float16 when every centroid is a float16 number (the quantizer rounds them so), else
    float32: (codebook dtype, section)."""
    half = cb.astype("<f2")
    if np.array_equal(half.astype(np.float32), cb):
        return "float16", ("codebook", half.tobytes())
    return "float32", ("codebook", cb.astype("<f4").tobytes())


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


def _encode_tensor(name, t, mask, q, ibits, float16, max_len) -> _Tensor:
    t = t.detach().cpu().contiguous()
    if DTYPE_NAMES.get(t.dtype) is None:
        raise CheckpointError(f"{name}: dtype {t.dtype} cannot be stored in a .dc file")
    if mask is None and q is None:
        return _dense(name, t, float16)
    _check_float32(name, t)
    rows, cols = as_2d(t.shape)
    w = t.numpy().reshape(rows, cols)
    m = _check_mask(name, t, w, mask, rows, cols) if mask is not None else None
    entry = {"name": name, "dtype": "float32", "shape": list(t.shape)}
    if q is not None:
        cb, idx, bits, meta = _check_quant(name, t, w, q, m, rows, cols)
        k = len(cb)
        cb_dtype, codebook = _codebook_section(cb)
        entry.update(bits=bits, codebook_size=k, codebook_dtype=cb_dtype, quant_meta=meta)
    if m is None:                                   # quantized, not pruned: every index, no gaps
        wlen, wstream = _huffman(np.where(idx >= 0, idx, k).reshape(-1), k + 1, max_len)
        return _Tensor({**entry, "kind": "quantized_dense"}, [codebook, ("weights", wstream)],
                       [wlen])
    order, ibits, pos, entries, glen, gstream = _gaps(m, ibits, max_len)
    e = {**entry, "kind": "quantized" if q is not None else "sparse", "order": order,
         "index_bits": ibits, "entries": entries, "nonzeros": int(len(pos))}
    if q is None:
        flat = (w if order == "csr" else w.T).reshape(-1)
        return _Tensor(e, [("gaps", gstream), ("values", flat[pos].astype("<f4").tobytes())],
                       [glen])
    sym = (idx if order == "csr" else idx.T).reshape(-1)[pos]
    wlen, wstream = _huffman(np.where(sym >= 0, sym, k), k + 1, max_len)
    return _Tensor(e, [codebook, ("weights", wstream), ("gaps", gstream)], [wlen, glen])


def fold_batchnorm(sf):
    """``sf`` with every affine batch norm's statistics folded into its scale and shift
    (:attr:`EncodeConfig.fold_batchnorm`); layers pruned or quantized are left as they are."""
    sd, folded_any = dict(sf.state_dict), False
    for name, m in sf.build_model().named_modules():
        keys = [f"{name}.{k}".lstrip(".") for k in ("weight", "bias", "running_mean", "running_var")]
        if not (isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine
                and m.track_running_stats and all(k in sd for k in keys)
                and not any(k in sf.masks or k in sf.quant for k in keys)):
            continue
        w, b, mean, var = (sd[k].double() for k in keys)
        scale = w / torch.sqrt(var + m.eps)
        folded = (scale * math.sqrt(1 + m.eps), b - mean * scale, torch.zeros_like(mean),
                  torch.ones_like(var))
        sd.update({k: v.to(sd[k].dtype) for k, v in zip(keys, folded)})
        folded_any = True
    if not folded_any:
        raise UsageError("fold_batchnorm (--fold-bn): the model has no batch norm to fold")
    return replace(sf, state_dict=sd)


def stored_stage(sf, config: EncodeConfig):
    """The stage as the file holds it: ``sf`` itself unless a lossy option changes it (batch
    norm folded, dense floating-point tensors rounded to float16). The encoder checks what it
    wrote against this, bit for bit, and a lossy file's accuracy is measured on it."""
    if config.fold_batchnorm:
        sf = fold_batchnorm(sf)
    if config.float16:
        sf = replace(sf, state_dict={
            k: v.half().to(v.dtype) if v.is_floating_point() and k not in sf.masks
            and k not in sf.quant else v for k, v in sf.state_dict.items()})
    if config.dense_bits:
        sf = share_dense(sf, config)
    return sf


def check_dense_bits(bits: int) -> None:
    """:attr:`EncodeConfig.dense_bits` is 0 (off) or 1..MAX_BITS, the format's index widths."""
    if not 0 <= bits <= MAX_BITS:
        raise UsageError(f"dense_bits (--dense-bits) must lie in 1..{MAX_BITS} (or 0: off), "
                         f"got {bits}")


def share_dense(sf, config: EncodeConfig):
    """``sf`` with every one-dimensional float32 tensor (biases, batch norm) of at least two
    distinct values quantized by k-means into at most ``2**config.dense_bits`` centroids
    (:attr:`EncodeConfig.dense_bits`), float16 numbers where that moves none by more than 2**-10
    of itself, where its codebook, code table, index stream and header entry take fewer bytes
    than the tensor's own storage; the others are left as they are. Weights, tied tensors and
    tensors with NaN or infinity are not touched; a vector shared before (a .dc file read back)
    is clustered again from its values."""
    from .quantize import kmeans_1d, round_float16
    check_dense_bits(config.dense_bits)
    tied = {n for pair in sf.aliases().items() for n in pair}
    sd, quant = dict(sf.state_dict), dict(sf.quant)
    for k, t in sf.state_dict.items():
        if (t.dtype != torch.float32 or t.dim() != 1 or k in sf.masks or k in tied
                or t.unique().numel() < 2 or not torch.isfinite(t).all()):
            continue
        quant.pop(k, None)
        c, labels, _ = kmeans_1d(t.double().numpy(), 1 << config.dense_bits)
        cb = torch.from_numpy(c).float()
        half = round_float16(cb)
        if ((half - cb).abs() <= cb.abs() * 2.0 ** -10).all():      # not subnormal, no overflow
            cb, relabel = torch.unique(half, return_inverse=True)   # rounding may merge two
            labels = relabel.numpy()[labels]
        q = {"codebook": cb, "indices": torch.from_numpy(labels).to(torch.int16),
             "bits": config.dense_bits, "init": "linear"}
        shared = cb[q["indices"].long()]
        if _stored_bytes(_encode_tensor(k, shared, None, q, None, False, config.max_code_length)) \
                < _stored_bytes(_dense(k, t, config.float16)):
            sd[k], quant[k] = shared, q
    return replace(sf, state_dict=sd, quant=quant)


def _stored_bytes(t: _Tensor) -> int:
    """Bytes of a tensor's sections, code tables (4-bit lengths) and header entry, before any
    DEFLATE."""
    return (sum(len(b) for _, b in t.sections) + sum(len(huffman.pack_lengths(L)) for L in t.tables)
            + len(canonical_json(jsonable(_entry(t, {})))))


def encode_tensors(sf, config: EncodeConfig) -> list[_Tensor]:
    """Every tensor of the stage file, encoded, sorted by name."""
    for what, d in (("mask", sf.masks), ("quantizer entry", sf.quant)):
        extra = sorted(set(d) - set(sf.state_dict))
        if extra:
            raise CheckpointError(f"{what} for a tensor that is not in the state dict: {extra[0]}")
    ibits = resolve_index_bits(sf, config.index_bits)
    if not 1 <= config.max_code_length <= huffman.MAX_CODE_LENGTH:
        raise UsageError(f"max_code_length must lie in 1..{huffman.MAX_CODE_LENGTH}")
    return [_encode_tensor(n, sf.state_dict[n], sf.masks.get(n), sf.quant.get(n), ibits.get(n),
                           config.float16, config.max_code_length)
            for n in sorted(sf.state_dict)]


# --- the header (docs/FORMAT.md, "Header") ------------------------------------------------------

def jsonable(x):
    """Plain JSON data: tensors and numpy values to lists and numbers, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    return str(x)


def round_floats(x, digits: int = 7):
    """Floats to ``digits`` significant digits (float32 carries 7): the stage history's numbers
    come from float32 tensors, and their 17-digit double spelling costs header bytes."""
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, digits) for v in x]
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    return x


_METRICS = ("top1", "top5")
# What a stage record keeps of its sizes: the reader derives the rest (params, dense_bytes,
# ratio) from the file itself, which every record shares (docs/FORMAT.md, "History").
_SIZES = ("nonzero_share", "bytes")


def compact_record(rec: dict) -> dict:
    """What the report reads of a stage record (docs/FORMAT.md, "History"): stage, command,
    wall time, accuracy and sizes; training logs, configs and versions stay in the stage files.
    The encoded record keeps no sizes: the reader derives them from the file."""
    m = rec.get("metrics") or {}
    out = {k: rec[k] for k in ("stage", "command", "wall_time", "lossy") if k in rec}
    out["metrics"] = {k: m[k] for k in _METRICS if k in m}
    if isinstance(m.get("before"), dict):
        out["metrics"]["before"] = {k: m["before"][k] for k in _METRICS[:2] if k in m["before"]}
    if rec.get("stage") != "encoded":
        z = rec.get("sizes") or {}
        out["sizes"] = round_floats({k: z[k] for k in _SIZES if k in z}, 4)
    if "split" in rec:                   # target mode: measured on the validation split
        out["split"] = rec["split"]
        ref = rec.get("validation_reference") or {}
        out["validation_reference"] = {k: ref[k] for k in _METRICS[:2] if k in ref}
    if rec.get("stage") == "search":     # the candidates' table (deepcomp.search)
        out.update({k: rec[k] for k in ("candidates", "epochs_used") if k in rec})
        cfg = rec.get("config") or {}
        out["config"] = {k: cfg[k] for k in ("max_drop", "budget_epochs") if k in cfg}
    return out


def compact_history(history: list) -> list:
    return round_floats(jsonable([compact_record(r) for r in history]))


def _compact_data(data: dict) -> dict:
    """The data set's description; class names 0..n-1 written as their count n."""
    d = dict(data)
    if d.get("classes") == [str(i) for i in range(len(d.get("classes") or []))] and d["classes"]:
        d["classes"] = len(d["classes"])
    return d


def _layout(tensors: list[_Tensor]) -> dict:
    """Every tensor's name, dtype and shape, sorted by name (``state``, with ``explicit``): the
    file describes itself, so a reader that cannot build the architecture (the C reader, c/)
    reads it too; about 1% of a ResNet-20 file (docs/FORMAT.md, "Names, dtypes and shapes")."""
    return {"explicit": True,
            "state": [[t.entry["name"], t.entry["dtype"], list(t.entry["shape"])]
                      for t in sorted(tensors, key=lambda t: t.entry["name"])]}


def _entry(t: _Tensor, quant_meta: dict):
    """A tensor's version 2 header entry: 0 for a dense tensor stored in its own dtype, else
    ``[kind, fields...]`` (dcformat.FIELDS_V2; ``*_len`` are section lengths), then the
    quantizer fields where they are not the shared ones."""
    e, secs = t.entry, dict(t.sections)
    if e["kind"] == "dense" and e["stored"] == e["dtype"]:
        return 0
    out = [e["kind"]] + [len(secs[f[:-len("_len")]]) if f.endswith("_len") else e[f]
                         for f in FIELDS_V2[e["kind"]]]
    if "quant_meta" in e and e["quant_meta"] != quant_meta:
        out.append(e["quant_meta"])
    return out


def _shared_meta(tensors: list[_Tensor]) -> dict:
    """The quantizer fields most tensors share (ties: the first in name order)."""
    metas = [canonical_json(t.entry["quant_meta"]) for t in tensors if "quant_meta" in t.entry]
    if not metas:
        return {}
    best = max(dict.fromkeys(metas), key=metas.count)
    return next(t.entry["quant_meta"] for t in tensors
                if "quant_meta" in t.entry and canonical_json(t.entry["quant_meta"]) == best)


def side_blocks(tensors: list[_Tensor]) -> dict:
    """The three side blocks of the data area (docs/FORMAT.md, "Side blocks"), each raw
    DEFLATE of (or empty when there is nothing to put in it): ``code_tables``, every stream's
    code lengths, a byte per symbol of its alphabet; ``codebooks``, every codebook
    delta-coded; ``dense``, every dense tensor's bytes as byte planes. Tensors in name order."""
    tables, codebooks, dense = [], [], []
    for t in tensors:
        tables += [np.asarray(L, np.uint8).tobytes() for L in t.tables]
        for name, b in t.sections:
            if name == "codebook":
                codebooks.append(delta_code(b, CODEBOOK_DTYPES[t.entry["codebook_dtype"]]))
            elif name == "dense":
                dense.append(shuffle(b, np.dtype(NUMPY[t.entry["stored"]]).itemsize))
    return {k: deflate(b"".join(v)) if any(v) else b""
            for k, v in (("code_tables", tables), ("codebooks", codebooks), ("dense", dense))}


def pack(arch: dict, data: dict, history: list, tensors: list[_Tensor],
         graph: list | None = None) -> bytes:
    """The bytes of a version 2 .dc file (docs/FORMAT.md, "Layout"); 2.1 with a graph."""
    tensors = sorted(tensors, key=lambda t: t.entry["name"])
    meta = _shared_meta(tensors)
    blocks = side_blocks(tensors)
    header = {"arch": arch, "data": _compact_data(data), "history": history,
              "quant_meta": meta, "blocks": {k: len(b) for k, b in blocks.items()},
              "tensors": [_entry(t, meta) for t in tensors], **_layout(tensors)}
    if graph is not None:
        header["graph"] = graph
    header = deflate(canonical_json(jsonable(header)))
    streams = [b for t in tensors for name, b in t.sections if name in STREAM_SECTIONS]
    data_area = b"".join(blocks[k] for k in BLOCKS) + b"".join(streams)
    version = VERSION if graph is None else (VERSION[0], 1)
    body = PREFIX_V2.pack(MAGIC, *version, len(header), len(data_area)) + header + data_area
    return body + TRAILER.pack(zlib.crc32(body))


def encode_stage(sf, config: EncodeConfig | None = None, metrics: dict | None = None):
    """Encode a stage file: (file bytes, the "encoded" stage record with every size filled in).

    ``metrics`` default to those of the stage before (encoding is lossless); give measured ones
    (of :func:`stored_stage`) when ``config.lossy``. A stage that was encoded before (a .dc file
    read back) is encoded again: its encoded record is replaced.
    """
    from .stagefile import stage_record
    config = config or EncodeConfig()
    t0 = time.perf_counter()
    stored = stored_stage(sf, config)
    tensors = encode_tensors(stored, config)
    before = [r for r in sf.history if r.get("stage") != "encoded"]
    prev = dict(sf.history[-1].get("metrics") or {}) if sf.history else {}
    lossy = config.lossy or next((r["lossy"] for r in sf.history if r.get("lossy")), "")
    extra = {"lossy": lossy} if lossy else {}
    record = stage_record("encoded", config.to_dict(), metrics if metrics is not None else prev,
                          {}, time.perf_counter() - t0, **extra)
    history = [] if config.strip else compact_history(before + [record])
    graph = _graph(stored) if config.graph else None
    buf = pack(sf.arch, sf.data, history, tensors, graph)
    from .decode import decode_bytes      # the record as any reader sees it, and a round trip
    back = decode_bytes(buf, template=sf.template)
    _check_exact(stored.state_dict, back.state_dict)
    return buf, back.history[-1]


def _graph(sf) -> list:
    """The graph of the stage's model (deepcomp.graph), traced on its recorded input size."""
    from .graph import trace_graph
    size = sf.data.get("input_size")
    if not size:
        raise UsageError("--graph: the stage does not record its input size (give --data when "
                         "it is made)")
    return trace_graph(sf.build_model(), size)


def _check_exact(want: dict, got: dict) -> None:
    """The decoded tensors are the encoded ones, bit for bit (NaNs where NaNs were)."""
    for k, v in want.items():
        w, g = v.detach().cpu(), got[k]
        if w.dtype != g.dtype or w.shape != g.shape or not (
                torch.equal(w, g) or (w.is_floating_point() and torch.equal(w.isnan(), g.isnan())
                                      and torch.equal(w.nan_to_num(), g.nan_to_num()))):
            raise FormatError(f"{k}: the encoded file does not decode to the same tensor "
                              "(a deepcomp bug: please report it)")


def encode(stage, out: str, config: EncodeConfig | None = None, metrics: dict | None = None) -> dict:
    """Encode a stage file (a path or a :class:`StageFile`) or a model (a ``torch.nn.Module``,
    with the masks and codebooks it carries: deepcomp.userloop, ``torch.nn.utils.prune``) into
    the .dc file ``out``; return the "encoded" stage record."""
    from .loading import load_stage
    from .stagefile import as_stage, atomic_write
    sf = load_stage(stage) if isinstance(stage, str) else as_stage(stage)
    buf, record = encode_stage(sf, config, metrics)
    atomic_write(out, lambda f: f.write(buf))
    return record
