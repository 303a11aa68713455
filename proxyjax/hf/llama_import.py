"""A Hugging Face Llama checkpoint back into a proxyjax run directory.

    step = import_hf(hf_dir, workdir)              # shape from HF_DIR/proxyjax.json
    step = import_hf(hf_dir, workdir, config=c)    # or from a proxyjax config

Reads ``config.json`` (a ``LlamaForCausalLM``; every size must match the proxyjax
model's, else one line naming the field), the weights (single file or sharded,
``proxyjax.hf.safetensors_io``), the look-ahead heads (``lookahead_heads.safetensors``,
required when the model has more than one head) and the exact norm offsets (used
where ``1 + offset`` still equals the checkpoint's norm weight, else ``weight - 1``),
inverts ``proxyjax.hf.layout`` and saves an Orbax checkpoint with the parameters
only: ``WORKDIR/config.json`` and ``WORKDIR/checkpoints/<step>/`` (the exported
step, else 0; its ``meta`` records the config and vocabulary as training does).
``proxyjax.train.load.load_params(WORKDIR)`` and ``--mode=eval`` read it; training
cannot resume from it (no optimizer state: the trainer refuses it, leaving it intact).
A float32 export imports to identical parameters.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from proxyjax import parallel, rundir
from proxyjax import vocab as vocab_lib
from proxyjax.data import pipeline
from proxyjax.errors import UserError
from proxyjax.hf import layout, paths
from proxyjax.hf import safetensors_io as st
from proxyjax.hf.llama_export import CONFIG_FILE, PROXYJAX_FILE
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import load as load_lib
from proxyjax.train import resume as resume_lib

# config.json field -> (what proxyjax calls it, its value in the model config)
_SIZES = (
    ("hidden_size", "model.d_model", lambda c: c.d_model),
    ("intermediate_size", "model.d_ff", lambda c: c.d_ff),
    ("num_hidden_layers", "model.n_layers", lambda c: c.n_layers),
    ("num_attention_heads", "model.n_heads", lambda c: c.n_heads),
    ("num_key_value_heads", "model.n_kv_heads", lambda c: c.n_kv_heads),
    ("head_dim", "model.head_dim", lambda c: c.head_dim),
    ("vocab_size", "vocabulary", lambda c: c.vocab_size),
    ("rope_theta", "model.rope_theta", lambda c: float(c.rope_theta)),
    ("rms_norm_eps", "model.norm_eps", lambda c: float(c.norm_eps)),
)
# config.json fields a proxyjax model has fixed: (field, allowed value, default if absent)
_FIXED = (("hidden_act", "silu", "silu"), ("tie_word_embeddings", False, False),
          ("attention_bias", False, False), ("mlp_bias", False, False),
          ("rope_scaling", None, None))


def read_hf_config(hf_dir: str) -> dict[str, Any]:
  """``config.json`` of a Llama checkpoint; refuses anything else."""
  path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.isdir(hf_dir):
    raise UserError(f"--from_hf={hf_dir} is not a directory")
  try:
    with open(path) as f:
      c = json.load(f)
  except FileNotFoundError as e:
    raise UserError(f"--from_hf={hf_dir} has no {CONFIG_FILE}: not a Hugging Face "
                    "checkpoint") from e
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not JSON: {e}") from e
  if c.get("model_type") != "llama" or "LlamaForCausalLM" not in (c.get("architectures") or []):
    raise UserError(f"{path}: not a Llama checkpoint (model_type {c.get('model_type')!r}, "
                    f"architectures {c.get('architectures')}); only LlamaForCausalLM imports")
  return c


def _hf_value(c: dict[str, Any], field: str) -> Any:
  if field == "head_dim" and c.get("head_dim") is None:
    return c["hidden_size"] // c["num_attention_heads"]
  if field == "num_key_value_heads" and c.get("num_key_value_heads") is None:
    return c["num_attention_heads"]
  if field == "rope_theta" and "rope_theta" not in c:
    return float((c.get("rope_parameters") or {}).get("rope_theta", 10000.0))
  return c.get(field)


def check_sizes(c: dict[str, Any], cfg: transformer.ModelConfig, where: str) -> None:
  """Every size of ``config.json`` equals the proxyjax model's, else one line naming it."""
  for field, name, value in _SIZES:
    hf, ours = _hf_value(c, field), value(cfg)
    if hf is None:
      raise UserError(f"{where}: {field} is missing")
    if (float(hf) != float(ours)) if isinstance(ours, float) else (hf != ours):
      has = (f"{name}={ours}" if name.startswith("model.")
             else f"a vocabulary of {ours} ids (from its data.* settings)")
      raise UserError(f"{where}: {field} is {hf} but the proxyjax model has {has}")
  for field, allowed, default in _FIXED:
    value = c.get(field, default)
    if field == "rope_scaling":
      rope = c.get("rope_parameters") or {}
      value = value or ({"rope_type": rope["rope_type"]}
                        if rope.get("rope_type", "default") != "default" else None)
    if value != allowed:
      raise UserError(f"{where}: {field} is {value!r}; proxyjax models have {allowed!r}")


def _proxyjax_record(hf_dir: str) -> dict[str, Any] | None:
  try:
    with open(os.path.join(hf_dir, PROXYJAX_FILE)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _run_config(hf_dir: str, config: ml_collections.ConfigDict | None,
                record: dict[str, Any] | None) -> ml_collections.ConfigDict:
  if config is not None:
    return config
  if record is None or not record.get("config"):
    raise UserError(f"--from_hf={hf_dir} has no {PROXYJAX_FILE} (it was not written by "
                    "proxyjax.export): pass --config=CONFIG with the model's shape")
  return ml_collections.ConfigDict(record["config"])


def _vocab(run_config, record: dict[str, Any] | None, given_config: bool) -> vocab_lib.Vocab:
  recorded = None if given_config else rundir.vocab_from_record((record or {}).get(
      rundir.VOCAB_KEY))
  return recorded if recorded is not None else pipeline.vocab_without_training(run_config)


def read_params(hf_dir: str, cfg: transformer.ModelConfig, place=None) -> dict:
  """The proxyjax parameters (a pure dict) of the checkpoint, built one parameter at a
  time: ``place(path, host_array)`` (default: the float32 NumPy array itself) is called
  as soon as a parameter is complete, so the host holds one parameter at a time."""
  try:
    weights = st.SafetensorsDir(hf_dir)
  except FileNotFoundError as e:
    raise UserError(f"--from_hf={hf_dir}: {e}") from e
  place = place or (lambda path, x: x)
  offsets: dict[str, np.ndarray] = {}
  if os.path.exists(os.path.join(hf_dir, layout.NORM_OFFSETS_FILE)):
    offsets = st.read_all(os.path.join(hf_dir, layout.NORM_OFFSETS_FILE))
  extra: dict[str, np.ndarray] = {}
  lookahead = layout.lookahead_entries(cfg.num_pred_heads, cfg.num_raw_pred_heads)
  if lookahead:
    path = os.path.join(hf_dir, layout.LOOKAHEAD_FILE)
    if not os.path.exists(path):
      raise UserError(f"--from_hf={hf_dir} has no {layout.LOOKAHEAD_FILE} but the model has "
                      f"model.num_pred_heads={cfg.num_pred_heads}, model.num_raw_pred_heads="
                      f"{cfg.num_raw_pred_heads}: copy the file from the export, or import the "
                      "main head alone with --config=CONFIG --config.model.num_pred_heads=1 "
                      "--config.model.num_raw_pred_heads=0")
    extra = st.read_all(path)
  entries = layout.model_entries(cfg.n_layers) + lookahead
  abstract = jax.eval_shape(lambda: transformer.init_params(cfg, 0))
  out: dict = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    path = tuple(k.key for k in key_path)
    param = np.zeros(leaf.shape, np.float32)
    for entry in (e for e in entries if e.path == path):
      source, kind = (extra, "look-ahead") if entry in lookahead else (weights, "weight")
      if entry.name not in source:
        raise UserError(f"--from_hf={hf_dir}: {kind} tensor {entry.name} is missing")
      index = layout.index(entry, cfg.vocab_size)
      want = layout.hf_shape(entry, param.shape, cfg.vocab_size)
      y = source.get(entry.name) if kind == "weight" else source[entry.name]
      if tuple(y.shape) != want:
        raise UserError(f"--from_hf={hf_dir}: tensor {entry.name} has shape {tuple(y.shape)}, "
                        f"the proxyjax model needs {want}")
      value = layout.from_hf(entry, y, param[index].shape)
      offset = offsets.get(entry.name)
      if entry.kind == "norm" and offset is not None and offset.shape == y.shape:
        if np.array_equal(layout.to_hf(entry, offset).astype(y.dtype), np.asarray(y)):
          value = np.asarray(offset, dtype=np.float32)  # exact: (1 + w) - 1 is not w
      param[index] = value
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = place(path, param)
    del param
  return out


def import_hf(hf_dir: str, workdir: str, *, config: ml_collections.ConfigDict | None = None,
              overwrite: bool = False, step: int | None = None, log=print) -> int:
  """Saves the Llama checkpoint ``hf_dir`` as a proxyjax run directory; returns its step.

  Args:
    hf_dir: a Hugging Face Llama checkpoint (e.g. written by ``proxyjax.export``).
    workdir: the run directory to create (empty or new).
    config: the proxyjax config giving the model's shape (default: the one recorded in
      ``hf_dir/proxyjax.json``).
    overwrite: allow a non-empty ``workdir`` (one with checkpoints is always refused).
    step: the checkpoint's step (default: the exported step, else 0).
    log: where progress lines go.

  Raises:
    UserError: not a Llama checkpoint, other sizes, missing tensors, a bad ``workdir``.
  """
  c = read_hf_config(hf_dir)
  paths.check_import_out(workdir, overwrite, hf_dir)
  record = _proxyjax_record(hf_dir)
  run_config = _run_config(hf_dir, config, record)
  vocab = _vocab(run_config, record, config is not None)
  cfg = load_lib.model_config(run_config, vocab)
  check_sizes(c, cfg, os.path.join(hf_dir, CONFIG_FILE))
  if step is None:
    step = int((record or {}).get("step", 0)) if config is None else 0
  mesh = parallel.make_mesh(run_config.mesh.shape, dcn_shape=run_config.mesh.dcn_shape)
  rules = parallel.rules_for(run_config.mesh.rules)
  targets = load_lib.param_targets(cfg, mesh, rules)

  def place(path, x):
    target = targets
    for key in path:
      target = target[key]
    return jax.device_put(x.astype(target.dtype), target.sharding)

  params = read_params(hf_dir, cfg, place)
  os.makedirs(workdir, exist_ok=True)
  rundir.write_run_config(run_config, workdir)
  meta = {"step": step, "mesh": list(mesh.shape.values()), "process_count": jax.process_count(),
          "config": resume_lib.config_dict(run_config), rundir.VOCAB_KEY: rundir.vocab_record(vocab),
          "imported_from": os.path.abspath(hf_dir)}
  ckpt = ckpt_lib.Checkpointer(rundir.checkpoint_dir(workdir), async_save=False)
  try:
    ckpt.save(step, {"params": params}, None, meta, force=True)
  finally:
    ckpt.close()
  log(f"imported {hf_dir} into {workdir} (step {step})")
  return step
