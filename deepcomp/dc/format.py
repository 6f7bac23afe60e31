"""The byte layout of a ``.dc`` file (docs/FORMAT.md): magic, versions, prefixes, caps, dtypes,
the header schemas and their validation, the side blocks' byte transforms and section tiling.

:mod:`deepcomp.dc.write` lays a file out and :mod:`deepcomp.dc.read` reads it by what is
described here. Every check raises a named :class:`deepcomp.errors.FormatError` with a
one-line message. Numpy and the standard library only: no torch.
"""
from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np

from ..errors import (BadMagicError, ChecksumError, HeaderError, HeaderTooLargeError,
                      InvalidOffsetError, LimitError, TruncatedFileError, UnsupportedVersionError)

__all__ = ["MAGIC", "VERSION", "V1", "V2", "PREFIX_V1", "PREFIX_V2", "TRAILER", "MAX_HEADER_BYTES",
           "MAX_BITS", "MAX_ELEMENTS", "MAX_JSON_DEPTH", "MAX_HISTORY", "element_budget",
           "header_budget", "DTYPES", "NUMPY", "NARROWER", "KINDS", "BREAKDOWN", "BLOCKS",
           "SECTIONS_V2", "CODED", "alphabet", "FIELDS_V2", "CODEBOOK_DTYPES", "jsonable", "canonical_json",
           "deflate", "inflate", "read_prefix", "parse_header", "check_entry_v1",
           "check_entry_v2", "check_shape", "check_total", "is_int", "tile"]

MAGIC = b"DEEPCOMP"                   # the first 8 bytes of every version
V1, V2 = (1, 0), (2, 0)               # (major, minor) of docs/FORMAT.md's appendix and body
VERSION = V2                          # what the encoder writes
PREFIX_V1 = struct.Struct("<8sHHIIQ")  # magic, major, minor, header length, header CRC32, data length
PREFIX_V2 = struct.Struct("<8sHHIQ")   # magic, major, minor, header length, data length
TRAILER = struct.Struct("<I")         # CRC32 of every byte before it
MAX_HEADER_BYTES = 16 << 20           # cap on the header, stored and inflated
MAX_JSON_DEPTH = 64                   # nesting of the header's JSON (a valid one nests 5 deep)
MAX_BITS = 12                         # widest cluster index / relative index the format allows
MAX_ELEMENTS = 1 << 30                # decoded elements per file (4 GiB of float32)
# Reader limits (docs/FORMAT.md, "Reader limits"): what a file may cost is bounded by its size.
BASE_ELEMENTS = 1 << 20               # elements any file may hold (4 MiB of float32)
ELEMENTS_PER_BYTE = 1024              # and this many more per byte of the file
HEADER_BASE, HEADER_RATIO = 64 << 10, 256   # inflated header: at most 64 KiB + 256 x stored
MAX_HISTORY = 1000                    # stage records in a header (a pipeline writes 3 to 10)
MAX_NUMBER_CHARS = 40                 # characters of one JSON number in the header
# The dtypes a tensor may have, and each one's bytes as numpy reads them (bfloat16, which numpy
# lacks, as the int16 of its bits).
NUMPY = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<i2", "int64": "<i8",
         "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "u1"}
DTYPES = tuple(NUMPY)
# Lossless narrower storage a dense tensor may use (version 2), and the lossy --float16 one.
NARROWER = {"float32": ("float16",), "float64": ("float32", "float16"),
            "int64": ("int32", "int16", "int8"), "int32": ("int16", "int8"), "int16": ("int8",)}
KINDS = ("dense", "sparse", "quantized", "quantized_dense")
# Section kinds of the encoded record's byte breakdown (the header is everything else).
BREAKDOWN = {"weights": "index_stream", "gaps": "gap_stream", "codebook": "codebooks",
             "weight_codes": "code_tables", "gap_codes": "code_tables", "dense": "dense",
             "values": "values"}
BLOCKS = ("code_tables", "codebooks", "dense")           # version 2's side blocks, in file order
# Version 2's sections of each kind, after the side blocks, in file order (docs/FORMAT.md,
# "Sections"); the Huffman streams among them (CODED) have their code tables in code_tables in
# the same order. A codebook and a dense tensor's bytes go to the side blocks.
SECTIONS_V2 = {"dense": (), "sparse": ("gaps", "values"), "quantized": ("weights", "gaps"),
               "quantized_dense": ("weights",)}
CODED = ("weights", "gaps")


def one_of(x, choices) -> bool:
    """``x`` is a string among ``choices`` (a forged header may put any JSON value there)."""
    return isinstance(x, str) and x in choices


def is_int(x, lo=0, hi=None) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo and (hi is None or x <= hi)


def jsonable(x):
    """Plain JSON data: arrays (numpy's, or torch's: anything with a ``dtype`` and ``tolist``)
    and numpy scalars to lists and numbers, NaN/inf to None, anything else unknown to its
    ``str``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "dtype") and hasattr(x, "tolist"):
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    return str(x)


def canonical_json(obj) -> bytes:
    """Keys sorted, no spaces, ASCII only: the same data gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def deflate(raw: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951, zlib level 9, no wrapper)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(raw) + c.flush()


def inflate(raw: bytes, cap: int, what: str) -> bytes:
    """Inflate a raw DEFLATE stream of at most ``cap`` bytes that ends exactly at the end of
    ``raw``; never inflates more than ``cap + 1`` bytes."""
    d = zlib.decompressobj(-15)
    try:
        text = d.decompress(raw, cap + 1)
    except zlib.error as e:
        raise HeaderError(f"{what} is not valid DEFLATE data ({e})") from None
    if len(text) > cap or d.unconsumed_tail:
        raise HeaderTooLargeError(f"{what} inflates past its {cap}-byte cap")
    if not d.eof or d.unused_data:
        raise HeaderError(f"{what}: DEFLATE stream is truncated or followed by bytes")
    return text


# --- byte transforms of the side blocks (docs/FORMAT.md, "Side blocks") ----------------------

_UINT = {1: np.uint8, 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


def shuffle(raw: bytes, width: int) -> bytes:
    """Byte planes: every element's first byte, then every second byte, ... (DEFLATE finds the
    repeats of sign and exponent bytes that interleaving hides)."""
    return np.frombuffer(raw, np.uint8).reshape(-1, width).T.tobytes()


def unshuffle(raw: bytes, width: int) -> bytes:
    return np.frombuffer(raw, np.uint8).reshape(width, -1).T.tobytes()


def _ordered(bits: np.ndarray, width: int) -> np.ndarray:
    """IEEE float bit patterns mapped to unsigned integers in the order of the values."""
    sign = np.array(1 << (8 * width - 1), bits.dtype)
    return np.where(bits & sign, ~bits, bits | sign)


def _unordered(o: np.ndarray, width: int) -> np.ndarray:
    sign = np.array(1 << (8 * width - 1), o.dtype)
    return np.where(o & sign, o ^ sign, ~o)


def delta_code(raw: bytes, width: int) -> bytes:
    """A codebook of little-endian float16 (width 2) or float32 (4) values: each value's ordered
    integer minus the previous one's (the first minus 0), modulo 2**(8 * width), as byte planes.
    Sorted codebooks, as k-means writes them, become small steps."""
    o = _ordered(np.frombuffer(raw, _UINT[width]), width)
    return shuffle(np.diff(o, prepend=o.dtype.type(0)).astype(_UINT[width]).tobytes(), width)


def delta_decode(raw: bytes, width: int) -> bytes:
    d = np.frombuffer(unshuffle(raw, width), _UINT[width])
    return _unordered(np.cumsum(d, dtype=d.dtype), width).astype(_UINT[width]).tobytes()


# --- the prefix ------------------------------------------------------------------------------

def read_prefix(buf: bytes, name: str) -> tuple[tuple[int, int], int, int, int]:
    """Check magic, version, lengths and checksums: ``(version, header offset, header length,
    data length)``. Version 1 checks its header CRC32 too; section CRC32s are the caller's."""
    if not buf or buf[:len(MAGIC)] != MAGIC[:min(len(buf), len(MAGIC))]:
        raise BadMagicError(f"{name}: not a .dc file (it does not start with {MAGIC.decode()})")
    if len(buf) < 12:
        raise TruncatedFileError(f"{name}: {len(buf)} bytes, shorter than the 12-byte version")
    major, minor = struct.unpack_from("<HH", buf, 8)
    if major not in (V1[0], V2[0]):
        raise UnsupportedVersionError(f"{name}: format version {major}.{minor}; this reader "
                                      f"knows versions {V1[0]} and {V2[0]}")
    prefix = PREFIX_V1 if major == 1 else PREFIX_V2
    if len(buf) < prefix.size:
        raise TruncatedFileError(f"{name}: {len(buf)} bytes, shorter than the "
                                 f"{prefix.size}-byte prefix")
    if major == 1:
        _, _, _, hlen, hcrc, dlen = prefix.unpack_from(buf)
    else:
        _, _, _, hlen, dlen = prefix.unpack_from(buf)
    if hlen > MAX_HEADER_BYTES:
        raise HeaderTooLargeError(f"{name}: header of {hlen} bytes exceeds the "
                                  f"{MAX_HEADER_BYTES}-byte cap")
    want = prefix.size + hlen + dlen + TRAILER.size
    if len(buf) < want:
        raise TruncatedFileError(f"{name}: {len(buf)} bytes, the prefix declares {want}")
    if len(buf) > want:
        raise InvalidOffsetError(f"{name}: {len(buf) - want} trailing bytes after the declared end")
    if major == 1 and zlib.crc32(buf[prefix.size:prefix.size + hlen]) != hcrc:
        raise ChecksumError(f"{name}: header checksum mismatch (the file is damaged)")
    if zlib.crc32(memoryview(buf)[:-TRAILER.size]) != TRAILER.unpack_from(buf, len(buf) - 4)[0]:
        raise ChecksumError(f"{name}: file checksum mismatch (the file is damaged)")
    return (major, minor), prefix.size, hlen, dlen


def element_budget(nbytes: int) -> int:
    """The most elements a file of ``nbytes`` bytes may declare (docs/FORMAT.md)."""
    return min(MAX_ELEMENTS, BASE_ELEMENTS + ELEMENTS_PER_BYTE * nbytes)


def header_budget(stored: int) -> int:
    """The most bytes a header stored in ``stored`` bytes may inflate to."""
    return min(MAX_HEADER_BYTES, HEADER_BASE + HEADER_RATIO * stored)


def _json_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _json_float(text: str) -> float:
    v = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(v):
        raise ValueError(f"{text[:20]} is not a finite number of at most {MAX_NUMBER_CHARS} "
                         "characters")
    return v


def parse_header(raw: bytes, name: str, required: set, optional: set = frozenset()) -> dict:
    """Inflate and parse the JSON header; check its top-level keys and the shared ones."""
    cap = header_budget(len(raw))
    try:
        text = inflate(raw, cap, f"{name}: header")
    except HeaderTooLargeError:
        raise HeaderTooLargeError(f"{name}: the header inflates past {cap:,} bytes, the "
                                  f"reader's limit for a header of {len(raw):,} bytes") from None
    try:
        h = json.loads(text.decode("utf-8"), parse_constant=_not_json, parse_int=_json_int,
                       parse_float=_json_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise HeaderError(f"{name}: header is not valid JSON ({str(e)[:80]})") from None
    if _depth(h) > MAX_JSON_DEPTH:
        raise HeaderError(f"{name}: header nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(h, dict) or not required <= set(h) <= required | optional:
        raise HeaderError(f"{name}: header keys must be {sorted(required)} "
                          f"(optionally {sorted(optional)})")
    arch = h["arch"]
    if not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
            and isinstance(arch.get("kwargs", {}), dict)):
        raise HeaderError(f"{name}: header 'arch' must be {{'name': str, 'kwargs': {{...}}}}")
    if not isinstance(h["data"], dict) or not isinstance(h["history"], list) \
            or not all(isinstance(r, dict) for r in h["history"]):
        raise HeaderError(f"{name}: header 'data' must be an object and 'history' a list of objects")
    if len(h["history"]) > MAX_HISTORY:
        raise LimitError(f"{name}: {len(h['history']):,} history records exceed the reader's "
                         f"limit of {MAX_HISTORY:,}")
    return h


def _not_json(word: str):
    """Python's json reads NaN and Infinity; JSON (RFC 8259) has no such numbers."""
    raise ValueError(f"{word} is not a JSON number")


def _depth(x) -> int:
    """Nesting depth of parsed JSON: 0 for a scalar, 1 for a flat list or object."""
    depth, level = 0, [(x, 0)]
    while level:
        v, d = level.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d + 1)
            level.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return depth


def check_shape(shape, where: str) -> None:
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(is_int(d, 0, MAX_ELEMENTS) for d in shape)):
        raise HeaderError(f"{where}: bad shape {shape!r}")


def check_total(shapes, name: str, nbytes: int) -> None:
    """The elements of ``shapes`` fit the budget of a file of ``nbytes`` bytes."""
    total = sum(math.prod(s) for s in shapes)
    cap = element_budget(nbytes)
    if total > cap:
        raise LimitError(f"{name}: {total:,} elements exceed the reader's limit of {cap:,} for "
                         f"a file of {nbytes:,} bytes")


# --- version 1 tensor entries (docs/FORMAT.md, appendix) ---------------------------------------

SECTIONS_V1 = {"dense": ["dense"],
               "sparse": ["gap_codes", "gaps", "values"],
               "quantized": ["codebook", "weight_codes", "weights", "gap_codes", "gaps"],
               "quantized_dense": ["codebook", "weight_codes", "weights"]}
KEYS_V1 = {"dense": {"stored"},
           "sparse": {"order", "index_bits", "entries", "nonzeros"},
           "quantized": {"order", "index_bits", "entries", "nonzeros", "bits", "codebook_size",
                         "quant_meta"},
           "quantized_dense": {"bits", "codebook_size", "quant_meta"}}


def check_entry_v1(t, name: str) -> None:
    """The schema of one version 1 tensor entry."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise HeaderError(f"{name}: a tensor entry without a name")
    where = f"{name}: tensor {t['name']!r}"
    kind = t.get("kind")
    if not isinstance(kind, str) or kind not in SECTIONS_V1:
        raise HeaderError(f"{where}: unknown kind {kind!r}")
    if set(t) != {"name", "dtype", "shape", "kind", "sections"} | KEYS_V1[kind]:
        raise HeaderError(f"{where}: keys {sorted(t)} do not match kind {kind!r}")
    if not isinstance(t["dtype"], str) or t["dtype"] not in DTYPES:
        raise HeaderError(f"{where}: unknown dtype {t['dtype']!r}")
    check_shape(t["shape"], where)
    secs = t["sections"]
    if not (isinstance(secs, list) and [s[0] if isinstance(s, list) and s else None
                                         for s in secs] == SECTIONS_V1[kind]
            and all(len(s) == 4 and all(is_int(v, 0) for v in s[1:]) for s in secs)):
        raise HeaderError(f"{where}: sections must be {SECTIONS_V1[kind]} as [name, offset, "
                          "length, crc32]")
    if kind == "dense":
        ok = isinstance(t["stored"], str) and t["stored"] == t["dtype"] or (
            t["stored"] == "float16" and t["dtype"] in ("float32", "float64", "bfloat16"))
        if not ok:
            raise HeaderError(f"{where}: stored dtype {t['stored']!r} for a {t['dtype']} tensor")
        return
    _check_weight(t, where, min_codebook=1)


def _check_weight(t: dict, where: str, min_codebook: int) -> None:
    """The fields of a sparse or quantized entry (both versions)."""
    kind = t["kind"]
    if t["dtype"] != "float32" or not t["shape"]:
        raise HeaderError(f"{where}: a {kind} tensor must be float32 with at least one dimension")
    if kind in ("sparse", "quantized"):
        if not one_of(t["order"], ("csr", "csc")) or not is_int(t["index_bits"], 1, MAX_BITS) \
                or not is_int(t["entries"]) or not is_int(t["nonzeros"]):
            raise HeaderError(f"{where}: bad order, index_bits, entries or nonzeros")
    if kind in ("quantized", "quantized_dense"):
        if not is_int(t["bits"], 1, MAX_BITS) \
                or not is_int(t["codebook_size"], min_codebook, 1 << MAX_BITS) \
                or not isinstance(t["quant_meta"], dict):
            raise HeaderError(f"{where}: bad bits, codebook_size or quant_meta")


# --- version 2 tensor entries (docs/FORMAT.md, "Tensor entries") ------------------------------

# The fields of each kind's entry list after the kind, in order; *_len are section lengths.
FIELDS_V2 = {"dense": ("stored",),
             "sparse": ("order", "index_bits", "entries", "nonzeros", "gaps_len"),
             "quantized": ("bits", "codebook_size", "codebook_dtype", "order", "index_bits",
                           "entries", "nonzeros", "weights_len", "gaps_len"),
             "quantized_dense": ("bits", "codebook_size", "codebook_dtype", "weights_len")}
CODEBOOK_DTYPES = {"float16": 2, "float32": 4}


def alphabet(t: dict, stream: str) -> int:
    """Symbols of a tensor's Huffman stream: ``k + 1`` for weights (symbol ``k``: no cluster),
    ``2**index_bits + 1`` for gaps (symbol ``2**index_bits``: a filler)."""
    return t["codebook_size"] + 1 if stream == "weights" else (1 << t["index_bits"]) + 1


def check_entry_v2(e, tname: str, dtype: str, shape: tuple, quant_meta: dict, name: str) -> dict:
    """One version 2 tensor entry (``0`` or a list), as a dict of v1-style fields."""
    where = f"{name}: tensor {tname!r}"
    if is_int(e, 0, 0):                # the integer 0 (not false, 0.0 or -0.0)
        return {"name": tname, "dtype": dtype, "shape": list(shape), "kind": "dense",
                "stored": dtype}
    if not isinstance(e, list) or not e or not one_of(e[0], FIELDS_V2):
        raise HeaderError(f"{where}: an entry must be 0 or [kind, ...], got {str(e)[:40]}")
    kind, fields = e[0], FIELDS_V2[e[0]]
    extra = e[1 + len(fields):]
    if len(e) < 1 + len(fields) or len(extra) > (kind in ("quantized", "quantized_dense")):
        raise HeaderError(f"{where}: a {kind} entry holds {', '.join(fields)}")
    t = {"name": tname, "dtype": dtype, "shape": list(shape), "kind": kind,
         **dict(zip(fields, e[1:]))}
    if kind == "dense":
        stored = t["stored"]
        if not one_of(stored, DTYPES) or not (stored == dtype or stored in NARROWER.get(dtype, ())
                                              or (stored == "float16" and dtype == "bfloat16")):
            raise HeaderError(f"{where}: stored dtype {t['stored']!r} for a {dtype} tensor")
        return t
    if kind != "sparse":
        if extra and not isinstance(extra[0], dict):
            raise HeaderError(f"{where}: quantizer fields must be an object")
        t["quant_meta"] = extra[0] if extra else quant_meta
        if not one_of(t["codebook_dtype"], CODEBOOK_DTYPES):
            raise HeaderError(f"{where}: codebook dtype must be float16 or float32")
    for f in ("weights_len", "gaps_len"):
        if f in t and not is_int(t[f]):
            raise HeaderError(f"{where}: bad section length {t[f]!r}")
    _check_weight(t, where, min_codebook=0)
    return t


def tile(lengths, start: int, dlen: int, name: str) -> list[tuple[int, int]]:
    """(offset, length) of sections laid back to back from ``start``; they must end at ``dlen``
    exactly when ``lengths`` is the whole data area (checked by the caller)."""
    out, off = [], start
    for n in lengths:
        if off + n > dlen:
            raise InvalidOffsetError(f"{name}: sections run past the {dlen} data bytes")
        out.append((off, n))
        off += n
    return out
