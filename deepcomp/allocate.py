"""Per-layer sparsity and bits chosen from sensitivity, as the paper chose its thresholds.

Han et al. (2015, section 4; Deep Compression, Figs. 5-6) scan how the accuracy of the network
falls as each layer alone is pruned, and choose each layer's setting from its curve: sensitive
layers (the first convolution, the classifier) keep more. Here the choice is automatic, for one
global target: every layer's loss curve is measured on a seeded sample of *training* images
(never the test set), and the target is met by repeatedly taking the step that raises the loss
least per unit saved (one layer to its next sparsity, or one bit fewer for one layer). That is
the marginal-cost rule, optimal when the curves are convex and the layers' effects add; the
curves are made non-decreasing first, so noise cannot make a step look free.

- :func:`allocate_sparsity`: per-layer sparsities whose weighted mean is the global target,
  exactly (the last step taken is interpolated), each layer keeping at least ``min_keep``.
- :func:`allocate_bits`: per-layer bits (2 to 8) whose mean over the kept weights is at most the
  target.
"""
from __future__ import annotations

import heapq
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from . import resume as rs
from .data import Dataset
from .errors import UsageError
from .masks import compute_masks, sparsity_of
from .train import Progress, evaluate

__all__ = ["SPARSITY_GRID", "sample_split", "prune_one_layer", "SparsityScan", "scan_layers",
           "scan_sparsity",
           "allocate_from_scan", "allocate_sparsity", "allocate_bits"]

# Sparsities visited per layer: coarse where layers rarely suffer, finer near the top.
SPARSITY_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
# --bits auto: the range of its mean and of each layer's bits (the format allows 1..MAX_BITS)
AUTO_MIN_BITS, AUTO_MAX_BITS = 2, 8


def sample_split(data: Dataset, images: int, seed: int = 0) -> Dataset:
    """``data`` with its evaluation split replaced by ``images`` training images, drawn with
    ``seed``: the scans measure on it, so the test set stays unseen by every choice."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_y), generator=g)[:images]
    return replace(data, test_x=data.train_x[idx], test_y=data.train_y[idx])


def _greedy(costs: dict, gains: dict, need: float) -> tuple[dict, tuple | None]:
    """Levels per layer that save ``need``: ``costs[n][j]`` is the loss at level j of layer n
    (level 0: as it is), ``gains[n][j]`` what level j saves (increasing). Takes the cheapest next
    step per unit saved, one at a time. Returns the levels and, for the step that crossed
    ``need``, ``(name, fraction of that step needed)``."""
    level = {n: 0 for n in costs}
    heap = []

    def push(n):
        j = level[n] + 1
        if j < len(costs[n]):
            step = gains[n][j] - gains[n][j - 1]
            rise = max(costs[n][j] - costs[n][j - 1], 0.0)
            heapq.heappush(heap, (rise / step if step > 0 else math.inf, n, j))
    for n in costs:
        push(n)
    saved = 0.0
    while saved < need:
        if not heap:
            raise UsageError(f"the target cannot be reached: at most {saved:,.0f} of "
                             f"{need:,.0f} can be saved within the layers' limits")
        _, n, j = heapq.heappop(heap)
        step = gains[n][j] - gains[n][j - 1]
        if saved + step >= need:
            return level, (n, (need - saved) / step)
        saved += step
        level[n] = j
        push(n)
    return level, None


def _non_decreasing(values: list[float]) -> list[float]:
    out, top = [], -math.inf
    for v in values:
        top = max(top, v)
        out.append(top)
    return out


@torch.no_grad()
def _evaluate_with(model: nn.Module, param: nn.Parameter, value: torch.Tensor, data: Dataset,
                   device) -> dict:
    """The metrics of ``model`` on ``data`` with ``param`` set to ``value`` (then restored)."""
    saved = param.detach().clone()
    param.copy_(value)
    try:
        return evaluate(model, data, device, progress=False)     # the scan shows its own bar
    finally:
        param.copy_(saved)


def prune_one_layer(model: nn.Module, name: str, sparsities, data: Dataset, device="auto",
                    masks: dict | None = None) -> list[dict]:
    """The metrics of ``model`` on ``data`` with the weight ``name`` alone pruned by magnitude
    to each of ``sparsities`` (weights already pruned in ``masks`` stay pruned); the weight is
    restored after each. The measurement behind :func:`scan_sparsity` and
    :func:`deepcomp.analysis.sensitivity`."""
    param = dict(model.named_parameters())[name]
    w = param.detach().clone()
    out = []
    for s in sparsities:
        m, _ = compute_masks({name: w}, "layer", {name: s}, prev=masks)
        out.append(_evaluate_with(model, param, w.masked_fill(~m[name].to(w.device), 0.0),
                                  data, device))
    return out


@dataclass
class SparsityScan:
    """Each layer's loss (made non-decreasing) at each sparsity it was scanned at, the first
    being its sparsity as it is; and its weight count."""
    losses: dict
    sparsities: dict
    sizes: dict


def scan_layers(names: list[str], measure, results: dict, save=None, where=None):
    """Each layer of ``names`` with its ``measure(name)``, as ``(name, result)``: taken from
    ``results`` where it is there (the layers a stopped scan measured, from its checkpoint),
    else measured and added to ``results``. The loop of every per-layer scan (this module's,
    and deepcomp.analysis.sensitivity's); a scan of a deep network takes up to an hour, so with
    ``save`` given, ``save(results)`` is called after each layer measured and a stop signal
    takes effect there (deepcomp.resume; :class:`resume.Stopped` says ``where(results)``)."""
    with _deferred_signals(save):
        for n in names:
            if n not in results:
                results[n] = measure(n)
                if save is not None:
                    rs.save_then_check(save, results, where(results))
            yield n, results[n]


def _layers_done(results: dict) -> str:
    return f"during a scan, {len(results)} layers done"


def scan_sparsity(model: nn.Module, data: Dataset, names: list[str], masks: dict | None = None,
                  min_keep: float = 0.01, device="auto", log=print, done: dict | None = None,
                  save=None) -> SparsityScan:
    """Each layer of ``names`` alone pruned by magnitude to each of :data:`SPARSITY_GRID` (up to
    ``1 - min_keep``), its loss on ``data`` (use :func:`sample_split`). Already-pruned weights
    (``masks``) stay pruned. ``done``: the curves of layers scanned before (a resumed scan);
    ``save(curves)`` is called after each layer."""
    masks = masks or {}
    params = dict(model.named_parameters())
    grids = {}
    for n in names:
        now = sparsity_of(masks, [n]) if n in masks else 0.0
        grids[n] = [now] + [s for s in SPARSITY_GRID if now < s <= 1 - min_keep]
    base = []               # the loss as it is, measured once, before the first layer's
    bar = Progress(True, len(names), "sensitivity scan", tty_only=True)

    def measure(n):
        bar.update(names.index(n), lambda: n.removesuffix(".weight"))
        if not base:
            base.append(evaluate(model, data, device, progress=False)["loss"])
        return [float(v) for v in [base[0]] + [m["loss"] for m in prune_one_layer(
            model, n, grids[n][1:], data, device, masks)]]
    scan = SparsityScan({}, {}, {})
    for n, curve in scan_layers(names, measure, dict(done or {}), save, _layers_done):
        scan.losses[n], scan.sparsities[n] = _non_decreasing(curve), grids[n]
        scan.sizes[n] = params[n].numel()
        bar.close()
        log(f"  {n:32s} loss " + " ".join(f"{v:.3f}" for v in curve))
    return scan


def _deferred_signals(save):
    """A resumable scan (``save`` given) takes a stop signal at its next layer, as training
    takes it at its next step; otherwise a signal stops it at once."""
    return rs.training() if save is not None else nullcontext()


def allocate_from_scan(scan: SparsityScan, target: float) -> dict[str, float]:
    """Per-layer sparsities whose overall sparsity is ``target``, with the least loss by the
    marginal-cost rule; the last step taken is interpolated, so the target is met exactly."""
    levels, n_all = scan.sparsities, scan.sizes
    gains = {n: [s * n_all[n] for s in levels[n]] for n in levels}
    need = target * sum(n_all.values()) - sum(g[0] for g in gains.values())
    if need <= 0:
        return {n: levels[n][0] for n in levels}
    level, partial = _greedy(scan.losses, gains, need)
    out = {n: levels[n][level[n]] for n in levels}
    if partial:
        n, frac = partial
        lo, hi = levels[n][level[n]], levels[n][level[n] + 1]
        out[n] = lo + frac * (hi - lo)
    return out


def allocate_sparsity(model: nn.Module, data: Dataset, names: list[str], target: float,
                      masks: dict | None = None, min_keep: float = 0.01, device="auto",
                      log=print, done: dict | None = None, save=None) -> dict[str, float]:
    """:func:`scan_sparsity` (resumable: ``done``, ``save``), then :func:`allocate_from_scan`
    for ``target``."""
    return allocate_from_scan(scan_sparsity(model, data, names, masks, min_keep, device, log,
                                            done, save), target)


def allocate_bits(model: nn.Module, data: Dataset, kept: dict[str, torch.Tensor], target: float,
                  quantizer, device="auto", log=print, done: dict | None = None,
                  save=None) -> dict[str, int]:
    """Bits per layer (``kept``: name -> bool mask of the weights that are stored) whose mean
    over the kept weights is at most ``target``, from each layer's loss on ``data`` as it alone
    is quantized to each bit width; ``quantizer(values, bits)`` returns the quantized values.
    Resumable as :func:`scan_sparsity` (``done``, ``save``)."""
    if not AUTO_MIN_BITS <= target <= AUTO_MAX_BITS:
        raise UsageError(f"--bits auto: the mean must be in [{AUTO_MIN_BITS}, {AUTO_MAX_BITS}], "
                         f"got {target}")
    top = min(AUTO_MAX_BITS, math.ceil(target) + 2)      # more is never chosen at this mean
    params = dict(model.named_parameters())
    costs, gains = _bit_curves(model, data, kept, quantizer, device, log, done, save, params,
                               top)
    need = (top - target) * sum(int(k.sum()) for k in kept.values())
    if need <= 0:
        return {n: top for n in kept}
    level, partial = _greedy(costs, gains, need)
    if partial:                 # whole bits only: take the crossing step, the mean goes under
        level[partial[0]] += 1
    return {n: top - level[n] for n in kept}


def _bit_curves(model, data, kept, quantizer, device, log, done, save, params, top):
    """Each layer's loss at ``top`` down to AUTO_MIN_BITS bits, made non-decreasing, and what each
    level saves: (costs, gains) for :func:`_greedy`. ``done``: the curves of a stopped scan
    (one of another length, made for another ``top``, is measured again)."""
    costs, gains = {}, {}
    bar = Progress(True, len(kept), "bit-width scan", tty_only=True)
    names = list(kept)

    def measure(n):
        bar.update(names.index(n), lambda: n.removesuffix(".weight"))
        w = params[n].detach()
        on = kept[n].to(w.device)
        curve = []
        for b in range(top, AUTO_MIN_BITS - 1, -1):
            q = w.clone()
            q[on] = quantizer(w[on], b).to(w.device, w.dtype)
            curve.append(_evaluate_with(model, params[n], q, data, device)["loss"])
        return [float(v) for v in curve]
    results = {n: c for n, c in (done or {}).items() if len(c) == top - AUTO_MIN_BITS + 1}
    for n, curve in scan_layers(names, measure, results, save, _layers_done):
        count = int(kept[n].sum())
        costs[n], gains[n] = _non_decreasing(curve), [j * count for j in range(len(curve))]
        bar.close()
        log(f"  {n:32s} loss at {top}..{AUTO_MIN_BITS} bits " + " ".join(f"{v:.3f}" for v in curve))
    return costs, gains
