"""Views: deterministic maps from a document's bytes to symbols (SPEC §2)."""

from __future__ import annotations

from proxyjax.views.base import View, ViewError
from proxyjax.views.deflate import DeflateView, GzipView
from proxyjax.views.recoded import DoubleByteView, RawView, SubByteView
from proxyjax.views.tokenizer import TokenBytesView, TokenizerView

# Names accepted by ``data.view``. ``neural`` needs a compressor (``neural_dir``).
VIEW_NAMES = ("raw", "deflate", "gzip", "tokenizer", "token_bytes", "halfbyte",
              "doublebit", "bit", "doublebyte", "neural")
NEEDS_TOKENIZER = ("tokenizer", "token_bytes")


def make_view(name: str, *, tokenizer_path: str = "", gray_code: bool = False,
              neural_dir: str = "") -> View:
  """Builds a view by its config name. Raises ValueError for an unknown name.

  ``neural_dir`` (the neural view only): a shards directory written by
  ``python -m proxyjax.compress`` or a compressor run directory.
  """
  if name == "raw":
    return RawView()
  if name == "deflate":
    return DeflateView()
  if name == "gzip":
    return GzipView()
  if name == "halfbyte":
    return SubByteView("halfbyte", 4)
  if name == "doublebit":
    return SubByteView("doublebit", 2)
  if name == "bit":
    return SubByteView("bit", 1)
  if name == "doublebyte":
    return DoubleByteView()
  if name == "tokenizer":
    return TokenizerView(tokenizer_path)
  if name == "token_bytes":
    return TokenBytesView(tokenizer_path, gray_code=gray_code)
  if name == "neural":
    if not neural_dir:
      raise NotImplementedError(
          "the 'neural' view needs a trained compressor: train one with "
          "configs/compressor.py, write shards with `python -m proxyjax.compress "
          "--config=configs/compressor.py --workdir=RUN --input=SOURCES --output=SHARDS`, "
          "then train with data.view='neural', data.neural_dir=SHARDS (or the compressor "
          "run directory) and data.sources='arrayrecord:SHARDS/*.array_record'")
    from proxyjax.views.neural import NeuralView  # pylint: disable=g-import-not-at-top
    return NeuralView(neural_dir)
  raise ValueError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")


__all__ = ["View", "ViewError", "VIEW_NAMES", "NEEDS_TOKENIZER", "make_view", "RawView",
           "DeflateView", "GzipView", "SubByteView", "DoubleByteView", "TokenizerView",
           "TokenBytesView"]
