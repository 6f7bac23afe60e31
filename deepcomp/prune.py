"""Stage 1: magnitude pruning with retraining (Han et al., NeurIPS 2015; Deep Compression, section 2).

Methods (each a mask function in deepcomp.masks' registry, ``METHODS``):
- ``std`` (default): a layer's threshold is a quality parameter ``s`` times the standard deviation
  of that layer's weights (Han et al. 2015, section 4). The standard deviation is taken once, of
  the weights as they enter the stage, so ``s`` maps to a fixed threshold per layer.
- ``global``: one magnitude threshold across all prunable weights, set to reach a target sparsity.
- ``layer``: every layer pruned to its own target sparsity.
- ``lamp``: one threshold across layers on the layer-adaptive magnitude score of Lee et al.
  (ICLR 2021): a weight's square over the sum of the squares of the weights of its layer that
  are at least as large. It sets per-layer sparsities without a sensitivity scan.
- ``sensitivity``: per-layer sparsities chosen from a scan of each layer's loss on a sample of
  training images, meeting one global target with the least loss (deepcomp.allocate).

``global``, ``lamp`` and ``sensitivity`` keep a floor in every layer (``min_keep``, the largest weights), so no
layer is ever pruned away whole (layer collapse cuts the network in two).

Iterative pruning (``iterations=K``) prunes and retrains K times, raising the setting along the
cubic ramp of Zhu & Gupta (2017), ``target * (1 - (1 - k/K)**3)``, so most of the pruning happens
early while the network can still recover. Masks only ever shrink; surviving weights are never
re-initialised. One-shot pruning is ``K=1``.

Gradual pruning (``gradual=True``, Zhu & Gupta 2017) runs the same cubic ramp *inside* one
retraining run: the masks are recomputed every ``mask_every`` steps over the first
``ramp_fraction`` of the steps, and the rest of the run retrains at the final masks.

Retraining can distil from the input model (``train.distill_weight``, see deepcomp.train), and
resumes inside a round from a checkpoint (deepcomp.resume).

The contract with the rest of the pipeline is a dict ``{param_name: bool mask}`` (True = kept).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from . import dist
from . import resume as rs
from .allocate import allocate_sparsity, sample_split
from .checks import RANGES, check_fields
from .data import Dataset
from .errors import UsageError
from .masks import METHODS, apply_masks, compute_masks, lamp_scores, pruning_method, sparsity_of
from .patterns import LayerSetting, as_setting, recorded, resolve_setting, setting_text
from .sizes import is_prunable_weight, stage_sizes
from .stagefile import StageFile, as_stage, stage_record
from .train import TrainConfig, evaluate, fit

__all__ = ["PruneConfig", "prune", "prunable_names", "compute_masks", "apply_masks", "MaskKeeper",
           "GradualPruner", "sparsity_of", "lamp_scores", "METHODS"]


@dataclass
class PruneConfig:
    method: str = "std"               # std | global | layer | lamp | sensitivity
    # std: quality parameter s; threshold = s * std(layer weights) (Han 2015, section 4).
    # 0.75 prunes about half of a Gaussian layer in one shot; raise it, with retraining, for more.
    sensitivity: float | LayerSetting = "0.75"
    # fraction pruned. global, lamp, sensitivity: one value; layer: per layer, a LayerSetting
    # (given as its text '*=0.9,first=0.5' or a {pattern: value} dict: deepcomp.patterns).
    # Both are parsed when set; the defaults are text, as the command line gives them, so
    # that records made with them read as before.
    sparsity: float | LayerSetting = "0.9"
    iterations: int = 1               # K prune+retrain rounds (Han 2015: iterative beat one-shot)
    # global, lamp: every layer keeps at least this share of its weights (at least one), so no
    # layer collapses; 1% is below what any layer of the paper's Table 4 keeps (AlexNet fc: 9%).
    min_keep: float = 0.01
    # sensitivity: training images the per-layer scan evaluates on (a seeded sample; at 1,000
    # the loss of a CIFAR ResNet is measured to about +-0.02, enough to rank layers)
    scan_images: int = 1000
    # Zhu & Gupta (2017): prune during one retraining run, raising sparsity along the cubic ramp
    gradual: bool = False
    mask_every: int = 100             # steps between mask updates (Zhu & Gupta: 100 to 1000)
    ramp_fraction: float = 0.75       # share of the retraining steps over which sparsity ramps up
    retrain_epochs: int = 1           # per iteration; 0 = prune only
    # masked: retrain every layer, pruned weights held at zero (Han et al. 2015); freeze: train
    # only what pruning did not touch (the pruned layers, weights and biases, stay as pruned;
    # the other layers, biases and batch norm train), the baseline scheme of pruning studies
    retrain: str = "masked"
    # prune the biases of convolutions and linear layers with their weights, by the same
    # method and setting (off: the paper prunes weights only; biases are 0.1% of LeNet-300-100)
    include_bias: bool = False
    # Han 2015 retrain LeNet at a tenth of the original learning rate; None = tenth of the rate
    # the input was trained with (from its history), else 0.01.
    retrain_lr: float | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01))

    def __setattr__(self, name, value):
        if name in ("sensitivity", "sparsity"):        # parsed once, whenever it is set
            value = as_setting(value, name)
        super().__setattr__(name, value)

    def to_dict(self):
        """Plain data; the settings as they were given (what records and identities hold)."""
        return {**asdict(self), "sensitivity": recorded(self.sensitivity),
                "sparsity": recorded(self.sparsity)}


def prunable_names(sf_or_model, include_bias: bool = False) -> list[str]:
    """Convolution and linear weights, in model order; a tied weight under its first name only;
    with ``include_bias``, each such layer's bias after its weight."""
    model = sf_or_model.build_model() if isinstance(sf_or_model, StageFile) else sf_or_model
    params = dict(model.named_parameters())
    out = []
    for k, v in params.items():
        if is_prunable_weight(k, v):
            out.append(k)
            bias = k[:-len("weight")] + "bias"
            if include_bias and bias in params and params[bias].is_floating_point():
                out.append(bias)
    return out


def _ramp(k: int, K: int) -> float:
    return 1 - (1 - k / K) ** 3


class MaskKeeper:
    """Keeps pruned weights at exactly 0.0 through training.

    Masking gradients is not enough: SGD's momentum buffer still holds the history of a weight
    from before it was pruned, and weight decay and momentum would move it away from zero again.
    So the masks are re-applied to the weights after every optimizer step (``masked_fill``, which
    stays exact even if an update produced inf or NaN), and the gradients of pruned weights are
    zeroed so their momentum buffers decay to zero instead of pushing on them.

    The masks follow their weights: training moves the model to its device after the keeper
    is made (and a resumed run restores masks on the CPU), so each mask is moved to its weight's
    device where they differ, before it is used.
    """

    def __init__(self, model: nn.Module, masks: dict):
        params = dict(model.named_parameters())
        self.params = {n: params[n] for n in masks}
        self.masks = {n: m.to(params[n].device).clone() for n, m in masks.items()}
        self.hooks = [p.register_hook(lambda g, n=n: g * self.mask(n, g.device))
                      for n, p in self.params.items()]
        self.__call__()

    def mask(self, name: str, device: torch.device) -> torch.Tensor:
        """The mask of ``name``, on ``device`` (moved there once, if it was elsewhere)."""
        m = self.masks[name]
        if m.device != device:
            self.masks[name] = m = m.to(device)
        return m

    @torch.no_grad()
    def __call__(self, step: int | None = None):
        for n, p in self.params.items():
            p.masked_fill_(~self.mask(n, p.device), 0.0)

    def cpu_masks(self) -> dict:
        return {n: m.cpu().clone() for n, m in self.masks.items()}

    def remove(self):
        for h in self.hooks:
            h.remove()


class GradualPruner(MaskKeeper):
    """Zhu & Gupta (2017): during training, the masks are recomputed every ``every`` steps up to
    step ``end``, the setting scaled by the cubic ramp ``1 - (1 - step/end)**3``; at ``end`` it
    is the full target, so the schedule hits it exactly. Masks only shrink."""

    def __init__(self, model: nn.Module, masks: dict, method: str, setting, stds: dict,
                 every: int, end: int, min_keep: float):
        super().__init__(model, masks)
        self.method, self.setting, self.stds = method, setting, stds
        self.every, self.end, self.min_keep = max(1, every), max(1, end), min_keep
        self.thresholds = {n: 0.0 for n in masks}

    def update(self, scale: float) -> None:
        weights = {n: p.detach() for n, p in self.params.items()}
        prev = {n: m.cpu() for n, m in self.masks.items()}
        new, self.thresholds = compute_masks(weights, self.method, self.setting, prev, self.stds,
                                             scale, self.min_keep)
        for n, m in new.items():
            self.masks[n].copy_(m)

    def __call__(self, step: int | None = None):
        if step is not None and step <= self.end and (step % self.every == 0 or step == self.end):
            self.update(_ramp(step, self.end))
        super().__call__()


def _default_retrain_lr(sf: StageFile) -> float:
    for rec in reversed(sf.history):
        lr = (rec.get("config", {}).get("train") or {}).get("lr")
        if lr:
            return lr / 10
    return 0.01


def _setting(cfg: PruneConfig, names: list[str]):
    """The per-layer values (dict) or the one global target (float) of ``cfg``, checked."""
    kind = pruning_method(cfg.method).setting
    if kind == "one":
        setting = cfg.sparsity.single() if isinstance(cfg.sparsity, LayerSetting) \
            else cfg.sparsity
        if setting is None:
            raise UsageError(f"--sparsity: {cfg.method} pruning takes one value, got "
                             f"{setting_text(cfg.sparsity)!r}")
        RANGES["sparsity"].check(setting, "--sparsity")
        return setting
    if kind == "std":
        return resolve_setting(cfg.sensitivity, names, "sensitivity", float,
                               RANGES["sensitivity"].ok, RANGES["sensitivity"].text("s"))
    return resolve_setting(cfg.sparsity, names, "sparsity", float, RANGES["sparsity"].ok,
                           RANGES["sparsity"].text("sparsity"))


def _allocated(model, names, masks, data, cfg: PruneConfig, target: float, log, checkpoint,
               saved: dict | None) -> dict:
    """:func:`_allocate`, resumable: the allocation a checkpoint holds, else the scan from the
    layers it holds on, saved after each layer (a scan of a deep network takes up to an hour)."""
    if saved is not None and "allocation" in saved:
        return saved["allocation"]
    save = (lambda curves: checkpoint.save({"scan": curves})) if checkpoint is not None else None
    alloc = _allocate(model, names, masks, data, cfg, target, log, (saved or {}).get("scan"),
                      save)
    if checkpoint is not None:
        checkpoint.save({"allocation": alloc})
    return alloc


def _allocate(model, names, masks, data, cfg: PruneConfig, target: float, log, done=None,
              save=None) -> dict:
    """Per-layer sparsities from a sensitivity scan (deepcomp.allocate) for one target."""
    log(f"sensitivity scan: {len(names)} layers, loss on {cfg.scan_images} training images"
        + (f" ({len(done)} done before)" if done else ""))
    alloc = allocate_sparsity(model, sample_split(data, cfg.scan_images, cfg.train.seed), names,
                              target, masks, cfg.min_keep, cfg.train.device, log, done, save)
    log("allocated: " + ", ".join(f"{n.removesuffix('.weight')} {100 * s:.1f}%"
                                  for n, s in alloc.items()))
    return alloc


def _scans(cfg: PruneConfig) -> bool:
    """Whether ``cfg``'s method allocates its sparsity per layer from a sensitivity scan."""
    return cfg.method in METHODS and METHODS[cfg.method].scan


def _check(cfg: PruneConfig, data) -> None:
    check_fields(cfg, ("iterations", "retrain_epochs", "min_keep", "mask_every",
                       "ramp_fraction", "scan_images"))
    if cfg.retrain_lr is not None:
        RANGES["lr"].check(cfg.retrain_lr, "retrain_lr")
    if cfg.retrain_epochs:
        replace(cfg.train, epochs=cfg.retrain_epochs).check()
    if _scans(cfg) and (data is None or cfg.scan_images < 1):
        raise UsageError(f"--method {cfg.method} measures every layer: it needs data and "
                         "scan images >= 1")
    if cfg.retrain not in ("masked", "freeze"):
        raise UsageError(f"retrain must be masked or freeze, got {cfg.retrain!r}")
    if cfg.gradual and cfg.retrain == "freeze":
        raise UsageError("gradual pruning prunes every layer while it retrains: it retrains "
                         "masked, not frozen")
    if cfg.gradual:
        if cfg.iterations != 1:
            raise UsageError("gradual pruning ramps inside one retraining run: give no iterations")
        if cfg.retrain_epochs < 1 or data is None:
            raise UsageError("gradual pruning prunes while retraining: it needs retraining "
                             "epochs and data")


def _steps_per_epoch(data: Dataset, batch_size: int) -> int:
    w = dist.world_size()
    per_rank = len(data.train_y) // w if w > 1 else len(data.train_y)
    return math.ceil(per_rank / max(1, batch_size // w))


def prune(sf: StageFile | nn.Module, data: Dataset | None, config: PruneConfig | None = None,
          log=print, teacher: nn.Module | None = None, checkpoint=None) -> StageFile:
    """Prune (and retrain) the model of ``sf``; return a new StageFile with masks and a record.

    ``teacher``: the model to distil from when ``config.train.distill_weight > 0`` (default: the
    input model). ``checkpoint``: a :class:`deepcomp.resume.Checkpoint`; retraining saves to it
    every epoch and resumes from it."""
    cfg = config or PruneConfig()
    _check(cfg, data)
    sf = as_stage(sf, data)
    t0 = time.perf_counter()
    model = sf.build_model()
    names = prunable_names(model, cfg.include_bias)
    setting = _setting(cfg, names)
    saved = checkpoint.load() if checkpoint is not None else None
    if _scans(cfg):
        setting = _allocated(model, names, sf.masks, data, cfg, setting, log, checkpoint, saved)
    if saved is not None and "round" not in saved:     # stopped before any retraining
        saved = None
    tcfg = replace(cfg.train, epochs=cfg.retrain_epochs,
                   lr=cfg.retrain_lr if cfg.retrain_lr is not None else _default_retrain_lr(sf))
    if tcfg.distill_weight > 0 and teacher is None:
        teacher = sf.build_model()
    params = dict(model.named_parameters())
    stds = {n: float(params[n].detach().float().std()) for n in names}
    masks = _input_masks(sf, cfg, params, names)
    if saved is not None:
        masks, rounds, before = saved["masks"], saved["rounds"], saved["before"]
        log(_resume_message(checkpoint, saved, cfg, tcfg))
    else:
        before = evaluate(model, data, tcfg.device) if data is not None else {}
        rounds = []
    thresholds = {n: 0.0 for n in names}
    for k in range(1, cfg.iterations + 1):
        if saved is not None and k < saved["round"]:
            continue
        resumed = saved is not None and k == saved["round"]
        if resumed:
            rnd = saved["current"]
        else:
            rnd = _prune_round(model, params, names, masks, cfg, setting, stds, k, data, tcfg,
                               log)
            masks, thresholds = rnd.pop("masks"), rnd.pop("thresholds")
        if data is not None and cfg.retrain_epochs > 0:
            keeper = _mask_keeper(model, masks, cfg, tcfg, setting, stds, data, log)
            extra = {"allocation": setting} if _scans(cfg) else {}
            save = (_round_saver(checkpoint, k, keeper, rounds, rnd, before, extra)
                    if checkpoint is not None else None)
            masks = _retrain_round(model, keeper, names, rnd, k, cfg, tcfg, data, teacher, log,
                                   saved["fit"] if resumed else None, save)
            if cfg.gradual:
                thresholds = keeper.thresholds
        rounds.append(rnd)
    if checkpoint is not None:          # wall time over every run of a resumed stage
        t0 -= checkpoint.before
    return _pruned_stage(sf, model, masks, thresholds, names, rounds, before, cfg, tcfg, data, t0)


def _input_masks(sf: StageFile, cfg: PruneConfig, params: dict, names: list[str]) -> dict:
    """The masks pruning starts from: copies of the input's. Gradual pruning gets one for every
    prunable layer (all kept where the input has none): its schedule updates them all from the
    first step."""
    masks = {n: m.clone() for n, m in sf.masks.items() if n in params}
    if cfg.gradual:
        masks = {n: masks.get(n, torch.ones_like(params[n], dtype=torch.bool)) for n in names}
    return masks


def _resume_message(checkpoint, saved: dict, cfg: PruneConfig, tcfg: TrainConfig) -> str:
    """The line that says where a resumed run goes on from."""
    fs = saved["fit"]
    return (f"resuming from {checkpoint.path}: round {saved['round']}/{cfg.iterations}, "
            f"epoch {fs['epoch'] + 1 if fs['epoch'] < tcfg.epochs else tcfg.epochs}/{tcfg.epochs}"
            + (f", step {fs['step']}" if fs["step"] else ""))


MIN_RAMP_UPDATES = 8     # a ramp with fewer mask updates than this is fitted to the run


def ramp_schedule(mask_every: int, end: int) -> tuple[int, str | None]:
    """The steps between mask updates for a ramp of ``end`` steps, and a line saying why, where
    ``mask_every`` would update fewer than twice before the ramp's end (a run shorter than the
    setting: the whole target would come at once at the end, with little left to recover):
    then the ramp gets :data:`MIN_RAMP_UPDATES` updates."""
    if 2 * mask_every <= end:
        return mask_every, None
    every = max(1, end // MIN_RAMP_UPDATES)
    return every, (f"--mask-every {mask_every} is more than half of the ramp's {end} steps: "
                   f"masks are updated every {every} steps instead")


def _mask_keeper(model, masks, cfg: PruneConfig, tcfg: TrainConfig, setting, stds,
                 data: Dataset, log=print) -> MaskKeeper:
    """What holds the masks during a round's retraining: a :class:`GradualPruner` that moves them
    along the ramp over the first ``ramp_fraction`` of the steps, or a :class:`MaskKeeper`."""
    if cfg.gradual:
        end = max(1, round(cfg.ramp_fraction * tcfg.epochs
                           * _steps_per_epoch(data, tcfg.batch_size)))
        every, why = ramp_schedule(cfg.mask_every, end)
        if why:
            log(why)
        return GradualPruner(model, masks, cfg.method, setting, stds, every, end, cfg.min_keep)
    return MaskKeeper(model, masks)


def _round_saver(checkpoint, k: int, keeper: MaskKeeper, rounds: list, rnd: dict, before: dict,
                 extra: dict):
    """The ``checkpoint`` callback of round ``k``'s retraining: the state of the whole stage,
    with the retraining's own (``fit``) state and ``extra`` (the sensitivity allocation)."""
    def save(fit_state):
        checkpoint.save({"round": k, "masks": keeper.cpu_masks(), "rounds": rounds,
                         "current": rnd, "before": before, "fit": fit_state, **extra})
    return save


def _retrain_round(model, keeper: MaskKeeper, names, rnd: dict, k: int, cfg: PruneConfig,
                   tcfg: TrainConfig, data: Dataset, teacher, log, fit_resume, save) -> dict:
    """Retrain round ``k`` with ``keeper`` holding the masks (resuming from ``fit_resume``, saving
    through ``save``); record the epochs, the sparsity (gradual) and the accuracy after it in
    ``rnd``; return the masks. A stop signal raises :class:`resume.Stopped` naming the round."""
    params = _trainable(model, keeper, cfg, rnd)
    try:
        rnd["epochs"] = fit(model, data, tcfg, after_step=keeper, teacher=teacher,
                            desc=f"retrain {k}/{cfg.iterations}", resume=fit_resume,
                            checkpoint=save, params=params) if params != [] else []
    except rs.Stopped as e:
        raise rs.Stopped(f"stopped at round {k}/{cfg.iterations}, {e}; run the same "
                         "command to resume", e.signum) from None
    keeper.remove()
    masks = keeper.cpu_masks()
    if cfg.gradual:
        rnd["sparsity"] = sparsity_of(masks, names)
    rnd["retrained"] = evaluate(model, data, tcfg.device)
    log(f"iteration {k}/{cfg.iterations}: top-1 after retraining "
        f"{rnd['retrained']['top1']:.2f}%" + (f" at sparsity {100 * rnd['sparsity']:.2f}%"
                                               if cfg.gradual else ""))
    return masks


def _trainable(model, keeper: MaskKeeper, cfg: PruneConfig, rnd: dict):
    """What retraining updates: every parameter (masked retraining: None), or with
    ``retrain="freeze"`` those of the layers pruning left whole (the pruned layers' weights and
    biases frozen, named in ``rnd["frozen"]``; an empty list: nothing to train)."""
    if cfg.retrain != "freeze":
        return None
    frozen = {n.rpartition(".")[0] for n, m in keeper.masks.items() if not bool(m.all())}
    rnd["frozen"] = sorted(frozen)
    return [p for n, p in model.named_parameters() if n.rpartition(".")[0] not in frozen]


def _pruned_stage(sf: StageFile, model, masks, thresholds, names, rounds, before,
                  cfg: PruneConfig, tcfg: TrainConfig, data: Dataset | None,
                  t0: float) -> StageFile:
    """The output StageFile: the pruned model, its masks, and the stage's record (per-layer
    thresholds and sparsities, every round, accuracy before, after pruning and after retraining)."""
    model.cpu()
    out = StageFile.from_model(model, sf.arch, sf.data, masks={n: m.cpu() for n, m in masks.items()},
                               quant={}, history=list(sf.history), template=sf.template)
    layers = {n: {"threshold": thresholds.get(n, 0.0), "sparsity": sparsity_of(masks, [n]),
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


def _prune_round(model, params, names, masks, cfg, setting, stds, k, data, tcfg, log) -> dict:
    """Round ``k``'s pruning step: new masks applied to ``model``. Gradual pruning starts from
    the input's masks and measures, for the record, what its target would do in one shot."""
    weights = {n: params[n] for n in names}
    scale = 1.0 if cfg.gradual else _ramp(k, cfg.iterations)
    new, thresholds = compute_masks(weights, cfg.method, setting, masks, stds, scale,
                                    cfg.min_keep)
    rnd = {"iteration": k, "scale": round(scale, 6), "sparsity": sparsity_of(new, names)}
    if cfg.gradual:
        rnd["schedule"] = "gradual"
        saved = {n: params[n].detach().clone() for n in names}
        apply_masks(model, new)
        rnd["pruned"] = evaluate(model, data, tcfg.device)
        with torch.no_grad():
            for n in names:
                params[n].copy_(saved[n])
        apply_masks(model, masks)
        log(f"gradual pruning to {100 * rnd['sparsity']:.2f}% sparsity (one-shot at the target: "
            f"top-1 {rnd['pruned']['top1']:.2f}%)")
        return {**rnd, "masks": {n: m.clone() for n, m in masks.items()}, "thresholds": thresholds}
    apply_masks(model, new)
    if data is not None:
        rnd["pruned"] = evaluate(model, data, tcfg.device)
        log(f"iteration {k}/{cfg.iterations}: sparsity {100 * rnd['sparsity']:.2f}%, "
            f"top-1 after pruning {rnd['pruned']['top1']:.2f}%")
    return {**rnd, "masks": new, "thresholds": thresholds}
