"""Pruning masks by magnitude: the pruning methods, as a registry of mask functions.

A method is a function ``masks(magnitudes, setting, inputs) -> (masks, thresholds)`` and one
line in :data:`METHODS`; the prune stage (deepcomp.prune), the sweep and the sensitivity scan
(deepcomp.analysis, deepcomp.allocate) and the Python API all reach it through
:func:`compute_masks`. The methods:

- ``std``: a layer's threshold is a quality parameter ``s`` times the standard deviation of that
  layer's weights (Han et al., NeurIPS 2015, section 4).
- ``global``: one magnitude threshold across all prunable weights, set to reach a target sparsity.
- ``layer``: every layer pruned to its own target sparsity.
- ``lamp``: one threshold across layers on the layer-adaptive magnitude score of Lee et al.
  (ICLR 2021).
- ``sensitivity``: per-layer sparsities allocated from a scan of each layer's loss
  (deepcomp.allocate), then pruned as ``layer``.

Masks are ``{param_name: bool tensor}`` (True = kept). This module imports no other stage, so
the prune stage and the allocation both build on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import UsageError

__all__ = ["Method", "MaskInputs", "METHODS", "pruning_method", "compute_masks", "apply_masks",
           "sparsity_of", "lamp_scores", "std_masks", "layer_masks", "global_masks",
           "lamp_masks"]


@dataclass(frozen=True)
class MaskInputs:
    """What a mask function may use besides the magnitudes and the setting."""
    weights: dict            # {name: tensor} as given (std: the standard deviation's source)
    prev: dict               # masks whose pruned weights stay pruned
    stds: dict | None        # std: each layer's standard deviation, fixed for the stage
    scale: float             # multiplies the setting (the iterative and gradual ramps)
    min_keep: float          # global, lamp: each layer keeps at least this share


@dataclass(frozen=True)
class Method:
    """A pruning method: its mask function and what its setting is."""
    masks: Callable[[dict, object, MaskInputs], tuple[dict, dict]]
    # "std": the quality parameter s per layer (PruneConfig.sensitivity); "one": one overall
    # sparsity; "layers": a sparsity per layer (PruneConfig.sparsity)
    setting: str
    # the one sparsity is first allocated per layer by a sensitivity scan (deepcomp.allocate):
    # the mask function then gets a sparsity per layer
    scan: bool = False


def sparsity_of(masks: dict, names=None) -> float:
    names = names if names is not None else list(masks)
    total = sum(masks[n].numel() for n in names)
    return 1 - sum(int(masks[n].sum()) for n in names) / max(total, 1)


def _keep_largest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A mask keeping all but the ``n_prune`` smallest scores (exact count, ties broken by order)."""
    flat = scores.reshape(-1)
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune > 0:
        mask[torch.argsort(flat, stable=True)[:n_prune]] = False
    return mask.reshape(scores.shape)


def lamp_scores(a: torch.Tensor) -> torch.Tensor:
    """LAMP scores (Lee et al. 2021) of a layer's weight magnitudes ``a``: w_u^2 / sum of w_v^2
    over the weights v of the layer with |w_v| >= |w_u| (ties in sorted order)."""
    sq = a.reshape(-1).double() ** 2
    order = torch.argsort(sq, stable=True)
    s = sq[order]
    tail = torch.flip(torch.cumsum(torch.flip(s, [0]), 0), [0])
    out = torch.empty_like(sq)
    out[order] = torch.where(tail > 0, s / tail.clamp_min(1e-300), torch.zeros_like(s))
    return out.reshape(a.shape).float()


def _floor(n: int, min_keep: float) -> int:
    return min(n, max(1, math.ceil(min_keep * n))) if min_keep > 0 else 0


def std_masks(absw: dict, setting: dict, inp: MaskInputs) -> tuple[dict, dict]:
    """Han et al. 2015: each layer pruned below ``s * std`` of its weights."""
    masks, thresholds = {}, {}
    for n, a in absw.items():
        sd = inp.stds[n] if inp.stds and n in inp.stds else inp.weights[n].float().std()
        thr = float(setting[n]) * inp.scale * float(sd)
        m = a > thr
        if n in inp.prev:
            m &= inp.prev[n]
        masks[n], thresholds[n] = m, thr
    return masks, thresholds


def layer_masks(absw: dict, setting: dict, inp: MaskInputs) -> tuple[dict, dict]:
    """Each layer pruned to its own sparsity ``setting[name]``: its smallest weights."""
    masks, thresholds = {}, {}
    for n, a in absw.items():
        target = float(setting[n]) * inp.scale
        masks[n] = _keep_largest(a, round(target * a.numel()))
        thresholds[n] = float(a[~masks[n]].max()) if (~masks[n]).any() else 0.0
    return masks, thresholds


def _one_threshold(absw: dict, scores: dict, setting: float,
                   inp: MaskInputs) -> tuple[dict, dict]:
    """One threshold across layers on ``scores``, pruning ``setting`` of all weights; each
    layer's largest weights (``min_keep``) kept."""
    target = float(setting) * inp.scale
    names = list(absw)
    protected = 0
    for n, sc in scores.items():      # the floor: each layer's largest weights are kept
        f = _floor(sc.numel(), inp.min_keep)
        if f:
            flat = sc.reshape(-1)
            flat[torch.topk(absw[n].reshape(-1), f).indices] = float("inf")
            protected += f
    allw = torch.cat([scores[n].reshape(-1) for n in names])
    keep = _keep_largest(allw, min(round(target * allw.numel()), allw.numel() - protected))
    masks, thresholds = {}, {}
    start = 0
    for n in names:
        k = absw[n].numel()
        masks[n] = keep[start:start + k].reshape(absw[n].shape)
        if n in inp.prev:
            masks[n] &= inp.prev[n]
        thresholds[n] = float(absw[n][~masks[n]].max()) if (~masks[n]).any() else 0.0
        start += k
    return masks, thresholds


def global_masks(absw: dict, setting: float, inp: MaskInputs) -> tuple[dict, dict]:
    """One magnitude threshold across all layers, for an overall sparsity."""
    return _one_threshold(absw, {n: a.clone() for n, a in absw.items()}, setting, inp)


def lamp_masks(absw: dict, setting: float, inp: MaskInputs) -> tuple[dict, dict]:
    """Lee et al. 2021: one threshold across layers on the LAMP scores."""
    return _one_threshold(absw, {n: lamp_scores(a) for n, a in absw.items()}, setting, inp)


# The pruning methods, by name. Adding one: its mask function above, and a line here.
METHODS: dict[str, Method] = {
    "std": Method(std_masks, "std"),
    "global": Method(global_masks, "one"),
    "layer": Method(layer_masks, "layers"),
    "lamp": Method(lamp_masks, "one"),
    "sensitivity": Method(layer_masks, "one", scan=True),
}


def pruning_method(name: str) -> Method:
    """The method called ``name``; a usage error naming the others where there is none."""
    if name not in METHODS:
        raise UsageError(f"unknown pruning method {name!r}; expected {', '.join(METHODS)}")
    return METHODS[name]


def compute_masks(weights: dict, method: str, setting, prev: dict | None = None,
                  stds: dict | None = None, scale: float = 1.0,
                  min_keep: float = 0.0) -> tuple[dict, dict]:
    """Masks and per-layer thresholds for ``weights`` {name: tensor} by the method
    called ``method``.

    ``setting`` is the per-layer value dict (std: s; layer, sensitivity: sparsity) or a float
    (global, lamp). ``scale`` multiplies it (the iterative ramp). ``prev`` masks are kept pruned.
    ``min_keep`` (global, lamp): each layer keeps at least this share of its largest weights.
    """
    fn = pruning_method(method).masks
    prev = prev or {}
    absw = {n: w.detach().abs().float().cpu() for n, w in weights.items()}
    for n in absw:     # already-pruned weights stay pruned, whatever their value
        if n in prev:
            absw[n] = absw[n].masked_fill(~prev[n], 0.0)
    return fn(absw, setting, MaskInputs(weights, prev, stds, scale, min_keep))


def apply_masks(model: nn.Module, masks: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, m in masks.items():
            p = params[n]
            p.masked_fill_(~m.to(p.device), 0.0)
