"""Pruning analysis: per-layer sensitivity and accuracy-versus-sparsity sweeps.

Both return plain data (Distiller's convention); plots and CSV are made from it separately.
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import replace

from . import resume as rs
from .data import Dataset
from .errors import UsageError
from .allocate import (allocate_from_scan, prune_one_layer, sample_split, scan_layers,
                       scan_sparsity)
from .masks import apply_masks, compute_masks, pruning_method, sparsity_of
from .prune import MaskKeeper, PruneConfig, prunable_names
from .stagefile import StageFile
from .train import TrainConfig, evaluate, fit

__all__ = ["parse_range", "subset", "sensitivity", "sweep", "std_for_sparsity"]


def parse_range(text: str) -> list[float]:
    """``'0:0.95:0.05'`` (start:stop:step, stop included) or ``'0.5,0.8,0.9'``."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not (step > 0 and 0 <= start <= stop < 1):
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            if n > MAX_POINTS:
                raise UsageError(f"--sparsities {text!r}: {n:,} points, more than "
                                 f"{MAX_POINTS:,}")
            values = [round(start + i * step, 10) for i in range(n)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except (ValueError, OverflowError):
        raise UsageError(f"bad sparsity list {text!r}: use START:STOP:STEP or a,b,c") from None
    if not values or any(not 0 <= v < 1 for v in values) or len(values) > MAX_POINTS:
        raise UsageError(f"sparsities must be at most {MAX_POINTS:,} values in [0, 1): {text!r}")
    return values


MAX_POINTS = 1000          # sparsities one scan or sweep visits


def subset(data: Dataset, max_images: int | None) -> Dataset:
    """The same data set with the test split cut to its first ``max_images`` (for quick scans)."""
    if not max_images or max_images >= len(data.test_y):
        return data
    return replace(data, test_x=data.test_x[:max_images], test_y=data.test_y[:max_images])


def sensitivity(sf: StageFile, data: Dataset, sparsities: list[float], layers=None,
                device="auto", log=print, done: dict | None = None, save=None) -> dict:
    """Prune one layer at a time to each sparsity (no retraining) and evaluate.

    Returns ``{param: {sparsity: {"top1", "top5", "loss"}}}``. Resumable: ``done`` holds the
    layers measured before (that same dict), ``save(result)`` is called after each layer and
    a stop signal takes effect there (deepcomp.resume)."""
    model = sf.build_model()
    names = layers or prunable_names(model)
    result = dict(done or {})

    def measure(n):
        return {s: {k: m[k] for k in ("top1", "top5", "loss")}
                for s, m in zip(sparsities, prune_one_layer(model, n, sparsities, data, device))}
    for n, row in scan_layers(names, measure, result, save,
                              lambda r: f"after layer {len(r)}/{len(names)}"):
        log(f"{n:32s} " + " ".join(f"{row[s]['top1']:6.2f}" for s in sparsities))
    return result


def _resumable_loop(save):
    """Signals wait for the loop's next save where there is one (deepcomp.resume)."""
    return rs.training() if save is not None else nullcontext()


def std_for_sparsity(weights: dict, target: float) -> float:
    """The one quality parameter s whose thresholds s*std(layer) prune ``target`` of all weights."""
    stds = {n: float(w.float().std()) for n, w in weights.items()}
    lo, hi = 0.0, 1.0
    while _std_sparsity(weights, stds, hi) < target and hi < 1e6:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _std_sparsity(weights, stds, mid) < target else (lo, mid)
    return hi


def _std_sparsity(weights, stds, s):
    pruned = sum(int((w.abs() <= s * stds[n]).sum()) for n, w in weights.items())
    return pruned / sum(w.numel() for w in weights.values())


def sweep(sf: StageFile, data: Dataset, sparsities: list[float], methods: list[str],
          retrain: TrainConfig | None = None, device="auto", log=print,
          min_keep: float = PruneConfig.min_keep, done: list | None = None,
          save=None, scheme: str = "masked", include_bias: bool = False) -> list[dict]:
    """Accuracy against sparsity for several methods, one-shot, optionally with retraining.

    For ``std`` the single quality parameter s is found that reaches each overall sparsity, so all
    methods are compared at equal sparsity; ``sensitivity`` scans the layers once, on a sample of
    training images (deepcomp.allocate), and allocates each target from that scan. Returns rows
    of plain dicts. Resumable as :func:`sensitivity`: ``done`` holds the rows measured before,
    ``save(rows)`` is called after each point.
    """
    base = sf.build_model()
    names = prunable_names(base, include_bias)
    weights = {n: p.detach() for n, p in base.named_parameters() if n in names}
    for method in methods:
        pruning_method(method)          # a usage error for an unknown name, before any work
    rows, scan = list(done or []), None
    finished = {(r["method"], r["target"]) for r in rows}
    with _resumable_loop(save):
        for method in methods:
            for s in sparsities:
                if (method, s) in finished:
                    continue
                scan = _sweep_point(base, weights, names, method, s, data, retrain, device, log,
                                    min_keep, scan, rows, scheme)
                if save is not None:
                    rs.save_then_check(save, rows, f"after {len(rows)} of "
                                                   f"{len(methods) * len(sparsities)} points")
    return rows


def _setting_at(spec, weights: dict, names: list[str], s: float, scan):
    """The setting of the method ``spec`` (a :class:`deepcomp.masks.Method`) that prunes ``s``
    of all weights: for ``std`` the one s that does, for a scanned method the allocation of
    ``scan``, else ``s`` as one value or for every layer."""
    if spec.scan:
        return allocate_from_scan(scan, s)
    if spec.setting == "std":
        q = std_for_sparsity(weights, s) if s > 0 else 0.0
        return {n: q for n in names}
    return s if spec.setting == "one" else {n: s for n in names}


def _sweep_point(base, weights, names, method, s, data, retrain, device, log, min_keep, scan,
                 rows, scheme="masked"):
    """One point of :func:`sweep`: its row appended to ``rows``; returns the sensitivity scan
    (made on first use). ``scheme``: masked or freeze retraining (PruneConfig.retrain)."""
    t0 = time.perf_counter()
    model = copy.deepcopy(base)
    spec = pruning_method(method)
    if spec.scan:
        scan = scan or scan_sparsity(base, sample_split(data, PruneConfig.scan_images),
                                     names, min_keep=min_keep, device=device, log=log)
    masks, _ = compute_masks(weights, method, _setting_at(spec, weights, names, s, scan),
                             min_keep=min_keep)
    apply_masks(model, masks)
    m = evaluate(model, data, device)
    row = {"method": method, "target": s, "sparsity": round(sparsity_of(masks, names), 6),
           "top1": m["top1"], "top5": m["top5"], "loss": m["loss"]}
    if retrain is not None and retrain.epochs > 0:
        keeper = MaskKeeper(model, masks)
        frozen = {n.rpartition(".")[0] for n, m in masks.items() if not bool(m.all())} \
            if scheme == "freeze" else set()
        params = [p for n, p in model.named_parameters() if n.rpartition(".")[0] not in frozen]
        if params:
            fit(model, data, retrain, after_step=keeper, desc=f"{method} {s:.2f}",
                params=params)
        keeper.remove()
        r = evaluate(model, data, device)
        row.update(retrained_top1=r["top1"], retrained_top5=r["top5"],
                   retrained_loss=r["loss"])
    row["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"{method:6s} sparsity {100 * row['sparsity']:6.2f}%  top-1 {row['top1']:6.2f}%"
        + (f"  retrained {row['retrained_top1']:6.2f}%" if "retrained_top1" in row else ""))
    rows.append(row)
    return scan
