"""Target mode: the smallest ``.dc`` file within a top-1 drop, found within an epoch budget.

The search never looks at the test set while choosing. It holds out a seeded share of the
*training* images as a validation split (removed from training for the whole search), measures
the input model's validation top-1, and then:

1. **Pruning.** Raises the sparsity along ``sparsities`` (0.5, 0.7, 0.8, ...), one step at a
   time: each step prunes the previous step's model further (``deepcomp.prune``, one round,
   ``retrain_epochs`` of retraining; masks only shrink). It stops at the first step whose
   validation top-1 falls more than ``max_drop`` points below the input's, or when the next step
   would eat into the epochs kept for quantization (``finetune_epochs`` per entry of ``bits``).
2. **Quantization.** From the sparsest step within the drop, tries each of ``bits`` from many
   to few (``deepcomp.quantize`` with ``finetune_epochs`` of centroid fine-tuning), stopping at
   the first width outside the drop. If no width is within it, it steps back to the previous
   pruning step and tries again, as far as the budget goes.
3. **Choice.** Every candidate tried (the input itself, each pruning step, each quantization)
   is encoded (``deepcomp.encode``) and measured in bytes; the result is the smallest one whose
   validation drop is within ``max_drop``. The input always qualifies, so there is a result.

No step starts unless its epochs fit what is left of ``budget_epochs`` (every retraining and
fine-tuning epoch counts), so the budget is never exceeded. The test set is read only at the
end, after the choice: to score the chosen model (and the input, as the reference of the drop).

Every finished candidate is a stage file in the folder ``OUT.search/``, and a retraining in
progress checkpoints there every epoch (deepcomp.resume): a search stopped by SIGTERM or Ctrl-C
and run again goes on where it stopped and ends as a run that never stopped. The folder goes
when the search finishes (``keep_candidates`` keeps it). The chosen files are written beside
``out`` (``NAME.pruned.pt``, ``NAME.quantized.pt`` and ``out``), and their history carries a
``search`` record with every candidate, which ``deepcomp report`` shows.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from . import dist
from .data import Dataset
from .dc.write import pack
from .encode import EncodeConfig, encode, encode_tensors, stored_stage
from .errors import DeepcompError, UsageError
from .loading import load_stage
from .pipeline import lossy_metrics, stage_paths
from .prune import PruneConfig, _default_retrain_lr, prune, prunable_names, sparsity_of
from .quantize import QuantizeConfig, quantize
from .resume import Checkpoint, Stopped, fingerprint, same_run
from .sizes import format_ratio, stage_sizes
from .stagefile import StageFile, as_stage, save_stage, stage_record
from .train import TrainConfig, evaluate

__all__ = ["SearchConfig", "SearchResult", "search", "holdout"]


@dataclass
class SearchConfig:
    """Options of :func:`search`; what a result depends on, bar ``max_drop`` and ``budget_epochs``
    (finished candidates are reused across those two, see :func:`search`)."""
    # Points of validation top-1 the result may lose against the input (issue #11: 1.0).
    max_drop: float = 1.0
    # Every retraining and fine-tuning epoch counts; never exceeded. Issue #11's goal for
    # ResNet-20 on CIFAR-10: <= 40 epochs.
    budget_epochs: int = 40
    # Validation: a seeded share of the training images, out of training for the whole search.
    # 10% of CIFAR-10's 50,000 is 5,000 images, top-1 to about +-0.4 points (one standard error).
    val_fraction: float = 0.1
    val_seed: int = 0
    # Pruning steps: one threshold on LAMP scores (Lee et al. 2021) sets per-layer sparsities
    # without a scan; min_keep is the layer-collapse floor of PruneConfig.
    method: str = "lamp"
    min_keep: float = 0.01
    # Overall sparsities, in order; the steps shrink as they rise, like Zhu & Gupta's cubic ramp
    # (the last points cost the most accuracy). Han 2015 reach 92% on LeNet-300-100 (Table 1).
    sparsities: tuple = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97)
    retrain_epochs: int = 2           # per pruning step
    # None: a tenth of the rate the input was trained with (Han 2015), as deepcomp.prune does.
    retrain_lr: float | None = None
    # Bit widths tried, many to few: a --bits setting each ('4', '*=4,last=6', 'auto:3').
    # Deep Compression: 5 bits for fc layers lose nothing; 4 and 3 are where losses begin (Fig. 6).
    bits: tuple = ("5", "4", "3")
    finetune_epochs: int = 1          # per bit width tried
    finetune_lr: float = 1e-4         # QuantizeConfig's default (docs/QUANTIZE.md)
    # Batch size, momentum, weight decay, seed, device and distillation (distill_weight > 0:
    # from the input model) of retraining and fine-tuning; epochs and lr are set above.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01))
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    keep_candidates: bool = False     # keep OUT.search/ (every candidate's stage file)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sparsities"], d["bits"] = [float(s) for s in self.sparsities], [str(b) for b in self.bits]
        return d


@dataclass
class SearchResult:
    paths: list          # files written, oldest stage first; the last is ``out``
    chosen: dict         # the chosen candidate (an entry of ``candidates``)
    candidates: list     # every candidate, in the order tried: kind, sparsity, bits, val_top1,
                         # drop, within, bytes, epochs
    epochs_used: int     # retraining + fine-tuning epochs, <= budget_epochs
    input_val: dict      # validation metrics of the input (the reference of the drop)
    input_test: dict     # test metrics of the input, measured after the choice
    test: dict           # test metrics of the chosen model, measured after the choice


def holdout(data: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``data`` whose training split lacks a seeded ``fraction`` of its images and whose
    evaluation split *is* those images: what the search trains and measures on."""
    n = len(data.train_y)
    k = max(1, round(fraction * n))
    if not 0 < fraction < 1 or k >= n:
        raise UsageError(f"validation fraction must leave images on both sides, got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, rest = perm[:k].sort().values, perm[k:].sort().values
    return replace(data, spec=f"{data.spec}[val {fraction:g} seed {seed}]",
                   train_x=data.train_x[rest], train_y=data.train_y[rest],
                   test_x=data.train_x[val], test_y=data.train_y[val])


def _check(cfg: SearchConfig) -> None:
    if cfg.budget_epochs < 0:
        raise UsageError(f"budget epochs must be >= 0, got {cfg.budget_epochs}")
    if cfg.max_drop < 0:
        raise UsageError(f"max drop must be >= 0 points, got {cfg.max_drop}")
    if cfg.retrain_epochs < 0 or cfg.finetune_epochs < 0:
        raise UsageError("retrain and fine-tune epochs must be >= 0")
    s = [float(x) for x in cfg.sparsities]
    if any(not 0 < x < 1 for x in s) or s != sorted(set(s)):
        raise UsageError(f"sparsities must rise strictly within (0, 1), got {cfg.sparsities}")


def _name(sparsity: float | None, bits: str | None) -> str:
    """The candidate's file name in the work folder, e.g. ``p85.pt``, ``p85-b4.pt``."""
    p = f"p{100 * sparsity:g}" if sparsity is not None else "p0"
    b = "" if bits is None else "-b" + "".join(c if c.isalnum() or c == "." else "_" for c in bits)
    return p + b + ".pt"


class _Search:
    """The state of one search: the configs, the budget, the candidates and their files."""

    def __init__(self, sf: StageFile, data: Dataset, out: str, cfg: SearchConfig, log, restart):
        self.sf, self.data, self.cfg, self.log = sf, data, cfg, log
        self.split = holdout(data, cfg.val_fraction, cfg.val_seed)
        self.work = (out[:-3] if out.endswith(".dc") else out) + ".search"
        if restart and os.path.isdir(self.work):
            if dist.is_main():
                shutil.rmtree(self.work)
            dist.barrier()
            log(f"--restart: discarded {self.work}")
        self.restart = restart
        basis = {k: v for k, v in cfg.to_dict().items()
                 if k not in ("max_drop", "budget_epochs", "keep_candidates")}
        self.key = json.dumps(fingerprint("search", basis, sf, self.split.spec), sort_keys=True)
        lr = cfg.retrain_lr if cfg.retrain_lr is not None else _default_retrain_lr(sf)
        self.retrain = replace(cfg.train, lr=lr)
        self.finetune = replace(cfg.train, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr)
        self.teacher = sf.build_model() if cfg.train.distill_weight > 0 else None
        self.used = 0
        self.candidates = []
        self.models = {}                   # work-folder file name -> StageFile
        self.input_val = evaluate(sf.build_model(), self.split, cfg.train.device)

    # --- one candidate ------------------------------------------------------------------
    def _run(self, name: str, upstream: StageFile, make, epochs: int, what: str) -> StageFile:
        """The stage file ``name`` of the work folder: reused when a run of this search made it,
        else made by ``make(checkpoint)`` (which resumes a stopped retraining) and saved."""
        path = os.path.join(self.work, name)
        key = json.dumps([self.key, name])
        if os.path.exists(path):
            try:
                done = load_stage(path, template=self.sf.template)
            except DeepcompError:
                done = None
            if done is not None and done.history and \
                    self._same_key(done.history[-1].get("search_key"), key):
                self.log(f"{what}: reusing {path}")
                self.models[name] = done
                return done
        if dist.is_main():
            os.makedirs(self.work, exist_ok=True)
        dist.barrier()
        ckpt = Checkpoint(path + ".ckpt", fingerprint("search:" + name, {"key": key}, upstream,
                                                      self.split.spec),
                          restart=self.restart, log=self.log)
        try:
            made = make(ckpt)
        except Stopped as e:
            raise Stopped(f"search stopped in {what} ({e}); {self.used} of "
                          f"{self.cfg.budget_epochs} epochs spent", e.signum) from None
        made.history[-1]["search_key"] = key
        save_stage(path, made)
        ckpt.remove()
        self.models[name] = made
        return made

    def _same_key(self, old, new: str) -> bool:
        """Whether a candidate's recorded key is ``new``; settings added since it was made count
        as the same while at their defaults (deepcomp.resume)."""
        try:
            (old_fp, old_name), (new_fp, new_name) = json.loads(old), json.loads(new)
            old_fp, new_fp = json.loads(old_fp), json.loads(new_fp)
        except (TypeError, ValueError):
            return False
        return old_name == new_name and same_run(old_fp, new_fp, self.cfg)

    def _resuming(self, line: str) -> None:
        """deepcomp.prune's log, reduced to where it resumes (its rounds are the search's steps)."""
        if line.startswith("resuming"):
            self.log(line)

    def _record(self, kind: str, sf: StageFile, parent: float | None, bits: str | None,
                epochs: int) -> dict:
        """Measure a candidate: its validation top-1 (from its stage record, which deepcomp.prune
        and deepcomp.quantize measured on the validation split) and its encoded bytes."""
        self.used += epochs
        top1 = (sf.history[-1]["metrics"] if sf is not self.sf else self.input_val)["top1"]
        names = prunable_names(sf)
        masks = {n: sf.masks.get(n, sf.state_dict[n] != 0) for n in names}
        cand = {"kind": kind, "sparsity": round(sparsity_of(masks, names), 6), "target": parent,
                "bits": bits, "val_top1": top1,
                "drop": round(self.input_val["top1"] - top1, 4),
                "bytes": _bytes(sf, self.cfg.encode), "epochs": epochs, "used": self.used}
        cand["within"] = cand["drop"] <= self.cfg.max_drop
        self.candidates.append(cand)
        self.log(f"{kind:9s} sparsity {100 * cand['sparsity']:6.2f}%"
                 + (f", bits {bits}" if bits else "") + f": validation top-1 {top1:.2f}% "
                 f"({0.0 - cand['drop']:+.2f}), {cand['bytes']:,} bytes, "
                 f"{self.used}/{self.cfg.budget_epochs} epochs "
                 + ("within" if cand["within"] else "OUTSIDE the drop"))
        return cand

    def prune_step(self, upstream: StageFile, s: float) -> StageFile:
        pcfg = PruneConfig(method=self.cfg.method, sparsity=s, iterations=1,
                           retrain_epochs=self.cfg.retrain_epochs, retrain_lr=self.retrain.lr,
                           min_keep=self.cfg.min_keep, train=self.retrain)
        return self._run(_name(s, None), upstream,
                         lambda ck: prune(upstream, self.split, pcfg, log=self._resuming,
                                          teacher=self.teacher, checkpoint=ck),
                         self.cfg.retrain_epochs, f"pruning to {100 * s:g}%")

    def quant_step(self, upstream: StageFile, s: float | None, bits: str) -> StageFile:
        qcfg = QuantizeConfig(bits=bits, finetune=self.finetune, seed=self.cfg.train.seed)
        return self._run(_name(s, bits), upstream,
                         lambda ck: quantize(upstream, self.split, qcfg, teacher=self.teacher,
                                             checkpoint=ck),
                         self.cfg.finetune_epochs,
                         f"quantizing {100 * (s or 0):g}% to bits {bits}")


def _bytes(sf: StageFile, ecfg: EncodeConfig) -> int:
    """The encoded size of a candidate: its ``.dc`` file without the stage history, whose
    records differ between candidates only in bookkeeping (wall times, which would make the
    size depend on how fast a run went)."""
    return len(pack(sf.arch, sf.data, [], encode_tensors(stored_stage(sf, ecfg), ecfg)))


def _prune_phase(st: _Search, sf: StageFile, now: float, models: dict) -> list:
    """1. pruning: raise the sparsity while the drop allows and the budget keeps the reserve.
    Returns the models within the drop, ``[(target sparsity, model)]``, the input first."""
    cfg = st.cfg
    reserve = min(cfg.budget_epochs, cfg.finetune_epochs * len(cfg.bits))
    passing = [(None, sf)]                 # (target sparsity, model), within the drop
    for s in cfg.sparsities:
        if s <= now:
            continue
        if st.used + cfg.retrain_epochs > cfg.budget_epochs - reserve:
            st.log(f"pruning ends before {100 * s:g}%: the budget keeps {reserve} epochs for "
                   "quantization")
            break
        model = st.prune_step(passing[-1][1], s)
        cand = st._record("pruned", model, s, None, cfg.retrain_epochs)
        models[id(cand)] = model
        if not cand["within"]:
            break
        passing.append((s, model))
    return passing


def _quantize_phase(st: _Search, passing: list, models: dict) -> None:
    """2. quantization: bits from many to few on the sparsest model within the drop; if none
    is within it, the next sparsest, as far as the budget goes."""
    cfg = st.cfg
    for s, model in reversed(passing):
        found = False
        for bits in cfg.bits:
            if st.used + cfg.finetune_epochs > cfg.budget_epochs:
                break
            q = st.quant_step(model, s, str(bits))
            cand = st._record("quantized", q, s, str(bits), cfg.finetune_epochs)
            models[id(cand)] = q
            if not cand["within"]:
                break
            found = True
        if found or st.used + cfg.finetune_epochs > cfg.budget_epochs:
            break


def search(sf: StageFile | torch.nn.Module, data: Dataset, out: str,
           config: SearchConfig | None = None, log=print, restart: bool = False) -> SearchResult:
    """Find the smallest ``.dc`` file whose validation top-1 is within ``config.max_drop`` points
    of the input's, in at most ``config.budget_epochs`` epochs (the module docstring says how).
    Writes ``out`` and the chosen stage files beside it; returns a :class:`SearchResult`.

    Finished candidates are kept in ``OUT.search/`` until the search ends, and a stopped run
    resumes there (``restart=True`` discards them). They do not depend on ``max_drop`` or
    ``budget_epochs``, so a search that keeps them (``keep_candidates``) and is run again with
    another drop or budget reuses every candidate the two share."""
    cfg = config or SearchConfig()
    _check(cfg)
    sf = as_stage(sf, data)
    t0 = time.perf_counter()
    st = _Search(sf, data, out, cfg, log, restart)
    log(f"target mode: at most {cfg.max_drop:g} points below the input's validation top-1 "
        f"{st.input_val['top1']:.2f}% ({st.input_val['images']} held-out training images), "
        f"within {cfg.budget_epochs} epochs")
    models = {}                            # id(candidate) -> its StageFile
    first = st._record("input", sf, None, None, 0)
    models[id(first)] = sf
    passing = _prune_phase(st, sf, first["sparsity"], models)
    _quantize_phase(st, passing, models)

    # 3. the choice: the smallest file within the drop (the input always is)
    chosen = min((c for c in st.candidates if c["within"]), key=lambda c: c["bytes"])
    best = models[id(chosen)]
    for c in st.candidates:
        c["chosen"] = c is chosen
    log(f"chosen: {chosen['kind']} at sparsity {100 * chosen['sparsity']:.2f}%"
        + (f", bits {chosen['bits']}" if chosen["bits"] else "")
        + f", validation top-1 {chosen['val_top1']:.2f}% ({0.0 - chosen['drop']:+.2f}), "
          f"{st.used}/{cfg.budget_epochs} epochs")

    # the test set, once, now that the choice is made
    input_test = evaluate(sf.build_model(), data, cfg.train.device)
    test = evaluate(best.build_model(), data, cfg.train.device)
    paths = _write(sf, best, chosen, st, input_test, test, out, time.perf_counter() - t0, log)
    if not cfg.keep_candidates and dist.is_main() and os.path.isdir(st.work):
        shutil.rmtree(st.work)
    return SearchResult(paths, chosen, st.candidates, st.used, st.input_val, input_test, test)


def _write(sf, best, chosen, st: _Search, input_test, test, out, wall, log) -> list[str]:
    """The chosen model's stage files and ``.dc``. The records the search made carry validation
    metrics (``split``); a ``search`` record with every candidate and the test metrics ends the
    history, and the encoded record carries the test metrics."""
    cfg = st.cfg
    base = len(sf.history)
    ref = {k: st.input_val[k] for k in ("top1", "top5", "loss")}

    def marked(history):
        """The input's history, then the search's last pruning step and quantization (the
        search record lists every step), marked as measured on the validation split."""
        chain = [dict(r) for r in history[base:]]
        last = max((i for i, r in enumerate(chain) if r.get("stage") == "pruned"), default=-1)
        chain = [r for i, r in enumerate(chain) if r.get("stage") != "pruned" or i == last]
        for r in chain:
            r.pop("search_key", None)
            r["split"], r["validation_reference"] = "validation", ref
        out_h = list(history[:base]) + chain
        if not any(r.get("stage") == "baseline" for r in out_h[:base]):
            out_h.insert(0, stage_record("baseline", {}, input_test, stage_sizes(sf), 0.0,
                                         command="(input checkpoint)"))
        return out_h

    record = stage_record(
        "search", cfg.to_dict(), {**test, "before": {k: input_test[k] for k in ("top1", "top5", "loss")}},
        stage_sizes(best), wall, candidates=st.candidates, epochs_used=st.used,
        validation={"input": st.input_val, "chosen_top1": chosen["val_top1"],
                    "images": st.input_val["images"]})
    paths, files = stage_paths(out), []
    pruned = best if not best.quant else st.models.get(_name(chosen["target"], None))
    if pruned is not None and pruned is not sf:      # the pruning step the result came from
        save_stage(paths["pruned"], replace(pruned, history=marked(pruned.history)))
        files.append(paths["pruned"])
    final = replace(best, history=marked(best.history) + [record])
    if best.quant:
        save_stage(paths["quantized"], final)
        files.append(paths["quantized"])
    metrics = record["metrics"]
    if cfg.encode.lossy:                 # what the file holds, measured again on the test set
        metrics = lossy_metrics(final, st.data, cfg.encode, cfg.train.device)
    enc = encode(final, out, cfg.encode, metrics=metrics)
    files.append(out)
    log(f"wrote {out}: {enc['sizes']['bytes']:,} bytes ({format_ratio(enc['sizes']['ratio'])}), "
        f"test top-1 {test['top1']:.2f}% ({test['top1'] - input_test['top1']:+.2f} against "
        f"the input's {input_test['top1']:.2f}%)")
    return files
