"""Canonical Huffman coding of symbol streams, vectorized with numpy (Han et al. 2016, section 4).

A code is given by its code lengths only (docs/FORMAT.md, "Huffman streams"): symbols sorted by
(length, value) get consecutive codes. Lengths are capped at :data:`MAX_CODE_LENGTH` so a code
table fits in 4 bits per symbol and the decoding table in ``2**15`` entries.

Decoding has no loop over symbols. For every bit position ``p`` of the stream, a table lookup of
the 15-bit window starting at ``p`` gives the length of the code word that would start there, so
``next[p] = p + length``. The symbols start on the chain ``0, next[0], next[next[0]], ...``:
``next`` is raised to the power ``2**K`` by ``K`` squarings, the chain is followed in jumps of
``2**K`` symbols, and the ``2**K`` symbols between two jumps are filled in lockstep for all jumps
at once. ``K`` is chosen per segment of the stream to balance the two costs.
"""
from __future__ import annotations

import heapq

import numpy as np

from .errors import CountMismatchError, FormatError

__all__ = ["MAX_CODE_LENGTH", "code_lengths", "canonical_codes", "encode", "decode", "decode_many",
           "pack_lengths", "unpack_lengths", "shannon_bits"]

MAX_CODE_LENGTH = 15          # code lengths are stored in 4-bit nibbles (1..15, 0 = unused)


def code_lengths(freqs, max_len: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths (uint8, 0 for unused symbols) for symbol frequencies, at most
    ``max_len`` bits long (lengthened codes are rebalanced as in JPEG, ITU T.81 Annex K.3)."""
    freqs = np.asarray(freqs, dtype=np.int64)
    lengths = np.zeros(len(freqs), np.uint8)
    used = np.flatnonzero(freqs > 0)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    if len(used) > (1 << max_len):
        raise ValueError(f"{len(used)} symbols do not fit codes of at most {max_len} bits")
    # Huffman's merge on (frequency, node id): ties broken by id, so the result is deterministic.
    m = len(used)
    heap = [(int(f), i) for i, f in enumerate(freqs[used])]
    heapq.heapify(heap)
    parent = np.zeros(2 * m - 1, np.int64)
    node = m
    while len(heap) > 1:
        f1, a = heapq.heappop(heap)
        f2, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (f1 + f2, node))
        node += 1
    depth = np.zeros(2 * m - 1, np.int64)
    for i in range(2 * m - 3, -1, -1):            # parents have larger ids than their children
        depth[i] = depth[parent[i]] + 1
    count = np.bincount(depth[:m], minlength=max_len + 1).astype(np.int64)
    for i in range(len(count) - 1, max_len, -1):  # JPEG Annex K.3: move pairs up until <= max_len
        while count[i] > 0:
            j = i - 2
            while count[j] == 0:
                j -= 1
            count[i] -= 2
            count[i - 1] += 1
            count[j + 1] += 2
            count[j] -= 1
    # The most frequent symbols get the shortest codes (ties: the smaller symbol first).
    by_freq = used[np.lexsort((used, -freqs[used]))]
    lengths[by_freq] = np.repeat(np.arange(len(count)), count)[: m]
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """The canonical code of every symbol (uint32; 0 for unused ones). Raises
    :class:`FormatError` for lengths over 15 or lengths that violate Kraft's inequality."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.min() < 0 or lengths.max() > MAX_CODE_LENGTH):
        raise FormatError(f"Huffman code lengths must lie in 0..{MAX_CODE_LENGTH}")
    count = np.bincount(lengths, minlength=MAX_CODE_LENGTH + 1)
    count[0] = 0
    if int((count << (MAX_CODE_LENGTH - np.arange(MAX_CODE_LENGTH + 1))).sum()) > 1 << MAX_CODE_LENGTH:
        raise FormatError("Huffman code lengths are over-subscribed (Kraft sum above 1)")
    first = np.zeros(MAX_CODE_LENGTH + 2, np.int64)       # first code of each length (RFC 1951)
    for n in range(1, MAX_CODE_LENGTH + 1):
        first[n] = (first[n - 1] + count[n - 1]) << 1
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    lo = lengths[order]
    rank = np.arange(len(order)) - np.searchsorted(lo, lo)   # position among equal lengths
    codes = np.zeros(len(lengths), np.uint32)
    codes[order] = (first[lo] + rank).astype(np.uint32)
    return codes


def encode(symbols, lengths) -> tuple[bytes, int]:
    """Pack ``symbols`` with the canonical code of ``lengths``: (bytes, number of bits used)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(symbols) == 0:
        return b"", 0
    codes = canonical_codes(lengths).astype(np.int64)
    n = lengths[symbols]
    if n.min() == 0:
        raise ValueError("a symbol of the stream has no code")
    c = codes[symbols]
    ends = np.cumsum(n)
    starts = ends - n
    bits = np.zeros(int(ends[-1]), np.uint8)
    for j in range(int(n.max())):                 # one pass per bit of the longest code
        sel = np.flatnonzero(n > j) if j else slice(None)
        bits[starts[sel] + j] = (c[sel] >> (n[sel] - 1 - j)) & 1
    return np.packbits(bits).tobytes(), int(ends[-1])


def decode(buf, lengths, count: int, what: str = "stream") -> np.ndarray:
    """Decode exactly ``count`` symbols (int32) from ``buf``; the symbols must end in the last
    byte and the padding bits be zero. Malformed input raises a :class:`FormatError`."""
    return decode_many([(buf, lengths, count, what)])[0]


_INVALID = 1 << 40          # advance at an unassigned code word: leaves every lane at once
_LANE_SYMBOLS = 48          # symbols per lane
_OVERLAP_SYMBOLS = 12       # a lane runs this far into the next one to meet its path


class _Stream:
    """One stream of a :func:`decode_many` batch: its bits and its decoding table."""

    def __init__(self, buf, lengths, count, what):
        self.data = np.frombuffer(buf, dtype=np.uint8)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.count, self.what = int(count), what
        self.nbits = 8 * len(self.data)
        if self.count < 0:
            raise CountMismatchError(f"{what}: negative symbol count")
        if self.count == 0:
            if self.nbits:
                raise CountMismatchError(f"{what}: {len(self.data)} bytes for 0 symbols")
            return
        codes = canonical_codes(self.lengths).astype(np.int64)
        used = np.flatnonzero(self.lengths)
        if len(used) == 0:
            raise FormatError(f"{what}: {count} symbols but an empty code table")
        self.L = L = int(self.lengths.max())
        lo = int(self.lengths[used].min())
        if self.count * lo > self.nbits or len(self.data) > -(-self.count * L // 8):
            raise CountMismatchError(f"{what}: {len(self.data)} bytes cannot hold {count} "
                                     f"symbols of {lo}..{L} bits")
        # Lookup table over L-bit windows: the code word each window starts with.
        span = np.int64(1) << (L - self.lengths[used])
        offs = np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span)
        slot = np.repeat(codes[used] << (L - self.lengths[used]), span) + offs
        self.adv = np.full(1 << L, _INVALID, np.int64)
        self.sym = np.zeros(1 << L, np.int32)
        self.adv[slot] = np.repeat(self.lengths[used], span)
        self.sym[slot] = np.repeat(used, span)

    def finish(self, pos, adv, sym, sbit=0) -> np.ndarray:
        """Check the first ``count`` decoded symbols (start bits ``pos``, advances ``adv``)
        and the stream's end; return their symbols."""
        pos, adv, sym = pos[: self.count], adv[: self.count], sym[: self.count]
        if (adv == _INVALID).any():
            at = int(pos[np.argmax(adv == _INVALID)]) - sbit
            raise FormatError(f"{self.what}: invalid Huffman code word at bit {at}")
        if len(pos) < self.count:
            raise CountMismatchError(f"{self.what}: the stream holds {len(pos)} of "
                                     f"{self.count} symbols")
        end = int(pos[-1] + adv[-1]) - sbit
        if end > self.nbits:
            raise CountMismatchError(f"{self.what}: the last symbol runs past the end of the stream")
        if self.nbits - end >= 8:
            raise CountMismatchError(f"{self.what}: {(self.nbits - end) // 8} bytes left after "
                                     f"{self.count} symbols")
        if end < self.nbits and int(self.data[-1]) & ((1 << (self.nbits - end)) - 1):
            raise FormatError(f"{self.what}: padding bits after the last symbol are not zero")
        return sym.astype(np.int32)


def decode_many(streams) -> list[np.ndarray]:
    """Decode several ``(buf, lengths, count, what)`` streams at once; see :func:`decode`.

    Every stream is cut into lanes of about 48 symbols' worth of bits, and all lanes of all
    streams are decoded in lockstep, one symbol per lane per numpy step. A lane other than a
    stream's first starts at its first bit, which need not be a code word boundary; Huffman codes
    resynchronize within a few symbols, so each lane runs on into the next, and the true path
    switches from a lane to the next where their paths meet. A stream where two lanes do not
    meet (a code that does not resynchronize, such as one of equal lengths) is decoded by
    :func:`_decode_bitwise` instead.
    """
    parsed = [_Stream(*s) for s in streams]
    out = [np.empty(0, np.int32) for _ in parsed]
    live = [i for i, s in enumerate(parsed) if s.count]
    if not live:
        return out
    # All streams in one byte buffer; the 32-bit big-endian word at every byte.
    first_byte = np.cumsum([0] + [len(parsed[i].data) for i in live])
    data = np.concatenate([parsed[i].data for i in live] + [np.zeros(4, np.uint8)]).astype(np.uint32)
    words = (data[:-3] << 24) | (data[1:-2] << 16) | (data[2:-1] << 8) | data[3:]
    adv_tbl = np.concatenate([parsed[i].adv for i in live])
    sym_tbl = np.concatenate([parsed[i].sym for i in live])
    tbl_base = np.cumsum([0] + [1 << parsed[i].L for i in live])

    # Lanes of C bits; each runs W bits into the next lane.
    cols = {k: [] for k in ("start", "stop", "stream", "shift", "mask", "base", "W")}
    for k, i in enumerate(live):
        s = parsed[i]
        sbit, ebit = 8 * int(first_byte[k]), 8 * int(first_byte[k + 1])
        avg = s.nbits / s.count
        W = max(2 * s.L, int(_OVERLAP_SYMBOLS * avg))
        C = max(2 * W, int(_LANE_SYMBOLS * avg))
        starts = np.arange(sbit, ebit, C, dtype=np.int64)
        cols["start"].append(starts)
        cols["stop"].append(np.minimum(starts + C + W, ebit))
        for key, v in (("stream", k), ("shift", 32 - s.L), ("mask", (1 << s.L) - 1),
                       ("base", int(tbl_base[k])), ("W", W)):
            cols[key].append(np.full(len(starts), v, np.int64))
    lane = {k: np.concatenate(v) for k, v in cols.items()}
    M = len(lane["start"])

    # Lockstep: P[r, j] is where lane j's r-th symbol starts, T[r, j] its table slot.
    def run(idx, starts):
        pos = starts.astype(np.int64)
        stop, shift = lane["stop"][idx], lane["shift"][idx]
        mask, base = lane["mask"][idx], lane["base"][idx]
        ps, ts = [], []
        while True:
            w = words.take(pos >> 3, mode="clip")
            t = ((w >> (shift - (pos & 7))) & mask) + base
            ps.append(pos)
            ts.append(t)
            pos = pos + adv_tbl.take(t)
            if len(ps) % 4 == 0 and (pos >= stop).all():
                return np.stack(ps), np.stack(ts)

    first = np.ones(M, bool)
    first[1:] = lane["stream"][1:] != lane["stream"][:-1]
    exact = first.copy()                # lanes whose path starts on a true code word boundary
    P, T = run(np.arange(M), lane["start"])
    for _ in range(_ROUNDS):
        meet, met = _meet(P, lane, exact)
        if met.all():
            break
        # Decode again every lane that missed its predecessor, from where the predecessor's
        # path enters it. That entry is exact once the predecessor is right, which is checked
        # again in the next round: a lane whose predecessor changed is no longer exact.
        redo = np.flatnonzero(~met)
        prev = P[:, redo - 1]
        entry = prev[(prev >= lane["start"][redo]).argmax(0), np.arange(len(redo))]
        P2, T2 = run(redo, entry)
        if P2.shape[0] > P.shape[0]:
            grow = P2.shape[0] - P.shape[0]
            P = np.pad(P, ((0, grow), (0, 0)), constant_values=_FAR)
            T = np.pad(T, ((0, grow), (0, 0)))
        P[:, redo] = _FAR
        P[: P2.shape[0], redo] = P2
        T[: T2.shape[0], redo] = T2
        exact[redo] = True
        after = redo + 1
        after = after[after < M]
        exact[after[~first[after]]] = False
    else:
        meet, met = _meet(P, lane, exact)

    # Lane j's symbols: from its meeting point with lane j-1 up to its meeting point with
    # lane j+1 (for a stream's last lane: up to the stream's end).
    upto = np.empty(M, np.int64)
    upto[:-1] = np.where(first[1:], lane["stop"][:-1], meet[1:])
    upto[-1] = lane["stop"][-1]
    sel = ((P >= meet) & (P < upto)).T
    pos_all, slot_all = P.T[sel], T.T[sel]
    per_stream = np.bincount(lane["stream"], weights=sel.sum(1), minlength=len(live)).astype(np.int64)
    bad = np.bincount(lane["stream"], weights=~met, minlength=len(live)) > 0
    bounds = np.cumsum(np.concatenate([[0], per_stream]))
    for k, i in enumerate(live):
        s = parsed[i]
        if bad[k]:
            out[i] = _decode_bitwise(s)
            continue
        slots = slot_all[bounds[k]:bounds[k + 1]]
        out[i] = s.finish(pos_all[bounds[k]:bounds[k + 1]], adv_tbl[slots], sym_tbl[slots],
                          8 * int(first_byte[k]))
    return out


_ROUNDS = 4                 # rounds of re-decoding lanes that missed their predecessor
_FAR = 1 << 62              # a position past every stream: padding of shorter paths


def _meet(P, lane, exact):
    """Where the path of lane j-1 meets the path of lane j: the first position of lane j-1 in
    ``[start_j, start_j + W)`` that lane j's path also visits. A lane that starts exactly on
    its predecessor's path meets it at its own start. Returns (meet positions, met flags)."""
    M = P.shape[1]
    start, W = lane["start"], lane["W"]
    rel = P - start
    seen = np.zeros((M, int(W.max())), bool)           # lane j's positions in its first W bits
    r, j = np.nonzero((rel >= 0) & (rel < W))
    seen[j, rel[r, j]] = True
    relp = P[:, :-1] - start[1:]                        # lane j-1 relative to start_j
    hit = np.zeros(relp.shape, bool)
    r, j = np.nonzero((relp >= 0) & (relp < W[1:]))
    hit[r, j] = seen[j + 1, relp[r, j]]
    met = np.ones(M, bool)
    met[1:] = hit.any(0)
    meet = np.full(M, -1, np.int64)
    meet[1:] = P[:, :-1][hit.argmax(0), np.arange(M - 1)]
    meet[exact] = P[0, exact]
    met |= exact
    meet[~met] = -1
    return meet, met


_SEGMENT_BITS = 1 << 20     # the bitwise decoder's working set: ~40 bytes per bit of a segment


def _decode_bitwise(s: _Stream) -> np.ndarray:
    """Decoding that does not rely on resynchronization. For every bit position ``p`` of a
    segment, the table gives ``next[p] = p + length`` of the code word starting there; symbols
    start on the chain ``0, next[0], next[next[0]], ...``, found by raising ``next`` to the power
    ``2**K`` (``K`` squarings), following the chain in jumps of ``2**K`` symbols and filling in the
    symbols between jumps in lockstep."""
    L, nbits = s.L, s.nbits
    pad = np.concatenate([s.data, np.zeros(4, np.uint8)]).astype(np.uint32)
    out_pos, out_slot = [], []
    filled, pos = 0, 0
    while filled < s.count and pos < nbits:
        n = min(_SEGMENT_BITS, nbits - pos)
        p = pos + np.arange(n, dtype=np.int64)
        b0, b1 = pos >> 3, ((pos + n - 1) >> 3) + 1
        words = (pad[b0:b1] << 24) | (pad[b0 + 1:b1 + 1] << 16) | (pad[b0 + 2:b1 + 2] << 8) \
            | pad[b0 + 3:b1 + 3]
        slot = (words[(p >> 3) - b0] >> (32 - L - (p & 7))) & ((1 << L) - 1)
        adv = s.adv[slot]
        # next[] over the segment; positions >= n (leaving it) loop onto themselves.
        nxt = np.arange(n + L + 1, dtype=np.int64)
        nxt[:n] = np.minimum(np.arange(n) + adv, n + L)
        chain = _chain(nxt, n, s.count - filled, nbits / s.count)
        out_pos.append(chain + pos)
        out_slot.append(slot[chain])
        filled += len(chain)
        last = int(chain[-1])
        if adv[last] == _INVALID:
            break
        pos += last + int(adv[last])
    pos_all = np.concatenate(out_pos)
    slots = np.concatenate(out_slot)
    return s.finish(pos_all, s.adv[slots], s.sym[slots])


def _chain(nxt: np.ndarray, n: int, limit: int, avg_bits: float) -> np.ndarray:
    """Positions 0, nxt[0], ... that lie below ``n``, at most ``limit`` of them."""
    nsym = min(limit, int(n / max(avg_bits, 1.0)) + 1)
    # Cost in ns: K squarings of an n-long table, nsym / 2**K jumps in Python, 2**K lockstep rows.
    costs = [k * n * 3 + (nsym >> k) * 150 + (1 << k) * (3000 + 2 * (nsym >> k)) for k in range(21)]
    k = int(np.argmin(costs))
    jump = nxt
    for _ in range(k):
        jump = jump[jump]
    starts, q = [0], 0
    while q < n and len(starts) << k < limit:
        q = int(jump[q])
        starts.append(q)
    rows = np.empty((1 << k, len(starts)), np.int64)
    rows[0] = starts
    for i in range(1, 1 << k):
        rows[i] = nxt[rows[i - 1]]
    chain = rows.T.reshape(-1)
    outside = chain >= n
    inside = int(np.argmax(outside)) if outside.any() else len(chain)
    return chain[:min(inside, limit)]


def pack_lengths(lengths) -> bytes:
    """Code lengths as 4-bit nibbles, low nibble first, cut after the last used symbol."""
    lengths = np.asarray(lengths, dtype=np.uint8)
    used = np.flatnonzero(lengths)
    n = int(used[-1]) + 1 if len(used) else 0
    x = np.zeros(n + (n & 1), np.uint8)
    x[:n] = lengths[:n]
    return (x[0::2] | (x[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_lengths(buf, alphabet: int, what: str = "code table") -> np.ndarray:
    """Inverse of :func:`pack_lengths` for an alphabet of ``alphabet`` symbols."""
    b = np.frombuffer(buf, dtype=np.uint8)
    if 2 * len(b) > alphabet + 1:
        raise CountMismatchError(f"{what}: {len(b)} bytes for an alphabet of {alphabet} symbols")
    x = np.empty(2 * len(b), np.uint8)
    x[0::2] = b & 15
    x[1::2] = b >> 4
    if len(x) > alphabet and x[alphabet:].any():
        raise FormatError(f"{what}: a code for a symbol outside the alphabet of {alphabet}")
    if len(b) and x[-2:].max() == 0:
        raise FormatError(f"{what}: the table does not end with a used symbol")
    out = np.zeros(alphabet, np.uint8)
    out[:min(len(x), alphabet)] = x[:alphabet]
    return out


def shannon_bits(symbols) -> float:
    """The Shannon bound of a stream: its length times its zeroth-order entropy, in bits."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64))
    counts = counts[counts > 0]
    n = counts.sum()
    return float((counts * np.log2(n / counts)).sum()) if n else 0.0
