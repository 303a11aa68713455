"""Whether a training run may continue a checkpoint: which config fields shape the model
(never changed within a run) and which the data stream (refused under
``restore_policy='strict'``, a fresh stream under ``'fresh_data'``), compared with the
config recorded in the checkpoint's ``meta`` (``resume_check``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from proxyjax.data import packing
from proxyjax.errors import ConfigError

log = logging.getLogger(__name__)


class IncompatibleCheckpointError(ConfigError):
  """A readable checkpoint that this run's config cannot continue; left untouched."""


RESTORE_POLICIES = ("strict", "fresh_data")

# Fields that define the parameter tree: never changed within a run, under any policy.
# model.num_raw_pred_heads is compared as resolved (``effective_model_fields``): the
# deprecated model.raw_head=True of a recorded config is num_raw_pred_heads 1.
MODEL_FIELDS = ("model.d_model", "model.n_layers", "model.n_heads", "model.n_kv_heads",
                "model.head_dim", "model.d_ff", "model.num_pred_heads",
                "model.num_raw_pred_heads", "model.scan_layers")
# Fields that change the data stream (every data.* field but these, plus seed, seq_len,
# batch_size): refused by restore_policy='strict', allowed by 'fresh_data'.
_DATA_FIELDS_TOP = ("seed", "seq_len", "batch_size")
_DATA_FIELDS_IGNORED = ("data.tfds_data_dir", "data.tokenizer_cache_dir",
                        "data.worker_buffer_size", "data.read_threads", "data.read_buffer_size")


def config_dict(config) -> dict:
  """A config as the plain JSON dict recorded in checkpoints (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in (d or {}).items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def effective_model_fields(flat: dict[str, Any]) -> dict[str, Any]:
  """``flat`` (a flattened config dict) with ``model.num_raw_pred_heads`` resolved from the
  deprecated ``model.raw_head`` (``packing.head_counts``), when the config has a model."""
  if not any(k.startswith("model.") for k in flat):
    return flat
  model = {k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}
  out = dict(flat)
  try:
    out["model.num_raw_pred_heads"] = packing.head_counts(model, warn=False)[1]
  except ConfigError:
    pass  # a conflicting config is refused where the model is built, naming the field
  return out


def model_field_values(config) -> dict[str, Any]:
  """The ``MODEL_FIELDS`` a config sets (resolved as in ``effective_model_fields``)."""
  flat = effective_model_fields(_flatten(config_dict(config)))
  return {k: flat[k] for k in MODEL_FIELDS if k in flat}


def _is_data_field(key: str) -> bool:
  return (key in _DATA_FIELDS_TOP or key.startswith("data.")) and key not in _DATA_FIELDS_IGNORED


def _cli(value: Any) -> str:
  return json.dumps(value) if not isinstance(value, str) else (value or "''")


DATA_STREAM_KEY = "data_stream"  # meta: the document order (pipeline.data_stream)
# Checkpoints written before the order was recorded shuffled every source with a numpy
# permutation (pipeline.NUMPY_STREAM).
LEGACY_DATA_STREAM = "numpy-permutation"


def resume_check(config, policy: str, directory: str, process_count: int,
                 recorded_fallback: dict | None = None,
                 data_stream: str | None = None) -> Callable[[int, dict], bool]:
  """``check`` for ``Checkpointer.restore`` in a training run.

  Compares the config recorded with the checkpoint (``meta['config']``; for
  checkpoints written before it was recorded, ``recorded_fallback``, the run's
  ``config.json``) with this run's: a changed ``MODEL_FIELDS`` field is refused
  under every policy; a changed data field (or process count, or -- when documents are
  shuffled -- the document order ``data_stream``, recorded as ``meta['data_stream']``)
  is refused under 'strict' and restarts the data stream under 'fresh_data'. Every other field
  (steps, learning rate, mesh, eval, checkpointing, dtypes, ...) may change.
  """
  if policy not in RESTORE_POLICIES:
    raise ConfigError("restore_policy", f"must be one of {', '.join(RESTORE_POLICIES)}, "
                      f"got {policy!r}")
  current = effective_model_fields(_flatten(config_dict(config)))

  def check(step: int, meta: dict) -> bool:
    recorded = effective_model_fields(_flatten(meta.get("config") or recorded_fallback or {}))
    where = f"the checkpoint at step {step} in {directory}"
    diffs = [(k, recorded[k], current[k]) for k in sorted(current)
             if k in recorded and recorded[k] != current[k]]
    model = [d for d in diffs if d[0] in MODEL_FIELDS]
    data = [d for d in diffs if _is_data_field(d[0])]
    saved_pc = meta.get("process_count")

    def also(rest):
      rest = [f"{k} {_cli(o)} -> {_cli(n)}" for k, o, n in rest]
      return f" (also changed: {', '.join(rest[:6])}{', ...' if len(rest) > 6 else ''})" \
          if rest else ""

    if model:
      k, old, new = model[0]
      raise IncompatibleCheckpointError(
          k, f"this run has {_cli(new)} but {where} was written with {_cli(old)}"
          f"{also(model[1:] + data)}; parameters cannot be restored into another model "
          f"shape under any restore_policy: resume with --config.{k}={_cli(old)}, or start a "
          "new --workdir")
    if saved_pc is not None and saved_pc != process_count:
      data = data + [("process count", saved_pc, process_count)]
    saved_stream = meta.get(DATA_STREAM_KEY, LEGACY_DATA_STREAM)
    if data_stream is not None and saved_stream != data_stream:
      data = data + [("data stream", saved_stream, data_stream)]
    if not data:
      return True
    if policy == "strict":
      k, old, new = data[0]
      fix = {"process count": f"resume with {old} processes",
             "data stream": "resume with the proxyjax release that wrote it (its document "
                            "shuffle differs)"}.get(k, f"resume with --config.{k}={_cli(old)}")
      raise IncompatibleCheckpointError(
          k, f"this run has {_cli(new)} but {where} was written with {_cli(old)}"
          f"{also(data[1:])}; the data stream cannot continue exactly: {fix}, start a new "
          "--workdir, or pass --config.restore_policy=fresh_data to keep the parameters, "
          "optimizer and step and restart the data stream (restore_policy='strict')")
    log.warning("restore_policy=fresh_data: restoring parameters, optimizer and step from %s; "
                "the data stream (and its mixing schedule) starts afresh: %s", where,
                ", ".join(f"{k} {_cli(o)} -> {_cli(n)}" for k, o, n in data))
    return False

  return check
