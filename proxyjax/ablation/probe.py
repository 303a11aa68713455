"""The probe behind byte and FLOP budgets: the arm's data stream without the model.

See ``proxyjax.ablation.budget`` for how its measurements become a number of steps.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import ml_collections
import numpy as np

from proxyjax.ablation.budget import Phase, Probe
from proxyjax.data import mixing, pipeline
from proxyjax.model import transformer
from proxyjax.train import metrics as metrics_lib


def dense_params(config: ml_collections.ConfigDict, vocab=None) -> tuple[Any, int]:
  """(model config, N): parameters touched per symbol, as the trainer counts them
  (all parameters but the embedding table; shapes only, nothing allocated)."""
  vocab = vocab if vocab is not None else pipeline.build_vocab(config)
  model_cfg = transformer.ModelConfig.from_config(config, vocab)
  params = jax.eval_shape(lambda: transformer.init_params(model_cfg, int(config.seed)))
  n = transformer.count_params(params) - model_cfg.vocab_size * model_cfg.d_model
  return model_cfg, int(n)


def probe_phase(config: ml_collections.ConfigDict, rate: float, mode: str, *, model_cfg,
                n_dense: int, min_batches: int = 4, min_documents: int = 48,
                max_batches: int = 2000) -> Phase:
  """Runs the train stream at a constant ``rate`` / ``mode`` (in this process, no
  workers) until it has ``min_batches`` batches and ``min_documents`` documents."""
  c = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  c.data.num_workers = 0
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1,
                              schedule=mixing.Schedule.constant(rate, mode))
  symbols = pairs = batches = 0
  stats: dict[str, Any] = {}
  try:
    while batches < max_batches:
      batch = next(it)
      seg = np.asarray(batch["segment_ids"])
      symbols += int(np.sum(seg > 0))
      pairs += metrics_lib.visible_pairs(seg, model_cfg.window)
      batches += 1
      if batches >= min_batches and (batches % 8 == 0 or batches == max_batches):
        stats = pipeline.pipeline_stats(it)
        if stats.get("docs_used", 0) >= min_documents:
          break
    stats = pipeline.pipeline_stats(it)
  finally:
    if hasattr(it, "close"):
      it.close()
  ids = max(int(stats.get("ids", 0)), 1)
  flops = metrics_lib.train_flops(model_cfg, n_dense, symbols, pairs) / batches
  return Phase(rate=float(rate), mode=str(mode), batches=batches,
               documents=int(stats.get("docs_used", 0)),
               symbols_per_step=symbols / batches, pairs_per_step=pairs / batches,
               bytes_per_id=float(stats.get("doc_bytes", 0)) / ids, flops_per_step=flops)


def probe(config: ml_collections.ConfigDict, **kwargs) -> Probe:
  """Measures the phases of ``config``'s data stream (see the module docstring)."""
  model_cfg, n_dense = dense_params(config)
  kw = dict(model_cfg=model_cfg, n_dense=n_dense, **kwargs)
  d = config.data
  if not d.schedule.enabled:
    return Probe(n_dense, probe_phase(config, d.rate, d.mode, **kw))
  s = d.schedule
  steady = probe_phase(config, s.peak_rate, s.steady_mode, **kw)
  start = probe_phase(config, s.initial_rate, s.initial_mode, **kw)
  warm_end = (steady if s.initial_mode == s.steady_mode
              else probe_phase(config, s.peak_rate, s.initial_mode, **kw))
  return Probe(n_dense, steady, start, warm_end)
