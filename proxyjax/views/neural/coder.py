"""The neural view's entropy coder: segmentation, equal-information windows, packing.

Stream format (symbols of the view, alphabet ``256 + 2^N``):

* a symbol ``s < 256`` is a **literal** byte ``s``;
* ``T/N`` consecutive symbols ``256 + d`` form one **window**: the ``d`` are the
  N-bit digits, most significant first, of a T-bit integer ``v``. The coder
  restarts per window, so a window decodes on its own (given the document's
  bytes before it, which condition the model) and carries no byte count.

**Window code.** An arithmetic coder over exact integers, restarted per window.
The interval starts as ``[0, 2^(T+G))`` (``G = 20`` guard bits); coding byte
``b`` with the model's integer table ``f`` (sum ``M = 2^prob_bits``, every
entry >= 1; ``proxyjax.views.neural.quantize``) and ``C[c] = f[0] + ... + f[c-1]``
splits ``[L, L+R)`` at the boundaries ``B[c] = L + floor(R * C[c] / M)`` and
keeps ``[B[b], B[b+1])``. ``v`` names the *cell* ``D(v) = [v, v+1) * 2^G``.

* The encoder takes bytes while some cell still fits inside the interval (the
  window is full when the next byte would leave none, or at the end of a
  coded span), then picks, from the longest prefix down, the first ``k`` for
  which a cell ``D(v)`` inside ``I_k`` contains a boundary of ``I_k``'s
  children under the model's table for the *next* position, and the smallest
  such ``v``. Such a cell lies in no single child, which is what ends the
  window: no count is stored.
* The decoder starts from the same interval and, before each byte, computes
  the children under the model's table for that position: if ``D(v)`` lies
  inside one child it outputs that byte and descends, else the window is done.

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
window over bytes ``[i, i+k)`` reads exactly the tables of positions
``i .. i+k`` (``k`` to code the bytes, the one at ``i+k`` to end the window),
and a literal reads none. The encoder only forms windows whose ``k + 1``
tables are *robust* (``quantize.FRAGILE_MARGIN``): a fragile byte stays
literal, and a window may not end before a fragile position (the table after
the last byte, at ``n`` for the last window, included). A decoder whose
float64 logits differ from the encoder's by less than the margin therefore
computes bit-identical tables at every position it reads -- whatever its batch
size or device -- and never needs to know which positions were fragile. A
decoder that does not reproduce the bytes (another model, or noise beyond the
margin) is caught by the CRC32 stored with each document
(``NeuralCompressor.decode(..., crc32s=...)``).

**Segmentation** (encoder only; the decoder follows the symbol ranges): the
cost of byte i is ``-log2(f_i[b_i] / M)``; a byte stays literal where the
mean cost over ``entropy_window`` bytes centred on it exceeds
``literal_threshold``; literal runs shorter than ``min_literal_run`` are coded.
A window's termination test at the end of a document uses the model's
prediction *after* the last byte, so the encoder needs ``n + 1`` tables.

**Symbol spans** (``symbol_spans``, for collision statistics): a literal covers
its byte ``[p, p+1)``; each of a window's ``T/N`` symbols covers the window's
``k`` coded bytes ``[i, i+k)`` (its digits depend on all of them jointly).
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
  fragile_positions: int = 0  # positions 0..n whose table is fragile
  fragile_literals: int = 0  # bytes left literal only because of a fragile table

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


def literal_mask(costs: np.ndarray, settings: Settings) -> np.ndarray:
  """Which bytes stay literal (see the module docstring)."""
  n = costs.shape[0]
  if n == 0:
    return np.zeros(0, bool)
  w = min(settings.entropy_window, n)
  csum = np.concatenate([[0.0], np.cumsum(costs, dtype=np.float64)])
  lo = np.clip(np.arange(n) - w // 2, 0, n - w)
  mean = (csum[lo + w] - csum[lo]) / w
  lit = mean > settings.literal_threshold
  if settings.min_literal_run > 1 and lit.any():
    edges = np.flatnonzero(np.diff(np.concatenate([[0], lit.astype(np.int8), [0]])))
    for start, end in zip(edges[::2], edges[1::2]):
      if end - start < settings.min_literal_run:
        lit[start:end] = False
  return lit


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


def encode_document(data: bytes, freqs: np.ndarray, settings: Settings,
                    fragile: np.ndarray | None = None) -> tuple[np.ndarray, EncodeStats]:
  """Bytes + integer tables ``[n + 1, 256]`` -> (int32 symbols, stats).

  ``freqs[i]`` is the model's table for byte ``i`` given ``data[:i]``;
  ``freqs[n]`` is its prediction after the last byte (used only to end the
  last window). ``fragile[i]`` (bool ``[n + 1]``; None = all robust) marks the
  tables the coder must not rely on (module docstring).
  """
  symbols, stats, _ = _encode(data, freqs, settings, fragile)
  return symbols, stats


def symbol_spans(data: bytes, freqs: np.ndarray, settings: Settings,
                 fragile: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``encode_document``'s symbols with the byte span ``[start, end)`` each covers.

  Returns ``(symbols int32 [m], starts int64 [m], ends int64 [m])``: a literal
  covers its own byte, each of a window's ``T/N`` symbols the window's ``k``
  coded bytes (module docstring). Spans are contiguous, in order, and tile
  ``[0, n)``.
  """
  symbols, _, spans = _encode(data, freqs, settings, fragile)
  spw = settings.symbols_per_window
  starts = np.zeros(len(symbols), np.int64)
  ends = np.zeros(len(symbols), np.int64)
  s = 0
  for start, count in spans:
    width = 1 if count == 0 else spw
    starts[s:s + width] = start
    ends[s:s + width] = start + max(count, 1)
    s += width
  return symbols, starts, ends


def _encode(data: bytes, freqs: np.ndarray, settings: Settings, fragile: np.ndarray | None
            ) -> tuple[np.ndarray, EncodeStats, list[tuple[int, int]]]:
  """The encoder; also returns ``(first byte, coded bytes)`` per literal (0) or window."""
  arr = np.frombuffer(data, np.uint8)
  n = arr.shape[0]
  stats = EncodeStats(bytes=n)
  if n == 0:
    return np.zeros(0, np.int32), stats, []
  freqs = np.asarray(freqs)
  if freqs.shape != (n + 1, 256):
    raise ValueError(f"need frequency tables [{n + 1}, 256], got {freqs.shape}")
  if fragile is None:
    fragile = np.zeros(n + 1, bool)
  fragile = np.asarray(fragile, bool)
  if fragile.shape != (n + 1,):
    raise ValueError(f"need fragility flags [{n + 1}], got {fragile.shape}")
  stats.fragile_positions = int(fragile.sum())
  p_bits = settings.prob_bits
  chosen = freqs[np.arange(n), arr].astype(np.int64)
  # Every table's inner boundaries C[1..255] (< M <= 2^16: uint16, as compact as the
  # tables), and C[b] for the coded byte.
  inner = np.empty((n + 1, 255), np.uint16 if p_bits <= 16 else np.int32)
  below = np.zeros(n, np.int64)
  for s in range(0, n + 1, 4096):
    block = np.cumsum(freqs[s:s + 4096, :255], axis=1, dtype=np.int32)
    inner[s:s + block.shape[0]] = block
    b = arr[s:s + block.shape[0]].astype(np.int64)
    rows = np.arange(b.shape[0])
    below[s:s + b.shape[0]] = np.where(b > 0, block[rows, np.maximum(b - 1, 0)], 0)
  below_list, chosen_list = below.tolist(), chosen.tolist()
  costs = quantize.cost_table(p_bits)[chosen]
  cost_sums = np.concatenate([[0.0], np.cumsum(costs)])
  segmented = literal_mask(costs, settings)
  lit = segmented | fragile[:n]  # a fragile table never codes its byte
  stats.fragile_literals = int(np.sum(lit & ~segmented))
  robust = (~fragile).tolist()
  full = 1 << (settings.window_bits + GUARD_BITS)
  out: list[int] = []
  spans: list[tuple[int, int]] = []
  i = 0
  while i < n:
    if lit[i]:
      out.append(int(arr[i]))
      spans.append((i, 0))
      stats.literal_bytes += 1
      i += 1
      continue
    end = i + 1
    while end < n and not lit[end]:
      end += 1
    while i < end:  # windows over the coded span [i, end)
      low, width = 0, full
      intervals = []
      for j in range(i, end):  # the interval of each prefix that still holds a cell
        lo_c = below_list[j]
        new_low = low + ((width * lo_c) >> p_bits)
        new_width = low + ((width * (lo_c + chosen_list[j])) >> p_bits) - new_low
        if (-((-new_low) >> GUARD_BITS)) + 1 > (new_low + new_width) >> GUARD_BITS:
          break  # no cell [v, v+1) * 2^G fits in [low, low + width) any more
        low, width = new_low, new_width
        intervals.append((low, width))
      k, v = len(intervals), None
      while k > 0:
        if robust[i + k]:  # the decoder reads table i + k to see the window end
          low, width = intervals[k - 1]
          v = _terminating_cell(low, width, inner[i + k], p_bits)
          if v is not None:
            break
        k -= 1
      if v is None:  # no prefix can end a window here: the byte stays literal
        out.append(int(arr[i]))
        spans.append((i, 0))
        stats.literal_bytes += 1
        i += 1
        continue
      out.extend(pack_window(v, settings))
      spans.append((i, k))
      stats.windows += 1
      stats.coded_bytes += k
      stats.model_bits += float(cost_sums[i + k] - cost_sums[i])
      i += k
  stats.symbols = len(out)
  return np.asarray(out, np.int32), stats, spans


# The decoder is a generator so that a driver can batch model calls over many
# documents: it yields the bytes decoded so far whenever it needs the table for
# the next position (``len(prefix)``) and receives it via ``send``.
DecodeSteps = Generator[bytearray, np.ndarray, bytes]


def decode_steps(symbols: np.ndarray, settings: Settings) -> DecodeSteps:
  """Decodes one document; see ``decode_document`` for a simple driver."""
  symbols = np.asarray(symbols, np.int64)
  n = symbols.shape[0]
  if n and (symbols.min() < 0 or symbols.max() >= settings.alphabet_size):
    raise CorruptStreamError(f"symbols outside [0, {settings.alphabet_size})")
  spw = settings.symbols_per_window
  dtype = _dtype(settings)
  p_bits = settings.prob_bits
  full = 1 << (settings.window_bits + GUARD_BITS)
  out = bytearray()
  s = 0
  while s < n:
    if symbols[s] < 256:
      out.append(int(symbols[s]))
      s += 1
      continue
    packed = symbols[s:s + spw]
    if packed.shape[0] < spw or packed.min() < 256:
      raise CorruptStreamError(f"truncated window at symbol {s}")
    v = unpack_window(packed, settings)
    point, point_end = v << GUARD_BITS, (v + 1) << GUARD_BITS
    low, width = 0, full
    count = 0
    while True:
      freqs = yield out
      bounds = _boundaries(low, width, cumulative(freqs, dtype), p_bits)
      c = int(np.searchsorted(bounds, point, side="right")) - 1
      if not 0 <= c < 256 or point_end > bounds[c + 1]:
        break  # D(v) is in no single child: the window ends
      out.append(c)
      low, width = int(bounds[c]), int(bounds[c + 1] - bounds[c])
      count += 1
    if count == 0:
      raise CorruptStreamError(f"window at symbol {s} codes no byte")
    s += spw
  return bytes(out)


def check_crc32(data: bytes, crc32: int | None, what: str = "document") -> bytes:
  """Returns ``data`` if it matches ``crc32`` (None: unchecked), else raises
  ``DecodeMismatchError``."""
  if crc32 is not None and zlib.crc32(data) != int(crc32):
    raise DecodeMismatchError(
        f"{what}: decoded {len(data)} bytes with CRC32 {zlib.crc32(data):08x}, expected "
        f"{int(crc32):08x}: the decoder's model, settings or tables differ from the "
        "encoder's (same checkpoint fingerprint and neural.json settings are required)")
  return data


def decode_document(symbols: np.ndarray, settings: Settings, predict,
                    crc32: int | None = None) -> bytes:
  """Sequential driver: ``predict(prefix: bytes) -> table[256]`` for the next byte.

  With ``crc32`` (``zlib.crc32`` of the original bytes), a decode that does not
  reproduce them raises ``DecodeMismatchError``.
  """
  steps = decode_steps(symbols, settings)
  try:
    prefix = next(steps)
    while True:
      prefix = steps.send(predict(bytes(prefix)))
  except StopIteration as stop:
    return check_crc32(stop.value, crc32)
