"""Quantization: k-means weight sharing with trained centroids (Han et al. 2016, section 3).

The kept weights of each convolution and linear layer are clustered into at most ``2**bits``
groups; each weight is replaced by its cluster's centroid, so the layer stores a small codebook
(float16 numbers, 2 bytes each) and one ``bits``-wide index per kept weight. Pruned weights
(mask False, or zero where a layer has no mask) are not clustered and stay exactly zero: their
index is -1.

Fine-tuning (section 3.2) trains the codebooks, not the weights: the forward pass uses
``codebook[index]``, the gradient of a centroid is the sum of the gradients of the weights
assigned to it (equation 3; autograd's backward of an index is exactly that sum), and the
assignments never change. Biases and batch norm, stored as float32 anyway, keep training.

The clustering is one-dimensional, so Lloyd's algorithm runs on the sorted weights: a cluster
is a contiguous run between the midpoints of neighbouring centroids, found with a binary
search, and its mean comes from prefix sums; one iteration costs O(k log n) after one sort.
``tools/bench_kmeans.py`` compares it with scikit-learn's KMeans (docs/QUANTIZE.md).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from . import resume as rs
from .allocate import allocate_bits, sample_split
from .checks import check_fields
from .data import Dataset
from .dc.format import MAX_BITS     # the format allows 1..12 bits: 4,096 shared weights
from .errors import CheckpointError, UsageError
from .patterns import LayerSetting, as_setting, recorded, resolve_setting
from .sizes import default_weight_bits, is_prunable_weight, stage_sizes
from .stagefile import StageFile, as_stage, stage_record
from .train import Progress, TrainConfig, evaluate, fit

__all__ = ["QuantizeConfig", "quantize", "kmeans_1d", "init_centroids", "layer_bits",
           "check_quantized", "INITS", "MAX_BITS", "CodebookWeight", "round_float16", "share",
           "attach_codebooks", "detach_codebooks"]

INITS = ("linear", "density", "forgy")


def _finetune_default() -> TrainConfig:
    # A centroid's gradient is the *sum* over its weights (eq. 3), hundreds to thousands of times
    # one weight's gradient, so the rate is small. Measured (docs/QUANTIZE.md), LeNet-300-100 at
    # 2 bits, one epoch: lr 1e-4 lowers the test loss most, 1e-3 less, 1e-2 diverges.
    return TrainConfig(epochs=1, lr=1e-4)


@dataclass(frozen=True)
class AutoBits:
    """``bits='auto:B'``: per-layer bits from a sensitivity scan (deepcomp.allocate), ``mean``
    bits on average over the kept weights; ``text`` is how it was written."""
    mean: float
    text: str | None = None

    def __str__(self):
        return self.text if self.text is not None else f"auto:{self.mean:g}"


def typed_bits(value):
    """``QuantizeConfig.bits`` parsed once: None (the paper's), AutoBits, or bits per layer
    (an int, or a LayerSetting: ``'*=5,conv*=8'``)."""
    if value is None or isinstance(value, AutoBits):
        return value
    if isinstance(value, str) and value.strip().startswith("auto"):
        try:
            return AutoBits(float(value.strip().partition(":")[2]), value)
        except ValueError:
            raise UsageError(f"--bits: expected auto:MEAN (e.g. auto:4), got {value!r}") from None
    return as_setting(value, "bits", int)


@dataclass
class QuantizeConfig:
    """Options of :func:`quantize`; the defaults are the paper's (section 3, Figure 8)."""
    # None: 8 conv, 5 fc (paper, sec. 3); or '*=5,conv*=8'; or 'auto:4': per-layer bits from a
    # sensitivity scan, 4 on average over the kept weights (deepcomp.allocate)
    bits: int | LayerSetting | AutoBits | None = None
    scan_images: int = 1000         # auto bits: training images the scan evaluates on
    init: str = "linear"            # linear | density | forgy; linear: the paper's best (Fig. 8)
    finetune: TrainConfig = field(default_factory=_finetune_default)  # epochs=0: none
    seed: int = 0                   # forgy's draw
    max_iter: int = 100_000         # Lloyd iterations per layer, a cap (1-D ones cost microseconds)
    tol: float = 0.0                # 0: until no assignment changes; > 0: stop as scikit-learn
    # Round the centroids to float16 numbers, after k-means and in every fine-tuning forward
    # pass, so the .dc file stores each in 2 bytes exactly (a relative change of at most 2**-11,
    # far below the spread of a cluster); False keeps float32 centroids.
    float16_codebooks: bool = True

    def __setattr__(self, name, value):
        super().__setattr__(name, typed_bits(value) if name == "bits" else value)

    def to_dict(self) -> dict:
        """Plain data; the bits as the text they were given as (records, run identities)."""
        return {**asdict(self), "bits": None if self.bits is None else str(recorded(self.bits))}


# --- one-dimensional k-means -----------------------------------------------------------------

def init_centroids(values, k: int, init: str = "linear", seed: int = 0) -> np.ndarray:
    """``k`` initial centroids for a 1-D set of values (paper, section 3.1; forgy on fewer than
    ``k`` values draws them all).

    - ``linear``: ``k`` points evenly spaced from the minimum to the maximum value; keeps the
      rare large weights, which matter most (the paper's best).
    - ``density``: the quantiles ``(i + 0.5) / k``, evenly spaced in the cumulative distribution;
      crowds centroids where the weights are dense, around zero.
    - ``forgy``: ``k`` of the values drawn at random without replacement (seeded).
    The points come back sorted; where values repeat, points may coincide (k-means then treats
    all but one as empty clusters and relocates them).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if init not in INITS:
        raise UsageError(f"unknown centroid init {init!r}; expected {', '.join(INITS)}")
    if k < 1:
        raise UsageError(f"k-means needs at least one cluster, got k={k}")
    if x.size == 0:
        return np.zeros(0)
    if init == "linear":
        c = np.linspace(x.min(), x.max(), k)
    elif init == "density":
        c = np.quantile(x, (np.arange(k) + 0.5) / k)
    else:
        rng = np.random.default_rng(seed)
        c = x[rng.choice(x.size, size=min(k, x.size), replace=False)]
    return np.sort(c)


def _relocate(x, c, edges, counts, sums):
    """scikit-learn's handling of empty clusters, on sorted values: each empty cluster takes one
    of the values farthest from their (previous) centroids, which leaves its old cluster.
    ``counts`` and ``sums`` (per cluster) are updated in place; returns the centroids to use
    for the empty clusters."""
    empty = np.flatnonzero(counts == 0)
    err = np.abs(x - np.repeat(c, np.diff(edges)))
    pool = min(8 * empty.size + 16, x.size)
    far = np.argpartition(-err, pool - 1)[:pool] if pool < x.size else np.arange(x.size)
    far = far[np.argsort(-err[far], kind="stable")]
    far = far[err[far] > 0]
    _, first = np.unique(x[far], return_index=True)    # distinct values, or they'd empty again
    far = far[np.sort(first)][: empty.size]
    m = far.size
    owner = np.searchsorted(edges, far, side="right") - 1
    np.subtract.at(counts, owner, 1)
    np.subtract.at(sums, owner, x[far])
    counts[empty[:m]] += 1
    sums[empty[:m]] = x[far]


def kmeans_1d(values, k: int, init: str = "linear", seed: int = 0, max_iter: int = 100_000,
              tol: float = 0.0, info: dict | None = None,
              relocate_empty: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means on a 1-D set of values. Returns ``(centroids, labels, inertia)``.

    ``centroids`` are sorted ascending, every one is used by at least one value (clusters that
    end up empty are dropped, so there are at most ``k``), ``labels[i]`` is the centroid of
    ``values[i]``, and ``inertia`` is the sum of squared distances. When the values take at most
    ``k`` distinct values, those are the centroids and the inertia is zero, whatever the init.
    An empty cluster's centroid moves onto the value farthest from its centroid, as in
    scikit-learn (``relocate_empty=False``: it stays where it is). The iterations stop when no
    assignment changes (a fixed point of Lloyd's algorithm), after ``max_iter``, or, with
    ``tol > 0``, as scikit-learn stops: when the total squared centroid shift is at most ``tol``
    times the variance of the values.
    ``info``, if given, receives the number of iterations run.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise UsageError("cannot cluster weights that are NaN or infinite")
    c = init_centroids(flat, k, init, seed)
    if info is not None:
        info["iterations"] = 0
    if flat.size == 0:
        return c, np.zeros(0, dtype=np.int64), 0.0
    x = np.sort(flat)
    step = np.flatnonzero(x[1:] != x[:-1])
    if step.size < k:                        # at most k distinct values: each its own centroid
        distinct = x[np.concatenate([[0], step + 1])]
        return distinct, np.searchsorted(distinct, flat), 0.0
    c, it = _lloyd(x, c, max_iter, tol, relocate_empty)
    if info is not None:
        info["iterations"] = it
    return _assign(flat, c)


def _lloyd(x: np.ndarray, c: np.ndarray, max_iter: int, tol: float, relocate_empty: bool
           ) -> tuple[np.ndarray, int]:
    """Lloyd's iterations on the sorted values ``x`` from centroids ``c``: (the centroids,
    sorted, and the number of iterations run); see :func:`kmeans_1d`."""
    n = x.size
    csum = np.concatenate([[0.0], np.cumsum(x)])
    threshold = tol * float(x.var())
    edges = None
    it = 0
    for it in range(1, max_iter + 1):
        # Cluster j holds the sorted values x[edges[j]:edges[j+1]]; ties at a midpoint go left.
        new_edges = np.concatenate([[0], np.searchsorted(x, (c[1:] + c[:-1]) / 2, side="right"),
                                    [n]])
        if edges is not None and np.array_equal(new_edges, edges):
            break                            # no assignment changed: converged exactly
        edges = new_edges
        counts = np.diff(edges)
        sums = csum[edges[1:]] - csum[edges[:-1]]
        if relocate_empty and not counts.all():
            _relocate(x, c, edges, counts, sums)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        order = np.argsort(new, kind="stable")            # relocation can break the order
        new = new[order]
        c = c[order]
        shift = float(((new - c) ** 2).sum())
        c = new
        if tol > 0 and shift <= threshold:
            break
    return c, it


def _assign(flat: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Final assignment to the nearest centroid (ties go left, as in :func:`_lloyd`), then each
    centroid is the mean of what it holds, and unused centroids go: (centroids, labels,
    inertia)."""
    labels = np.searchsorted((c[1:] + c[:-1]) / 2, flat, side="left")
    counts = np.bincount(labels, minlength=c.size)
    sums = np.bincount(labels, weights=flat, minlength=c.size)
    used = counts > 0
    c = sums[used] / counts[used]
    labels = (np.cumsum(used) - 1)[labels]
    inertia = float(((flat - c[labels]) ** 2).sum())
    return c, labels, inertia


# --- fine-tuning ------------------------------------------------------------------------------

class CodebookWeight(nn.Module):
    """A parametrization: the weight is ``codebook[indices]``, 0 where ``indices == -1``.

    The codebook is the only trainable tensor; autograd's index backward sums the gradients of
    the weights that share a centroid (paper, equation 3). The indices are a fixed buffer.

    With ``float16`` the lookup uses the codebook rounded to float16 numbers, and the gradient
    passes the rounding unchanged (a straight-through estimator): the float32 codebook gathers
    updates smaller than half a float16 step, which rounding the parameter itself after every
    optimizer step would throw away, and the model always computes with what the file stores.
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, float16: bool = False):
        super().__init__()
        self.float16 = float16
        self.codebook = nn.Parameter(codebook.detach().clone().float())
        idx = indices.long().clone()
        idx[idx < 0] = codebook.numel()      # one past the end: the constant zero
        self.register_buffer("index", idx)

    def rounded(self) -> torch.Tensor:
        """The codebook the model computes with: float16 numbers when asked for."""
        cb = self.codebook
        if not self.float16:
            return cb
        return cb + (round_float16(cb.detach()) - cb.detach())

    def lookup(self) -> torch.Tensor:
        cb = self.rounded()
        table = torch.cat([cb, cb.new_zeros(1)])
        return table[self.index]

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.lookup().to(original.dtype)


def round_float16(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the nearest float16 numbers, as float32; values beyond float16's range
    stay as they are (their codebook is then stored as float32)."""
    h = x.half().float()
    return torch.where(torch.isfinite(h) | ~torch.isfinite(x), h, x)


def _finetune(model: nn.Module, quant: dict, data: Dataset, cfg: TrainConfig,
              teacher: nn.Module | None = None, checkpoint=None,
              float16: bool = False, saved: dict | None = None,
              extra: dict | None = None) -> tuple[dict, list]:
    """Train the codebooks of ``model`` in place; return ``(codebooks, epoch history)``.

    Weight decay: ``train.fit`` decays only tensors of 2 or more dimensions, so the 1-D
    codebooks are not decayed. That is deliberate: the decay of the shared weights, summed as
    in equation 3, would pull each centroid towards zero in proportion to its population and
    shrink the large weights that linear initialisation keeps.
    """
    attach_codebooks(model, quant, float16)
    fs = (saved or {}).get("fit")
    if fs is not None:
        checkpoint.log(f"resuming from {checkpoint.path}: fine-tuning epoch "
                       f"{min(fs['epoch'] + 1, cfg.epochs)}/{cfg.epochs}"
                       + (f", step {fs['step']}" if fs["step"] else ""))
    try:
        history = fit(model, data, cfg, desc="quantize fine-tune", teacher=teacher, resume=fs,
                      checkpoint=(lambda st: checkpoint.save({"fit": st, **(extra or {})}))
                      if checkpoint else None)
    except rs.Stopped as e:
        raise rs.Stopped(f"stopped fine-tuning at {e}; run the same command to resume",
                         e.signum) from None
    finally:
        codebooks = detach_codebooks(model, quant)
    return codebooks, history


def attach_codebooks(model: nn.Module, quant: dict, float16: bool = False) -> list:
    """Make each quantized weight of ``model`` ``codebook[indices]`` (a :class:`CodebookWeight`
    parametrization), so its codebook is what an optimizer trains; the weights themselves leave
    the optimizer. Returns the codebook parameters."""
    modules = dict(model.named_modules())
    out = []
    for name, q in quant.items():
        mod = modules[name.rpartition(".")[0]]
        param = CodebookWeight(q["codebook"], q["indices"], float16)
        param.to(getattr(mod, name.rpartition(".")[2]).device)
        parametrize.register_parametrization(mod, "weight", param)
        mod.parametrizations.weight.original.requires_grad_(False)   # out of the optimizer
        out.append(mod.parametrizations.weight[0].codebook)
    return out


def detach_codebooks(model: nn.Module, quant: dict) -> dict:
    """Undo :func:`attach_codebooks`: each weight becomes the plain tensor
    ``codebook[indices]`` again (checked bit for bit); returns the trained codebooks (float16
    numbers where they were attached so), on the CPU."""
    modules = dict(model.named_modules())
    codebooks = {}
    for name in quant:
        mod = modules[name.rpartition(".")[0]]
        p = mod.parametrizations.weight[0]
        codebooks[name] = p.rounded().detach().float().cpu().clone()
        expected = p.lookup().detach()
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        mod.weight.requires_grad_(True)
        if not torch.equal(mod.weight.detach(), expected.to(mod.weight.dtype)):
            raise RuntimeError(f"{name}: fine-tuned weights differ from codebook[indices]")
    return codebooks


# --- the stage --------------------------------------------------------------------------------

def layer_bits(state_dict: dict, bits=None, aliases=()) -> dict[str, int]:
    """Bits per quantized layer (every convolution and linear weight but the ``aliases`` of a
    tied one): the paper's default (8 conv, 5 fc) unless a pattern (``'*=5,conv*=8'``, see
    deepcomp.patterns) says otherwise."""
    names = [k for k, t in state_dict.items() if is_prunable_weight(k, t) and k not in aliases]
    if not names:
        raise UsageError("the model has no convolution or linear weights to quantize")
    def paper(n):
        return default_weight_bits(state_dict[n])
    if bits is None:
        return {n: paper(n) for n in names}
    return resolve_setting(bits, names, "bits", int, lambda v: 1 <= v <= MAX_BITS,
                           f"1 to {MAX_BITS} bits", default=paper)


def _auto_bits(sf: StageFile, data: Dataset | None, cfg: QuantizeConfig, aliases,
               checkpoint=None, saved: dict | None = None) -> dict:
    """``bits='auto:B'``: per-layer bits from a sensitivity scan (deepcomp.allocate), B on
    average over the kept weights. Resumable: the bits a checkpoint holds, else the scan from
    the layers it holds on, saved after each layer."""
    if saved is not None and "bits" in saved:
        return saved["bits"]
    target = cfg.bits.mean
    if data is None:
        raise UsageError("--bits auto measures every layer: it needs data")
    names = layer_bits(sf.state_dict, None, aliases)

    def quantizer(values: torch.Tensor, b: int) -> torch.Tensor:
        c, labels, _ = _cluster(values, b, cfg)        # numpy, on the CPU
        return torch.from_numpy(c[labels]).to(values.device, torch.float32)
    sample = sample_split(data, cfg.scan_images, cfg.finetune.seed)
    save = (lambda curves: checkpoint.save({"scan": curves})) if checkpoint is not None else None
    bits = allocate_bits(sf.build_model(), sample, {n: _kept(sf, n) for n in names}, target,
                         quantizer, cfg.finetune.device, log=lambda *a: None,
                         done=(saved or {}).get("scan"), save=save)
    if checkpoint is not None:
        checkpoint.save({"bits": bits})
    return bits


def _cluster(values: torch.Tensor, bits: int, cfg: QuantizeConfig, info: dict | None = None):
    """k-means of ``values`` into ``2**bits`` clusters with the config's init, seed and limits:
    ``(centroids, labels, inertia)`` as :func:`kmeans_1d` returns them."""
    return kmeans_1d(values.detach().cpu().double().numpy(), 2 ** bits, cfg.init, cfg.seed, cfg.max_iter,
                     cfg.tol, info)


def _kept(sf: StageFile, name: str) -> torch.Tensor:
    mask = sf.masks.get(name)
    return mask.bool() if mask is not None else sf.state_dict[name] != 0


def quantize(sf: StageFile | nn.Module, data: Dataset | None, config: QuantizeConfig | None = None,
             teacher: nn.Module | None = None, checkpoint=None) -> StageFile:
    """Quantize every convolution and linear weight of ``sf``; fine-tune the codebooks on
    ``data`` when ``config.finetune.epochs > 0``. Returns a new StageFile: masks kept, ``quant``
    filled, ``state_dict`` holding ``codebook[indices]`` (0 where pruned) and a history record.
    ``data=None`` quantizes without measuring accuracy (and cannot fine-tune).
    ``teacher``: the model to distil from when ``finetune.distill_weight > 0`` (default: the
    input model). ``checkpoint``: a :class:`deepcomp.resume.Checkpoint` for fine-tuning."""
    config = config or QuantizeConfig()
    if config.init not in INITS:
        raise UsageError(f"unknown centroid init {config.init!r}; expected {', '.join(INITS)}")
    if data is None and config.finetune.epochs > 0:
        raise UsageError("fine-tuning needs data: give a data set or finetune epochs=0")
    config.finetune.check()
    check_fields(config, ("scan_images",))
    sf = as_stage(sf, data)
    t0 = time.perf_counter()
    aliases = sf.aliases()
    saved = checkpoint.load() if checkpoint is not None else None
    if isinstance(config.bits, AutoBits):
        bits = _auto_bits(sf, data, config, aliases, checkpoint, saved)
    else:
        bits = layer_bits(sf.state_dict, config.bits, aliases)
    state = {k: v.clone() for k, v in sf.state_dict.items()}
    quant, layers = share(state, {n: _kept(sf, n) for n in bits}, bits, config)
    for alias, first in aliases.items():      # a tied weight is its first name's tensor
        state[alias] = state[first].clone()
    out = StageFile(dict(sf.arch), dict(sf.data), state,
                    {k: v.clone() for k, v in sf.masks.items()}, quant, list(sf.history),
                    template=sf.template)
    metrics, epochs = {}, []
    if data is not None:
        model = out.build_model()
        device = config.finetune.device
        before = evaluate(model, data, device)
        metrics = {**before, "before_finetune": {k: before[k] for k in ("top1", "top5", "loss")}}
        if config.finetune.epochs > 0:
            if config.finetune.distill_weight > 0 and teacher is None:
                teacher = sf.build_model()
            auto = {"bits": bits} if isinstance(config.bits, AutoBits) else {}
            codebooks, epochs = _finetune(model, quant, data, config.finetune, teacher,
                                          checkpoint, config.float16_codebooks, saved, auto)
            for name, cb in codebooks.items():
                quant[name]["codebook"] = cb
            fitted = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            for name in quant:
                fitted[name] = _lookup(quant[name]).to(fitted[name].dtype)
            for alias, first in aliases.items():
                fitted[alias] = fitted[first].clone()
            out.state_dict = fitted
            after = evaluate(out.build_model(), data, device)
            metrics.update(after)
        metrics["after_finetune"] = {k: metrics[k] for k in ("top1", "top5", "loss")}
    wall = time.perf_counter() - t0 + (checkpoint.before if checkpoint is not None else 0.0)
    out.history.append(stage_record("quantized", {**config.to_dict(), "layer_bits": bits},
                                    metrics, stage_sizes(out), wall, layers=layers, epochs=epochs))
    return out


def share(state: dict, kept: dict, bits: dict, config: QuantizeConfig) -> tuple[dict, dict]:
    """k-means weight sharing of the weights ``bits`` names (paper, section 3.1): each one's
    kept values (``kept``: a bool mask) clustered into ``2**bits`` centroids. ``state`` is
    updated in place to ``codebook[indices]`` (0 where not kept). Returns ``(quant, layers)``:
    per weight its quantizer entry (codebook, int16 indices with -1 where not kept, bits, init)
    and the clustering's record."""
    quant, layers = {}, {}
    bar = Progress(True, len(bits), "k-means", tty_only=True)
    for i, (name, b) in enumerate(bits.items()):
        bar.update(i, lambda: f"{name.removesuffix('.weight')} ({b} bits)")
        w, keep = state[name], kept[name].to(state[name].device)
        t1 = time.perf_counter()
        info = {}
        centroids, labels, inertia = _cluster(w[keep], b, config, info)
        indices = torch.full(w.shape, -1, dtype=torch.int16)
        indices[keep.cpu()] = torch.from_numpy(labels).to(torch.int16)
        codebook = torch.from_numpy(centroids).float()
        if config.float16_codebooks:
            codebook = round_float16(codebook)
        quant[name] = {"codebook": codebook, "indices": indices,
                       "bits": b, "init": config.init}
        layers[name] = {"bits": b, "kept": int(keep.sum()), "clusters": int(centroids.size),
                        "inertia": inertia, "iterations": info["iterations"],
                        "seconds": round(time.perf_counter() - t1, 4)}
        state[name] = _lookup(quant[name]).to(w.device, w.dtype)
    bar.close()
    return quant, layers


def _lookup(q: dict) -> torch.Tensor:
    table = torch.cat([q["codebook"].float(), torch.zeros(1)])
    idx = q["indices"].long()
    return table[torch.where(idx < 0, q["codebook"].numel(), idx)]


def check_quantized(sf: StageFile) -> None:
    """Raise if a quantized weight differs from its codebook entry or breaks the bit budget."""
    for name, q in sf.quant.items():
        if q["codebook"].numel() > 2 ** q["bits"]:
            raise CheckpointError(f"{name}: {q['codebook'].numel()} centroids exceed "
                                  f"{q['bits']} bits")
        if not torch.equal(sf.state_dict[name].float(), _lookup(q)):
            raise CheckpointError(f"{name}: weights differ from codebook[indices]")

