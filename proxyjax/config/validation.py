"""Checks of the config's numbers and model shape: ``ConfigError`` naming the field.

Imports nothing above the config layer. The checks that need a registry live with
it -- ``proxyjax.data.validation`` (views, mixing modes, sources),
``proxyjax.model.attention.validate_backend`` and ``proxyjax.eval.validation``
(task names, benchmark files), which also composes them all into ``validate``, the
one check the entry points call before anything touches a device. ``validate_corpus``
(``data.sources`` chosen) is called by ``proxyjax.main`` for train and eval only:
``--mode=plan`` needs no data.
"""

from __future__ import annotations

import math

import ml_collections

from proxyjax.config.presets import LADDER
from proxyjax.config.schema import NO_CORPUS
from proxyjax.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
ACCUM_DTYPES = ("float32", "float64")  # float64 needs 64-bit types (the compressor enables them)


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
  if c.model.get("accum_dtype", "float32") not in ACCUM_DTYPES:
    raise ConfigError("model.accum_dtype", f"unknown dtype {c.model.accum_dtype!r}; known: "
                      f"{', '.join(ACCUM_DTYPES)}")


def validate_model(c: ml_collections.ConfigDict) -> None:
  """Model shape and loop counts that no number range expresses."""
  m = c.model
  kv = m.n_kv_heads or m.n_heads
  if m.n_heads % kv:
    raise ConfigError("model.n_kv_heads", f"{kv} does not divide n_heads {m.n_heads}")
  if m.head_dim % 2:
    raise ConfigError("model.head_dim", "must be even (RoPE)")
  if m.remat not in ("full", "dots", "none"):
    raise ConfigError("model.remat", f"must be full, dots or none, got {m.remat!r}")
  if c.num_steps < 1:
    raise ConfigError("num_steps", "must be >= 1")
  for k in ("log_every",):
    if c[k] < 1:
      raise ConfigError(k, "must be >= 1")


# How to choose a corpus, in the one line that refuses a config without one.
CORPUS_HINT = ("--config.data.sources='prepared:DIR' (made by `python -m proxyjax.data.prepare "
               "--sources=parquet:/data/*.parquet --out=DIR`) or 'parquet:GLOB' / 'jsonl:GLOB' "
               "/ 'hf:PATH' ('stdlib' is a 34 MB demo corpus; --mode=plan needs none)")


def ladder_rung(c: ml_collections.ConfigDict) -> str | None:
  """The ladder rung (``presets.LADDER``) whose model ``c`` has, e.g. '7b', or None."""
  m = c.model
  for size, (d_model, d_ff, n_layers, n_heads, _) in LADDER.items():
    if (m.d_model, m.d_ff, m.n_layers, m.n_heads) == (d_model, d_ff, n_layers, n_heads):
      return size
  return None


def validate_corpus(c: ml_collections.ConfigDict) -> None:
  """Fails when no corpus is chosen (``data.sources`` is ``NO_CORPUS``, the ladder configs'
  value), in one line naming the flag and ``python -m proxyjax.data.prepare``. Train and
  eval call it before any other check; ``--mode=plan`` does not."""
  sources = c.data.sources
  if isinstance(sources, str) and sources.strip() == NO_CORPUS:
    rung = ladder_rung(c)
    which = f"the {rung} ladder config" if rung else "this config"
    raise ConfigError("data.sources", f"{which} needs your corpus: {CORPUS_HINT}")
