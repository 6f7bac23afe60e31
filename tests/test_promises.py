"""What the README promises, each checked as a user would: the `first` and `last` aliases, the
files the analysis commands write, lossy encodings measured again, the ONNX file's names, the
C reader's memory, no download at run time, and no half-written output when a write fails."""
import csv
import errno
import json
import os
import socket
import struct
import subprocess
import zlib

import pytest
import torch
from test_c_reader import build, dcdump  # noqa: F401  (fixtures)

from deepcomp.cli import main
from deepcomp.loading import read_dc
from deepcomp.encode import EncodeConfig, encode
from deepcomp.loading import load_stage
from deepcomp.patterns import resolve_setting
from deepcomp.pipeline import demo
from deepcomp.prune import PruneConfig, prune
from deepcomp.quantize import QuantizeConfig, quantize
from deepcomp.stagefile import save_stage
from deepcomp.train import evaluate

from conftest import quiet

PNG = b"\x89PNG\r\n\x1a\n"


def test_first_and_last_name_the_first_and_last_prunable_layers():
    names = ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "fc.weight"]
    got = resolve_setting("*=0.9,first=0.5,last=0.7", names, "sparsity", float, lambda v: True,
                          "")
    assert got == {"conv1.weight": 0.5, "layer1.0.conv1.weight": 0.9,
                   "layer1.0.conv2.weight": 0.9, "fc.weight": 0.7}


@pytest.fixture(scope="module")
def pruned_files(tmp_path_factory, trained_lenet, digits):
    d = tmp_path_factory.mktemp("promises")
    save_stage(d / "lenet.pt", trained_lenet)
    p = prune(trained_lenet, digits, PruneConfig(method="global", sparsity="0.8",
                                                 retrain_epochs=0), log=lambda *a: None)
    save_stage(d / "pruned.pt", p)
    q = quantize(p, digits, QuantizeConfig(bits="*=4", finetune=quiet(epochs=0)))
    save_stage(d / "quantized.pt", q)
    return d


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sensitivity_writes_its_table_and_plot(pruned_files, capsys, monkeypatch):
    monkeypatch.chdir(pruned_files)
    assert main(["sensitivity", "lenet.pt", "--sparsities", "0,0.5,0.9", "-o", "sens"]) == 0
    rows = _csv("sens.csv")
    assert {r["layer"] for r in rows} == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert sorted({float(r["sparsity"]) for r in rows}) == [0.0, 0.5, 0.9]
    assert all(0 <= float(r["top1"]) <= 100 for r in rows)
    at0 = {float(r["top1"]) for r in rows if float(r["sparsity"]) == 0}
    assert len(at0) == 1                         # 0% pruned: the model itself, every layer
    assert open("sens.png", "rb").read(8) == PNG


def test_sweep_writes_its_table_and_plot(pruned_files, capsys, monkeypatch):
    monkeypatch.chdir(pruned_files)
    assert main(["sweep", "lenet.pt", "--sparsities", "0.5,0.9", "--method", "global,layer",
                 "-o", "sweep"]) == 0
    rows = _csv("sweep.csv")
    assert {(r["method"], float(r["sparsity"])) for r in rows} == \
        {("global", 0.5), ("global", 0.9), ("layer", 0.5), ("layer", 0.9)}
    assert open("sweep.png", "rb").read(8) == PNG


def test_report_plot_writes_its_pngs(pruned_files, capsys, monkeypatch):
    monkeypatch.chdir(pruned_files)
    assert main(["report", "lenet.pt", "pruned.pt", "quantized.pt", "--plot", "plots"]) == 0
    names = sorted(os.listdir("plots"))
    assert names == ["accuracy_vs_ratio.png", "kept_per_layer.png", "weights_histogram.png"]
    assert all(open(os.path.join("plots", n), "rb").read(8) == PNG for n in names)


@pytest.mark.parametrize("config", [EncodeConfig(float16=True), EncodeConfig(dense_bits=2),
                                    EncodeConfig(mantissa_bits=2)],
                         ids=["float16", "dense-bits 2", "mantissa-bits 2"])
def test_a_lossy_encoding_is_measured_again_on_the_data(tmp_path, trained_lenet, digits,
                                                        capsys, config):
    """README: lossy encodings are re-evaluated with --data; the report's top-1 is what the
    file restores, not the stage before."""
    save_stage(tmp_path / "lenet.pt", trained_lenet)
    flags = (["--float16"] if config.float16 else ["--dense-bits", str(config.dense_bits)]
             if config.dense_bits else ["--mantissa-bits", str(config.mantissa_bits)])
    assert main(["encode", str(tmp_path / "lenet.pt"), *flags, "--data", "digits",
                 "-o", str(tmp_path / "m.dc")]) == 0
    rec = read_dc(str(tmp_path / "m.dc")).history[-1]
    restored = evaluate(load_stage(str(tmp_path / "m.dc")).build_model(), digits, "cpu")
    assert rec["metrics"]["top1"] == restored["top1"] and rec["lossy"]
    assert f"top-1 {restored['top1']:.2f}%" in capsys.readouterr().out


def test_the_onnx_file_names_its_input_and_output(tmp_path, trained_lenet):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    save_stage(tmp_path / "lenet.pt", trained_lenet)
    assert main(["export", str(tmp_path / "lenet.pt"), "-o", str(tmp_path / "m.onnx")]) == 0
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["logits"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["deepcomp.data"])["spec"] == "digits"
    assert meta["deepcomp.input"].startswith("normalized")


def test_the_c_readers_heap_stays_within_what_the_readme_says(dcdump, tmp_path):
    """README, the C reader's memory: 152 bytes and the name per tensor, the three inflated
    side blocks, the inflated header in a buffer at most 4 times its size, 40 KiB of tables
    while a tensor decodes."""
    from test_dcfile import synthetic_stage
    sf = synthetic_stage("resnet20")
    path = tmp_path / "r20.dc"
    encode(sf, str(path))
    buf = path.read_bytes()
    hlen, dlen = struct.unpack_from("<IQ", buf, 12)
    header = json.loads(zlib.decompress(buf[24:24 + hlen], -15))
    data = buf[24 + hlen:24 + hlen + dlen]
    side, at = 0, 0
    for k in ("code_tables", "codebooks", "dense"):
        n = header["blocks"][k]
        side += len(zlib.decompress(data[at:at + n], -15)) if n else 0
        at += n
    text = len(zlib.decompress(buf[24:24 + hlen], -15))
    names = sum(len(n) + 1 for n, _, _ in header["state"])
    bound = 152 * len(header["state"]) + names + side + 4 * text + 40 * 1024
    r = subprocess.run([dcdump, "--bench", "3", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    heap = int(r.stdout.split("peak heap ")[1].split(" bytes")[0])
    assert 0 < heap <= bound, (heap, bound)


def test_nothing_is_downloaded_at_run_time(tmp_path, monkeypatch):
    """The embedded demo runs with every network connection refused."""
    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    paths = demo(str(tmp_path / "demo"), log=lambda *a: None)
    assert os.path.exists(paths[-1])


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS], ids=["disk full", "read-only"])
def test_a_write_that_fails_midway_leaves_nothing_behind(tmp_path, trained_lenet, capsys,
                                                         monkeypatch, failure):
    """The disk fills (or the folder turns read-only) while a stage file is written: one line,
    exit 1, and neither the output nor a temporary file is left; an existing output is kept."""
    save_stage(tmp_path / "lenet.pt", trained_lenet)
    out = tmp_path / "p.pt"
    out.write_bytes(b"the previous output")
    real = torch.save

    def failing(obj, f, *a, **k):
        f.write(b"x" * 4096)                    # part of the file is written, then it fails
        raise OSError(failure, os.strerror(failure))
    monkeypatch.setattr(torch, "save", failing)
    code = main(["prune", str(tmp_path / "lenet.pt"), "--method", "global", "--sparsity", "0.5",
                 "--retrain-epochs", "0", "-o", str(out)])
    monkeypatch.setattr(torch, "save", real)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and os.strerror(failure) in err
    assert out.read_bytes() == b"the previous output"
    assert sorted(os.listdir(tmp_path)) == ["lenet.pt", "p.pt"]
