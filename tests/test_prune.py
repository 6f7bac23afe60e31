import pytest
import torch

from deepcomp.errors import UsageError
from deepcomp.prune import MaskKeeper, PruneConfig, compute_masks, prune, prunable_names
from deepcomp.loading import load_stage
from deepcomp.stagefile import save_stage
from deepcomp.train import fit

from conftest import quiet


def _zeros_match_masks(sf):
    model = sf.build_model()
    params = dict(model.named_parameters())
    for name, mask in sf.masks.items():
        w = params[name].detach()
        assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))      # exactly 0.0
    names = list(sf.masks)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    pruned = sum(int((~sf.masks[n]).sum()) for n in names)
    return zeros, pruned


def test_masked_weights_stay_exactly_zero_through_momentum_and_weight_decay(trained_lenet, digits):
    cfg = PruneConfig(method="global", sparsity="0.8", retrain_epochs=3,
                      train=quiet(momentum=0.9, weight_decay=5e-3))
    out = prune(trained_lenet, digits, cfg, log=lambda *a: None)
    zeros, pruned = _zeros_match_masks(out)
    rec = out.history[-1]
    # the reported sparsity is the count of zeros
    assert zeros == pruned
    assert rec["sizes"]["prunable"] - rec["sizes"]["kept"] == zeros
    assert rec["metrics"]["top1"] >= rec["metrics"]["pruned"]["top1"] - 1   # retraining helps


def test_without_the_keeper_momentum_revives_pruned_weights(trained_lenet, digits):
    """The pitfall MaskKeeper exists for: masking once is not enough."""
    model = trained_lenet.build_model()
    w = {n: p for n, p in model.named_parameters() if n in prunable_names(model)}
    masks, _ = compute_masks(w, "global", 0.8)
    with torch.no_grad():
        for n, m in masks.items():
            w[n].masked_fill_(~m, 0)
    fit(model, digits, quiet(epochs=1, lr=0.01))
    revived = sum(int((w[n][~m] != 0).sum()) for n, m in masks.items())
    assert revived > 0
    keeper = MaskKeeper(model, masks)
    fit(model, digits, quiet(epochs=1, lr=0.01), after_step=keeper)
    assert sum(int((w[n][~m] != 0).sum()) for n, m in masks.items()) == 0


@pytest.mark.parametrize("opt", ["adam", "sgd-momentum-decay"])
def test_the_keeper_holds_zeros_through_an_optimizer_with_state(trained_lenet, digits, opt):
    """A user's own loop: the optimizer already holds state (Adam's moments, SGD's momentum)
    from before pruning. Masking the gradients alone leaves that state pushing on pruned
    weights; the keeper's re-masking after every step holds them at exactly 0.0."""
    torch.manual_seed(0)
    model = trained_lenet.build_model()
    optim = (torch.optim.Adam(model.parameters(), lr=1e-3) if opt == "adam" else
             torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3))
    x = (digits.train_x[:256].float() / 255 - 0.5) / 0.25
    y = digits.train_y[:256]

    def steps(n, keeper=None):
        for i in range(n):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
            if keeper is not None:
                keeper(i + 1)
    steps(5)                                         # optimizer state from before pruning
    w = {n: p for n, p in model.named_parameters() if n in prunable_names(model)}
    masks, _ = compute_masks(w, "global", 0.8)
    keeper = MaskKeeper(model, masks)
    steps(5, keeper)
    for n, m in masks.items():
        assert torch.equal(w[n][~m], torch.zeros_like(w[n][~m])), n
        assert (w[n][m] != 0).all(), n


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_global_hits_its_target(trained_lenet, target):
    out = prune(trained_lenet, None, PruneConfig(method="global", sparsity=str(target)))
    s = out.history[-1]["sizes"]
    assert abs((1 - s["nonzero_share"]) - target) < 1e-4


def test_layer_hits_each_target_and_overrides_apply(trained_lenet):
    out = prune(trained_lenet, None, PruneConfig(method="layer", sparsity="*=0.9,fc1=0.5,last=0.2"))
    layers = out.history[-1]["layers"]
    assert abs(layers["fc1.weight"]["sparsity"] - 0.5) < 1e-3
    assert abs(layers["fc2.weight"]["sparsity"] - 0.9) < 1e-3
    assert abs(layers["fc3.weight"]["sparsity"] - 0.2) < 1e-3


def test_std_threshold_is_s_times_std(trained_lenet):
    out = prune(trained_lenet, None, PruneConfig(method="std", sensitivity="*=1.0,fc3=0"))
    layers = out.history[-1]["layers"]
    for name in ("fc1.weight", "fc2.weight"):
        w = trained_lenet.state_dict[name]
        assert layers[name]["threshold"] == pytest.approx(float(w.std()), rel=1e-6)
        expected = float((w.abs() <= w.std()).float().mean())
        assert layers[name]["sparsity"] == pytest.approx(expected, abs=1e-6)
    assert layers["fc3.weight"]["sparsity"] == 0


def test_iterative_ramps_up_and_keeps_survivors(trained_lenet, digits):
    out = prune(trained_lenet, digits, PruneConfig(method="global", sparsity="0.9", iterations=3,
                                                   retrain_epochs=1, train=quiet()),
                log=lambda *a: None)
    rounds = out.history[-1]["iterations"]
    sp = [r["sparsity"] for r in rounds]
    assert sp[0] < sp[1] < sp[2] and sp[2] == pytest.approx(0.9, abs=1e-4)
    _zeros_match_masks(out)


def test_pruning_a_pruned_file_keeps_old_masks(trained_lenet, tmp_path):
    first = prune(trained_lenet, None, PruneConfig(method="layer", sparsity="0.5"))
    save_stage(tmp_path / "p.pt", first)
    again = prune(load_stage(str(tmp_path / "p.pt")), None, PruneConfig(method="std", sensitivity="0.1"))
    for n, m in first.masks.items():
        assert not (again.masks[n] & ~m).any()
    assert len(again.history) == 2 and [r["stage"] for r in again.history] == ["pruned", "pruned"]


@pytest.mark.parametrize("cfg,msg", [
    (PruneConfig(method="layer", sparsity="*=0.5,conv9=0.3"), "matches no layer"),
    (PruneConfig(method="global", sparsity="1.5"), "out of range"),
    (PruneConfig(method="global", sparsity="*=0.5"), "takes one value"),
    (PruneConfig(method="magic"), "unknown pruning method"),
    (PruneConfig(iterations=0), "iterations: 0 is out of range"),
])
def test_bad_settings(trained_lenet, cfg, msg):
    with pytest.raises(UsageError, match=msg):
        prune(trained_lenet, None, cfg)


def test_one_retraining_epoch_retrains(trained_lenet, digits):
    """retrain_epochs=1 (the default) trains: the kept weights move and the record says so."""
    cfg = PruneConfig(method="global", sparsity="0.8", retrain_epochs=1, retrain_lr=0.05,
                      train=quiet())
    out = prune(trained_lenet, digits, cfg, log=lambda *a: None)
    once = prune(trained_lenet, None, PruneConfig(method="global", sparsity="0.8"))
    (rnd,) = out.history[-1]["iterations"]
    assert len(rnd["epochs"]) == 1 and "retrained" in rnd
    assert not torch.equal(out.state_dict["fc1.weight"], once.state_dict["fc1.weight"])


def test_default_bits_follow_the_paper_by_layer_kind():
    """Paper, sections 2 and 3: 8 bits for convolutions (1-, 2- or 3-D), 5 for linear layers."""
    from deepcomp.sizes import default_index_bits, default_weight_bits
    for shape, bits in (((10, 20), 5), ((8, 4, 3), 8), ((8, 4, 3, 3), 8), ((8, 4, 3, 3, 3), 8)):
        t = torch.zeros(shape)
        assert default_index_bits(t) == default_weight_bits(t) == bits, shape


def test_steps_per_epoch_of_any_batch_size(digits):
    from deepcomp.prune import _steps_per_epoch
    n = len(digits.train_y)
    assert [_steps_per_epoch(digits, b) for b in (1, 2, 128, n, 10 * n)] == \
        [n, -(-n // 2), -(-n // 128), 1, 1]


def test_freeze_retraining_keeps_pruned_layers_bit_identical_and_trains_the_rest(
        trained_lenet, digits):
    cfg = PruneConfig(method="layer", sparsity="fc1=0.8,fc2=0,fc3=0", retrain_epochs=2,
                      retrain_lr=0.05, retrain="freeze", train=quiet())
    out = prune(trained_lenet, digits, cfg, log=lambda *a: None)
    once = prune(trained_lenet, None, PruneConfig(method="layer", sparsity="fc1=0.8,fc2=0,fc3=0"))
    for k in ("fc1.weight", "fc1.bias"):                          # the pruned layer: as pruned
        assert torch.equal(out.state_dict[k], once.state_dict[k]), k
    for k in ("fc2.weight", "fc3.weight", "fc2.bias"):             # the others: trained
        assert not torch.equal(out.state_dict[k], once.state_dict[k]), k
    assert out.history[-1]["iterations"][0]["frozen"] == ["fc1"]
    masked = prune(trained_lenet, digits, PruneConfig(method="layer",
                                                      sparsity="fc1=0.8,fc2=0,fc3=0",
                                                      retrain_epochs=2, retrain_lr=0.05,
                                                      train=quiet()), log=lambda *a: None)
    assert not torch.equal(masked.state_dict["fc1.weight"], once.state_dict["fc1.weight"])
    with pytest.raises(UsageError, match="retrains masked, not frozen"):
        prune(trained_lenet, digits, PruneConfig(method="global", gradual=True, retrain="freeze",
                                                 retrain_epochs=1, train=quiet()))


def test_biases_pruned_with_their_weights_stay_zero_and_are_counted(trained_lenet, digits):
    from deepcomp.sizes import layer_sizes
    cfg = PruneConfig(method="global", sparsity="0.8", include_bias=True, retrain_epochs=2,
                      train=quiet(momentum=0.9, weight_decay=5e-3))
    out = prune(trained_lenet, digits, cfg, log=lambda *a: None)
    assert {"fc1.bias", "fc2.bias", "fc3.bias"} <= set(out.masks)
    pruned_biases = 0
    for k in ("fc1.bias", "fc2.bias", "fc3.bias"):
        m, b = out.masks[k], out.state_dict[k]
        assert torch.equal(b[~m], torch.zeros_like(b[~m])), k
        pruned_biases += int((~m).sum())
    assert pruned_biases > 0
    rows = {r["name"]: r for r in layer_sizes(out)}
    assert rows["fc1.bias"]["kept"] == int(out.masks["fc1.bias"].sum())
    without = prune(trained_lenet, None, PruneConfig(method="global", sparsity="0.8"))
    assert not any(k.endswith("bias") for k in without.masks)
    from deepcomp.loading import decode_bytes
    from deepcomp.encode import encode_stage
    back = decode_bytes(encode_stage(out)[0])                  # stored sparse, read back exactly
    assert torch.equal(back.masks["fc1.bias"], out.masks["fc1.bias"])
    assert all(torch.equal(back.state_dict[k], v) for k, v in out.state_dict.items())


def test_a_method_is_one_mask_function_and_one_line(trained_lenet, digits, monkeypatch):
    """The registry: a method added to deepcomp.masks.METHODS is one the prune stage, the
    sweep and the Python API all prune by."""
    import deepcomp
    from deepcomp import masks as mk
    from deepcomp.analysis import sweep

    def every_other(absw, setting, inp):       # prunes every other weight of each layer
        out = {n: torch.arange(a.numel()).reshape(a.shape) % 2 == 0 for n, a in absw.items()}
        return out, {n: 0.0 for n in absw}
    monkeypatch.setitem(mk.METHODS, "every-other", mk.Method(every_other, "one"))
    out = prune(trained_lenet, digits, PruneConfig(method="every-other", sparsity="0.5",
                                                   retrain_epochs=0), log=lambda *a: None)
    assert mk.sparsity_of(out.masks) == pytest.approx(0.5, abs=1e-3)
    rows = sweep(trained_lenet, digits, [0.5], ["every-other"], log=lambda *a: None)
    assert rows[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    m = deepcomp.prune_masks(trained_lenet.build_model(), method="every-other", sparsity=0.5)
    assert all(torch.equal(m[n], out.masks[n]) for n in m)
    with pytest.raises(UsageError, match="every-other"):
        compute_masks({}, "magic", 0.5)


def test_settings_are_parsed_once_into_typed_values():
    """A config holds a sparsity as a number or a LayerSetting, bits as an int, a LayerSetting
    or AutoBits, parsed when the field is set (bad input fails there); its plain data keeps
    the setting as it was given, which is what records and run identities hold."""
    import numpy as np

    from deepcomp.patterns import LayerSetting
    from deepcomp.quantize import AutoBits, QuantizeConfig, layer_bits
    cfg = PruneConfig(method="layer", sparsity="*=0.9, first=0.5", sensitivity=1.2)
    assert isinstance(cfg.sparsity, LayerSetting) and cfg.sparsity.pairs == [("*", 0.9), ("first", 0.5)]
    assert cfg.sensitivity == 1.2
    assert (cfg.to_dict()["sparsity"], cfg.to_dict()["sensitivity"]) == ("*=0.9, first=0.5", 1.2)
    as_dict = PruneConfig(sparsity={"*": 0.8, "fc3": 0.5})
    assert as_dict.sparsity.pairs == [("*", 0.8), ("fc3", 0.5)]
    assert as_dict.to_dict()["sparsity"] == {"*": 0.8, "fc3": 0.5}
    assert PruneConfig(sparsity="0.90").to_dict()["sparsity"] == "0.90"
    assert PruneConfig(sparsity=np.float32(0.5)).sparsity == 0.5
    cfg.sparsity = "0.8"                                   # set later: parsed too
    assert cfg.sparsity.single() == 0.8 and cfg.to_dict()["sparsity"] == "0.8"
    for bad, msg in (("lots", "bad sparsity 'lots'"), ({"*": "x"}, "bad sparsity 'x'"),
                     (True, "sparsity must be a number")):
        with pytest.raises(UsageError, match=msg):
            PruneConfig(sparsity=bad)
    q = QuantizeConfig(bits="auto:2.5")
    assert q.bits.mean == 2.5 and isinstance(q.bits, AutoBits) and q.to_dict()["bits"] == "auto:2.5"
    assert QuantizeConfig(bits=4).bits == 4 and QuantizeConfig(bits=4).to_dict()["bits"] == "4"
    q.bits = "*=5,conv*=8"
    assert q.bits.pairs == [("*", 5), ("conv*", 8)]
    sd = {"conv1.weight": torch.zeros(4, 1, 3, 3), "fc1.weight": torch.zeros(3, 4),
          "fc2.weight": torch.zeros(2, 3)}
    assert layer_bits(sd, QuantizeConfig(bits="fc2=3").bits) == \
        {"conv1.weight": 8, "fc1.weight": 5, "fc2.weight": 3}      # unnamed layers: the paper's
    for bad, msg in (("auto:x", "expected auto:MEAN"), (4.5, "whole number")):
        with pytest.raises(UsageError, match=msg):
            QuantizeConfig(bits=bad)
