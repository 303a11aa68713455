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

WORKDIR may be local, ``gs://`` or ``s3://`` (everything: checkpoints, metrics,
TensorBoard, config.json, the tokenizer); a store Orbax cannot write checkpoints to
(``proxyjax.train.checkpoint.check_directory``) stops before the first step with one line. A tokenizer view without
``data.tokenizer_path`` uses the run's own ``WORKDIR/tokenizer.json``
(``pipeline.run_tokenizer``: written once by process 0, read by every process); the
recorded config keeps ``data.tokenizer_path`` as given.

Parts: ``_Run`` (one call of ``train``: builds the run, advances it step by step,
closes it), ``_Window`` (one log window: counts, summed device metrics, the metric
line), ``_Validation`` (validation at ``eval_every`` and after the last step),
``_Checkpoints`` (restore, and saves with the recorded ``meta``), ``_ProgressBar``
and ``_Preemption`` (SIGTERM -> a flag).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from proxyjax import parallel, paths, rundir
from proxyjax.data import pipeline
from proxyjax.eval import generate, validation
from proxyjax.eval import interface as interface_lib
from proxyjax.eval import run as eval_run
from proxyjax.model import transformer
from proxyjax.neural import codec
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import loss as loss_lib
from proxyjax.train import metrics as metrics_lib
from proxyjax.train import resume as resume_lib
from proxyjax.train import step as step_lib
from proxyjax.train import summary as summary_lib

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
  tasks = eval_run.parse_tasks(config.eval.train_tasks, "eval.train_tasks")
  out = {}
  for name, res in eval_run.run_tasks(ctx, tasks, out_dir=None).items():
    for k, v in res.items():
      if isinstance(v, float) or (isinstance(v, int) and k not in ("step",)):
        out[f"eval/{k}" if name == "bpb" else f"eval/{name}/{k}"] = v
  return out


class _Validation:
  """Validation during training (``config.eval.train_tasks``), written to the metrics.

  Built before the data iterator, so an empty validation split fails before training.
  """

  def __init__(self, config: ml_collections.ConfigDict, setup: step_lib.Setup):
    self.config = config
    self.ctx = eval_run.Context(config, setup.graphdef, None, 0, mesh=setup.mesh,
                                rules=setup.rules)
    if config.eval_every:  # an empty validation split fails now, not at the first eval
      eval_run.check_train_inputs(self.ctx, config.eval.train_tasks)

  def due(self, step: int) -> bool:
    return bool(self.config.eval_every) and step % self.config.eval_every == 0

  def due_at_end(self, step: int) -> bool:
    """The last step, when the loop's schedule did not validate it."""
    return bool(self.config.eval_every) and step % self.config.eval_every != 0

  def __call__(self, state, step: int, writer: metrics_lib.MetricWriter) -> dict:
    self.ctx.params, self.ctx.step = state["params"], step
    scalars = evaluate(self.ctx, self.config)
    writer.write(step, scalars)
    return scalars


class _Checkpoints:
  """The run's Checkpointer with what every save records: data iterator and ``meta``
  (with the exposure totals, ``metrics.Exposure``)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh, vocab, data_it,
               exposure: metrics_lib.Exposure):
    self.ckpt = ckpt_lib.Checkpointer(rundir.checkpoint_dir(workdir),
                                      keep=config.keep_checkpoints,
                                      async_save=config.async_checkpointing)
    self.every = config.checkpoint_every
    self._data_it = data_it
    self._mesh_shape = list(mesh.shape.values())
    self._vocab = vocab
    self._config = resume_lib.config_dict(config)
    self.exposure = exposure

  def due(self, step: int) -> bool:
    return bool(self.every) and step % self.every == 0

  def restore(self, config: ml_collections.ConfigDict, workdir: str, setup: step_lib.Setup):
    """(start step, state) from the newest readable checkpoint, or a fresh one."""
    ckpt = self.ckpt
    ckpt.check_writable()
    ckpt.remove_partial_saves()
    target = ckpt_lib.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
    # Checkpoints from before the config was recorded in `meta`: WORKDIR/config.json.
    legacy = rundir.load_run_config(workdir)
    check = resume_lib.resume_check(
        config, config.get("restore_policy", "strict"), ckpt.directory, jax.process_count(),
        legacy.to_dict() if legacy is not None else None,
        pipeline.iterator_data_stream(self._data_it))
    data_restored = []

    def check_and_note(step, meta):
      data_restored.append(check(step, meta))
      return data_restored[-1]

    restored = ckpt.restore(target, self._data_it, check=check_and_note)
    if restored is None:
      return 0, setup.init_fn()
    start, state, meta = restored
    log.info("resumed from step %d", start)
    if not self.exposure.restore((meta or {}).get(metrics_lib.META_KEY), data_restored[-1]):
      log.warning("the checkpoint at step %d has no exposure totals (saved before they were "
                  "recorded): total_train_flops and total_symbols count from step %d", start,
                  start)
    return start, state

  def save(self, step: int, state) -> None:
    self.exposure.sync(pipeline.pipeline_stats(self._data_it))
    meta = {"step": step, "mesh": self._mesh_shape, "process_count": jax.process_count(),
            "config": self._config, rundir.VOCAB_KEY: rundir.vocab_record(self._vocab),
            metrics_lib.META_KEY: self.exposure.record(),
            resume_lib.DATA_STREAM_KEY: pipeline.iterator_data_stream(self._data_it)}
    self.ckpt.save(step, state, self._data_it, meta, force=True)

  def kept(self) -> str:
    return ", ".join(map(str, self.ckpt.all_steps())) or "none"


class _Window:
  """One log window: host counts of its batches and the sums of its device metrics.

  ``excluded``: eval and checkpoint time (not part of step time).
  """

  def __init__(self):
    self.start = time.perf_counter()
    self.steps = self.tokens = self.pairs = 0
    self.data_wait = self.excluded = 0.0
    self.sums: dict[str, float] = {}
    self.reads = 0.0

  def add(self, metrics: dict) -> None:
    for k, v in metrics.items():  # counters and means are summed; lr/param_norm keep the last
      self.sums[k] = float(v) if k in _LAST_VALUE else self.sums.get(k, 0.0) + float(v)
    self.reads += 1.0

  def elapsed(self) -> float:
    return time.perf_counter() - self.start - self.excluded

  def scalars(self, elapsed: float, model_cfg, n_dense: int, peak: float | None,
              stats: dict) -> dict:
    """The metric line of this window (None values left out)."""
    flops = metrics_lib.step_flops(model_cfg, n_dense, self.tokens, self.pairs)
    per_device = flops / elapsed / jax.device_count()
    for k in _WINDOW_MEAN:
      self.sums[k] /= self.reads
    fin = loss_lib.finalize_metrics(self.sums)
    line = {
        "loss": fin["loss"], "raw_loss": fin.get("raw_loss"),
        "comp_loss": fin.get("comp_loss"), "raw_bpb": fin.get("raw_bpb"),
        "raw_head_loss": fin.get("raw_head_loss"),
        "grad_norm": fin["grad_norm"], "param_norm": fin["param_norm"], "lr": fin["lr"],
        "step_time": elapsed / self.steps,
        "symbols_per_s": self.tokens / elapsed,
        # Documents arrive in bursts; bytes/id over the whole stream is smooth.
        "utf8_bytes_per_s": (self.tokens / elapsed * stats.get("doc_bytes", 0)
                             / max(stats.get("ids", 0), 1)),
        "tflops_per_device": per_device / 1e12,
        "devices": jax.device_count(),
        "mfu": per_device / peak if peak else None,
        "data_wait_fraction": self.data_wait / elapsed,
        "compressed_fraction": stats.get("compressed_view_fraction"),
        "compression_ratio": stats.get("compression_ratio:compressed"),
        "docs_skipped": stats.get("docs_skipped", 0),
    }
    return {k: v for k, v in line.items() if v is not None}


class _ProgressBar:
  """tqdm over the steps, started after the first (compiling) step: ETA excludes it."""

  def __init__(self, enabled: bool, total: int):
    self.enabled, self.total, self.bar = enabled, total, None

  def step_read(self, step: int) -> None:
    if self.bar is None and self.enabled:
      self.bar = tqdm(total=self.total, initial=step, unit="step", dynamic_ncols=True,
                      file=sys.stderr)
    elif self.bar is not None:
      self.bar.update(1)

  def show(self, line: dict) -> None:
    if self.bar is not None:
      self.bar.set_postfix(metrics_lib.progress_postfix(line))

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class _Run:
  """One call of ``train``: the parts it built and the state it advances."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    try:
      paths.makedirs(workdir, exist_ok=True)
    except OSError as e:
      raise ckpt_lib.CheckpointError(f"cannot create the work directory {workdir}: "
                                     f"{ckpt_lib.describe_error(e)}") from e
    self.workdir = workdir
    self.recorded_config = config  # config.json and checkpoints: data.tokenizer_path as given
    self.is_main = jax.process_index() == 0
    self.mesh = parallel.make_mesh(config.mesh.shape, dcn_shape=config.mesh.dcn_shape)
    if config.eval_every:  # an empty validation split fails before a tokenizer is trained
      eval_run.check_train_inputs(eval_run.Context(config, None, None, 0),
                                  config.eval.train_tasks)
    # Checkpoints on a store Orbax cannot write to fail now, before a tokenizer is trained.
    ckpt_lib.check_directory(rundir.checkpoint_dir(workdir))
    config = pipeline.run_tokenizer(config, workdir)  # WORKDIR/tokenizer.json, if needed
    self.config = config
    self.vocab = pipeline.build_vocab(config)
    self.model_cfg = transformer.ModelConfig.from_config(config, self.vocab)
    self.setup = step_lib.build(config, self.model_cfg, self.mesh)
    self.validation = _Validation(config, self.setup)
    shard, self.shards = parallel.data_shard(self.mesh, config.batch_size)
    self.data_it = pipeline.make_iterator(config, "train", process_index=shard,
                                          process_count=self.shards)
    self.exposure = metrics_lib.Exposure(self.shards)
    self.checkpoints = _Checkpoints(self.recorded_config, workdir, self.mesh, self.vocab,
                                    self.data_it, self.exposure)
    try:
      self.start, self.state = self.checkpoints.restore(self.recorded_config, workdir,
                                                        self.setup)
    except BaseException:
      self.checkpoints.ckpt.close()
      self._close_data()
      raise
    self.step = self.start
    self.n_dense = transformer.count_params(self.setup.abstract_state["params"]) - (
        self.model_cfg.vocab_size * self.model_cfg.d_model)
    self.peak = metrics_lib.peak_flops(jax.devices()[0])
    self.writer = metrics_lib.MetricWriter(workdir, enabled=self.is_main)
    if self.is_main:
      self._announce()
    self.validation.ctx.step = self.start
    self.window = _Window()
    self.progress = _ProgressBar(self.is_main and config.progress_bar, config.num_steps)
    self.pending = None  # (step, device metrics) of the step whose metrics are not read yet
    self.last: dict[str, Any] = {}

  def _announce(self) -> None:
    mesh, config = self.mesh, self.config
    print(f"proxyjax: {self.n_dense / 1e6:.1f}M dense params, vocab {self.vocab.size}, mesh "
          f"{dict(mesh.shape)}, {jax.device_count()} {jax.devices()[0].platform} devices, "
          f"steps {self.start}->{config.num_steps}", file=sys.stderr)
    try:
      rundir.write_run_config(self.recorded_config, self.workdir)
    except OSError as e:
      raise ckpt_lib.CheckpointError(f"cannot write {self.workdir}/config.json: "
                                     f"{ckpt_lib.describe_error(e)}") from e

  def _close_data(self) -> None:
    if hasattr(self.data_it, "close"):
      self.data_it.close()

  def read_pending(self) -> None:
    """Reads the metrics of the pending step into the window (a NaN loss stops the run)."""
    step, dev_metrics = self.pending
    self.pending = None
    m = jax.device_get(dev_metrics)
    if not math.isfinite(float(m["loss"])):
      resumed = f"; this run resumed from step {self.start}" if self.start else ""
      raise NonFiniteLossError(
          f"non-finite loss {float(m['loss'])} at step {step}; the checkpoints saved so far "
          f"are kept in {self.checkpoints.ckpt.directory} (steps: {self.checkpoints.kept()})"
          f"{resumed}")
    self.window.add(m)
    self.progress.step_read(step)

  def advance(self) -> None:
    """One batch through the sharded step; the previous step's metrics are read after it
    is dispatched."""
    config, window = self.config, self.window
    t0 = time.perf_counter()
    batch = pipeline.next_batch(self.data_it)  # SIGTERM is acted on while waiting too
    window.data_wait += time.perf_counter() - t0
    tokens, pairs = _host_batch_stats(batch, self.model_cfg.window)
    # Global counts: this process's rows stand for one of `shards` equal data shards.
    window.tokens += tokens * self.shards
    window.pairs += pairs * self.shards
    self.exposure.add_step(
        metrics_lib.train_flops(self.model_cfg, self.n_dense, tokens * self.shards,
                                pairs * self.shards), tokens * self.shards)
    self.state, dev_metrics = self.setup.train_step(
        self.state, parallel.global_batch(batch, self.mesh, config.batch_size))
    self.checkpoints.ckpt.poll()  # a background save that failed stops the run here
    self.step += 1
    window.steps += 1
    if self.pending is not None:  # step n's metrics read after step n+1 was dispatched
      self.read_pending()
    self.pending = (self.step, dev_metrics)

  def log(self) -> None:
    """Writes the window's metric line and starts the next window."""
    jax.block_until_ready(self.state["step"])
    elapsed = self.window.elapsed()
    stats = pipeline.pipeline_stats(self.data_it)
    self.last = self.window.scalars(elapsed, self.model_cfg, self.n_dense, self.peak, stats)
    self.exposure.sync(stats)
    self.last.update(self.exposure.scalars())  # running totals and this window's share
    self.exposure.start_window()
    self.writer.write(self.step, self.last)
    self.progress.show(self.last)
    self.window = _Window()

  def validate(self) -> None:
    self.last.update(self.validation(self.state, self.step, self.writer))

  def loop(self, stop_at_step: int | None, stop: Callable[[int, bool], bool] | None) -> bool:
    """Trains to ``num_steps``; True if stopped early (preemption), checkpoint saved."""
    config = self.config
    with _Preemption() as preempt:
      while self.step < config.num_steps:
        self.advance()
        step = self.step
        log_now = step % config.log_every == 0 or step == config.num_steps
        save_now = self.checkpoints.due(step)
        eval_now = self.validation.due(step)
        if stop_at_step is not None and step >= stop_at_step:
          preempt.requested = True
        # Read once per step: a signal arriving later is acted on at the next step.
        stop_now = preempt.requested if stop is None else stop(step, preempt.requested)
        if log_now or save_now or eval_now or stop_now:
          self.read_pending()
        if log_now:
          self.log()
        t_side = time.perf_counter()
        if eval_now:
          self.validate()
        if save_now or stop_now:
          self.checkpoints.save(step, self.state)
        self.window.excluded += time.perf_counter() - t_side
        if stop_now:
          self.checkpoints.ckpt.wait()
          print(f"proxyjax: stopping (SIGTERM/preemption); checkpoint saved at step {step}",
                file=sys.stderr)
          return True
      if self.pending is not None:
        self.read_pending()
      if self.step not in self.checkpoints.ckpt.all_steps():
        self.checkpoints.save(self.step, self.state)
      if self.validation.due_at_end(self.step):
        self.validate()
    return False

  def close(self, finished: bool) -> None:
    """Closes the checkpointer (a failed last save raises if the run finished), metrics,
    progress bar and data iterator."""
    try:
      self.checkpoints.ckpt.close()  # raises CheckpointSaveError if the last save failed
    except ckpt_lib.CheckpointSaveError as e:
      if finished:
        raise
      log.warning("%s", e)  # the error already propagating comes first
    finally:
      self.writer.close()
      self.progress.close()
      self._close_data()


def train(config: ml_collections.ConfigDict, workdir: str, *,
          stop_at_step: int | None = None,
          stop: Callable[[int, bool], bool] | None = None) -> dict[str, Any]:
  """Runs (or resumes) training; returns the last logged metrics.

  ``stop_at_step`` behaves like a preemption at that step (checkpoint, return).
  ``stop(step, requested)`` turns this process's stop request into the decision
  (multi-process: every process must stop at the same step, see
  ``proxyjax.distributed.StopAgreement``).
  """
  t_start = time.perf_counter()
  validation.validate(config)
  if config.data.view == "neural":  # documents without precomputed symbols are coded
    codec.register()  # the neural view restores its compressor through proxyjax.neural.codec
  run = _Run(config, workdir)
  finished = False  # True once the loop ends normally (a failed last save then raises)
  stopped = False
  try:
    stopped = run.loop(stop_at_step, stop)
    finished = True
  except OSError as e:  # metrics on a full or read-only disk: one line, not a traceback
    cause = ckpt_lib.disk_error(e)
    if cause is None:
      raise
    raise ckpt_lib.CheckpointError(
        f"cannot write to {workdir} at step {run.step}: {cause} ({e}); the checkpoints at "
        f"steps {run.checkpoints.kept()} are kept") from e
  finally:
    run.close(finished)
  run.last["step"] = run.step
  if not stopped:
    summarize(run, time.perf_counter() - t_start)
  return run.last


def summary_sample(run: _Run) -> str:
  """Greedy completion of ``config.summary_prompt`` through the raw-byte interface, by the
  generation evaluation uses (``proxyjax.eval.generate``); at most
  ``summary.SAMPLE_MAX_BYTES`` bytes, ending at ``</raw>`` or the model's context."""
  config = run.config
  prompt = config.summary_prompt.encode("utf-8")
  room = config.seq_len - len(generate.RAW.encode(prompt)) + 1  # positions left in context
  cfg = generate.SamplingConfig(max_new_tokens=max(1, min(summary_lib.SAMPLE_MAX_BYTES, room)),
                                temperature=0.0, n=1, seed=config.seed)
  return generate.generate(run.setup.graphdef, run.state["params"], [prompt], cfg,
                           batch_size=config.eval.batch_size, mesh=run.mesh,
                           rules=run.setup.rules, interface=generate.RAW,
                           context_len=config.seq_len)[0][0]


def summarize(run: _Run, wall_s: float) -> None:
  """Prints the end-of-run summary (``proxyjax.train.summary``) on process 0."""
  # A model that never saw raw bytes (every document compressed) has no raw-byte sample;
  # multi-process runs skip it (generation is single-process; --mode=eval samples instead).
  wanted = (run.config.get("summary_prompt", "") and jax.process_count() == 1
            and not interface_lib.compressed_only(run.config.data))
  sample = summary_sample(run) if wanted else None
  if not run.is_main:
    return
  text = summary_lib.format_summary(
      run.config, run.workdir, summary_lib.read_metrics(run.workdir), wall_s=wall_s,
      start_step=run.start, end_step=run.step, checkpoints=summary_lib.checkpoint_steps(run.workdir),
      sample=sample)
  print(text, flush=True)
