"""Distillation, gradual (Zhu & Gupta) pruning, LAMP and the per-layer floor."""
import pytest
import torch

from deepcomp.errors import UsageError
from deepcomp.models import create
from deepcomp.prune import PruneConfig, compute_masks, lamp_scores, prune, sparsity_of
from deepcomp.report import collapse_warnings
from deepcomp.sizes import layer_sizes
from deepcomp.train import distill_loss, fit

from conftest import quiet


def _kl_to(model, teacher, digits, temperature=4.0):
    x = (digits.test_x.float() / 255 - torch.tensor(digits.mean).view(1, -1, 1, 1)) \
        / torch.tensor(digits.std).view(1, -1, 1, 1)
    with torch.no_grad():     # fit left both on its device (a GPU where there is one)
        out = model.eval()(x.to(next(model.parameters()).device))
        ref = teacher.eval()(x.to(next(teacher.parameters()).device))
        return float(distill_loss(out, ref.to(out.device), temperature))


def test_distillation_pulls_the_student_towards_the_teacher(trained_lenet, digits):
    teacher = trained_lenet.build_model()
    torch.manual_seed(1)
    student = create(trained_lenet.arch["name"], **trained_lenet.arch["kwargs"])
    before = _kl_to(student, teacher, digits)
    fit(student, digits, quiet(epochs=3, lr=0.05, distill_weight=1.0), teacher=teacher)
    after = _kl_to(student, teacher, digits)
    assert after < 0.5 * before


def test_distill_loss_is_zero_for_equal_outputs_and_scales_with_t_squared():
    a = torch.randn(8, 10)
    assert float(distill_loss(a, a.clone(), 4.0)) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(8, 10)
    # at a high temperature KL ~ |a - b|^2 / (2 T^2) per sample: T^2 makes it independent of T
    assert float(distill_loss(a, b, 50.0)) == pytest.approx(float(distill_loss(a, b, 100.0)),
                                                           rel=0.05)


@pytest.mark.parametrize("method,setting", [("lamp", "0.9"), ("global", "0.8"),
                                            ("layer", "*=0.7,last=0.3")])
def test_gradual_schedule_hits_its_target_exactly(trained_lenet, digits, method, setting):
    cfg = PruneConfig(method=method, sparsity=setting, gradual=True, mask_every=5,
                      retrain_epochs=2, retrain_lr=0.01, train=quiet())
    out = prune(trained_lenet, digits, cfg, log=lambda *a: None)
    once = prune(trained_lenet, None, PruneConfig(method=method, sparsity=setting))
    # as many weights pruned as one-shot pruning to the same target: in all (global, lamp: the
    # weights decide where) and in every layer (layer)
    assert sum(int(m.sum()) for m in out.masks.values()) == \
        sum(int(m.sum()) for m in once.masks.values())
    if method == "layer":
        for n, m in once.masks.items():
            assert int(out.masks[n].sum()) == int(m.sum()), n
    rnd = out.history[-1]["iterations"][0]
    assert rnd["schedule"] == "gradual" and rnd["sparsity"] == pytest.approx(sparsity_of(out.masks))
    params = dict(out.build_model().named_parameters())
    for n, m in out.masks.items():       # pruned weights are exactly zero
        assert torch.equal(params[n].detach()[~m], torch.zeros(int((~m).sum())))


def test_gradual_masks_only_shrink_and_follow_the_cubic_ramp(trained_lenet):
    from deepcomp.prune import GradualPruner
    model = trained_lenet.build_model()
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if n in names}
    pruner = GradualPruner(model, masks, "global", 0.8, {}, every=10, end=100, min_keep=0.0)
    prev, seen = pruner.cpu_masks(), []
    for step in range(1, 101):
        pruner(step)
        now = pruner.cpu_masks()
        assert all(torch.equal(now[n] & prev[n], now[n]) for n in now)      # never revived
        prev = now
        if step % 10 == 0:
            seen.append(sparsity_of(now))
    expected = [0.8 * (1 - (1 - s / 100) ** 3) for s in range(10, 101, 10)]
    assert seen == pytest.approx(expected, abs=1e-4)


def test_lamp_scores_are_the_papers_formula():
    w = torch.tensor([3.0, -1.0, 2.0, 0.5])
    sq = w ** 2
    expected = torch.tensor([9 / 9, 1 / (1 + 4 + 9), 4 / (4 + 9), 0.25 / sq.sum()])
    assert torch.allclose(lamp_scores(w.abs()), expected)
    # the largest weight of every layer scores 1: LAMP never empties a layer at < 100% sparsity
    assert float(lamp_scores(torch.rand(50)).max()) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["global", "lamp"])
def test_the_floor_prevents_layer_collapse(trained_lenet, method):
    sd = trained_lenet.state_dict
    weights = {n: sd[n] for n in ("fc1.weight", "fc2.weight", "fc3.weight")}
    weights["fc3.weight"] = weights["fc3.weight"] * 1e-3      # a layer global pruning would empty
    masks, _ = compute_masks(weights, method, 0.97, min_keep=0.02)
    for n, m in masks.items():
        assert int(m.sum()) >= 0.02 * m.numel(), n
    total = sum(m.numel() for m in masks.values())
    assert sparsity_of(masks) == pytest.approx(0.97, abs=1 / total)
    bare, _ = compute_masks(weights, "global", 0.97, min_keep=0.0)
    assert int(bare["fc3.weight"].sum()) == 0                  # what the floor is for


def test_report_warns_of_a_layer_under_one_percent(trained_lenet):
    out = prune(trained_lenet, None, PruneConfig(method="layer", sparsity="*=0.5,fc2=0.995"))
    warnings = collapse_warnings(out)
    assert len(warnings) == 1 and "fc2" in warnings[0]
    assert any(r["kept_share"] < 0.01 for r in layer_sizes(out))


def test_gradual_needs_training_and_one_round(trained_lenet, digits):
    with pytest.raises(UsageError, match="retraining"):
        prune(trained_lenet, digits, PruneConfig(gradual=True, retrain_epochs=0))
    with pytest.raises(UsageError, match="iterations"):
        prune(trained_lenet, digits, PruneConfig(gradual=True, iterations=3))
