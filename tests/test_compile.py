"""torch.compile of the training step (TrainConfig.compile): used where asked, eager otherwise,
and a compiler that fails falls back to eager with the same result as eager."""
import pytest
import torch

from deepcomp import train
from deepcomp.models import create
from deepcomp.train import TrainConfig, _compiled, fit


def _lenet(seed=0):
    torch.manual_seed(seed)
    return create("lenet300", img_size=8)


def test_auto_compiles_only_long_single_process_runs():
    net = _lenet()
    assert _compiled(net, TrainConfig(compile="auto"), train.COMPILE_MIN_STEPS - 1) is None
    assert _compiled(net, TrainConfig(compile="off"), 10 ** 6) is None
    assert _compiled(net, TrainConfig(compile="auto"), train.COMPILE_MIN_STEPS) is not None


def test_a_failing_compiler_falls_back_to_eager_exactly(digits, monkeypatch, capsys):
    cfg = TrainConfig(epochs=1, lr=0.05, progress=False, compile="off")
    eager = _lenet()
    fit(eager, digits, cfg)

    def broken(net):
        def run(x):
            raise RuntimeError("no C compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    fallback = _lenet()
    fit(fallback, digits, TrainConfig(epochs=1, lr=0.05, progress=False, compile="on"))
    assert "training eagerly" in capsys.readouterr().err
    for (k, a), b in zip(eager.state_dict().items(), fallback.state_dict().values()):
        assert torch.equal(a, b), k


def test_compiled_training_matches_eager(digits, monkeypatch):
    """The compiled step runs (every step goes through torch.compile's module), and trains as
    eager does: in float32 the losses agree to 1e-5 (measured: equal on this LeNet)."""
    calls = []
    real = torch.compile

    def counted(net, *a, **k):
        compiled = real(net, *a, **k)

        def step(x):
            calls.append(len(x))
            return compiled(x)
        return step
    monkeypatch.setattr(torch, "compile", counted)
    runs = {}
    for mode in ("off", "on"):
        net = _lenet()
        runs[mode] = fit(net, digits, TrainConfig(epochs=2, lr=0.05, progress=False,
                                                  compile=mode, precision="fp32"))
    assert sum(calls) == 2 * len(digits.train_y)            # every image of both epochs
    for e, c in zip(runs["off"], runs["on"]):
        assert c["loss"] == pytest.approx(e["loss"], rel=1e-5)
    assert runs["on"][-1]["loss"] < runs["on"][0]["loss"]
