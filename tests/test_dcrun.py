"""The C runtime (c/dcrun.h, c/dcrun.c): .dc files with a graph (encode --graph) run without
PyTorch and without expanding their weights, and give PyTorch's logits. Built with the system
C compiler, strict and under AddressSanitizer and UBSan; skipped, saying why, where there is
no C compiler."""
import json
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest
import torch
from test_c_reader import READER, ROOT, SANITIZE, STRICT, build, sanitize  # noqa: F401  (fixtures)
from test_dcfile import forge_v2, split_v2
from torch import nn

from deepcomp.cli import main
from deepcomp.encode import EncodeConfig, encode
from deepcomp.errors import UsageError
from deepcomp.loading import load_stage
from deepcomp.models import create, model_info
from deepcomp.prune import PruneConfig, prune
from deepcomp.quantize import QuantizeConfig, quantize
from deepcomp.stagefile import StageFile, arch_for

RUN_SOURCES = READER + [os.path.join(ROOT, "c", n) for n in ("dcrun.c", "dcrun_main.c")]


@pytest.fixture(scope="module")
def dcrun(build):
    return build(STRICT + ["-lm"], "dcrun", RUN_SOURCES + ["-lm"])


@pytest.fixture(scope="module")
def dcrun_asan(build, sanitize):
    return build(sanitize, "dcrun-asan", RUN_SOURCES + ["-lm"])


def compressed(model: nn.Module, input_size, sparsity=0.8, bits="*=4", seed=0) -> StageFile:
    """``model`` pruned and quantized (no data: its own weights), batch norm statistics made
    non-trivial, as a stage file of the user's own module."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    data = {"spec": "", "mean": [], "std": [], "input_size": list(input_size), "classes": [],
            "augment": "none"}
    sf = StageFile.from_module(model, data)
    sf = prune(sf, None, PruneConfig(method="global", sparsity=str(sparsity)))
    return quantize(sf, None, QuantizeConfig(bits=bits, finetune=QuantizeConfig().finetune.
                                             __class__(epochs=0)))


def run_c(exe, path, x: np.ndarray, tmp_path):
    inputs = tmp_path / "in.f32"
    x.astype("<f4").tofile(inputs)
    r = subprocess.run([exe, str(path), str(inputs), str(len(x))], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "runtime error" not in r.stderr, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    return np.array([int(r[0]) for r in rows]), np.array([[float(v) for v in r[1:]]
                                                         for r in rows])


def assert_runs_like_pytorch(exe, sf: StageFile, tmp_path, n=16, config=None):
    path = tmp_path / "m.dc"
    encode(sf, str(path), config or EncodeConfig(graph=True))
    net = load_stage(str(path), template=sf.template).build_model().eval() if sf.template \
        else load_stage(str(path)).build_model().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *sf.data["input_size"], generator=g)
    with torch.no_grad():
        ref = net(x).numpy()
    arg, logits = run_c(exe, path, x.numpy(), tmp_path)
    assert logits.shape == ref.shape
    rel = np.abs(logits - ref) / np.maximum(1.0, np.abs(ref))
    assert rel.max() < 1e-4, rel.max()
    assert (arg == ref.argmax(1)).all()
    return path


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "resnet20"])
def test_registered_models_run_like_pytorch(dcrun, tmp_path, name):
    size = model_info(name).input_size
    sf = compressed(create(name).eval(), size)
    sf.arch = arch_for(name, sf.data)
    sf.template = None
    assert_runs_like_pytorch(dcrun, sf, tmp_path)


class EveryOp(nn.Module):
    """Grouped and strided convolutions, padding, no bias, batch norm (2-D and 1-D), a
    residual add, the option-A shortcut (subsample and channel padding), max and average
    pooling (padded), flatten, Identity and Dropout."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.wide = nn.Conv2d(8, 16, (1, 3), padding=(0, 1))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg = nn.AvgPool2d(2, 1, padding=1)
        self.fc = nn.Linear(16 * 3 * 3, 12)
        self.bn1 = nn.BatchNorm1d(12)
        self.out = nn.Linear(12, 5, bias=False)
        self.drop, self.id = nn.Dropout(0.5), nn.Identity()

    def forward(self, x):
        y = torch.relu(self.bn(self.a(x)))
        y = y + self.g(y)                                      # residual add
        short = nn.functional.pad(y[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))
        y = self.pool(self.wide(y)) + short                    # option-A shortcut
        y = self.avg(self.id(y))
        y = nn.functional.relu(self.bn1(self.fc(torch.flatten(y, 1))))
        return self.out(self.drop(y))


def test_every_operation_runs_like_pytorch(dcrun, tmp_path):
    sf = compressed(EveryOp().eval(), (4, 8, 8), sparsity=0.5, bits="*=5")
    assert_runs_like_pytorch(dcrun, sf, tmp_path)


class Sparse(nn.Module):
    """Rows so sparse that their column steps pass 255 (fillers), in a convolution of 576
    columns and a linear layer of 1,024."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4 * 8, 10)
        self.pre = nn.Conv2d(1, 64, 1)

    def forward(self, x):
        y = self.conv(torch.relu(self.pre(x)))
        return self.fc(nn.functional.pad(y, (0, 0, 0, 0, 0, 56)).flatten(1))


def test_rows_with_fillers_run_like_pytorch(dcrun, tmp_path):
    sf = compressed(Sparse().eval(), (1, 4, 4), sparsity=0.99, bits="*=3")
    masks = sf.masks["conv.weight"].reshape(8, -1)
    assert any(int(r.nonzero()[0]) >= 255 for r in masks if r.any())    # a first step past 255
    assert_runs_like_pytorch(dcrun, sf, tmp_path)


def test_dense_and_unquantized_layers_run_too(dcrun, tmp_path):
    """A layer kept dense in float32, one pruned but not quantized, one quantized but not
    pruned: each is run from what the file stores."""
    model = create("lenet5").eval()
    data = {"spec": "", "mean": [], "std": [], "input_size": [1, 28, 28], "classes": [],
            "augment": "none"}
    sf = StageFile.from_module(model, data)
    sf = prune(sf, None, PruneConfig(method="layer", sparsity="conv1=0,conv2=0.7,fc1=0.9,fc2=0"))
    sf.masks = {k: v for k, v in sf.masks.items() if k in ("conv2.weight", "fc1.weight")}
    sf = quantize(sf, None, QuantizeConfig(bits="*=6", finetune=QuantizeConfig().finetune.
                                           __class__(epochs=0)))
    sf.quant = {k: v for k, v in sf.quant.items() if k in ("fc1.weight", "fc2.weight")}
    sf.state_dict["conv2.weight"] = sf.state_dict["conv2.weight"]   # pruned, float values
    base = create("lenet5")
    for k in ("conv1.weight", "conv2.weight"):
        if k not in sf.quant:
            sf.state_dict[k] = base.state_dict()[k] * (sf.masks[k] if k in sf.masks else 1)
    assert_runs_like_pytorch(dcrun, sf, tmp_path)


def test_the_runtime_keeps_the_weights_compressed(dcrun, tmp_path):
    """The weights take at most twice the file's bytes (never the dense float32)."""
    sf = compressed(create("lenet300").eval(), (1, 28, 28), sparsity=0.95, bits="*=4")
    path = assert_runs_like_pytorch(dcrun, sf, tmp_path)
    r = subprocess.run([dcrun, "--info", str(path)], capture_output=True, text=True, check=True)
    weights = int(r.stdout.split("weights ")[1].split(" bytes")[0])
    assert weights <= 2 * os.path.getsize(path) < 266_610 * 4 / 10


def test_a_file_without_a_graph_or_with_a_forged_one_is_a_named_error(dcrun, tmp_path):
    sf = compressed(create("lenet300", img_size=8).eval(), (1, 8, 8))
    plain = tmp_path / "plain.dc"
    encode(sf, str(plain))
    r = subprocess.run([dcrun, "--info", str(plain)], capture_output=True, text=True)
    assert r.returncode == 1 and "(DC_E_NO_GRAPH)" in r.stderr and "--graph" in r.stderr
    good = tmp_path / "g.dc"
    encode(sf, str(good), EncodeConfig(graph=True))
    buf = good.read_bytes()

    def edit(change):
        def f(h, data):
            change(h["graph"])
        return forge_v2(buf, f)
    forged = {
        "unknown op": lambda g: g[1].__setitem__(0, "softmax"),
        "input from a later node": lambda g: g[1].__setitem__(1, [3]),
        "a tensor not in the file": lambda g: g[2][2].__setitem__("weight", "nope.weight"),
        "a shape that does not fit": lambda g: g[2].__setitem__(1, [0]),    # linear of [1,8,8]
        "a kernel larger than the input": lambda g: g.insert(1, ["maxpool2d", [0], {
            "kernel": [99, 99], "stride": [1, 1], "padding": [0, 0]}]),
    }
    for why, change in forged.items():
        path = tmp_path / "forged.dc"
        path.write_bytes(edit(change))
        r = subprocess.run([dcrun, "--info", str(path)], capture_output=True, text=True)
        assert r.returncode == 1 and "(DC_E_HEADER)" in r.stderr, (why, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_under_sanitizers(dcrun_asan, tmp_path):
    sf = compressed(EveryOp().eval(), (4, 8, 8), sparsity=0.5, bits="*=5")
    assert_runs_like_pytorch(dcrun_asan, sf, tmp_path, n=4)
    sf = compressed(create("resnet20").eval(), (3, 32, 32))
    sf.arch, sf.template = arch_for("resnet20", sf.data), None
    assert_runs_like_pytorch(dcrun_asan, sf, tmp_path, n=2)


def test_graph_refuses_an_operation_the_runtime_does_not_run(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return torch.sigmoid(self.fc(x.flatten(1)))
    sf = compressed(Odd(), (1, 2, 2))
    with pytest.raises(UsageError, match="uses the function sigmoid, which the C runtime"):
        encode(sf, str(tmp_path / "o.dc"), EncodeConfig(graph=True))
    assert not (tmp_path / "o.dc").exists()
    encode(sf, str(tmp_path / "o.dc"))                          # without --graph: fine


def test_cli_graph_flag_and_version(tmp_path, capsys):
    sf = compressed(create("lenet300", img_size=8).eval(), (1, 8, 8))
    sf.arch, sf.template = arch_for("lenet300", sf.data), None
    from deepcomp.stagefile import save_stage
    save_stage(tmp_path / "q.pt", sf)
    assert main(["encode", str(tmp_path / "q.pt"), "--graph", "-o", str(tmp_path / "m.dc")]) == 0
    buf = (tmp_path / "m.dc").read_bytes()
    assert struct.unpack_from("<HH", buf, 8) == (2, 1)             # 2.1: with a graph
    h, _ = split_v2(buf)
    assert [n[0] for n in h["graph"]] == ["input", "flatten", "linear", "relu", "linear", "relu",
                                          "linear"]
    assert main(["eval", str(tmp_path / "m.dc"), "--data", "digits"]) == 0    # Python reads it
