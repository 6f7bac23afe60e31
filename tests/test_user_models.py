"""The user's own model: named as package.module:factory on the command line, or handed to the
Python API as an nn.Module, through prune -> quantize -> encode -> decode, bit-exact."""
import os
import subprocess
import sys

import pytest
import torch

import deepcomp
from deepcomp.cli import main
from deepcomp.data import Batches
from deepcomp.loading import load_stage
from deepcomp.models import _registry
from deepcomp.pipeline import CompressConfig
from deepcomp.prune import PruneConfig
from deepcomp.quantize import QuantizeConfig
from deepcomp.train import TrainConfig

import usermodels

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def nothing_allowed(monkeypatch):
    """Each test starts as a fresh process would: no model reference named yet."""
    monkeypatch.setattr(_registry, "_ALLOWED", set())


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_user_model_prune_quantize_encode_decode_bit_exact(tmp_path, capsys):
    ref = "usermodels:tiny_net"
    base, pruned, quant, dc, sd = (tmp_path / n for n in ("b.pt", "p.pt", "q.pt", "m.dc", "sd.pt"))
    code, out, err = run(capsys, "train", "--model", ref, "--model-kwargs", '{"width": 4}',
                         "--data", "digits", "--epochs", "2", "--no-progress", "-o", base)
    assert code == 0, err
    assert load_stage(str(base)).arch == {"name": ref, "kwargs": {"num_classes": 10,
                                                                   "in_chans": 1, "width": 4}}
    _registry._ALLOWED.clear()       # a new command, a new process
    code, _, err = run(capsys, "prune", base, "--method", "global", "--sparsity", "0.6",
                       "--retrain-epochs", "1", "--no-progress", "-o", pruned)
    assert code == 2 and f"--model {ref}" in err and len(err.splitlines()) == 1
    assert not pruned.exists()
    for argv in (["prune", base, "--model", ref, "--method", "global", "--sparsity", "0.6",
                  "--retrain-epochs", "1", "--no-progress", "-o", pruned],
                 ["quantize", pruned, "--model", ref, "--bits", "*=4", "--finetune-epochs", "1",
                  "--no-progress", "-o", quant],
                 ["encode", quant, "--model", ref, "-o", dc],
                 ["decode", dc, "--model", ref, "-o", sd]):
        _registry._ALLOWED.clear()
        code, _, err = run(capsys, *argv)
        assert code == 0, err
    expect = torch.load(quant, weights_only=True)["state_dict"]
    got = torch.load(sd, weights_only=True)
    assert expect.keys() == got.keys()
    assert all(torch.equal(expect[k], got[k]) for k in expect)
    assert len(torch.load(pruned, weights_only=True)["masks"]) == 3   # two convs, the classifier


def test_a_file_never_imports_a_model_the_user_did_not_name(tmp_path, capsys, monkeypatch):
    sf = deepcomp.compress(usermodels.tiny_net(), _digits(), str(tmp_path / "m.dc"),
                           _quick(), log=lambda *a: None)[-1]
    _registry._ALLOWED.clear()
    monkeypatch.delitem(sys.modules, "usermodels")
    code, _, err = run(capsys, "decode", sf, "-o", tmp_path / "x.pt")   # the file lists its
    assert code == 0, err                                                # tensors: nothing built
    assert "usermodels" not in sys.modules and (tmp_path / "x.pt").exists()
    code, _, err = run(capsys, "eval", sf, "--data", "digits")
    assert code == 2 and "--model usermodels:TinyNet" in err and len(err.splitlines()) == 1
    assert "usermodels" not in sys.modules
    monkeypatch.undo()
    with pytest.raises(deepcomp.errors.UntrustedModelError):
        deepcomp.load(sf)
    assert isinstance(deepcomp.load(sf, model="usermodels:TinyNet"), usermodels.TinyNet)


def test_load_into_an_instance_of_the_users_model(tmp_path):
    """A module whose constructor arguments are not the defaults: the file records its class,
    and ``load(..., model=instance)`` rebuilds it from the instance."""
    model = usermodels.tiny_net(width=2)
    dc = deepcomp.compress(model, _digits(), str(tmp_path / "m.dc"), _quick(),
                           log=lambda *a: None)[-1]
    net = deepcomp.load(dc, model=usermodels.tiny_net(width=2))
    assert net.classifier.weight.shape == (10, 16)
    with pytest.raises(deepcomp.errors.DeepcompError, match="size mismatch|shape"):
        deepcomp.load(dc, model="usermodels:TinyNet")      # the defaults build width 8


def test_a_model_that_cannot_be_imported_is_a_one_line_error(tmp_path):
    """Where the package is missing (here: not on the path), a command that builds the model
    says so and exits 2 (an unknown model: a usage error)."""
    dc = tmp_path / "m.dc"
    deepcomp.compress(usermodels.tiny_net(), _digits(), str(dc), _quick(),
                      log=lambda *a: None)
    # tests/ off the path, whatever else is on it (a machine may install the dependencies
    # there: dropping PYTHONPATH whole made deepcomp itself fail to import on the GPU machine)
    here = os.path.dirname(os.path.abspath(usermodels.__file__))
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.abspath(p) != here]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    r = subprocess.run([sys.executable, "-m", "deepcomp", "eval", str(dc), "--model",
                        "usermodels:TinyNet", "--data", "digits"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "cannot import 'usermodels'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("make", [
    lambda: usermodels.Unusual(),
    lambda: usermodels.timm_style_net(num_classes=10, in_chans=1),
], ids=["unusual-layers", "timm-style"])
def test_python_api_takes_a_plain_module(tmp_path, make):
    torch.manual_seed(0)
    model, data = make(), _digits()
    paths = deepcomp.compress(model, data, str(tmp_path / "m.dc"), _quick(),
                              log=lambda *a: None)
    quantized = load_stage(paths[1], template=model)
    decoded = load_stage(paths[2], template=model)
    assert all(torch.equal(v, decoded.state_dict[k]) for k, v in quantized.state_dict.items())
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
             and m.kernel_size != (1, 1)]
    for n in convs:                       # grouped and depthwise convs are pruned and shared
        assert n + ".weight" in decoded.masks and n + ".weight" in decoded.quant
    net = decoded.build_model().eval()
    x, _ = next(iter(Batches(data.test_x, data.test_y, 64, data.mean, data.std)))
    assert torch.equal(net(x), quantized.build_model().eval()(x))
    if isinstance(model, usermodels.Unusual):   # still tied after decoding: one tensor
        assert net.fc2.weight is net.fc3.weight
        assert "fc3.weight" not in decoded.masks and torch.count_nonzero(net.fc2.weight) < 32 * 32


def test_timm_style_factory_gets_classes_and_channels_from_the_data(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--model", "usermodels:timm_style_net", "--data",
                       "digits", "--epochs", "1", "--no-progress", "-o", tmp_path / "t.pt")
    assert code == 0, err
    arch = load_stage(str(tmp_path / "t.pt"), model="usermodels:timm_style_net").arch
    assert arch["kwargs"] == {"num_classes": 10, "in_chans": 1}


def _digits():
    from deepcomp.data import load_data
    return load_data("digits")


def _quick():
    quiet = dict(progress=False, seed=0)
    return CompressConfig(
        prune=PruneConfig(method="global", sparsity="0.6", retrain_epochs=1,
                          train=TrainConfig(lr=0.01, **quiet)),
        quantize=QuantizeConfig(bits="*=4", finetune=TrainConfig(epochs=1, lr=1e-3, **quiet)))
