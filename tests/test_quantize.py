"""Quantization: k-means weight sharing with trained centroids (Han et al. 2016, section 3)."""
import numpy as np
import pytest
import torch

from deepcomp import cli
from deepcomp.data import load_data
from deepcomp.errors import UsageError
from deepcomp.models import create
from deepcomp.quantize import (CodebookWeight, QuantizeConfig, check_quantized, init_centroids,
                               kmeans_1d, layer_bits, quantize)
from deepcomp.sizes import is_prunable_weight
from deepcomp.loading import load_stage
from conftest import PRECISIONS_HERE
from deepcomp.stagefile import StageFile, arch_for, save_stage
from deepcomp.train import TrainConfig


def no_finetune():
    return TrainConfig(epochs=0, progress=False, device="cpu")


def laplace(n, seed=0):
    return np.random.default_rng(seed).laplace(0, 0.02, n)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def make_stage(name, data, prune_share=0.7, seed=0):
    """A model fresh from the registry; with prune_share, the smallest weights zeroed and masked."""
    torch.manual_seed(seed)
    arch = arch_for(name, data.meta())
    sf = StageFile.from_model(create(arch["name"], **arch["kwargs"]), arch, data.meta())
    if prune_share:
        for k, w in sf.state_dict.items():
            if is_prunable_weight(k, w):
                mask = w.abs() > w.abs().flatten().quantile(prune_share)
                sf.masks[k] = mask
                w.mul_(mask)
    return sf


# --- one-dimensional k-means ----------------------------------------------------------------

def test_linear_init_is_evenly_spaced_from_min_to_max():
    x = laplace(10_000)
    c = init_centroids(x, 16, "linear")
    assert c[0] == x.min() and c[-1] == x.max()
    assert np.allclose(np.diff(c), (x.max() - x.min()) / 15)


def test_density_init_is_evenly_spaced_in_the_cumulative_distribution():
    x = laplace(10_000)
    c = init_centroids(x, 16, "density")
    below = np.array([(x < v).mean() for v in c])
    assert np.allclose(below, (np.arange(16) + 0.5) / 16, atol=1e-3)
    assert np.ptp(c) < 0.5 * np.ptp(x)           # crowded where the weights are: near zero


def test_forgy_init_draws_weights_reproducibly():
    x = laplace(10_000)
    a, b, other = (init_centroids(x, 16, "forgy", seed=s) for s in (3, 3, 4))
    assert np.isin(a, x).all() and len(a) == 16
    assert np.array_equal(a, b) and not np.array_equal(a, other)


def test_linear_init_keeps_the_large_weights_best():
    """Paper, section 3.1: linear initialisation represents the rare large weights better."""
    x = laplace(20_000)
    errs = {}
    for init in ("linear", "density", "forgy"):
        c, labels, _ = kmeans_1d(x, 32, init)
        big = np.abs(x) > np.quantile(np.abs(x), 0.999)
        errs[init] = np.abs(x - c[labels])[big].mean()
    assert errs["linear"] < 0.5 * min(errs["density"], errs["forgy"])


@pytest.mark.parametrize("init", ["linear", "density", "forgy"])
def test_kmeans_1d_is_a_lloyd_fixed_point_with_the_inertia_it_reports(init):
    x = laplace(5_000, seed=1)
    c, labels, inertia = kmeans_1d(x, 32, init)
    assert len(c) <= 32 and np.all(np.diff(c) > 0)
    assert np.bincount(labels, minlength=len(c)).min() >= 1           # no empty cluster kept
    assert np.allclose(c, [x[labels == j].mean() for j in range(len(c))])
    nearest = np.abs(x[:, None] - c[None]).argmin(1)
    assert np.array_equal(c[nearest], c[labels])                       # each value at its nearest
    assert inertia == pytest.approx(((x - c[labels]) ** 2).sum())


def test_kmeans_1d_matches_scikit_learn_from_the_same_start():
    from sklearn.cluster import KMeans
    x = laplace(4_000, seed=2)
    start = init_centroids(x, 16, "forgy", seed=0)
    km = KMeans(16, init=start[:, None], n_init=1, max_iter=100_000, tol=0,
                algorithm="lloyd").fit(x[:, None])
    c, _, inertia = kmeans_1d(x, 16, "forgy", seed=0)
    assert inertia == pytest.approx(km.inertia_, rel=1e-6)
    assert np.allclose(c, np.sort(km.cluster_centers_.ravel()), atol=1e-9)


def test_few_distinct_values_are_kept_exactly():
    x = np.repeat([-0.5, 0.1, 0.25], 7)
    c, labels, inertia = kmeans_1d(x, 4, "linear")
    assert np.array_equal(c, [-0.5, 0.1, 0.25]) and inertia == 0
    assert np.array_equal(c[labels], x)


def test_kmeans_1d_rejects_bad_input():
    with pytest.raises(UsageError, match="init"):
        kmeans_1d(laplace(100), 4, "kmeans++")
    with pytest.raises(UsageError, match="NaN"):
        kmeans_1d(np.array([0.1, np.nan]), 4)
    c, labels, inertia = kmeans_1d(np.zeros(0), 4)
    assert len(c) == 0 and len(labels) == 0 and inertia == 0


# --- the stage --------------------------------------------------------------------------------

def test_layer_bits_default_to_the_paper_and_take_patterns():
    sd = {"conv1.weight": torch.zeros(4, 3, 3, 3), "conv1.bias": torch.zeros(4),
          "layer1.0.conv1.weight": torch.zeros(4, 4, 3, 3), "fc.weight": torch.zeros(10, 4)}
    assert layer_bits(sd) == {"conv1.weight": 8, "layer1.0.conv1.weight": 8, "fc.weight": 5}
    assert layer_bits(sd, "layer1*=4") == {"conv1.weight": 8, "layer1.0.conv1.weight": 4,
                                          "fc.weight": 5}
    assert set(layer_bits(sd, "*=5,conv*=8").values()) == {5, 8}
    assert set(layer_bits(sd, 3).values()) == {3}
    for bad in ("0", "13", "*=x", "nolayer=4"):
        with pytest.raises(UsageError):
            layer_bits(sd, bad)


@pytest.mark.parametrize("init", ["linear", "density", "forgy"])
def test_quantized_layers_share_at_most_2_to_the_bits_values_and_keep_zeros(digits, init):
    sf = make_stage("lenet300", digits)
    q = quantize(sf, None, QuantizeConfig(bits="*=3,fc3=2", init=init, finetune=no_finetune()))
    check_quantized(q)
    for name, mask in sf.masks.items():
        w, entry = q.state_dict[name], q.quant[name]
        bits = 2 if name == "fc3.weight" else 3
        assert entry["bits"] == bits and entry["init"] == init
        assert entry["codebook"].dtype == torch.float32 and entry["indices"].dtype == torch.int16
        assert len(torch.unique(w[mask])) <= 2 ** bits
        assert torch.equal(entry["indices"] == -1, ~mask)
        assert torch.all(w[~mask] == 0)
        assert torch.equal(q.masks[name], mask)
    assert torch.equal(q.state_dict["fc1.bias"], sf.state_dict["fc1.bias"])
    assert q.stage == "quantized" and sf.quant == {}                   # input left alone


def test_dense_model_quantizes_too(digits):
    sf = make_stage("lenet300", digits, prune_share=0)
    q = quantize(sf, digits, QuantizeConfig(finetune=no_finetune()))
    for name, entry in q.quant.items():
        assert (entry["indices"] >= 0).all() and entry["bits"] == 5
        assert len(entry["codebook"]) <= 32
    rec = q.history[-1]
    assert rec["config"]["init"] == "linear" and rec["config"]["layer_bits"]["fc1.weight"] == 5
    assert rec["metrics"]["before_finetune"] == rec["metrics"]["after_finetune"]
    assert rec["sizes"]["ratio"] > 5                       # 32-bit floats -> 5-bit indices


def test_codebook_gradient_is_the_sum_over_its_weights():
    """Paper, equation 3: dL/dC_k = sum of dL/dW_ij over the weights with index k."""
    torch.manual_seed(0)
    indices = torch.randint(-1, 4, (6, 5), dtype=torch.int16)
    p = CodebookWeight(torch.tensor([-1.0, -0.1, 0.2, 0.9]), indices)
    g = torch.randn(6, 5)
    (p(torch.zeros(6, 5)) * g).sum().backward()
    want = torch.stack([g[indices == k].sum() for k in range(4)])
    assert torch.allclose(p.codebook.grad, want)
    assert torch.all(p.lookup()[indices == -1] == 0)


@pytest.mark.parametrize("precision", PRECISIONS_HERE)
def test_finetuning_moves_centroids_never_assignments(digits, precision):
    sf = make_stage("resnet20", load_data("synthetic:3x8x8"), prune_share=0.5)
    data = load_data("synthetic:3x8x8")
    cfg = QuantizeConfig(bits="*=3", finetune=TrainConfig(epochs=1, lr=3e-3, batch_size=250,
                                                          progress=False, device="cpu",
                                                          precision=precision))
    before = quantize(sf, data, QuantizeConfig(bits="*=3", finetune=no_finetune()))
    after = quantize(sf, data, cfg)
    check_quantized(after)                          # every weight equals its centroid exactly
    moved = 0
    for name, entry in after.quant.items():
        assert torch.equal(entry["indices"], before.quant[name]["indices"])
        assert entry["codebook"].shape == before.quant[name]["codebook"].shape
        moved += int((entry["codebook"] != before.quant[name]["codebook"]).sum())
        assert torch.all(after.state_dict[name][~sf.masks[name]] == 0)
    assert moved > 0.9 * sum(len(e["codebook"]) for e in after.quant.values())
    bn = "layer1.0.bn1.running_mean"
    assert not torch.equal(after.state_dict[bn], sf.state_dict[bn])   # batch norm trained
    m = after.history[-1]["metrics"]
    assert m["top1"] == m["after_finetune"]["top1"] and len(after.history[-1]["epochs"]) == 1
    reloaded = after.build_model().state_dict()
    assert all(torch.equal(reloaded[k], after.state_dict[k]) for k in after.quant)
    for q in list(after.quant.values()) + list(before.quant.values()):   # float16 numbers
        assert torch.equal(q["codebook"].half().float(), q["codebook"])


def test_float16_codebooks_round_and_pass_gradients_straight_through():
    cb = torch.tensor([-1.0001, 0.1, 0.30001, 70000.0])
    p = CodebookWeight(cb, torch.tensor([[0, 1], [2, 3]], dtype=torch.int16), float16=True)
    w = p(torch.zeros(2, 2))
    assert torch.equal(w.reshape(-1)[:3], cb[:3].half().float())
    assert w.reshape(-1)[3] == 70000.0                  # beyond float16: left as it is
    (w * torch.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert torch.equal(p.codebook.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    sf = make_stage("lenet300", load_data("synthetic:1x8x8"), prune_share=0.5)
    exact = quantize(sf, None, QuantizeConfig(bits="*=3", float16_codebooks=False,
                                              finetune=no_finetune()))
    assert any(not torch.equal(q["codebook"].half().float(), q["codebook"])
               for q in exact.quant.values())


def test_quantize_rejects_bad_configs(digits):
    sf = make_stage("lenet300", digits)
    with pytest.raises(UsageError, match="needs data"):
        quantize(sf, None, QuantizeConfig())
    with pytest.raises(UsageError, match="init"):
        quantize(sf, None, QuantizeConfig(init="random", finetune=no_finetune()))


def test_stage_file_round_trip(tmp_path, digits):
    q = quantize(make_stage("lenet300", digits), None, QuantizeConfig(finetune=no_finetune()))
    save_stage(tmp_path / "q.pt", q)
    back = load_stage(str(tmp_path / "q.pt"))
    check_quantized(back)
    assert back.quant["fc2.weight"]["bits"] == 5 and back.stage == "quantized"
    assert torch.equal(back.quant["fc2.weight"]["indices"], q.quant["fc2.weight"]["indices"])


def test_cli_quantize(tmp_path, capsys, digits):
    src = tmp_path / "in.pt"
    save_stage(src, make_stage("lenet300", digits))
    out = tmp_path / "out.pt"
    rc = cli.main(["quantize", str(src), "--data", "digits", "-o", str(out), "--bits", "*=4",
                   "--init", "density", "--finetune-epochs", "1", "--no-progress",
                   "--device", "cpu"])
    assert rc == 0
    line = capsys.readouterr().out
    assert "4 bits, density init" in line and "->" in line
    q = load_stage(str(out))
    assert {e["bits"] for e in q.quant.values()} == {4}
    assert q.history[-1]["config"]["finetune"]["epochs"] == 1

    bad = tmp_path / "bad.pt"
    assert cli.main(["quantize", str(src), "-o", str(bad), "--bits", "conv9=4"]) == 2
    assert cli.main(["quantize", str(tmp_path / "missing.pt"), "-o", str(bad)]) == 1
    assert not bad.exists()
    err = capsys.readouterr().err
    assert "matches no layer" in err and "no such file" in err


def test_fine_tuning_distils_from_the_input_model(digits):
    """finetune.distill_weight > 0 without a teacher: the input (unquantized) model teaches."""
    pruned = make_stage("lenet300", digits, prune_share=0.7)
    runs = {}
    for w in (0.0, 0.9):
        cfg = QuantizeConfig(bits="*=3", finetune=TrainConfig(epochs=1, lr=1e-3, progress=False,
                                                              distill_weight=w))
        runs[w] = quantize(pruned, digits, cfg)
    a, b = runs[0.0].quant["fc1.weight"]["codebook"], runs[0.9].quant["fc1.weight"]["codebook"]
    assert not torch.equal(a, b)                    # the loss differed, so did the training
