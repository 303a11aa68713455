"""The weighted mixture of several *finite* document streams, and where it ends.

With ``data.num_epochs = -1`` every source repeats forever and Grain's
``MapDataset.mix`` interleaves them by weight. With a finite number of epochs
(and for the validation split, one pass) each source holds ``n_i`` documents
(its documents times the epochs) and the mixture needs an end rule.
``data.mixture_end`` chooses it:

``all`` (default)
  Read every document of every source once per epoch. Sources are interleaved
  by weight while all of them have documents left; when one runs out, the
  others continue with their weights renormalised among themselves, and so on
  until the last one is exhausted. The stream holds ``sum(n_i)`` documents.
``first``
  Stop when the first source runs out, so the proportions hold exactly up to
  the end. The documents the other sources still hold are never read: each
  stream counts them as ``unread_at_end:<source>`` when it ends
  (``proxyjax.data.stats``); with ``all`` those counters are 0.

The interleave is deterministic and random-access (Grain slices it per process
and per worker): weights become integer proportions ``p_i``, and among the
first ``k`` positions of a phase source ``i`` holds ``c_i(k)`` documents, given
by nested floors (source 0 gets ``k - floor(k (P - p_0) / P)``, the rest is
shared the same way among the others), so each ``c_i`` grows by 0 or 1 per
position and ``sum_i c_i(k) = k``.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Sequence

import grain
import numpy as np

END_RULES = ("all", "first")
_SCALE = 1000  # the smallest weight becomes this integer proportion


def integer_proportions(weights: Sequence[float]) -> list[int]:
  """Positive integer proportions close to ``weights`` (the smallest -> 1000)."""
  low = min(weights)
  return [max(1, int(round(w / low * _SCALE))) for w in weights]


def phase_counts(k, props: Sequence[int]) -> list:
  """How many of the first ``k`` positions of a phase each source holds.

  ``k`` is an int or an integer numpy array (then each count is an array).
  """
  counts = []
  rest, total = k, sum(props)
  for p in props[:-1]:
    nxt = (rest * (total - p)) // total
    counts.append(rest - nxt)
    rest, total = nxt, total - p
  counts.append(rest)
  return counts


@dataclasses.dataclass(frozen=True)
class _Phase:
  start: int  # first global position
  length: int
  active: tuple[int, ...]  # source indices
  props: tuple[int, ...]  # their proportions
  offsets: tuple[int, ...]  # documents each active source had given before the phase


class FiniteMixture(grain.transforms.DatasetSelectionMap):
  """Global position -> (source index, index within the source); see the module doc.

  Picklable and stateless (Grain copies it into its workers).
  """

  def __init__(self, lengths: Sequence[int], weights: Sequence[float], end: str = "all"):
    if end not in END_RULES:
      raise ValueError(f"end must be one of {END_RULES}, got {end!r}")
    if len(lengths) != len(weights) or not lengths:
      raise ValueError("one length per weight, at least one source")
    if min(lengths) <= 0:
      raise ValueError(f"every source needs documents, got lengths {list(lengths)}")
    self.lengths = tuple(int(n) for n in lengths)
    self.end = end
    props = integer_proportions(weights)
    remaining = list(self.lengths)
    given = [0] * len(lengths)
    phases, start = [], 0
    while any(remaining):
      active = tuple(i for i, r in enumerate(remaining) if r > 0)
      p = tuple(props[i] for i in active)
      length = min(self._first_reaching(a, p, remaining[i]) for a, i in enumerate(active))
      phases.append(_Phase(start, length, active, p, tuple(given[i] for i in active)))
      for i, c in zip(active, phase_counts(length, p)):
        remaining[i] -= c
        given[i] += c
      start += length
    self._phases = tuple(phases)
    self._starts = [ph.start for ph in phases]
    self.total = start  # == sum(lengths): the "all" plan
    self._len = self.total if end == "all" else phases[0].length
    first = phases[0]
    self._selected = list(self.lengths)
    if end == "first":
      self._selected = [0] * len(lengths)
      for i, c in zip(first.active, phase_counts(first.length, first.props)):
        self._selected[i] = c

  @staticmethod
  def _first_reaching(a: int, props: Sequence[int], target: int) -> int:
    """The smallest k with ``phase_counts(k, props)[a] >= target``."""
    lo, hi = 0, max(1, target * sum(props) // props[a])
    while phase_counts(hi, props)[a] < target:
      lo, hi = hi, hi * 2
    while lo < hi:
      mid = (lo + hi) // 2
      if phase_counts(mid, props)[a] >= target:
        hi = mid
      else:
        lo = mid + 1
    return lo

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> tuple[int, int]:
    epoch, position = divmod(int(index), self._len)
    if epoch:  # past the end (Grain does not ask): the same plan again
      src, key = self[position]
      return src, key + epoch * self.selected(src)
    phase = self._phases[bisect.bisect_right(self._starts, position) - 1]
    k = position - phase.start
    before, after = phase_counts(k, phase.props), phase_counts(k + 1, phase.props)
    for a, (c0, c1) in enumerate(zip(before, after)):
      if c1 != c0:
        return phase.active[a], phase.offsets[a] + c0
    raise AssertionError("unreachable: one source gains a document per position")

  def selected(self, source: int) -> int:
    """Documents of ``source`` the mixture reads (``lengths[source]`` under ``all``)."""
    return self._selected[source]

  def unread(self, start: int = 0, step: int = 1) -> list[int]:
    """Per source, the documents past the end of the mixture: positions
    ``start, start + step, ...`` of the ``all`` plan at or beyond ``len(self)``
    (one stream's share with ``start``/``step``; all of them by default)."""
    out = [0] * len(self.lengths)
    for ph in self._phases:
      lo = max(start, self._len, ph.start)
      lo += (start - lo) % step
      hi = ph.start + ph.length
      if lo >= hi:
        continue
      n = (hi - 1 - lo) // step + 1
      for chunk in range(0, n, 1 << 20):
        ks = lo - ph.start + step * np.arange(chunk, min(n, chunk + (1 << 20)), dtype=np.int64)
        if ks.size and int(ks[-1]) * sum(ph.props) >= 1 << 62:  # int64 would overflow
          ks = ks.astype(object)
        before = phase_counts(ks, ph.props)
        after = phase_counts(ks + 1, ph.props)
        for a, i in enumerate(ph.active):
          out[i] += int(np.count_nonzero(np.asarray(after[a] != before[a], dtype=bool)))
    return out

  def __repr__(self) -> str:
    return f"FiniteMixture(lengths={list(self.lengths)}, end={self.end!r}, len={self._len})"
