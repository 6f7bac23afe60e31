"""Canonical Huffman coding of symbol streams, vectorized with numpy (Han et al. 2016, section 4).

A code is given by its code lengths only (docs/FORMAT.md, "Huffman streams"): symbols sorted by
(length, value) get consecutive codes. Lengths are capped at :data:`MAX_CODE_LENGTH` so a code
table fits in 4 bits per symbol and a decoding table in ``2**15`` entries.

Neither direction loops over symbols in Python. Encoding writes bit ``j`` of every code word in
one numpy pass per bit position. Decoding (:func:`decode_many`) cuts every stream into lanes of
about 128 symbols and decodes all lanes of all streams of a file in lockstep, one table lookup
per lane per step; Huffman codes resynchronize, so a lane that starts in the middle of a code
word soon joins the true path, and the lanes are stitched together where their paths agree.
Codes that do not resynchronize fall back to :func:`_decode_bitwise`, which finds the chain of
code word starts by pointer doubling over all bit positions.
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np

from ..errors import CountMismatchError, FormatError

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


_LANE_SYMBOLS = 128         # symbols per lane, at most: fewer steps against more lanes
_BATCH_BITS = 1 << 23       # stream bits decoded together
_MIN_LANES = 512            # small batches get shorter lanes (down to the overlap), not fewer
_OVERLAP_SYMBOLS = 16       # a lane runs this far into the next one to meet its path


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
        self.adv = np.ones(1 << L, np.int64)       # an unassigned code word: one bit,
        self.sym = np.full(1 << L, -1, np.int32)    # symbol -1 (an error if it is needed)
        self.adv[slot] = np.repeat(self.lengths[used], span)
        self.sym[slot] = np.repeat(used, span)

    def finish(self, pos, adv, sym, sbit=0) -> np.ndarray:
        """Check the first ``count`` decoded symbols (start bits ``pos``, advances ``adv``)
        and the stream's end; return their symbols."""
        pos, adv, sym = pos[: self.count], adv[: self.count], sym[: self.count]
        if len(sym) and sym.min() < 0:
            at = int(pos[np.argmax(sym < 0)]) - sbit
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
    """Decode several ``(buf, lengths, count, what)`` streams; see :func:`decode`. Streams are
    decoded together in batches of up to 2**23 bits (one larger stream alone), which bounds the
    working set: about 60 bytes per symbol of a batch."""
    streams = list(streams)
    out, batch, bits = [None] * len(streams), [], 0
    for i, s in enumerate(streams):
        n = 8 * len(s[0])
        if batch and bits + n > _BATCH_BITS:
            for k, sym in zip(batch, _decode_batch([streams[k] for k in batch])):
                out[k] = sym
            batch, bits = [], 0
        batch.append(i)
        bits += n
    for k, sym in zip(batch, _decode_batch([streams[k] for k in batch])):
        out[k] = sym
    return out


def _decode_batch(streams) -> list[np.ndarray]:
    """Decode a batch of streams at once.

    Every stream is cut into lanes of up to 128 symbols' worth of bits, and all lanes of all
    streams are decoded in lockstep, one symbol per lane per numpy step. A lane other than a
    stream's first starts at its first bit, which need not be a code word boundary; Huffman codes
    resynchronize within a few symbols, so each lane runs on into the next, and the true path
    passes from a lane to the next where their paths agree. A lane whose path has not met its
    predecessor's by then is decoded again from where the predecessor's path enters it. A stream
    that still has such lanes after a few rounds (a code that does not resynchronize, such as one
    of equal lengths) is decoded by :func:`_decode_bitwise` instead.
    """
    streams = list(streams)
    out = [np.empty(0, np.int32) for _ in streams]
    datas = [np.frombuffer(s[0], dtype=np.uint8) for s in streams]
    lens = [np.asarray(s[1], dtype=np.int64).reshape(-1) for s in streams]
    counts = np.array([int(s[2]) for s in streams], np.int64)
    nbytes = np.array([len(d) for d in datas], np.int64)
    if len(streams) == 0:
        return out
    codes = _check_code_tables(streams, lens, counts, nbytes)
    if codes is None:                   # no stream has symbols
        return out
    adv_tbl, sym_tbl, tbase = _window_tables(codes)
    lanes = _Lanes(codes, datas, nbytes, tbase, adv_tbl)
    P, T = lanes.run(np.arange(lanes.M), lanes.start)
    lo, hi, handover, entry = _handovers(lanes, P)
    P, T = _redecode_unmet(lanes, P, T, lo, hi, handover, entry)
    unsynced = np.bincount(lanes.stream, weights=handover != entry, minlength=len(codes.live)) > 0
    slot_all, sym_all, n_lane, off = _gather_symbols(T, lo, hi, sym_tbl)
    ok, start_of, take = _accept_streams(codes, lanes, datas, P, lo, off, n_lane, slot_all,
                                         sym_all, unsynced)
    for j, i in enumerate(codes.live):
        if ok[j]:
            out[i] = sym_all[start_of[j]:start_of[j] + take[j]]
        else:                      # the bitwise decoder decodes it, or raises the stream's error
            out[i] = _decode_bitwise(_Stream(*streams[i]))
    return out


class _Codes(NamedTuple):
    """The code tables of a batch's live streams (those with symbols), checked; ``k`` of them.
    The per-symbol arrays hold every live stream's code lengths back to back."""
    live: np.ndarray        # (k,) the batch index of each live stream
    lengths: np.ndarray     # code length of each symbol of each live stream (0: unused)
    stream: np.ndarray      # the live stream (0..k-1) each entry of ``lengths`` belongs to
    symbol: np.ndarray      # the symbol each entry of ``lengths`` is the length of
    max_len: np.ndarray     # (k,) the longest code of each stream: its window width
    nbits: np.ndarray       # (k,) the bits of each stream's buffer
    count: np.ndarray       # (k,) the symbols each stream holds


def _check_code_tables(streams, lens, counts, nbytes) -> _Codes | None:
    """Check the counts and code tables of all streams of a batch at once: lengths in range, the
    counts per length against Kraft's inequality, a non-empty table, and a buffer size that fits
    the count (docs/FORMAT.md). A malformed stream raises its own error (the first one's, as
    :class:`_Stream` gives it). Return the live streams' tables; None where no stream has symbols.
    """
    bad = (counts < 0) | ((counts == 0) & (nbytes > 0))
    live = np.flatnonzero(counts > 0)
    k = len(live)
    codes = None
    if k:
        size = np.array([len(lens[i]) for i in live], np.int64)
        L_all = np.concatenate([lens[i] for i in live]) if size.sum() else np.zeros(0, np.int64)
        sid = np.repeat(np.arange(k), size)
        sym = np.arange(len(L_all)) - np.repeat(np.cumsum(size) - size, size)
        bad_len = np.bincount(sid, weights=(L_all < 0) | (L_all > MAX_CODE_LENGTH),
                              minlength=k) > 0
        Lc = np.clip(L_all, 0, MAX_CODE_LENGTH)
        cnt = np.bincount(sid * 16 + Lc, minlength=16 * k).reshape(k, 16)
        cnt[:, 0] = 0
        kraft = (cnt << (MAX_CODE_LENGTH - np.arange(16))).sum(1) > 1 << MAX_CODE_LENGTH
        has = cnt > 0
        Lmax = np.where(has.any(1), 15 - np.argmax(has[:, ::-1], 1), 0)
        Lmin = np.where(has.any(1), np.argmax(has, 1), 0)
        nb = 8 * nbytes[live]
        cl = counts[live]
        fits = (cl * Lmin <= nb) & (nbytes[live] <= -(-cl * Lmax // 8))
        bad[live] |= bad_len | kraft | ~has.any(1) | ~fits
        codes = _Codes(live, L_all, sid, sym, Lmax, nb, cl)
    if bad.any():
        i = int(np.argmax(bad))
        _Stream(*streams[i])              # raises the stream's own error
        raise FormatError(f"{streams[i][3]}: malformed stream")
    return codes


def _window_tables(codes: _Codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stream's window table, back to back: (advance in bits, symbol, where each stream's
    table starts). Stream ``j``'s table has an entry for each of the ``2**max_len[j]`` windows
    of its longest code's width: the code word that window starts with.

    Canonical codes grow with (length, symbol), so a stream's table is each symbol repeated over
    the 2**(max_len - length) windows its code starts, in that order, then the windows no code
    starts (advance one bit, symbol -1: an error where it is needed)."""
    k, Lmax = len(codes.live), codes.max_len
    used = np.flatnonzero(codes.lengths > 0)
    tsize = np.int64(1) << Lmax
    tbase = np.cumsum(tsize) - tsize
    us, ul, uy = codes.stream[used], codes.lengths[used], codes.symbol[used]
    span = np.int64(1) << (Lmax[us] - ul)
    rest = tsize - np.bincount(us, weights=span, minlength=k).astype(np.int64)
    us = np.concatenate([us, np.arange(k)])
    ul = np.concatenate([ul, np.full(k, 16)])
    uy = np.concatenate([uy, np.full(k, -1)])
    span = np.concatenate([span, rest])
    o = np.lexsort((uy, ul, us))
    adv_tbl = np.repeat(np.where(ul[o] == 16, 1, ul[o]).astype(np.uint8), span[o])
    sym_tbl = np.repeat(uy[o].astype(np.int32), span[o])
    return adv_tbl, sym_tbl, tbase


class _Lanes:
    """The lanes of a batch's live streams, ``M`` in all, in stream order, and :meth:`run`, which
    decodes any of them in lockstep.

    All streams lie in one byte buffer, read through the 64-bit big-endian word at every byte.
    Each stream is cut into lanes of C bits, about ``per_lane`` symbols; each lane runs W bits
    (about _OVERLAP_SYMBOLS symbols) on into the next one. Lane j takes over from lane j-1 at the
    first position of its path at or past its threshold ``thr_j = start_j + W``; lane j-1 runs
    that far, so the two agree there once they have met.
    """

    def __init__(self, codes: _Codes, datas, nbytes, tbase, adv_tbl):
        live, nb, cl, Lmax = codes.live, codes.nbits, codes.count, codes.max_len
        k = len(live)
        first_byte = np.concatenate([[0], np.cumsum(nbytes[live])])
        data = np.concatenate([datas[i] for i in live] + [np.zeros(8, np.uint8)])
        self.words = np.ndarray((len(data) - 7,), ">u8", data, strides=(1,)).astype(np.uint64)
        self.adv_tbl = adv_tbl
        # Lanes of C bits; each runs W bits into the next lane.
        avg = nb / cl
        per_lane = min(_LANE_SYMBOLS, max(_OVERLAP_SYMBOLS, int(cl.sum()) // _MIN_LANES))
        W = np.maximum(2 * Lmax, (_OVERLAP_SYMBOLS * avg).astype(np.int64))
        C = np.maximum(2 * W, (per_lane * avg).astype(np.int64))
        nl = -(-nb // C)
        ls = np.repeat(np.arange(k), nl)
        self.M = M = len(ls)
        self.sbit, ebit = 8 * first_byte[:-1], 8 * first_byte[1:]   # per stream
        # Per lane: its first bit, its stream, the stream's end, the table's shift and base.
        self.start = self.sbit[ls] + (np.arange(M) - np.repeat(np.cumsum(nl) - nl, nl)) * C[ls]
        self.stream, self.end, self.shift, self.base = ls, ebit[ls], 64 - Lmax[ls], tbase[ls]
        self.stop = np.minimum(self.start + C[ls] + W[ls], self.end)    # where decoding stops
        self.first = np.ones(M, bool)                                   # a stream's first lane
        self.first[1:] = ls[1:] != ls[:-1]
        self.last = np.ones(M, bool)                                    # a stream's last lane
        self.last[:-1] = self.first[1:]
        self.thr = np.minimum(self.start + W[ls], self.end)             # its handover threshold
        self.succ = np.minimum(np.arange(M) + 1, M - 1)                 # the next lane
        self.rows = int(1.5 * (per_lane + _OVERLAP_SYMBOLS)) + 8        # steps a run expects

    def run(self, idx, starts):
        """Lockstep decoding of lanes ``idx`` from ``starts`` until each reaches its stop:
        positions P[n, steps + 1] and table slots T[n, steps], one row per lane; a lane's row
        ends in _FAR past its stop. Unsigned 64-bit: a left shift drops the bits before the
        window. Once most lanes are done, the rest go on alone (no step for finished lanes)."""
        words, adv_tbl = self.words, self.adv_tbl
        stop = self.stop[idx].astype(np.uint64)
        shift, base = self.shift[idx].astype(np.uint64), self.base[idx].astype(np.uint64)
        P = np.full((len(idx), self.rows), _FAR, np.uint64)
        T = np.empty((len(idx), self.rows), np.uint64)
        p = starts.astype(np.uint64)
        P[:, 0] = p
        act = None                                   # None: all lanes, else the active rows
        r = 0
        while True:
            if r + 2 >= P.shape[1]:
                P = np.concatenate([P, np.full_like(P, _FAR)], axis=1)
                T = np.concatenate([T, np.empty_like(T)], axis=1)
            t = ((words.take(p >> _U3, mode="clip") << (p & _U7)) >> shift) + base
            p = p + adv_tbl.take(t)
            if act is None:
                T[:, r] = t
                P[:, r + 1] = p
            else:
                T[act, r] = t
                P[act, r + 1] = p
            r += 1
            if r % 4 == 0:
                going = p < stop
                n_going = int(np.count_nonzero(going))
                if n_going == 0:
                    break
                if n_going * 2 < len(p):
                    act = np.flatnonzero(going) if act is None else act[going]
                    p, stop, shift, base = p[going], stop[going], shift[going], base[going]
        return P[:, :r + 1].view(np.int64), T.view(np.int64)


def _index_at(P, bound):
    """Per row of P: the index of the first position at or past ``bound``."""
    return np.minimum(np.count_nonzero(P < bound[:, None], axis=1), P.shape[1] - 1)


def _handovers(lanes: _Lanes, P):
    """Where the lanes' paths P hand over, as indices into P and as bit positions.

    lo[j]: where lane j's symbols start (its handover); hi[j]: where they end (the next lane's
    handover on lane j's path, or the stream's end); handover[j]: lane j's position at lo[j];
    entry[j]: lane j-1's position at hi[j-1]. Lane j is right once lane j-1 is and
    entry[j] == handover[j]."""
    everything = np.arange(lanes.M)
    lo = np.where(lanes.first, 0, _index_at(P, lanes.thr))
    hi = _index_at(P, np.where(lanes.last, lanes.stop, lanes.thr[lanes.succ]))
    handover = P[everything, lo]
    entry = np.where(lanes.first, handover, np.roll(P[everything, hi], 1))
    return lo, hi, handover, entry


def _redecode_unmet(lanes: _Lanes, P, T, lo, hi, handover, entry):
    """Up to _ROUNDS times, decode the lanes whose path has not met their predecessor's again,
    from where the predecessor's path enters them: exact once the predecessor is right. Their
    successors' entries change, so those are checked again. Updates ``lo``, ``hi``,
    ``handover`` and ``entry`` in place; returns P and T, grown where a run was longer."""
    succ, last, stop = lanes.succ, lanes.last, lanes.stop
    check = np.flatnonzero(~lanes.first)
    for _ in range(_ROUNDS):
        unmet = check[handover[check] != entry[check]]
        if not len(unmet):
            break
        P2, T2 = lanes.run(unmet, entry[unmet])
        if P2.shape[1] > P.shape[1]:
            grow = P2.shape[1] - P.shape[1]
            P = np.concatenate([P, np.repeat(P[:, -1:], grow, 1)], axis=1)
        if T2.shape[1] > T.shape[1]:
            T = np.concatenate([T, np.zeros((lanes.M, T2.shape[1] - T.shape[1]), T.dtype)],
                               axis=1)
        P[unmet] = P2[:, -1:]
        P[unmet, :P2.shape[1]] = P2
        T[unmet, :T2.shape[1]] = T2
        lo[unmet] = 0
        handover[unmet] = entry[unmet]
        um_last = last[unmet]
        bound = np.where(um_last, stop[unmet], lanes.thr[succ[unmet]])
        hi[unmet] = _index_at(P[unmet], bound)
        nxt = unmet[~um_last] + 1
        entry[nxt] = P[nxt - 1, hi[nxt - 1]]
        check = np.union1d(unmet, nxt)
    return P, T


def _gather_symbols(T, lo, hi, sym_tbl):
    """The symbols of every lane, from lo to hi on its path, lane after lane: (table slots,
    symbols, symbols per lane, where each lane's symbols start)."""
    n_lane = np.maximum(hi - lo, 0)
    total = int(n_lane.sum())
    off = np.cumsum(n_lane) - n_lane
    width = T.shape[1]
    flat = np.repeat(np.arange(len(lo)) * width + lo - off, n_lane) + np.arange(total)
    slot_all = T.reshape(-1).take(flat)
    sym_all = sym_tbl.take(slot_all)
    return slot_all, sym_all, n_lane, off


def _accept_streams(codes: _Codes, lanes: _Lanes, datas, P, lo, off, n_lane, slot_all, sym_all,
                    unsynced):
    """Check each stream's first ``count`` gathered symbols as docs/FORMAT.md says (the rest were
    decoded from padding bits): all lanes met, enough symbols, no invalid code word, the last
    symbol ends in the last byte, and the padding bits are zero. Return (ok, where each stream's
    symbols start among the gathered ones, how many to take); a stream not ok is left to
    :func:`_decode_bitwise`, which decodes it or raises its error."""
    k, M, nb, cl = len(codes.live), lanes.M, codes.nbits, codes.count
    total = len(slot_all)
    got = np.bincount(lanes.stream, weights=n_lane, minlength=k).astype(np.int64)
    start_of = np.cumsum(got) - got
    take = np.minimum(got, cl)
    li = np.maximum(start_of + take - 1, 0)                 # the last symbol of each stream
    lane_of = np.searchsorted(off, li, side="right") - 1
    lane_of = np.clip(lane_of, 0, M - 1)
    col = lo[lane_of] + li - off[lane_of]
    end = P[lane_of, np.minimum(col, P.shape[1] - 1)] \
        + lanes.adv_tbl[slot_all[np.minimum(li, max(total - 1, 0))]].astype(np.int64) \
        - lanes.sbit if total else np.zeros(k, np.int64)
    tail = np.array([int(datas[i][-1]) for i in codes.live])
    pad_ok = (tail & ((1 << np.clip(nb - end, 0, 8)) - 1)) == 0
    ok = ~unsynced & (got >= cl) & (end <= nb) & (nb - end < 8) & pad_ok
    if total and sym_all.min() < 0:
        for j in range(k):
            if (sym_all[start_of[j]:start_of[j] + take[j]] < 0).any():
                ok[j] = False
    return ok, start_of, take


_U3, _U7 = np.uint64(3), np.uint64(7)
_FAR = np.uint64(1 << 62)   # past every stream: where a lane's row of positions ends
_ROUNDS = 4                 # rounds of re-decoding lanes that missed their predecessor


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
