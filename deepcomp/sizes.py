"""Storage sizes as the paper counts them (Han et al. 2016, Tables 2-5).

- dense: every floating-point tensor of the state dict at 32 bits (parameters and buffers).
- pruned: each kept weight costs 32 value bits plus its relative index (8 bits in conv layers,
  5 in fc layers), filler entries included; layers that were not pruned stay dense.
- quantized: each kept weight costs ``bits`` (its cluster index) plus the relative index, and
  each layer adds its codebook of ``2**bits`` float32 centroids. A quantized layer that was not
  pruned stores only cluster indices.
Everything that is not a prunable weight (biases, batch norm) counts as dense float32. Row
pointers and file headers are not counted here, as in the paper; the encoded stage's size is the
real ``.dc`` file, every byte counted. Which tensors are prunable weights, and the paper's
default widths per layer kind, are defined here too (prune and quantize count the same way).
"""
from __future__ import annotations

import numpy as np

from .dc.sparse import as_2d, entries

__all__ = ["dense_bytes", "layer_sizes", "stage_sizes", "format_ratio", "is_prunable_weight",
           "default_index_bits", "default_weight_bits"]


def is_prunable_weight(name: str, t) -> bool:
    """Convolution and linear weights (2-D or more, floating point); never biases or norms."""
    return name.endswith("weight") and t.ndim >= 2 and t.is_floating_point()


def default_index_bits(t) -> int:
    """Paper, section 2: 8 bits for convolution layers, 5 bits for fully connected layers."""
    return 8 if t.ndim > 2 else 5


def default_weight_bits(t) -> int:
    """Paper, section 3: 8 bits (256 shared weights) for conv layers, 5 bits (32) for fc layers."""
    return 8 if t.ndim > 2 else 5


def format_ratio(ratio: float) -> str:
    """``12.3x``; a ratio below 1 (a file larger than the dense model) keeps three decimals,
    so it never reads as 1.0x."""
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.3f}x"


def dense_bytes(state_dict: dict) -> int:
    return 4 * sum(t.numel() for t in state_dict.values() if t.is_floating_point())


def layer_sizes(sf, index_bits: dict | None = None) -> list[dict]:
    """One row per prunable weight: counts, bits and the paper's P+Q size in bits."""
    rows = []
    for name, w in sf.state_dict.items():
        if not (is_prunable_weight(name, w) or name in sf.masks):     # a pruned bias counts too
            continue
        n = w.numel()
        mask = sf.masks.get(name)
        q = sf.quant.get(name)
        ibits = (index_bits or {}).get(name, default_index_bits(w))
        wbits = int(q["bits"]) if q else 32
        codebook_bits = 32 * int(q["codebook"].numel()) if q else 0
        if mask is None:
            kept, stored, ibits_used = n, n, 0
        else:
            m = mask.numpy().reshape(as_2d(w.shape))
            kept = int(m.sum())
            stored = min(entries(m, "csr", ibits), entries(m, "csc", ibits))
            ibits_used = ibits
        bits = stored * (wbits + ibits_used) + codebook_bits
        rows.append({"name": name, "shape": list(w.shape), "weights": n, "kept": kept,
                     "kept_share": kept / n, "weight_bits": wbits, "index_bits": ibits_used,
                     "entries": stored, "bits": bits,
                     "ratio": 32 * n / bits if bits else None})   # None: nothing stored
    return rows


def stage_sizes(sf) -> dict:
    """Totals for a stage: parameter count, non-zeros, dense bytes and the paper-style bytes."""
    layers = layer_sizes(sf)
    layer_names = {r["name"] for r in layers}
    other_bits = 32 * sum(t.numel() for k, t in sf.state_dict.items()
                          if t.is_floating_point() and k not in layer_names)
    total_bits = other_bits + sum(r["bits"] for r in layers)
    dense = dense_bytes(sf.state_dict)
    prunable = sum(r["weights"] for r in layers)
    kept = sum(r["kept"] for r in layers)
    params = sum(t.numel() for k, t in sf.state_dict.items()
                 if t.is_floating_point() and "running_" not in k)
    nbytes = int(np.ceil(total_bits / 8))
    return {"params": params, "prunable": prunable, "kept": kept,
            "nonzero_share": kept / max(prunable, 1), "dense_bytes": dense,
            "bytes": nbytes, "ratio": dense / max(nbytes, 1)}
