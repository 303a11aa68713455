"""BPE-tokenizer views: token ids as symbols, or token ids written as bytes.

Both load a Hugging Face ``tokenizers`` JSON file (train one with
``python -m proxyjax.tools.train_tokenizer``). The tokenizer is loaded lazily so
the view pickles cheaply into Grain worker processes.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import tokenizers

from proxyjax.views import base

_PROBE = "def f(x):\n    return {'a': x ** 2}  # caf\u00e9 \u2192 \u00fc\u00df \U0001f600\n\tend\r\n"


def byte_level_alphabet() -> dict[str, int]:
  """The byte-level BPE character alphabet: printable char -> the byte it stands for.

  Bytes that are printable Latin-1 characters stand for themselves; the others
  are assigned, in byte order, the code points 256, 257, ...
  """
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
               + list(range(0xAE, 0xFF + 1)))
  table = {}
  extra = 0
  for b in range(256):
    if b in printable:
      table[chr(b)] = b
    else:
      table[chr(256 + extra)] = b
      extra += 1
  return table


class TokenizerView(base.View):
  """BPE token ids as symbols; alphabet = the tokenizer's vocabulary (with added tokens)."""

  name = "tokenizer"
  needs_tokenizer = True

  @classmethod
  def from_config(cls, options: base.ViewOptions) -> "TokenizerView":
    return cls(options.tokenizer_path)

  def __init__(self, path: str):
    if not path:
      raise ValueError("the tokenizer view needs a tokenizer.json path")
    self.path = path
    with open(path, "r", encoding="utf-8") as f:
      self._json = f.read()
    spec = json.loads(self._json)
    self._byte_level = _uses_byte_level(spec)
    self.alphabet_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
    probe_ids = self.tokenizer.encode(_PROBE, add_special_tokens=False).ids
    self.lossless = self.tokenizer.decode(probe_ids, skip_special_tokens=False) == _PROBE

  def __getstate__(self):
    state = self.__dict__.copy()
    state.pop("tokenizer", None)  # the cached_property; rebuilt lazily from _json
    return state

  @functools.cached_property
  def tokenizer(self):
    return tokenizers.Tokenizer.from_str(self._json)

  def encode_ids(self, data: bytes) -> np.ndarray:
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError as e:
      raise base.ViewError("tokenizer: document is not valid UTF-8") from e
    try:
      ids = self.tokenizer.encode(text, add_special_tokens=False).ids
    except Exception as e:  # pylint: disable=broad-except
      raise base.ViewError(f"tokenizer: encode failed: {e}") from e
    return base.as_symbols(np.asarray(ids, dtype=np.int64))

  def decode_ids(self, ids: np.ndarray) -> bytes:
    text = self.tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=False)
    return text.encode("utf-8")

  def token_bytes(self, token_id: int) -> bytes:
    """The bytes one token stands for (exact for byte-level BPE)."""
    token = self.tokenizer.id_to_token(token_id)
    if token is not None and self._byte_level:
      table = _byte_level_table()
      if all(c in table for c in token):
        return bytes(table[c] for c in token)
    return self.tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8")

  def encode(self, data: bytes) -> np.ndarray:
    return self.encode_ids(data)

  def decode(self, symbols: np.ndarray) -> bytes:
    return self.decode_ids(symbols)

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each token's bytes, aligned exactly when the tokens' bytes concatenate to the
    document (byte-level BPE: a token always stands for the same bytes); otherwise
    the characters the tokenizer's offsets say it covers (a normalising tokenizer
    can map different text to one token). The symbols are the ids (int64)."""
    text = data.decode("utf-8")
    enc = self.tokenizer.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int64)
    if not np.array_equal(ids, self.encode(data)):
      raise base.NotAligned("tokenizer offsets do not match the view's encoding")
    cache: dict[int, bytes] = {}
    pieces = []
    for i in ids.tolist():
      if i not in cache:
        cache[i] = self.token_bytes(i)
      pieces.append(cache[i])
    if b"".join(pieces) == data:  # byte-level BPE: exact byte spans
      lengths = np.asarray([len(p) for p in pieces], dtype=np.int64)
      ends = np.cumsum(lengths)
      return ids, ends - lengths, ends
    offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    char_bytes = _char_byte_offsets(text)
    return ids, char_bytes[offs[:, 0]], char_bytes[offs[:, 1]]


def _char_byte_offsets(text: str) -> np.ndarray:
  """Byte offset of every character boundary (len(text) + 1 entries)."""
  cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
  widths = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
  return np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)


@functools.lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
  return byte_level_alphabet()


def _uses_byte_level(spec: dict) -> bool:
  def has(node):
    if not isinstance(node, dict):
      return False
    if node.get("type") == "ByteLevel":
      return True
    return any(has(n) for n in node.get("pretokenizers", []) + node.get("decoders", []))
  return has(spec.get("pre_tokenizer")) and has(spec.get("decoder"))


def gray(n: np.ndarray) -> np.ndarray:
  return n ^ (n >> 1)


def inverse_gray(g: np.ndarray) -> np.ndarray:
  n = g.copy()
  shift = g >> 1
  while np.any(shift):
    n ^= shift
    shift >>= 1
  return n


class TokenBytesView(base.View):
  """BPE ids written as ``ceil(log2 V / 8)`` big-endian bytes each (2 for V <= 65,536).

  With ``gray=True`` each id is first replaced by the Gray code of its rank
  when the vocabulary is sorted by the bytes each token decodes to, ties broken
  by id, so tokens with similar bytes get codes that differ in few bits.
  """

  name = "token_bytes"
  alphabet_size = 256
  needs_tokenizer = True

  @classmethod
  def from_config(cls, options: base.ViewOptions) -> "TokenBytesView":
    return cls(options.tokenizer_path, gray_code=options.gray_code)

  def __init__(self, path: str, gray_code: bool = False):
    self.inner = TokenizerView(path)
    self.lossless = self.inner.lossless
    self.gray_code = gray_code
    vocab = self.inner.alphabet_size
    self.width = max(1, math.ceil(math.log2(max(vocab, 2)) / 8))
    if gray_code:
      keys = [self.inner.token_bytes(i) for i in range(vocab)]
      order = sorted(range(vocab), key=lambda i: (keys[i], i))
      self._rank_to_id = np.asarray(order, dtype=np.int64)
      self._id_to_code = np.empty(vocab, dtype=np.int64)
      self._id_to_code[self._rank_to_id] = gray(np.arange(vocab, dtype=np.int64))
    self.name = "token_bytes_gray" if gray_code else "token_bytes"

  def _ids_to_codes(self, ids: np.ndarray) -> np.ndarray:
    return self._id_to_code[ids] if self.gray_code else ids.astype(np.int64)

  def encode(self, data: bytes) -> np.ndarray:
    codes = self._ids_to_codes(self.inner.encode_ids(data))
    shifts = np.arange(8 * (self.width - 1), -1, -8, dtype=np.int64)
    out = (codes[:, None] >> shifts[None, :]) & 0xFF
    return base.as_symbols(out.reshape(-1))

  def decode(self, symbols: np.ndarray) -> bytes:
    s = np.asarray(symbols, dtype=np.int64)
    if s.size % self.width:
      raise ValueError(f"token_bytes: symbol count not a multiple of {self.width}")
    if s.size and (s.min() < 0 or s.max() > 255):
      raise ValueError("token_bytes: symbols outside [0, 256)")
    shifts = np.arange(8 * (self.width - 1), -1, -8, dtype=np.int64)
    codes = (s.reshape(-1, self.width) << shifts[None, :]).sum(axis=1)
    ids = self._rank_to_id[inverse_gray(codes)] if self.gray_code else codes
    return self.inner.decode_ids(ids)

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of a token's ``width`` bytes covers the token's span."""
    _, starts, ends = self.inner.symbol_spans(data)
    return self.encode(data), np.repeat(starts, self.width), np.repeat(ends, self.width)
