"""Target mode (deepcomp.search): budget, validation split, drop, monotonicity, resume."""
import importlib

import pytest
import torch

from deepcomp import search as search_mod
from deepcomp.data import Dataset
from deepcomp.loading import read_dc
from deepcomp.encode import EncodeConfig
from deepcomp.errors import UsageError
from deepcomp.loading import load_stage
from deepcomp.report import read_inputs, report_text
from deepcomp.resume import Stopped
from deepcomp.search import SearchConfig, holdout, search
from deepcomp.train import evaluate

from conftest import quiet, stop_after

# the modules (deepcomp.prune and deepcomp.quantize are also the names of the stage functions)
prune_mod = importlib.import_module("deepcomp.prune")
quantize_mod = importlib.import_module("deepcomp.quantize")


def noop(*a, **k):
    pass


def small(**kw) -> SearchConfig:
    """A search that costs a few seconds on digits: one epoch per step."""
    base = dict(sparsities=(0.6, 0.8, 0.9, 0.95), retrain_epochs=1, bits=("5", "3"),
                finetune_epochs=1, budget_epochs=5, max_drop=1.0, train=quiet(lr=0.01))
    return SearchConfig(**{**base, **kw})


def _count_epochs(monkeypatch) -> list:
    """Every training run of prune and quantize, as (epochs run, the data it trained on)."""
    runs = []
    for mod in (prune_mod, quantize_mod):
        real = mod.fit

        def spy(model, data, cfg, *a, real=real, **k):
            hist = real(model, data, cfg, *a, **k)
            runs.append((len(hist) - len((k.get("resume") or {}).get("history", [])), data))
            return hist
        monkeypatch.setattr(mod, "fit", spy)
    return runs


@pytest.mark.parametrize("budget,drop", [(5, 100.0), (2, 100.0), (0, 1.0)])
def test_the_budget_is_never_exceeded(tmp_path, trained_lenet, digits, monkeypatch, budget, drop):
    runs = _count_epochs(monkeypatch)
    r = search(trained_lenet, digits, str(tmp_path / "m.dc"),
               small(budget_epochs=budget, max_drop=drop), log=noop)
    spent = sum(n for n, _ in runs)
    assert spent == r.epochs_used == sum(c["epochs"] for c in r.candidates) <= budget
    if drop == 100.0:      # nothing is outside the drop: the search spends all it may
        assert spent == budget
    kinds = [(c["kind"], c["bits"]) for c in r.candidates]
    if budget == 2:        # both epochs kept for quantization: no pruning, both widths
        assert kinds == [("input", None), ("quantized", "5"), ("quantized", "3")]
    if budget == 0:
        assert kinds == [("input", None)] and r.chosen["kind"] == "input"


def test_holdout_is_a_disjoint_seeded_share_of_the_training_images():
    n = 200
    x = torch.arange(n, dtype=torch.int64).reshape(n, 1, 1, 1)     # image i holds i
    data = Dataset("synthetic", x.to(torch.uint8), torch.arange(n) % 10,
                   torch.zeros(5, 1, 1, 1, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64),
                   (0.5,), (0.5,), [str(i) for i in range(10)])
    split = holdout(data, 0.1, seed=3)
    train, val = set(split.train_x.flatten().tolist()), set(split.test_x.flatten().tolist())
    assert len(val) == 20 and len(train) == 180 and not train & val and train | val == set(range(n))
    assert torch.equal(holdout(data, 0.1, seed=3).test_x, split.test_x)
    assert not torch.equal(holdout(data, 0.1, seed=4).test_x, split.test_x)
    with pytest.raises(UsageError):
        holdout(data, 1.0)


def test_training_never_sees_the_validation_images_and_the_test_set_comes_after_the_choice(
        tmp_path, trained_lenet, digits, monkeypatch):
    runs = _count_epochs(monkeypatch)
    split = holdout(digits, 0.1, 0)
    events = []
    for mod in (prune_mod, quantize_mod, search_mod):
        real = mod.evaluate

        def spy(model, data, *a, real=real, **k):
            on_test = data.test_x is digits.test_x or torch.equal(data.test_x, digits.test_x)
            assert on_test or torch.equal(data.test_x, split.test_x)
            events.append("test" if on_test else "val")
            return real(model, data, *a, **k)
        monkeypatch.setattr(mod, "evaluate", spy)
    r = search(trained_lenet, digits, str(tmp_path / "m.dc"), small(),
               log=lambda line: events.append("chosen") if line.startswith("chosen") else None)
    assert runs and all(torch.equal(d.train_x, split.train_x) and torch.equal(d.test_x, split.test_x)
                        for _, d in runs)
    # the test set: read twice (input and chosen), both after the choice was made
    assert events.count("test") == 2 and events.index("test") > events.index("chosen")
    assert r.input_val["images"] == len(split.test_y) == 144


def test_the_result_is_within_the_drop_and_is_what_was_written(tmp_path, trained_lenet, digits):
    out = tmp_path / "m.dc"
    r = search(trained_lenet, digits, str(out), small(), log=noop)
    within = [c for c in r.candidates if c["within"]]
    assert r.chosen["drop"] <= 1.0 and r.chosen["bytes"] == min(c["bytes"] for c in within)
    assert r.chosen["kind"] == "quantized" and r.chosen["sparsity"] >= 0.6
    assert r.paths == [str(tmp_path / "m.pruned.pt"), str(tmp_path / "m.quantized.pt"), str(out)]
    assert not (tmp_path / "m.search").exists()       # the work folder goes when done
    decoded = read_dc(str(out)).build_model()
    split = holdout(digits, 0.1, 0)
    assert evaluate(decoded, split)["top1"] == r.chosen["val_top1"]
    assert evaluate(decoded, digits)["top1"] == r.test["top1"]
    text = report_text(read_inputs([str(out)]))
    assert "quantized (validation)" in text and "target mode" in text and "chosen" in text


def test_a_lossy_encoding_is_measured_again(tmp_path, trained_lenet, digits):
    out = str(tmp_path / "m.dc")
    search(trained_lenet, digits, out, small(encode=EncodeConfig(dense_bits=1)), log=noop)
    back = read_dc(out)
    rec, m = back.history[-1], evaluate(back.build_model(), digits)
    assert rec["lossy"] == "1-bit shared dense"
    assert rec["metrics"] == {"top1": m["top1"], "top5": m["top5"]}   # the file keeps these two


def test_a_larger_drop_never_gives_a_larger_file(tmp_path, trained_lenet, digits):
    out = str(tmp_path / "m.dc")        # the candidates are shared: each search reuses them
    sizes = []
    for drop in (0.0, 0.5, 1.5, 4.0, 100.0):
        r = search(trained_lenet, digits, out, small(max_drop=drop, keep_candidates=True),
                   log=noop)
        assert r.chosen["drop"] <= drop
        sizes.append(r.chosen["bytes"])
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]


def test_a_stopped_search_resumes_to_the_result_of_one_never_stopped(
        tmp_path, trained_lenet, digits, monkeypatch):
    cfg = small(max_drop=100.0)
    ref = search(trained_lenet, digits, str(tmp_path / "a.dc"), cfg, log=noop)
    out = str(tmp_path / "b.dc")
    # digits less 144 held out: 11 steps an epoch; stop inside the 2nd pruning step, then inside
    # the 2nd fine-tuning (7 steps left of the first stop, 11 + 11 more, then 2 steps in)
    for steps, where in ((15, "pruning to 80%"), (31, "quantizing 90% to bits 3")):
        with monkeypatch.context() as m:
            stop_after(m, steps)
            with pytest.raises(Stopped, match=where) as e:
                search(trained_lenet, digits, out, cfg, log=noop)
        assert e.value.exit_code == 143
    lines = []
    r = search(trained_lenet, digits, out, cfg, log=lines.append)
    assert any(line.startswith("resuming from") for line in lines)
    assert sum("reusing" in line for line in lines) == 4       # 3 pruning steps and 5 bits
    assert r.candidates == ref.candidates and r.test == ref.test
    a, b = load_stage(ref.paths[-2]), load_stage(r.paths[-2])
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    for k in a.masks:
        assert torch.equal(a.masks[k], b.masks[k]), k
    for k in a.quant:
        assert torch.equal(a.quant[k]["codebook"], b.quant[k]["codebook"]), k
