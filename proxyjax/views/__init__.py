"""Views: deterministic maps from a document's bytes to symbols (docs/method.md §2).

Each view is a class (``proxyjax.views.registry``) that knows its config name,
builds itself from the config (``from_config``) and maps its symbols back to
input bytes (``symbol_spans``).
"""

from __future__ import annotations

from proxyjax.views import registry
from proxyjax.views.base import NotAligned, View, ViewError, ViewOptions
from proxyjax.views.deflate import DeflateView, GzipView
from proxyjax.views.recoded import (
  BitView,
  DoubleBitView,
  DoubleByteView,
  HalfByteView,
  RawView,
  SubByteView,
)
from proxyjax.views.registry import build, view_class
from proxyjax.views.tokenizer import TokenBytesView, TokenizerView

# Names accepted by ``data.view``. ``neural`` needs a compressor (``neural_dir``).
VIEW_NAMES = registry.names()
NEEDS_TOKENIZER = tuple(n for n in VIEW_NAMES if registry.needs_tokenizer(n))


def make_view(name: str, *, tokenizer_path: str = "", gray_code: bool = False,
              neural_dir: str = "") -> View:
  """Builds a view by its config name (``build`` with these options). Raises
  ValueError for an unknown name.

  ``neural_dir`` (the neural view only): a shards directory written by
  ``python -m proxyjax.compress`` or a compressor run directory.
  """
  return build(name, ViewOptions(tokenizer_path=tokenizer_path, gray_code=gray_code,
                                 neural_dir=neural_dir))


__all__ = ["View", "ViewError", "ViewOptions", "NotAligned", "VIEW_NAMES", "NEEDS_TOKENIZER",
           "make_view", "build", "view_class", "registry", "RawView", "DeflateView", "GzipView",
           "SubByteView", "HalfByteView", "DoubleBitView", "BitView", "DoubleByteView",
           "TokenizerView", "TokenBytesView"]
