"""Checks of the data section: ``ConfigError`` naming the field (view and mode names
against their registries, rates, packing, sources)."""

from __future__ import annotations

import ml_collections

from proxyjax import views
from proxyjax.data import mixing, sources
from proxyjax.errors import ConfigError


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
  validate_shared_ids(d)
  sources.parse_sources(d.sources)


# Views whose symbols do not fit the 256 raw-byte ids (their alphabet is the tokenizer's,
# 65536, or literal bytes plus 2^N packed symbols): data.shared_ids cannot apply to them.
NOT_BYTE_VALUED = ("tokenizer", "doublebyte", "neural")


def trained_modes(d: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Every mixing mode the data section can use (the schedule's three, or data.mode)."""
  if d.schedule.enabled:
    return tuple(d.schedule[k] for k in ("initial_mode", "steady_mode", "final_mode"))
  return (d.mode,)


def validate_shared_ids(d: ml_collections.ConfigDict) -> None:
  """``data.shared_ids``: a bool, only in vanilla mode, only for a byte-valued view."""
  shared = d.get("shared_ids", False)
  if not isinstance(shared, bool):
    raise ConfigError("data.shared_ids", f"must be True or False, got {shared!r}")
  if not shared:
    return
  modes = trained_modes(d)
  if any(m != "vanilla" for m in modes):
    where = ("data.schedule.initial_mode/steady_mode/final_mode" if d.schedule.enabled
             else "data.mode")
    raise ConfigError("data.shared_ids", "puts compressed symbols on the byte ids only in "
                      f"vanilla mode (no sentinels to tell them apart); {where} = "
                      f"{', '.join(dict.fromkeys(modes))}")
  if d.view == "raw":
    raise ConfigError("data.shared_ids", "needs a compressed view; data.view='raw' has none")
  if d.view in NOT_BYTE_VALUED:
    raise ConfigError("data.shared_ids", f"needs a byte-valued view (at most 256 symbols); "
                      f"data.view={d.view!r} has more")
