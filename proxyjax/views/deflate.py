"""DEFLATE-family views: raw DEFLATE (default gzip proxy) and full gzip (paper parity).

``deflate`` is the raw DEFLATE stream at zlib level 9 (wbits -15): the same
bytes as gzip's payload, without the constant 10-byte header and the
CRC32/ISIZE trailer that the model could not predict (docs/method.md §2).

``symbol_spans`` re-inflates the stream with bit positions recorded
(``proxyjax.views.deflate_inspect``): a literal code covers its byte, a
length/distance code the whole copied span, and a stream byte covers the union
of the codes its 8 bits overlap. Bytes made only of block headers, Huffman
tables, end-of-block codes or padding cover no input (an empty span). For
``gzip`` the 10 header bytes are overhead (empty) and the 8 trailer bytes
(CRC32, ISIZE) depend on the whole document, so they cover all of it.
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np

from proxyjax.views import base, deflate_inspect


class DeflateView(base.View):
  name = "deflate"
  alphabet_size = 256

  def __init__(self, level: int = 9):
    self.level = level

  def encode(self, data: bytes) -> np.ndarray:
    c = zlib.compressobj(self.level, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush()
    return base.as_symbols(np.frombuffer(out, dtype=np.uint8))

  def decode(self, symbols: np.ndarray) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(base.symbols_to_byte_string(symbols)) + d.flush()
    if not d.eof:
      raise ValueError("deflate: truncated stream")
    return out

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    symbols = self.encode(data)
    stream = symbols.astype(np.uint8).tobytes()
    out, codes = deflate_inspect.inflate_codes(stream)
    if out != data:
      raise base.NotAligned("deflate: re-inflated stream differs from the document")
    starts, ends = deflate_inspect.byte_spans_from_codes(codes, len(stream))
    return symbols, starts, ends


class GzipView(base.View):
  """``gzip.compress(data, 9, mtime=0)``: deterministic, with header and trailer."""

  name = "gzip"
  alphabet_size = 256

  def encode(self, data: bytes) -> np.ndarray:
    out = gzip.compress(data, compresslevel=9, mtime=0)
    return base.as_symbols(np.frombuffer(out, dtype=np.uint8))

  def decode(self, symbols: np.ndarray) -> bytes:
    return gzip.decompress(base.symbols_to_byte_string(symbols))

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    symbols = self.encode(data)
    stream = symbols.astype(np.uint8).tobytes()
    if stream[3] != 0:
      raise base.NotAligned("gzip: unexpected header flags")
    payload = stream[10:-8]
    out, codes = deflate_inspect.inflate_codes(payload)
    if out != data:
      raise base.NotAligned("gzip: re-inflated payload differs from the document")
    ps, pe = deflate_inspect.byte_spans_from_codes(codes, len(payload))
    starts = np.concatenate([np.zeros(10, np.int64), ps, np.zeros(8, np.int64)])
    ends = np.concatenate([np.zeros(10, np.int64), pe, np.full(8, len(data), np.int64)])
    return symbols, starts, ends
