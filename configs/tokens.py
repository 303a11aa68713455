"""Baseline: tokenizer ids only, no sentinels ([BOS, ids..., EOS]).

    python -m proxyjax.main --config=configs/tokens.py:SIZE --workdir=RUN

SIZE is tiny (the default), 0.5b, 1.5b, 4b, 7b or 14b: the model, batch, optimiser, mesh and
data sources are those of configs/<SIZE>.py (open it to see them; the ladder sizes have no
default corpus: pass --config.data.sources); this file changes only the data's view, below.
A byte-level BPE of data.tokenizer_vocab_size ids (1024 for tiny, 32768 for the ladder) is
trained on the train split unless data.tokenizer_path is set.
tests/config/test_configs.py pins the result for every SIZE.
"""

import os

from proxyjax.config import SIZES, load_config
from proxyjax.errors import ConfigError


def get_config(size="tiny"):
  size = size or "tiny"
  if size not in SIZES:
    raise ConfigError("size", f"unknown size {size!r}; known: {', '.join(SIZES)}")
  c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{size}.py"))

  # Data: every document is [BOS, token ids..., EOS] (tokens at 320+, see proxyjax/vocab.py).
  c.data.view = "tokenizer"  # BPE token ids.
  c.data.schedule.enabled = False  # No mixing schedule...
  c.data.rate = 1.0  # ...every document is tokenized...
  c.data.mode = "vanilla"  # ...with no <comp> sentinels around it.
  c.model.num_raw_pred_heads = 0  # No raw targets to train look-ahead raw heads on.
  c.summary_prompt = ""  # No raw-byte sample at the end: this model never sees raw bytes.
  return c
