"""Encode a stage file as a ``.dc`` file (Han et al. 2016, sections 2 and 4; docs/FORMAT.md).

Each weight with a mask is stored sparse: its kept positions as Huffman-coded relative indices
(CSR or CSC, whichever is smaller), its values as Huffman-coded cluster indices when it is
quantized, else as float32. A quantized weight without a mask stores a cluster index for every
element. Everything else is raw (float32, or float16 on explicit request).
"""
from __future__ import annotations

import json
import math
import struct
import time
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import huffman
from .errors import CheckpointError, UsageError
from .sparse import as_2d, default_index_bits, relative_index, walk
from .stagefile import DC_MAGIC

__all__ = ["EncodeConfig", "encode", "encode_stage", "pack", "DC_VERSION", "PREFIX"]

DC_VERSION = (1, 0)                  # (major, minor) of docs/FORMAT.md
PREFIX = struct.Struct("<8sHHIIQ")   # magic, major, minor, header length, header CRC32, data length
MAX_HEADER_BYTES = 16 << 20          # cap on the header, stored and inflated
MAX_BITS = 12                        # widest cluster index / relative index the format allows
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
          "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
BREAKDOWN = {"weights": "index_stream", "gaps": "gap_stream", "codebook": "codebooks",
             "weight_codes": "code_tables", "gap_codes": "code_tables", "dense": "dense",
             "values": "values"}


@dataclass
class EncodeConfig:
    # Bits of a relative index per layer ('*=5,conv*=8'); empty: the paper's defaults
    # (section 2: 8 bits for convolution layers, 5 for fully connected layers).
    index_bits: str = ""
    # Store dense tensors (biases, batch norm) as float16: lossy, off by default (the paper
    # keeps them at 32 bits).
    float16: bool = False
    # Longest Huffman code the encoder writes (the format allows 15): decoding tables of at
    # most 2**12 entries per stream, at a cost of a few hundredths of a percent of the bits.
    max_code_length: int = 12

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Tensor:
    entry: dict              # the header entry, without offsets
    sections: list           # [(name, bytes)]


def resolve_index_bits(sf, setting: str) -> dict:
    """Index bits for every sparse tensor: the setting's value, else the paper's default.
    A setting for a model with no pruned layer is an error, not ignored."""
    from .patterns import resolve_setting
    names = sorted(sf.masks)

    def paper(n):
        return default_index_bits(sf.state_dict[n])
    if not setting:
        return {n: paper(n) for n in names}
    if not names:
        raise UsageError("--index-bits: the model has no pruned layer to store sparse")
    return resolve_setting(setting, names, "index-bits", int, lambda v: 1 <= v <= MAX_BITS,
                           f"1 to {MAX_BITS} bits", default=paper)


def _huffman(symbols: np.ndarray, alphabet: int, max_len: int) -> tuple[bytes, bytes]:
    """(code table, stream) of a symbol stream."""
    freqs = np.bincount(symbols, minlength=alphabet)
    used = int((freqs > 0).sum())
    max_len = min(huffman.MAX_CODE_LENGTH, max(max_len, math.ceil(math.log2(max(used, 2)))))
    lengths = huffman.code_lengths(freqs, max_len)
    stream, _ = huffman.encode(symbols, lengths)
    return huffman.pack_lengths(lengths), stream


def _check_float32(name, t):
    if t.dtype != torch.float32:
        raise CheckpointError(f"{name}: sparse and quantized tensors must be float32, not "
                              f"{DTYPE_NAMES.get(t.dtype, t.dtype)}")


def _encode_tensor(name, t, mask, q, ibits, float16, max_len) -> _Tensor:
    t = t.detach().cpu().contiguous()
    dtype = DTYPE_NAMES.get(t.dtype)
    if dtype is None:
        raise CheckpointError(f"{name}: dtype {t.dtype} cannot be stored in a .dc file")
    entry = {"name": name, "dtype": dtype, "shape": list(t.shape)}
    if mask is None and q is None:
        stored = "float16" if float16 and t.is_floating_point() else dtype
        raw = t.to(DTYPES[stored]).numpy() if stored != "bfloat16" else t.view(torch.int16).numpy()
        data = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
        return _Tensor({**entry, "kind": "dense", "stored": stored}, [("dense", data)])
    _check_float32(name, t)
    rows, cols = as_2d(t.shape)
    w = t.numpy().reshape(rows, cols)
    m = None
    if mask is not None:
        if tuple(mask.shape) != tuple(t.shape):
            raise CheckpointError(f"{name}: mask shape {list(mask.shape)} differs from the weight's")
        m = mask.detach().cpu().numpy().astype(bool).reshape(rows, cols)
        if (w[~m] != 0).any():
            raise CheckpointError(f"{name}: weights outside the mask are not zero; "
                                  "the stage file is inconsistent")
    idx = k = None
    if q is not None:
        cb = q["codebook"].detach().cpu().to(torch.float32).reshape(-1).numpy()
        k = len(cb)
        idx = q["indices"].detach().cpu().numpy().astype(np.int64)
        if idx.shape != tuple(t.shape) or not 1 <= k <= 1 << MAX_BITS:
            raise CheckpointError(f"{name}: quantizer entry does not fit the weight")
        idx = idx.reshape(rows, cols)
        if idx.min(initial=0) < -1 or idx.max(initial=0) >= k:
            raise CheckpointError(f"{name}: cluster indices outside -1..{k - 1}")
        recon = np.where(idx >= 0, cb[np.clip(idx, 0, None)], np.float32(0))
        if not np.array_equal(recon, w):
            raise CheckpointError(f"{name}: weights differ from codebook[indices]; "
                                  "the stage file is inconsistent")
        if m is not None and (idx[~m] != -1).any():
            raise CheckpointError(f"{name}: pruned weights have cluster indices")
        bits = int(q.get("bits", max(1, math.ceil(math.log2(k)))))
        if not 1 <= bits <= MAX_BITS:
            raise CheckpointError(f"{name}: {bits}-bit quantization; the format allows 1..{MAX_BITS}")
        meta = {a: b for a, b in q.items() if a not in ("codebook", "indices", "bits")
                and isinstance(b, (str, int, float, bool))}
        entry.update(bits=bits, codebook_size=k, quant_meta=meta)
        codebook = ("codebook", cb.astype("<f4").tobytes())

    if m is None:                                   # quantized, not pruned: every index, no gaps
        sym = np.where(idx >= 0, idx, k).reshape(-1)
        table, stream = _huffman(sym, k + 1, max_len)
        return _Tensor({**entry, "kind": "quantized_dense"},
                       [codebook, ("weight_codes", table), ("weights", stream)])

    # Row or column order: the weights' symbols and values are the same multiset either way, so
    # their Huffman code and byte count are too; only the gap stream decides (a tie keeps csr).
    best = None
    for order in ("csr", "csc"):
        pos = walk(m, order)
        stored, slots = relative_index(pos, ibits)
        filler = np.ones(len(stored), bool)
        filler[slots] = False
        stored[filler] = 1 << ibits                # the filler symbol (docs/FORMAT.md)
        gtable, gstream = _huffman(stored, (1 << ibits) + 1, max_len)
        gap_secs = [("gap_codes", gtable), ("gaps", gstream)]
        size = sum(len(b) for _, b in gap_secs)
        if best is None or size < best[0]:
            best = (size, order, pos, len(stored), gap_secs)
    _, order, pos, entries, gap_secs = best
    kind = "quantized" if q is not None else "sparse"
    e = {**entry, "kind": kind, "order": order, "index_bits": ibits, "entries": entries,
         "nonzeros": int(len(pos))}
    if q is None:
        flat = (w if order == "csr" else w.T).reshape(-1)
        return _Tensor(e, gap_secs + [("values", flat[pos].astype("<f4").tobytes())])
    sym = (idx if order == "csr" else idx.T).reshape(-1)[pos]
    wtable, wstream = _huffman(np.where(sym >= 0, sym, k), k + 1, max_len)
    return _Tensor(e, [codebook, ("weight_codes", wtable), ("weights", wstream)] + gap_secs)


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


def canonical_json(obj) -> bytes:
    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


def deflate(raw: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951, zlib level 9): the stage history repeats its keys, and every
    header byte counts toward the compression ratio."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(raw) + c.flush()


def pack(arch: dict, data: dict, history: list, tensors: list[_Tensor]) -> bytes:
    """The bytes of a .dc file (docs/FORMAT.md, "Layout")."""
    entries, blobs, offset = [], [], 0
    for t in sorted(tensors, key=lambda t: t.entry["name"]):
        secs = []
        for name, b in t.sections:
            secs.append([name, offset, len(b), zlib.crc32(b)])
            blobs.append(b)
            offset += len(b)
        entries.append({**t.entry, "sections": secs})
    header = deflate(canonical_json({"arch": arch, "data": data, "history": history,
                                     "tensors": entries}))
    body = PREFIX.pack(DC_MAGIC, *DC_VERSION, len(header), zlib.crc32(header), offset) \
        + header + b"".join(blobs)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_stage(sf, config: EncodeConfig | None = None, metrics: dict | None = None):
    """Encode a stage file: (file bytes, the "encoded" stage record with every size filled in).

    ``metrics`` default to those of the stage before (encoding is lossless); give measured ones
    when ``config.float16`` makes it lossy.
    """
    from .sizes import stage_sizes
    from .stagefile import stage_record
    config = config or EncodeConfig()
    t0 = time.perf_counter()
    tensors = encode_tensors(sf, config)
    sizes = {k: v for k, v in stage_sizes(sf).items() if k not in ("bytes", "ratio")}
    # The byte breakdown and the per-tensor Huffman figures are not stored: the reader derives
    # them from the sections and streams (docs/FORMAT.md, "The encoded record").
    prev = dict(sf.history[-1]["metrics"]) if sf.history else {}
    cfg = config.to_dict()      # the bits of each tensor are in its header entry
    extra = {"lossy": True} if config.float16 else {}
    record = stage_record("encoded", cfg, metrics if metrics is not None else prev, sizes,
                          time.perf_counter() - t0, **extra)
    history = round_floats(jsonable(list(sf.history) + [record]))
    buf = pack(sf.arch, sf.data, history, tensors)
    from .decode import decode_bytes      # the record as any reader sees it, and a round trip
    return buf, decode_bytes(buf, template=sf.template).history[-1]


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


def encode(stage, out: str, config: EncodeConfig | None = None, metrics: dict | None = None) -> dict:
    """Encode a stage file (a path or a :class:`StageFile`) into the .dc file ``out``;
    return the "encoded" stage record."""
    from .loading import load_stage
    from .stagefile import atomic_write
    sf = load_stage(stage) if isinstance(stage, str) else stage
    buf, record = encode_stage(sf, config, metrics)
    atomic_write(out, lambda f: f.write(buf))
    return record
