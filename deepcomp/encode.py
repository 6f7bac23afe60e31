"""Encode a stage file as a ``.dc`` file (Han et al. 2016, sections 2 and 4; docs/FORMAT.md).

Each weight with a mask is stored sparse: its kept positions as Huffman-coded relative indices
(CSR or CSC, and the index width, whichever are smaller), its values as Huffman-coded cluster
indices when it is quantized, else as float32. A quantized weight without a mask stores a
cluster index for every element. Everything else is raw, in the narrowest dtype that holds it
exactly (float16 for all floating-point ones on explicit, lossy, request).

This module owns the stage: its options (:class:`EncodeConfig`), the stage as the file holds
it (batch norm folded, dense tensors rounded or shared), the checks that a stage file is
consistent, the history it records, and the check that the file decodes to exactly that stage.
The bytes are :mod:`deepcomp.dc`'s: this module hands it numpy arrays.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .dc import huffman, write
from .dc.format import MAX_BITS, NARROWER, jsonable
from .dc.sparse import as_2d
from .errors import CheckpointError, FormatError, UsageError
from .graph import trace_graph
from .loading import decode_bytes, load_stage
from .patterns import resolve_setting
from .quantize import kmeans_1d, round_float16
from .stagefile import DTYPE_NAMES, TORCH_DTYPES, as_stage, atomic_write, stage_record

__all__ = ["EncodeConfig", "encode", "encode_stage", "encode_tensors", "stored_stage",
           "compact_history", "share_dense", "round_mantissas", "check_dense_bits",
           "check_mantissa_bits", "check_exact"]


@dataclass
class EncodeConfig:
    # Bits of a relative index per layer ('*=5,conv*=8'; the paper, section 2, uses 8 for
    # convolutions and 5 for fully connected layers); a layer not named, or named 'auto', gets
    # the width that gives its smallest gap stream and code table, measured (docs/FORMAT.md).
    index_bits: str = ""
    # Store dense tensors (biases, batch norm) as float16 even where that rounds them: lossy,
    # off by default (the paper keeps them at 32 bits). Without it a dense tensor is float16
    # only where that is exact.
    float16: bool = False
    # Fold each batch norm's running statistics into its scale and shift, as inference engines
    # do (Jacob et al. 2018, section 3.2): weight' = weight*sqrt(1+eps)/sqrt(var+eps),
    # bias' = bias - mean*weight/sqrt(var+eps), mean 0, variance 1. The same function in
    # evaluation mode up to float32 rounding, and the constant statistics cost the file almost
    # nothing; lossy (re-evaluated), and the statistics further training would start from are
    # gone, so off by default (the paper stores them as they are).
    fold_batchnorm: bool = False
    # Share the values of each one-dimensional float32 tensor (biases, batch norm) among at
    # most 2**dense_bits float16 centroids by k-means, linear init: the paper's weight
    # sharing (section 3) applied to what it keeps at 32 bits, stored as a ``quantized_dense``
    # tensor where that is smaller (docs/FORMAT.md). Lossy, re-evaluated, not fine-tuned; 0: off.
    dense_bits: int = 0
    # Round each bias and batch norm scale to ``mantissa_bits`` (1..10) bits after its leading
    # one (float16 keeps 10, bfloat16 7), and each batch norm shift to the precision of its
    # channel's scale (the shift's error then counts against the channel's unit-variance
    # input, not against the shift's own size, which may be near zero). The values still store
    # as float16, and their zero low bits deflate away in the dense block (docs/FORMAT.md).
    # Running statistics are left as they are: fold them first (``fold_batchnorm``). ResNet-20
    # 88% pruned, folded: 5 bits take 752 of the dense block's 2,626 bytes for no measured
    # loss, 4 bits 978 for half a point (docs/FORMAT.md). Lossy, re-evaluated; 0: off.
    mantissa_bits: int = 0
    # Longest Huffman code the encoder writes (the format allows 15): decoding tables of at
    # most 2**12 entries per stream, at a cost of a few hundredths of a percent of the bits.
    max_code_length: int = 12
    # Leave the stage history out of the file (the report then shows the encoded stage only,
    # from what the file itself holds), like TF-MOT's strip_pruning for deployment.
    strip: bool = False
    # Record the network's computation (deepcomp.graph: conv2d, linear, batch norm, ReLU, add,
    # pooling, flatten, ...) so c/dcrun runs the file without PyTorch; format 2.1. Off by
    # default: it costs header bytes (ResNet-20: about 700) that only a runtime needs.
    graph: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lossy(self) -> str:
        """What the file changes ("" when it stores the stage exactly)."""
        return ", ".join(w for w, on in (("folded batch norm", self.fold_batchnorm),
                                        ("float16", self.float16),
                                        (f"{self.mantissa_bits}-bit mantissas",
                                         self.mantissa_bits),
                                        (f"{self.dense_bits}-bit shared dense", self.dense_bits))
                         if on)


def resolve_index_bits(sf, setting: str) -> dict:
    """Index bits for every sparse tensor: the setting's value, or None (chosen by measured
    size) where it names none or says 'auto'. A setting for a model with no pruned layer is an
    error, not ignored."""
    names = sorted(sf.masks)
    if not setting:
        return dict.fromkeys(names)
    if not names:
        raise UsageError("--index-bits: the model has no pruned layer to store sparse")
    bits = resolve_setting(setting, names, "index-bits", lambda v: v if v == "auto" else int(v),
                           lambda v: v == "auto" or 1 <= v <= MAX_BITS,
                           f"1 to {MAX_BITS} bits or auto", default=lambda n: "auto")
    return {n: None if b == "auto" else b for n, b in bits.items()}


def _check_float32(name, t):
    if t.dtype != torch.float32:
        raise CheckpointError(f"{name}: sparse and quantized tensors must be float32, not "
                              f"{DTYPE_NAMES.get(t.dtype, t.dtype)}")


def _exact_in(t: torch.Tensor, dtype: str) -> bool:
    return torch.equal(t.to(TORCH_DTYPES[dtype]).to(t.dtype), t)


def dense_storage(t: torch.Tensor, float16: bool) -> str:
    """The dtype a dense tensor is stored in: the narrowest that holds every value exactly
    (float16 for float32 values that are float16 numbers, int16 for small int64 counters), or
    float16 for every floating-point tensor when the lossy ``float16`` is asked for."""
    dtype = DTYPE_NAMES[t.dtype]
    if float16 and t.is_floating_point():
        return "float16"
    for cand in reversed(NARROWER.get(dtype, ())):           # narrowest first
        if _exact_in(t, cand):
            return cand
    return dtype


def _dense(name, t, float16) -> write.EncodedTensor:
    stored = dense_storage(t, float16)
    raw = t.to(TORCH_DTYPES[stored]).numpy() if stored != "bfloat16" else t.view(torch.int16).numpy()
    data = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
    return write.dense_tensor(name, DTYPE_NAMES[t.dtype], list(t.shape), stored, data)


def _check_mask(name, t, w, mask, rows, cols):
    if tuple(mask.shape) != tuple(t.shape):
        raise CheckpointError(f"{name}: mask shape {list(mask.shape)} differs from the weight's")
    m = mask.detach().cpu().numpy().astype(bool).reshape(rows, cols)
    if (w[~m] != 0).any():
        raise CheckpointError(f"{name}: weights outside the mask are not zero; "
                              "the stage file is inconsistent")
    return m


def _check_quant(name, t, w, q, m, rows, cols):
    """(codebook, cluster indices as [rows, cols] int64, bits, other quantizer fields) of a
    quantizer entry that reproduces the weight; an empty codebook is a layer with no weight."""
    cb = q["codebook"].detach().cpu().to(torch.float32).reshape(-1).numpy()
    k = len(cb)
    idx = q["indices"].detach().cpu().numpy().astype(np.int64)
    if idx.shape != tuple(t.shape) or not 0 <= k <= 1 << MAX_BITS:
        raise CheckpointError(f"{name}: quantizer entry does not fit the weight")
    idx = idx.reshape(rows, cols)
    if idx.min(initial=0) < -1 or idx.max(initial=-1) >= k:
        raise CheckpointError(f"{name}: cluster indices outside -1..{k - 1}")
    table = np.append(cb, np.float32(0))                   # index -1: no cluster, value 0
    if not np.array_equal(table[np.where(idx >= 0, idx, k)], w):
        raise CheckpointError(f"{name}: weights differ from codebook[indices]; "
                              "the stage file is inconsistent")
    if m is not None and (idx[~m] != -1).any():
        raise CheckpointError(f"{name}: pruned weights have cluster indices")
    bits = int(q.get("bits", max(1, math.ceil(math.log2(max(k, 2))))))
    if not 1 <= bits <= MAX_BITS:
        raise CheckpointError(f"{name}: {bits}-bit quantization; the format allows 1..{MAX_BITS}")
    meta = {a: b for a, b in q.items() if a not in ("codebook", "indices", "bits")
            and isinstance(b, (str, int, float, bool))}
    return cb, idx, bits, meta


def _encode_tensor(name, t, mask, q, ibits, float16, max_len) -> write.EncodedTensor:
    t = t.detach().cpu().contiguous()
    if DTYPE_NAMES.get(t.dtype) is None:
        raise CheckpointError(f"{name}: dtype {t.dtype} cannot be stored in a .dc file")
    if mask is None and q is None:
        return _dense(name, t, float16)
    _check_float32(name, t)
    rows, cols = as_2d(t.shape)
    w = t.numpy().reshape(rows, cols)
    m = _check_mask(name, t, w, mask, rows, cols) if mask is not None else None
    if q is None:
        return write.sparse_tensor(name, list(t.shape), w, m, ibits, max_len)
    cb, idx, bits, meta = _check_quant(name, t, w, q, m, rows, cols)
    return write.quantized_tensor(name, list(t.shape), cb, idx, m, bits, meta, ibits, max_len)


def fold_batchnorm(sf):
    """``sf`` with every affine batch norm's statistics folded into its scale and shift
    (:attr:`EncodeConfig.fold_batchnorm`); layers pruned or quantized are left as they are."""
    sd, folded_any = dict(sf.state_dict), False
    for name, m in sf.build_model().named_modules():
        keys = [f"{name}.{k}".lstrip(".") for k in ("weight", "bias", "running_mean", "running_var")]
        if not (isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine
                and m.track_running_stats and all(k in sd for k in keys)
                and not any(k in sf.masks or k in sf.quant for k in keys)):
            continue
        w, b, mean, var = (sd[k].double() for k in keys)
        scale = w / torch.sqrt(var + m.eps)
        folded = (scale * math.sqrt(1 + m.eps), b - mean * scale, torch.zeros_like(mean),
                  torch.ones_like(var))
        sd.update({k: v.to(sd[k].dtype) for k, v in zip(keys, folded)})
        folded_any = True
    if not folded_any:
        raise UsageError("fold_batchnorm (--fold-bn): the model has no batch norm to fold")
    return replace(sf, state_dict=zero_unread_channels(sf, sd))


def _whole_zero(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Per index of ``dim`` of a weight: whether every weight there is exactly zero."""
    return ~(w != 0).transpose(0, dim).flatten(1).any(1)


def zero_unread_channels(sf, sd: dict) -> dict:
    """``sd`` with the batch norm values that no output depends on set to zero, so that they
    deflate: the scale of a channel whose input is exactly zero (a filter of the convolution or
    linear layer before it pruned whole, no bias, the mean folded to zero) and the scale and
    shift of a channel whose one reader, through ReLUs, is a convolution with that input
    channel pruned whole. The outputs stay exactly the same. Found on the traced graph
    (deepcomp.graph, which needs the data's input size); a model the tracer does not follow
    is left as it is."""
    if not sf.data.get("input_size"):
        return sd
    try:
        graph = trace_graph(sf.build_model(), sf.data["input_size"])
    except UsageError:
        return sd
    readers, uses = [[] for _ in graph], Counter()
    for i, (_, inputs, attrs) in enumerate(graph):
        for j in inputs:
            readers[j].append(i)
        uses.update(v for v in attrs.values() if isinstance(v, str))
    sd, coded = dict(sd), set(sf.masks) | set(sf.quant)
    for i, (op, inputs, bn) in enumerate(graph):
        if op != "batchnorm" or {bn["weight"], bn["bias"]} & coded \
                or uses[bn["weight"]] + uses[bn["bias"]] > 2:     # a module called twice
            continue
        scale, shift = sd[bn["weight"]].clone(), sd[bn["bias"]].clone()
        src, _, before = graph[inputs[0]]
        if src in ("conv2d", "linear") and before["bias"] is None:
            scale[_whole_zero(sd[before["weight"]], 0) & (sd[bn["mean"]] == 0)] = 0
        j = i
        while len(readers[j]) == 1 and graph[readers[j][0]][0] == "relu":
            j = readers[j][0]
        if len(readers[j]) == 1 and graph[readers[j][0]][0] == "conv2d" \
                and graph[readers[j][0]][2]["groups"] == 1:
            unread = _whole_zero(sd[graph[readers[j][0]][2]["weight"]], 1)
            scale[unread], shift[unread] = 0, 0
        sd[bn["weight"]], sd[bn["bias"]] = scale, shift
    return sd


def stored_stage(sf, config: EncodeConfig):
    """The stage as the file holds it: ``sf`` itself unless a lossy option changes it (batch
    norm folded, dense floating-point tensors rounded to float16). The encoder checks what it
    wrote against this, bit for bit, and a lossy file's accuracy is measured on it."""
    if config.fold_batchnorm:
        sf = fold_batchnorm(sf)
    if config.mantissa_bits:
        sf = round_mantissas(sf, config.mantissa_bits)
    if config.float16:
        sf = replace(sf, state_dict={
            k: v.half().to(v.dtype) if v.is_floating_point() and k not in sf.masks
            and k not in sf.quant else v for k, v in sf.state_dict.items()})
    if config.dense_bits:
        sf = share_dense(sf, config)
    return sf


def _check_width(bits, top: int, field: str) -> None:
    """``bits`` is an int, 0 (off) or 1..``top``; ``field`` the EncodeConfig field."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= top:
        raise UsageError(f"{field} (--{field.replace('_', '-')}) must lie in 1..{top} "
                         f"(or 0: off), got {bits!r}")


def check_dense_bits(bits) -> None:
    """:attr:`EncodeConfig.dense_bits` is 0 (off) or 1..MAX_BITS, the format's index widths."""
    _check_width(bits, MAX_BITS, "dense_bits")


def check_mantissa_bits(bits) -> None:
    """:attr:`EncodeConfig.mantissa_bits` is 0 (off) or 1..10 (float16 keeps 10)."""
    _check_width(bits, 10, "mantissa_bits")


def round_mantissa(t: torch.Tensor, bits: int, scale: torch.Tensor | None = None):
    """``t`` rounded to the nearest multiple (ties to even) of ``2**(e - bits)``, where
    ``2**e`` is the leading power of two of ``|t|``, or of ``max(|t|, |scale|)`` elementwise
    where a ``scale`` is given, and never to a finer step than float16's smallest (2**-24): with
    ``bits <= 10`` every result within float16's range is a float16 number. Rounding again
    changes nothing."""
    x = t.double()
    ref = x.abs() if scale is None else torch.maximum(x.abs(), scale.double().abs())
    _, e = torch.frexp(ref)                                 # ref = m * 2**e, 1/2 <= m < 1
    step = torch.ldexp(torch.ones_like(x), (e - 1 - bits).clamp_min(-24))
    return (torch.round(x / step) * step).to(t.dtype)


def round_mantissas(sf, bits: int):
    """``sf`` with its biases and batch norm scales rounded to ``bits`` mantissa bits and its
    batch norm shifts to the precision of their scales (:attr:`EncodeConfig.mantissa_bits`).
    One-dimensional floating-point parameters that are not pruned, quantized, tied or
    non-finite, and whose rounded values lie within float16's range (so they store as float16
    numbers); buffers (running statistics) are left as they are."""
    check_mantissa_bits(bits)
    tied = {n for pair in sf.aliases().items() for n in pair}
    sd = dict(sf.state_dict)

    def dense(k):
        t = sd.get(k)
        return (t is not None and t.is_floating_point() and t.dim() == 1 and k not in sf.masks
                and k not in sf.quant and k not in tied and bool(torch.isfinite(t).all()))

    model = sf.build_model()
    shifts = {}                                             # a batch norm's shift: its scale
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
            w, b = (f"{name}.{k}".lstrip(".") for k in ("weight", "bias"))
            if dense(w) and dense(b):
                shifts[b] = w

    def put(k, rounded):
        if rounded.abs().max() <= torch.finfo(torch.float16).max:   # else left as it is
            sd[k] = rounded

    for k, _ in model.named_parameters():
        if dense(k) and k not in shifts:
            put(k, round_mantissa(sd[k], bits))
    for b, w in shifts.items():                             # against the scale as stored
        put(b, round_mantissa(sd[b], bits, sd[w]))
    return replace(sf, state_dict=sd)


def share_dense(sf, config: EncodeConfig):
    """``sf`` with every one-dimensional float32 tensor (biases, batch norm) of at least two
    distinct values quantized by k-means into at most ``2**config.dense_bits`` centroids
    (:attr:`EncodeConfig.dense_bits`), float16 numbers where that moves none by more than 2**-10
    of itself, where its codebook, code table, index stream and header entry take fewer bytes
    than the tensor's own storage; the others are left as they are. Weights, tied tensors and
    tensors with NaN or infinity are not touched; a vector shared before (a .dc file read back)
    is clustered again from its values."""
    check_dense_bits(config.dense_bits)
    tied = {n for pair in sf.aliases().items() for n in pair}
    sd, quant = dict(sf.state_dict), dict(sf.quant)
    for k, t in sf.state_dict.items():
        if (t.dtype != torch.float32 or t.dim() != 1 or k in sf.masks or k in tied
                or t.unique().numel() < 2 or not torch.isfinite(t).all()):
            continue
        quant.pop(k, None)
        c, labels, _ = kmeans_1d(t.double().numpy(), 1 << config.dense_bits)
        cb = torch.from_numpy(c).float()
        half = round_float16(cb)
        if ((half - cb).abs() <= cb.abs() * 2.0 ** -10).all():      # not subnormal, no overflow
            cb, relabel = torch.unique(half, return_inverse=True)   # rounding may merge two
            labels = relabel.numpy()[labels]
        q = {"codebook": cb, "indices": torch.from_numpy(labels).to(torch.int16),
             "bits": config.dense_bits, "init": "linear"}
        shared = cb[q["indices"].long()]
        if write.stored_bytes(_encode_tensor(k, shared, None, q, None, False,
                                             config.max_code_length)) \
                < write.stored_bytes(_dense(k, t, config.float16)):
            sd[k], quant[k] = shared, q
    return replace(sf, state_dict=sd, quant=quant)


def encode_tensors(sf, config: EncodeConfig) -> list[write.EncodedTensor]:
    """Every tensor of the stage file, encoded, sorted by name."""
    for what, d in (("mask", sf.masks), ("quantizer entry", sf.quant)):
        extra = sorted(set(d) - set(sf.state_dict))
        if extra:
            raise CheckpointError(f"{what} for a tensor that is not in the state dict: {extra[0]}")
    ibits = resolve_index_bits(sf, config.index_bits)
    if not 1 <= config.max_code_length <= huffman.MAX_CODE_LENGTH:
        raise UsageError(f"max_code_length must lie in 1..{huffman.MAX_CODE_LENGTH}")
    return [_encode_tensor(n, sf.state_dict[n], sf.masks.get(n), sf.quant.get(n), ibits.get(n),
                           config.float16, config.max_code_length)
            for n in sorted(sf.state_dict)]


# --- the history (docs/FORMAT.md, "History") -----------------------------------------------------

def round_floats(x, digits: int = 7):
    """Floats to ``digits`` significant digits (float32 carries 7): the stage history's numbers
    come from float32 tensors, and their 17-digit double spelling costs header bytes."""
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, digits) for v in x]
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    return x


_METRICS = ("top1", "top5")
# What a stage record keeps of its sizes: the reader derives the rest (params, dense_bytes,
# ratio) from the file itself, which every record shares (docs/FORMAT.md, "History").
_SIZES = ("nonzero_share", "bytes")


def compact_record(rec: dict) -> dict:
    """What the report reads of a stage record (docs/FORMAT.md, "History"): stage, command,
    wall time, accuracy and sizes; training logs, configs and versions stay in the stage files.
    The encoded record keeps no sizes: the reader derives them from the file."""
    m = rec.get("metrics") or {}
    out = {k: rec[k] for k in ("stage", "command", "wall_time", "lossy") if k in rec}
    out["metrics"] = {k: m[k] for k in _METRICS if k in m}
    if isinstance(m.get("before"), dict):
        out["metrics"]["before"] = {k: m["before"][k] for k in _METRICS[:2] if k in m["before"]}
    if rec.get("stage") != "encoded":
        z = rec.get("sizes") or {}
        out["sizes"] = round_floats({k: z[k] for k in _SIZES if k in z}, 4)
    if "split" in rec:                   # target mode: measured on the validation split
        out["split"] = rec["split"]
        ref = rec.get("validation_reference") or {}
        out["validation_reference"] = {k: ref[k] for k in _METRICS[:2] if k in ref}
    if rec.get("stage") == "search":     # the candidates' table (deepcomp.search)
        out.update({k: rec[k] for k in ("candidates", "epochs_used") if k in rec})
        cfg = rec.get("config") or {}
        out["config"] = {k: cfg[k] for k in ("max_drop", "budget_epochs") if k in cfg}
    return out


def compact_history(history: list) -> list:
    return round_floats(jsonable([compact_record(r) for r in history]))


def encode_stage(sf, config: EncodeConfig | None = None, metrics: dict | None = None,
                 stored=None):
    """Encode a stage file: (file bytes, the "encoded" stage record with every size filled in).
    The file is read back and must hold the stage exactly (:func:`check_exact`).

    ``metrics`` default to those of the stage before (encoding is lossless); give measured ones
    (of :func:`stored_stage`) when ``config.lossy``. ``stored``: that stage, where the caller
    has it already (it measured it), so that it is not made again. A stage that was encoded
    before (a .dc file read back) is encoded again: its encoded record is replaced.
    """
    config = config or EncodeConfig()
    t0 = time.perf_counter()
    stored = stored if stored is not None else stored_stage(sf, config)
    tensors = encode_tensors(stored, config)
    before = [r for r in sf.history if r.get("stage") != "encoded"]
    prev = dict(sf.history[-1].get("metrics") or {}) if sf.history else {}
    lossy = config.lossy or next((r["lossy"] for r in sf.history if r.get("lossy")), "")
    extra = {"lossy": lossy} if lossy else {}
    record = stage_record("encoded", config.to_dict(), metrics if metrics is not None else prev,
                          {}, time.perf_counter() - t0, **extra)
    history = [] if config.strip else compact_history(before + [record])
    graph = _graph(stored) if config.graph else None
    buf = write.pack(sf.arch, sf.data, history, tensors, graph)
    back = decode_bytes(buf, template=sf.template)  # the record as any reader sees it, and a round trip
    check_exact(stored.state_dict, back.state_dict)
    return buf, back.history[-1]


def _graph(sf) -> list:
    """The graph of the stage's model (deepcomp.graph), traced on its recorded input size."""
    size = sf.data.get("input_size")
    if not size:
        raise UsageError("--graph: the stage does not record its input size (give --data when "
                         "it is made)")
    return trace_graph(sf.build_model(), size)


def check_exact(want: dict, got: dict) -> None:
    """The decoded tensors are the encoded ones, bit for bit (NaNs where NaNs were)."""
    for k, v in want.items():
        w, g = v.detach().cpu(), got[k]
        if w.dtype != g.dtype or w.shape != g.shape or not (
                torch.equal(w, g) or (w.is_floating_point() and torch.equal(w.isnan(), g.isnan())
                                      and torch.equal(w.nan_to_num(), g.nan_to_num()))):
            raise FormatError(f"{k}: the encoded file does not decode to the same tensor "
                              "(a deepcomp bug: please report it)")


def encode(stage, out: str, config: EncodeConfig | None = None, metrics: dict | None = None,
           stored=None) -> dict:
    """Encode a stage file (a path or a :class:`StageFile`) or a model (a ``torch.nn.Module``,
    with the masks and codebooks it carries: deepcomp.userloop, ``torch.nn.utils.prune``) into
    the .dc file ``out``; return the "encoded" stage record. ``metrics`` and ``stored``: see
    :func:`encode_stage`."""
    sf = load_stage(stage) if isinstance(stage, str) else as_stage(stage)
    buf, record = encode_stage(sf, config, metrics, stored)
    atomic_write(out, lambda f: f.write(buf))
    return record
