"""Training precision: bf16 autocast where the CPU does it natively, float32 everywhere it counts."""
import pytest
import torch

from deepcomp import train
from deepcomp.cli import main
from deepcomp.data import load_data
from deepcomp.errors import UsageError
from deepcomp.prune import PruneConfig, prune
from deepcomp.resume import ResumeMismatchError
from deepcomp.train import TrainConfig, evaluate, resolve_precision

from conftest import PRECISIONS_HERE, quiet
from test_resume import _ckpt, noop, stopped_prune

needs_bf16 = pytest.mark.skipif("bf16" not in PRECISIONS_HERE,
                                reason="this CPU has no native bfloat16 (AVX-512 BF16 or AMX)")


def test_auto_is_bf16_exactly_where_the_device_has_it(monkeypatch):
    cpu = torch.device("cpu")
    for fast, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train, "fast_bf16", lambda d, f=fast: f)
        assert resolve_precision("auto", cpu) == want
        assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(UsageError, match="no fast bfloat16"):
        resolve_precision("bf16", cpu)          # fast_bf16 is False here
    with pytest.raises(UsageError, match="unknown precision"):
        resolve_precision("fp16", cpu)


def test_bf16_on_a_cpu_without_it_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "fast_bf16", lambda d: False)
    out = tmp_path / "m.pt"
    code = main(["train", "--model", "lenet300", "--data", "digits", "--epochs", "1",
                 "--precision", "bf16", "--no-progress", "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--precision bf16" in err
    assert not out.exists()


@needs_bf16
def test_bf16_training_runs_in_bf16_and_keeps_float32_parameters(digits, monkeypatch):
    """The forward pass is bfloat16 (autocast on), the weights and their gradients float32."""
    seen = {}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model[1].register_forward_hook(lambda m, i, o: seen.update(out=o.dtype))
    model[1].weight.register_hook(lambda g: seen.update(grad=g.dtype))
    train.fit(model, digits, quiet(epochs=1, lr=0.01, precision="bf16"))
    assert seen == {"out": torch.bfloat16, "grad": torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())


@needs_bf16
def test_bf16_retraining_keeps_pruned_weights_exactly_zero(trained_lenet, digits):
    cfg = PruneConfig(method="global", sparsity="0.9", retrain_epochs=2,
                      train=quiet(precision="bf16", weight_decay=5e-4, momentum=0.9))
    out = prune(trained_lenet, digits, cfg, log=noop)
    for name, mask in out.masks.items():
        w = out.state_dict[name]
        assert torch.equal(w[~mask], torch.zeros_like(w[~mask])), name
        assert (w[mask] != 0).float().mean() > 0.99        # the kept ones did train
    assert out.history[-1]["iterations"][0]["epochs"][0]["precision"] == "bf16"


@needs_bf16
def test_evaluation_is_float32_whatever_the_training_precision(trained_lenet, digits):
    """What the report says is what the model computes in float32, bit for bit."""
    model = trained_lenet.build_model()
    train.fit(model, digits, quiet(epochs=1, lr=0.01, precision="bf16"))
    m = evaluate(model, digits, "cpu")
    with torch.no_grad():
        x = (digits.test_x.float() - torch.tensor(digits.mean).view(1, -1, 1, 1) * 255) / (
            torch.tensor(digits.std).view(1, -1, 1, 1) * 255)
        out = model(x)
    assert out.dtype == torch.float32
    assert m["top1"] == round(100 * (out.argmax(1) == digits.test_y).float().mean().item(), 4)
    assert model.training is False and next(model.parameters()).is_contiguous()


@needs_bf16
def test_a_checkpoint_of_another_precision_is_refused_naming_it(tmp_path, trained_lenet, digits,
                                                                 monkeypatch):
    cfg, path = stopped_prune(tmp_path, trained_lenet, digits, monkeypatch)
    other = PruneConfig(method="global", sparsity="0.8", retrain_epochs=2,
                        train=quiet(precision="fp32"))
    with pytest.raises(ResumeMismatchError, match='precision was "auto", is "fp32" now'):
        prune(trained_lenet, digits, other, checkpoint=_ckpt(path, "prune", other, trained_lenet))


@needs_bf16
def test_a_resumed_run_that_would_train_in_another_precision_is_refused(
        tmp_path, trained_lenet, digits, monkeypatch):
    """``auto`` that resolved to bf16 where the run started, to fp32 where it resumes."""
    cfg, path = stopped_prune(tmp_path, trained_lenet, digits, monkeypatch)
    monkeypatch.setattr(train, "fast_bf16", lambda d: False)
    with pytest.raises(ResumeMismatchError, match="trained in bf16, this run would train in fp32"):
        prune(trained_lenet, digits, cfg, checkpoint=_ckpt(path, "prune", cfg, trained_lenet))


def test_channels_last_training_leaves_a_contiguous_model(digits):
    data = load_data("synthetic:3x8x8")
    from deepcomp.models import create
    model = create("resnet20", num_classes=10, in_chans=3)
    train.fit(model, data, TrainConfig(epochs=1, lr=0.01, progress=False, channels_last="on"))
    assert all(p.is_contiguous() for p in model.parameters())
