"""Which view each document gets, its sentinels and pairs, and the rate schedule (docs/method.md §3).

Every random choice is a pure function of ``(seed, stream, document counter)``
and the rate/mode is a pure function of the *stream position* (symbols emitted
by this stream -> training step), so a run and its resume produce identical
data. Under ``mp_prefetch`` each worker is its own stream; because Grain reads
workers round-robin, a worker's local batch ``k`` is the process's batch
``k * num_workers + worker_index``, which is how positions map to steps.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import signal
import sys
import threading
import time
from typing import Any, Iterator

import grain
import numpy as np

from proxyjax import vocab as vocab_lib
from proxyjax.data import stats as stats_lib
from proxyjax.errors import ConfigError
from proxyjax.views import base as views_base

MODES = (
    "sentinel",
    "vanilla",
    "translation_raw_compressed",
    "translation_compressed_raw",
    "translation_random",
    "parallel_raw_compressed",
    "parallel_compressed_raw",
    "parallel_random",
)
RAW, COMP = "raw", "comp"


# --- schedule -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Compression rate and mode as a function of the training step.

  ``step < W``: rate goes linearly ``initial -> peak`` with ``initial_mode``;
  ``W <= step < W + S``: ``peak`` with ``steady_mode``; then ``D`` steps of
  linear decay ``peak -> final`` with ``final_mode``; then ``final``.
  ``steady_steps < 0`` means the steady phase lasts forever.
  """

  initial_rate: float = 0.4
  peak_rate: float = 0.9
  final_rate: float = 0.9
  warmup_steps: int = 10_000
  steady_steps: int = -1
  decay_steps: int = 0
  initial_mode: str = "translation_random"
  steady_mode: str = "sentinel"
  final_mode: str = "sentinel"

  @classmethod
  def constant(cls, rate: float, mode: str) -> "Schedule":
    return cls(initial_rate=rate, peak_rate=rate, final_rate=rate, warmup_steps=0,
               steady_steps=-1, decay_steps=0, initial_mode=mode, steady_mode=mode,
               final_mode=mode)

  def at(self, step: int) -> tuple[float, str]:
    w, s, d = self.warmup_steps, self.steady_steps, self.decay_steps
    if step < w:
      return self.initial_rate + (self.peak_rate - self.initial_rate) * step / w, self.initial_mode
    if s < 0 or step < w + s:
      return self.peak_rate, self.steady_mode
    if step < w + s + d:
      frac = (step - w - s) / d
      return self.peak_rate - (self.peak_rate - self.final_rate) * frac, self.final_mode
    return self.final_rate, self.final_mode

  @property
  def rates(self) -> tuple[float, ...]:
    return (self.initial_rate, self.peak_rate, self.final_rate)

  @property
  def modes(self) -> tuple[str, ...]:
    return (self.initial_mode, self.steady_mode, self.final_mode)


# --- calibration and per-document plan -------------------------------------------


def is_pair_mode(mode: str) -> bool:
  return mode.startswith("translation") or mode.startswith("parallel")


def calibrate(rate: float, mode: str) -> tuple[float, str | None]:
  """Per-document draw probability and which drawn view becomes a pair.

  In pair modes a pair carries one raw and one compressed view, so drawing the
  compressed view with probability ``rate`` would not make ``rate`` of the
  *views* compressed. For p > 0.5 raw-drawn documents become pairs and the
  draw uses p' = 2 - 1/p; for p <= 0.5 compressed-drawn documents become pairs
  and p' = p / (1 - p). Either way the expected compressed-view fraction is p.
  """
  if not is_pair_mode(mode):
    return rate, None
  if rate > 0.5:
    return 2.0 - 1.0 / rate, RAW
  if rate >= 0.5:  # exactly 0.5: every document is a pair
    return 1.0, COMP
  return rate / (1.0 - rate), COMP


@dataclasses.dataclass(frozen=True)
class Plan:
  """The layout of one document: segments, each an ordered tuple of views.

  ``((RAW,),)`` is a single raw view, ``((RAW, COMP),)`` a translation pair
  (one segment), ``((COMP,), (RAW,))`` a parallel pair (two segments).
  ``sentinels`` is False in ``vanilla`` mode.
  """

  segments: tuple[tuple[str, ...], ...]
  sentinels: bool = True

  @property
  def views(self) -> tuple[str, ...]:
    return tuple(v for seg in self.segments for v in seg)


def plan_document(rate: float, mode: str, u_view: float, u_order: float) -> Plan:
  """Chooses the layout of one document from two uniform draws in [0, 1)."""
  p, pair_on = calibrate(rate, mode)
  drawn = COMP if u_view < p else RAW
  if mode == "vanilla":
    return Plan(((drawn,),), sentinels=False)
  if pair_on is None or drawn != pair_on:
    return Plan(((drawn,),))
  if mode.endswith("raw_compressed"):
    raw_first = True
  elif mode.endswith("compressed_raw"):
    raw_first = False
  else:
    raw_first = u_order < 0.5
  order = (RAW, COMP) if raw_first else (COMP, RAW)
  if mode.startswith("translation"):
    return Plan((order,))
  return Plan(((order[0],), (order[1],)))


# --- deterministic per-document draws ---------------------------------------------

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
  x = (x + 0x9E3779B97F4A7C15) & _MASK64
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
  return x ^ (x >> 31)


def stream_key(seed: int, *parts: int) -> int:
  """A 64-bit key for one data stream (seed, process, worker, ...)."""
  digest = hashlib.sha256(repr((int(seed),) + tuple(int(p) for p in parts)).encode()).digest()
  return int.from_bytes(digest[:8], "little")


def uniforms(key: int, counter: int, n: int) -> list[float]:
  """``n`` uniforms in [0, 1) for document ``counter`` of the stream ``key``."""
  out = []
  x = _splitmix64(key ^ _splitmix64(counter))
  for _ in range(n):
    x = _splitmix64(x)
    out.append((x >> 11) * (1.0 / (1 << 53)))
  return out


# --- the mixer -----------------------------------------------------------------------


@dataclasses.dataclass
class Mixer:
  """Turns documents into id arrays following the schedule (picklable, stateless).

  Attributes:
    vocab: the id layout.
    view: the compressed view (None for a raw-only stream).
    schedule: rate/mode as a function of the step.
    seed: the data seed from the config.
    symbols_per_step: ids one *stream* (process and worker) contributes per
      local batch: ``local_batch_size * seq_len``.
    process_index: this process's index (part of the stream key).
    max_document_bytes: longer documents are skipped and counted.
    finite: whether the document stream ends (``data.num_epochs`` > 0, or the
      validation split); its end is accounted (``unread_at_end:<source>``).
    source_names: the sources' names, in mixture order.
    source_sizes: their documents per pass (empty = unknown): a stream that,
      since its last usable document, has read twice that many documents of
      *every* source raises ``NoUsableDocumentsError`` instead of spinning.
    mixture: the finite mixture's plan (several finite sources), which says
      which documents lie past its end (``proxyjax.data.mixture``).
    process_count: how many processes share the stream (its positions
      ``process_index::process_count``).
  """

  vocab: vocab_lib.Vocab
  view: views_base.View | None
  schedule: Schedule
  seed: int = 0
  symbols_per_step: int = 1
  process_index: int = 0
  max_document_bytes: int = 1 << 24
  finite: bool = False
  source_names: tuple[str, ...] = ()
  source_sizes: tuple[int, ...] = ()
  mixture: Any = None
  process_count: int = 1

  def step_at(self, symbols_emitted: int, worker_index: int, worker_count: int) -> int:
    local_batch = symbols_emitted // self.symbols_per_step
    return local_batch * worker_count + worker_index

  def format(self, text: bytes, plan: Plan, stats: dict[str, Any],
             precomputed: np.ndarray | None = None) -> np.ndarray:
    """The ids of one document under ``plan``; updates ``stats`` in place.

    ``precomputed``: the compressed view's symbols computed offline (the
    neural view's shards), used instead of ``view.encode``.
    """
    symbols = None
    if COMP in plan.views:
      try:
        if precomputed is None:
          symbols = self.view.encode(text)
        else:
          symbols = _checked_symbols(precomputed, self.view.alphabet_size)
          stats_lib.add(stats, "view_precomputed")
      except views_base.ViewError:
        stats_lib.add(stats, "view_fallback_raw")
        plan = Plan(((RAW,),), sentinels=plan.sentinels)
    parts = []
    for segment in plan.segments:
      bodies = []
      for view in segment:
        if view == RAW:
          body = self.vocab.raw_body(text) if plan.sentinels else vocab_lib.bytes_to_ids(text)
          stats_lib.count_view(stats, "raw", len(text), len(text))
        else:
          body = (self.vocab.compressed_body(symbols) if plan.sentinels
                  else self.vocab.symbols_to_ids(symbols))
          stats_lib.count_view(stats, "compressed", len(text), len(symbols))
        bodies.append(body)
      parts.append(self.vocab.document(*bodies))
    if len(plan.views) == 2:
      stats_lib.add(stats, "pairs_translation" if len(plan.segments) == 1 else "pairs_parallel")
    ids = parts[0] if len(parts) == 1 else np.concatenate(parts)
    stats_lib.add(stats, "ids", int(ids.size))
    return ids


# Set in each Grain worker by ``worker_init`` (index, count); (0, 1) in-process.
_WORKER = (0, 1)


def worker_init(worker_index: int, worker_count: int) -> None:
  """``mp_prefetch`` worker_init_fn: tells the mixer which stream it is, and
  installs the worker's SIGTERM handler (``_worker_sigterm``)."""
  global _WORKER
  _WORKER = (worker_index, worker_count)
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _worker_sigterm)


class WorkerStopped(RuntimeError):
  """A Grain worker received SIGTERM while reading documents."""


# Worker processes only: whether the worker is inside MixIterator.__next__ (reading and
# mixing documents), and whether a SIGTERM asked it to stop there.
_IN_MIX = False
_STOP_REQUESTED = False
WORKER_EXIT_S = 0.5  # a stopped worker ends this long after SIGTERM (its error sent)


def _worker_sigterm(signum, frame) -> None:
  """SIGTERM in a Grain worker (e.g. from ``pipeline.next_batch`` giving up a wait).

  Inside the mixer, where a stream may read many unusable documents in a row,
  the next document raises ``WorkerStopped`` (which Grain hands to the main
  process as the worker's error, leaving its queue intact) and the worker ends
  ``WORKER_EXIT_S`` later; anywhere else SIGTERM ends the worker at once, as
  by default.
  """
  global _STOP_REQUESTED
  del frame
  if not _IN_MIX:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  if not _STOP_REQUESTED:
    _STOP_REQUESTED = True
    timer = threading.Timer(WORKER_EXIT_S, os._exit, args=(128 + signum,))  # pylint: disable=protected-access
    timer.daemon = True
    timer.start()


class MixIterDataset(grain.IterDataset):
  """Documents -> per-document id arrays (``{"ids": int32[n]}``), with accounting."""

  def __init__(self, parent: grain.IterDataset, mixer: Mixer):
    super().__init__(parent)
    self._mixer = mixer

  def __iter__(self) -> "MixIterator":
    return MixIterator(self._parent.__iter__(), self._mixer)

  def __str__(self) -> str:
    return f"MixIterDataset(view={self._mixer.view!r}, schedule={self._mixer.schedule})"


class NoUsableDocumentsError(ConfigError):
  """Every document of a full pass over ``data.sources`` was skipped."""

  def __init__(self, message: str):
    super().__init__("data.sources", message)
    self.detail = message

  def __reduce__(self):  # Grain pickles worker errors to the main process
    return type(self), (self.detail,)


# Seconds between the notes a stream prints while it finds no usable document.
STALL_NOTE_S = 10.0


class MixIterator(grain.DatasetIterator):
  """Stateful: document counter, ids emitted and statistics live in the state.

  A stream never spins silently: while it reads documents without a usable
  one it prints a note every ``STALL_NOTE_S`` seconds, and once it has read,
  since its last usable document, twice as many documents of every source as
  the source holds (so a whole epoch of each shuffled source, whatever the
  weights), it raises ``NoUsableDocumentsError`` with the skip counts.
  """

  def __init__(self, parent: grain.DatasetIterator, mixer: Mixer):
    super().__init__(parent)
    self._mixer = mixer
    self._worker_index, self._worker_count = _WORKER
    self._key = stream_key(mixer.seed, mixer.process_index, self._worker_index,
                           self._worker_count)
    self._docs = 0
    self._symbols = 0
    self._counts = stats_lib.new_stats()
    self._ended = False
    self._streak = 0  # documents read since the last usable one (not checkpointed)
    self._streaks: dict[str, int] = {}  # the same, per source
    self._needed: dict[str, int] = {}  # per source: a run this long is a full pass, twice
    for name, size in zip(mixer.source_names, mixer.source_sizes):
      self._needed[name] = self._needed.get(name, 0) + 2 * int(size)
    self._limit = sum(self._needed.values())  # no error before this many in a row
    self._streak_note = 0.0

  def __next__(self) -> dict[str, Any]:
    global _IN_MIX
    _IN_MIX = True
    try:
      return self._next()
    finally:
      _IN_MIX = False

  def _next(self) -> dict[str, Any]:
    while True:
      if _STOP_REQUESTED:
        raise WorkerStopped(f"data worker {self._worker_index} of {self._worker_count} "
                            "stopped by SIGTERM")
      try:
        doc = next(self._parent)
      except StopIteration:
        self._end()
        raise
      counter = self._docs
      self._docs += 1
      ids = self._process(doc, counter)
      if ids is not None:
        if self._streak:
          self._streak, self._streak_note = 0, 0.0
          self._streaks.clear()
        return {"ids": ids}
      self._streak += 1
      name = str(doc.get("source", "?"))
      self._streaks[name] = self._streaks.get(name, 0) + 1
      if self._streak >= self._limit > 0 and (self._streak - self._limit) & 63 == 0:
        self._check_exhausted()
      if self._streak & 1023 == 0:
        self._note_streak()

  def _check_exhausted(self) -> None:
    """Raises once every source has had two full passes without a usable document."""
    if all(self._streaks.get(name, 0) >= n for name, n in self._needed.items()):
      per_pass = sum(self._mixer.source_sizes)
      raise NoUsableDocumentsError(
          f"no usable document: {self._streak} documents read in a row were all skipped, "
          f"two passes over every source ({per_pass} document{'s' * (per_pass != 1)} per pass)"
          f"{self._stream_name()}; {self._skip_summary()}")

  def _note_streak(self) -> None:
    now = time.monotonic()
    if not self._streak_note:
      self._streak_note = now
    elif now - self._streak_note >= STALL_NOTE_S:
      self._streak_note = now
      print(f"proxyjax data{self._stream_name()}: {self._streak} documents read since the last "
            "usable one, still looking (two passes over every source without one are an "
            f"error); {self._skip_summary()}", file=sys.stderr, flush=True)

  def _stream_name(self) -> str:
    m = self._mixer
    if m.process_count == 1 and self._worker_count == 1:
      return ""
    return (f" (stream of process {m.process_index}/{m.process_count}, worker "
            f"{self._worker_index}/{self._worker_count})")

  def _skip_summary(self) -> str:
    return skip_summary(self._counts, self._mixer.max_document_bytes)

  def _end(self) -> None:
    """The finite stream ended: accounts the documents past its end. (A finite
    stream without a usable document just ends; ``pipeline.next_batch`` turns
    an iterator that ends before its first batch into the error.)"""
    if self._ended:
      return
    self._ended = True
    m = self._mixer
    stats = self._counts
    if m.finite:
      unread = [0] * len(m.source_names)
      if m.mixture is not None:
        stride = m.process_count * self._worker_count
        unread = m.mixture.unread(m.process_index + m.process_count * self._worker_index, stride)
      for name, n in zip(m.source_names, unread):
        stats_lib.add(stats, "unread_at_end:" + name, int(n))
      stats_lib.add(stats, "streams_ended")

  def _process(self, doc: dict[str, Any], counter: int) -> np.ndarray | None:
    stats = self._counts
    mixer = self._mixer
    stats_lib.add(stats, "docs_read")
    stats_lib.add(stats, "docs_from:" + str(doc.get("source", "?")))
    text = doc.get("text", b"")
    reason = doc.get("error")
    if reason is None and not text:
      reason = "empty"
    if reason is None and len(text) > mixer.max_document_bytes:
      reason = "too_large"
    if reason is not None:
      stats_lib.add(stats, "skipped:" + reason)
      return None
    if not _is_utf8(text):
      stats_lib.add(stats, "invalid_utf8_kept")
    step = mixer.step_at(self._symbols, self._worker_index, self._worker_count)
    rate, mode = mixer.schedule.at(step)
    if mixer.view is None:
      rate = 0.0
    u_view, u_order = uniforms(self._key, counter, 2)
    plan = plan_document(rate, mode, u_view, u_order)
    # Documents may carry the view's symbols under the view's name (doc["neural"]).
    precomputed = doc.get(mixer.view.name) if mixer.view is not None else None
    ids = mixer.format(text, plan, stats, precomputed)
    stats_lib.add(stats, "docs_used")
    stats_lib.add(stats, "doc_bytes", len(text))
    self._symbols += int(ids.size)
    return ids

  def get_state(self) -> dict[str, Any]:
    return {
        "parent": self._parent.get_state(),
        "docs": self._docs,
        "symbols": self._symbols,
        "stream": [self._worker_index, self._worker_count],
        "ended": self._ended,
        stats_lib.STATE_KEY: copy.copy(self._counts),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    if list(state["stream"]) != [self._worker_index, self._worker_count]:
      raise ValueError(
          f"data iterator state was written by worker {state['stream']} but is being "
          f"restored into worker {[self._worker_index, self._worker_count]}: keep "
          "data.num_workers unchanged across a resume")
    self._parent.set_state(state["parent"])
    self._docs = int(state["docs"])
    self._symbols = int(state["symbols"])
    self._ended = bool(state.get("ended", False))
    self._streak, self._streak_note = 0, 0.0
    self._streaks.clear()
    self._counts = dict(state[stats_lib.STATE_KEY])


def skip_summary(counts: dict[str, Any], max_document_bytes: int | None = None) -> str:
  """``skipped binary=20, empty=20 of 40 documents read (files:x=40); ...``."""
  skipped = ", ".join(f"{k.split(':', 1)[1]}={v}" for k, v in sorted(counts.items())
                      if k.startswith("skipped:")) or "none"
  per_source = ", ".join(f"{k.split(':', 1)[1]}={v}" for k, v in sorted(counts.items())
                         if k.startswith("docs_from:")) or "no counts"
  limit = "" if max_document_bytes is None else f"={max_document_bytes}"
  return (f"skipped {skipped} of {counts.get('docs_read', 0)} documents read ({per_source}); "
          "documents are skipped when empty, binary, unreadable, malformed JSON, without "
          f"text, corrupt (neural shards) or longer than data.max_document_bytes{limit}")


def _checked_symbols(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
  symbols = views_base.as_symbols(symbols)
  if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
    raise views_base.ViewError(f"precomputed symbols outside [0, {alphabet_size})")
  return symbols


def _is_utf8(data: bytes) -> bool:
  try:
    data.decode("utf-8")
    return True
  except UnicodeDecodeError:
    return False


def iterate_plans(schedule: Schedule, seed: int, n: int, step: int = 0) -> Iterator[Plan]:
  """Plans of ``n`` consecutive documents at a fixed step (used by tests and tools)."""
  key = stream_key(seed, 0, 0, 1)
  rate, mode = schedule.at(step)
  for i in range(n):
    u_view, u_order = uniforms(key, i, 2)
    yield plan_document(rate, mode, u_view, u_order)


def expected_pair_fraction(rate: float, mode: str) -> float:
  """Share of documents that become pairs under the calibration."""
  p, pair_on = calibrate(rate, mode)
  if pair_on is None:
    return 0.0
  return (1.0 - p) if pair_on == RAW else p

