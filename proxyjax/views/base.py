"""The View interface: a deterministic map from a document's bytes to symbols."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

SYMBOL_DTYPE = np.int32


class ViewError(Exception):
  """A view cannot represent a document (e.g. a tokenizer given invalid UTF-8).

  The pipeline catches it, falls back to the raw view and counts the document.
  """


class NotAligned(Exception):
  """A view whose symbols cannot be mapped back to input bytes (``View.symbol_spans``)."""


@dataclasses.dataclass(frozen=True)
class ViewOptions:
  """What the views read from the config (``config.data``).

  Attributes:
    tokenizer_path: tokenizer JSON of the tokenizer views (already resolved).
    gray_code: ``token_bytes`` writes Gray-coded ranks instead of ids.
    neural_dir: shards or compressor run directory of the neural view.
  """

  tokenizer_path: str = ""
  gray_code: bool = False
  neural_dir: str = ""

  @classmethod
  def from_config(cls, data: Any, **overrides) -> "ViewOptions":
    """From ``config.data`` (a ConfigDict or anything with these fields); ``overrides``
    win (e.g. a ``tokenizer_path`` resolved by the pipeline)."""
    get = data.get if hasattr(data, "get") else lambda k, d: getattr(data, k, d)
    values = {f.name: get(f.name, f.default) for f in dataclasses.fields(cls)}
    values.update(overrides)
    return cls(**values)


class View(abc.ABC):
  """bytes -> symbols in ``[0, alphabet_size)``, plus ``decode`` where lossless.

  Attributes:
    name: the config name of the view.
    alphabet_size: number of distinct symbols.
    lossless: ``decode(encode(x)) == x`` for every input.
    literal_bytes: symbols 0..255 are literal raw bytes (see ``Vocab``).
    needs_tokenizer: built from ``ViewOptions.tokenizer_path``.
  """

  name: str = ""
  alphabet_size: int = 256
  lossless: bool = True
  literal_bytes: bool = False
  needs_tokenizer: bool = False

  @classmethod
  def from_config(cls, options: ViewOptions) -> "View":
    """The view as ``data.view = cls.name`` configures it (``options``: the rest of ``data``)."""
    del options
    return cls()

  @abc.abstractmethod
  def encode(self, data: bytes) -> np.ndarray:
    """Returns a 1-D int32 array of symbols."""

  def decode(self, symbols: np.ndarray) -> bytes:
    raise NotImplementedError(f"view '{self.name}' has no decoder")

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(symbols, starts, ends)``: ``symbols == encode(data)`` and the input span
    ``[start, end)`` of each, indexing into ``span_bytes(data)``: the smallest
    contiguous run of input bytes whose encoding includes any bit of the symbol
    (empty for symbols that stand for no input, e.g. headers). Raises
    ``NotAligned`` for views without such a mapping."""
    raise NotAligned(f"view {self.name!r}: no mapping from symbols to input bytes")

  def span_bytes(self, data: bytes) -> bytes:
    """The bytes ``symbol_spans`` indexes into: the document itself by default."""
    return data

  @property
  def byte_valued(self) -> bool:
    return self.alphabet_size <= 256

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r}, alphabet_size={self.alphabet_size})"


def as_symbols(values: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(values, dtype=SYMBOL_DTYPE)


def symbols_to_byte_string(symbols: np.ndarray, alphabet_size: int = 256) -> bytes:
  symbols = np.asarray(symbols)
  if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
    raise ValueError(f"symbols outside [0, {alphabet_size})")
  return symbols.astype(np.uint8).tobytes()
