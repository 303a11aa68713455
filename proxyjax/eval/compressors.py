"""Deprecated: the compressor analysis is ``proxyjax.eval.compressor_analysis``.

This module forwards every name (analysis, ``plot`` from
``proxyjax.eval.compressor_plot``, ``inflate_codes`` from
``proxyjax.views.deflate_inspect``) with a DeprecationWarning, and
``python -m proxyjax.eval.compressors`` still runs the analysis CLI. The eval
task keeps its name, ``compressors``.
"""

from __future__ import annotations

import sys
import warnings

from absl import app

from proxyjax.eval import compressor_analysis, compressor_plot
from proxyjax.views import deflate_inspect

_MESSAGE = ("proxyjax.eval.compressors is deprecated: use proxyjax.eval.compressor_analysis "
            "(python -m proxyjax.eval.compressor_analysis)")
_FORWARDED = (compressor_analysis, compressor_plot, deflate_inspect)


def __getattr__(name: str):
  for module in _FORWARDED:
    if hasattr(module, name):
      warnings.warn(f"{_MESSAGE}; {name} is {module.__name__}.{name}", DeprecationWarning,
                    stacklevel=2)
      return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
  print(f"warning: {_MESSAGE}", file=sys.stderr, flush=True)
  compressor_analysis._define_flags()  # pylint: disable=protected-access
  app.run(compressor_analysis.main)
