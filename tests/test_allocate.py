"""Per-layer sparsity and bits from sensitivity (deepcomp.allocate): targets met, floors kept."""
import pytest
import torch

from deepcomp.allocate import _greedy, allocate_bits, allocate_sparsity, sample_split
from deepcomp.errors import UsageError
from deepcomp.prune import PruneConfig, prunable_names, prune, sparsity_of
from deepcomp.quantize import QuantizeConfig, quantize

from conftest import quiet


def test_greedy_takes_the_cheapest_step_per_unit_saved():
    costs = {"a": [0.0, 2.0, 3.0], "b": [0.0, 0.1, 0.5]}
    gains = {"a": [0, 10, 20], "b": [0, 1, 2]}     # per unit: a 0.2 then 0.1; b 0.1 then 0.4
    assert _greedy(costs, gains, 5) == ({"a": 0, "b": 1}, ("a", 0.4))
    assert _greedy(costs, gains, 21) == ({"a": 1, "b": 1}, ("a", 1.0))
    assert _greedy(costs, gains, 22) == ({"a": 2, "b": 1}, ("b", 1.0))
    with pytest.raises(UsageError, match="cannot be reached"):
        _greedy(costs, gains, 23)


def test_sample_split_is_training_images(digits):
    s = sample_split(digits, 100, seed=0)
    assert len(s.test_y) == 100 and torch.equal(s.test_x, sample_split(digits, 100, 0).test_x)
    train = {bytes(x.numpy()) for x in digits.train_x}
    assert all(bytes(x.numpy()) in train for x in s.test_x)


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_sensitivity_allocation_meets_the_global_target(trained_lenet, digits, target):
    model = trained_lenet.build_model()
    names = prunable_names(model)
    alloc = allocate_sparsity(model, sample_split(digits, 300), names, target, min_keep=0.01,
                              log=lambda *a: None)
    sizes = {n: dict(model.named_parameters())[n].numel() for n in names}
    overall = sum(alloc[n] * sizes[n] for n in names) / sum(sizes.values())
    assert overall == pytest.approx(target, abs=1e-6)
    assert all(0 <= s <= 0.99 for s in alloc.values())
    assert len(set(alloc.values())) > 1           # not one uniform value: the layers differ


def test_prune_by_sensitivity_hits_its_target(trained_lenet, digits):
    cfg = PruneConfig(method="sensitivity", sparsity="0.85", retrain_epochs=1, scan_images=300,
                      train=quiet(lr=0.01))
    out = prune(trained_lenet, digits, cfg, log=lambda *a: None)
    names = list(out.masks)
    assert sparsity_of(out.masks, names) == pytest.approx(0.85, abs=1e-3)
    assert out.history[-1]["config"]["method"] == "sensitivity"
    assert out.history[-1]["metrics"]["top1"] > 80


def test_auto_bits_meet_the_mean_and_differ_by_layer(trained_lenet, digits):
    pruned = prune(trained_lenet, digits, PruneConfig(method="global", sparsity="0.8",
                                                      retrain_epochs=0), log=lambda *a: None)
    cfg = QuantizeConfig(bits="auto:3", scan_images=300, finetune=quiet(epochs=0))
    q = quantize(pruned, digits, cfg)
    kept = {n: int(pruned.masks[n].sum()) for n in q.quant}
    bits = {n: q.quant[n]["bits"] for n in q.quant}
    mean = sum(bits[n] * kept[n] for n in bits) / sum(kept.values())
    assert mean <= 3 and mean > 2 and all(2 <= b <= 5 for b in bits.values())
    assert q.history[-1]["config"]["layer_bits"] == bits        # the report shows each layer's


def test_auto_bits_bad_mean_is_an_error(trained_lenet, digits):
    model = trained_lenet.build_model()
    with pytest.raises(UsageError, match="mean must be"):
        allocate_bits(model, digits, {}, 12, lambda v, b: v)
    with pytest.raises(UsageError, match="auto:MEAN"):
        quantize(trained_lenet, digits, QuantizeConfig(bits="auto:x", finetune=quiet(epochs=0)))


def test_sweep_compares_sensitivity_at_equal_sparsity(trained_lenet, digits):
    from deepcomp.analysis import sweep
    rows = sweep(trained_lenet, digits, [0.5, 0.8], ["global", "sensitivity"], log=lambda *a: None)
    assert [(r["method"], r["target"]) for r in rows] == [
        ("global", 0.5), ("global", 0.8), ("sensitivity", 0.5), ("sensitivity", 0.8)]
    assert all(r["sparsity"] == pytest.approx(r["target"], abs=1e-3) for r in rows)
