"""A seeded permutation of ``range(n)`` evaluated one index at a time, in O(1) memory.

``KeyedPermutation(n, key)[i]`` is a bijection of ``[0, n)``: a keyed bijection of the
``b``-bit integers (``2**b`` the smallest power of two >= ``n``), applied again while the
result is >= ``n`` ("cycle walking": following the cycle of ``i`` until it re-enters
``[0, n)``, which keeps it a bijection of ``[0, n)``; ``2**b < 2n``, so fewer than two
applications on average). The ``b``-bit bijection is ``ROUNDS`` rounds of: add a round
key, multiply by an odd round constant, xor the high half into the low half, all mod
``2**b`` -- each step invertible, so each round is a permutation; the keys and constants
come from ``key`` through SplitMix64.

Why not a numpy permutation: it holds 4-8 bytes per document (40 MB per source per epoch
at 10^7 documents, in every process and Grain worker), and building it is O(n) at every
epoch start (~1 s at 10^7). Why not Grain's ``index_shuffle``: a private module, whose
output could change with a Grain release; this one is pinned by tests and ~2 us a call.
"""

from __future__ import annotations

ROUNDS = 6
_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
  x = (x + 0x9E3779B97F4A7C15) & _M64
  z = x
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
  return z ^ (z >> 31)


class KeyedPermutation:
  """The permutation of ``range(n)`` for ``key`` (any int; e.g. a hash of seed and epoch)."""

  __slots__ = ("n", "key", "_bits", "_mask", "_shift", "_rounds")

  def __init__(self, n: int, key: int):
    if n < 0:
      raise ValueError(f"n must be >= 0, got {n}")
    self.n, self.key = int(n), int(key) & _M64
    self._bits = max(1, (self.n - 1).bit_length())
    self._mask = (1 << self._bits) - 1
    self._shift = max(1, (self._bits + 1) // 2)
    rounds, x = [], self.key
    for _ in range(ROUNDS):
      x = _splitmix64(x)
      add = x & self._mask
      x = _splitmix64(x)
      mul = (x & self._mask) | 1
      rounds.append((add, mul))
    self._rounds = tuple(rounds)

  def __len__(self) -> int:
    return self.n

  def _round_trip(self, x: int) -> int:
    mask, shift = self._mask, self._shift
    for add, mul in self._rounds:
      x = ((x + add) * mul) & mask
      x ^= x >> shift
    return x

  def __getitem__(self, index: int) -> int:
    i = int(index)
    if not 0 <= i < self.n:
      raise IndexError(f"index {index} out of range for a permutation of {self.n}")
    if self.n == 1:
      return 0
    x = self._round_trip(i)
    while x >= self.n:
      x = self._round_trip(x)
    return x
