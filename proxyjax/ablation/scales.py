"""Scales: the base config every arm of an ablation starts from, per machine size.

``ci`` is seconds per arm (tests), ``cpu`` about five minutes per arm on two cores,
``colab_gpu`` / ``colab_tpu`` a free Colab accelerator, ``pod`` a ladder rung (docs/method.md §5)
(``proxyjax.config.ladder_config``). ``detect_scale`` picks cpu / colab_gpu / colab_tpu
from the local JAX platform (for the notebooks).

The number of steps is not part of a scale: the runner sets it from the ablation's
budget (``proxyjax.ablation.budget``) and ``finalize`` then derives the step-dependent
fields (optimizer and mixing warm-ups, log / eval / checkpoint intervals) from it.
"""

from __future__ import annotations

import dataclasses
import os
import sysconfig

import ml_collections

from proxyjax import config as config_lib
from proxyjax import paths
from proxyjax.errors import UserError

SCALES = ("ci", "cpu", "colab_gpu", "colab_tpu", "pod")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How the step-dependent fields follow ``num_steps`` at a scale.

  Attributes:
    opt_warmup: learning-rate warm-up, as a fraction of the steps.
    mix_warmup: the mixing schedule's warm-up (translation pairs), a fraction.
    log_lines: metric lines per arm (about).
    evals: validations (raw BPB) per arm, the last one at the final step.
    checkpoints: checkpoints per arm (a kill loses at most 1/checkpoints of an arm).
    probe_documents: documents the budget probe reads per mixing phase (at least).
  """
  opt_warmup: float = 0.1
  mix_warmup: float = 0.3
  log_lines: int = 20
  evals: int = 4
  checkpoints: int = 8
  probe_documents: int = 48


SCHEDULES = {
    "ci": Schedule(opt_warmup=0.2, mix_warmup=0.3, log_lines=8, evals=2, checkpoints=4,
                   probe_documents=8),
    "cpu": Schedule(opt_warmup=0.1, mix_warmup=0.3, log_lines=20, evals=3, checkpoints=5),
    "colab_gpu": Schedule(opt_warmup=0.05, mix_warmup=0.2, log_lines=50, evals=5, checkpoints=10),
    "colab_tpu": Schedule(opt_warmup=0.05, mix_warmup=0.2, log_lines=50, evals=5, checkpoints=10),
    "pod": Schedule(opt_warmup=0.01, mix_warmup=0.2, log_lines=5000, evals=25, checkpoints=50),
}


def check_scale(scale: str) -> str:
  if scale not in SCALES:
    raise UserError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
  return scale


def detect_scale() -> str:
  """``colab_tpu``, ``colab_gpu`` or ``cpu``, from ``jax.devices()[0].platform``."""
  import jax  # pylint: disable=g-import-not-at-top  (only when asked: importing JAX is slow)
  platform = jax.devices()[0].platform
  return {"tpu": "colab_tpu", "gpu": "colab_gpu", "cuda": "colab_gpu",
          "rocm": "colab_gpu"}.get(platform, "cpu")


def _ci_sources() -> str:
  """A small slice of the standard library (29 files, ~380 kB): a tokenizer trains in
  about a second and the validation split still holds 5 documents."""
  return "files:" + os.path.join(sysconfig.get_paths()["stdlib"], "email")


def _cpu_model(c: ml_collections.ConfigDict) -> None:
  m = c.model
  m.dtype, m.remat, m.attention, m.scan_layers = "float32", "none", "xla", False


def _ci(workdir: str) -> ml_collections.ConfigDict:
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 128, 8
  c.data.sources, c.data.validation_fraction = _ci_sources(), 0.1
  c.data.tokenizer_vocab_size = 512
  if not paths.is_remote(workdir):  # the tokenizer cache is local (a bucket W: the default)
    c.data.tokenizer_cache_dir = os.path.join(workdir, "tokenizers")
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 64, 1, 4, 0, 16, 128
  m.logits_chunk = 128
  _cpu_model(c)
  c.opt.peak_lr = 3e-3
  e = c.eval
  e.max_docs, e.batch_size, e.translation_docs, e.translation_max_bytes = 2, 32, 2, 24
  c.keep_checkpoints, c.async_checkpointing = 2, False
  return c


def _cpu(workdir: str) -> ml_collections.ConfigDict:
  """The model, data and optimiser of the 800-step tiny demo that preceded configs/tiny.py's
  current recipe (2.0M parameters): a model that learns within minutes on two cores, so
  the arms differ by more than noise. The mixing schedule stays the paper's (rate 0.4 ->
  0.9; the demo itself stops at 0.33)."""
  del workdir
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 256, 8
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 192, 4, 3, 0, 64, 512
  m.logits_chunk = 256
  _cpu_model(c)
  c.opt.peak_lr = 5e-3
  c.data.max_document_bytes = 8192  # ~1,000 short stdlib files rather than a few long ones
  c.data.tokenizer_vocab_size = 1024  # trains in seconds
  c.eval.max_docs, c.eval.batch_size = 8, 32
  c.eval.translation_docs, c.eval.translation_max_bytes = 4, 64
  c.keep_checkpoints = 2
  return c


def _accelerator(c: ml_collections.ConfigDict) -> None:
  m = c.model
  # Full remat: a 16 GB T4 (dense XLA attention there) and an 8 GB TPU v2 core fit.
  m.dtype, m.attention, m.scan_layers, m.remat = "bfloat16", "auto", True, "full"
  c.eval.translation_docs, c.eval.translation_max_bytes = 8, 128
  c.data.num_workers = 0  # in-process data: notebooks need no spawned Grain workers
  c.keep_checkpoints = 2


def _gpu_without_bf16() -> bool:
  """The local accelerator is an NVIDIA GPU older than sm80 (a Colab T4: no bf16 units)."""
  import jax  # pylint: disable=g-import-not-at-top  (only for this scale: importing JAX is slow)
  device = jax.devices()[0]
  if device.platform != "gpu":
    return False
  cc = getattr(device, "compute_capability", None)
  try:
    return cc is not None and int(str(cc).partition(".")[0]) < 8
  except ValueError:
    return False


def _colab_gpu(workdir: str) -> ml_collections.ConfigDict:
  del workdir
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 1024, 16
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 512, 8, 8, 0, 64, 1536
  m.logits_chunk = 1024
  c.opt.peak_lr = 2e-3
  c.eval.max_docs = 32
  _accelerator(c)
  if _gpu_without_bf16():  # a T4 emulates bf16 slowly; float32 runs at its native rate
    m.dtype = "float32"
  return c


def _colab_tpu(workdir: str) -> ml_collections.ConfigDict:
  del workdir
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 2048, 32
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 768, 12, 12, 0, 64, 2048
  m.logits_chunk = 1024
  c.opt.peak_lr = 1.5e-3
  c.eval.max_docs = 64
  _accelerator(c)
  return c


def _pod(workdir: str, size: str = "0.5b") -> ml_collections.ConfigDict:
  del workdir
  c = config_lib.ladder_config(size)
  c.eval.translation_docs, c.eval.translation_max_bytes = 16, 256
  return c


_BUILDERS = {"ci": _ci, "cpu": _cpu, "colab_gpu": _colab_gpu, "colab_tpu": _colab_tpu,
             "pod": _pod}


def base_config(scale: str, workdir: str) -> ml_collections.ConfigDict:
  """The config of ``scale`` before the arm's overrides and the budget's steps.

  ``workdir``: the ablation's directory (the ci scale keeps its tokenizers there).
  """
  c = _BUILDERS[check_scale(scale)](workdir)
  c.progress_bar = scale not in ("ci",)
  return c


def mix_warmup_steps(scale: str, num_steps: int) -> int:
  """The mixing schedule's warm-up of a ``num_steps`` run at ``scale``."""
  return max(1, round(SCHEDULES[check_scale(scale)].mix_warmup * max(int(num_steps), 1)))


def finalize(c: ml_collections.ConfigDict, scale: str, num_steps: int) -> None:
  """Sets ``num_steps`` and the fields that follow it (in place)."""
  s = SCHEDULES[check_scale(scale)]
  n = max(int(num_steps), 1)
  c.num_steps = n
  c.opt.warmup_steps = max(1, round(s.opt_warmup * n))
  c.data.schedule.warmup_steps = mix_warmup_steps(scale, n)
  c.log_every = max(1, n // s.log_lines)
  c.eval_every = max(1, -(-n // s.evals))
  c.checkpoint_every = max(1, n // s.checkpoints)
