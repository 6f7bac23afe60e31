"""The .dc file: golden bytes against docs/FORMAT.md (version 2, and the committed version 1
file), exact round trips on every registered model, determinism, an empty layer, CLI."""
import json
import os
import random
import struct
import sys
import zlib

import pytest
import torch
from torch import nn

from deepcomp import errors
from deepcomp.cli import main
from deepcomp.dc.format import canonical_json, deflate
from deepcomp.dc.write import pack
from deepcomp.encode import EncodeConfig, encode_stage, encode_tensors, stored_stage
from deepcomp.models import _registry, create, list_models
from deepcomp.loading import decode_bytes, load_stage, read_dc
from deepcomp.stagefile import StageFile, save_stage

GOLDEN_V1 = os.path.join(os.path.dirname(__file__), "golden", "tiny.dc")     # committed, v1
# committed, v2 as deepcomp wrote it before every file listed its tensors (layout implied)
GOLDEN_IMPLICIT = os.path.join(os.path.dirname(__file__), "golden", "tiny-v2.dc")
GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "tiny-v2-explicit.dc")


def inflate(raw: bytes) -> bytes:
    return zlib.decompress(raw, -15)


class Tiny(nn.Module):
    """4 -> 3 -> 3 -> 2: 35 parameters, small enough to check a file by hand."""

    def __init__(self, num_classes=2, in_chans=1, img_size=2):
        super().__init__()
        self.fc1 = nn.Linear(in_chans * img_size * img_size, 3)
        self.fc2 = nn.Linear(3, 3)
        self.fc3 = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


@pytest.fixture(autouse=True)
def dctiny():
    """Registers the tiny model for one test only, so registry-wide tests never see it."""
    _registry.register(_registry.ModelInfo("dctiny", Tiny, (1, 2, 2), 2, 35, "test"))
    yield
    _registry._REGISTRY.pop("dctiny", None)


def tiny_stage() -> StageFile:
    """fc1: pruned and quantized (2 bits); fc2: pruned only; fc3: quantized, not pruned."""
    cb1 = torch.tensor([-0.5, 0.25, 0.75, 1.0])
    idx1 = torch.tensor([[3, -1, -1, 0], [-1, -1, -1, -1], [1, 1, -1, 2]], dtype=torch.int16)
    cb3 = torch.tensor([-1.0, 2.0])
    idx3 = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.int16)
    fc2 = torch.tensor([[0.0, 1.5, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.125]])
    sd = {"fc1.weight": torch.where(idx1 >= 0, cb1[idx1.long().clamp(min=0)], torch.tensor(0.0)),
          "fc1.bias": torch.tensor([0.5, -0.5, 1.0]),
          "fc2.weight": fc2, "fc2.bias": torch.tensor([0.0, 0.25, -0.25]),
          "fc3.weight": cb3[idx3.long()], "fc3.bias": torch.tensor([1.0, -1.0])}
    masks = {"fc1.weight": idx1 >= 0, "fc2.weight": fc2 != 0}
    quant = {"fc1.weight": {"codebook": cb1, "indices": idx1, "bits": 2, "init": "linear"},
             "fc3.weight": {"codebook": cb3, "indices": idx3, "bits": 1, "init": "linear"}}
    data = {"spec": "synthetic:1x2x2", "mean": [0.5], "std": [0.25], "input_size": [1, 2, 2],
            "classes": ["a", "b"], "augment": "none"}
    history = [{"stage": "baseline", "metrics": {"top1": 50.0}}]
    return StageFile({"name": "dctiny", "kwargs": {"num_classes": 2}}, data, sd, masks, quant,
                     history)


TINY_CONFIG = EncodeConfig(index_bits="5")     # docs/FORMAT.md, "The tiny file"


def tiny_bytes() -> bytes:
    sf = tiny_stage()
    return pack(sf.arch, sf.data, sf.history, encode_tensors(sf, TINY_CONFIG))


def assert_same_stage(a: StageFile, b: StageFile):
    assert list(a.state_dict) == list(b.state_dict) or set(a.state_dict) == set(b.state_dict)
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
        assert a.state_dict[k].dtype == b.state_dict[k].dtype, k
    assert set(a.masks) == set(b.masks)
    for k in a.masks:
        assert torch.equal(a.masks[k].bool(), b.masks[k]), k
    assert set(a.quant) == set(b.quant)
    for k in a.quant:
        assert torch.equal(a.quant[k]["codebook"], b.quant[k]["codebook"]), k
        assert torch.equal(a.quant[k]["indices"].to(torch.int16), b.quant[k]["indices"]), k
        assert a.quant[k]["bits"] == b.quant[k]["bits"]


# --- the byte table ----------------------------------------------------------------------

def v1_bytes() -> bytes:
    with open(GOLDEN_V1, "rb") as f:
        return f.read()


def split_v2(buf: bytes) -> tuple[dict, bytes]:
    """(header JSON, data area) of a version 2 file."""
    hlen, dlen = struct.unpack_from("<IQ", buf, 12)
    return json.loads(inflate(buf[24:24 + hlen])), buf[24 + hlen:24 + hlen + dlen]


def test_golden_bytes_match_the_byte_table():
    """docs/FORMAT.md, "The tiny file", byte for byte."""
    buf = tiny_bytes()
    with open(GOLDEN, "rb") as f:
        golden = f.read()
    if buf != golden and os.environ.get("DEEPCOMP_WRITE_GOLDEN"):
        with open(GOLDEN, "wb") as f:             # a deliberate format change: never a pass
            f.write(buf)
        pytest.skip(f"rewrote {GOLDEN}: check its diff and docs/FORMAT.md, then run again")
    assert buf == golden, "encoding changed: update docs/FORMAT.md and the golden file"
    # "Layout": the 24-byte prefix, the header, the data area, the CRC32 of all before it
    assert buf[:8] == b"DEEPCOMP"
    major, minor, hlen, dlen = struct.unpack_from("<HHIQ", buf, 8)
    assert (major, minor) == (2, 0) and len(buf) == 28 + hlen + dlen == 431
    assert struct.unpack("<I", buf[-4:])[0] == zlib.crc32(buf[:-4])
    text = inflate(buf[24:24 + hlen])                # raw DEFLATE of the canonical JSON
    h = json.loads(text)
    assert text == canonical_json(h)
    # "Header": every name, dtype and shape; one entry per tensor in name order
    assert set(h) == {"arch", "blocks", "data", "explicit", "history", "quant_meta", "state",
                      "tensors"}
    assert h["explicit"] is True and h["state"] == [
        ["fc1.bias", "float32", [3]], ["fc1.weight", "float32", [3, 4]],
        ["fc2.bias", "float32", [3]], ["fc2.weight", "float32", [3, 3]],
        ["fc3.bias", "float32", [2]], ["fc3.weight", "float32", [2, 3]]]
    assert h["quant_meta"] == {"init": "linear"}
    assert h["blocks"] == {"code_tables": 18, "codebooks": 14, "dense": 17}
    assert h["tensors"] == [["dense", "float16"],                               # fc1.bias
                            ["quantized", 2, 4, "float16", "csc", 5, 5, 5, 2, 2],  # fc1.weight
                            ["dense", "float16"],                               # fc2.bias
                            ["sparse", "csr", 5, 3, 3, 1],                      # fc2.weight
                            ["dense", "float16"],                               # fc3.bias
                            ["quantized_dense", 1, 2, "float16", 1]]            # fc3.weight
    data = buf[24 + hlen:24 + hlen + dlen]
    # "Side blocks": code lengths, one byte per symbol of each stream's alphabet
    lengths = inflate(data[:18])
    assert len(lengths) == 5 + 33 + 33 + 3
    assert lengths[:9] == bytes([2, 2, 2, 2, 0, 2, 2, 2, 2])  # fc1 weights 0..3 + none, gaps
    assert lengths[38:43] == bytes([0, 1, 0, 0, 1])           # fc2 gaps 1 and 4 (a filler)
    assert lengths[-3:] == bytes([1, 1, 0])                   # fc3 weights: two 1-bit codes
    # codebooks: float16 bits mapped to ordered integers, steps modulo 2**16, byte planes
    assert inflate(data[18:32]) == bytes([0xff, 0x01, 0x00, 0x00, 0x47, 0x6c, 0x06, 0x02,
                                          0xff, 0x01, 0x43, 0x7c])
    half = struct.Struct("<3e")                               # dense: byte planes of float16
    planes = [(x[0::2], x[1::2]) for x in (half.pack(0.5, -0.5, 1.0), half.pack(0.0, 0.25, -0.25),
                                           struct.pack("<2e", 1.0, -1.0))]
    assert inflate(data[32:49]) == b"".join(lo + hi for lo, hi in planes)
    # "Sections": the streams, tensors in name order
    assert data[49:] == b"".join([
        bytes.fromhex("d480"), bytes.fromhex("1b40"),   # fc1.weight weights, gaps
        bytes.fromhex("40"),                            # fc2.weight gaps
        struct.pack("<3f", 1.5, -2.0, 0.125),           # fc2.weight values (csr order)
        bytes.fromhex("70")])                           # fc3.weight: symbols 0 1 1 1 0 0
    assert_same_stage(tiny_stage(), decode_bytes(buf))


def test_the_tiny_file_table_in_format_md_is_the_golden_file():
    """docs/FORMAT.md, "The tiny file": every row's bytes are the file's at that offset."""
    import re
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "FORMAT.md")).read()
    table = doc[doc.index("## The tiny file"):doc.index("## Why version 2")]
    with open(GOLDEN, "rb") as f:
        buf = f.read()
    rows = re.findall(r"^\| (\d+) +\| `([0-9a-f ]+)` \|", table, re.M)
    assert len(rows) == 13
    for offset, hexbytes in rows:
        want = bytes.fromhex(hexbytes)
        assert buf[int(offset):int(offset) + len(want)] == want, offset
    header = re.search(r"```json\n(\{.*\})\n```", table).group(1)
    hlen = struct.unpack_from("<I", buf, 12)[0]
    assert inflate(buf[24:24 + hlen]).decode() == header


def test_implicit_layout_golden_file_still_decodes():
    """The committed version 2 file without names and shapes (docs/FORMAT.md, "Names, dtypes
    and shapes": the layout implied by the architecture) reads back exactly; its data area is
    the explicit file's."""
    with open(GOLDEN_IMPLICIT, "rb") as f:
        buf = f.read()
    h, data = split_v2(buf)
    assert len(buf) == 372 and "state" not in h and "explicit" not in h
    assert data == split_v2(tiny_bytes())[1]
    back = decode_bytes(buf)
    assert_same_stage(tiny_stage(), back)
    assert list(back.state_dict) == list(Tiny().state_dict())


def test_version_1_golden_file_still_decodes():
    """The committed version 1 file (docs/FORMAT.md, appendix) reads back exactly."""
    buf = v1_bytes()
    assert buf[:8] == b"DEEPCOMP"
    major, minor, hlen, hcrc, dlen = struct.unpack_from("<HHIIQ", buf, 8)
    assert (major, minor) == (1, 0) and len(buf) == 32 + hlen + dlen
    assert zlib.crc32(buf[28:28 + hlen]) == hcrc
    h = json.loads(inflate(buf[28:28 + hlen]))
    assert [t["name"] for t in h["tensors"]] == sorted(tiny_stage().state_dict)
    back = decode_bytes(buf)
    assert_same_stage(tiny_stage(), back)
    assert back.history == [{"stage": "baseline", "metrics": {"top1": 50.0}}]
    again = decode_bytes(encode_stage(back)[0])          # re-encoded as version 2
    assert_same_stage(tiny_stage(), again)


def test_fillers_and_csc_choice():
    """Two kept columns: column order stores six gaps of 1 where row order needs gaps of 63
    (with fillers at 5 bits), so the encoder picks CSC; at 1 bit, CSC needs a filler too."""
    sf = tiny_stage()
    sf.arch = {"name": "dctiny", "kwargs": {"num_classes": 2, "img_size": 8}}
    w = torch.zeros(3, 64)
    w[:, 0] = torch.tensor([1.0, 2.0, 3.0])
    w[:, 1] = torch.tensor([4.0, 5.0, 6.0])
    sf.state_dict["fc1.weight"] = w
    sf.masks["fc1.weight"] = w != 0
    del sf.quant["fc1.weight"]
    buf, rec = encode_stage(sf)
    st = rec["sizes"]["tensors"]["fc1.weight"]
    assert st["order"] == "csc" and st["kind"] == "sparse" and st["fillers"] == 0
    assert_same_stage(sf, decode_bytes(buf))
    w[:, 1] = 0
    w[2, 40] = 7.0                          # CSC gap 40*3 + 2 - 2 = 120 at 5 bits: 3 fillers
    sf.masks["fc1.weight"] = w != 0
    buf, rec = encode_stage(sf, EncodeConfig(index_bits="fc1=5"))
    st = rec["sizes"]["tensors"]["fc1.weight"]
    assert st["entries"] == 4 + st["fillers"] and st["fillers"] >= 1
    assert_same_stage(sf, decode_bytes(buf))


def test_index_width_is_chosen_by_measured_size():
    """Kept weights 40 or 41 apart: the paper's 5-bit relative index needs a filler for each; by
    default the encoder measures every width and the file is smaller. A width set per layer is
    kept, and 'auto' asks for the measured one."""
    sf = tiny_stage()
    sf.arch = {"name": "dctiny", "kwargs": {"num_classes": 2, "img_size": 32}}
    g = torch.Generator().manual_seed(3)
    pos = torch.arange(0, 3072 - 1, 40) + torch.randint(0, 2, (77,), generator=g)
    w = torch.zeros(3 * 1024)
    w[pos] = torch.randn(len(pos), generator=g)
    w = w.reshape(3, 1024)
    sf.state_dict["fc1.weight"], sf.masks["fc1.weight"] = w, w != 0
    del sf.quant["fc1.weight"]
    sizes = {}
    for setting in ("", "fc1=auto", "fc1=5", "fc1=5,fc2=auto"):
        buf, rec = encode_stage(sf, EncodeConfig(index_bits=setting))
        assert_same_stage(sf, decode_bytes(buf))
        parts, st = rec["sizes"]["breakdown"], rec["sizes"]["tensors"]["fc1.weight"]
        sizes[setting] = (parts["gap_stream"] + parts["code_tables"], st["raw_index_bits"])
        assert split_v2(buf)[0]["tensors"][1][2] == st["raw_index_bits"]   # the header says it
    assert sizes[""] == sizes["fc1=auto"] and sizes["fc1=5"] == sizes["fc1=5,fc2=auto"]
    assert sizes["fc1=5"][1] == 5 and sizes[""][1] > 5 and sizes[""][0] < sizes["fc1=5"][0]
    with pytest.raises(errors.UsageError, match="1 to 12 bits or auto"):
        encode_stage(sf, EncodeConfig(index_bits="fc1=13"))


def test_same_bytes_whatever_the_dict_order():
    a = tiny_bytes()
    sf = tiny_stage()
    rnd = random.Random(0)
    for _ in range(5):
        keys = list(sf.state_dict)
        rnd.shuffle(keys)
        sf.state_dict = {k: sf.state_dict[k] for k in keys}
        sf.masks = dict(reversed(list(sf.masks.items())))
        sf.quant = {k: dict(reversed(list(v.items()))) for k, v in reversed(sf.quant.items())}
        sf.data = dict(reversed(list(sf.data.items())))
        sf.history = [dict(reversed(list(r.items()))) for r in sf.history]
        assert pack(sf.arch, sf.data, sf.history, encode_tensors(sf, TINY_CONFIG)) == a


# --- round trips -------------------------------------------------------------------------

def _prune_quantize(sf: StageFile, keep=0.1, bits=None, prune=True, quantize=True, no_prune=()):
    """Magnitude pruning and a linear codebook, enough to exercise every layout."""
    from deepcomp.sizes import default_weight_bits, is_prunable_weight
    sf = StageFile(sf.arch, sf.data, {k: v.clone() for k, v in sf.state_dict.items()}, {}, {},
                   list(sf.history))
    for n, w in sf.state_dict.items():
        if not is_prunable_weight(n, w):
            continue
        m = torch.ones_like(w, dtype=torch.bool)
        if prune and n not in no_prune:
            m = w.abs() >= w.abs().flatten().kthvalue(max(1, int(w.numel() * (1 - keep))))[0]
            sf.masks[n] = m
            w = w * m
        if quantize:
            b = bits or default_weight_bits(w)
            cb = torch.linspace(float(w.min()), float(w.max()), 2 ** b)
            idx = (w.unsqueeze(-1) - cb).abs().argmin(-1).to(torch.int16)
            idx[~m] = -1
            w = torch.where(m, cb[idx.long().clamp(min=0)], torch.zeros(()))
            sf.quant[n] = {"codebook": cb, "indices": idx, "bits": b, "init": "linear"}
        sf.state_dict[n] = w
    return sf


@pytest.mark.parametrize("layout", ["dense", "pruned", "quantized", "quantized_dense"])
def test_round_trip_lenet_is_exact_and_accuracy_identical(trained_lenet, digits, layout):
    from deepcomp.train import evaluate
    sf = trained_lenet if layout == "dense" else _prune_quantize(
        trained_lenet, prune=layout != "quantized_dense", quantize=layout != "pruned")
    buf, rec = encode_stage(sf)
    back = decode_bytes(buf)
    assert_same_stage(sf, back)
    assert evaluate(sf.build_model(), digits, "cpu") == evaluate(back.build_model(), digits, "cpu")
    assert rec["sizes"]["bytes"] == len(buf) == back.history[-1]["sizes"]["bytes"]
    assert sum(rec["sizes"]["breakdown"].values()) == len(buf)
    assert back.history[-1] == rec


def test_round_trip_resnet20_with_batch_norm():
    from deepcomp.models import create
    torch.manual_seed(0)
    net = create("resnet20", num_classes=10)
    for m in net.modules():                            # non-trivial batch norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    sf = StageFile.from_model(net, {"name": "resnet20", "kwargs": {"num_classes": 10}},
                              {"spec": "synthetic:3x32x32"})
    sf = _prune_quantize(sf, keep=0.3, no_prune=("conv1.weight",))
    sf.masks["linear.weight"] = sf.state_dict["linear.weight"] != 0
    buf, rec = encode_stage(sf)
    back = decode_bytes(buf)
    assert_same_stage(sf, back)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(sf.build_model().eval()(x), back.build_model().eval()(x))
    kinds = {t["kind"] for t in rec["sizes"]["tensors"].values()}
    assert kinds == {"quantized", "quantized_dense"}


def synthetic_stage(name: str) -> StageFile:
    """A registered model with small synthetic weights, laid out to exercise every kind: each
    convolution and linear weight keeps at most 48 random weights on a 2-bit float16 codebook,
    but for the smallest (quantized, not pruned) and the last other (pruned, float32 values); norms
    and biases random float32; BatchNorm's step counters 7."""
    from deepcomp.loading import arch_state
    from deepcomp.sizes import is_prunable_weight
    g = torch.Generator().manual_seed(0)
    arch = {"name": name, "kwargs": {"num_classes": 3}}
    sd = {}
    for k, (dtype, shape) in arch_state(arch, name).items():
        if dtype == "int64":
            sd[k] = torch.tensor(7)
        else:
            sd[k] = torch.randn(shape, generator=g) if len(shape) < 2 else torch.zeros(shape)
    weights = [k for k, v in sd.items() if is_prunable_weight(k, v)]
    smallest = min(weights, key=lambda k: sd[k].numel())
    last = [k for k in weights if k != smallest][-1]
    cb = torch.tensor([-0.5, -0.25, 0.25, 0.5])
    masks, quant = {}, {}
    for k in weights:
        w = sd[k].view(-1)
        if k == smallest:
            idx = torch.randint(0, 4, w.shape, generator=g, dtype=torch.int16)
        else:
            idx = torch.full(w.shape, -1, dtype=torch.int16)
            pos = torch.randint(0, w.numel(), (48,), generator=g)
            idx[pos] = torch.randint(0, 4, (48,), generator=g, dtype=torch.int16)
            masks[k] = (idx >= 0).view(sd[k].shape)
        w[:] = torch.where(idx >= 0, cb[idx.long().clamp(min=0)], torch.zeros(()))
        if k == last:
            w[idx >= 0] = torch.randn(int((idx >= 0).sum()), generator=g)
        else:
            quant[k] = {"codebook": cb, "indices": idx.view(sd[k].shape), "bits": 2,
                        "init": "linear"}
    return StageFile(arch, {"spec": "synthetic"}, sd, masks, quant, [])


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("tv.")])
def test_round_trip_every_registered_model(name):
    sf = synthetic_stage(name)
    buf, rec = encode_stage(sf)
    back = decode_bytes(buf)
    assert_same_stage(sf, back)
    assert list(back.state_dict) == list(create(name, num_classes=3).state_dict())
    h = split_v2(buf)[0]
    assert h["explicit"] is True and [s[0] for s in h["state"]] == sorted(sf.state_dict)
    kinds = {t["kind"] for t in rec["sizes"]["tensors"].values()}
    assert kinds == {"quantized", "quantized_dense", "sparse"}


def test_float16_is_opt_in_and_marked_lossy():
    sf = tiny_stage()
    sf.state_dict["fc1.bias"] = torch.tensor([0.1, -0.5, 1.0])
    exact, rec = encode_stage(sf)
    assert "lossy" not in rec
    half, rec16 = encode_stage(sf, EncodeConfig(float16=True))
    assert rec16["lossy"] == "float16"
    assert rec16["sizes"]["breakdown"]["dense"] < rec["sizes"]["breakdown"]["dense"]
    entries = split_v2(exact)[0]["tensors"]          # exact: float16 only where that is exact
    assert entries[0] == 0 and entries[2] == entries[4] == ["dense", "float16"]
    assert split_v2(half)[0]["tensors"][0] == ["dense", "float16"]
    back = decode_bytes(half).state_dict
    assert back["fc1.bias"].dtype == torch.float32
    assert torch.equal(back["fc1.bias"], sf.state_dict["fc1.bias"].half().float())
    assert not torch.equal(back["fc1.bias"], sf.state_dict["fc1.bias"])
    assert torch.equal(back["fc1.weight"], sf.state_dict["fc1.weight"])   # codebooks stay exact


def test_fold_bn_keeps_the_outputs_and_shrinks_the_dense_block(monkeypatch):
    sf = synthetic_stage("resnet20")
    g = torch.Generator().manual_seed(0)
    for k, v in sf.state_dict.items():           # batch norms as training leaves them
        if k.endswith(("running_mean", "bn1.bias", "bn2.bias")):
            sf.state_dict[k] = torch.randn(v.shape, generator=g) * 0.3
        elif k.endswith(("running_var", "bn1.weight", "bn2.weight")):
            sf.state_dict[k] = torch.rand(v.shape, generator=g) + 0.5
    sf.data["input_size"] = [3, 32, 32]          # what the graph the folding reads needs
    k = "layer1.0.conv2.weight"                  # input channel 3 pruned whole
    sf.masks[k][:, 3], sf.state_dict[k][:, 3], sf.quant[k]["indices"][:, 3] = False, 0, -1
    exact, rec = encode_stage(sf)
    folded, rec_f = encode_stage(sf, EncodeConfig(fold_batchnorm=True))
    assert rec_f["lossy"] == "folded batch norm"
    assert rec_f["sizes"]["breakdown"]["dense"] < 0.6 * rec["sizes"]["breakdown"]["dense"]
    back = decode_bytes(folded)
    assert all(torch.equal(back.state_dict[k], sf.state_dict[k]) for k in sf.masks)
    assert all(not back.state_dict[k].any() for k in back.state_dict if k.endswith("running_mean"))
    x = torch.randn(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        want, got = sf.build_model().eval()(x), back.build_model().eval()(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()
    sd = back.state_dict             # what no output reads is zero: a filter pruned whole ...
    dead = ~(sd["layer1.0.conv1.weight"] != 0).flatten(1).any(1)
    assert 0 < dead.sum() < dead.numel() and not sd["layer1.0.bn1.weight"][dead].any()
    assert sd["layer1.0.bn1.bias"][dead].all()                  # (its shift is still read)
    unread = ~(sd["layer1.0.conv2.weight"] != 0).transpose(0, 1).flatten(1).any(1)
    assert 0 < unread.sum() < unread.numel()                    # ... or a column pruned whole
    assert not sd["layer1.0.bn1.bias"][unread].any() and not sd["layer1.0.bn1.weight"][unread].any()
    monkeypatch.setattr(sys.modules["deepcomp.encode"], "zero_unread_channels",
                        lambda sf, sd: sd)       # folding alone: exactly the same outputs
    plain = decode_bytes(encode_stage(sf, EncodeConfig(fold_batchnorm=True))[0])
    assert not all(torch.equal(plain.state_dict[k], sd[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(plain.build_model().eval()(x), back.build_model().eval()(x))
    with pytest.raises(errors.UsageError, match="no batch norm"):
        encode_stage(tiny_stage(), EncodeConfig(fold_batchnorm=True))


class _Guards(nn.Module):
    """Where a zero channel does not make a batch norm value unread: a convolution with a
    bias, a grouped reader, a module called twice, statistics not folded."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)                       # with a bias
        self.bn_a = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)  # a grouped reader
        self.bn_b = nn.BatchNorm2d(4)
        self.c1, self.c2 = nn.Conv2d(4, 4, 1, bias=False), nn.Conv2d(4, 4, 1, bias=False)
        self.bn_twice = nn.BatchNorm2d(4)                            # called twice
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))
        x = torch.relu(self.bn_twice(self.c1(torch.relu(x))))
        x = torch.relu(self.bn_twice(self.c2(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def test_fold_bn_zeroes_only_what_no_output_reads():
    from deepcomp.encode import zero_unread_channels
    torch.manual_seed(0)
    m = _Guards()
    with torch.no_grad():
        m.a.weight[0], m.b.weight[:, 1], m.b.weight[3], m.c1.weight[2] = 0, 0, 0, 0
        for bn in (m.bn_a, m.bn_b, m.bn_twice):
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1), bn.running_mean.uniform_(-1, 1)
    sf = StageFile.from_module(m, {"spec": "synthetic", "input_size": [3, 8, 8]})
    folded = stored_stage(sf, EncodeConfig(fold_batchnorm=True)).state_dict
    assert folded["bn_b.weight"][3] == 0 and folded["bn_b.weight"][:3].all()  # no bias: unread
    assert folded["bn_a.weight"].all() and folded["bn_a.bias"].all()   # bias; grouped reader
    assert folded["bn_twice.weight"].all()                             # c2 feeds it too
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m.eval()(x), (lambda f: (f.load_state_dict(folded), f)[1])(
            _Guards()).eval()(x), rtol=1e-5, atol=1e-6)
    unfolded = zero_unread_channels(sf, dict(sf.state_dict))          # mean not zero: read
    assert unfolded["bn_b.weight"].all()


def test_mantissa_bits_round_biases_and_batch_norm_and_shrink_the_dense_block():
    from deepcomp.encode import round_mantissa
    sf = synthetic_stage("resnet20")
    g = torch.Generator().manual_seed(1)
    for k, v in sf.state_dict.items():           # shifts near zero beside scales near one
        if k.endswith("running_var") or k.endswith(("bn1.weight", "bn2.weight")):
            sf.state_dict[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("bn1.bias", "bn2.bias")):
            sf.state_dict[k] = torch.randn(v.shape, generator=g) * 0.01
    exact, rec = encode_stage(sf, EncodeConfig(float16=True))
    cfg = EncodeConfig(float16=True, mantissa_bits=4)
    rounded, rec_r = encode_stage(sf, cfg)
    assert rec_r["lossy"] == "float16, 4-bit mantissas"
    assert rec_r["sizes"]["breakdown"]["dense"] < 0.8 * rec["sizes"]["breakdown"]["dense"]
    back = decode_bytes(rounded)
    assert_same_stage(stored_stage(sf, cfg), back)
    sd, want = back.state_dict, sf.state_dict
    for k in sd:
        if k in sf.masks or k in sf.quant or not want[k].is_floating_point():
            assert torch.equal(sd[k], want[k]), k                     # weights and counters
            continue
        if k.endswith(("running_mean", "running_var")):
            assert torch.equal(sd[k], want[k].half().float()), k      # statistics: float16 only
            continue
        if "bn" in k and k.endswith(".bias"):
            scale = sd[k.replace(".bias", ".weight")]
            ref = torch.maximum(want[k].abs(), scale.abs())  # the scale's precision, not its own
            assert ((sd[k] - want[k]).abs() <= ref * 2.0 ** -5 + 1e-7).all(), k
            assert torch.equal(round_mantissa(sd[k], 4, scale), sd[k]), k
        else:
            assert ((sd[k] - want[k]).abs() <= want[k].abs() * 2.0 ** -5 + 1e-7).all(), k
            assert torch.equal(round_mantissa(sd[k], 4), sd[k]), k
    shifts = torch.cat([sd[k] for k in sd if k.endswith("bn1.bias")])
    assert (shifts == 0).float().mean() > 0.5     # below the scale's last bit: zero
    assert_same_stage(decode_bytes(encode_stage(back, cfg)[0]), back)   # again: no change
    assert round_mantissa(torch.tensor([1.0, 1.03, -1.03, 0.0, 3e-9]), 4).tolist() == \
        [1.0, 1.0, -1.0, 0.0, round_mantissa(torch.tensor([3e-9]), 4).item()]
    assert round_mantissa(torch.tensor([1.0 + 2 ** -5]), 4).item() == 1.0        # ties to even
    for bad in (11, True, 2.5):
        with pytest.raises(errors.UsageError, match="must lie in 1..10"):
            encode_stage(sf, EncodeConfig(mantissa_bits=bad))
    big = StageFile.from_module(nn.Linear(2, 2))         # rounding up would leave float16
    big.state_dict["bias"] = torch.tensor([65500.0, -0.3])
    kept = stored_stage(big, EncodeConfig(float16=True, mantissa_bits=5)).state_dict["bias"]
    assert torch.equal(kept, torch.tensor([65504.0, -0.3]).half().float())
    tiny = round_mantissa(torch.tensor([3e-9, 2.9e-7, -0.25]), 5)     # float16 numbers all
    assert torch.equal(tiny.half().float(), tiny)


def test_dense_bits_shares_the_biases_where_that_is_smaller(tmp_path):
    sf = synthetic_stage("lenet300")                      # random biases: 300, 100 and 3 values
    exact, rec = encode_stage(sf)
    shared, rec_s = encode_stage(sf, EncodeConfig(dense_bits=4))
    assert rec_s["lossy"] == "4-bit shared dense"
    assert len(shared) < len(exact) - 500
    kinds = {k: t["kind"] for k, t in rec_s["sizes"]["tensors"].items()}
    assert kinds["fc1.bias"] == kinds["fc2.bias"] == "quantized_dense"
    back = decode_bytes(shared)
    assert "fc3.bias" not in kinds and "fc3.bias" not in back.quant   # 3 values: cheaper as is
    stored = stored_stage(sf, EncodeConfig(dense_bits=4))
    assert_same_stage(stored, back)
    for k in ("fc1.bias", "fc2.bias"):
        b = back.state_dict[k]
        assert b.unique().numel() <= 16 and torch.equal(b.half().float(), b)
        assert back.quant[k]["codebook"].numel() <= 16 and k not in back.masks
        err = (b - sf.state_dict[k]).abs().max()
        assert 0 < err < (sf.state_dict[k].max() - sf.state_dict[k].min()) / 8
    assert torch.equal(back.state_dict["fc3.bias"], sf.state_dict["fc3.bias"])
    for k in sf.masks:                                    # the weights are untouched
        assert torch.equal(back.state_dict[k], sf.state_dict[k])
    from deepcomp.report import read_inputs, stage_rows          # the weights' bits, as before
    rows = []
    for name, buf in (("exact.dc", exact), ("shared.dc", shared)):
        (tmp_path / name).write_bytes(buf)
        rows.append(stage_rows(read_inputs([str(tmp_path / name)]))[-1])
    assert rows[0]["weight_bits"] == rows[1]["weight_bits"] != "32"
    assert rows[0]["index_bits"] == rows[1]["index_bits"] != "-"
    again, rec2 = encode_stage(back, EncodeConfig(dense_bits=2))   # the file, encoded again
    assert rec2["lossy"] == "2-bit shared dense"
    assert decode_bytes(again).quant["fc1.bias"]["codebook"].numel() <= 4
    dense = synthetic_stage("lenet300")                  # weights, quantized or not, untouched
    dense.state_dict["fc1.weight"] = torch.randn(300, 784)
    del dense.masks["fc1.weight"], dense.quant["fc1.weight"]
    st = stored_stage(dense, EncodeConfig(dense_bits=4))
    assert torch.equal(st.state_dict["fc1.weight"], dense.state_dict["fc1.weight"])
    assert "fc1.weight" not in st.quant and "fc1.bias" in st.quant
    with pytest.raises(errors.UsageError, match="must lie in 1..12"):
        encode_stage(sf, EncodeConfig(dense_bits=13))


def test_inconsistent_stage_files_are_refused():
    sf = tiny_stage()
    sf.state_dict["fc2.weight"][1, 1] = 3.0              # a weight outside its mask
    with pytest.raises(errors.CheckpointError, match="outside the mask"):
        encode_stage(sf)
    sf = tiny_stage()
    sf.state_dict["fc3.weight"][0, 0] = 0.3              # not a codebook value
    with pytest.raises(errors.CheckpointError, match="codebook"):
        encode_stage(sf)
    with pytest.raises(errors.UsageError, match="--index-bits: pattern .conv9. matches no layer"):
        encode_stage(tiny_stage(), EncodeConfig(index_bits="conv9=4"))
    sf = tiny_stage()                                    # a cluster index one past the codebook
    sf.quant["fc3.weight"]["indices"][0, 0] = len(sf.quant["fc3.weight"]["codebook"])
    sf.state_dict["fc3.weight"][0, 0] = 0.0
    with pytest.raises(errors.CheckpointError, match="cluster indices outside -1..1"):
        encode_stage(sf)


def test_every_index_width_of_the_format_encodes():
    """1 to 12 bits (MAX_BITS), the widest included; 13 is refused."""
    for bits in (1, 12):
        buf, _ = encode_stage(tiny_stage(), EncodeConfig(index_bits=str(bits)))
        assert_same_stage(decode_bytes(buf), tiny_stage())
        entries = [e for e in split_v2(buf)[0]["tensors"] if isinstance(e, list)]
        assert {e[2] if e[0] == "sparse" else e[5] for e in entries
                if e[0] in ("sparse", "quantized")} == {bits}      # FIELDS_V2's index_bits
    with pytest.raises(errors.UsageError, match="1 to 12 bits"):
        encode_stage(tiny_stage(), EncodeConfig(index_bits="13"))


# --- errors and the CLI ------------------------------------------------------------------

def _flip(buf: bytes, i: int) -> bytes:
    return buf[:i] + bytes([buf[i] ^ 0x40]) + buf[i + 1:]


def test_named_errors_for_each_malformation():
    buf = tiny_bytes()
    cases = [
        (b"PK\x03\x04" + buf[4:], errors.BadMagicError),
        (buf[:8] + struct.pack("<H", 3) + buf[10:], errors.UnsupportedVersionError),
        (buf[:20], errors.TruncatedFileError),
        (buf[:-10], errors.TruncatedFileError),
        (buf + b"\0", errors.InvalidOffsetError),
        (_flip(buf, 40), errors.ChecksumError),
        (_flip(buf, len(buf) - 20), errors.ChecksumError),
        (buf[:12] + struct.pack("<I", 1 << 30) + buf[16:], errors.HeaderTooLargeError),
    ]
    old = v1_bytes()
    cases += [(old[:20], errors.TruncatedFileError), (_flip(old, 40), errors.ChecksumError),
              (old[:12] + struct.pack("<I", 1 << 30) + old[16:], errors.HeaderTooLargeError)]
    for bad, err in cases:
        with pytest.raises(err):
            decode_bytes(bad)
    # a header that inflates past the cap (a "zip bomb"): refused without inflating it all
    bomb = deflate(b" " * (17 << 20))
    body = b"DEEPCOMP" + struct.pack("<HHIQ", 2, 0, len(bomb), 0) + bomb
    with pytest.raises(errors.HeaderTooLargeError):
        decode_bytes(body + struct.pack("<I", zlib.crc32(body)))


def _forge(buf: bytes, edit) -> bytes:
    """Version 1: edit the header JSON (and data) of a valid file, then make every checksum
    right again."""
    hlen, _, dlen = struct.unpack_from("<IIQ", buf, 12)
    h = json.loads(inflate(buf[28:28 + hlen]))
    data = bytearray(buf[28 + hlen:28 + hlen + dlen])
    data = edit(h, data) or data
    try:
        for t in h["tensors"]:
            for s in t["sections"]:
                try:
                    s[3] = zlib.crc32(bytes(data[s[1]:s[1] + s[2]]))
                except (TypeError, IndexError, KeyError, ValueError):
                    pass
    except (TypeError, KeyError):
        pass                                 # a header forged past the point of sections
    header = deflate(json.dumps(h, sort_keys=True, separators=(",", ":")).encode())
    body = b"DEEPCOMP" + struct.pack("<HHIIQ", 1, 0, len(header), zlib.crc32(header),
                                     len(data)) + header + bytes(data)
    return body + struct.pack("<I", zlib.crc32(body))


def forge_v2(buf: bytes, edit) -> bytes:
    """Version 2: edit the header JSON (and data) of a valid file, then make the CRC right."""
    h, data = split_v2(buf)
    data = bytearray(data)
    data = edit(h, data) or data
    header = deflate(json.dumps(h, sort_keys=True, separators=(",", ":")).encode())
    body = b"DEEPCOMP" + struct.pack("<HHIQ", 2, 0, len(header), len(data)) + header + bytes(data)
    return body + struct.pack("<I", zlib.crc32(body))


def test_forged_headers_raise_named_errors():
    def arch(h, d):
        h["arch"]["name"] = "no_such_net"

    def huge(h, d):
        h["arch"]["kwargs"] = {"num_classes": 2, "img_size": 1 << 20}

    deep = 0
    for _ in range(63):
        deep = [deep]

    v1 = [(lambda h, d: h["tensors"][0].update(shape=[4]), errors.HeaderError),
          (lambda h, d: h["tensors"][1].update(nonzeros=4), errors.CountMismatchError),
          (lambda h, d: h["tensors"][0]["sections"][0].__setitem__(1, 1),
           errors.InvalidOffsetError)]
    both = [(lambda h, d: h["tensors"][1].__setitem__(7, 4), errors.CountMismatchError),
            (lambda h, d: h["blocks"].update(codebooks=17), errors.InvalidOffsetError),
            (lambda h, d: h["blocks"].update(dense=16), errors.InvalidOffsetError),
            (lambda h, d: h["tensors"].__delitem__(-1), errors.HeaderError),
            (lambda h, d: h["tensors"].__setitem__(0, False), errors.HeaderError),
            (lambda h, d: h["data"].update(nest=deep), errors.HeaderError)]   # 65 levels
    implicit = [(lambda h, d: h.update(state=[["fc1.bias", "float32", [4]]]),
                 errors.CountMismatchError),            # the dense block holds 3 elements
                (lambda h, d: h.update(drop=["fc9.bias"]), errors.HeaderError),
                (lambda h, d: h.update(explicit=True), errors.HeaderError)]
    explicit = [(lambda h, d: h["state"][0].__setitem__(2, [4]), errors.CountMismatchError),
                (lambda h, d: h.update(drop=["fc1.bias"]), errors.HeaderError),
                (lambda h, d: h.__delitem__("state"), errors.HeaderError),
                (lambda h, d: h["state"].reverse(), errors.HeaderError),
                (lambda h, d: h["state"][1].__setitem__(1, "float64"), errors.HeaderError)]
    with open(GOLDEN_IMPLICIT, "rb") as f:
        old = f.read()
    for forge, buf, cases in ((_forge, v1_bytes(), v1), (forge_v2, old, both + implicit),
                              (forge_v2, tiny_bytes(), both + explicit)):
        for edit, err in cases + [(arch, errors.UnknownArchitectureError),
                                  (huge, errors.HeaderError)]:
            with pytest.raises(err):
                decode_bytes(forge(buf, edit))


def test_a_layer_pruned_to_nothing_encodes_and_decodes(tmp_path):
    """Issue 10's defect: global pruning can take every weight of a layer; its codebook is
    empty. The file stores it as 0 kept weights, and the report says so."""
    from deepcomp.report import layer_rows, read_inputs
    sf = tiny_stage()
    sf.state_dict["fc1.weight"] = torch.zeros(3, 4)
    sf.masks["fc1.weight"] = torch.zeros(3, 4, dtype=torch.bool)
    sf.quant["fc1.weight"] = {"codebook": torch.zeros(0), "bits": 2, "init": "linear",
                              "indices": torch.full((3, 4), -1, dtype=torch.int16)}
    buf, rec = encode_stage(sf)
    back = decode_bytes(buf)
    assert_same_stage(sf, back)
    assert rec["sizes"]["tensors"]["fc1.weight"]["entries"] == 0
    assert back.quant["fc1.weight"]["codebook"].numel() == 0
    path = tmp_path / "m.dc"
    path.write_bytes(buf)
    rows = {r["layer"]: r for r in layer_rows(read_inputs([str(path)]))}
    assert rows["fc1"]["kept"] == 0 and rows["fc1"]["weights"] == 12


def test_strip_leaves_the_history_out_and_the_report_still_works(tmp_path, capsys):
    sf = tiny_stage()
    full, _ = encode_stage(sf)
    stripped, rec = encode_stage(sf, EncodeConfig(strip=True))
    assert len(stripped) < len(full) and split_v2(stripped)[0]["history"] == []
    back = decode_bytes(stripped)
    assert_same_stage(sf, back)
    assert [r["stage"] for r in back.history] == ["encoded"] and rec["stripped"]
    assert rec["sizes"]["bytes"] == len(stripped) and rec["sizes"]["kept"] == 5 + 3 + 6
    path = tmp_path / "m.dc"
    path.write_bytes(stripped)
    assert main(["report", str(path), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "encoded" in out and f"{len(stripped):,}" in out


def test_history_is_compact_and_sizes_are_derived():
    sf = tiny_stage()
    sf.history = [{"stage": "baseline", "command": "deepcomp train", "wall_time": 1.5,
                   "metrics": {"top1": 50.0, "top5": 100.0, "loss": 0.5, "images": 4},
                   "sizes": {"params": 35, "bytes": 140, "ratio": 1.0, "dense_bytes": 140,
                             "nonzero_share": 1.0, "kept": 30, "prunable": 30},
                   "config": {"train": {"lr": 0.1}}, "epochs": [{"loss": 1.0}] * 50,
                   "versions": {"torch": "2"}}]
    buf, rec = encode_stage(sf)
    h, _ = split_v2(buf)
    base, enc = h["history"]
    assert set(base) == {"stage", "command", "wall_time", "metrics", "sizes"}
    assert "sizes" not in enc and rec["sizes"]["dense_bytes"] == 140
    assert base["sizes"] == {"bytes": 140, "nonzero_share": 1.0}   # the rest, derived:
    back = decode_bytes(buf).history[0]
    assert back["metrics"] == {"top1": 50.0, "top5": 100.0}
    assert back["sizes"] == {"bytes": 140, "nonzero_share": 1.0, "params": 35,
                             "dense_bytes": 140, "ratio": 1.0}


def test_user_model_that_cannot_be_built_is_stored_with_names_and_shapes():
    """A model given as a Python module whose class cannot be imported back (defined in a
    function) stores its tensor list."""
    class Local(Tiny):
        pass
    sf = StageFile.from_module(Local())
    buf, rec = encode_stage(sf)
    h, _ = split_v2(buf)
    assert h["explicit"] is True and [s[0] for s in h["state"]] == sorted(sf.state_dict)
    back = decode_bytes(buf)
    for k, v in sf.state_dict.items():
        assert torch.equal(back.state_dict[k], v)


def test_cli_encode_decode_eval(tmp_path, capsys):
    sf = tiny_stage()
    src, dc, pt = tmp_path / "q.pt", tmp_path / "m.dc", tmp_path / "m.pt"
    save_stage(str(src), sf)
    assert main(["encode", str(src), "-o", str(dc)]) == 0
    out = capsys.readouterr().out
    assert f"{os.path.getsize(dc):,} bytes" in out and "fc1.weight" in out
    assert_same_stage(sf, read_dc(str(dc)))
    assert_same_stage(sf, load_stage(str(dc)))
    assert main(["decode", str(dc), "-o", str(pt)]) == 0
    sd = torch.load(str(pt), weights_only=True)
    Tiny().load_state_dict(sd)
    for k in sf.state_dict:
        assert torch.equal(sd[k], sf.state_dict[k])
    import deepcomp
    model = deepcomp.load(str(dc))
    assert not model.training


def test_cli_encodes_a_version_1_file_again_as_version_2(tmp_path, capsys):
    old, new = tmp_path / "old.dc", tmp_path / "new.dc"
    old.write_bytes(v1_bytes())
    assert main(["encode", str(old), "-o", str(new), "--strip"]) == 0
    assert new.read_bytes()[8:10] == b"\x02\x00" and new.stat().st_size < old.stat().st_size
    assert_same_stage(tiny_stage(), read_dc(str(new)))
    assert main(["encode", str(tmp_path / "missing.dc"), "-o", str(new)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_eval_reads_dc_files_directly(trained_lenet, tmp_path, capsys):
    sf = _prune_quantize(trained_lenet)
    src, dc = tmp_path / "q.pt", tmp_path / "m.dc"
    save_stage(str(src), sf)
    assert main(["encode", str(src), "-o", str(dc), "--json"]) == 0
    sizes = json.loads(capsys.readouterr().out)
    assert sizes["bytes"] == os.path.getsize(dc)
    results = []
    for f in (src, dc):
        assert main(["eval", str(f), "--data", "digits", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]


def test_cli_errors_are_one_line_and_leave_no_output(tmp_path, capsys):
    sf = tiny_stage()
    dc = tmp_path / "m.dc"
    dc.write_bytes(_flip(encode_stage(sf)[0], 50))
    out = tmp_path / "out.pt"
    assert main(["decode", str(dc), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum" in err
    assert not out.exists() and os.listdir(tmp_path) == ["m.dc"]
    dc.write_bytes(b"DEEP")
    assert main(["eval", str(dc), "--data", "synthetic:1x2x2"]) == 1
    err = capsys.readouterr().err          # 4 bytes: too short to be told from a torch file
    assert err.count("\n") == 1 and "m.dc: not a readable" in err


def test_bench_format_writes_a_valid_version_1_file_and_adds_up(tmp_path):
    """tools/bench_format.py: its version 1 file reads back exactly, every breakdown adds up."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_format.py")
    spec = importlib.util.spec_from_file_location("bench_format", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sf = tiny_stage()
    v1 = bench.pack_v1(sf)
    assert v1[8:10] == b"\x01\x00"
    assert_same_stage(sf, decode_bytes(v1))
    src = tmp_path / "q.pt"
    save_stage(str(src), sf)
    r = bench.bench(str(src))
    for col in ("v1", "v2", "v2_strip", "v2_strip_f16", "v2_smallest"):
        assert sum(r[col][p] for p in bench.PARTS) == r[col]["total"]
    assert r["v2"]["total"] < r["v1"]["total"]


def test_a_target_mode_record_keeps_its_validation_reference():
    """A record measured on the validation split (compress --max-drop) keeps the reference it is
    measured against, or the report's delta would be against the test set's baseline."""
    from deepcomp.encode import compact_record
    rec = {"stage": "quantized", "split": "validation", "command": "c", "wall_time": 1.0,
           "metrics": {"top1": 90.0, "top5": 99.0, "loss": 0.3},
           "validation_reference": {"top1": 91.5, "top5": 99.5, "loss": 0.2},
           "sizes": {"bytes": 100, "nonzero_share": 0.1}}
    out = compact_record(rec)
    assert out["split"] == "validation"
    assert out["validation_reference"] == {"top1": 91.5, "top5": 99.5}
