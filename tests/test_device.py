"""Tensors follow the model to its device, checked here without a GPU.

The tests run on whatever device ``--device auto`` picks (a GPU where there is one). On a CPU
machine, PyTorch's ``meta`` device stands in for a second device: it computes shapes, not
values, and refuses to mix its tensors with the CPU's, so a mask or an input left behind on the
CPU fails here as it would on a GPU. tools/gpu_check.sh runs the whole suite on a real GPU.
"""
import torch
from torch import nn

from deepcomp.prune import MaskKeeper, PruneConfig, prune, ramp_schedule
from deepcomp.quantize import QuantizeConfig, _cluster
from deepcomp.train import _to_cpu, resolve_device

from conftest import quiet


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _masks(model):
    return {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if p.ndim == 2}


def _to_meta(model):
    """``model.to("meta")`` keeping its parameter objects, as a move to CUDA does (a plain move
    to meta would replace them)."""
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        return model.to("meta")
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)


def test_masks_follow_the_model_to_its_device():
    """What fit does: prune makes the keeper with masks on the CPU (fresh ones, or resumed with
    map_location='cpu'), then training moves the model to its device; the masks must be used,
    and kept, on that device."""
    model = _net()
    keeper = MaskKeeper(model, _masks(model))
    _to_meta(model)
    keeper(1)                                     # the re-masking after an optimizer step
    assert {m.device.type for m in keeper.masks.values()} == {"meta"}


def test_the_gradient_hook_masks_on_the_gradient_device():
    model = _net().to("meta")
    keeper = MaskKeeper(model, {n: m.cpu() for n, m in _masks(_net()).items()})
    model(torch.ones(2, 6, device="meta")).sum().backward()      # gradient x mask, on meta
    keeper(1)
    assert all(p.grad.device.type == "meta" for p in model.parameters())


def test_checkpoint_state_is_on_the_cpu():
    state = {"state": {0: {"momentum_buffer": torch.ones(3, requires_grad=True)}},
             "param_groups": [{"lr": 0.1, "params": [0]}], "steps": (torch.zeros(2),)}
    out = _to_cpu(state)
    assert out["state"][0]["momentum_buffer"].device.type == "cpu"
    assert not out["state"][0]["momentum_buffer"].requires_grad
    assert out["param_groups"] == state["param_groups"] and isinstance(out["steps"], tuple)


def test_k_means_takes_weights_that_require_grad_or_live_on_a_device():
    """k-means runs in numpy: its input goes through .detach().cpu() first (.numpy() refused a
    CUDA tensor on the GPU machine, and a tensor that requires grad anywhere)."""
    w = torch.randn(200, requires_grad=True)
    c, labels, _ = _cluster(w, 3, QuantizeConfig())
    assert len(c) == 8 and labels.shape == (200,)


def test_auto_device_gives_each_torchrun_process_a_gpu_or_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")       # two processes, one GPU: gloo on the CPU
    assert resolve_device("auto").type == "cpu"


def test_a_mask_interval_longer_than_the_ramp_is_fitted_to_it(trained_lenet, digits):
    """--mask-every 100 over a 2-epoch run of 12 steps an epoch: the whole target would come at
    once at the ramp's end; the schedule is fitted to the run, with a line saying so."""
    assert ramp_schedule(100, 1000) == (100, None)
    every, why = ramp_schedule(100, 18)
    assert every == 2 and "every 2 steps instead" in why
    lines = []
    cfg = PruneConfig(method="lamp", sparsity="0.9", gradual=True, mask_every=100,
                      retrain_epochs=2, retrain_lr=0.05, train=quiet())
    out = prune(trained_lenet, digits, cfg, log=lines.append)
    assert any("--mask-every 100 is more than half of the ramp's 18 steps" in ln for ln in lines)
    assert out.history[-1]["metrics"]["top1"] > 80
