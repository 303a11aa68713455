"""Hugging Face Llama export and import (``proxyjax.export``, ``proxyjax.hf``).

The exported weights are checked by an independent NumPy Llama forward written here
from the Llama conventions (RMSNorm times its weight, rotate-half RoPE, GQA by
repeating kv heads, SwiGLU gate/up/down, causal softmax attention, final norm,
lm_head), reading the files with the ``safetensors`` package, against proxyjax's own
forward. The model: GQA (4 query heads, 2 kv heads), head_dim 12 != d_model / n_heads,
2 main heads + 1 raw head, a compressed view (vocab 640 with padded ids), random
weights large enough that attention (and so RoPE) matters, non-zero norm offsets.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from helpers import small_config

from proxyjax import parallel, rundir
from proxyjax import vocab as vocab_lib
from proxyjax.data import pipeline
from proxyjax.errors import UserError
from proxyjax.hf import llama_export, llama_import, tokenizer_json, verify
from proxyjax.hf import safetensors_io as st
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import load as load_lib
from proxyjax.train import resume as resume_lib

safetensors_numpy = pytest.importorskip("safetensors.numpy")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEP = 7
TEXT = "def área(r):\n    return 3.14159 * r ** 2  # ✓\n"
SHARD_LIMIT = "40KB"


def _config(**overrides):
  c = small_config(**{"model.d_model": 32, "model.n_layers": 2, "model.n_heads": 4,
                      "model.n_kv_heads": 2, "model.head_dim": 12, "model.d_ff": 64,
                      "model.num_pred_heads": 2, "model.num_raw_pred_heads": 1,
                      "model.scan_layers": False})
  c.update_from_flattened_dict(overrides)
  return c


def make_run(workdir, c, seed=0):
  """A run directory with one checkpoint (step 7) of random parameters, as training
  records it: WORKDIR/config.json and the step's params + meta."""
  vocab = pipeline.build_vocab(c)
  cfg = transformer.ModelConfig.from_config(c, vocab)
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, seed))
  # random normal weights (std 0.25: attention far from uniform, so RoPE matters), embedding
  # std 1, norm offsets std 0.3 (zero-initialised in training)
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: rng.normal(0.0, 1.0 if path[-1].key == "embed" else 0.3 if "norm" in
                                 path[-1].key else 0.25, a.shape).astype(np.float32), shapes)
  mesh = parallel.make_mesh(c.mesh.shape)
  targets = load_lib.param_targets(cfg, mesh, parallel.rules_for(c.mesh.rules))
  params = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), params, targets)
  os.makedirs(workdir, exist_ok=True)
  rundir.write_run_config(c, str(workdir))
  meta = {"step": STEP, "config": resume_lib.config_dict(c),
          rundir.VOCAB_KEY: rundir.vocab_record(vocab)}
  ck = ckpt_lib.Checkpointer(rundir.checkpoint_dir(str(workdir)), async_save=False)
  ck.save(STEP, {"params": params}, None, meta, force=True)
  ck.close()
  return cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  c = _config()
  cfg = make_run(root / "run", c)
  result = llama_export.export(str(root / "run"), str(root / "hf"), max_shard_size=SHARD_LIMIT,
                               log=lambda line: None)
  return c, cfg, root, result


# --- an independent NumPy Llama -----------------------------------------------------------


def load_hf_weights(directory):
  """Every tensor of the checkpoint, through the safetensors package (any sharding)."""
  index = os.path.join(directory, "model.safetensors.index.json")
  files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
           else ["model.safetensors"])
  out = {}
  for name in files:
    out.update(safetensors_numpy.load_file(os.path.join(directory, name)))
  return out


def llama_forward(config, w, ids, rope=True):
  """Final-normed hidden states [T, D] of a Llama model (float64), from HF's conventions."""
  D, H = config["hidden_size"], config["num_attention_heads"]
  K, E = config["num_key_value_heads"], config.get("head_dim") or D // H
  eps, theta = config["rms_norm_eps"], config["rope_theta"]
  T = len(ids)

  def rmsnorm(x, weight):
    variance = (x ** 2).mean(axis=-1, keepdims=True)
    return weight * (x / np.sqrt(variance + eps))

  freqs = np.array([theta ** (-2.0 * i / E) for i in range(E // 2)])
  emb = np.concatenate([np.outer(np.arange(T), freqs)] * 2, axis=-1)  # [T, E]
  cos, sin = np.cos(emb), np.sin(emb)

  def rotate_half(x):
    return np.concatenate([-x[:, E // 2:], x[:, :E // 2]], axis=-1)

  def linear(x, name):
    return x @ w[name].astype(np.float64).T

  x = w["model.embed_tokens.weight"].astype(np.float64)[ids]
  for layer in range(config["num_hidden_layers"]):
    pre = f"model.layers.{layer}."
    h = rmsnorm(x, w[pre + "input_layernorm.weight"].astype(np.float64))
    q = linear(h, pre + "self_attn.q_proj.weight")
    k = linear(h, pre + "self_attn.k_proj.weight")
    v = linear(h, pre + "self_attn.v_proj.weight")
    heads = []
    for head in range(H):
      kv = head // (H // K)  # grouped-query attention: kv head shared by H / K query heads
      qh, kh = q[:, head * E:(head + 1) * E], k[:, kv * E:(kv + 1) * E]
      vh = v[:, kv * E:(kv + 1) * E]
      if rope:
        qh, kh = qh * cos + rotate_half(qh) * sin, kh * cos + rotate_half(kh) * sin
      scores = qh @ kh.T / np.sqrt(E)
      scores[np.triu_indices(T, 1)] = -np.inf
      p = np.exp(scores - scores.max(axis=1, keepdims=True))
      heads.append((p / p.sum(axis=1, keepdims=True)) @ vh)
    x = x + linear(np.concatenate(heads, axis=1), pre + "self_attn.o_proj.weight")
    h = rmsnorm(x, w[pre + "post_attention_layernorm.weight"].astype(np.float64))
    gate, up = linear(h, pre + "mlp.gate_proj.weight"), linear(h, pre + "mlp.up_proj.weight")
    x = x + linear(gate / (1.0 + np.exp(-gate)) * up, pre + "mlp.down_proj.weight")
  return rmsnorm(x, w["model.norm.weight"].astype(np.float64))


def proxyjax_outputs(workdir, ids):
  """(main-head logits [T, P, V], raw-head logits [T, R, 320]) of proxyjax's forward."""
  loaded = load_lib.load_params(str(workdir))
  ids = jnp.asarray(ids, jnp.int32)[None]

  @jax.jit
  def forward(params):
    model = nnx.merge(loaded.graphdef, params)
    h = model(ids, jnp.ones_like(ids), jnp.arange(ids.shape[1], dtype=jnp.int32)[None])
    return model.logits(h)[0], model.raw_logits(h)[0]

  logits, raw_logits = forward(loaded.params)
  return np.asarray(logits), np.asarray(raw_logits)


def _ids(text=TEXT):
  return np.array([vocab_lib.BOS, vocab_lib.RAW_OPEN, *(64 + b for b in text.encode())])


# --- tests --------------------------------------------------------------------------------


def test_numpy_llama_on_the_export_matches_proxyjax(exported):
  c, cfg, root, _ = exported
  config = json.load(open(root / "hf" / "config.json"))
  w = load_hf_weights(root / "hf")
  ids = _ids()
  logits, raw_logits = proxyjax_outputs(root / "run", ids)
  h = llama_forward(config, w, ids)
  n = cfg.num_ids
  scale = np.abs(logits[:, 0, :n]).max()
  assert scale > 1.0
  np.testing.assert_allclose(h @ w["lm_head.weight"].astype(np.float64).T[:, :n],
                             logits[:, 0, :n], atol=2e-4 * scale, rtol=0)
  # look-ahead heads: main head 1 (t+2) and raw head 0 (t+3), applied like lm_head
  extra = safetensors_numpy.load_file(str(root / "hf" / "lookahead_heads.safetensors"))
  assert sorted(extra) == ["heads.1.weight", "raw_heads.0.weight"]
  assert extra["raw_heads.0.weight"].shape == (320, cfg.d_model)
  np.testing.assert_allclose(h @ extra["heads.1.weight"].T[:, :n], logits[:, 1, :n],
                             atol=2e-4 * scale, rtol=0)
  np.testing.assert_allclose(h @ extra["raw_heads.0.weight"].T, raw_logits[:, 0],
                             atol=2e-4 * scale, rtol=0)
  # the comparison can fail: without RoPE (positions ignored) the logits differ
  no_rope = llama_forward(config, w, ids, rope=False) @ w["lm_head.weight"].T[:, :n]
  assert np.abs(no_rope - logits[:, 0, :n]).max() > 100 * 2e-4 * scale


def test_config_generation_config_and_shards(exported):
  _, cfg, root, result = exported
  out = root / "hf"
  config = json.load(open(out / "config.json"))
  assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
  assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
          config["num_attention_heads"], config["num_key_value_heads"],
          config["head_dim"]) == (32, 64, 2, 4, 2, 12)
  assert config["vocab_size"] == 640 and cfg.num_ids == 576
  assert config["rope_theta"] == cfg.rope_theta and config["rms_norm_eps"] == cfg.norm_eps
  assert config["tie_word_embeddings"] is False and config["max_position_embeddings"] == 64
  assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
  gen = json.load(open(out / "generation_config.json"))
  assert gen["eos_token_id"] == [13, 2]
  assert gen["suppress_tokens"] == [0, 1, *range(320, 640)]
  # sharded: the index names every tensor, its files exist, total_size is the data's bytes
  index = json.load(open(out / "model.safetensors.index.json"))
  names = set(index["weight_map"])
  assert len(names) == 2 * 9 + 3 and "lm_head.weight" in names
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and not (out / "model.safetensors").exists()
  total = 0
  for name in files:
    tensors = safetensors_numpy.load_file(str(out / name))
    assert {k for k, v in index["weight_map"].items() if v == name} == set(tensors)
    size = sum(t.nbytes for t in tensors.values())
    assert size <= 40_000 or len(tensors) == 1
    assert all(t.dtype == np.float32 for t in tensors.values())
    total += size
  assert index["metadata"]["total_size"] == total
  assert "heads.1.weight" in open(out / "README.md").read()
  assert set(result.files) == set(os.listdir(out))


def test_tokenizer_encodes_and_decodes_bytes(exported):
  from tokenizers import Tokenizer, pre_tokenizers  # pylint: disable=g-import-not-at-top
  _, _, root, _ = exported
  assert set(tokenizer_json.byte_chars()) == set(pre_tokenizers.ByteLevel.alphabet())
  tok = Tokenizer.from_file(str(root / "hf" / "tokenizer.json"))
  text = TEXT + "\t\x00é中😀 <raw>"
  assert tok.encode(text, add_special_tokens=False).ids == [64 + b for b in text.encode()][:-5] + [
      vocab_lib.RAW_OPEN]  # a typed special matches unless encode_special_tokens
  tok.encode_special_tokens = True
  ids = tok.encode(text).ids
  assert ids == [vocab_lib.BOS, vocab_lib.RAW_OPEN, *(64 + b for b in text.encode())]
  assert tok.decode(ids) == text  # specials skipped by default
  assert tok.decode([vocab_lib.BOS, 64 + ord("a"), vocab_lib.RAW_CLOSE],
                    skip_special_tokens=False) == "<bos>a</raw>"
  assert tok.token_to_id("<eos>") == 2 and tok.token_to_id("</comp>") == 15
  assert tok.get_vocab_size() == 320
  config = json.load(open(root / "hf" / "tokenizer_config.json"))
  assert config["bos_token"] == "<bos>" and config["split_special_tokens"] is True


def test_round_trip_gives_identical_parameters(exported, tmp_path):
  _, _, root, result = exported
  step = llama_import.import_hf(str(root / "hf"), str(tmp_path / "imported"),
                                log=lambda line: None)
  back = load_lib.load_params(str(tmp_path / "imported"))
  assert step == back.step == STEP and back.vocab == result.loaded.vocab
  a = jax.tree_util.tree_leaves_with_path(result.loaded.params)
  b = jax.tree_util.tree_leaves_with_path(back.params)
  assert [p for p, _ in a] == [p for p, _ in b]
  for (path, x), (_, y) in zip(a, b):
    assert x.dtype == y.dtype, path
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_bfloat16_export_and_import(exported, tmp_path):
  _, cfg, root, result = exported
  out = tmp_path / "hf16"
  llama_export.export(str(root / "run"), str(out), dtype="bfloat16", log=lambda line: None)
  header, _ = st.read_header(str(out / "model.safetensors"))
  assert {v["dtype"] for v in header.values()} == {"BF16"}
  assert not (out / "model.safetensors.index.json").exists()  # one file under 5GB
  wq = np.asarray(result.loaded.params["blocks"]["wq"][1])
  stored = st.read_tensor(str(out / "model.safetensors"), "model.layers.1.self_attn.q_proj.weight")
  np.testing.assert_array_equal(stored, wq.reshape(cfg.d_model, -1).T.astype(ml_dtypes.bfloat16))
  llama_import.import_hf(str(out), str(tmp_path / "imported"), log=lambda line: None)
  back = load_lib.load_params(str(tmp_path / "imported")).params
  np.testing.assert_array_equal(np.asarray(back["blocks"]["wq"][1]),
                                wq.astype(ml_dtypes.bfloat16).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(back["final_norm"]),  # exact offsets restored
                                np.asarray(result.loaded.params["final_norm"]))


def test_verify_numpy_backend(exported):
  result = exported[3]
  v = verify.verify(result, backend="numpy")
  assert v.ok and v.max_abs_diff < 1e-4 * v.max_abs_logit and v.max_abs_logit > 1.0


def test_layout_is_the_same_with_and_without_scan():
  shapes = []
  for scan in (True, False):
    c = _config(**{"model.scan_layers": scan})
    cfg = transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))
    shapes.append(jax.tree.map(lambda a: a.shape, jax.eval_shape(
        lambda cfg=cfg: transformer.init_params(cfg, 0))))
  assert shapes[0] == shapes[1] and shapes[0]["blocks"]["wq"] == (2, 32, 4, 12)


def _one_line(info):
  assert isinstance(info.value, UserError) and "\n" not in str(info.value)
  return str(info.value)


def test_bad_input_is_one_line(exported, tmp_path):
  c, cfg, root, _ = exported
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match="no checkpoint in") as info:
    llama_export.export(str(empty), str(tmp_path / "a"))
  _one_line(info)
  with pytest.raises(UserError, match=r"no checkpoint at step 3 .*steps: 7") as info:
    llama_export.export(str(root / "run"), str(tmp_path / "a"), step=3)
  _one_line(info)
  with pytest.raises(UserError, match="is not empty.*--overwrite") as info:
    llama_export.export(str(root / "run"), str(root / "hf"))
  _one_line(info)
  with pytest.raises(UserError, match="model.window=16") as info:
    llama_export.check_exportable(dataclasses.replace(cfg, window=16))
  _one_line(info)
  with pytest.raises(UserError, match="--max_shard_size") as info:
    llama_export.export(str(root / "run"), str(tmp_path / "a"), max_shard_size="lots")
  _one_line(info)
  # import: not Llama, other sizes, missing look-ahead heads, a run dir with checkpoints
  other = tmp_path / "other"
  shutil.copytree(root / "hf", other)
  config = json.load(open(other / "config.json"))
  json.dump(dict(config, model_type="gpt2", architectures=["GPT2LMHeadModel"]),
            open(other / "config.json", "w"))
  with pytest.raises(UserError, match="not a Llama checkpoint") as info:
    llama_import.import_hf(str(other), str(tmp_path / "b"))
  _one_line(info)
  json.dump(config, open(other / "config.json", "w"))
  wider = _config(**{"model.d_ff": 128})
  with pytest.raises(UserError, match="intermediate_size is 64 .* model.d_ff=128") as info:
    llama_import.import_hf(str(other), str(tmp_path / "b"), config=wider)
  _one_line(info)
  os.remove(other / "lookahead_heads.safetensors")
  with pytest.raises(UserError, match="no lookahead_heads.safetensors") as info:
    llama_import.import_hf(str(other), str(tmp_path / "b"))
  _one_line(info)
  with pytest.raises(UserError, match="already has checkpoints") as info:
    llama_import.import_hf(str(root / "hf"), str(root / "run"), overwrite=True)
  _one_line(info)
  with pytest.raises(UserError, match="is the --from_hf directory") as info:
    llama_import.import_hf(str(root / "hf"), str(root / "hf"), overwrite=True)
  _one_line(info)
  with pytest.raises(UserError, match="is a run directory") as info:  # its config.json is safe
    llama_export.export(str(root / "run"), str(root / "run"), overwrite=True)
  _one_line(info)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "checkpoints").exists()


def test_cli_refuses_a_non_empty_out_in_one_line(exported):
  _, _, root, _ = exported
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "proxyjax.export", f"--workdir={root / 'run'}",
                        f"--out={root / 'hf'}"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=240)
  lines = out.stderr.splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  assert lines[0].startswith("proxyjax.export: error: --out=") and "not empty" in lines[0]


@pytest.mark.slow
def test_cli_export_and_import_with_verify(exported, tmp_path):
  """The command line both ways, each with --verify (the functions are tested above)."""
  _, _, root, _ = exported
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")

  def run(*args):
    out = subprocess.run([sys.executable, "-m", "proxyjax.export", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr

  log = run(f"--workdir={root / 'run'}", f"--out={tmp_path / 'hf'}", "--verify",
            "--dtype=bfloat16")
  assert "exported step 7" in log and "verify (" in log and ") ok" in log
  log = run(f"--from_hf={tmp_path / 'hf'}", f"--out={tmp_path / 'run'}", "--verify")
  assert "imported" in log and "verify (numpy)" in log and ") ok" in log
  assert load_lib.load_params(str(tmp_path / "run")).step == STEP


# --- with transformers (slow; not in CI) ----------------------------------------------------


def _proxyjax_greedy(workdir, ids, n):
  """Greedy ids through the raw interface (ids 2..319): one compiled causal forward over
  rows padded to the final length (padding after position t does not change t's logits)."""
  loaded = load_lib.load_params(str(workdir))
  length = len(ids) + n

  @jax.jit
  def head0(params, row):
    model = nnx.merge(loaded.graphdef, params)
    h = model(row[None], jnp.ones_like(row)[None], jnp.arange(length, dtype=jnp.int32)[None])
    return model.logits(h)[0, :, 0]

  ids = list(ids)
  for _ in range(n):
    row = np.full(length, 64 + ord(" "), np.int32)
    row[:len(ids)] = ids
    allowed = np.array(head0(loaded.params, row)[len(ids) - 1, :vocab_lib.RAW_VOCAB_SIZE])
    allowed[:vocab_lib.EOS] = -np.inf
    ids.append(int(np.argmax(allowed)))
    if ids[-1] in (vocab_lib.EOS, vocab_lib.RAW_CLOSE):
      break
  return ids


@pytest.mark.slow
def test_transformers_loads_the_export(exported):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  _, cfg, root, _ = exported
  out = str(root / "hf")
  tok = transformers.AutoTokenizer.from_pretrained(out)
  ids = tok(TEXT).input_ids
  assert ids == list(_ids()) and tok.decode(ids, skip_special_tokens=True) == TEXT
  assert tok("<raw>", add_special_tokens=False).input_ids == [64 + b for b in b"<raw>"]
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                            attn_implementation="eager")
  with torch.no_grad():
    hf_logits = model(torch.tensor([ids])).logits[0].numpy()
  logits, _ = proxyjax_outputs(root / "run", ids)
  n = cfg.num_ids
  diff = np.abs(hf_logits[:, :n] - logits[:, 0, :n]).max()
  print(f"transformers vs proxyjax: max abs logit difference {diff:.3g}")
  assert diff < 2e-4 * np.abs(logits[:, 0, :n]).max()
  prompt = _ids("def f(x):").tolist()
  with torch.no_grad():
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=12,
                               attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
  new = generated[0].tolist()[len(prompt):]
  print(f"greedy continuation (transformers): {new}")
  assert len(new) >= 1 and generated[0].tolist() == _proxyjax_greedy(root / "run", prompt, 12)
