"""Raw bytes and their sub-/super-byte re-codings (docs/method.md §2, representation ablation).

High part first everywhere; ``doublebyte`` pads odd-length input with one 0x00.
"""

from __future__ import annotations

import numpy as np

from proxyjax.views import base


class RawView(base.View):
  """The identity view: one symbol per byte."""

  name = "raw"
  alphabet_size = 256

  def encode(self, data: bytes) -> np.ndarray:
    return base.as_symbols(np.frombuffer(data, dtype=np.uint8))

  def decode(self, symbols: np.ndarray) -> bytes:
    return base.symbols_to_byte_string(symbols)

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each symbol is its byte (never a collision)."""
    s = np.arange(len(data), dtype=np.int64)
    return self.encode(data), s, s + 1


class SubByteView(base.View):
  """Each byte becomes ``8 // bits`` symbols of ``bits`` bits, high part first."""

  def __init__(self, name: str, bits: int):
    if 8 % bits:
      raise ValueError("bits must divide 8")
    self.name = name
    self.bits = bits
    self.per_byte = 8 // bits
    self.alphabet_size = 1 << bits
    self._shifts = np.arange(8 - bits, -1, -bits, dtype=np.uint8)

  def encode(self, data: bytes) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    parts = (b[:, None] >> self._shifts[None, :]) & np.uint8(self.alphabet_size - 1)
    return base.as_symbols(parts.reshape(-1))

  def decode(self, symbols: np.ndarray) -> bytes:
    s = np.asarray(symbols)
    if s.size % self.per_byte:
      raise ValueError(f"{self.name}: symbol count not a multiple of {self.per_byte}")
    if s.size and (s.min() < 0 or s.max() >= self.alphabet_size):
      raise ValueError(f"{self.name}: symbols outside [0, {self.alphabet_size})")
    s = s.astype(np.uint16).reshape(-1, self.per_byte)
    out = (s << self._shifts[None, :].astype(np.uint16)).sum(axis=1)
    return out.astype(np.uint8).tobytes()

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each symbol covers the byte it is part of."""
    s = np.repeat(np.arange(len(data), dtype=np.int64), self.per_byte)
    return self.encode(data), s, s + 1


class HalfByteView(SubByteView):
  """Nibbles: two 4-bit symbols per byte."""

  name = "halfbyte"

  def __init__(self):
    super().__init__("halfbyte", 4)


class DoubleBitView(SubByteView):
  """Four 2-bit symbols per byte."""

  name = "doublebit"

  def __init__(self):
    super().__init__("doublebit", 2)


class BitView(SubByteView):
  """Eight 1-bit symbols per byte."""

  name = "bit"

  def __init__(self):
    super().__init__("bit", 1)


class DoubleByteView(base.View):
  """Byte pairs as big-endian 16-bit symbols; odd input is padded with 0x00.

  ``decode`` drops a single trailing 0x00 when the caller says the input had
  odd length (``num_bytes``); without it, a trailing 0x00 pad byte is dropped,
  which is exact for every document that does not itself end in NUL (text).
  """

  name = "doublebyte"
  alphabet_size = 1 << 16
  lossless = False  # exact given num_bytes, or for documents not ending in 0x00

  def encode(self, data: bytes) -> np.ndarray:
    if len(data) % 2:
      data = data + b"\x00"
    return base.as_symbols(np.frombuffer(data, dtype=">u2"))

  def decode(self, symbols: np.ndarray, num_bytes: int | None = None) -> bytes:
    s = np.asarray(symbols)
    if s.size and (s.min() < 0 or s.max() >= self.alphabet_size):
      raise ValueError("doublebyte: symbols outside [0, 65536)")
    data = s.astype(">u2").tobytes()
    if num_bytes is not None:
      if num_bytes not in (len(data), len(data) - 1):
        raise ValueError("doublebyte: num_bytes inconsistent with the symbol count")
      return data[:num_bytes]
    if data.endswith(b"\x00"):
      data = data[:-1]
    return data

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each symbol covers its two bytes of the padded document (``span_bytes``)."""
    s = np.arange(0, len(self.span_bytes(data)), 2, dtype=np.int64)
    return self.encode(data), s, s + 2

  def span_bytes(self, data: bytes) -> bytes:
    """The document padded to even length with 0x00, as ``encode`` pads it."""
    return data + b"\x00" * (len(data) % 2)
