r"""Train-step throughput and MFU, and loop goodput, on whatever device is present.

    python benchmarks/train_step.py --config=configs/tiny.py [--steps=10] [--goodput_steps=30]
    python benchmarks/train_step.py --config=configs/1.5b.py --config.batch_size=8 \
        --config.data.sources=stdlib   # one GPU; the ladder configs name no corpus

Step timing uses one real batch from the pipeline (so compute is isolated from
data loading), after a compile step. FLOPs per step = 6 N tokens + causal
document-masked attention (proxyjax.train.metrics); MFU needs a known device
peak (H100/H200/A100/TPU; none on CPU). Goodput runs the real training loop for
``goodput_steps`` and compares the sum of step times to the loop's wall time.

``host_batch``, ``measure`` and ``goodput`` are importable
(``benchmarks/gpu_suite.py`` uses them).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def host_batch(config):
  """One global batch from the training pipeline (numpy, on the host)."""
  from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.make_iterator(config, "train")
  try:
    return next(it)
  finally:
    if hasattr(it, "close"):
      it.close()


def _memory_stats(device) -> dict:
  try:
    return dict(device.memory_stats() or {})
  except Exception:  # pylint: disable=broad-except
    return {}


def measure(config, steps: int = 10, batch=None, *, check_memory: bool = False,
            deadline: float | None = None) -> dict:
  """Compiles the sharded train step of ``config`` and times ``steps`` steps on one batch.

  Args:
    config: a validated-able ConfigDict (its ``batch_size``/``seq_len`` shape the batch).
    steps: timed steps after the compile step.
    batch: a host batch (``host_batch(config)`` when None).
    check_memory: compile ahead of time first and refuse (``MemoryError``) when
      XLA's memory analysis says the step needs more than the device's limit.
    deadline: ``time.time()`` after which no further timed step starts (at least one runs).

  Returns:
    A JSON-able dict: ``compile_s``, ``step_s``, ``symbols_per_s``,
    ``tflops_per_device``, ``mfu`` (None without a known peak), memory figures, ...
  """
  import jax  # pylint: disable=g-import-not-at-top

  from proxyjax import parallel
  from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from proxyjax.eval import validation  # pylint: disable=g-import-not-at-top
  from proxyjax.model import transformer  # pylint: disable=g-import-not-at-top
  from proxyjax.train import metrics  # pylint: disable=g-import-not-at-top
  from proxyjax.train import step as step_lib

  validation.validate(config)
  mesh = parallel.make_mesh(config.mesh.shape)
  vocab = pipeline.build_vocab(config)
  model_cfg = transformer.ModelConfig.from_config(config, vocab)
  setup = step_lib.build(config, model_cfg, mesh)
  if batch is None:
    batch = host_batch(config)
  device = jax.devices()[0]
  tokens = int((batch["segment_ids"] > 0).sum()) * jax.process_count()
  pairs = metrics.visible_pairs(batch["segment_ids"], model_cfg.window) * jax.process_count()
  row = {"dense_params_M": None, "seq_len": config.seq_len, "batch": config.batch_size,
         "dtype": config.model.dtype, "remat": config.model.remat,
         "attention": model_cfg.attention, "device": device.device_kind,
         "devices": jax.device_count(), "tokens_per_step": tokens}
  if model_cfg.attention == "auto":
    from proxyjax.model import attention  # pylint: disable=g-import-not-at-top
    row["attention"] = "auto -> " + attention.default_backend()
  t = time.perf_counter()
  gbatch = parallel.global_batch(batch, mesh)
  state = setup.init_fn()
  train_step = setup.train_step
  if check_memory:
    compiled = jax.jit(setup.train_step, donate_argnums=0).lower(state, gbatch).compile()
    analysis = compiled.memory_analysis()
    if analysis is not None:
      sizes = {k: int(getattr(analysis, f"{k}_size_in_bytes", 0) or 0)
               for k in ("argument", "output", "alias", "temp")}
      need = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
      row["compiled_peak_bytes"] = need
      limit = _memory_stats(device).get("bytes_limit")
      if limit and need > limit:
        raise MemoryError(f"compiled step needs {need / 2**30:.1f} GiB > device limit "
                          f"{limit / 2**30:.1f} GiB")
    train_step = compiled
  state, m = train_step(state, gbatch)
  jax.block_until_ready(m)
  row["compile_s"] = time.perf_counter() - t
  done = 0
  t = time.perf_counter()
  for _ in range(max(steps, 1)):
    state, m = train_step(state, gbatch)
    done += 1
    if deadline is not None and time.time() > deadline:
      break
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t) / done
  n_dense = transformer.count_params(setup.abstract_state["params"]) - vocab.size * model_cfg.d_model
  flops = metrics.step_flops(model_cfg, n_dense, tokens, pairs)
  per_device = flops / step_s / jax.device_count()
  peak = metrics.peak_flops(device)
  stats = _memory_stats(device)
  row.update(dense_params_M=n_dense / 1e6, vocab=vocab.size, steps=done, step_s=step_s,
             symbols_per_s=tokens / step_s, tflops_per_device=per_device / 1e12,
             flops_per_step=flops, mfu=per_device / peak if peak else None,
             peak_bytes_in_use=stats.get("peak_bytes_in_use"),
             bytes_limit=stats.get("bytes_limit"),
             loss=float(m["loss"]) if "loss" in m else None)
  del state
  return row


def goodput(config, steps: int) -> dict:
  """Runs the real training loop for ``steps`` steps: sum of step times / loop wall time."""
  from proxyjax import trainer  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.unlock()
  config.num_steps = steps
  config.log_every = 1
  config.eval_every = 0
  config.checkpoint_every = 0
  config.progress_bar = False
  with tempfile.TemporaryDirectory() as workdir:
    t = time.perf_counter()
    trainer.train(config, workdir)
    wall = time.perf_counter() - t
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(l) for l in f if '"step_time"' in l]
  steady = sum(r["step_time"] for r in rows[1:])  # step 1 includes compilation
  return {"goodput_steps": len(rows), "loop_wall_s": wall,
          "sum_step_s": sum(r["step_time"] for r in rows),
          "goodput_excl_first": steady / max(wall - rows[0]["step_time"], 1e-9)}


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  row = {"config": config_flags.get_config_filename(flags.FLAGS["config"])}
  row.update(measure(config, _STEPS.value))
  if _GOODPUT_STEPS.value:
    row.update(goodput(config, _GOODPUT_STEPS.value))
  print(json.dumps(row))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "a") as f:
      f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from absl import (
    app,  # pylint: disable=g-import-not-at-top
    flags,  # pylint: disable=g-import-not-at-top
  )
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file.",
                                            lock_config=True)
  _STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after compilation.")
  _GOODPUT_STEPS = flags.DEFINE_integer("goodput_steps", 0, "Loop steps for the goodput check.")
  _JSON_OUT = flags.DEFINE_string("json_out", None, "Append the result as a JSON line.")
  app.run(main)
