"""--mode=plan: sharded sizes, XLA's compiled memory analysis, activation estimates, verdict."""

import dataclasses
import os
import subprocess
import sys

import pytest

from proxyjax import config as config_lib
from proxyjax import parallel, plan
from proxyjax.data import pipeline
from proxyjax.model import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB = 1 << 30


def test_tiny_compiled_memory_analysis_matches_the_shard_sizes():
  c = config_lib.tiny_config()  # 8 fake CPU devices (conftest), FSDP over all of them
  r = plan.make_plan(c, plan.Options(devices=8, device_memory_gb=16))
  n = r["params"]
  assert 3e6 < n < 5e6 and r["params_bytes_total"] == 4 * n
  # Every tiny parameter has an embed axis divisible by 8: fully sharded.
  assert r["params_bytes"] == 4 * n // 8 == r["grads_bytes"]
  assert r["opt_bytes"] == 2 * r["params_bytes"] + 8  # mu, nu + two int32 counts
  comp = r["compiled"]
  assert comp is not None and r["source"] == "compiled", r["notes"]
  state = r["params_bytes"] + r["opt_bytes"] + 4  # + the step counter
  batch = 4 * c.batch_size * c.seq_len * 4 // 8  # four int32 [B, T] arrays, sharded
  assert comp["argument"] == state + batch
  assert comp["alias"] == state  # the donated state is updated in place
  assert comp["temp"] > 0 and comp["peak_bytes"] == r["needed_bytes"] > comp["argument"]
  assert r["fits"] is True and "FITS" in plan.format_report(r)
  small = plan.make_plan(c, plan.Options(devices=8, device_memory_gb=0.01, compile="never"))
  assert small["fits"] is False and small["source"] == "analytic"
  assert "DOES NOT FIT" in plan.format_report(small)


def test_7b_analytic_on_64_gpus():
  c = config_lib.ladder_config("7b")
  r = plan.make_plan(c, plan.Options(devices=64, device_memory_gb=80, platform="gpu"))
  n = r["params"]
  assert 6.3e9 < n < 7.7e9  # 7B +- 10%
  assert r["params_bytes_total"] == 4 * n
  assert r["params_bytes"] == 4 * n // 64  # FSDP over 64 devices
  assert r["opt_bytes"] == 2 * r["params_bytes"] + 8
  assert r["compiled"] is None and r["source"] == "analytic"
  assert any("not the local backend" in s for s in r["notes"])
  assert r["rows_per_device"] == 4 and r["config"]["attention"] == "pallas_gpu"
  acts = r["activations_bytes"]
  m = c.model
  per_layer_input = 4 * c.seq_len * m.d_model * 2  # rows * T * D * bf16
  block_none = acts["none"] // m.n_layers
  assert acts["full"] == pytest.approx(m.n_layers * per_layer_input + block_none, rel=1e-6)
  assert acts["full"] < acts["dots"] < acts["none"]
  total = 2 * r["params_bytes"] + r["opt_bytes"] + acts["full"] + r["transient_bytes"]
  assert r["analytic_total_bytes"] == r["needed_bytes"] == total
  assert 10 * GIB < total < 40 * GIB
  assert r["fits"] is True
  assert plan.make_plan(c, plan.Options(devices=64, device_memory_gb=16,
                                        platform="gpu"))["fits"] is False
  # Not sharding activations over 8 devices: 32 rows each, remat full no longer fits 80 GB.
  assert plan.make_plan(c, plan.Options(devices=8, device_memory_gb=80,
                                        platform="gpu"))["fits"] is False


def test_unshardable_batch_is_a_problem():
  c = config_lib.ladder_config("0.5b")
  r = plan.make_plan(c, plan.Options(devices=48, device_memory_gb=80, platform="tpu"))
  assert r["fits"] is False and "not divisible" in r["problems"][0]
  assert "PROBLEM" in plan.format_report(r)


def test_plan_mode_from_the_command_line():
  cmd = [sys.executable, "-m", "proxyjax.main", "--config=configs/14b.py", "--mode=plan",
         "--plan.devices=64", "--plan.device_memory_gb=80"]  # the command
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "14.6" in out.stdout and "fsdp=64" in out.stdout
  assert "FITS: needs" in out.stdout and "(analytic)" in out.stdout
  assert "planning for 64 GPUs" in out.stdout and "64 gpu devices" in out.stdout


def test_raw_heads_add_target_columns_and_logits():
  """R look-ahead raw heads: rows carry H + R target columns; each adds a 320-way logits
  block to the transient memory (logits chunk, gradient, gathered head)."""
  c = config_lib.tiny_config()
  c.model.num_pred_heads, c.model.num_raw_pred_heads = 2, 3
  mesh = parallel.make_mesh((1, -1, 1))
  assert plan.abstract_batch(c, mesh)["targets"].shape == (c.batch_size, c.seq_len, 5)
  c.model.num_pred_heads, c.model.num_raw_pred_heads = 1, 0
  assert plan.abstract_batch(c, mesh)["targets"].shape == (c.batch_size, c.seq_len)
  cfg = transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))
  sizes, rules = {"data": 1, "fsdp": 8, "tensor": 1}, parallel.rules_for("fsdp")
  base = plan.transient_bytes(cfg, 2, c.seq_len, sizes, rules, "xla")
  with_raw = plan.transient_bytes(dataclasses.replace(cfg, num_raw_pred_heads=2), 2, c.seq_len,
                                  sizes, rules, "xla")
  chunk = min(cfg.logits_chunk, c.seq_len)
  f32 = 4  # the tiny model computes in float32
  assert with_raw - base == 2 * 2 * chunk * 640 * 4 + cfg.d_model * 640 * (f32 + 4)
  # The 0.5b rung trains one raw head (authors' proxy recipe): its parameters are counted.
  c5 = config_lib.load_config(os.path.join(ROOT, "configs", "0.5b.py"))
  opts = plan.Options(devices=8, device_memory_gb=80, platform="gpu", compile="never")
  with_head = plan.make_plan(c5, opts)["params"]
  c5.model.num_raw_pred_heads = 0
  assert with_head - plan.make_plan(c5, opts)["params"] == c5.model.d_model * 320
