"""Running an ablation: arms one after another, each trained, evaluated, then one report.

    W/state.json            the ablation, scale, budget and options this W was started with
    W/arms/<arm>/           a normal training run directory (checkpoints, metrics.jsonl,
                            eval/<task>.json) plus arm.json: the arm's overrides, its plan
                            (steps from the budget, the probe) and status
    W/report.md, W/report.json, W/<plot>.png   the comparison

An arm's status goes ``planned`` -> ``trained`` -> ``done`` (its eval written). A re-run
skips done arms, evaluates trained ones and resumes the others from their newest
checkpoint (``proxyjax.trainer.train`` resumes by itself). A re-run with another
ablation, scale, budget or options in the same W is refused, naming the difference.
A training stopped early (SIGTERM: the trainer saves a checkpoint and returns) raises
``Interrupted``: the next arms are not started; re-running the same command goes on.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import ml_collections

from proxyjax import paths, trainer
from proxyjax import views as views_lib
from proxyjax.ablation import budget as budget_lib
from proxyjax.ablation import catalog, scales
from proxyjax.ablation import probe as probe_lib
from proxyjax.ablation import report as ablation_report
from proxyjax.ablation import workdir as workdir_lib
from proxyjax.data import pipeline
from proxyjax.data import sources as sources_lib
from proxyjax.errors import UserError
from proxyjax.eval import compressor_analysis
from proxyjax.eval import interface as interface_lib
from proxyjax.eval import run as eval_run
from proxyjax.model import attention
from proxyjax.neural import codec


class Interrupted(UserError):
  """An arm's training stopped before its last step (SIGTERM / preemption)."""


Result = ablation_report.Result


def arm_config(scale: str, workdir: str, arm: catalog.Arm) -> ml_collections.ConfigDict:
  """The scale's base config with the arm's overrides (steps not set yet)."""
  c = scales.base_config(scale, workdir)
  for key, value in arm.overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise UserError(f"arm {arm.name!r}: config has no field {key!r}")
    node[leaf] = value
  return c


def eval_tasks(config: ml_collections.ConfigDict) -> str:
  """``bpb``, plus ``translation`` for an arm with a compressed view in sentinel mode."""
  d = config.data
  tasks = ["bpb"]
  if not interface_lib.byte_only(d) and interface_lib.trained_sentinels(d):
    tasks.append("translation")
  return ",".join(tasks)


# Symbols per byte of the re-coded views: a translation prompt of N bytes holds N x this.
SYMBOLS_PER_BYTE = {"halfbyte": 2, "doublebit": 4, "bit": 8}


def fit_translation(config: ml_collections.ConfigDict) -> None:
  """Caps ``eval.translation_max_bytes`` so that the prompt (the document's symbols) and
  the answer (its bytes) fit the model's context (in place)."""
  per_byte = SYMBOLS_PER_BYTE.get(config.data.view, 1)
  cap = max(1, (int(config.seq_len) - 8) // (per_byte + 1))
  config.eval.translation_max_bytes = min(int(config.eval.translation_max_bytes), cap)


def attention_backend(config: ml_collections.ConfigDict) -> str:
  """The attention backend the arm trains with (``auto`` resolved here)."""
  name = config.model.attention
  if name != "auto":
    return name
  backend, why = attention.auto_backend()
  return f"{backend} (auto: {why})"


class _Arm:
  """One arm's directory, its arm.json and its steps."""

  def __init__(self, arm: catalog.Arm, workdir: str, scale: str,
               budget: budget_lib.Budget, log: Callable[[str], Any], seed: int = 0,
               sources: str = ""):
    self.arm, self.scale, self.budget, self.log = arm, scale, budget, log
    self.seed, self.sources = seed, sources
    self.root = workdir
    self.dir = paths.join(workdir, "arms", arm.name)
    self.path = paths.join(self.dir, workdir_lib.ARM_FILE)
    self.record = workdir_lib.read_json(self.path) or {}

  @property
  def status(self) -> str:
    return self.record.get("status", "new")

  def save(self, **fields) -> None:
    self.record.update(fields)
    paths.makedirs(self.dir, exist_ok=True)
    workdir_lib.write_json(self.path, self.record)

  def config(self) -> ml_collections.ConfigDict:
    """The arm's full config; plans the steps (and saves the plan) on first use."""
    c = arm_config(self.scale, self.root, self.arm)
    c.seed = self.seed
    if self.sources:
      c.data.sources = self.sources
    if self.arm.overrides.get("data.view") == "neural":
      codec.register()  # the neural view loads its compressor through the codec (as main)
    plan = self.record.get("plan")
    if plan is None:
      plan = self._plan(c)
    scales.finalize(c, self.scale, plan["num_steps"])
    c.eval.tasks = eval_tasks(c)
    fit_translation(c)
    return c

  def _plan(self, c: ml_collections.ConfigDict) -> dict[str, Any]:
    t0 = time.perf_counter()
    probe = None
    if self.budget.kind != "steps":
      self.log(f"arm {self.arm.name}: probing the data stream for the {self.budget} budget")
      probe = probe_lib.probe(c, min_documents=scales.SCHEDULES[self.scale].probe_documents)

    def warmup_of(n: int) -> int:
      return scales.mix_warmup_steps(self.scale, n)

    steps = budget_lib.steps_for(self.budget, probe, warmup_of)
    plan = {"budget": str(self.budget), "num_steps": steps,
            "predicted": budget_lib.predicted_totals(probe, steps, warmup_of(steps)),
            "probe": probe.to_dict() if probe is not None else None,
            "probe_s": time.perf_counter() - t0}
    self.save(arm=self.arm.name, description=self.arm.description,
              overrides=self.arm.overrides, scale=self.scale, plan=plan, status="planned")
    self.log(f"arm {self.arm.name}: {steps} steps for budget {self.budget}")
    return plan

  def _add_time(self, key: str, seconds: float) -> None:
    self.record[key] = float(self.record.get(key, 0.0)) + seconds

  def train(self, c: ml_collections.ConfigDict, stop_at_step: int | None) -> None:
    backend = attention_backend(c)
    self.log(f"arm {self.arm.name}: training {c.num_steps} steps in {self.dir} "
             f"(view {c.data.view}, attention {backend})")
    self.save(attention=backend, eval_tasks=c.eval.tasks)
    if c.data.view in views_lib.NEEDS_TOKENIZER and not c.data.tokenizer_path:
      pipeline.resolve_tokenizer(c)  # trained once into W's cache; each arm copies it
    t0 = time.perf_counter()
    try:
      last = trainer.train(c, self.dir, stop_at_step=stop_at_step)
    finally:
      self._add_time("train_wall_s", time.perf_counter() - t0)
      self.save()
    step = int(last.get("step", 0))
    if step < c.num_steps:
      raise Interrupted(f"arm {self.arm.name!r} stopped at step {step} of {c.num_steps} "
                        f"(checkpoint saved in {self.dir}); re-run the same command to resume")
    self.save(status="trained")

  def evaluate(self, c: ml_collections.ConfigDict) -> None:
    self.log(f"arm {self.arm.name}: eval {c.eval.tasks}")
    t0 = time.perf_counter()
    eval_run.evaluate(c, self.dir)
    self._add_time("eval_wall_s", time.perf_counter() - t0)
    self.save(status="done")

  def done(self) -> bool:
    if self.status != "done":
      return False
    tasks = self.record.get("eval_tasks", "bpb").split(",")
    return all(paths.exists(paths.join(self.dir, "eval", f"{t}.json")) for t in tasks)


def _compressors(ablation: catalog.Ablation, arms: Sequence[catalog.Arm], scale: str,
                 workdir: str, log: Callable[[str], Any]) -> dict[str, Any]:
  """The compressor analysis of the arms' views (cached in W/compressors.json)."""
  out = paths.join(workdir, "compressors.json")
  cached = workdir_lib.read_json(out)
  names = tuple(a.overrides["data.view"] for a in arms if not a.skip)
  if cached is not None and tuple(cached.get("config", {}).get("views", ())) == names:
    log(f"{ablation.name}: analysis already in {out}")
    return cached
  c = scales.base_config(scale, workdir)
  tokenizer_path = ""
  if any(n in ("tokenizer", "token_bytes") for n in names):
    tokenizer_path = pipeline.resolve_tokenizer(c)
  neural_dir = next((a.overrides.get("data.neural_dir", "") for a in arms
                     if a.name == "neural" and not a.skip), "")
  small = scale == "ci"
  cfg = compressor_analysis.AnalysisConfig(
      views=names, num_docs=8 if small else c.eval.compressor_docs, seed=c.seed,
      window_chars=200 if small else 1000, max_doc_bytes=4096 if small else 32768,
      tokenizer_path=tokenizer_path, neural_dir=neural_dir, sources=c.data.sources,
      split="all", **sources_lib.SourceOptions.from_config(c).kwargs())
  log(f"{ablation.name}: analysing {', '.join(names)} on {cfg.num_docs} documents")
  summary = compressor_analysis.run(cfg, workdir)
  return summary


def run(ablation: str, scale: str = "ci", workdir: str = "", budget: str | None = None,
        arms: Sequence[str] | str | None = None, neural_dir: str = "",
        log: Callable[[str], Any] = print, *, view: str = "tokenizer", seed: int = 0,
        sources: str = "", preempt_at: tuple[str, int] | None = None) -> Result:
  """Runs (or resumes) an ablation in ``workdir`` and writes its report.

  Args:
    ablation: a name in ``ABLATIONS``.
    scale: one of ``SCALES``.
    workdir: the ablation's directory W.
    budget: ``KIND:AMOUNT`` (``proxyjax.ablation.budget``); None = the ablation's default
      for the scale.
    arms: arm names (a list or comma-separated); None = all. The report also lists arms
      finished earlier in W.
    neural_dir: shards for the ``neural`` arm (skipped without).
    log: where progress lines go.
    view: the proxy view of the ``mixing`` ablation.
    seed: ``config.seed`` of every arm (another seed belongs in another W).
    sources: ``data.sources`` of every arm ('' = the scale's corpus; required at pod scale).
    preempt_at: ``(arm, step)``: stop that arm's training at that step as a SIGTERM
      would (tests); raises ``Interrupted``.

  Returns:
    ``Result`` (paths, rows, Markdown).
  """
  req = workdir_lib.preflight(ablation, scale, workdir, budget, arms, neural_dir, view, seed,
                              sources)
  abl, workdir, selected, parsed = req.ablation, req.workdir, req.arms, req.budget
  budget_str = req.budget_str
  state = req.state()
  paths.makedirs(workdir, exist_ok=True)
  old = workdir_lib.read_json(paths.join(workdir, workdir_lib.STATE_FILE)) or {}
  state["arms"] = old.get("arms", {})
  workdir_lib.write_json(paths.join(workdir, workdir_lib.STATE_FILE), state)
  all_arms = abl.make_arms(req.options)
  skipped = {a.name: a.skip for a in selected if a.skip}

  if abl.kind == "compressors":
    summary = _compressors(abl, selected, scale, workdir, log)
    return ablation_report.write(abl, scale, budget_str, workdir, [], skipped, summary, log=log)

  for arm in selected:
    if arm.skip:
      log(f"arm {arm.name}: skipped ({arm.skip})")
      continue
    a = _Arm(arm, workdir, scale, parsed, log, req.options.seed, req.options.sources)
    if a.done():
      log(f"arm {arm.name}: done earlier, skipped")
      continue
    c = a.config()
    if a.status != "trained":
      stop = preempt_at[1] if preempt_at and preempt_at[0] == arm.name else None
      a.train(c, stop)
    a.evaluate(c)
    state["arms"][arm.name] = "done"
    workdir_lib.write_json(paths.join(workdir, workdir_lib.STATE_FILE), state)

  # The report: the arms finished in W (those asked for and earlier ones), in catalog order.
  report_arms = []
  for arm in all_arms:
    a = _Arm(arm, workdir, scale, parsed, log, req.options.seed, req.options.sources)
    if not arm.skip and a.done():
      report_arms.append((arm, a.dir, a.record))
  return ablation_report.write(abl, scale, budget_str, workdir, report_arms, skipped, None,
                               log=log, seed=req.options.seed)


WorkdirMismatch = workdir_lib.WorkdirMismatch

__all__ = ["Interrupted", "Result", "WorkdirMismatch", "run"]
