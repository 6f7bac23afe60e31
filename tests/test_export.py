"""ONNX export: every registry model, and the shipped LeNet-300-100 from any stage, runs in
onnxruntime as it runs in PyTorch (max abs difference < 1e-4 on a batch); the command's errors.

Registry models get random weights with batch-norm statistics measured on one random batch, as
training would leave them: an untrained 110-layer ResNet with unit running variances has logits
near 1e9, where float32 rounding alone exceeds 1e-4.
"""
import os
import sys

import numpy as np
import pytest
import torch

from deepcomp.cli import main
from deepcomp.errors import MissingDependencyError, UsageError
from deepcomp.export import DEFAULT_OPSET, ExportError, run_onnx, to_onnx
from deepcomp.loading import load_stage
from deepcomp.models import create, list_models, model_info
from deepcomp.stagefile import StageFile, arch_for, save_stage

try:
    import onnx
    import onnxruntime  # noqa: F401
    HAVE_ONNX = True
except ImportError:
    HAVE_ONNX = False
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx/onnxruntime not importable: "
                                "pip install 'deepcomp-pytorch[onnx]' (make test installs it)")

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "models", "lenet300-mnist.dc")
OWN = [n for n in list_models() if not n.startswith("tv.")]   # tv.*: 224x224, too slow here
ATOL = 1e-4


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def calibrated(name):
    """A baseline StageFile of ``name`` at its data spec's input size, seeded random weights and
    batch-norm statistics measured on one random batch."""
    info = model_info(name)
    size = list(info.input_size)
    meta = {"spec": "", "mean": [], "std": [], "input_size": size,
            "classes": [str(i) for i in range(info.num_classes)], "augment": "none"}
    arch = arch_for(name, meta)
    torch.manual_seed(0)
    net = create(arch["name"], **arch["kwargs"])
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None                     # a plain average over the batches seen
    net.train()
    with torch.no_grad():
        net(torch.randn(8, *size))
    return StageFile.from_model(net.eval(), arch, meta)


def max_diff(path, net, x):
    with torch.no_grad():
        want = net.eval()(x).numpy()
    got = run_onnx(str(path), x)
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


@needs_onnx
@pytest.mark.parametrize("name", OWN)
def test_every_registry_model_agrees_with_pytorch(tmp_path, name):
    sf = calibrated(name)
    out = tmp_path / f"{name}.onnx"
    r = to_onnx(sf, out, check=False)
    assert out.stat().st_size == r["bytes"]
    x = torch.randn(4, *sf.data["input_size"], generator=torch.Generator().manual_seed(1))
    diff = max_diff(out, sf.build_model(), x)
    print(f"{name}: {r['bytes']:,} bytes, max abs difference {diff:.2e}")
    assert diff < ATOL


@needs_onnx
def test_shipped_lenet300_dc(tmp_path):
    out = tmp_path / "lenet.onnx"
    r = to_onnx(SHIPPED, out)
    assert r["max_abs_diff"] < ATOL and r["opset"] == DEFAULT_OPSET
    net = load_stage(SHIPPED).build_model()
    for n in (1, 64):                                  # the batch axis is dynamic
        x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
        diff = max_diff(out, net, x)
        print(f"lenet300-mnist.dc, batch {n}: max abs difference {diff:.2e}")
        assert diff < ATOL

    m = onnx.load(str(out))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    dense = {i.name: list(i.dims) for i in m.graph.initializer}
    assert [300, 784] in dense.values() or [784, 300] in dense.values()   # fc1, stored dense
    meta = {p.key: p.value for p in m.metadata_props}
    assert '"name": "lenet300"' in meta["deepcomp.arch"] and meta["deepcomp.stage"] == "encoded"
    assert meta["deepcomp.source"] == "lenet300-mnist.dc"


@needs_onnx
def test_any_stage_and_source(tmp_path):
    """A stage file (quantized, from the .dc), a plain checkpoint with model=, a module."""
    sf = load_stage(SHIPPED)
    save_stage(tmp_path / "quantized.pt", sf)
    torch.save(sf.state_dict, tmp_path / "plain.pt")
    net = sf.build_model()
    x = torch.randn(8, 1, 28, 28)
    for src, kw in [(tmp_path / "quantized.pt", {}), (tmp_path / "plain.pt",
                                                      {"model": "lenet300"}),
                    (net, {"input_size": (1, 28, 28)})]:
        out = tmp_path / "m.onnx"
        to_onnx(src, out, check=False, **kw)
        assert max_diff(out, net, x) < ATOL


@needs_onnx
def test_bytes_are_deterministic_and_batch_can_be_fixed(tmp_path):
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    to_onnx(SHIPPED, a, check=False)
    to_onnx(SHIPPED, b, check=False)
    assert a.read_bytes() == b.read_bytes()
    r = to_onnx(SHIPPED, c, batch=4)
    assert r["input_shape"] == [4, 1, 28, 28]
    dims = onnx.load(str(c)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 1, 28, 28]


@needs_onnx
def test_check_refuses_a_disagreeing_file(tmp_path, monkeypatch):
    import deepcomp.export as ex
    monkeypatch.setattr(ex, "run_onnx", lambda blob, x: np.zeros((len(x), 10), np.float32) + 1)
    with pytest.raises(ExportError, match="differ by"):
        to_onnx(SHIPPED, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)                    # nothing written, no temporary left


@needs_onnx
def test_cli_export(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, err = run(capsys, "export", SHIPPED, "-o", str(out))
    assert code == 0 and out.exists() and not err
    assert f"ONNX opset {DEFAULT_OPSET}, input Nx1x28x28" in stdout
    assert "onnxruntime agrees with PyTorch" in stdout
    assert [f for f in os.listdir(tmp_path)] == ["m.onnx"]        # no temporary left behind


def test_cli_help_states_the_opset(capsys):
    code, out, _ = run(capsys, "export", "--help")
    assert code == 0 and f"default: {DEFAULT_OPSET}" in out


@pytest.mark.parametrize("argv,code,msg", [
    (["--opset", "99"], 2, "opset must be an integer"),
    (["--batch", "0"], 2, "batch must be a positive integer"),
])
@needs_onnx
def test_cli_bad_options(tmp_path, capsys, argv, code, msg):
    out = tmp_path / "m.onnx"
    c, _, err = run(capsys, "export", SHIPPED, "-o", str(out), *argv)
    assert c == code and msg in err and err.count("\n") == 1 and not out.exists()


@needs_onnx
def test_cli_refuses_bad_input_and_overwriting_it(tmp_path, capsys):
    bad = tmp_path / "bad.dc"
    bad.write_bytes(b"DEEPCOMP" + b"\0" * 20)
    c, _, err = run(capsys, "export", str(bad), "-o", str(tmp_path / "m.onnx"))
    assert c == 1 and err.startswith("deepcomp export: error:") and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()

    dc = tmp_path / "lenet.dc"
    dc.write_bytes(open(SHIPPED, "rb").read())
    before = dc.read_bytes()
    c, _, err = run(capsys, "export", str(dc), "-o", str(dc))
    assert c == 2 and "refusing to overwrite the input" in err and err.count("\n") == 1
    assert dc.read_bytes() == before
    with pytest.raises(UsageError, match="refusing"):
        to_onnx(str(dc), str(tmp_path / "." / "lenet.dc"))


@pytest.mark.parametrize("missing", ["onnx", pytest.param("onnxruntime", marks=needs_onnx)])
def test_missing_dependency_is_one_line(tmp_path, capsys, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)           # import raises ImportError
    out = tmp_path / "m.onnx"
    c, stdout, err = run(capsys, "export", SHIPPED, "-o", str(out))
    assert c == 1 and not stdout and not out.exists()
    assert err == (f"deepcomp export: error: ONNX export needs the {missing} package, which is "
                   "not installed: pip install 'deepcomp-pytorch[onnx]'\n")
    with pytest.raises(MissingDependencyError):
        to_onnx(SHIPPED, out)


@needs_onnx
def test_no_check_needs_no_onnxruntime(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "m.onnx"
    c, stdout, _ = run(capsys, "export", SHIPPED, "-o", str(out), "--no-check")
    assert c == 0 and out.exists() and "agrees" not in stdout


@needs_onnx
def test_exporter_failure_is_one_line_without_its_graph_dump(tmp_path, capfd):
    save_stage(tmp_path / "r20.pt", calibrated("resnet20"))
    code = main(["export", str(tmp_path / "r20.pt"), "-o", str(tmp_path / "m.onnx"),
                 "--opset", "9"])                     # option-A shortcuts slice with steps: 10+
    out, err = capfd.readouterr()
    assert code == 1 and not out and not (tmp_path / "m.onnx").exists()
    assert err == ("deepcomp export: error: cannot export resnet20 to ONNX opset 9: step!=1 is "
                   "currently not supported; the lowest opset that exports it is 10 "
                   "(--opset 10)\n")
