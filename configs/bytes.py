"""Baseline: raw bytes only (no compressed view).

    python -m proxyjax.main --config=configs/bytes.py:SIZE --workdir=RUN

SIZE is tiny (the default), 0.5b, 1.5b, 4b, 7b or 14b: the model, batch, optimiser, mesh and
data sources are those of configs/<SIZE>.py (open it to see them; the ladder sizes have no
default corpus: pass --config.data.sources); this file changes only the data's view and the
prediction heads, below. tests/config/test_configs.py pins the result for every SIZE.
"""

import os

from proxyjax.config import SIZES, load_config
from proxyjax.errors import ConfigError


def get_config(size="tiny"):
  size = size or "tiny"
  if size not in SIZES:
    raise ConfigError("size", f"unknown size {size!r}; known: {', '.join(SIZES)}")
  c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{size}.py"))

  # Data: every document is [BOS, <raw>, bytes..., </raw>, EOS]; vocabulary 320 ids.
  c.data.view = "raw"  # No compressed view.
  c.data.schedule.enabled = False  # No mixing schedule...
  c.data.rate = 0.0  # ...and never a compressed view.
  c.model.num_raw_pred_heads = 0  # Every target is raw already: no look-ahead raw heads.
  c.model.num_pred_heads = 8  # EvaByte's recipe: 8 heads predict bytes t+1..t+8.
  return c
