"""The training loop: data -> sharded step -> metrics / validation / checkpoints.

Resuming is re-running the same command: the newest readable checkpoint in
``WORKDIR/checkpoints`` restores parameters, optimizer, step and the Grain
iterator (so the data stream and the mixing schedule continue exactly).
A resume never silently becomes a fresh start: a checkpoint written with another
model shape or data stream (config recorded in each checkpoint's ``meta``) stops
the run before training, naming the field (``config.restore_policy``:
'strict', or 'fresh_data' to keep parameters/optimizer/step and restart the
data stream); only an *unreadable* checkpoint (checksum manifest, Orbax read) is
moved aside and the previous one used (see ``proxyjax.train.checkpoint``).
A failed save (e.g. no space left) stops the run with one line naming the step.
SIGTERM (preemption) saves a checkpoint and exits cleanly. A non-finite loss
stops the run with the step number; the checkpoints saved so far are kept.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from proxyjax import config as config_lib
from proxyjax import parallel
from proxyjax import rundir
from proxyjax.data import pipeline
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import loss as loss_lib
from proxyjax.train import metrics as metrics_lib
from proxyjax.train import step as step_lib

log = logging.getLogger(__name__)


_LAST_VALUE = ("lr", "param_norm")
_WINDOW_MEAN = ("loss", "grad_norm")  # averaged over the steps of a log window


class NonFiniteLossError(FloatingPointError):
  pass


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after every step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _host_batch_stats(batch: dict[str, np.ndarray], window: int | None) -> tuple[int, int]:
  tokens = int(np.sum(batch["segment_ids"] > 0))
  return tokens, metrics_lib.visible_pairs(batch["segment_ids"], window)


def evaluate(ctx, config: ml_collections.ConfigDict) -> dict:
  """``config.eval.train_tasks`` on the current parameters, as flat ``eval/...`` scalars."""
  from proxyjax.eval import run as eval_run  # pylint: disable=g-import-not-at-top
  tasks = eval_run.parse_tasks(config.eval.train_tasks, "eval.train_tasks")
  out = {}
  for name, res in eval_run.run_tasks(ctx, tasks, out_dir=None).items():
    for k, v in res.items():
      if isinstance(v, float) or (isinstance(v, int) and k not in ("step",)):
        out[f"eval/{k}" if name == "bpb" else f"eval/{name}/{k}"] = v
  return out


def train(config: ml_collections.ConfigDict, workdir: str, *,
          stop_at_step: int | None = None,
          stop: Callable[[int, bool], bool] | None = None) -> dict[str, Any]:
  """Runs (or resumes) training; returns the last logged metrics.

  ``stop_at_step`` behaves like a preemption at that step (checkpoint, return).
  ``stop(step, requested)`` turns this process's stop request into the decision
  (multi-process: every process must stop at the same step, see
  ``proxyjax.distributed.StopAgreement``).
  """
  config_lib.validate(config)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ckpt_lib.CheckpointError(f"cannot create the work directory {workdir}: "
                                   f"{ckpt_lib.describe_error(e)}") from e
  is_main = jax.process_index() == 0
  mesh = parallel.make_mesh(config.mesh.shape, dcn_shape=config.mesh.dcn_shape)
  vocab = pipeline.build_vocab(config)
  model_cfg = transformer.ModelConfig.from_config(config, vocab)
  setup = step_lib.build(config, model_cfg, mesh)
  from proxyjax.eval import run as eval_run  # pylint: disable=g-import-not-at-top
  eval_ctx = eval_run.Context(config, setup.graphdef, None, 0, mesh=setup.mesh,
                              rules=setup.rules)
  if config.eval_every:  # an empty validation split fails now, not at the first eval
    eval_run.check_train_inputs(eval_ctx, config.eval.train_tasks)
  shard, shards = parallel.data_shard(mesh, config.batch_size)
  data_it = pipeline.make_iterator(config, "train", process_index=shard, process_count=shards)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               keep=config.keep_checkpoints,
                               async_save=config.async_checkpointing)
  try:
    ckpt.check_writable()
    ckpt.remove_partial_saves()
    target = ckpt_lib.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
    # Checkpoints from before the config was recorded in `meta`: WORKDIR/config.json.
    legacy = rundir.load_run_config(workdir)
    restored = ckpt.restore(target, data_it, check=ckpt_lib.resume_check(
        config, config.get("restore_policy", "strict"), ckpt.directory, jax.process_count(),
        legacy.to_dict() if legacy is not None else None))
  except BaseException:
    ckpt.close()
    if hasattr(data_it, "close"):
      data_it.close()
    raise
  if restored is None:
    state = setup.init_fn()
    start = 0
  else:
    start, state, _ = restored
    log.info("resumed from step %d", start)
  recorded_config = ckpt_lib.config_dict(config)

  def meta(step):
    return {"step": step, "mesh": list(mesh.shape.values()),
            "process_count": jax.process_count(), "config": recorded_config,
            rundir.VOCAB_KEY: rundir.vocab_record(vocab)}
  n_dense = transformer.count_params(setup.abstract_state["params"]) - (
      model_cfg.vocab_size * model_cfg.d_model)
  peak = metrics_lib.peak_flops(jax.devices()[0])
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  if is_main:
    print(f"proxyjax: {n_dense / 1e6:.1f}M dense params, vocab {vocab.size}, mesh "
          f"{dict(mesh.shape)}, {jax.device_count()} {jax.devices()[0].platform} devices, "
          f"steps {start}->{config.num_steps}", file=sys.stderr)
    try:
      rundir.write_run_config(config, workdir)
    except OSError as e:
      raise ckpt_lib.CheckpointError(f"cannot write {workdir}/config.json: "
                                     f"{ckpt_lib.describe_error(e)}") from e

  eval_ctx.step = start
  last: dict[str, Any] = {}
  bar = None
  pending = None  # (step, device metrics) of the step whose metrics are not read yet
  window_start = time.perf_counter()
  # Per log window; "excluded" = eval and checkpoint time (not part of step time).
  window = {"steps": 0, "tokens": 0, "pairs": 0, "data_wait": 0.0, "excluded": 0.0}
  acc: dict[str, float] = {}

  def read(pending_step):
    nonlocal bar
    step, dev_metrics = pending_step
    m = jax.device_get(dev_metrics)
    if not math.isfinite(float(m["loss"])):
      steps = ckpt.all_steps()
      resumed = f"; this run resumed from step {start}" if start else ""
      raise NonFiniteLossError(
          f"non-finite loss {float(m['loss'])} at step {step}; the checkpoints saved so far "
          f"are kept in {ckpt.directory} (steps: {', '.join(map(str, steps)) or 'none'})"
          f"{resumed}")
    for k, v in m.items():  # counters and means are summed; lr/param_norm keep the last value
      acc[k] = float(v) if k in _LAST_VALUE else acc.get(k, 0.0) + float(v)
    acc["steps_read"] = acc.get("steps_read", 0.0) + 1.0
    if bar is None and is_main and config.progress_bar:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=config.num_steps, initial=step, unit="step", dynamic_ncols=True,
                 file=sys.stderr)  # created after the first (compiling) step: ETA excludes it
    elif bar is not None:
      bar.update(1)
    return step, m

  step = start
  finished = False  # True once the loop ends normally (a failed last save then raises)
  try:
    with _Preemption() as preempt:
      while step < config.num_steps:
        t0 = time.perf_counter()
        batch = pipeline.next_batch(data_it)  # SIGTERM is acted on while waiting too
        window["data_wait"] += time.perf_counter() - t0
        tokens, pairs = _host_batch_stats(batch, model_cfg.window)
        # Global counts: this process's rows stand for one of `shards` equal data shards.
        window["tokens"] += tokens * shards
        window["pairs"] += pairs * shards
        state, dev_metrics = setup.train_step(state, parallel.global_batch(batch, mesh, config.batch_size))
        ckpt.poll()  # a background save that failed stops the run here, naming its step
        step += 1
        window["steps"] += 1
        if pending is not None:  # step n's metrics read after step n+1 was dispatched
          read(pending)
        pending = (step, dev_metrics)
        log_now = step % config.log_every == 0 or step == config.num_steps
        save_now = config.checkpoint_every and step % config.checkpoint_every == 0
        eval_now = config.eval_every and step % config.eval_every == 0
        if stop_at_step is not None and step >= stop_at_step:
          preempt.requested = True
        # Read once per step: a signal arriving later is acted on at the next step.
        stop_now = preempt.requested if stop is None else stop(step, preempt.requested)
        if log_now or save_now or eval_now or stop_now:
          _, m = read(pending)
          pending = None
        if log_now:
          jax.block_until_ready(state["step"])
          elapsed = time.perf_counter() - window_start - window["excluded"]
          stats = pipeline.pipeline_stats(data_it)
          flops = metrics_lib.step_flops(model_cfg, n_dense, window["tokens"], window["pairs"])
          per_device = flops / elapsed / jax.device_count()
          n_read = acc.pop("steps_read")
          for k in _WINDOW_MEAN:
            acc[k] /= n_read
          fin = loss_lib.finalize_metrics(acc)
          last = {
              "loss": fin["loss"], "raw_loss": fin.get("raw_loss"),
              "comp_loss": fin.get("comp_loss"), "raw_bpb": fin.get("raw_bpb"),
              "grad_norm": fin["grad_norm"], "param_norm": fin["param_norm"], "lr": fin["lr"],
              "step_time": elapsed / window["steps"],
              "symbols_per_s": window["tokens"] / elapsed,
              # Documents arrive in bursts; bytes/id over the whole stream is smooth.
              "utf8_bytes_per_s": (window["tokens"] / elapsed * stats.get("doc_bytes", 0)
                                   / max(stats.get("ids", 0), 1)),
              "tflops_per_device": per_device / 1e12,
              "devices": jax.device_count(),
              "mfu": per_device / peak if peak else None,
              "data_wait_fraction": window["data_wait"] / elapsed,
              "compressed_fraction": stats.get("compressed_view_fraction"),
              "compression_ratio": stats.get("compression_ratio:compressed"),
              "docs_skipped": stats.get("docs_skipped", 0),
          }
          last = {k: v for k, v in last.items() if v is not None}
          writer.write(step, last)
          if bar is not None:
            bar.set_postfix(metrics_lib.progress_postfix(last))
          acc.clear()
          window = {"steps": 0, "tokens": 0, "pairs": 0, "data_wait": 0.0, "excluded": 0.0}
          window_start = time.perf_counter()
        t_side = time.perf_counter()
        if eval_now:
          eval_ctx.params, eval_ctx.step = state["params"], step
          ev = evaluate(eval_ctx, config)
          writer.write(step, ev)
          last.update(ev)
        if save_now or stop_now:
          ckpt.save(step, state, data_it, meta(step), force=True)
        window["excluded"] += time.perf_counter() - t_side
        if stop_now:
          ckpt.wait()
          print(f"proxyjax: stopping (SIGTERM/preemption); checkpoint saved at step {step}",
                file=sys.stderr)
          last["step"] = step
          finished = True
          return last
      if pending is not None:
        read(pending)
      if step not in ckpt.all_steps():
        ckpt.save(step, state, data_it, meta(step), force=True)
      if config.eval_every and step % config.eval_every:
        eval_ctx.params, eval_ctx.step = state["params"], step
        ev = evaluate(eval_ctx, config)
        writer.write(step, ev)
        last.update(ev)
    finished = True
  except OSError as e:  # metrics on a full or read-only disk: one line, not a traceback
    cause = ckpt_lib.disk_error(e)
    if cause is None:
      raise
    raise ckpt_lib.CheckpointError(
        f"cannot write to {workdir} at step {step}: {cause} ({e}); the checkpoints at steps "
        f"{', '.join(map(str, ckpt.all_steps())) or 'none'} are kept") from e
  finally:
    try:
      ckpt.close()  # raises CheckpointSaveError if the last save failed
    except ckpt_lib.CheckpointSaveError as e:
      if finished:
        raise
      log.warning("%s", e)  # the error already propagating comes first
    finally:
      writer.close()
      if bar is not None:
        bar.close()
      if hasattr(data_it, "close"):
        data_it.close()
  last["step"] = step
  return last
