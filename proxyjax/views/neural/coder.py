"""The neural view's entropy coder: segmentation, equal-information windows, packing.

Stream format (symbols of the view, alphabet ``256 + 2^N``):

* a symbol ``s < 256`` is a **literal** byte ``s``;
* ``T/N`` consecutive symbols ``256 + d`` form one **window**: the ``d`` are the
  N-bit digits, most significant first, of a T-bit integer ``v``. The coder
  *and the model's context* restart at every window (Lester et al. 2024: "emit
  the first T bits, discard the consumed byte context"): the model sees
  ``[BOS, <raw>]`` + the window's own bytes and nothing before them, so a window
  decodes on its own, from its symbols alone, and the same symbols always mean
  the same bytes. A window codes at most ``window_context - 2`` bytes and
  carries no byte count.

**Window code.** An arithmetic coder over exact integers, restarted per window.
The interval starts as ``[0, 2^(T+G))`` (``G = 20`` guard bits); coding byte
``b`` with the model's integer table ``f`` (sum ``M = 2^prob_bits``, every
entry >= 1; ``proxyjax.views.neural.quantize``) and ``C[c] = f[0] + ... + f[c-1]``
splits ``[L, L+R)`` at the boundaries ``B[c] = L + floor(R * C[c] / M)`` and
keeps ``[B[b], B[b+1])``. ``v`` names the *cell* ``D(v) = [v, v+1) * 2^G``.

* The encoder takes bytes while some cell still fits inside the interval (the
  window is full when the next byte would leave none, at the end of its
  segment, or after ``window_context - 2`` bytes), then picks, from the longest
  prefix down, the first ``k`` for which a cell ``D(v)`` inside ``I_k`` contains a
  boundary of ``I_k``'s children under the model's table for the *next*
  position, and the smallest such ``v``. Such a cell lies in no single child,
  which is what ends the window: no count is stored.
* The decoder starts from the same interval and, before each byte, computes
  the children under the model's table for that position (given the window's
  bytes so far): if ``D(v)`` lies inside one child it outputs that byte and
  descends, else the window is done.

A window therefore costs about ``-log2 P(bytes)`` plus one or two bits of
termination, and is exactly T bits (``v < 2^T``; short windows are padded by
leading zero bits of ``v``). All arithmetic is on integers (numpy int64, or
Python integers when ``T + G + prob_bits > 62``): identical on every machine.

Why not a library coder: ``constriction``'s Python API offers range/ANS coders
over 32-bit words that re-quantise float probabilities themselves and end a
stream with a stored length or sentinel; none can emit a fixed T = 16-bit
window that ends without a count, which is what equal-information windows
need, so the window code above is this project's own (exact integers, no
floats after the tables).

**Fragile positions** (the encoder's guarantee that any decoder agrees): a
window over bytes ``[i, i+k)`` reads exactly the tables of its row positions
``0 .. k`` (``k`` to code the bytes, the one at ``k`` to end the window), and a
literal reads none. The encoder only forms windows whose ``k + 1`` tables are
*robust* (``quantize.FRAGILE_MARGIN``): when the first table of a window is
fragile its byte stays literal (``fragile_literals``), and a window may not read
a fragile table. A decoder whose float64 logits differ from the encoder's by less
than the margin therefore computes bit-identical tables at every position it
reads -- whatever its batch size or device. A decoder that does not reproduce
the bytes (another model, or noise beyond the margin) is caught by the CRC32
stored with each document (``NeuralCompressor.decode(..., crc32s=...)``).

**Segmentation** (encoder only: the decoder needs no segment boundaries, since
every window restarts anyway). The *entropy pass* runs the model over the
document with document context (``proxyjax.neural.byte_lm``: rows of
``context`` ids) and computes the predictive entropy ``h_t`` of its integer
table for byte t (``quantize.entropy_units``: exact integer arithmetic, a
function of the table alone). A new segment starts at byte t where

* ``h_t > entropy_threshold`` (the global criterion), or
* ``h_t - h_{t-1} > entropy_jump`` (the monotonicity criterion, as in BLT),

and at every position whose entropy-pass table is fragile (its value is not
relied on; the jump test after it is skipped). Segments are coded
independently -- every window restarts, and a window never crosses a segment
end -- so the windows of all segments of many documents are coded in parallel,
one model row per window, and equal segments code to equal symbols (the
encoder's cache). **Literal rule:** a segment stays literal bytes when (a) it
has at most ``T/N`` bytes (a window costs as many symbols), or its mean entropy
over its reliable positions exceeds ``literal_threshold`` bits per byte (the
model cannot predict it: no model call is spent on it), or (b) once coded, its
windows take at least as many symbols as it has bytes. Inside a coded segment a
byte whose window cannot be formed (fragile first table, or no terminating
cell) is a literal too.

**Symbol spans** (``symbol_spans``, for collision statistics): a literal covers
its byte ``[p, p+1)``; each of a window's ``T/N`` symbols covers the window's
``k`` coded bytes ``[i, i+k)`` (its digits depend on all of them jointly, and on
nothing else).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Generator

import numpy as np

from proxyjax.views.neural import quantize
from proxyjax.views.neural.settings import Settings

GUARD_BITS = 20


class CorruptStreamError(ValueError):
  """The symbols are not a valid neural stream for this model and settings."""


@dataclasses.dataclass
class EncodeStats:
  """What one or more documents cost (summed with ``+=``)."""
  bytes: int = 0
  symbols: int = 0
  literal_bytes: int = 0
  coded_bytes: int = 0
  windows: int = 0
  model_bits: float = 0.0  # sum of -log2 p of the coded bytes (the ideal code length)
  fragile_positions: int = 0  # entropy-pass positions whose table is fragile
  fragile_literals: int = 0  # bytes left literal only because of a fragile window table
  segments: int = 0
  literal_segments: int = 0  # segments left literal (rule a or b)
  cache_lookups: int = 0  # segments looked up in the encoder's cache (the coded ones)
  cache_hits: int = 0  # ... found there (or being coded for an earlier document)

  def __iadd__(self, other: "EncodeStats") -> "EncodeStats":
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
    return self

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class DecodeMismatchError(CorruptStreamError):
  """A decode did not reproduce the document's stored CRC32."""


def _dtype(settings: Settings):
  fits = settings.window_bits + GUARD_BITS + settings.prob_bits <= 62
  return np.int64 if fits else object


def cumulative(freqs: np.ndarray, dtype=np.int64) -> np.ndarray:
  """``C[0..256]`` of one table (``C[0] = 0``, ``C[256] = M``); int64 or Python ints."""
  c = np.zeros(257, np.int64)
  np.cumsum(freqs, out=c[1:])
  return c if dtype is np.int64 else c.astype(object)


def _boundaries(low, width, cdf, prob_bits):
  """``B[c] = L + floor(R * C[c] / M)`` for c = 0..256 (an int64 or object array)."""
  return low + ((width * cdf) >> prob_bits)


def _terminating_cell(low: int, width: int, inner: np.ndarray, prob_bits: int) -> int | None:
  """The smallest v with ``D(v)`` inside the interval and a child boundary inside
  ``D(v)`` (so ``D(v)`` is in no single child), or None. ``inner`` is the table's
  C[1..255] (the children's inner boundaries; any integer dtype)."""
  first = -((-low) >> GUARD_BITS)
  last = ((low + width) >> GUARD_BITS) - 1
  if first > last:
    return None
  # The first boundary B[c] = low + floor(width * C[c] / M) above first * 2^G:
  # B[c] > X  <=>  width * C[c] >= (X - low + 1) * M.
  need = ((first << GUARD_BITS) - low + 1) << prob_bits
  target = -(-need // width)
  if target >= 1 << prob_bits:  # above every inner boundary (C[c] < M)
    return None
  c = int(inner.searchsorted(target, side="left"))
  while c < 255:  # boundaries increase with c; skip those exactly on a cell edge
    b = low + ((width * int(inner[c])) >> prob_bits)
    v = b >> GUARD_BITS
    if v > last:
      return None
    if b & ((1 << GUARD_BITS) - 1):
      return v
    c += 1
  return None


def pack_window(v: int, settings: Settings) -> list[int]:
  """T-bit ``v`` -> ``T/N`` symbols ``256 + digit``, most significant digit first."""
  n, t = settings.symbol_bits, settings.window_bits
  if not 0 <= v < (1 << t):
    raise ValueError(f"window value {v} does not fit in {t} bits")
  mask = (1 << n) - 1
  return [256 + ((v >> (t - n * (j + 1))) & mask) for j in range(t // n)]


def unpack_window(symbols: np.ndarray, settings: Settings) -> int:
  v = 0
  for s in symbols:
    v = (v << settings.symbol_bits) | (int(s) - 256)
  return v


# --- segmentation (encoder only) ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Segment:
  """Bytes ``[start, end)`` of a document; ``literal``: left uncoded by rule (a)."""
  start: int
  end: int
  literal: bool


def segment_starts(entropy: np.ndarray, settings: Settings,
                   unreliable: np.ndarray | None = None) -> np.ndarray:
  """bool ``[n]``: where a segment starts (module docstring, **Segmentation**).

  ``entropy[t]`` is ``h_t`` in bits; ``unreliable[t]`` marks an entropy computed
  from a fragile table: a segment starts there whatever its value, and the jump
  test at ``t + 1`` (which would read it) is skipped.
  """
  h = np.asarray(entropy, np.float64)
  n = h.shape[0]
  starts = np.zeros(n, bool)
  if n == 0:
    return starts
  bad = np.zeros(n, bool) if unreliable is None else np.asarray(unreliable, bool)[:n]
  starts[0] = True
  starts |= h > settings.entropy_threshold
  starts[1:] |= ((h[1:] - h[:-1]) > settings.entropy_jump) & ~bad[:-1]
  starts |= bad
  return starts


def plan_segments(entropy: np.ndarray, settings: Settings,
                  unreliable: np.ndarray | None = None) -> list[Segment]:
  """The segments of a document and which stay literal by rule (a): a segment of at
  most ``T/N`` bytes (one window costs as many symbols) or whose mean entropy over
  its reliable positions exceeds ``literal_threshold``."""
  h = np.asarray(entropy, np.float64)
  n = h.shape[0]
  if n == 0:
    return []
  bad = np.zeros(n, bool) if unreliable is None else np.asarray(unreliable, bool)[:n]
  bounds = np.append(np.flatnonzero(segment_starts(h, settings, bad)), n).tolist()
  good = np.where(bad, 0.0, h)
  hsum = np.concatenate([[0.0], np.cumsum(good)])
  gsum = np.concatenate([[0], np.cumsum(~bad)])
  out = []
  spw = settings.symbols_per_window
  for a, b in zip(bounds[:-1], bounds[1:]):
    count = int(gsum[b] - gsum[a])
    mean = float(hsum[b] - hsum[a]) / count if count else 0.0
    out.append(Segment(a, b, b - a <= spw or mean > settings.literal_threshold))
  return out


# --- windows (one model row each, context restarted at the window's first byte) ------------


def code_window(chunk: bytes, freqs: np.ndarray, fragile: np.ndarray | None,
                settings: Settings) -> tuple[int | None, int, float, bool]:
  """One window at the start of ``chunk`` (the rest of its segment, at most
  ``window_bytes`` bytes). ``freqs[q]`` (``[len(chunk) + 1, 256]``) is the model's
  table for ``chunk[q]`` given ``chunk[:q]`` alone; ``fragile[q]`` flags it.

  Returns ``(v, k, model_bits, fragile_literal)``: the window's T-bit value and the
  ``k`` bytes it codes, or ``(None, 1, 0, ...)`` when the first byte stays literal
  (its table is fragile -- then ``fragile_literal`` -- or no prefix can end a window).
  """
  m = len(chunk)
  if m == 0 or m > settings.window_bytes:
    raise ValueError(f"a window chunk has 1..{settings.window_bytes} bytes, got {m}")
  freqs = np.asarray(freqs)
  if freqs.shape[0] < m + 1:
    raise ValueError(f"need {m + 1} tables, got {freqs.shape[0]}")
  limit = m + 1  # first fragile table (the coder reads tables 0..k only)
  if fragile is not None:
    bad = np.flatnonzero(np.asarray(fragile, bool)[:m + 1])
    if bad.size:
      limit = int(bad[0])
  if limit == 0:
    return None, 1, 0.0, True
  p_bits = settings.prob_bits
  arr = np.frombuffer(chunk, np.uint8)
  kmax = min(m, limit - 1)  # bytes 0..k-1 and the end table k must be robust
  full = 1 << (settings.window_bits + GUARD_BITS)
  low, width = 0, full
  intervals = []
  for j in range(kmax):
    b = int(arr[j])
    table = freqs[j]
    lo_c = int(table[:b].sum(dtype=np.int64))
    new_low = low + ((width * lo_c) >> p_bits)
    new_width = low + ((width * (lo_c + int(table[b]))) >> p_bits) - new_low
    if (-((-new_low) >> GUARD_BITS)) + 1 > (new_low + new_width) >> GUARD_BITS:
      break  # no cell [v, v+1) * 2^G fits in the interval any more
    low, width = new_low, new_width
    intervals.append((low, width))
  k = len(intervals)
  while k > 0:
    low, width = intervals[k - 1]
    inner = np.cumsum(freqs[k, :255], dtype=np.int64)
    v = _terminating_cell(low, width, inner, p_bits)
    if v is not None:
      chosen = freqs[np.arange(k), arr[:k]].astype(np.int64)
      return v, k, float(quantize.cost_table(p_bits)[chosen].sum()), False
    k -= 1
  return None, 1, 0.0, False


def code_windows(chunks: list[bytes], tables: np.ndarray, fragile: np.ndarray,
                 settings: Settings) -> list[tuple[int | None, int, float, bool]]:
  """``code_window`` for the rows of one model call (what a coder process runs)."""
  return [code_window(c, tables[i, :len(c) + 1], fragile[i, :len(c) + 1], settings)
          for i, c in enumerate(chunks)]


@dataclasses.dataclass(frozen=True)
class CodedSegment:
  """A segment's windows: a function of its bytes (and the model) alone."""
  symbols: np.ndarray  # int32
  spans: tuple  # (offset in the segment, coded bytes; 0 = a literal byte) per literal/window
  windows: int
  coded_bytes: int
  literal_bytes: int
  model_bits: float
  fragile_literals: int


class SegmentCoder:
  """Codes one segment window by window; each step needs the model row of ``chunk()``."""

  def __init__(self, data: bytes, settings: Settings):
    self.data, self.settings = bytes(data), settings
    self.pos = 0
    self.symbols: list[int] = []
    self.spans: list[tuple[int, int]] = []
    self.windows = self.coded_bytes = self.literal_bytes = self.fragile_literals = 0
    self.model_bits = 0.0

  @property
  def done(self) -> bool:
    return self.pos >= len(self.data)

  def chunk(self) -> bytes:
    """The bytes the next window may code (its model row holds these and nothing before)."""
    return self.data[self.pos:self.pos + self.settings.window_bytes]

  def advance(self, step: tuple[int | None, int, float, bool]) -> None:
    v, k, bits, fragile_literal = step
    if v is None:
      self.symbols.append(self.data[self.pos])
      self.spans.append((self.pos, 0))
      self.literal_bytes += 1
      self.fragile_literals += int(fragile_literal)
      self.pos += 1
      return
    self.symbols.extend(pack_window(v, self.settings))
    self.spans.append((self.pos, k))
    self.windows += 1
    self.coded_bytes += k
    self.model_bits += bits
    self.pos += k

  def result(self) -> CodedSegment:
    return CodedSegment(np.asarray(self.symbols, np.int32), tuple(self.spans), self.windows,
                        self.coded_bytes, self.literal_bytes, self.model_bits,
                        self.fragile_literals)


def encode_segment(data: bytes, settings: Settings, predict) -> CodedSegment:
  """Sequential driver: ``predict(window_prefix) -> (table[256], fragile)`` (or a table:
  never fragile) for the next byte of a window given the window's bytes so far."""
  seg = SegmentCoder(data, settings)
  while not seg.done:
    chunk = seg.chunk()
    out = [predict(chunk[:q]) for q in range(len(chunk) + 1)]
    if isinstance(out[0], tuple):
      tables = np.stack([t for t, _ in out])
      fragile = np.asarray([f for _, f in out], bool)
    else:
      tables, fragile = np.stack(out), None
    seg.advance(code_window(chunk, tables, fragile, settings))
  return seg.result()


# --- a document: segments -> symbols ---------------------------------------------------


def assemble(data: bytes, segments: list[Segment], coded: list[CodedSegment | None],
             settings: Settings) -> tuple[np.ndarray, EncodeStats, list[tuple[int, int]]]:
  """The document's symbols from its segments (``coded[i]``: segment i's windows, None for
  a literal one). Rule (b): a coded segment whose windows take at least as many symbols
  as it has bytes stays literal. Also returns ``(first byte, coded bytes)`` per literal (0)
  or window."""
  stats = EncodeStats(bytes=len(data), segments=len(segments))
  parts: list[np.ndarray] = []
  spans: list[tuple[int, int]] = []
  for seg, c in zip(segments, coded):
    size = seg.end - seg.start
    if c is None or len(c.symbols) >= size:
      parts.append(np.frombuffer(data[seg.start:seg.end], np.uint8).astype(np.int32))
      spans.extend((p, 0) for p in range(seg.start, seg.end))
      stats.literal_bytes += size
      stats.literal_segments += 1
      continue
    parts.append(c.symbols)
    spans.extend((seg.start + o, k) for o, k in c.spans)
    stats.windows += c.windows
    stats.coded_bytes += c.coded_bytes
    stats.literal_bytes += c.literal_bytes
    stats.model_bits += c.model_bits
    stats.fragile_literals += c.fragile_literals
  symbols = np.concatenate(parts) if parts else np.zeros(0, np.int32)
  stats.symbols = int(symbols.shape[0])
  return symbols.astype(np.int32), stats, spans


def spans_to_symbol_spans(spans: list[tuple[int, int]], num_symbols: int,
                          settings: Settings) -> tuple[np.ndarray, np.ndarray]:
  """``(starts, ends)`` per symbol from ``(first byte, coded bytes)`` per literal/window."""
  spw = settings.symbols_per_window
  starts = np.zeros(num_symbols, np.int64)
  ends = np.zeros(num_symbols, np.int64)
  s = 0
  for start, count in spans:
    width = 1 if count == 0 else spw
    starts[s:s + width] = start
    ends[s:s + width] = start + max(count, 1)
    s += width
  return starts, ends


def document_entropy(data: bytes, predict, settings: Settings
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Sequential reference of the entropy pass: ``h_t`` of ``predict(data[:t])``."""
  h, bad = [], []
  for t in range(len(data)):
    out = predict(data[:t])
    table, frag = out if isinstance(out, tuple) else (out, False)
    h.append(float(quantize.entropy_bits(table, settings.prob_bits)))
    bad.append(bool(frag))
  return np.asarray(h, np.float64), np.asarray(bad, bool)


def encode_document(data: bytes, settings: Settings, predict,
                    entropy: np.ndarray | None = None, unreliable: np.ndarray | None = None
                    ) -> tuple[np.ndarray, EncodeStats]:
  """Sequential reference encoder: ``predict(prefix) -> table`` (or ``(table, fragile)``)
  serves both passes: the entropy pass (``prefix`` = the document before byte t, unless
  ``entropy`` is given) and the windows (``prefix`` = the window's bytes so far)."""
  symbols, stats, _ = _encode_reference(data, settings, predict, entropy, unreliable)
  return symbols, stats


def symbol_spans(data: bytes, settings: Settings, predict, entropy: np.ndarray | None = None,
                 unreliable: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``encode_document``'s symbols with the byte span ``[start, end)`` each covers."""
  symbols, _, spans = _encode_reference(data, settings, predict, entropy, unreliable)
  return (symbols, *spans_to_symbol_spans(spans, len(symbols), settings))


def _encode_reference(data, settings, predict, entropy, unreliable):
  data = bytes(data)
  if entropy is None:
    entropy, unreliable = document_entropy(data, predict, settings)
  segments = plan_segments(entropy, settings, unreliable)
  coded = [None if s.literal else encode_segment(data[s.start:s.end], settings, predict)
           for s in segments]
  symbols, stats, spans = assemble(data, segments, coded, settings)
  if unreliable is not None:
    stats.fragile_positions = int(np.sum(unreliable))
  return symbols, stats, spans


def check_crc32(data: bytes, crc32: int | None, what: str = "document") -> bytes:
  """Returns ``data`` if it matches ``crc32`` (None: unchecked), else raises
  ``DecodeMismatchError``."""
  if crc32 is not None and zlib.crc32(data) != int(crc32):
    raise DecodeMismatchError(
        f"{what}: decoded {len(data)} bytes with CRC32 {zlib.crc32(data):08x}, expected "
        f"{int(crc32):08x}: the decoder's model, settings or tables differ from the "
        "encoder's (same checkpoint fingerprint and neural.json settings are required)")
  return data


# --- decoding --------------------------------------------------------------------


def parse_stream(symbols: np.ndarray, settings: Settings) -> list[tuple[bool, int]]:
  """``(is_window, value)`` per literal byte or window of a stream, in order."""
  symbols = np.asarray(symbols, np.int64)
  n = symbols.shape[0]
  if n and (symbols.min() < 0 or symbols.max() >= settings.alphabet_size):
    raise CorruptStreamError(f"symbols outside [0, {settings.alphabet_size})")
  spw = settings.symbols_per_window
  items: list[tuple[bool, int]] = []
  s = 0
  while s < n:
    if symbols[s] < 256:
      items.append((False, int(symbols[s])))
      s += 1
      continue
    packed = symbols[s:s + spw]
    if packed.shape[0] < spw or packed.min() < 256:
      raise CorruptStreamError(f"truncated window at symbol {s}")
    items.append((True, unpack_window(packed, settings)))
    s += spw
  return items


# A window's decoder is a generator so that a driver can batch model calls over many
# windows: it yields the window's bytes decoded so far whenever it needs the table for
# the next byte (given those bytes alone) and receives it via ``send``.
DecodeSteps = Generator[bytearray, np.ndarray, bytes]


def decode_window_steps(v: int, settings: Settings) -> DecodeSteps:
  """Decodes the window of T-bit value ``v``; its model context is its own bytes."""
  dtype = _dtype(settings)
  p_bits = settings.prob_bits
  point, point_end = v << GUARD_BITS, (v + 1) << GUARD_BITS
  low, width = 0, 1 << (settings.window_bits + GUARD_BITS)
  out = bytearray()
  while True:
    freqs = yield out
    bounds = _boundaries(low, width, cumulative(freqs, dtype), p_bits)
    c = int(np.searchsorted(bounds, point, side="right")) - 1
    if not 0 <= c < 256 or point_end > bounds[c + 1]:
      break  # D(v) is in no single child: the window ends
    if len(out) >= settings.window_bytes:
      raise CorruptStreamError(f"window {v} codes more than window_context - 2 = "
                               f"{settings.window_bytes} bytes")
    out.append(c)
    low, width = int(bounds[c]), int(bounds[c + 1] - bounds[c])
  if not out:
    raise CorruptStreamError(f"window {v} codes no byte")
  return bytes(out)


def decode_window(v: int, settings: Settings, predict) -> bytes:
  """One window alone: ``predict(window_prefix) -> table[256]``."""
  steps = decode_window_steps(v, settings)
  try:
    prefix = next(steps)
    while True:
      prefix = steps.send(predict(bytes(prefix)))
  except StopIteration as stop:
    return stop.value


def decode_document(symbols: np.ndarray, settings: Settings, predict,
                    crc32: int | None = None) -> bytes:
  """Sequential driver: ``predict(window_prefix: bytes) -> table[256]`` for the next
  byte of a window given the window's bytes so far (nothing before the window).

  With ``crc32`` (``zlib.crc32`` of the original bytes), a decode that does not
  reproduce them raises ``DecodeMismatchError``.
  """
  out = bytearray()
  for is_window, value in parse_stream(symbols, settings):
    if is_window:
      out += decode_window(value, settings, predict)
    else:
      out.append(value)
  return check_crc32(bytes(out), crc32)
