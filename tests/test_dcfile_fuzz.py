"""Reading .dc files from anyone: thousands of seeded mutations of a small valid file, of each
format version, must each decode or raise a FormatError, never another exception, hang, or
allocate from a forged size."""
import json
import random
import struct
import time
import tracemalloc
import zlib

import pytest
import torch
from test_dcfile import (GOLDEN_IMPLICIT, _forge, dctiny, forge_v2,  # noqa: F401
                         inflate, split_v2, tiny_bytes, tiny_stage,    # (dctiny: autouse)
                         v1_bytes)

from deepcomp.loading import decode_bytes
from deepcomp.encode import encode_stage
from deepcomp.errors import FormatError

VERSIONS = [1, "2-implicit", 2, "2-reference"]


def base(version) -> bytes:
    """The small valid file: the committed version 1 one; the committed version 2 one whose
    layout the architecture implies; the tiny model encoded now (every tensor listed); the same
    with an architecture the reader does not build (a user's module:factory reference)."""
    if version == "2-reference":
        sf = tiny_stage()
        sf.arch = {"name": "no_such_package:Tiny", "kwargs": {}}
        buf = encode_stage(sf)[0]
        assert split_v2(buf)[0]["explicit"] is True
        return buf
    if version == "2-implicit":
        with open(GOLDEN_IMPLICIT, "rb") as f:
            return f.read()
    return v1_bytes() if version == 1 else tiny_bytes()


def forge(version: int):
    return _forge if version == 1 else forge_v2


def header_json(version, buf: bytes) -> dict:
    if version != 1:
        return split_v2(buf)[0]
    hlen = struct.unpack_from("<I", buf, 12)[0]
    return json.loads(inflate(buf[28:28 + hlen]))


def _try(buf: bytes, seen: dict):
    try:
        decode_bytes(buf)
        seen["ok"] = seen.get("ok", 0) + 1
    except FormatError as e:
        seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1


def mutate_bytes(buf: bytes, rnd, ops: int = 5) -> bytes:
    """One random change: a bit flipped, a byte replaced, bytes cut or inserted, or (the fifth
    of ``ops``) the file truncated."""
    b = bytearray(buf)
    op = rnd.randrange(ops)
    i = rnd.randrange(len(b))
    if op == 0:
        b[i] ^= 1 << rnd.randrange(8)
    elif op == 1:
        b[i] = rnd.randrange(256)
    elif op == 2:
        del b[i:i + rnd.randrange(1, 16)]
    elif op == 3:
        b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 16)))
    else:
        b = b[:i]
    return bytes(b)


@pytest.mark.parametrize("version", VERSIONS)
def test_random_byte_mutations(version):
    buf = base(version)
    rnd = random.Random(1234)
    seen = {}
    t0 = time.perf_counter()
    for _ in range(3000):
        b = mutate_bytes(buf, rnd)
        if b != buf:
            _try(b, seen)
    assert time.perf_counter() - t0 < 60
    assert seen.get("ChecksumError", 0) > 1000 and "ok" not in seen


_VALUES = [0, 1, -1, 7, 255, 1 << 31, 1 << 62, 10 ** 30, 0.5, -0.0, None, True, "", "x",
           "csc", "dense", "quantized", "float16", "bool", [], [0], [1, 2], [1 << 40], {}]


def _leaves(x, path=()):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaves(v, path + (i,))
    yield path


def _set(x, path, value, rnd):
    for p in path[:-1]:
        x = x[p]
    if isinstance(x, dict) and rnd.random() < 0.2:
        del x[path[-1]]
    else:
        x[path[-1]] = value


def header_edit(paths, rnd):
    """An edit for ``forge``: one or two header fields (of ``paths``) set to odd values."""
    edits = [(rnd.choice(paths), rnd.choice(_VALUES)) for _ in range(rnd.randrange(1, 3))]

    def edit(h, d):
        for path, value in edits:
            try:
                _set(h, path, json.loads(json.dumps(value)), rnd)
            except (KeyError, IndexError, TypeError):
                pass
    return edit


@pytest.mark.parametrize("version", VERSIONS)
def test_forged_header_mutations_with_valid_checksums(version):
    """The adversarial case: each header field changed, then every CRC recomputed, so the
    reader's own validation (not the checksums) must catch it."""
    buf = base(version)
    paths = [p for p in _leaves(header_json(version, buf)) if p and p[0] != "history"]
    rnd = random.Random(99)
    seen = {}
    tracemalloc.start()
    for _ in range(2000):
        _try(forge(version)(buf, header_edit(paths, rnd)), seen)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20                 # forged counts and shapes allocate nothing big
    assert len(seen) >= 5                  # many distinct named errors were exercised


@pytest.mark.parametrize("version", VERSIONS)
def test_forged_data_mutations_with_valid_checksums(version):
    """Data bytes changed (the header kept), the checksums made right: each file is refused
    with the error of what was hit (a side block that no longer inflates or has the wrong size,
    a Huffman stream that breaks its code or its counts), or decodes to tensors of the
    header's names, dtypes and shapes, the same twice."""
    buf = base(version)
    want = {k: (v.dtype, v.shape) for k, v in decode_bytes(buf).state_dict.items()}
    rnd = random.Random(7)
    seen = {}
    for _ in range(2000):
        def edit(h, d):
            for _ in range(rnd.randrange(1, 4)):
                if d:
                    d[rnd.randrange(len(d))] = rnd.randrange(256)
        forged = forge(version)(buf, edit)
        _try(forged, seen)
        try:
            got = decode_bytes(forged).state_dict
        except FormatError:
            continue
        assert {k: (v.dtype, v.shape) for k, v in got.items()} == want
        again = decode_bytes(forged).state_dict
        assert all(torch.equal(got[k], again[k]) or got[k].isnan().any() for k in got)
    kinds = {"CountMismatchError", "FormatError"} | ({"HeaderError", "HeaderTooLargeError"}
                                                     if version != 1 else set())
    assert kinds <= set(seen) and seen.get("ok", 0) < 2000, seen


@pytest.mark.parametrize("version", VERSIONS)
def test_header_bytes_mutations_with_valid_checksums(version):
    """Bytes of the header's JSON text changed, then deflated and checksummed again; and the
    deflated bytes themselves changed."""
    from deepcomp.dc.format import deflate
    buf = base(version)
    start = 28 if version == 1 else 24
    hlen = struct.unpack_from("<I", buf, 12)[0]
    dlen = struct.unpack_from("<Q", buf, start - 8)[0]
    text = inflate(buf[start:start + hlen])
    rnd = random.Random(5)
    seen = {}
    for i in range(1000):
        if i % 2:
            t = bytearray(text)
            t[rnd.randrange(len(t))] = rnd.randrange(256)
            h = bytearray(deflate(bytes(t)))
        else:
            h = bytearray(buf[start:start + hlen])
            h[rnd.randrange(len(h))] = rnd.randrange(256)
        data = buf[start + hlen:start + hlen + dlen]
        lengths = struct.pack("<IIQ", len(h), zlib.crc32(bytes(h)), dlen) if version == 1 \
            else struct.pack("<IQ", len(h), dlen)
        body = buf[:12] + lengths + bytes(h) + data
        _try(body + struct.pack("<I", zlib.crc32(body)), seen)
    assert seen.get("HeaderError", 0) > 100
