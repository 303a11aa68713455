"""Helpers shared by tests of several packages (``tests/`` is on the path: setup.cfg)."""

import functools
import json
import os

import pytest

from proxyjax import config as config_lib
from proxyjax import parallel
from proxyjax.data import pipeline
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import step as step_lib

PIN_MACHINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                           "pin_machine.json")


@functools.cache
def _pin_machine() -> dict:
  with open(PIN_MACHINE) as f:
    return json.load(f)


@functools.cache
def _has_avx512() -> bool:
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return False
  return "avx512f" in flags.split()


def exact_pins(made_with_avx512f: bool | None = None) -> bool:
  """Whether bit-exact float32 pins apply on this CPU: its AVX-512 support matches the
  machine the pins were made on (``made_with_avx512f``, recorded in a fixture made
  elsewhere, else ``tests/fixtures/pin_machine.json``; XLA's CPU kernels round
  differently per instruction set). ``PROXYJAX_REGEN_PINS`` (regenerating here) or
  ``PROXYJAX_EXACT_PINS=1`` force True."""
  if os.environ.get("PROXYJAX_REGEN_PINS") or os.environ.get("PROXYJAX_EXACT_PINS") == "1":
    return True
  if made_with_avx512f is None:
    made_with_avx512f = _pin_machine()["avx512f"]
  return bool(made_with_avx512f) == _has_avx512()


def has_avx512() -> bool:
  """Whether this CPU has AVX-512 (recorded with pins regenerated on it)."""
  return _has_avx512()


def require_exact_pins(what: str) -> None:
  """Skips a bit-exact pin (``what``) on a CPU whose float rounding differs from the
  pin machine's, saying so (see ``exact_pins``)."""
  if not exact_pins():
    pytest.skip(f"{what} is pinned bit for bit on {_pin_machine()['made_on']}; this CPU "
                f"{'has' if _has_avx512() else 'lacks'} AVX-512 and XLA rounds differently "
                "here (tests/fixtures/pin_machine.json; PROXYJAX_EXACT_PINS=1 runs it)")


def small_config(**overrides):
  """A 2-layer model on 8 rows of 64 ids, 20 steps, checkpoints every 10, FSDP over
  all (fake) devices; ``overrides`` are dotted keys: ``{"model.d_model": 32}``."""
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 64, 8
  c.num_steps, c.log_every, c.eval_every = 20, 5, 0
  c.checkpoint_every, c.progress_bar = 10, False
  c.async_checkpointing = False
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 64, 2, 4, 2, 16, 128
  m.logits_chunk = 32
  m.scan_layers = True  # the pod-scale path (tiny_config unrolls for CPU speed)
  c.opt.warmup_steps, c.opt.peak_lr = 5, 2e-3
  c.data.schedule.warmup_steps = 3
  c.mesh.shape = (1, -1, 1)  # all (8 fake) devices, FSDP
  c.update_from_flattened_dict(overrides)
  return c


def data_config(**data):
  """The base config with rows of 64 ids, 4 rows per step and a 4-step warm-up;
  ``data`` sets fields of ``config.data`` (data-pipeline tests)."""
  c = config_lib.base_config()
  c.seq_len = 64
  c.batch_size = 4
  c.data.schedule.warmup_steps = 4
  for k, v in data.items():
    c.data[k] = v
  return c


def model_config(c):
  return transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))


def restored_params(workdir, c):
  """``(step, params)`` of the newest checkpoint in ``workdir`` (full train state restored)."""
  setup = step_lib.build(c, model_config(c), parallel.make_mesh(c.mesh.shape))
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  step, state, _ = ck.restore(ckpt_lib.abstract_with_shardings(setup.abstract_state,
                                                               setup.state_shardings), None)
  ck.close()
  return step, state["params"]
