"""Models pruned with ``torch.nn.utils.prune``: read as deepcomp's pruned weights and masks.

``torch.nn.utils.prune`` keeps a pruned tensor X as ``X_orig`` (the weights) and ``X_mask``
(a buffer), and computes X = X_orig * X_mask in a forward pre-hook. deepcomp's stages want X
itself (exactly zero where pruned) and the mask as a bool tensor: the two functions here turn
a state dict or a module into that, keeping the masks exactly. Depends on torch alone.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .errors import UsageError

__all__ = ["from_torch_prune", "unpruned_copy", "make_permanent", "to_torch_prune"]


def from_torch_prune(state: dict) -> tuple[dict, dict]:
    """A state dict of a model pruned with ``torch.nn.utils.prune`` (``X_orig`` and ``X_mask``
    for each pruned tensor X) as deepcomp's: ``(state dict with X = X_orig * X_mask, masks)``;
    the masks kept exactly. Any other state dict comes back as it is, with no masks."""
    out, masks = {}, {}
    for k, v in state.items():
        if k.endswith("_orig") and k[:-5] + "_mask" in state:
            name = k[:-5]
            mask = state[name + "_mask"]
            if mask.shape != v.shape:
                raise UsageError(f"{name}_mask has shape {list(mask.shape)}, {k} "
                                 f"{list(v.shape)}")
            keep = mask != 0
            out[name] = torch.where(keep, v, torch.zeros_like(v))
            masks[name] = keep
        elif k.endswith("_mask") and k[:-5] + "_orig" in state:
            continue
        else:
            out[k] = v
    return out, masks


def _pruned_tensors(model: nn.Module) -> list:
    """(module, tensor name) of every tensor ``torch.nn.utils.prune`` reparametrized."""
    return [(mod, hook._tensor_name) for mod in model.modules()
            for hook in getattr(mod, "_forward_pre_hooks", {}).values()
            if isinstance(hook, tprune.BasePruningMethod)]


def make_permanent(model: nn.Module) -> dict:
    """Make ``torch.nn.utils.prune``'s pruning of ``model`` permanent, in place (each tensor
    becomes a plain parameter, zero where pruned); return its masks by parameter name."""
    names = {id(m): n for n, m in model.named_modules()}
    masks = {}
    for mod, pname in _pruned_tensors(model):
        name = f"{names[id(mod)]}.{pname}".lstrip(".")
        masks[name] = getattr(mod, pname + "_mask").detach().bool().clone()
        tprune.remove(mod, pname)
    return masks


def unpruned_copy(model: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with every ``torch.nn.utils.prune`` reparametrization made
    permanent, and the masks it held."""
    pruned = _pruned_tensors(model)
    # the pruned tensor is a computed attribute (orig * mask), which deepcopy refuses
    computed = [getattr(mod, name) for mod, name in pruned]
    for mod, name in pruned:
        delattr(mod, name)
    try:
        net = copy.deepcopy(model)
    finally:
        for (mod, name), value in zip(pruned, computed):
            setattr(mod, name, value)
    return net, {k: v.cpu() for k, v in make_permanent(net).items()}


def to_torch_prune(model: nn.Module, masks: dict) -> None:
    """Register ``masks`` on ``model`` with ``torch.nn.utils.prune.custom_from_mask``."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        mod_name, _, pname = name.rpartition(".")
        tprune.custom_from_mask(modules[mod_name], pname, mask.to(getattr(modules[mod_name],
                                                                          pname).device))
