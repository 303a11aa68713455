"""Checks of the eval section, and ``validate``: every check of a config.

``validate`` composes the checks of each layer (``proxyjax.config.validation``,
``proxyjax.data.validation``, ``proxyjax.model.attention.validate_backend`` and the
eval checks here). It needs the eval task names, so it sits in the eval layer; the
entry points (``proxyjax.main``, ``proxyjax.plan``) and the training driver call it
before anything touches a device. ``proxyjax.eval.run`` does not import it.
"""

from __future__ import annotations

import ml_collections

from proxyjax import views
from proxyjax.config import validation as config_validation
from proxyjax.data import sources
from proxyjax.data import validation as data_validation
from proxyjax.errors import ConfigError
from proxyjax.eval import interface, recode
from proxyjax.eval import run as eval_run
from proxyjax.model import attention


def validate_eval(c: ml_collections.ConfigDict) -> None:
  """Fails fast on a bad ``eval`` block, naming the field: task names (both task
  lists), the files the requested tasks need, and every numeric knob."""

  e = c.eval
  tasks = eval_run.parse_tasks(e.tasks, "eval.tasks")
  tasks += eval_run.parse_tasks(e.train_tasks, "eval.train_tasks")
  for k, low in (("max_docs", 0), ("context_len", 0), ("stride", 0), ("batch_size", 1),
                 ("num_problems", 0), ("n_samples", 1), ("max_new_tokens", 1),
                 ("sandbox_memory_mb", 64), ("sandbox_workers", 0), ("recode_seeds", 1),
                 ("compressor_docs", 1), ("translation_docs", 1),
                 ("translation_max_bytes", 1), ("max_document_bytes", 0), ("draft_len", 0)):
    if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < low:
      raise ConfigError(f"eval.{k}", f"must be an integer >= {low}, got {e[k]!r}")
  context_len = e.context_len or c.seq_len
  if e.stride > context_len:
    raise ConfigError("eval.stride", f"{e.stride} exceeds the window length {context_len}")
  if not e.temperature >= 0.0:
    raise ConfigError("eval.temperature", f"must be >= 0, got {e.temperature!r}")
  if not 0.0 < e.top_p <= 1.0:
    raise ConfigError("eval.top_p", f"must be in (0, 1], got {e.top_p!r}")
  if not e.timeout_s > 0:
    raise ConfigError("eval.timeout_s", f"must be > 0, got {e.timeout_s!r}")
  ks = eval_run.parse_int_list(e.pass_k, "eval.pass_k")
  if max(ks) > e.n_samples:
    raise ConfigError("eval.pass_k", f"pass@{max(ks)} needs eval.n_samples >= {max(ks)}, "
                      f"got {e.n_samples}")
  if e.recode_benchmark not in eval_run.RECODE_BENCHMARKS:
    raise ConfigError("eval.recode_benchmark", f"must be one of "
                      f"{', '.join(eval_run.RECODE_BENCHMARKS)}, got {e.recode_benchmark!r}")
  eval_run.parse_names(e.recode_families, recode.FAMILIES, "eval.recode_families")
  if not isinstance(e.recode_path, str):
    raise ConfigError("eval.recode_path", f"must be a path (a file, folder or glob), got "
                      f"{e.recode_path!r}")
  interface.resolve(e.interface, c.data)  # a tokens eval of a byte-only model, or the reverse
  eval_run.parse_names(e.compressor_views, views.VIEW_NAMES, "eval.compressor_views")
  if e.corpus:
    try:
      sources.parse_sources(e.corpus)
    except ConfigError as err:
      raise ConfigError("eval.corpus", str(err).split(": ", 1)[-1]) from err
  eval_run.tasks_inputs(c, tasks)


def validate(c: ml_collections.ConfigDict) -> None:
  """Every check that needs no devices: a corpus chosen, data fields, numbers, eval, model
  shape, attention."""
  config_validation.validate_corpus(c)  # one line naming the flag and `proxyjax.data.prepare`
  data_validation.validate_data(c)
  config_validation.validate_numbers(c)
  validate_eval(c)
  config_validation.validate_model(c)
  attention.validate_backend(c)
