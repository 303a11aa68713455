"""DEFLATE inspection: re-inflate a stream recording which bits produced which bytes.

Used by the DEFLATE views' ``symbol_spans`` (the input bytes each stream byte
stands for). ``inflate_codes`` is a small, slow, pure-Python inflater (RFC 1951:
stored, fixed and dynamic Huffman blocks) that, besides the output, returns
every output-producing code's bit range and output range; ``byte_spans_from_codes``
turns those into one input span per stream byte: the union of the codes its 8
bits overlap (contiguous, since codes are in output order). Bytes made only of
block headers, Huffman tables, end-of-block codes or padding cover no input
(an empty span).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_LEN_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
             115, 131, 163, 195, 227, 258)
_LEN_EXTRA = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0)
_DIST_BASE = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
              1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)
_DIST_EXTRA = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
               12, 13, 13)
_CLEN_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
_MAX_BITS = 15


class _Bits:
  """LSB-first bit reader that knows how many bits it has consumed."""

  def __init__(self, data: bytes):
    self.data = data
    self.byte = 0
    self.buf = 0
    self.nbits = 0
    self.pos = 0

  def _fill(self, n: int) -> None:
    while self.nbits < n:
      if self.byte >= len(self.data):  # zero padding (peeks near the end)
        if self.byte >= len(self.data) + 8:
          raise ValueError("deflate: read past the end of the stream")
        self.byte += 1
      else:
        self.buf |= self.data[self.byte] << self.nbits
        self.byte += 1
      self.nbits += 8

  def peek(self, n: int) -> int:
    self._fill(n)
    return self.buf & ((1 << n) - 1)

  def take(self, n: int) -> int:
    v = self.peek(n)
    self.buf >>= n
    self.nbits -= n
    self.pos += n
    return v

  def align(self) -> None:
    self.take(self.nbits & 7)


def _huffman_table(lengths: Sequence[int]) -> tuple[list[int], list[int]]:
  """(symbols, code lengths) indexed by every 15-bit LSB-first window."""
  counts = [0] * (_MAX_BITS + 1)
  for ln in lengths:
    counts[ln] += 1
  counts[0] = 0
  code, next_code = 0, [0] * (_MAX_BITS + 2)
  for bits in range(1, _MAX_BITS + 1):
    code = (code + counts[bits - 1]) << 1
    next_code[bits] = code
  syms = np.full(1 << _MAX_BITS, -1, dtype=np.int64)
  lens = np.ones(1 << _MAX_BITS, dtype=np.int64)
  for sym, ln in enumerate(lengths):
    if not ln:
      continue
    c = next_code[ln]
    next_code[ln] += 1
    rev = int(format(c, f"0{ln}b")[::-1], 2)
    syms[rev::1 << ln] = sym
    lens[rev::1 << ln] = ln
  return syms.tolist(), lens.tolist()


_FIXED: tuple | None = None


def _fixed_tables():
  global _FIXED  # pylint: disable=global-statement
  if _FIXED is None:
    lit = [8] * 144 + [9] * 112 + [7] * 24 + [8] * 8
    _FIXED = (_huffman_table(lit), _huffman_table([5] * 30))
  return _FIXED


def _decode(bits: _Bits, table) -> int:
  window = bits.peek(_MAX_BITS)
  sym = table[0][window]
  if sym < 0:
    raise ValueError("deflate: invalid Huffman code")
  bits.take(table[1][window])
  return sym


def _dynamic_tables(bits: _Bits):
  hlit = bits.take(5) + 257
  hdist = bits.take(5) + 1
  hclen = bits.take(4) + 4
  clens = [0] * 19
  for i in range(hclen):
    clens[_CLEN_ORDER[i]] = bits.take(3)
  ctable = _huffman_table(clens)
  lengths: list[int] = []
  while len(lengths) < hlit + hdist:
    sym = _decode(bits, ctable)
    if sym < 16:
      lengths.append(sym)
    elif sym == 16:
      if not lengths:
        raise ValueError("deflate: repeat with no previous length")
      lengths += [lengths[-1]] * (3 + bits.take(2))
    elif sym == 17:
      lengths += [0] * (3 + bits.take(3))
    else:
      lengths += [0] * (11 + bits.take(7))
  return _huffman_table(lengths[:hlit]), _huffman_table(lengths[hlit:hlit + hdist])


def inflate_codes(stream: bytes) -> tuple[bytes, np.ndarray]:
  """Inflates a raw DEFLATE stream; also returns its output-producing codes.

  Returns:
    (decompressed bytes, int64 array ``[num_codes, 4]`` of ``(first bit,
    end bit, first output byte, end output byte)``), codes in stream order.
    Headers, tables and end-of-block codes produce no output and are absent.
  """
  bits = _Bits(stream)
  out = bytearray()
  codes: list[tuple[int, int, int, int]] = []
  final = 0
  while not final:
    final = bits.take(1)
    btype = bits.take(2)
    if btype == 0:
      bits.align()
      length = bits.take(16)
      if bits.take(16) != (~length & 0xFFFF):
        raise ValueError("deflate: stored block length check failed")
      for _ in range(length):
        start = bits.pos
        out.append(bits.take(8))
        codes.append((start, bits.pos, len(out) - 1, len(out)))
      continue
    if btype == 1:
      lit_table, dist_table = _fixed_tables()
    elif btype == 2:
      lit_table, dist_table = _dynamic_tables(bits)
    else:
      raise ValueError("deflate: invalid block type")
    while True:
      start = bits.pos
      sym = _decode(bits, lit_table)
      if sym < 256:
        out.append(sym)
        codes.append((start, bits.pos, len(out) - 1, len(out)))
      elif sym == 256:
        break
      else:
        i = sym - 257
        length = _LEN_BASE[i] + bits.take(_LEN_EXTRA[i])
        d = _decode(bits, dist_table)
        dist = _DIST_BASE[d] + bits.take(_DIST_EXTRA[d])
        if dist > len(out):
          raise ValueError("deflate: distance beyond the output")
        first = len(out)
        for k in range(length):
          out.append(out[first - dist + k])
        codes.append((start, bits.pos, first, len(out)))
  arr = np.asarray(codes, dtype=np.int64).reshape(-1, 4)
  return bytes(out), arr


def byte_spans_from_codes(codes: np.ndarray, num_bytes: int) -> tuple[np.ndarray, np.ndarray]:
  """Input span of each stream byte: the union of the codes its bits overlap."""
  lo_bit = np.arange(num_bytes, dtype=np.int64) * 8
  first = np.searchsorted(codes[:, 1], lo_bit, side="right")  # first code ending after lo
  last = np.searchsorted(codes[:, 0], lo_bit + 8, side="left")  # codes starting before hi
  has = first < last
  starts = np.zeros(num_bytes, dtype=np.int64)
  ends = np.zeros(num_bytes, dtype=np.int64)
  starts[has] = codes[first[has], 2]
  ends[has] = codes[last[has] - 1, 3]
  return starts, ends
