"""The shared id space of docs/method.md §1 and the document formats of docs/method.md §3.

    ids        meaning
    0          PAD (padding only; never a training target)
    1 / 2      BOS / EOS
    3-11       reserved specials
    12 / 13    <raw> / </raw>
    14 / 15    <comp> / </comp>
    16-63      reserved
    64-319     raw byte b -> 64 + b
    320 ...    compressed symbols s -> 320 + s (``separate_embedding``, the default)
               or 64 + s for byte-valued views without a separate embedding

The vocabulary size is derived from the configured compressed view and padded up
to a multiple of 128; the padded ids are never produced (the model masks them out
of its softmax). A raw-only interface needs only ids < 320.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
UNK, SEP, FILE_SEP = 3, 4, 5
RAW_OPEN, RAW_CLOSE = 12, 13
COMP_OPEN, COMP_CLOSE = 14, 15
BYTE_OFFSET = 64
RAW_VOCAB_SIZE = BYTE_OFFSET + 256  # 320: specials + raw bytes.
COMPRESSED_OFFSET = RAW_VOCAB_SIZE
VOCAB_MULTIPLE = 128

SPECIAL_NAMES = {
    PAD: "<pad>", BOS: "<bos>", EOS: "<eos>", UNK: "<unk>", SEP: "<sep>",
    FILE_SEP: "<file_sep>", RAW_OPEN: "<raw>", RAW_CLOSE: "</raw>",
    COMP_OPEN: "<comp>", COMP_CLOSE: "</comp>",
}

ID_DTYPE = np.int32


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def bytes_to_ids(data: bytes) -> np.ndarray:
  """Raw bytes -> ids 64..319."""
  return np.frombuffer(data, dtype=np.uint8).astype(ID_DTYPE) + BYTE_OFFSET


def ids_to_bytes(ids: np.ndarray | Sequence[int]) -> bytes:
  """Ids 64..319 -> raw bytes. Raises ValueError on any other id."""
  ids = np.asarray(ids, dtype=np.int64)
  if ids.size and (ids.min() < BYTE_OFFSET or ids.max() >= RAW_VOCAB_SIZE):
    raise ValueError("ids_to_bytes: ids outside the raw-byte range 64..319")
  return (ids - BYTE_OFFSET).astype(np.uint8).tobytes()


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Maps a compressed view's symbols into the shared id space.

  Attributes:
    compressed_alphabet: number of distinct symbols of the compressed view
      (0 for a raw-only setup).
    separate_embedding: compressed symbols get their own ids (320 + s) instead
      of sharing the raw-byte ids (64 + s). Only byte-valued views can share.
    literal_bytes: the view's symbols 0..255 are literal raw bytes (the neural
      view's uncoded spans): they map to the raw-byte ids 64..319 and the
      remaining symbols s >= 256 map to 320 + (s - 256).
  """

  compressed_alphabet: int = 0
  separate_embedding: bool = True
  literal_bytes: bool = False

  def __post_init__(self):
    if self.literal_bytes and self.compressed_alphabet < 256:
      raise ValueError("literal_bytes needs an alphabet of at least 256")

  @property
  def shares_raw_ids(self) -> bool:
    """Compressed symbols reuse the raw-byte ids 64..319."""
    return (not self.separate_embedding and not self.literal_bytes
            and 0 < self.compressed_alphabet <= 256)

  @property
  def compressed_offset(self) -> int:
    return BYTE_OFFSET if self.shares_raw_ids else COMPRESSED_OFFSET

  @property
  def num_ids(self) -> int:
    """Ids actually used (before padding)."""
    if self.compressed_alphabet == 0 or self.shares_raw_ids:
      return RAW_VOCAB_SIZE
    if self.literal_bytes:
      return COMPRESSED_OFFSET + self.compressed_alphabet - 256
    return COMPRESSED_OFFSET + self.compressed_alphabet

  @property
  def size(self) -> int:
    """The model's vocabulary size: ``num_ids`` padded to a multiple of 128."""
    return round_up(self.num_ids, VOCAB_MULTIPLE)

  def symbols_to_ids(self, symbols: np.ndarray) -> np.ndarray:
    symbols = np.asarray(symbols, dtype=ID_DTYPE)
    if self.literal_bytes:
      return np.where(symbols < 256, symbols + BYTE_OFFSET,
                      symbols - 256 + COMPRESSED_OFFSET).astype(ID_DTYPE)
    return symbols + ID_DTYPE(self.compressed_offset)

  def ids_to_symbols(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
    ids = np.asarray(ids, dtype=ID_DTYPE)
    if self.literal_bytes:
      return np.where(ids < COMPRESSED_OFFSET, ids - BYTE_OFFSET,
                      ids - COMPRESSED_OFFSET + 256).astype(ID_DTYPE)
    return ids - ID_DTYPE(self.compressed_offset)

  # --- document formats (docs/method.md §3) -------------------------------------------

  def raw_body(self, data: bytes) -> np.ndarray:
    """``<raw> b... </raw>`` (no BOS/EOS)."""
    return _concat([RAW_OPEN], bytes_to_ids(data), [RAW_CLOSE])

  def compressed_body(self, symbols: np.ndarray) -> np.ndarray:
    """``<comp> s... </comp>`` (no BOS/EOS)."""
    return _concat([COMP_OPEN], self.symbols_to_ids(symbols), [COMP_CLOSE])

  def document(self, *bodies: np.ndarray) -> np.ndarray:
    """``[BOS, body..., EOS]``: one segment holding one or two views."""
    return _concat([BOS], *bodies, [EOS])


def for_view(alphabet_size: int, *, separate_embedding: bool = True, literal_bytes: bool = False,
             shared_ids: bool = False) -> Vocab:
  """The id layout of a compressed view as the data config asks for it.

  ``shared_ids`` (``data.shared_ids``, vanilla mode only): a byte-valued view's
  symbols go on the raw-byte ids 64 + s whatever ``separate_embedding`` says, as
  the authors' no-sentinel ablation (``encode_bytes``) does. The layout is then
  that of ``separate_embedding=False``, so it is recorded (and restored) as such.
  Views with more than 256 symbols, or with literal bytes, never share ids.
  """
  return Vocab(int(alphabet_size), bool(separate_embedding) and not shared_ids,
               bool(literal_bytes))


def _concat(*parts: Iterable[int] | np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(p, dtype=ID_DTYPE) for p in parts])


@dataclasses.dataclass
class ParsedView:
  """One view found in a stream of ids: ``kind`` is 'raw', 'compressed' or 'bare'."""
  kind: str
  ids: np.ndarray


def parse_documents(ids: np.ndarray | Sequence[int]) -> list[list[ParsedView]]:
  """Splits a stream of ids into documents (BOS ... EOS) and their views.

  The inverse of the document formats: used by tests and the inspect CLI to
  show what the model is fed. PAD ids are ignored. A document without
  sentinels (``vanilla`` mode) yields one view of kind 'bare'. Raises
  ValueError on malformed structure (e.g. an unclosed sentinel before EOS).
  """
  ids = np.asarray(ids)
  ids = ids[ids != PAD]
  docs: list[list[ParsedView]] = []
  eos_positions = np.flatnonzero(ids == EOS)
  start = 0
  for end in eos_positions:
    segment = ids[start:end]
    start = end + 1
    if segment.size == 0 or segment[0] != BOS:
      raise ValueError(f"document does not start with BOS: {segment[:8]}")
    docs.append(_parse_views(segment[1:]))
  if start < ids.size:
    raise ValueError(f"trailing ids after the last EOS: {ids.size - start}")
  return docs


def _parse_views(body: np.ndarray) -> list[ParsedView]:
  views = []
  i = 0
  if body.size and body[0] not in (RAW_OPEN, COMP_OPEN):
    if np.isin(body, [RAW_OPEN, RAW_CLOSE, COMP_OPEN, COMP_CLOSE]).any():
      raise ValueError("sentinels inside a bare (vanilla) document")
    return [ParsedView("bare", body)]
  while i < body.size:
    opener = body[i]
    closer = {RAW_OPEN: RAW_CLOSE, COMP_OPEN: COMP_CLOSE}.get(int(opener))
    if closer is None:
      raise ValueError(f"expected <raw> or <comp>, got id {opener}")
    rest = np.flatnonzero(body[i + 1:] == closer)
    if rest.size == 0:
      raise ValueError("unclosed view")
    j = i + 1 + rest[0]
    views.append(ParsedView("raw" if opener == RAW_OPEN else "compressed",
                            body[i + 1:j]))
    i = j + 1
  return views
