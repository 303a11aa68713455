"""Seeded permutations of ``range(n)`` evaluated one index at a time, in O(1) memory
(``KeyedPermutation``), and one that visits a bounded window of the corpus at a time
(``WindowedPermutation``: the epoch shuffle of large sources).

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

import bisect

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


class WindowedPermutation:
  """A permutation of ``range(n)`` that reads a bounded part of the corpus at a time.

  The indices are cut into blocks of ``block`` consecutive documents (the last may be
  shorter; for sharded sources a block is about a shard, so a window touches few shards),
  the blocks are put in a keyed random order, and that order is cut into windows of
  ``window`` blocks; the epoch visits window after window, each one's documents in a keyed
  random order of their own. So every document comes once per epoch, any two blocks can
  meet (the block order is a fresh permutation per key), and at any time the reader needs
  only the ``window`` blocks (<= ``2 * window`` shards) of the current window: open shard
  readers, and their in-memory indexes, stay bounded however large the corpus.

  Memory: O(n / (block * window)) integers (each window's start); a lookup is one
  ``KeyedPermutation`` lookup per level and a walk over the window's blocks.
  """

  __slots__ = ("n", "key", "block", "window", "_num_blocks", "_order", "_starts", "_sizes",
               "_last")

  def __init__(self, n: int, key: int, block: int, window: int):
    if n < 0 or block < 1 or window < 1:
      raise ValueError(f"need n >= 0, block >= 1, window >= 1; got {n}, {block}, {window}")
    self.n, self.key = int(n), int(key) & _M64
    self.block, self.window = int(block), int(window)
    self._num_blocks = -(-self.n // self.block)
    self._order = KeyedPermutation(self._num_blocks, _splitmix64(self.key ^ 0x5151))
    short = self._num_blocks - 1  # the last block is the only one that may be short
    windows = -(-self._num_blocks // self.window)
    starts, sizes, total = [], [], 0
    for w in range(windows):
      blocks = range(w * self.window, min((w + 1) * self.window, self._num_blocks))
      size = sum(self._block_size(self._order[b], short) for b in blocks)
      starts.append(total)
      sizes.append(size)
      total += size
    self._starts, self._sizes = tuple(starts), tuple(sizes)
    self._last: tuple[int, tuple[tuple[int, int], ...], KeyedPermutation] | None = None

  def _block_size(self, block_id: int, short: int) -> int:
    return self.n - short * self.block if block_id == short else self.block

  def __len__(self) -> int:
    return self.n

  def _window(self, w: int):
    last = self._last
    if last is not None and last[0] == w:
      return last
    short = self._num_blocks - 1
    blocks = tuple((b, self._block_size(b, short)) for b in (
        self._order[k] for k in range(w * self.window,
                                      min((w + 1) * self.window, self._num_blocks))))
    perm = KeyedPermutation(self._sizes[w], _splitmix64(self.key ^ _splitmix64(w + 1)))
    self._last = (w, blocks, perm)
    return self._last

  def __getitem__(self, index: int) -> int:
    i = int(index)
    if not 0 <= i < self.n:
      raise IndexError(f"index {index} out of range for a permutation of {self.n}")
    w = bisect.bisect_right(self._starts, i) - 1
    _, blocks, perm = self._window(w)
    j = perm[i - self._starts[w]]
    for block_id, size in blocks:
      if j < size:
        return block_id * self.block + j
      j -= size
    raise AssertionError("unreachable: window sizes add up")
