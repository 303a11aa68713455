"""Presets (the CPU demo and the docs/method.md §5 ladder rungs) and loading a config file."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from proxyjax.config.schema import NO_CORPUS, base_config
from proxyjax.errors import ConfigError


def load_config(path: str) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a config file (for notebooks and tests)."""
  name = "proxyjax_config_" + os.path.splitext(os.path.basename(path))[0].replace(".", "_")
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# docs/method.md §5 ladder: d_model, d_ff, n_layers, n_heads, peak lr (head_dim 128).
LADDER = {
    "0.5b": (1024, 4096, 28, 8, 1.2e-3),
    "1.5b": (2048, 8192, 20, 16, 9e-4),
    "4b": (3072, 9216, 32, 24, 7e-4),
    "7b": (4096, 12288, 32, 32, 5e-4),
    "14b": (5120, 16384, 40, 40, 5e-4),
}
SIZES = ("tiny",) + tuple(LADDER)


def tiny_config() -> ml_collections.ConfigDict:
  """A ~3.6M-param CPU config on the embedded stdlib corpus (deflate view, rows of 512):
  the base of the tests' configs and of the neural compressor's. The README's demo,
  configs/tiny.py, is its own recipe (tests/config/test_configs.py pins how they differ)."""
  c = base_config()
  c.seq_len, c.batch_size = 512, 8
  c.num_steps, c.log_every, c.eval_every = 200, 10, 100
  c.eval.max_docs = 16
  c.checkpoint_every, c.keep_checkpoints = 100, 2
  c.data.schedule.warmup_steps = 60
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.head_dim, m.d_ff = 256, 4, 4, 64, 768
  m.dtype, m.remat, m.attention = "float32", "none", "xla"  # CPU: fp32 is faster than bf16
  m.scan_layers = False  # CPU: unrolled layers run ~20% faster (benchmarks/train_step.py)
  m.logits_chunk = 512
  c.opt.peak_lr, c.opt.warmup_steps, c.opt.weight_decay = 3e-3, 20, 0.1
  return c


def ladder_config(size: str) -> ml_collections.ConfigDict:
  """A ladder rung at pod scale: ~2M symbols per step (256 rows of 8192), 50k steps,
  tokenizer proxy with a raw head (the authors' token/neural-proxy recipe). No corpus is
  chosen (``data.sources`` is ``NO_CORPUS``): set one before training or evaluating."""
  if size == "tiny":
    return tiny_config()
  if size not in LADDER:
    raise ConfigError("size", f"unknown size {size!r}; known: {', '.join(SIZES)}")
  d, f, layers, heads, lr = LADDER[size]
  c = base_config()
  c.seq_len, c.batch_size, c.num_steps = 8192, 256, 50_000
  c.data.sources = NO_CORPUS  # the user's corpus: train/eval refuse to start without one
  c.data.view = "tokenizer"
  c.data.tokenizer_vocab_size = 32768
  c.data.num_workers = 4
  m = c.model
  m.d_model, m.d_ff, m.n_layers, m.n_heads, m.head_dim = d, f, layers, heads, 128
  m.num_raw_pred_heads = 1  # one look-ahead raw head (the authors' token-proxy recipe)
  c.opt.peak_lr = lr
  return c
