"""The whole pipeline in one call: prune, retrain, quantize, fine-tune, encode, decode, verify
(the encoder reads its file back and checks every tensor; compress checks the accuracy).

Each finished stage is written beside the output (``NAME.pruned.pt``, ``NAME.quantized.pt``),
so an interrupted run resumes from the last finished stage: a stage file is reused when it was
made by the same request (its record keeps a key of the options that produced it).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace

import torch

from .data import Dataset, load_data
from .encode import EncodeConfig, encode, resolve_index_bits, stored_stage
from .errors import DeepcompError, UsageError
from .loading import load_stage
from .models import create
from .prune import PruneConfig, _setting, prunable_names, prune
from .quantize import AutoBits, QuantizeConfig, layer_bits, quantize
from .resume import Checkpoint, default_settings, fingerprint, same_run
from .sizes import format_ratio, stage_sizes
from .stagefile import StageFile, arch_for, as_stage, save_stage, stage_record
from .train import TrainConfig, evaluate, fit

__all__ = ["CompressConfig", "compress", "stage_paths", "stage_checkpoint", "demo",
           "measured_stage", "lossy_metrics", "train_baseline"]


def train_baseline(model: str, data: Dataset, cfg: TrainConfig,
                   model_kwargs: dict | None = None) -> StageFile:
    """Train ``model`` (a registry name or a ``module:factory`` reference, built with
    ``model_kwargs``) from scratch on ``data``: the baseline stage file, whose record keeps the
    training config, the test metrics, the sizes and the wall time."""
    arch = arch_for(model, data.meta(), model_kwargs)
    torch.manual_seed(cfg.seed)
    net = create(arch["name"], **arch["kwargs"])
    t0 = time.perf_counter()
    epochs = fit(net, data, cfg)
    metrics = evaluate(net, data, cfg.device)
    sf = StageFile.from_model(net, arch, data.meta())
    sf.history.append(stage_record("baseline", {"train": cfg.to_dict()}, metrics,
                                   stage_sizes(sf), time.perf_counter() - t0, epochs=epochs))
    return sf


@dataclass
class CompressConfig:
    prune: PruneConfig = field(default_factory=PruneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)


def stage_paths(out: str) -> dict:
    stem = out[:-3] if out.endswith(".dc") else out
    return {"pruned": f"{stem}.pruned.pt", "quantized": f"{stem}.quantized.pt", "encoded": out}


def _identity(stage: str, cfg, upstream: StageFile, data: Dataset | None) -> dict:
    """What a stage's result depends on (:func:`deepcomp.resume.fingerprint`): its checkpoint
    holds it, and its finished stage file as JSON (``pipeline_key``)."""
    return fingerprint(stage, cfg.to_dict(), upstream, data.spec if data is not None else None)


def _same_key(old: str, new: dict, cfg, upstream: StageFile) -> bool:
    """Whether a finished stage's key ``old`` names the identity ``new``; settings added since
    it was made (absent from it) count as the same while they have their defaults."""
    try:
        old_obj = json.loads(old)
    except (TypeError, ValueError):
        return False
    if isinstance(old_obj, list) and len(old_obj) == 3:
        # files made before 2026-12-05 keyed a stage by [settings, the upstream's history, arch]
        basis = [[r.get("stage"), r.get("wall_time")] for r in upstream.history]
        if old_obj[1:] != json.loads(json.dumps([basis, upstream.arch], default=str)):
            return False
        old_obj = {**new, "config": old_obj[0]}
    return same_run(old_obj, new, cfg)


def _resume(path: str, identity: dict, cfg, upstream: StageFile, log,
            force: bool = False) -> StageFile | None:
    """The finished stage at ``path`` when the same request made it; None when there is none.
    A file there made by other settings (or not a stage file) is an error unless ``force``:
    compress never silently replaces what another run made."""
    if not os.path.exists(path):
        return None
    try:
        sf = load_stage(path, template=upstream.template)
    except DeepcompError:
        sf = None
    old = sf.history[-1].get("pipeline_key") if sf is not None and sf.history else None
    if old is not None and _same_key(old, identity, cfg, upstream):
        log(f"resuming: {path} is finished, skipping its stage")
        return sf
    if not force:
        raise UsageError(f"{path} exists and was not made by these settings: give --force to "
                         "replace it, or another output name")
    return None


def _preflight(sf: StageFile, cfg: "CompressConfig") -> None:
    """Every per-layer setting and option checked against the model before any stage runs:
    a pattern that matches no layer, or --fold-bn without batch norm, fails now, not after
    minutes of retraining."""
    model = sf.build_model()
    names = prunable_names(model)
    _setting(cfg.prune, names)
    if not isinstance(cfg.quantize.bits, AutoBits):
        layer_bits(sf.state_dict, cfg.quantize.bits, sf.aliases())
    if cfg.encode.index_bits:
        resolve_index_bits(replace(sf, masks=dict.fromkeys(names)), cfg.encode.index_bits)
    if cfg.encode.fold_batchnorm and not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise UsageError("fold_batchnorm (--fold-bn): the model has no batch norm to fold")


def stage_checkpoint(out: str, stage: str, config, upstream: StageFile, data: Dataset | None,
                     restart: bool = False, log=print, identity: dict | None = None):
    """The resumable checkpoint of a stage that writes ``out``: ``OUT.ckpt`` (deepcomp.resume);
    ``identity``: the stage's, where the caller has it already (its input digested once)."""
    return Checkpoint(f"{out}.ckpt", identity or _identity(stage, config, upstream, data),
                      restart=restart, log=log, defaults={"config": default_settings(config)})


def compress(sf: StageFile | torch.nn.Module, data: Dataset, out: str, config: CompressConfig | None = None,
             log=print, restart: bool = False, force: bool = False) -> list[str]:
    """Run every stage on ``sf`` and write ``out`` (.dc) and the stage files beside it.
    Returns the paths written, oldest stage first. Finished stages are reused; a stage stopped
    while training resumes from its checkpoint (``restart=True`` discards checkpoints). Stage
    files there that other settings made are an error unless ``force`` (then redone).
    With distillation on, both stages distil from the input model ``sf``."""
    cfg = config or CompressConfig()
    sf = as_stage(sf, data)
    paths = stage_paths(out)
    _preflight(sf, cfg)
    distill = cfg.prune.train.distill_weight > 0 or cfg.quantize.finetune.distill_weight > 0
    teacher = sf.build_model() if distill else None

    ident = _identity("prune", cfg.prune, sf, data)
    pruned = _resume(paths["pruned"], ident, cfg.prune, sf, log, force)
    if pruned is None:
        log("== prune")
        ckpt = stage_checkpoint(paths["pruned"], "prune", cfg.prune, sf, data, restart, log,
                                ident)
        pruned = prune(sf, data, cfg.prune, log=log, teacher=teacher, checkpoint=ckpt)
        pruned.history[-1]["pipeline_key"] = json.dumps(ident, sort_keys=True)
        save_stage(paths["pruned"], pruned)
        ckpt.remove()

    ident = _identity("quantize", cfg.quantize, pruned, data)
    quantized = _resume(paths["quantized"], ident, cfg.quantize, pruned, log, force)
    if quantized is None and os.path.exists(out) and not force:
        raise UsageError(f"{out} exists and was not made by these settings: give --force to "
                         "replace it, or another output name")
    if quantized is None:
        log("== quantize")
        ckpt = stage_checkpoint(paths["quantized"], "quantize", cfg.quantize, pruned, data,
                                restart, log, ident)
        quantized = quantize(pruned, data, cfg.quantize, teacher=teacher, checkpoint=ckpt)
        quantized.history[-1]["pipeline_key"] = json.dumps(ident, sort_keys=True)
        save_stage(paths["quantized"], quantized)
        ckpt.remove()

    log("== encode")
    # What the file holds, lossy or not, made once, and its accuracy: the encoder checks that
    # the file decodes to exactly this stage, so this is the decoded model's accuracy too.
    stored, m = measured_stage(quantized, data, cfg.encode, cfg.prune.train.device)
    record = encode(quantized, out, cfg.encode, m if cfg.encode.lossy else None, stored)
    log("== decode and verify")
    expect = record["metrics"].get("top1")      # lossless: the quantized stage's, as recorded
    if expect is not None and m["top1"] != expect:
        raise DeepcompError(f"verification failed: decoded top-1 {m['top1']} != {expect}")
    log(f"decoded {out}: every tensor equal, top-1 {m['top1']:.2f}% "
        f"({record['sizes']['bytes']:,} bytes, {format_ratio(record['sizes']['ratio'])})")
    return [paths["pruned"], paths["quantized"], out]


def measured_stage(sf: StageFile, data: Dataset, config: EncodeConfig,
                   device: str = "auto") -> tuple[StageFile, dict]:
    """The stage as an encoding with ``config`` stores it (:func:`stored_stage`: batch norm
    folded, dense tensors rounded or shared) and its accuracy; give both to :func:`encode`
    (``metrics``, ``stored``), which then does not make the stage again."""
    stored = stored_stage(sf, config)
    return stored, evaluate(stored.build_model(), data, device)


def lossy_metrics(sf: StageFile, data: Dataset, config: EncodeConfig,
                  device: str = "auto") -> dict:
    """Accuracy of ``sf`` as a lossy encoding stores it (``--float16``, ``--fold-bn``)."""
    return measured_stage(sf, data, config, device)[1]


# --- the embedded demo -----------------------------------------------------------------------

def demo_config(seed: int = 0) -> CompressConfig:
    """Settings for LeNet-300-100 on the 8x8 digits, chosen to run in well under a minute."""
    quiet = dict(progress=False, seed=seed)
    return CompressConfig(
        prune=PruneConfig(method="std", sensitivity="*=1.2,last=0.6", iterations=3,
                          retrain_epochs=8, retrain_lr=0.01, train=TrainConfig(**quiet)),
        quantize=QuantizeConfig(finetune=TrainConfig(epochs=4, lr=1e-3, **quiet)),
    )


def demo(folder: str = "deepcomp-demo", log=print) -> list[str]:
    """Train LeNet-300-100 on scikit-learn's digits, compress it, and return the files written."""
    data = load_data("digits")
    log("== train lenet300 on digits (the baseline)")
    sf = train_baseline("lenet300", data, TrainConfig(epochs=30, lr=0.05, progress=False))
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, "lenet300-digits.pt")
    save_stage(base, sf)
    return [base] + compress(sf, data, os.path.join(folder, "lenet300-digits.dc"),
                             demo_config(), log=log)
