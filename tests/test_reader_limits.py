"""Reader limits (docs/FORMAT.md, "Reader limits"): a small forged file cannot make either reader
take gigabytes or seconds. Each case was a real finding: the file is refused with the reader's
own one-line error, within a second and a small fraction of memory, by deepcomp's reader and by
the C reader alike (run under a 2 GiB address-space limit)."""
import json
import os
import resource
import struct
import subprocess
import time
import tracemalloc
import zlib

import pytest
from test_c_reader import build, dcdump, run  # noqa: F401  (fixtures)
from test_dcfile import dctiny, forge_v2, split_v2, tiny_bytes  # noqa: F401  (dctiny: autouse)

import deepcomp
from deepcomp import errors
from deepcomp.dc.format import MAX_HISTORY, deflate, element_budget
from deepcomp.loading import decode_bytes


def _shape(name, shape):
    def edit(h, data):
        for entry in h["state"]:
            if entry[0] == name:
                entry[2] = shape
    return edit


def _history(n):
    def edit(h, data):
        h["history"] = [{}] * n
    return edit


def _arch(kwargs):
    def edit(h, data):
        h["arch"] = {"name": "lenet300", "kwargs": kwargs}
    return edit


def _long_number(h, data):
    h["history"] = [{"stage": "baseline", "x": LONG}]     # spelled out in _forged


LONG = 1234567


# (case, header edit, Python error, C status)
CASES = [
    ("a 2^30-element quantized tensor", _shape("fc3.weight", [1 << 15, 1 << 15]),
     errors.LimitError, "DC_E_LIMIT"),
    ("a shape edited to a million rows", _shape("fc1.weight", [1048676, 4]),
     errors.LimitError, "DC_E_LIMIT"),
    ("an architecture of 1,890-pixel images", _arch({"img_size": 1890}), errors.LimitError, None),
    ("5.6 million history records", _history(5_600_000), errors.HeaderTooLargeError,
     "DC_E_HEADER_TOO_LARGE"),
    (f"{MAX_HISTORY + 1} history records", _history(MAX_HISTORY + 1), errors.LimitError,
     "DC_E_LIMIT"),
    ("a header integer of 4,301 digits", _long_number, errors.HeaderError, "DC_E_HEADER"),
]
IDS = [c[0] for c in CASES]


def _forged(edit) -> bytes:
    """The tiny file with its header edited, every checksum made right again (a number of
    4,301 digits is written into the JSON text: Python cannot even hold it as an int)."""
    buf = forge_v2(tiny_bytes(), edit)
    if edit is not _long_number:
        return buf
    h, data = split_v2(buf)
    text = json.dumps(h, sort_keys=True, separators=(",", ":")).replace(str(LONG), "9" * 4301)
    header = deflate(text.encode())
    body = b"DEEPCOMP" + struct.pack("<HHIQ", 2, 0, len(header), len(data)) + header + data
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("case,edit,error,status", CASES, ids=IDS)
def test_python_reader_refuses_within_a_second_and_little_memory(case, edit, error, status):
    buf = _forged(edit)
    assert len(buf) < 20_000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(error) as e:
            decode_bytes(buf, "forged.dc")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 64 << 20, f"{peak:,} bytes at the peak"
    assert "\n" not in str(e.value) and str(e.value).startswith("forged.dc: ")


def test_loading_a_forged_architecture_is_the_readers_error(tmp_path):
    """deepcomp.load built the model the header names (a RuntimeError from the allocator)."""
    path = tmp_path / "big.dc"
    path.write_bytes(_forged(_arch({"img_size": 1890})))
    with pytest.raises(errors.LimitError, match="elements exceed the reader's limit"):
        deepcomp.load(str(path))


def test_the_budget_grows_with_the_file():
    assert element_budget(0) == 1 << 20
    assert element_budget(10_000) == (1 << 20) + 1024 * 10_000
    assert element_budget(1 << 40) == 1 << 30


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("case,edit,error,status", [c for c in CASES if c[3]],
                         ids=[c[0] for c in CASES if c[3]])
def test_c_reader_refuses_within_a_second_under_2_gib(dcdump, tmp_path, case, edit, error,
                                                       status):
    path = tmp_path / "forged.dc"
    path.write_bytes(_forged(edit))
    t0 = time.perf_counter()
    r = subprocess.run([dcdump, str(path)], capture_output=True, text=True, timeout=10,
                       preexec_fn=_limit_memory)
    assert time.perf_counter() - t0 < 1.0
    assert r.returncode == 1 and f"({status})" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_dcdump_never_writes_over_its_input(dcdump, tmp_path):
    """`dcdump --raw a.dc a.dc` deleted a.dc; now it is refused and a.dc is untouched."""
    path = tmp_path / "a.dc"
    path.write_bytes(tiny_bytes())
    before = path.read_bytes()
    r = run(dcdump, "--raw", path, path)
    assert r.returncode == 2 and "is the input file" in r.stderr
    assert path.read_bytes() == before
    link = tmp_path / "b.dc"
    os.symlink(path, link)
    assert run(dcdump, "--raw", link, path).returncode == 2 and path.read_bytes() == before
    bad = tmp_path / "bad.dc"
    bad.write_bytes(b"DEEPCOMP junk")
    out = tmp_path / "out.raw"
    out.write_bytes(b"old")
    assert run(dcdump, "--raw", out, bad).returncode == 1
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["a.dc", "b.dc", "bad.dc", "out.raw"]
