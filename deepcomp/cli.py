"""The ``deepcomp`` command: thin handlers that parse, call the library and print.

Exit codes: 0 success, 2 usage errors (bad flags, unknown model, bad spec), 1 runtime errors
(missing files, malformed checkpoints or .dc files). Errors are one line on stderr.

Every import is at the top: building the parser imports the stages anyway (``--help`` shows
their configs' defaults). The heavy optional imports stay deferred inside their modules
(matplotlib in deepcomp.plots, onnx and onnxruntime in deepcomp.export).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import sys
import time

from . import dist
from ._version import __version__
from .analysis import parse_range, sensitivity, subset, sweep
from .checks import RANGES as R, Range, Setting
from .data import AUGMENTS, DATA_HELP, load_data
from .encode import EncodeConfig, check_dense_bits, check_mantissa_bits, encode
from .errors import DeepcompError, UsageError
from .export import DEFAULT_OPSET, to_onnx
from .loading import decode, load_stage
from .masks import METHODS
from .models import list_models, model_info
from .pipeline import (CompressConfig, compress, demo, measured_stage, stage_checkpoint,
                       stage_paths, train_baseline)
from .plots import plot_sensitivity, plot_sweep
from .prune import PruneConfig, _default_retrain_lr, prune
from .quantize import QuantizeConfig, quantize
from .report import collapse_warnings, make_plots, read_inputs, report_text
from .resume import Checkpoint, Stopped, default_settings, fingerprint, handle_stop_signals
from .search import SearchConfig, search
from .sizes import format_ratio
from .stagefile import atomic_write, check_writable, recording_command, save_stage
from .train import TrainConfig, end_line, evaluate, resolve_device, resolve_precision

# --- shared options ------------------------------------------------------------------------


class _Help(argparse.HelpFormatter):
    """Every numeric option's help ends with its range (deepcomp.checks)."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action) or ""
        kind = action.type.range if isinstance(action.type, Setting) else action.type
        if isinstance(kind, Range):
            name = action.dest.removeprefix("retrain_").removeprefix("finetune_")
            text += f" [{kind.text(name)}]"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kw):
        kw.setdefault("allow_abbrev", False)    # an option is named in full or not at all
        kw.setdefault("formatter_class", _Help)
        super().__init__(*args, **kw)

    def error(self, message):           # one line, exit 2 (argparse prints usage + error)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def add_data_arg(p, required=False):
    p.add_argument("--data", required=required, metavar="SPEC",
                   help=f"data set: {DATA_HELP}" + ("" if required else
                                                     " (default: the one the file was made with)"))


MODEL_HELP = "a registry name (see `deepcomp models`) or your own model as package.module:factory"


def add_model_args(p, help, required=False):
    p.add_argument("--model", required=required, help=f"{help}: {MODEL_HELP}")
    p.add_argument("--model-kwargs", metavar="JSON", type=_json_object,
                   help="keyword arguments of the model's constructor, e.g. '{\"width\": 2}'")


def _json_object(text: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"num_classes\": 10}'")
    return obj


def add_input_args(p, help="stage file, or a checkpoint with --model"):
    """The input file, --model for foreign checkpoints, and --data."""
    p.add_argument("input", help=help)
    add_model_args(p, "architecture of a checkpoint that does not name one")
    add_data_arg(p)


def add_force_arg(p):
    p.add_argument("--force", action="store_true",
                   help="allow the output to overwrite an input file")


def add_device_arg(p):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute (default: cuda if present, else cpu)")


def add_prune_args(p):
    """The options of PruneConfig (``deepcomp prune`` and ``compress``)."""
    p.add_argument("--method", default="std",
                   choices=list(METHODS),
                   help="std: threshold = s x std of each layer (default); global: one threshold "
                        "for a target sparsity; layer: a target sparsity per layer; lamp: one "
                        "threshold on layer-adaptive scores (Lee et al. 2021); sensitivity: "
                        "per-layer sparsities from a scan of each layer, least loss for the "
                        "target")
    p.add_argument("--sensitivity", default="0.75", metavar="S|PAT=S,...",
                   type=Setting(R["sensitivity"]),
                   help="std method: quality parameter, one value or per layer with globs, "
                        "e.g. '*=1.2,first=0.5,last=0.8' (default: %(default)s)")
    p.add_argument("--sparsity", default="0.9", metavar="F|PAT=F,...",
                   type=Setting(R["sparsity"]),
                   help="global, lamp, sensitivity: fraction of all weights to prune; layer: "
                        "per-layer fractions, "
                        "e.g. '*=0.9,conv1=0.5' (default: %(default)s)")
    p.add_argument("--iterations", type=R["iterations"], default=1,
                   help="prune+retrain rounds, ramping up to the target (default: 1, one-shot)")
    add_retrain_args(p, 1, "retraining epochs per round (default: %(default)s)")
    d = PruneConfig()
    p.add_argument("--min-keep", type=R["min_keep"], default=d.min_keep,
                   help="global, lamp, sensitivity: every layer keeps at least this share of "
                        "its weights "
                        "(default: %(default)s)")
    p.add_argument("--gradual", action="store_true",
                   help="prune during retraining, along a cubic ramp (Zhu & Gupta 2017)")
    p.add_argument("--mask-every", type=R["mask_every"], default=d.mask_every,
                   help="--gradual: steps between mask updates (default: %(default)s)")
    add_scheme_arg(p)
    p.add_argument("--include-bias", action="store_true",
                   help="prune the biases of convolutions and linear layers with their weights, "
                        "by the same method and setting (default: weights only)")
    p.add_argument("--ramp-fraction", type=R["ramp_fraction"], default=d.ramp_fraction,
                   help="--gradual: share of the retraining over which sparsity ramps up "
                        "(default: %(default)s)")


def add_retrain_args(p, epochs: int, epochs_help: str):
    """--retrain-epochs (default ``epochs``) and --retrain-lr, of prune, compress and sweep."""
    p.add_argument("--retrain-epochs", type=R["retrain_epochs"], default=epochs,
                   help=epochs_help)
    p.add_argument("--retrain-lr", type=R["lr"], default=None,
                   help="retraining learning rate (default: a tenth of the training rate)")


def add_scheme_arg(p):
    p.add_argument("--retrain", default="masked", choices=["masked", "freeze"],
                   help="masked: retrain every layer, pruned weights held at zero (default); "
                        "freeze: train only the layers pruning left whole")


def add_quantize_args(p):
    """The codebook options of QuantizeConfig (``deepcomp quantize`` and ``compress``)."""
    p.add_argument("--bits", default=None, metavar="B|PAT=B,...|auto:MEAN",
                   type=Setting(R["bits"], auto=R["auto_bits"]),
                   help="bits per weight (2**bits shared values), one value or per layer with "
                        "globs, e.g. '*=5,conv*=8'; auto:4 chooses each layer's bits from a "
                        "sensitivity scan, 4 on average (default: the paper's 8 conv, 5 fc)")
    p.add_argument("--init", default="linear", choices=["linear", "density", "forgy"],
                   help="centroid initialisation (default: linear, the paper's best)")
    p.add_argument("--float32-codebooks", action="store_true",
                   help="keep float32 centroids (default: rounded to float16 numbers, which "
                        "the .dc file stores exactly in 2 bytes each)")


def add_encode_args(p):
    """The options of EncodeConfig (``deepcomp encode`` and ``compress``)."""
    p.add_argument("--index-bits", default=None, metavar="B|PAT=B,...",
                   type=Setting(R["bits"], words=("auto",)),
                   help="bits of a relative index, per layer with globs, e.g. '*=5,conv*=8' "
                        "(the paper's 5 fc, 8 conv); default, or 'auto': each layer's width "
                        "with the smallest gap stream, measured")
    p.add_argument("--float16", action="store_true",
                   help="store dense tensors (biases, batch norm) as float16: lossy, "
                        "re-evaluated on --data")
    p.add_argument("--fold-bn", action="store_true",
                   help="fold each batch norm's statistics into its scale and shift (mean 0, "
                        "variance 1: nearly free to store): the same outputs up to float32 "
                        "rounding, lossy, re-evaluated on --data")
    p.add_argument("--dense-bits", type=R["dense_bits"], default=0, metavar="B",
                   help="share the values of each bias and batch norm vector among at most "
                        "2**B float16 centroids by k-means, where that is smaller: lossy, "
                        "re-evaluated on --data (default 0: off)")
    p.add_argument("--mantissa-bits", type=R["mantissa_bits"], default=0, metavar="M",
                   help="round each bias and batch norm scale to M bits after its leading "
                        "one (float16 keeps 10), and each batch norm shift to its scale's "
                        "precision: a smaller dense block; lossy, re-evaluated on --data "
                        "(default 0: off; 5 with --fold-bn cost ResNet-20 nothing measurable)")
    p.add_argument("--strip", action="store_true",
                   help="leave the stage history out of the .dc file (the report then shows "
                        "the encoded stage alone)")
    p.add_argument("--graph", action="store_true",
                   help="record the network's computation so c/dcrun runs the file without "
                        "PyTorch (docs/FORMAT.md, Graph); a model with an operation the "
                        "runtime does not run is an error")


def add_train_args(p, prefix="", epochs=None, lr=None, help_epochs="training epochs",
                   skip_epochs_lr=False):
    """The options of TrainConfig, as ``--{prefix}epochs`` etc. Defaults None mean: the stage's."""
    d = TrainConfig()
    if not skip_epochs_lr:
        p.add_argument(f"--{prefix}epochs", type=R["epochs" if not prefix else "finetune_epochs"],
                       default=epochs if epochs is not None else d.epochs,
                       help=f"{help_epochs} (default: %(default)s)")
        p.add_argument(f"--{prefix}lr", type=R["lr"], default=lr,
                       help="peak learning rate" + (f" (default: {d.lr})" if not prefix else ""))
    p.add_argument("--batch-size", type=R["batch_size"], default=d.batch_size,
                   help="global batch size, split across torchrun ranks (default: %(default)s)")
    p.add_argument("--momentum", type=R["momentum"], default=d.momentum,
                   help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=R["weight_decay"], default=d.weight_decay,
                   help="L2 weight decay (default: %(default)s)")
    p.add_argument("--schedule", default=d.schedule, choices=["cosine", "step", "constant"],
                   help="learning-rate schedule; step: x0.1 at 50%% and 75%% (default: %(default)s)")
    p.add_argument("--warmup-epochs", type=R["warmup_epochs"], default=d.warmup_epochs,
                   help="linear warm-up from a tenth of the rate (default: %(default)s)")
    p.add_argument("--augment", default=d.augment, choices=["auto", *AUGMENTS],
                   help="augmentation of the training batches; shift: random translation by up "
                        "to 2 pixels; crop_flip: 4-pixel padded crop and horizontal flip; auto: "
                        "the data set's own (crop_flip for CIFAR-10, else none) "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=R["seed"], default=d.seed,
                   help="seed of the data order and of k-means (default: %(default)s)")
    p.add_argument("--compile", default=d.compile, choices=["auto", "on", "off"],
                   help="torch.compile the training step; auto: for runs of 2,000 steps or more "
                        "on one process (1.48x a step on ResNet-20, CPU) (default: %(default)s)")
    p.add_argument("--precision", default=d.precision, choices=["auto", "bf16", "fp32"],
                   help="training arithmetic: bf16 autocast or float32; auto: bf16 where the "
                        "device does it fast (CUDA, a CPU with AVX-512 BF16 or AMX), measured "
                        "1.9-2.6x a step on ResNet-20 (docs/PRUNING.md); evaluation is always "
                        "float32 (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_distill_args(p, teacher=True):
    """Knowledge distillation from the stage's input model (TrainConfig.distill_*)."""
    d = TrainConfig()
    p.add_argument("--distill", action="store_true",
                   help="retrain against the input model's outputs as well as the labels "
                        "(Hinton et al. 2015), with weight 0.9 unless --distill-weight says")
    p.add_argument("--distill-weight", type=R["distill_weight"], default=None,
                   help="weight of the distillation loss, 0..1 (default with --distill: 0.9)")
    p.add_argument("--distill-temperature", type=R["distill_temperature"],
                   default=d.distill_temperature,
                   help="softmax temperature of distillation (default: %(default)s)")
    if teacher:
        p.add_argument("--teacher", metavar="FILE",
                       help="distil from this stage file instead of the input")


def add_restart_arg(p):
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoint of an interrupted run instead of resuming it")


def train_config(a, prefix="", default_lr=None):
    """TrainConfig from the shared flags plus ``--{prefix}epochs`` and ``--{prefix}lr``."""
    lr = getattr(a, f"{prefix}lr".replace("-", "_"))
    return _shared_train(a, epochs=getattr(a, f"{prefix}epochs".replace("-", "_")),
                         lr=lr if lr is not None else (default_lr or TrainConfig.lr))


def load_input(a):
    """The input file (stage file, .dc or foreign checkpoint) and the data set to use with it."""
    data = load_data(a.data) if a.data else None
    sf = load_stage(a.input, model=getattr(a, "model", None),
                    data=data.meta() if data is not None else None,
                    model_kwargs=getattr(a, "model_kwargs", None))
    if data is None:
        if not sf.data.get("spec"):
            raise UsageError(f"{a.input} does not say which data it was made with: give --data SPEC")
        data = load_data(sf.data["spec"])
    _check_fit(sf, data)
    return sf, data


def _check_fit(sf, data):
    want = list(sf.data.get("input_size") or data.input_size)
    if list(data.input_size) != want:
        raise UsageError(f"data {data.spec!r} has inputs {list(data.input_size)}, the model "
                         f"was made for {want}")


def out_path(a):
    if not a.output:
        raise UsageError("give an output file with -o FILE")
    return a.output


def check_outputs(a, outputs: list[str]) -> None:
    """Before any work: every output can be written, and none is an input (unless --force)."""
    inputs = [p for p in [getattr(a, "input", None), getattr(a, "teacher", None),
                          *(getattr(a, "inputs", None) or [])] if p]
    for out in outputs:
        for inp in inputs:
            if os.path.exists(inp) and os.path.realpath(inp) == os.path.realpath(out) \
                    and not getattr(a, "force", False):
                raise UsageError(f"{out} is an input of this command: writing it would destroy "
                                 "the input; choose another output, or give --force")
        check_writable(out)


def main_print(*args, **kw):
    if dist.is_main():
        end_line()
        print(*args, **kw, flush=True)


# --- commands ------------------------------------------------------------------------------


def cmd_models(a):
    names = list_models(a.pattern)
    if not names:
        raise UsageError(f"no registered model matches {a.pattern!r}; `deepcomp models` lists "
                         "them all")
    for name in names:
        info = model_info(name)
        n = f"{info.num_params:,}" if info.num_params else "-"
        print(f"{name:24s} input {'x'.join(map(str, info.input_size)):10s} params {n}")


def cmd_train(a):
    data = load_data(a.data)
    out = out_path(a)
    check_outputs(a, [out])
    sf = train_baseline(a.model, data, train_config(a), a.model_kwargs)
    rec = sf.history[-1]
    metrics, wall = rec["metrics"], rec["wall_time"]
    save_stage(out, sf)
    main_print(f"{a.model} on {a.data}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%"
               f"  loss {metrics['loss']:.4f}  ({wall:.1f}s)  -> {out}")


def cmd_eval(a):
    sf, data = load_input(a)
    model = sf.build_model()
    m = evaluate(model, data, a.device)
    if a.json:
        main_print(json.dumps(m))
    else:
        main_print(f"{a.input} on {data.spec}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%"
                   f"  loss {m['loss']:.4f}  ({m['images']} images)")


def cmd_prune(a):
    sf, data = load_input(a)
    out = out_path(a)
    check_outputs(a, [out])
    cfg = prune_config(a)
    ckpt = stage_checkpoint(out, "prune", cfg, sf, data, a.restart, main_print)
    res = prune(sf, data, cfg, log=main_print, teacher=_teacher(a), checkpoint=ckpt)
    save_stage(out, res)
    ckpt.remove()
    rec = res.history[-1]
    m, z = rec["metrics"], rec["sizes"]
    retrained = f" -> {m['top1']:.2f}% (retrained)" if cfg.retrain_epochs else ""
    main_print(f"pruned {100 * (1 - z['nonzero_share']):.2f}% of {z['prunable']:,} weights: "
               f"top-1 {m['before']['top1']:.2f}% -> {m['pruned']['top1']:.2f}% (pruned)"
               f"{retrained}, {format_ratio(z['ratio'])} by the paper's count "
               f"({rec['wall_time']:.0f}s) -> {out}")


def cmd_quantize(a):
    sf, data = load_input(a)
    out = out_path(a)
    check_outputs(a, [out])
    cfg = quantize_config(a, train_config(a, "finetune-", QuantizeConfig().finetune.lr))
    ckpt = stage_checkpoint(out, "quantize", cfg, sf, data, a.restart, main_print)
    res = quantize(sf, data, cfg, teacher=_teacher(a), checkpoint=ckpt)
    save_stage(out, res)
    ckpt.remove()
    rec = res.history[-1]
    m, z = rec["metrics"], rec["sizes"]
    b, f = m["before_finetune"], m["after_finetune"]
    bits = sorted(set(rec["config"]["layer_bits"].values()))
    main_print(f"quantized {len(res.quant)} layers ({'/'.join(map(str, bits))} bits, "
               f"{cfg.init} init): top-1 {b['top1']:.2f}% -> {f['top1']:.2f}% after "
               f"{cfg.finetune.epochs} fine-tuning epoch(s), {z['bytes']:,} bytes, "
               f"{format_ratio(z['ratio'])} by the paper's count ({rec['wall_time']:.0f}s) -> {out}")


def cmd_encode(a):
    sf = load_stage(a.input, model=getattr(a, "model", None))
    out = out_path(a)
    check_outputs(a, [out])
    cfg = encode_config(a)
    metrics = stored = None
    if cfg.lossy:                    # measure the accuracy of what the file holds
        spec = a.data or sf.data.get("spec")
        if not spec:
            raise UsageError(f"{_lossy_flags(a)} changes the weights: give --data SPEC to "
                             "measure them")
        data = load_data(spec)
        _check_fit(sf, data)
        stored, metrics = measured_stage(sf, data, cfg, a.device)
    rec = encode(sf, out, cfg, metrics, stored)
    if metrics is not None and not a.json:
        before = (sf.history[-1].get("metrics") or {}).get("top1") if sf.history else None
        print(f"{cfg.lossy} (lossy), measured again on {data.spec}: top-1 "
              f"{metrics['top1']:.2f}%" + (f" (stage before: {before:.2f}%)"
                                           if before is not None else ""))
    if a.json:
        print(json.dumps(rec["sizes"], sort_keys=True))
        return
    z = rec["sizes"]
    print(f"{a.input} -> {out}: {z['bytes']:,} bytes, {_compared(z['ratio'])} "
          f"{z['dense_bytes']:,} dense bytes" + (f" (lossy: {cfg.lossy})" if cfg.lossy else ""))
    print("  " + "  ".join(f"{k} {v:,}" for k, v in z["breakdown"].items()))
    print(f"  {'tensor':28s} {'kind':15s} {'order':5s} {'entries':>8s} {'fillers':>7s} "
          f"{'w bits':>6s} {'i bits':>6s} {'eff w':>5s} {'eff i':>5s} {'bytes':>8s}")
    for n, t in z["tensors"].items():
        def pct(x):
            return f"{100 * x:4.1f}%" if x is not None else "    -"
        print(f"  {n:28s} {t['kind']:15s} {t['order']:5s} {t['entries']:8d} {t['fillers']:7d} "
              f"{t['weight_bits']:6.2f} {t['index_bits']:6.2f} {pct(t['efficiency_weights'])} "
              f"{pct(t['efficiency_gaps'])} {t['bytes']:8,d}")


def _compared(ratio: float) -> str:
    return f"{ratio:.1f}x smaller than" if ratio >= 1 else f"{1 / ratio:.3f}x LARGER than the"


def cmd_decode(a):
    out = out_path(a)
    check_outputs(a, [out])
    sd = decode(a.input, out, a.model)
    how = ("safetensors: safetensors.torch.load_file" if out.endswith(".safetensors") else
           "a plain state dict; torch.load(..., weights_only=True)")
    print(f"{a.input} -> {out}: {len(sd)} tensors ({how})")


def cmd_report(a):
    if a.output:
        check_outputs(a, [a.output])
    inp = read_inputs(a.inputs, a.model)
    text = report_text(inp, a.format, a.layers)
    if a.format in ("csv", "json"):         # machine formats stay parseable: warnings to stderr
        for w in collapse_warnings(inp.last):
            sys.stderr.write(w + "\n")
    if a.output:
        atomic_write(a.output, lambda f: f.write(text.encode()))
    else:
        sys.stdout.write(text)
    if a.plot:
        for path in make_plots(inp, a.plot, a.layer):
            sys.stderr.write(f"wrote {path}\n")


def cmd_compress(a):
    sf, data = load_input(a)
    out = out_path(a)
    if not out.endswith(".dc"):
        raise UsageError(f"the output of compress is a .dc file, got {out!r}")
    check_outputs(a, list(stage_paths(out).values()))
    if a.max_drop is not None:
        return _target_mode(a, sf, data, out)
    cfg = CompressConfig(
        prune=prune_config(a),
        quantize=quantize_config(a, _shared_train(a, epochs=a.finetune_epochs, lr=a.finetune_lr)),
        encode=encode_config(a))
    paths = compress(sf, data, out, cfg, log=main_print, restart=a.restart, force=a.force)
    if dist.is_main():
        print()
        print(report_text(read_inputs([a.input] + paths if not a.model else paths, a.model),
                          "text", True))


def _target_mode(a, sf, data, out):
    """``compress --max-drop``: deepcomp.search, with the flags that apply to it."""
    d = SearchConfig()
    given = a.given
    cfg = SearchConfig(
        max_drop=a.max_drop, budget_epochs=a.budget_epochs,
        method=a.method if "method" in given else d.method,
        min_keep=a.min_keep,
        retrain_epochs=a.retrain_epochs if "retrain_epochs" in given else d.retrain_epochs,
        retrain_lr=a.retrain_lr,
        finetune_epochs=a.finetune_epochs if "finetune_epochs" in given else d.finetune_epochs,
        finetune_lr=a.finetune_lr, train=_shared_train(a), encode=encode_config(a))
    if METHODS[cfg.method].setting != "one":
        raise UsageError(f"--method {cfg.method} does not apply with --max-drop: the search "
                         "sets sparsity targets (global, lamp or sensitivity)")
    paths = search(sf, data, out, cfg, log=main_print, restart=a.restart).paths
    if dist.is_main():
        print()
        print(report_text(read_inputs(paths, a.model), "text", True))


def _distill_weight(a) -> float:
    w = getattr(a, "distill_weight", None)
    if w is None:
        return 0.9 if getattr(a, "distill", False) else 0.0
    if not 0 <= w <= 1:
        raise UsageError(f"--distill-weight must be in [0, 1], got {w}")
    return w


def _shared_train(a, **over):
    resolve_precision(a.precision, resolve_device(a.device))     # bf16 where it is slow: stop now
    extra = {}
    if hasattr(a, "distill_temperature"):
        if a.distill_temperature <= 0:
            raise UsageError(f"--distill-temperature must be > 0, got {a.distill_temperature}")
        extra = dict(distill_weight=_distill_weight(a), distill_temperature=a.distill_temperature)
    return TrainConfig(batch_size=a.batch_size, momentum=a.momentum, weight_decay=a.weight_decay,
                       schedule=a.schedule, warmup_epochs=a.warmup_epochs, seed=a.seed,
                       compile=a.compile, precision=a.precision, augment=a.augment,
                       device=a.device, progress=not a.no_progress, **extra, **over)


def _teacher(a):
    """The model that --teacher names (None: the stage distils from its input)."""
    if not getattr(a, "teacher", None):
        return None
    return load_stage(a.teacher).build_model()


def prune_config(a):
    """PruneConfig from add_prune_args' flags; prune() sets the retraining epochs and rate."""
    return PruneConfig(method=a.method, sensitivity=a.sensitivity, sparsity=a.sparsity,
                       iterations=a.iterations, retrain_epochs=a.retrain_epochs,
                       retrain_lr=a.retrain_lr, min_keep=a.min_keep, gradual=a.gradual,
                       mask_every=a.mask_every, ramp_fraction=a.ramp_fraction,
                       retrain=a.retrain, include_bias=a.include_bias,
                       train=_shared_train(a))


def quantize_config(a, finetune):
    return QuantizeConfig(bits=a.bits, init=a.init, seed=a.seed, finetune=finetune,
                          float16_codebooks=not a.float32_codebooks)


def encode_config(a):
    check_dense_bits(a.dense_bits)        # before any stage of compress runs
    check_mantissa_bits(a.mantissa_bits)
    return EncodeConfig(index_bits=a.index_bits or "", float16=a.float16,
                        fold_batchnorm=a.fold_bn, dense_bits=a.dense_bits,
                        mantissa_bits=a.mantissa_bits, strip=a.strip, graph=a.graph)


def _lossy_flags(a) -> str:
    return " and ".join(f for f, on in (("--fold-bn", a.fold_bn), ("--float16", a.float16),
                                        ("--dense-bits", a.dense_bits),
                                        ("--mantissa-bits", a.mantissa_bits)) if on)


def cmd_demo(a):
    t0 = time.perf_counter()
    paths = demo(a.output, log=print)
    print()
    print(report_text(read_inputs(paths), "text", True))
    print(f"demo finished in {time.perf_counter() - t0:.0f}s; files in {a.output}/ "
          f"(try: deepcomp eval {paths[-1]})")


def _write_csv(path, rows):
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def cmd_sensitivity(a):
    grid = parse_range(a.sparsities)
    sf, data = load_input(a)
    check_outputs(a, [a.output + ".csv", a.output + ".png"])
    data = subset(data, a.max_images)
    print(f"{'layer':32s} " + " ".join(f"{100 * s:5.0f}%" for s in grid))
    ckpt = _analysis_checkpoint(a, "sensitivity", {"sparsities": grid,
                                                   "max_images": a.max_images}, sf, data)
    res = sensitivity(sf, data, grid, device=a.device, done=ckpt.load(), save=ckpt.save)
    _write_csv(a.output + ".csv", [{"layer": n, "sparsity": s, **m}
                                   for n, row in res.items() for s, m in row.items()])
    plot_sensitivity(res, a.output + ".png", f"Sensitivity of {sf.arch['name']} on "
                     f"{data.spec.partition(':')[0]} ({len(data.test_y)} test images, no retraining)")
    ckpt.remove()
    print(f"wrote {a.output}.csv and {a.output}.png")


def _analysis_checkpoint(a, what: str, settings: dict, sf, data):
    """``OUTPUT.ckpt``: an analysis of many points saves each one there and resumes after the
    last one saved (deepcomp.resume); --restart discards it."""
    return Checkpoint(a.output + ".ckpt", fingerprint(what, settings, sf, data.spec),
                      a.restart, log=main_print,
                      defaults={"config": {"retrain": default_settings(TrainConfig())}})


def cmd_sweep(a):
    grid, methods = parse_range(a.sparsities), [m.strip() for m in a.method.split(",")]
    sf, data = load_input(a)
    check_outputs(a, [a.output + ".csv", a.output + ".png"])
    data = subset(data, a.max_images)
    retrain = train_config(a, "retrain-", _default_retrain_lr(sf)) if a.retrain_epochs else None
    ckpt = _analysis_checkpoint(a, "sweep", {"sparsities": grid, "methods": methods,
                                             "max_images": a.max_images, "scheme": a.retrain,
                                             "include_bias": a.include_bias,
                                             "retrain": retrain.to_dict() if retrain else None},
                                sf, data)
    rows = sweep(sf, data, grid, methods, retrain, a.device, log=print, done=ckpt.load(),
                 save=ckpt.save, scheme=a.retrain, include_bias=a.include_bias)
    _write_csv(a.output + ".csv", rows)
    plot_sweep(rows, a.output + ".png", f"{sf.arch['name']} on {data.spec.partition(':')[0]} "
               f"({len(data.test_y)} test images): one-shot pruning")
    ckpt.remove()
    print(f"wrote {a.output}.csv and {a.output}.png")


def cmd_export(a):
    r = to_onnx(a.input, a.output, model=a.model, opset=a.opset, batch=a.batch,
                check=not a.no_check)
    shape = "x".join(str(n) if n != "batch" else "N" for n in r["input_shape"])
    check = (f"; onnxruntime agrees with PyTorch to {r['max_abs_diff']:.1e} (max abs difference "
             f"on {r['check_batch']} random inputs)" if r["max_abs_diff"] is not None else "")
    print(f"{a.input} -> {r['path']}: ONNX opset {r['opset']}, input {shape}, dense float32 "
          f"weights, {r['bytes']:,} bytes{check}")


def _p_export(s):
    s.add_argument("input", help=".dc file or stage file of any stage, or a checkpoint with "
                   "--model")
    s.add_argument("--model", help=f"architecture of a checkpoint that does not name one: "
                   f"{MODEL_HELP}")
    s.add_argument("-o", "--output", required=True, help="ONNX file to write")
    s.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help="ONNX opset version (default: %(default)s)")
    s.add_argument("--batch", type=int, default=None,
                   help="fixed batch size (default: a dynamic batch axis)")
    s.add_argument("--no-check", action="store_true",
                   help="write without running the file in onnxruntime against PyTorch "
                        "(default: check, and refuse a difference over 1e-4)")


# --- options that do not apply -------------------------------------------------------------

_TRAINING = ("batch_size", "momentum", "weight_decay", "schedule", "warmup_epochs", "compile",
             "precision", "augment", "distill", "distill_weight", "distill_temperature", "teacher")


def given_options(parser, argv: list[str]) -> set[str]:
    """The destinations of the options named on the command line (not left at their default)."""
    named = {tok.split("=", 1)[0] for tok in argv if tok.startswith("-")}
    return {act.dest for act in parser._actions if named & set(act.option_strings)}


def _not_applying(a):
    """(option, why) for every option of the command that its other settings leave unused."""
    cmd, m = a.command, getattr(a, "method", None)
    if cmd == "prune" or cmd == "compress" and a.max_drop is None:
        if m == "std":
            yield "sparsity", ("--method std prunes below --sensitivity x the layer's std; give "
                               "--method global, layer or lamp for a sparsity target")
        else:
            yield "sensitivity", f"--method {m} prunes to --sparsity; --sensitivity is for std"
        if m in ("std", "layer"):
            yield "min_keep", f"the per-layer floor is for --method global, lamp and sensitivity, not {m}"
        if not a.gradual:
            yield "mask_every", "it sets the --gradual schedule, and --gradual is not given"
            yield "ramp_fraction", "it sets the --gradual schedule, and --gradual is not given"
        if a.retrain_epochs == 0:
            yield "retrain_lr", "--retrain-epochs is 0"
    if hasattr(a, "distill") and not a.distill and a.distill_weight is None:
        yield "distill_temperature", "distillation is off (give --distill)"
        yield "teacher", "distillation is off (give --distill)"
    epochs = {"prune": "retrain_epochs", "sweep": "retrain_epochs", "quantize": "finetune_epochs",
              "compress": ("retrain_epochs", "finetune_epochs")}.get(cmd, ())
    epochs = (epochs,) if isinstance(epochs, str) else epochs
    if epochs and not any(getattr(a, e) for e in epochs):
        flags = " and ".join("--" + e.replace("_", "-") for e in epochs)
        for dest in _TRAINING + ("retrain_lr", "finetune_lr", "retrain"):
            yield dest, f"nothing is trained ({flags} 0)"
    if cmd == "compress" and a.max_drop is None:
        yield "budget_epochs", "it bounds --max-drop's search, and --max-drop is not given"
    if cmd == "compress" and a.max_drop is not None:
        for dest in ("sparsity", "sensitivity", "iterations", "gradual", "mask_every",
                     "ramp_fraction", "bits", "init"):
            yield dest, "--max-drop searches sparsity and bits itself"
    if cmd == "encode" and not _lossy_flags(a):
        why = ("is only used to measure the weights of --float16, --fold-bn, --dense-bits or "
               "--mantissa-bits")
        yield "data", f"the data set {why}"
        yield "device", f"the device {why}"
    if cmd == "report" and not a.plot:
        yield "layer", "it picks the layer of --plot's histograms, and --plot is not given"


def check_options(a, given: set[str]) -> None:
    """Every option given must apply: an error (exit 2) before any work starts."""
    for dest, why in _not_applying(a):
        if dest in given:
            raise UsageError(f"--{dest.replace('_', '-')} does not apply: {why}")


# --- the parser ----------------------------------------------------------------------------

def _p_models(s):
    s.add_argument("pattern", nargs="?", help="glob, e.g. 'resnet*'")


def _p_train(s):
    add_model_args(s, "the architecture", required=True)
    add_data_arg(s, required=True)
    s.add_argument("-o", "--output", required=True, help="stage file to write")
    add_train_args(s)
    add_device_arg(s)


def _p_eval(s):
    add_input_args(s, "stage file, .dc file, or a foreign checkpoint (with --model)")
    add_device_arg(s)
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _p_prune(s):
    add_input_args(s, "stage file, or a checkpoint with --model")
    s.add_argument("-o", "--output", required=True, help="stage file to write")
    add_prune_args(s)
    add_train_args(s, prefix="retrain-", skip_epochs_lr=True)
    add_distill_args(s)
    add_restart_arg(s)
    add_force_arg(s)
    add_device_arg(s)


def _add_analysis_args(s, grid: str, what: str):
    add_input_args(s, "stage file, or a checkpoint with --model")
    s.add_argument("--sparsities", default=grid, metavar="START:STOP:STEP|a,b,c",
                   help=f"{what} (default: %(default)s)")
    s.add_argument("--max-images", type=R["max_images"], default=None,
                   help="evaluate on the first N test images only, for quicker scans "
                        "(default: all)")


def _p_sensitivity(s):
    _add_analysis_args(s, "0:0.9:0.1", "grid of sparsities")
    add_restart_arg(s)
    s.add_argument("-o", "--output", default="sensitivity",
                   help="writes OUTPUT.csv and OUTPUT.png (default: %(default)s)")
    add_device_arg(s)


def _p_sweep(s):
    _add_analysis_args(s, "0:0.95:0.05", "sparsities to visit")
    add_restart_arg(s)
    s.add_argument("--method", default="global,layer", help="comma-separated methods among "
                   "std, global, layer, lamp, sensitivity (default: %(default)s)")
    add_retrain_args(s, 0, "short retraining at every point (default: 0, none)")
    add_scheme_arg(s)
    s.add_argument("--include-bias", action="store_true",
                   help="prune the biases of convolutions and linear layers with their weights")
    add_train_args(s, prefix="retrain-", skip_epochs_lr=True)
    s.add_argument("-o", "--output", default="sweep",
                   help="writes OUTPUT.csv and OUTPUT.png (default: %(default)s)")
    add_device_arg(s)


def _p_quantize(s):
    add_input_args(s, "stage file (pruned or not), or a checkpoint with --model")
    s.add_argument("-o", "--output", required=True, help="stage file to write")
    add_quantize_args(s)
    add_train_args(s, prefix="finetune-", epochs=QuantizeConfig().finetune.epochs,
                   help_epochs="epochs of codebook fine-tuning, 0 for none")
    add_distill_args(s)
    add_restart_arg(s)
    add_force_arg(s)
    add_device_arg(s)


def _p_encode(s):
    s.add_argument("input", help="stage file: quantized, pruned-only or dense")
    s.add_argument("-o", "--output", required=True, help=".dc file to write")
    _add_reference_arg(s)
    add_encode_args(s)
    add_data_arg(s)
    add_device_arg(s)
    add_force_arg(s)
    s.add_argument("--json", action="store_true", help="print the sizes as JSON")


def _p_report(s):
    s.add_argument("inputs", nargs="+", metavar="FILE", help="stage files and/or .dc files; "
                   "the history travels inside each, so the last file alone gives the table")
    s.add_argument("--model", help=f"architecture of a foreign checkpoint among the files: "
                   f"{MODEL_HELP}")
    s.add_argument("--layers", action="store_true", help="add the paper's per-layer table")
    s.add_argument("--format", default="text", choices=["text", "markdown", "csv", "json"],
                   help="table format; json: one document (stages, layers with --layers); "
                        "csv: one table, the stages or with --layers the layers "
                        "(default: %(default)s)")
    s.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    s.add_argument("--layer", help="layer for the weight histograms (default: the largest)")
    s.add_argument("-o", "--output", help="write the report to a file instead of stdout")
    add_force_arg(s)


def _p_compress(s):
    d = QuantizeConfig().finetune
    add_input_args(s, "stage file, or a checkpoint with --model")
    s.add_argument("-o", "--output", required=True, help=".dc file to write; stage files are "
                   "written beside it (NAME.pruned.pt, NAME.quantized.pt)")
    add_prune_args(s.add_argument_group("pruning"))
    g = s.add_argument_group("quantization")
    add_quantize_args(g)
    g.add_argument("--finetune-epochs", type=R["finetune_epochs"], default=d.epochs,
                   help="epochs of codebook fine-tuning, 0 for none (default: %(default)s)")
    g.add_argument("--finetune-lr", type=R["lr"], default=d.lr,
                   help="peak learning rate of fine-tuning (default: %(default)s)")
    add_encode_args(s.add_argument_group("encoding"))
    add_train_args(s, skip_epochs_lr=True)
    add_distill_args(s.add_argument_group("distillation (from the input model, in both "
                                          "stages)"), teacher=False)
    g = s.add_argument_group("target mode (deepcomp.search): the smallest file within a drop")
    g.add_argument("--max-drop", type=R["max_drop"], default=None, metavar="POINTS",
                   help="search sparsity and bits for the smallest .dc whose top-1, on a "
                        "held-out 10%% of the training images, is at most this many points "
                        "below the input's; the test set is read only after the choice "
                        "(default: off)")
    g.add_argument("--budget-epochs", type=R["budget_epochs"],
                   default=SearchConfig().budget_epochs,
                   help="--max-drop: at most this many retraining and fine-tuning epochs in "
                        "all (default: %(default)s)")
    add_restart_arg(s)
    add_force_arg(s)
    add_device_arg(s)


def _p_demo(s):
    s.add_argument("-o", "--output", default="deepcomp-demo", help="folder for the files "
                   "(default: %(default)s)")


def _add_reference_arg(s):
    s.add_argument("--model", help="the file's architecture, where it is your own model "
                   "(package.module:factory): naming it allows deepcomp to import it")


def _p_decode(s):
    s.add_argument("input", help=".dc file")
    s.add_argument("-o", "--output", required=True, help="checkpoint to write: safetensors "
                   "when it ends in .safetensors, else torch.save (a plain state dict)")
    _add_reference_arg(s)
    add_force_arg(s)


COMMANDS = {    # name: (help, handler, options)
    "models": ("list the registered models", cmd_models, _p_models),
    "train": ("train a model from scratch", cmd_train, _p_train),
    "eval": ("top-1, top-5 and loss of a stage file, .dc file or checkpoint", cmd_eval, _p_eval),
    "prune": ("magnitude pruning with retraining (Han et al. 2015)", cmd_prune, _p_prune),
    "sensitivity": ("prune one layer at a time, no retraining: a table and a PNG of accuracy "
                    "against sparsity per layer", cmd_sensitivity, _p_sensitivity),
    "sweep": ("accuracy against sparsity for several pruning methods", cmd_sweep, _p_sweep),
    "quantize": ("k-means weight sharing with trained centroids (Han et al. 2016, section 3)",
                 cmd_quantize, _p_quantize),
    "encode": ("Huffman-coded sparse .dc file (Han et al. 2016, sections 2 and 4; "
               "docs/FORMAT.md)", cmd_encode, _p_encode),
    "report": ("per-stage (and per-layer) table of accuracy and size", cmd_report, _p_report),
    "compress": ("prune, retrain, quantize, fine-tune, encode, decode and verify in one "
                 "command; resumes from the last finished stage", cmd_compress, _p_compress),
    "demo": ("the whole pipeline on LeNet-300-100 and scikit-learn's digits: no download, "
             "no arguments", cmd_demo, _p_demo),
    "decode": ("a .dc file back to a plain state dict checkpoint", cmd_decode, _p_decode),
    "export": ("the decoded model as an ONNX file: dense float32 weights (needs "
               "deepcomp-pytorch[onnx])", cmd_export, _p_export),
}


def build_parser():
    p = _Parser(prog="deepcomp", description="Deep Compression for PyTorch models: prune, "
                "quantize, Huffman-encode, decode, report.")
    p.add_argument("--version", action="version", version=f"deepcomp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help, fn, add_options) in COMMANDS.items():
        s = sub.add_parser(name, help=help, description=help)
        add_options(s)
        s.set_defaults(fn=fn, parser=s)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:         # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    if not getattr(a, "fn", None):
        parser.print_help()
        return 2
    ok = False
    try:
        a.given = given_options(a.parser, argv)
        check_options(a, a.given)
        with handle_stop_signals(), recording_command(shlex.join(["deepcomp", *argv])):
            a.fn(a)
        ok = True
    except Stopped as e:
        end_line()
        if dist.is_main():
            sys.stderr.write(f"deepcomp {a.command}: {e}\n")
        return e.exit_code
    except UsageError as e:
        end_line()
        sys.stderr.write(f"deepcomp {a.command}: error: {e}\n")
        return 2
    except DeepcompError as e:
        end_line()
        sys.stderr.write(f"deepcomp {a.command}: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        end_line()
        sys.stderr.write(f"deepcomp {a.command}: interrupted\n")
        return 130
    except BrokenPipeError:         # e.g. `deepcomp encode ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        end_line()
        sys.stderr.write(f"deepcomp {a.command}: error: {e.strerror or e}: {e.filename or ''}\n")
        return 1
    finally:
        dist.cleanup(sync=ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
