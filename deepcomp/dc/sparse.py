"""The gap codec of sparse tensors (Han et al. 2016, section 2; docs/FORMAT.md, "Sparse
positions"), both directions; the size accounting (deepcomp.sizes) counts with it too.

A weight is flattened to 2-D ``[out, in*kh*kw]`` and its non-zeros are walked in row order
(CSR) or column order (CSC). Each position is stored as the gap from the previous one,
``gap - 1`` in a fixed number of index bits; a gap larger than ``2**bits`` is bridged by filler
entries holding a zero weight (paper, Figure 2). In a file's gap stream a filler is the symbol
``2**bits``. Numpy only.
"""
from __future__ import annotations

import numpy as np

__all__ = ["as_2d", "walk", "relative_index", "gap_symbols", "gap_positions", "row_major",
           "filler_free_bits", "expand_relative", "entries"]


def as_2d(shape) -> tuple[int, int]:
    rows = int(shape[0])
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return rows, cols


def walk(mask: np.ndarray, order: str) -> np.ndarray:
    """Linear positions (in walk order) of the True entries of a 2-D mask; 'csr' or 'csc'."""
    m = mask if order == "csr" else mask.T
    return np.flatnonzero(m.reshape(-1))


def row_major(pos: np.ndarray, order: str, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`walk`'s numbering: positions in walk order as row-major indices of the
    ``rows x cols`` matrix (a csc position is ``c * rows + r``)."""
    if order == "csr":
        return pos
    return (pos % rows) * cols + pos // rows if rows else pos


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


def gap_positions(symbols: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`gap_symbols`: the positions of the kept weights, in walk order. The
    caller checks the count and that the stream does not end in a filler."""
    span = 1 << bits
    g = symbols.astype(np.int64)
    real = g != span
    return (np.cumsum(np.where(real, g + 1, span)) - 1)[real]


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
