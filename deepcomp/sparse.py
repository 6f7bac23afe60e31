"""Sparse layout shared by the size accounting and the .dc encoder (Han et al. 2016, section 2).

A weight is flattened to 2-D ``[out, in*kh*kw]`` and its non-zeros are walked in row order
(CSR) or column order (CSC). Each position is stored as the gap from the previous one,
``gap - 1`` in a fixed number of index bits; a gap larger than ``2**bits`` is bridged by filler
entries holding a zero weight (paper, Figure 2).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_2d", "walk", "relative_index", "gap_symbols", "filler_free_bits",
           "expand_relative", "default_index_bits",
           "default_weight_bits", "is_prunable_weight", "entries"]


def is_prunable_weight(name: str, t: torch.Tensor) -> bool:
    """Convolution and linear weights (2-D or more, floating point); never biases or norms."""
    return name.endswith("weight") and t.ndim >= 2 and t.is_floating_point()


def default_index_bits(t) -> int:
    """Paper, section 2: 8 bits for convolution layers, 5 bits for fully connected layers."""
    return 8 if t.ndim > 2 else 5


def default_weight_bits(t) -> int:
    """Paper, section 3: 8 bits (256 shared weights) for conv layers, 5 bits (32) for fc layers."""
    return 8 if t.ndim > 2 else 5


def as_2d(shape) -> tuple[int, int]:
    rows = int(shape[0])
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return rows, cols


def walk(mask: np.ndarray, order: str) -> np.ndarray:
    """Linear positions (in walk order) of the True entries of a 2-D mask; 'csr' or 'csc'."""
    m = mask if order == "csr" else mask.T
    return np.flatnonzero(m.reshape(-1))


def relative_index(positions: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaps as stored (``gap - 1``, each < 2**bits) and the slot of every real entry.

    Returns ``(stored, real_slots)``: ``stored`` has one entry per real non-zero plus one per
    filler; ``real_slots`` gives, for each real non-zero, its slot in ``stored``.
    """
    span = 1 << bits
    gaps = np.diff(positions.astype(np.int64), prepend=-1)           # first gap counts from -1
    fillers = (gaps - 1) // span                                       # entries needed to bridge
    slots = np.arange(len(gaps)) + np.cumsum(fillers)
    stored = np.full(len(gaps) + int(fillers.sum()), span - 1, dtype=np.int64)
    stored[slots] = gaps - 1 - fillers * span
    return stored, slots


def gap_symbols(positions: np.ndarray, bits: int) -> np.ndarray:
    """The gap stream of a .dc file (docs/FORMAT.md, "Sparse positions"): ``gap - 1`` for each
    kept weight, each filler as the symbol ``2**bits``."""
    stored, slots = relative_index(positions, bits)
    filler = np.ones(len(stored), bool)
    filler[slots] = False
    stored[filler] = 1 << bits
    return stored


def filler_free_bits(positions: np.ndarray, cap: int) -> int:
    """The fewest index bits (at most ``cap``) at which no gap needs a filler: wider indices
    code the same gaps with a larger alphabet."""
    if len(positions) == 0:
        return 1
    widest = int(np.diff(positions.astype(np.int64), prepend=-1).max())     # gap - 1 < 2**bits
    return min(cap, max(1, (widest - 1).bit_length()))


def expand_relative(stored: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`relative_index`: absolute positions of every stored slot (fillers too)."""
    return np.cumsum(stored.astype(np.int64) + 1) - 1


def entries(mask: np.ndarray, order: str, bits: int) -> int:
    """Stored entries (non-zeros plus fillers) for a 2-D mask in one order."""
    pos = walk(mask, order)
    if len(pos) == 0:
        return 0
    gaps = np.diff(pos, prepend=-1)
    return int(len(pos) + ((gaps - 1) >> bits).sum())
