"""Canonical Huffman coding: lengths, codes, vectorized encode/decode, malformed streams."""
import numpy as np
import pytest

from deepcomp.dc import huffman
from deepcomp.errors import CountMismatchError, FormatError


def _stream(rng, alphabet, n, alpha):
    p = rng.dirichlet(np.ones(alphabet) * alpha)
    return rng.choice(alphabet, size=n, p=p)


@pytest.mark.parametrize("alphabet,n,alpha", [(1, 10, 1.0), (2, 1, 1.0), (33, 5000, 0.3),
                                              (257, 20000, 0.1), (257, 20000, 50.0),
                                              (4097, 30000, 1.0)])
def test_round_trip(alphabet, n, alpha):
    rng = np.random.default_rng(alphabet + n)
    sym = _stream(rng, alphabet, n, alpha)
    lengths = huffman.code_lengths(np.bincount(sym, minlength=alphabet))
    buf, nbits = huffman.encode(sym, lengths)
    assert len(buf) == -(-nbits // 8)
    assert np.array_equal(huffman.decode(buf, lengths, n), sym)
    # Huffman is within one bit per symbol of the entropy
    assert nbits <= huffman.shannon_bits(sym) + n + 1e-6


def test_many_random_streams_decode_together():
    rng = np.random.default_rng(1)
    jobs, syms = [], []
    for i in range(40):
        a = int(rng.integers(1, 300))
        s = _stream(rng, a, int(rng.integers(0, 3000)), float(rng.choice([0.05, 0.5, 5])))
        lengths = huffman.code_lengths(np.bincount(s, minlength=a))
        jobs.append((huffman.encode(s, lengths)[0], lengths, len(s), f"s{i}"))
        syms.append(s)
    for got, want in zip(huffman.decode_many(jobs), syms):
        assert np.array_equal(got, want)


def test_equal_length_codes_that_never_resynchronize():
    # 32 equiprobable symbols: every code is 5 bits, lanes never meet; the bitwise path decodes
    rng = np.random.default_rng(2)
    sym = rng.integers(0, 32, 50000)
    lengths = np.full(32, 5, np.uint8)
    buf, _ = huffman.encode(sym, lengths)
    assert np.array_equal(huffman.decode(buf, lengths, len(sym)), sym)


@pytest.mark.parametrize("alphabet,lengths_of", [
    (31, None),                                      # 4- and 5-bit codes that never resync
    (32, 5), (2, 1), (256, 8), (4096, 12),           # one width: lanes never meet
])
def test_streams_longer_than_a_segment_decode_exactly(alphabet, lengths_of):
    """Over 2**20 bits the bitwise decoder works segment by segment, each starting where the
    last code word of the one before ends (not at the segment's boundary): a stream of 1.2 Mbit
    and more whose codes never resynchronise reaches that path, in the batch decoder too."""
    rng = np.random.default_rng(alphabet)
    bits_each = lengths_of or 5
    n = (huffman._SEGMENT_BITS * 6 // 5) // bits_each + 7       # 1.2 segments and a bit
    sym = rng.integers(0, alphabet, n)
    lengths = (np.full(alphabet, lengths_of, np.uint8) if lengths_of else
               huffman.code_lengths(np.bincount(sym, minlength=alphabet)))
    buf, nbits = huffman.encode(sym, lengths)
    assert nbits > huffman._SEGMENT_BITS
    assert np.array_equal(huffman.decode(buf, lengths, n), sym)
    other = rng.integers(0, 3, 5000)                              # with a stream that resyncs
    ol = huffman.code_lengths(np.bincount(other, minlength=3))
    got = huffman.decode_many([(huffman.encode(other, ol)[0], ol, len(other), "a"),
                               (buf, lengths, n, "b")])
    assert np.array_equal(got[0], other) and np.array_equal(got[1], sym)


@pytest.mark.parametrize("width", [1, 4, 8])
def test_the_bitwise_decoder_across_a_segment_boundary_that_a_code_ends_on(width):
    """Fixed-width codes whose words end exactly at the 2**20-bit segment boundary: the next
    segment starts there. (The batch decoder's lanes stay in step with such codes, so this
    path is reached only directly.)"""
    rng = np.random.default_rng(width)
    n = huffman._SEGMENT_BITS // width + 1000
    sym = rng.integers(0, 1 << width, n)
    lengths = np.full(1 << width, width, np.uint8)
    buf, nbits = huffman.encode(sym, lengths)
    assert nbits > huffman._SEGMENT_BITS and huffman._SEGMENT_BITS % width == 0
    got = huffman._decode_bitwise(huffman._Stream(buf, lengths, n, "s"))
    assert np.array_equal(got, sym)


def test_a_code_whose_longest_words_are_far_longer_than_its_odd_lengths():
    """Lengths {1, 2, 4, 6, 8, 10}: the longest code words are 10 bits, every odd length but
    1 is missing; a stream of only 10-bit words must decode (a miscounted longest length
    sized the lanes' windows and the plausibility bound wrong)."""
    lengths = np.array([1, 2, 4, 6, 8, 10, 10], np.uint8)
    sym = np.random.default_rng(0).integers(5, 7, 1000)
    buf, nbits = huffman.encode(sym, lengths)
    assert nbits == 10 * len(sym)
    assert np.array_equal(huffman.decode(buf, lengths, len(sym)), sym)


def test_lengths_are_capped_and_complete():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(np.array(fib))
    assert lengths.max() == huffman.MAX_CODE_LENGTH
    assert np.exp2(-lengths.astype(float)).sum() == 1.0      # Kraft equality: a complete code
    # without the cap the deepest code would be 39 bits
    assert huffman.code_lengths(np.array(fib), max_len=64).max() == 39


def test_canonical_codes_follow_rfc1951_example():
    # RFC 1951 section 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H
    codes = huffman.canonical_codes([3, 3, 3, 3, 3, 2, 4, 4])
    assert [int(c) for c in codes] == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_pack_lengths_round_trip():
    lengths = np.array([0, 3, 15, 1, 0, 0], np.uint8)
    packed = huffman.pack_lengths(lengths)
    assert packed == bytes([0x30, 0x1F])
    assert list(huffman.unpack_lengths(packed, 6)) == list(lengths)
    with pytest.raises(FormatError):
        huffman.unpack_lengths(bytes([0x30, 0x1F, 0x00]), 6)     # a trailing empty byte
    with pytest.raises(CountMismatchError):
        huffman.unpack_lengths(packed, 2)


def test_malformed_streams_raise_format_errors():
    sym = np.array([0, 1, 2, 1, 0, 0, 0])
    lengths = huffman.code_lengths(np.bincount(sym))
    buf, _ = huffman.encode(sym, lengths)
    with pytest.raises(CountMismatchError):
        huffman.decode(buf, lengths, len(sym) + 20)
    with pytest.raises(CountMismatchError):
        huffman.decode(buf + b"\0", lengths, len(sym))
    with pytest.raises(CountMismatchError):
        huffman.decode(b"", lengths, 3)
    with pytest.raises(FormatError):
        huffman.decode(buf, [1, 1, 1], len(sym))                 # over-subscribed
    with pytest.raises(FormatError):
        huffman.decode(b"\xff", [1, 0, 0], 1)                    # '1' is no code word
    with pytest.raises(FormatError):
        huffman.decode(bytes([buf[0] | 1]) if len(buf) == 1 else buf[:-1] + bytes([buf[-1] | 1]),
                       lengths, len(sym))                        # non-zero padding


def test_decode_agrees_with_dahuffman():
    """Our vectorized decoder and dahuffman's per-bit loop read the same symbols from the same
    code (how much faster ours is, tools/bench_codec.py measures)."""
    from dahuffman.huffmancodec import PrefixCodec
    rng = np.random.default_rng(3)
    sym = _stream(rng, 257, 200_000, 0.3)
    lengths = huffman.code_lengths(np.bincount(sym, minlength=257))
    buf, _ = huffman.encode(sym, lengths)
    codes = huffman.canonical_codes(lengths)
    codec = PrefixCodec({int(s): (int(lengths[s]), int(codes[s])) for s in np.flatnonzero(lengths)},
                        check=False, eof=-1)
    ours = huffman.decode(buf, lengths, len(sym))
    theirs = list(codec.decode_streaming(buf))[: len(sym)]
    assert np.array_equal(ours, theirs)


def test_batches_split_by_size(monkeypatch):
    monkeypatch.setattr(huffman, "_BATCH_BITS", 2000)
    rng = np.random.default_rng(4)
    jobs, syms = [], []
    for i in range(12):
        s = _stream(rng, 40, int(rng.integers(1, 900)), 0.5)
        lengths = huffman.code_lengths(np.bincount(s, minlength=40))
        jobs.append((huffman.encode(s, lengths)[0], lengths, len(s), f"s{i}"))
        syms.append(s)
    for got, want in zip(huffman.decode_many(jobs), syms):
        assert np.array_equal(got, want)
