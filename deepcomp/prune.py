"""Stage 1: magnitude pruning with retraining (Han et al., NeurIPS 2015; Deep Compression, section 2).

Methods:
- ``std`` (default): a layer's threshold is a quality parameter ``s`` times the standard deviation
  of that layer's weights (Han et al. 2015, section 4). The standard deviation is taken once, of
  the weights as they enter the stage, so ``s`` maps to a fixed threshold per layer.
- ``global``: one magnitude threshold across all prunable weights, set to reach a target sparsity.
- ``layer``: every layer pruned to its own target sparsity.

Iterative pruning (``iterations=K``) prunes and retrains K times, raising the setting along the
cubic ramp of Zhu & Gupta (2017), ``target * (1 - (1 - k/K)**3)``, so most of the pruning happens
early while the network can still recover. Masks only ever shrink; surviving weights are never
re-initialised. One-shot pruning is ``K=1``.

The contract with the rest of the pipeline is a dict ``{param_name: bool mask}`` (True = kept).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from .data import Dataset
from .errors import UsageError
from .patterns import parse_setting
from .sizes import stage_sizes
from .sparse import is_prunable_weight
from .stagefile import StageFile, stage_record
from .train import TrainConfig, evaluate, fit

__all__ = ["PruneConfig", "prune", "prunable_names", "compute_masks", "apply_masks", "MaskKeeper",
           "sparsity_of"]


@dataclass
class PruneConfig:
    method: str = "std"               # std | global | layer
    # std: quality parameter s; threshold = s * std(layer weights) (Han 2015, section 4).
    # 0.75 prunes about half of a Gaussian layer in one shot; raise it, with retraining, for more.
    sensitivity: str = "0.75"
    # global: one float; layer: per-layer pattern string, e.g. '*=0.9,first=0.5' (fraction pruned)
    sparsity: str = "0.9"
    iterations: int = 1               # K prune+retrain rounds (Han 2015: iterative beat one-shot)
    retrain_epochs: int = 1           # per iteration; 0 = prune only
    # Han 2015 retrain LeNet at a tenth of the original learning rate; None = tenth of the rate
    # the input was trained with (from its history), else 0.01.
    retrain_lr: float | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01))

    def to_dict(self):
        return asdict(self)


def prunable_names(sf_or_model) -> list[str]:
    sd = sf_or_model.state_dict if isinstance(sf_or_model, StageFile) else sf_or_model.state_dict()
    return [k for k, v in sd.items() if is_prunable_weight(k, v)]


def sparsity_of(masks: dict, names=None) -> float:
    names = names if names is not None else list(masks)
    total = sum(masks[n].numel() for n in names)
    return 1 - sum(int(masks[n].sum()) for n in names) / max(total, 1)


def _ramp(k: int, K: int) -> float:
    return 1 - (1 - k / K) ** 3


def _keep_largest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A mask keeping all but the ``n_prune`` smallest scores (exact count, ties broken by order)."""
    flat = scores.reshape(-1)
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune > 0:
        mask[torch.argsort(flat, stable=True)[:n_prune]] = False
    return mask.reshape(scores.shape)


def compute_masks(weights: dict, method: str, setting, prev: dict | None = None,
                  stds: dict | None = None, scale: float = 1.0) -> tuple[dict, dict]:
    """Masks and per-layer thresholds for ``weights`` {name: tensor}.

    ``setting`` is the per-layer value dict (std: s, layer: sparsity) or a float (global).
    ``scale`` multiplies it (the iterative ramp). ``prev`` masks are kept pruned.
    """
    prev = prev or {}
    masks, thresholds = {}, {}
    absw = {n: w.detach().abs().float().cpu() for n, w in weights.items()}
    for n in absw:     # already-pruned weights stay pruned, whatever their value
        if n in prev:
            absw[n] = absw[n].masked_fill(~prev[n], 0.0)
    if method == "std":
        for n, a in absw.items():
            sd = stds[n] if stds and n in stds else weights[n].float().std()
            thr = float(setting[n]) * scale * float(sd)
            m = a > thr
            if n in prev:
                m &= prev[n]
            masks[n], thresholds[n] = m, thr
    elif method == "layer":
        for n, a in absw.items():
            target = float(setting[n]) * scale
            masks[n] = _keep_largest(a, round(target * a.numel()))
            thresholds[n] = float(a[~masks[n]].max()) if (~masks[n]).any() else 0.0
    elif method == "global":
        target = float(setting) * scale
        names = list(absw)
        allw = torch.cat([absw[n].reshape(-1) for n in names])
        keep = _keep_largest(allw, round(target * allw.numel()))
        thr = float(allw[~keep].max()) if (~keep).any() else 0.0
        start = 0
        for n in names:
            k = absw[n].numel()
            masks[n] = keep[start:start + k].reshape(absw[n].shape)
            thresholds[n] = thr
            start += k
    else:
        raise UsageError(f"unknown pruning method {method!r}; expected std, global or layer")
    return masks, thresholds


def apply_masks(model: nn.Module, masks: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, m in masks.items():
            p = params[n]
            p.masked_fill_(~m.to(p.device), 0.0)


class MaskKeeper:
    """Keeps pruned weights at exactly 0.0 through training.

    Masking gradients is not enough: SGD's momentum buffer still holds the history of a weight
    from before it was pruned, and weight decay and momentum would move it away from zero again.
    So the masks are re-applied to the weights after every optimizer step (``masked_fill``, which
    stays exact even if an update produced inf or NaN), and the gradients of pruned weights are
    zeroed so their momentum buffers decay to zero instead of pushing on them.
    """

    def __init__(self, model: nn.Module, masks: dict):
        params = dict(model.named_parameters())
        self.pairs = []
        self.hooks = []
        for n, m in masks.items():
            p = params[n]
            keep = m.to(p.device)
            self.pairs.append((p, ~keep))
            self.hooks.append(p.register_hook(lambda g, keep=keep: g * keep))
        self.__call__()

    @torch.no_grad()
    def __call__(self):
        for p, pruned in self.pairs:
            p.masked_fill_(pruned.to(p.device), 0.0)

    def remove(self):
        for h in self.hooks:
            h.remove()


def _default_retrain_lr(sf: StageFile) -> float:
    for rec in reversed(sf.history):
        lr = (rec.get("config", {}).get("train") or {}).get("lr")
        if lr:
            return lr / 10
    return 0.01


def prune(sf: StageFile, data: Dataset | None, config: PruneConfig | None = None,
          log=print) -> StageFile:
    """Prune (and retrain) the model of ``sf``; return a new StageFile with masks and a record."""
    cfg = config or PruneConfig()
    if cfg.iterations < 1:
        raise UsageError("iterations must be at least 1")
    if cfg.retrain_epochs < 0:
        raise UsageError("retrain epochs must be >= 0")
    t0 = time.perf_counter()
    model = sf.build_model()
    names = prunable_names(model)
    if cfg.method == "global":
        try:
            setting = float(cfg.sparsity)
        except ValueError:
            raise UsageError(f"global pruning takes one sparsity, got {cfg.sparsity!r}") from None
        values = {n: setting for n in names}
    else:
        text = cfg.sensitivity if cfg.method == "std" else cfg.sparsity
        spec = parse_setting(text, float, "sensitivity" if cfg.method == "std" else "sparsity")
        bad = spec.unused(names)
        if bad:
            raise UsageError(f"pattern {bad[0]!r} matches no prunable layer; layers are "
                             + ", ".join(n[:-7] for n in names[:8]) + (" ..." if len(names) > 8 else ""))
        setting = values = spec.resolve(names)
    for n, v in values.items():
        if cfg.method != "std" and not 0 <= v < 1:
            raise UsageError(f"sparsity for {n} must be in [0, 1), got {v}")
        if v < 0:
            raise UsageError(f"sensitivity for {n} must be >= 0, got {v}")
    tcfg = replace(cfg.train, epochs=cfg.retrain_epochs,
                   lr=cfg.retrain_lr if cfg.retrain_lr is not None else _default_retrain_lr(sf))
    params = dict(model.named_parameters())
    stds = {n: float(params[n].detach().float().std()) for n in names}
    masks = {n: m.clone() for n, m in sf.masks.items() if n in params}
    before = evaluate(model, data, tcfg.device) if data is not None else {}
    rounds = []
    for k in range(1, cfg.iterations + 1):
        scale = _ramp(k, cfg.iterations)
        weights = {n: params[n] for n in names}
        masks, thresholds = compute_masks(weights, cfg.method, setting, masks, stds, scale)
        apply_masks(model, masks)
        rnd = {"iteration": k, "scale": round(scale, 6), "sparsity": sparsity_of(masks, names)}
        if data is not None:
            rnd["pruned"] = evaluate(model, data, tcfg.device)
            log(f"iteration {k}/{cfg.iterations}: sparsity {100 * rnd['sparsity']:.2f}%, "
                f"top-1 after pruning {rnd['pruned']['top1']:.2f}%")
            if cfg.retrain_epochs > 0:
                keeper = MaskKeeper(model, masks)
                rnd["epochs"] = fit(model, data, tcfg, after_step=keeper,
                                    desc=f"retrain {k}/{cfg.iterations}")
                keeper.remove()
                rnd["retrained"] = evaluate(model, data, tcfg.device)
                log(f"iteration {k}/{cfg.iterations}: top-1 after retraining "
                    f"{rnd['retrained']['top1']:.2f}%")
        rounds.append(rnd)
    model.cpu()
    out = StageFile.from_model(model, sf.arch, sf.data, masks={n: m.cpu() for n, m in masks.items()},
                               quant={}, history=list(sf.history))
    layers = {n: {"threshold": thresholds[n], "sparsity": sparsity_of(masks, [n]),
                  "weights": masks[n].numel()} for n in names}
    last = rounds[-1]
    metrics = dict(last.get("retrained") or last.get("pruned") or {})
    if data is not None:
        metrics.update(before={k: before[k] for k in ("top1", "top5", "loss")},
                       pruned={k: last["pruned"][k] for k in ("top1", "top5", "loss")})
    config_dict = cfg.to_dict()
    config_dict["train"] = tcfg.to_dict()
    out.history.append(stage_record("pruned", config_dict, metrics, stage_sizes(out),
                                    time.perf_counter() - t0, layers=layers, iterations=rounds))
    return out
