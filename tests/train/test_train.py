"""Training: golden numbers, causality, sharding presets, resume, checkpoints, NaN, SIGTERM."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import model_config as _model_cfg
from helpers import restored_params as _params
from helpers import small_config

from proxyjax import parallel, trainer
from proxyjax.data import pipeline
from proxyjax.errors import ConfigError
from proxyjax.model import transformer
from proxyjax.train import metrics as metrics_lib
from proxyjax.train import step as step_lib


def _batch(seed=0, b=8, t=64):
  r = np.random.default_rng(seed)
  inputs = r.integers(64, 320, (b, t)).astype(np.int32)
  targets = np.concatenate([inputs[:, 1:], r.integers(64, 320, (b, 1))], 1).astype(np.int32)
  seg = np.ones((b, t), np.int32)
  seg[:, t // 2:] = 2
  pos = np.concatenate([np.arange(t // 2), np.arange(t - t // 2)]).astype(np.int32)
  return {"inputs": inputs, "targets": targets, "segment_ids": seg,
          "positions": np.tile(pos, (b, 1))}


def test_golden_one_step():
  c = small_config()
  setup = step_lib.build(c, _model_cfg(c), parallel.make_mesh((1, 1, 1), jax.devices()[:1]))
  state = setup.init_fn()
  state, m = setup.train_step(state, parallel.global_batch(_batch(), setup.mesh))
  state, m2 = setup.train_step(state, parallel.global_batch(_batch(1), setup.mesh))
  # Pinned numbers (CPU, fp32). A change here means the model, init or loss changed.
  assert float(m["loss"]) == pytest.approx(6.374070, abs=1e-4)
  assert float(m["grad_norm"]) == pytest.approx(0.354318, rel=1e-4)
  assert float(m["lr"]) == 0.0 and float(m2["lr"]) == pytest.approx(4e-4)
  assert float(m2["loss"]) == pytest.approx(6.368894, abs=1e-4)
  assert float(m2["grad_norm"]) == pytest.approx(0.354634, rel=1e-4)


def test_causality_and_document_isolation_by_gradients():
  c = small_config()
  cfg = _model_cfg(c)
  graphdef, _ = transformer.abstract_model(cfg)
  params = transformer.init_params(cfg, 0)
  t_len = 32
  x = jnp.arange(64, 64 + t_len, dtype=jnp.int32)[None]  # distinct ids: embedding row = position
  seg = jnp.asarray([[1] * 10 + [2] * 15 + [3] * 7], jnp.int32)
  pos = jnp.asarray([list(range(10)) + list(range(15)) + list(range(7))], jnp.int32)

  def out_at(p, t):
    return jnp.sum(nnx.merge(graphdef, p)(x, seg, pos)[0, t])

  for t in (3, 9, 10, 17, 31):
    g = jax.grad(out_at)(params, t)["embed"]
    touched = set((np.flatnonzero(np.abs(np.asarray(g)).sum(1) > 0) - 64).tolist())
    same_doc_past = {j for j in range(t + 1) if seg[0, j] == seg[0, t]}
    assert touched == same_doc_past, (t, sorted(touched))


@pytest.mark.parametrize("shape, rules", [
    ((2, 2, 2), "fsdp_tp"), ((1, 8, 1), "fsdp"),
    pytest.param((8, 1, 1), "dp", marks=pytest.mark.slow),
    pytest.param((2, 4, 1), "fsdp", marks=pytest.mark.slow)])
def test_sharding_presets_match_one_device(shape, rules):
  c = small_config()
  cfg = _model_cfg(c)
  ref = step_lib.build(c, cfg, parallel.make_mesh((1, 1, 1), jax.devices()[:1]))
  c.mesh.rules = rules
  sharded = step_lib.build(c, cfg, parallel.make_mesh(shape))
  s1, s2 = ref.init_fn(), sharded.init_fn()
  for i in range(3):
    s1, m1 = ref.train_step(s1, parallel.global_batch(_batch(i), ref.mesh))
    s2, m2 = sharded.train_step(s2, parallel.global_batch(_batch(i), sharded.mesh))
    assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
  wq = s2["params"]["blocks"]["wq"]
  assert len(wq.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(wq), np.asarray(s1["params"]["blocks"]["wq"]),
                             rtol=1e-5, atol=1e-6)


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r for r in rows if "loss" in r}


def _check_exposure(c, lines):
  """Running totals = sums of the per-step values, which are those of the batches
  (FLOPs, symbols) and of the data stream's counters (bytes, symbols by view)."""
  for k in metrics_lib.EXPOSURE:
    assert np.cumsum([lines[s][k] for s in sorted(lines)]).tolist() == [
        lines[s]["total_" + k] for s in sorted(lines)], k
  cfg = _model_cfg(c)
  abstract = jax.eval_shape(lambda: transformer.init_params(cfg, 0))
  n_dense = transformer.count_params(abstract) - cfg.vocab_size * cfg.d_model
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  flops = symbols = 0
  for step in sorted(lines):
    batch = pipeline.next_batch(it)
    tokens = int(np.sum(batch["segment_ids"] > 0))
    flops += metrics_lib.train_flops(cfg, n_dense, tokens,
                                     metrics_lib.visible_pairs(batch["segment_ids"], cfg.window))
    symbols += tokens
    stats = pipeline.pipeline_stats(it)
    want = {"total_train_flops": flops, "total_symbols": symbols,
            "total_utf8_bytes": stats["doc_bytes"], "total_raw_bytes": stats.get("bytes:raw", 0),
            "total_compressed_symbols": stats.get("symbols:compressed", 0)}
    assert {k: lines[step][k] for k in want} == want, step
  # Counted per document as the packer takes it (one stdlib file here covers all 20 steps).
  assert lines[20]["total_utf8_bytes"] > 0 and lines[20]["total_raw_bytes"] > 0
  assert lines[20]["total_compressed_symbols"] > 0
  assert lines[20]["total_symbols"] == 20 * c.batch_size * c.seq_len


def test_resume_is_identical(tmp_path):
  c = small_config(log_every=1)
  trainer.train(c, str(tmp_path / "straight"))
  out = trainer.train(c, str(tmp_path / "resumed"), stop_at_step=10)  # "killed" at step 10
  assert out["step"] == 10
  trainer.train(c, str(tmp_path / "resumed"))  # same command again -> resumes at 10
  a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
  assert sorted(a) == sorted(b) == list(range(1, 21))
  assert a == b  # bit-identical losses
  # Exposure totals: the resumed run's equal the straight run's, step by step.
  la, lb = _lines(tmp_path / "straight"), _lines(tmp_path / "resumed")
  totals = ["total_" + k for k in metrics_lib.EXPOSURE]
  assert {s: {k: la[s][k] for k in totals} for s in la} == {
      s: {k: lb[s][k] for k in totals} for s in lb}
  _check_exposure(c, la)
  sa, pa = _params(tmp_path / "straight", c)
  sb, pb = _params(tmp_path / "resumed", c)
  assert sa == sb == 20
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), pa, pb)


def test_restore_onto_another_mesh_and_corrupt_fallback(tmp_path):
  c = small_config(num_steps=20, checkpoint_every=10)
  trainer.train(c, str(tmp_path))
  ckdir = tmp_path / "checkpoints"
  assert sorted(int(p.name) for p in ckdir.iterdir() if p.name.isdigit()) == [10, 20]
  # Corrupt the newest checkpoint: restore must warn and fall back to step 10.
  shutil.rmtree(ckdir / "20" / "state")
  c2 = small_config(num_steps=20, checkpoint_every=10)
  c2.mesh.shape, c2.mesh.rules = (2, 2, 2), "fsdp_tp"
  step, params = _params(tmp_path, c2)
  assert step == 10
  assert len(params["blocks"]["w_up"].sharding.device_set) == 8


def test_nan_stops_with_a_clear_error(tmp_path):
  c = small_config(num_steps=10, checkpoint_every=5)
  c.opt.peak_lr = 1e30  # diverges within a few steps
  with pytest.raises(trainer.NonFiniteLossError, match="at step"):
    trainer.train(c, str(tmp_path))


def test_bad_model_config_names_the_field(tmp_path):
  c = small_config()
  c.model.n_kv_heads = 3
  with pytest.raises(ConfigError, match="model.n_kv_heads"):
    trainer.train(c, str(tmp_path))
  c = small_config()
  c.mesh.shape = (3, 1, 1)
  with pytest.raises(ConfigError, match="mesh.shape"):
    trainer.train(c, str(tmp_path))
  c = small_config()
  c.model.attention = "pallas_tpu"
  c.seq_len = 100
  with pytest.raises(ConfigError, match="seq_len"):
    trainer.train(c, str(tmp_path))


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "proxyjax.main", "--config=configs/tiny.py", f"--workdir={workdir}",
         "--config.num_steps=100000", "--config.log_every=1", "--config.seq_len=64",
         "--config.model.n_layers=1", "--config.model.d_model=64", "--config.eval_every=0",
         "--config.checkpoint_every=0", "--config.progress_bar=False"]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(steps) == 1 and steps[0] >= 3 and "checkpoint saved at step" in err
