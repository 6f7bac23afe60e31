"""Deep Compression inside your own training loop: masks, gradual schedules and weight sharing
as handles on your model, each usable alone, and the same code the stages run.

    masks = deepcomp.prune_masks(model, method="global", sparsity=0.9)
    handle = deepcomp.apply_masks(model, masks, optimizer)    # pruned weights stay exactly 0
    ...your loop: loss.backward(); optimizer.step()...
    codebooks = deepcomp.share_weights(model, bits=4)         # k-means, centroids trainable
    optimizer = torch.optim.Adam(codebooks.parameters(), lr=1e-4)
    ...your loop...
    codebooks.finalize()
    deepcomp.encode(model, "model.dc")                        # masks and codebooks travel along

Pruning masks are ``{parameter name: bool tensor}`` (True = kept) over every convolution and
linear weight, as everywhere in deepcomp. A handle keeps the pruned weights at exactly 0.0
through any optimizer: it zeroes their gradients (a hook), re-applies the masks after every
step of the optimizer it was given, and before every forward pass of the model (so an optimizer
it was not told of cannot leave a pruned weight non-zero in a forward pass). The gradual
schedule (Zhu & Gupta 2017) is stepped by the user after each optimizer step.

Models pruned with ``torch.nn.utils.prune`` (``weight_orig`` and ``weight_mask``) are read as
pruned weights with their masks (deepcomp.torchprune), by the API and every command; a handle
made on such a model first makes its pruning permanent, in place, and holds its masks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import UsageError
from .masks import METHODS, compute_masks, pruning_method, sparsity_of
from .prune import (GradualPruner, MaskKeeper, PruneConfig, _allocate, _setting, prunable_names,
                    ramp_schedule)
from .quantize import (QuantizeConfig, attach_codebooks, detach_codebooks, layer_bits, share)
from .stagefile import attached_entries, tied_names
from .torchprune import make_permanent

__all__ = ["prune_masks", "apply_masks", "MaskHandle", "GradualSchedule", "share_weights",
           "ShareHandle", "attached"]

_MASKS, _QUANT = "_deepcomp_masks", "_deepcomp_quant"    # where a model carries its handles


def _adopt_torch_prune(model: nn.Module) -> None:
    """A model pruned with ``torch.nn.utils.prune`` becomes deepcomp's: the pruning made
    permanent in place, its masks held by a :class:`MaskHandle` (exactly those masks)."""
    masks = make_permanent(model)
    if masks:
        old = getattr(model, _MASKS, None)
        apply_masks(model, {**(old.remove() if old is not None else {}), **masks})


def prune_masks(model: nn.Module, method: str = "global", sparsity=0.9, sensitivity=0.75,
                min_keep: float = PruneConfig.min_keep, masks: dict | None = None,
                data=None) -> dict:
    """Masks for the current weights of ``model`` by any of deepcomp's methods (``std``,
    ``global``, ``layer``, ``lamp``, ``sensitivity``; see deepcomp.prune): ``sparsity`` a
    fraction, or for ``layer`` a ``{pattern: fraction}`` dict; ``sensitivity`` the std method's
    s. Weights pruned in ``masks`` stay pruned. ``sensitivity`` scans the layers on ``data``."""
    spec = pruning_method(method)
    _adopt_torch_prune(model)
    names = prunable_names(model)
    cfg = PruneConfig(method=method, sparsity=sparsity,
                      sensitivity=sensitivity, min_keep=min_keep)
    setting = _setting(cfg, names)
    if spec.scan:
        if data is None:
            raise UsageError(f"method={method!r} scans every layer: give data=")
        setting = _allocate(model, names, masks or {}, data, cfg, setting, log=lambda *a: None)
    params = dict(model.named_parameters())
    weights = {n: params[n] for n in names}
    new, _ = compute_masks(weights, method, setting, prev=masks, min_keep=min_keep)
    return new


class MaskHandle:
    """Holds pruned weights at exactly zero through a user's training (see the module's
    docstring); :meth:`remove` lets them go (the masks stay on the model for :func:`encode`
    unless ``forget``)."""

    def __init__(self, model: nn.Module, keeper: MaskKeeper, optimizer=None):
        self.model, self.keeper = model, keeper
        self._hooks = [model.register_forward_pre_hook(lambda m, args: self.keeper())]
        if optimizer is not None:
            self._hooks.append(optimizer.register_step_post_hook(
                lambda opt, args, kwargs: self.keeper()))
        setattr(model, _MASKS, self)

    @property
    def masks(self) -> dict:
        """The masks now, on the CPU."""
        return self.keeper.cpu_masks()

    @property
    def sparsity(self) -> float:
        return sparsity_of(self.keeper.masks)

    def remove(self, forget: bool = False) -> dict:
        """Re-apply the masks once more and remove every hook; returns the masks."""
        self.keeper()
        self.keeper.remove()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        masks = self.masks
        if forget and getattr(self.model, _MASKS, None) is self:
            delattr(self.model, _MASKS)
        return masks


def apply_masks(model: nn.Module, masks: dict, optimizer=None) -> MaskHandle:
    """Zero the pruned weights of ``model`` and keep them at exactly 0.0 from now on (gradient
    hooks; re-masking after each step of ``optimizer``, if given, and before each forward)."""
    _adopt_torch_prune(model)
    params = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise UsageError(f"masks for parameters the model does not have: {unknown[:3]}")
    return MaskHandle(model, MaskKeeper(model, masks), optimizer)


class GradualSchedule(MaskHandle):
    """Zhu & Gupta (2017) in a user's loop: call :meth:`step` after every optimizer step; the
    masks follow the cubic ramp to ``sparsity`` over the first ``ramp_fraction`` of
    ``total_steps``, updated every ``every`` steps (fitted to a short run, as the prune stage
    does), and hold the pruned weights at zero like :class:`MaskHandle`."""

    def __init__(self, model: nn.Module, total_steps: int, method: str = "global",
                 sparsity=0.9, sensitivity=0.75, every: int = PruneConfig.mask_every,
                 ramp_fraction: float = PruneConfig.ramp_fraction,
                 min_keep: float = PruneConfig.min_keep, optimizer=None):
        if method not in METHODS or METHODS[method].scan:     # a scan would run every update
            ramped = [n for n, m in METHODS.items() if not m.scan]
            raise UsageError(f"a gradual schedule prunes by {', '.join(ramped[:-1])} or "
                             f"{ramped[-1]}, not {method!r}")
        if total_steps < 1 or not 0 < ramp_fraction <= 1:
            raise UsageError("total_steps must be at least 1 and ramp_fraction in (0, 1]")
        _adopt_torch_prune(model)
        names = prunable_names(model)
        cfg = PruneConfig(method=method, sparsity=sparsity,
                          sensitivity=sensitivity)
        setting = _setting(cfg, names)
        params = dict(model.named_parameters())
        stds = {n: float(params[n].detach().float().std()) for n in names}
        masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
        end = max(1, math.floor(ramp_fraction * total_steps))
        self.every, self.why = ramp_schedule(every, end)
        self.steps = 0
        super().__init__(model, GradualPruner(model, masks, method, setting, stds, self.every,
                                              end, min_keep), optimizer)

    def step(self) -> None:
        """One optimizer step has been taken: update the masks where the schedule says."""
        self.steps += 1
        self.keeper(self.steps)


class ShareHandle:
    """Weight sharing in a user's loop: each quantized weight is ``codebook[indices]``, the
    codebooks are the parameters to train (:meth:`parameters`), and :meth:`finalize` makes the
    weights plain tensors again (the quantizer entries stay on the model for :func:`encode`)."""

    def __init__(self, model: nn.Module, quant: dict, codebooks: list):
        self.model, self.quant, self.codebooks = model, quant, codebooks
        self.finalized = False
        setattr(model, _QUANT, self)

    def parameters(self):
        return iter(self.codebooks)

    def finalize(self) -> dict:
        """The weights become ``codebook[indices]`` as plain tensors; returns the quantizer
        entries (codebook, indices, bits) with the trained codebooks."""
        if not self.finalized:
            for name, cb in detach_codebooks(self.model, self.quant).items():
                self.quant[name]["codebook"] = cb
            self.finalized = True
        return self.quant


def share_weights(model: nn.Module, bits=5, init: str = "linear", masks: dict | None = None,
                  float16: bool = True) -> ShareHandle:
    """k-means weight sharing of every convolution and linear weight of ``model`` (paper,
    section 3): ``bits`` one number or ``{pattern: bits}``; the kept weights are those of
    ``masks`` (default: those of the model's mask handle, else the non-zero ones). Returns a
    :class:`ShareHandle` whose codebooks are trainable (float16 numbers in every forward pass
    when ``float16``, as the .dc file stores them)."""
    _adopt_torch_prune(model)
    cfg = QuantizeConfig(bits=bits, init=init, float16_codebooks=float16)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    aliases = tied_names(model)
    per_layer = layer_bits(state, cfg.bits, aliases)
    handle = getattr(model, _MASKS, None)
    masks = masks if masks is not None else (handle.masks if handle is not None else {})
    kept = {n: masks[n].bool() if n in masks else state[n] != 0 for n in per_layer}
    work = {n: state[n].clone() for n in per_layer}
    quant, _ = share(work, kept, per_layer, cfg)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n in per_layer:
            params[n].copy_(work[n])
    return ShareHandle(model, quant, attach_codebooks(model, quant, float16))


def attached(model: nn.Module) -> tuple[dict, dict]:
    """The masks and quantizer entries a model carries from :func:`apply_masks`,
    :class:`GradualSchedule` and :func:`share_weights` (a share handle is finalized first)."""
    return attached_entries(model)
