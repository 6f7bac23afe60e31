import pytest
import torch

from deepcomp.data import load_data
from deepcomp.models import create
from deepcomp.stagefile import StageFile, arch_for
from deepcomp.train import TrainConfig, fast_bf16, fit

# The training precisions this machine runs (bf16 only where the CPU does it natively).
PRECISIONS_HERE = ["fp32"] + (["bf16"] if fast_bf16(torch.device("cpu")) else [])


@pytest.fixture(scope="session")
def digits():
    return load_data("digits")


@pytest.fixture(scope="session")
def trained_lenet(digits):
    """LeNet-300-100 trained on digits for a few seconds: a baseline StageFile (~97% top-1)."""
    torch.manual_seed(0)
    arch = arch_for("lenet300", digits.meta())
    model = create(arch["name"], **arch["kwargs"])
    fit(model, digits, TrainConfig(epochs=15, lr=0.05, progress=False))
    return StageFile.from_model(model, arch, digits.meta())


def quiet(**kw):
    return TrainConfig(progress=False, **kw)


def stop_after(monkeypatch, steps: int):
    """Make the training loop see a SIGTERM once ``steps`` optimizer steps have run."""
    import signal
    from deepcomp import resume
    calls = {"n": 0}

    def fake():
        calls["n"] += 1
        return signal.SIGTERM if calls["n"] > steps else None
    monkeypatch.setattr(resume, "stop_requested", fake)
