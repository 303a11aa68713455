"""A trained run's checkpoint as a Hugging Face Llama checkpoint (no custom code to load it).

    result = export(workdir, out, step=None, dtype="float32", max_shard_size="5GB")

Writes into ``out``:

* ``config.json`` (``LlamaForCausalLM``) and ``generation_config.json`` (greedy,
  stops at ``</raw>`` and EOS, suppresses the ids the raw interface never emits:
  PAD, BOS, and every id from 320 up, padded ids included);
* ``model.safetensors`` or ``model-0000i-of-0000K.safetensors`` +
  ``model.safetensors.index.json`` above ``max_shard_size``, written one tensor at a
  time (gathered, converted, written, dropped; ``proxyjax.hf.safetensors_io``);
* ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``
  (``proxyjax.hf.tokenizer_json``);
* ``lookahead_heads.safetensors`` when the model has heads beyond the main one,
  ``proxyjax_norm_offsets.safetensors`` (the exact norm offsets, for the import),
  ``proxyjax.json`` (the run's config, vocabulary and step) and ``README.md``.

The parameter map is ``proxyjax.hf.layout``. Models Llama cannot express (a local
attention window; ``d_model`` not divisible by ``n_heads``, which transformers'
``LlamaConfig`` refuses) are refused naming the field. Padded ids (``num_ids`` up to
``vocab_size``) are masked out of proxyjax's softmax; Llama has no such mask, so
their rows are exported as they are and ``generation_config.json`` suppresses them.

``workdir`` and ``out`` may be local or on object storage (``gs://``; ``out`` also
``s3://``): a remote ``out`` is written to a local staging directory first, then each
file is uploaded (``proxyjax.paths``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from proxyjax import paths as storage
from proxyjax import rundir
from proxyjax import vocab as vocab_lib
from proxyjax.errors import UserError
from proxyjax.hf import layout, paths, tokenizer_json
from proxyjax.hf import safetensors_io as st
from proxyjax.model import transformer
from proxyjax.train import load as load_lib
from proxyjax.train import resume as resume_lib

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
PROXYJAX_FILE = "proxyjax.json"
README_FILE = "README.md"
FORMAT = "proxyjax-hf-llama"
FORMAT_VERSION = 1
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class ExportResult:
  out: str
  step: int
  files: list[str]
  loaded: load_lib.LoadedParams


def check_exportable(cfg: transformer.ModelConfig) -> None:
  """Refuses a model that a Llama checkpoint cannot express, naming the field."""
  if cfg.window:
    raise UserError(f"model.window={cfg.window}: a local attention window cannot be expressed "
                    "by a Hugging Face Llama checkpoint (full causal attention only)")
  if cfg.d_model % cfg.n_heads:
    raise UserError(f"model.d_model={cfg.d_model} is not divisible by model.n_heads="
                    f"{cfg.n_heads}: transformers' LlamaConfig refuses such a model")
  if cfg.head_dim % 2:
    raise UserError(f"model.head_dim={cfg.head_dim} is odd: RoPE needs an even head_dim")


def hf_config(cfg: transformer.ModelConfig, seq_len: int, dtype: str) -> dict[str, Any]:
  """``config.json`` of the Llama checkpoint."""
  theta = float(cfg.rope_theta)
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": int(seq_len),
      "rms_norm_eps": float(cfg.norm_eps),
      "rope_theta": theta,
      "rope_scaling": None,
      "rope_parameters": {"rope_type": "default", "rope_theta": theta},
      "attention_bias": False,
      "attention_dropout": 0.0,
      "mlp_bias": False,
      "pretraining_tp": 1,
      "initializer_range": float(cfg.init_std),
      "vocab_size": cfg.vocab_size,
      "bos_token_id": vocab_lib.BOS,
      "eos_token_id": vocab_lib.EOS,
      "pad_token_id": vocab_lib.PAD,
      "tie_word_embeddings": False,
      "use_cache": True,
      "torch_dtype": dtype,
      "dtype": dtype,
  }


def suppressed_ids(cfg: transformer.ModelConfig) -> list[int]:
  """Ids the raw interface never generates: PAD, BOS and every id from 320 up."""
  return [vocab_lib.PAD, vocab_lib.BOS, *range(vocab_lib.RAW_VOCAB_SIZE, cfg.vocab_size)]


def generation_config(cfg: transformer.ModelConfig) -> dict[str, Any]:
  """``generation_config.json``: greedy, stops at ``</raw>`` or EOS, raw ids only."""
  return {"bos_token_id": vocab_lib.BOS, "eos_token_id": [vocab_lib.RAW_CLOSE, vocab_lib.EOS],
          "pad_token_id": vocab_lib.PAD, "do_sample": False,
          "suppress_tokens": suppressed_ids(cfg)}


def readme(cfg: transformer.ModelConfig, step: int, workdir: str, dtype: str,
           seq_len: int) -> str:
  """``README.md`` of the export: how to load it and what the extra files hold."""
  P, R, V = cfg.num_pred_heads, cfg.num_raw_pred_heads, cfg.vocab_size
  heads = []
  for h in range(1, P):
    heads.append(f"| `heads.{h}.weight` | [{V}, {cfg.d_model}] | main head {h}: the id at t+{1 + h} |")
  for j in range(R):
    heads.append(f"| `raw_heads.{j}.weight` | [{vocab_lib.RAW_VOCAB_SIZE}, {cfg.d_model}] | "
                 f"raw head {j} (ids < 320): the id at t+{1 + P + j} |")
  lookahead = ("This model has no look-ahead heads (`lookahead_heads.safetensors` is absent)."
               if not heads else "\n".join([
                   f"`{layout.LOOKAHEAD_FILE}` holds the look-ahead heads proxyjax trained beside "
                   "the main head (`lm_head.weight`, which predicts the id at t+1):", "",
                   "| tensor | shape | predicts (from position t) |", "|---|---|---|", *heads, "",
                   "Each is applied like `lm_head.weight` to the final-normed hidden state:",
                   "", "```python",
                   "from safetensors.torch import load_file",
                   f"extra = load_file('{layout.LOOKAHEAD_FILE}')",
                   "h = model.model(input_ids).last_hidden_state   # after the final RMSNorm",
                   "logits = h @ extra['heads.1.weight'].T          # [B, T, V]", "```"]))
  padding = (f" Ids {cfg.num_ids}..{V - 1} are padding that proxyjax masks out of its softmax."
             if cfg.num_ids < V else "")
  return f"""# proxyjax model exported as a Hugging Face Llama checkpoint

Exported by `python -m proxyjax.export` from `{workdir}` (step {step}), weights in {dtype}.
A decoder over proxyjax's shared id space that serves **raw UTF-8 bytes**: byte b is id 64 + b;
specials `<pad>` 0, `<bos>` 1, `<eos>` 2, `<raw>` 12, `</raw>` 13, `<comp>` 14, `</comp>` 15.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(DIR)
model = AutoModelForCausalLM.from_pretrained(DIR)
inputs = tok("def fibonacci(n):", return_tensors="pt")   # [<bos>, <raw>, bytes...]
out = model.generate(**inputs, max_new_tokens=64)        # greedy, stops at </raw> or <eos>
print(tok.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True))
```

* **Tokenizer.** One token per UTF-8 byte. With special tokens (the default) the
  post-processor prefixes `<bos> <raw>`, exactly what proxyjax feeds through its raw
  interface; `add_special_tokens=False` gives the byte ids alone. Literal `<raw>` in the
  text is encoded as bytes (`split_special_tokens`); with the `tokenizers` library alone,
  set `tokenizer.encode_special_tokens = True` for the same.
* **Vocabulary.** `vocab_size` = {V} (the model's embedding). Ids 320 and up are the
  symbols of a compressed view the model was trained on, if any, and padding up to a
  multiple of 128; they are not in the tokenizer, and `generation_config.json` suppresses
  them (as well as PAD and BOS), as proxyjax's raw interface does.{padding}
* **Context.** Trained on rows of {seq_len} ids (`max_position_embeddings`); proxyjax never
  generates past it. RoPE theta {cfg.rope_theta:g}, RMSNorm eps {cfg.norm_eps:g}.

## Look-ahead heads

{lookahead}

## Other files

* `{layout.NORM_OFFSETS_FILE}`: proxyjax's RMSNorm offsets w (Llama's weight is 1 + w),
  kept so that `python -m proxyjax.export --from_hf=DIR --out=WORKDIR` restores the exact
  parameters.
* `{PROXYJAX_FILE}`: the run's proxyjax config, vocabulary layout and step.
"""


def _getter(params: dict) -> Any:
  """``get(path, index)``: that part of a (sharded) parameter as a float32 host array."""
  def get(path, index):
    x = params
    for key in path:
      x = x[key]
    part = x[index] if index else x
    return np.asarray(jax.device_get(part), dtype=np.float32)
  return get


def _tensors(entries, params: dict, cfg: transformer.ModelConfig,
             raw: bool = False) -> list[st.Tensor]:
  """The Llama tensors of ``entries``; ``raw``: the proxyjax values unconverted (norms)."""
  get = _getter(params)
  out = []
  for e in entries:
    x = params
    for key in e.path:
      x = x[key]
    fetch = layout.fetcher(e, get, cfg.vocab_size)
    if raw:
      fetch = functools.partial(get, e.path, layout.index(e, cfg.vocab_size))
    out.append(st.Tensor(e.name, layout.hf_shape(e, tuple(x.shape), cfg.vocab_size), fetch))
  return out


def _remove_previous_export(out: str) -> None:
  """With --overwrite: the files of an earlier export that this one might not rewrite."""
  for name in os.listdir(out):
    if st.SHARD_PATTERN.match(name) or name in (st.INDEX_FILE, st.SINGLE_FILE,
                                                layout.LOOKAHEAD_FILE):
      os.remove(os.path.join(out, name))


def _write_json(path: str, content: Any) -> None:
  with open(path, "w") as f:
    json.dump(content, f, indent=2)
    f.write("\n")


def export(workdir: str, out: str, *, step: int | None = None, dtype: str = "float32",
           max_shard_size: int | str = "5GB", overwrite: bool = False,
           log=print) -> ExportResult:
  """Writes the Llama checkpoint of ``workdir``'s checkpoint (``step``, default newest).

  Raises:
    UserError: no checkpoint or no such step, an ``out`` that is not empty (without
      ``overwrite``), a bad ``dtype`` or ``max_shard_size``, a model Llama cannot express.
  """
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype}: one of {', '.join(DTYPES)}")
  try:
    shard_bytes = st.parse_size(max_shard_size)
  except ValueError as e:
    raise UserError(f"--max_shard_size: {e}") from e
  paths.check_export_out(out, overwrite)
  if storage.is_remote(out):
    return _export_to_remote(workdir, out, step=step, dtype=dtype,
                             max_shard_size=max_shard_size, overwrite=overwrite, log=log)
  if jax.process_count() > 1:
    raise UserError("the export runs in one process (it gathers every tensor to this host)")
  if not storage.isdir(workdir):  # local or gs://
    raise UserError(f"--workdir={workdir} does not exist")
  loaded = load_lib.load_params(workdir, step)
  where = workdir if storage.is_remote(workdir) else os.path.abspath(workdir)
  cfg = loaded.model_cfg
  check_exportable(cfg)
  os.makedirs(out, exist_ok=True)
  _remove_previous_export(out)
  files = st.write_sharded(out, _tensors(layout.model_entries(cfg.n_layers), loaded.params, cfg),
                           dtype, shard_bytes)
  shards = [f for f in files if f != st.INDEX_FILE]
  log(f"wrote {len(shards)} weight file(s) ({dtype}{', with an index' if len(shards) > 1 else ''})"
      f" for {cfg.n_layers} layers, vocab {cfg.vocab_size}")
  extra = layout.lookahead_entries(cfg.num_pred_heads, cfg.num_raw_pred_heads)
  if extra:
    st.write_file(os.path.join(out, layout.LOOKAHEAD_FILE),
                  _tensors(extra, loaded.params, cfg), dtype,
                  metadata={"num_pred_heads": str(cfg.num_pred_heads),
                            "num_raw_pred_heads": str(cfg.num_raw_pred_heads)})
    files.append(layout.LOOKAHEAD_FILE)
  st.write_file(os.path.join(out, layout.NORM_OFFSETS_FILE),
                _tensors(layout.norm_entries(cfg.n_layers), loaded.params, cfg, raw=True),
                "float32")
  files.append(layout.NORM_OFFSETS_FILE)
  seq_len = int(loaded.config.get("seq_len", 0) or 0) or 2048
  _write_json(os.path.join(out, CONFIG_FILE), hf_config(cfg, seq_len, dtype))
  _write_json(os.path.join(out, GENERATION_CONFIG_FILE), generation_config(cfg))
  files += [CONFIG_FILE, GENERATION_CONFIG_FILE]
  files += tokenizer_json.write(out, seq_len)
  _write_json(os.path.join(out, PROXYJAX_FILE), {
      "format": FORMAT, "version": FORMAT_VERSION, "step": loaded.step,
      "workdir": where, "dtype": dtype,
      rundir.VOCAB_KEY: rundir.vocab_record(loaded.vocab), "num_ids": cfg.num_ids,
      "config": resume_lib.config_dict(loaded.config)})
  with open(os.path.join(out, README_FILE), "w") as f:
    f.write(readme(cfg, loaded.step, where, dtype, seq_len))
  files += [PROXYJAX_FILE, README_FILE]
  return ExportResult(out=out, step=loaded.step, files=files, loaded=loaded)


def _export_to_remote(workdir: str, out: str, **kwargs) -> ExportResult:
  """``export`` into a local staging directory, then each file uploaded to ``out``
  (a ``gs://`` / ``s3://`` URL), after removing an earlier export's weight files there."""
  with tempfile.TemporaryDirectory(prefix="proxyjax-export-") as staging:
    result = export(workdir, staging, **kwargs)
    if storage.isdir(out):  # --overwrite (check_export_out refused a non-empty out else)
      for name in storage.listdir(out):
        if st.SHARD_PATTERN.match(name) or name in (st.INDEX_FILE, st.SINGLE_FILE,
                                                    layout.LOOKAHEAD_FILE):
          storage.remove(storage.join(out, name))
    for name in result.files:
      with open(os.path.join(staging, name), "rb") as src, \
          storage.open_file(storage.join(out, name), "wb") as dst:
        shutil.copyfileobj(src, dst, 16 << 20)
  return dataclasses.replace(result, out=out)


def proxyjax_logits(loaded: load_lib.LoadedParams, ids: np.ndarray) -> np.ndarray:
  """Head-0 logits ``[T, num_ids]`` of one row ``ids`` in float32 (dense XLA attention)."""
  cfg = dataclasses.replace(loaded.model_cfg, dtype=jnp.float32, accum_dtype=jnp.float32,
                            attention="xla", remat="none", window=None)
  graphdef = transformer.abstract_model(cfg)[0]
  ids = np.asarray(ids, dtype=np.int32)[None]

  @jax.jit
  def forward(params):
    model = nnx.merge(graphdef, params)
    h = model(ids, np.ones_like(ids), np.arange(ids.shape[1], dtype=np.int32)[None])
    return model.logits(h)[0, :, 0, :cfg.num_ids]

  return np.asarray(forward(loaded.params), dtype=np.float32)
