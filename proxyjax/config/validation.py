"""Config validation: fails fast on a bad config, raising ``ConfigError`` naming the field.

Above the views, data, model and eval layers (it checks view, mode, attention and eval
task names against their registries): the entry points call ``validate``; the schema
never imports this module (``proxyjax.config`` exposes it lazily).
"""

from __future__ import annotations

import math

import ml_collections

from proxyjax import views
from proxyjax.data import mixing
from proxyjax.data import sources
from proxyjax.errors import ConfigError
from proxyjax.eval import recode
from proxyjax.eval import run as eval_run
from proxyjax.model import attention


def validate_data(c: ml_collections.ConfigDict) -> None:
  """Fails fast on a bad data config, naming the field."""

  d = c.data
  if not isinstance(c.seq_len, int) or c.seq_len < 4:
    raise ConfigError("seq_len", f"must be an integer >= 4, got {c.seq_len!r}")
  if not isinstance(c.batch_size, int) or c.batch_size < 1:
    raise ConfigError("batch_size", f"must be a positive integer, got {c.batch_size!r}")
  if d.view not in views.VIEW_NAMES:
    raise ConfigError("data.view", f"unknown view {d.view!r}; known: {', '.join(views.VIEW_NAMES)}")
  fields = [("data.mode", d.mode)]
  fields += [(f"data.schedule.{k}", d.schedule[k])
             for k in ("initial_mode", "steady_mode", "final_mode")]
  for name, mode in fields:
    if mode not in mixing.MODES:
      raise ConfigError(name, f"unknown mode {mode!r}; known: {', '.join(mixing.MODES)}")
  rates = [("data.rate", d.rate)]
  rates += [(f"data.schedule.{k}", d.schedule[k]) for k in ("initial_rate", "peak_rate", "final_rate")]
  for name, rate in rates:
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
      raise ConfigError(name, f"must be in [0, 1], got {rate!r}")
  for k in ("warmup_steps", "decay_steps"):
    if d.schedule[k] < 0:
      raise ConfigError(f"data.schedule.{k}", f"must be >= 0, got {d.schedule[k]}")
  if d.packing not in ("concat", "first_fit"):
    raise ConfigError("data.packing", f"must be 'concat' or 'first_fit', got {d.packing!r}")
  if d.packing_bins < 1:
    raise ConfigError("data.packing_bins", "must be >= 1")
  if not 0.0 <= d.validation_fraction < 1.0:
    raise ConfigError("data.validation_fraction", f"must be in [0, 1), got {d.validation_fraction}")
  if d.record_format not in ("json", "bytes"):
    raise ConfigError("data.record_format", f"must be 'json' or 'bytes', got {d.record_format!r}")
  if d.num_workers < 0:
    raise ConfigError("data.num_workers", "must be >= 0")
  if d.num_epochs == 0 or d.num_epochs < -1:
    raise ConfigError("data.num_epochs", "must be -1 (forever) or a positive count")
  if c.model.num_pred_heads < 1:
    raise ConfigError("model.num_pred_heads", "must be >= 1")
  sources.parse_sources(d.sources)


def validate_eval(c: ml_collections.ConfigDict) -> None:
  """Fails fast on a bad ``eval`` block, naming the field: task names (both task
  lists), the files the requested tasks need, and every numeric knob."""

  e = c.eval
  tasks = eval_run.parse_tasks(e.tasks, "eval.tasks")
  tasks += eval_run.parse_tasks(e.train_tasks, "eval.train_tasks")
  for k, low in (("max_docs", 0), ("context_len", 0), ("stride", 0), ("batch_size", 1),
                 ("num_problems", 0), ("n_samples", 1), ("max_new_tokens", 1),
                 ("sandbox_memory_mb", 64), ("sandbox_workers", 0), ("recode_seeds", 1),
                 ("compressor_docs", 1)):
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
  eval_run.parse_names(e.compressor_views, views.VIEW_NAMES, "eval.compressor_views")
  if e.corpus:
    try:
      sources.parse_sources(e.corpus)
    except ConfigError as err:
      raise ConfigError("eval.corpus", str(err).split(": ", 1)[-1]) from err
  eval_run.tasks_inputs(c, tasks)


def validate(c: ml_collections.ConfigDict) -> None:
  """Every check that needs no devices: data fields, model shape, step counts, eval."""
  validate_data(c)
  validate_numbers(c)
  validate_eval(c)
  m = c.model
  kv = m.n_kv_heads or m.n_heads
  if m.n_heads % kv:
    raise ConfigError("model.n_kv_heads", f"{kv} does not divide n_heads {m.n_heads}")
  if m.head_dim % 2:
    raise ConfigError("model.head_dim", "must be even (RoPE)")
  if m.remat not in ("full", "dots", "none"):
    raise ConfigError("model.remat", f"must be full, dots or none, got {m.remat!r}")
  if m.attention not in attention.BACKENDS:
    raise ConfigError("model.attention", f"unknown backend {m.attention!r}; "
                      f"known: {', '.join(attention.BACKENDS)}")
  if m.attention in ("pallas_gpu", "pallas_tpu") and c.seq_len % 128:
    raise ConfigError("seq_len", f"{c.seq_len} is not a multiple of the attention kernel "
                      f"block (128) required by model.attention={m.attention}")
  if c.num_steps < 1:
    raise ConfigError("num_steps", "must be >= 1")
  for k in ("log_every",):
    if c[k] < 1:
      raise ConfigError(k, "must be >= 1")


DTYPES = ("float32", "bfloat16", "float16")


def _number(c: ml_collections.ConfigDict, field: str, *, low: float, high: float = math.inf,
            low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
  """Fails unless ``c.<field>`` is a number in the range (open or closed ends), naming it."""
  v = c
  for part in field.split("."):
    v = v[part]
  ok = isinstance(v, int) if integer else isinstance(v, (int, float))
  ok = ok and not isinstance(v, bool) and not math.isnan(v)
  ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
  if not ok:
    if high == math.inf:
      where = f"> {low}" if low_open else f">= {low}"
    else:
      where = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    kind = "an integer" if integer else "a finite number" if high_open else "a number"
    raise ConfigError(field, f"must be {kind} {where}, got {v!r}")


def validate_numbers(c: ml_collections.ConfigDict) -> None:
  """Step counts, optimizer settings, model sizes and dtypes (no devices needed)."""
  _number(c, "checkpoint_every", low=0, integer=True)  # 0 = only at the end / on SIGTERM
  _number(c, "eval_every", low=0, integer=True)  # 0 = never
  if not isinstance(c.keep_checkpoints, int) or c.keep_checkpoints < 1:
    raise ConfigError("keep_checkpoints", "must be an integer >= 1 (a run keeps at least its "
                      f"newest checkpoint), got {c.keep_checkpoints!r}")
  _number(c, "opt.peak_lr", low=0, high=math.inf, low_open=True, high_open=True)
  _number(c, "opt.warmup_steps", low=0, integer=True)
  _number(c, "opt.min_lr_ratio", low=0, high=1)
  _number(c, "opt.b1", low=0, high=1, high_open=True)
  _number(c, "opt.b2", low=0, high=1, high_open=True)
  _number(c, "opt.eps", low=0, high=math.inf, high_open=True)
  _number(c, "opt.weight_decay", low=0, high=math.inf, high_open=True)
  _number(c, "opt.clip", low=0, high=math.inf, low_open=True, high_open=True)
  for k in ("d_model", "n_layers", "n_heads", "head_dim", "d_ff", "logits_chunk"):
    _number(c, f"model.{k}", low=1, integer=True)
  for k in ("n_kv_heads", "window"):
    _number(c, f"model.{k}", low=0, integer=True)
  for k in ("rope_theta", "norm_eps"):
    _number(c, f"model.{k}", low=0, high=math.inf, low_open=True, high_open=True)
  for k in ("init_std", "embed_std"):
    _number(c, f"model.{k}", low=0, high=math.inf, high_open=True)
  for k in ("dtype", "param_dtype"):
    if c.model[k] not in DTYPES:
      raise ConfigError(f"model.{k}", f"unknown dtype {c.model[k]!r}; known: {', '.join(DTYPES)}")
