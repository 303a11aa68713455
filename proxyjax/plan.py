r"""``--mode=plan``: memory per device of the sharded train step, and whether it fits.

    python -m proxyjax.main --config=configs/14b.py --mode=plan --plan.devices=64 \
        --plan.device_memory_gb=80 [--plan.platform=gpu]

The target platform defaults to the local backend, or to GPUs when a CPU host
plans a model over 1B parameters. Two sources, both reported:

* **analytic** (always): parameters, gradients and Adam moments from the exact
  shard shapes of ``train.step.build`` on an abstract mesh of ``--plan.devices``
  (fp32 master weights + two fp32 moments = 12 bytes per parameter, plus 4 for
  the gradient, divided by the shards), plus an activation estimate for a Llama
  block (below), the logits chunk and the FSDP all-gather buffers.
* **compiled** (when it can be had): XLA's ``memory_analysis()`` of the train
  step compiled ahead of time with the real shardings, on local devices of the
  target platform (fake CPU devices on a CPU host), or on a TPU topology
  (``--plan.topology=v5p:4x4x4``, needs libtpu). ``--plan.compile=auto`` skips
  it for a foreign target platform, too few devices, or models over 1B
  parameters on CPU (minutes of compile that measure XLA:CPU, not the
  accelerator); the report says which source decided "fits".

Activations saved per block for the backward pass, per token (``b`` bytes of
the compute dtype; head/MLP widths divided by the tensor axis where sharded):

    none  b * (4 D + 2 H E + 2 K E + 3 F)     x, norm outs x2, residual, q k v o,
                                              gate, up, silu(gate)*up
          + H T (4 + b) per query with the dense XLA attention (probabilities),
            or 4 H (log-sum-exp) with a flash kernel (pallas_gpu/tpu, cudnn)
    dots  b * (3 D + (H + 2 K) E + 2 F)       block input and the matmul outputs
    full  b * D                               block input only; one block is
                                              recomputed at a time (+1 "none" block)

These are estimates (XLA fuses, reuses and sometimes keeps more); trust the
compiled analysis where there is one, and keep the default 10% headroom.

Memory per device, unless ``--plan.device_memory_gb``: an accelerator's
``memory_stats()["bytes_limit"]`` (the smallest of the local devices); on CPU the
host's available RAM (``MemAvailable``, capped by a cgroup limit) divided by the
local CPU devices, which share it (8 with ``--xla_force_host_platform_device_count=8``).

``--mode=train`` calls ``check_fits`` before it builds anything: the same analytic
estimate for the local devices, refused in one line when it exceeds the usable memory
(``--config.check_fits=false`` skips it). A config without a corpus
(``data.sources`` = ``NO_CORPUS``) is planned as is: memory needs no data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType

from proxyjax import parallel, views
from proxyjax import vocab as vocab_lib
from proxyjax.config import NO_CORPUS
from proxyjax.data import packing, pipeline
from proxyjax.errors import ConfigError, UserError
from proxyjax.eval import validation
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import step as step_lib

GIB = 1 << 30
CPU_COMPILE_MAX_PARAMS = 1_000_000_000
FLASH_BACKENDS = ("pallas_gpu", "pallas_tpu", "cudnn")
AUTO_BACKEND = {"gpu": "pallas_gpu", "tpu": "pallas_tpu", "cpu": "xla"}


@dataclasses.dataclass(frozen=True)
class Options:
  devices: int | None = None  # default: the local device count
  device_memory_gb: float | None = None  # GiB per device; default: the device's own limit
  platform: str | None = None  # cpu, gpu, tpu; default: the local backend
  compile: str = "auto"  # auto, always, never
  topology: str | None = None  # TPU topology name for ahead-of-time compilation
  local_device_count: int | None = None  # fake CPU devices (default: devices)
  usable_fraction: float = 0.9  # share of device memory the plan may fill


def prepare_cpu_devices(opts: Options) -> None:
  """Fake CPU devices for compiling on a CPU host; call before any device use."""
  n = opts.local_device_count or opts.devices
  if n:
    jax.config.update("jax_num_cpu_devices", int(n))


def validate_options(opts: Options) -> None:
  """Fails on a device count or memory that cannot be planned for, naming the flag."""
  for name, value in (("plan.devices", opts.devices),
                      ("local_device_count", opts.local_device_count)):
    if value is not None and value < 1:
      raise ConfigError(name, f"must be >= 1 (or unset: the local device count), got {value}")
  if opts.device_memory_gb is not None and not opts.device_memory_gb > 0:
    raise ConfigError("plan.device_memory_gb", f"must be > 0, got {opts.device_memory_gb}")


def main(config, opts: Options) -> dict[str, Any]:
  """``--mode=plan``: prints the report, returns it."""
  validate_options(opts)
  prepare_cpu_devices(opts)
  report = make_plan(config, opts)
  print(format_report(report))
  sys.stdout.flush()
  return report


def plan_vocab(config):
  """The configured vocabulary, without training a tokenizer (assumed size if needed)."""
  d = config.data
  if d.view in views.NEEDS_TOKENIZER and not d.tokenizer_path:
    alphabet = d.tokenizer_vocab_size if d.view == "tokenizer" else 256
    note = (f"vocabulary assumed from data.tokenizer_vocab_size={d.tokenizer_vocab_size} "
            "(no data.tokenizer_path; the trained tokenizer may differ slightly)")
    return vocab_lib.for_view(alphabet, separate_embedding=d.separate_embedding,
                              shared_ids=d.get("shared_ids", False)), note
  return pipeline.build_vocab(config), None


def make_plan(config, opts: Options) -> dict[str, Any]:
  """The report: sizes in bytes per device, the sources, and the verdict."""

  validation.validate(_with_some_sources(config))
  validate_options(opts)
  if opts.compile not in ("auto", "always", "never"):
    raise ConfigError("plan.compile", f"must be auto, always or never, got {opts.compile!r}")
  local_platform = jax.default_backend()
  platform = opts.platform or local_platform
  devices = int(opts.devices or jax.device_count())
  shape = parallel.mesh_shape(config.mesh.shape, devices)
  parallel.hybrid_dcn_shape(config.mesh.dcn_shape, shape)  # validates
  notes, problems = [], []
  vocab, note = plan_vocab(config)
  if note:
    notes.append(note)
  model_cfg = transformer.ModelConfig.from_config(config, vocab)
  abstract_mesh = AbstractMesh(shape, parallel.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  setup = step_lib.build(config, model_cfg, abstract_mesh)
  mesh_sizes = dict(zip(parallel.MESH_AXES, shape))
  batch_shards = mesh_sizes["data"] * mesh_sizes["fsdp"]
  if config.batch_size % batch_shards:
    problems.append(f"batch_size {config.batch_size} is not divisible by data*fsdp = "
                    f"{batch_shards}: the batch cannot be sharded")
  rows = max(config.batch_size // batch_shards, 1)

  n_params = transformer.count_params(setup.abstract_state["params"])
  if opts.platform is None and platform == "cpu" and n_params > CPU_COMPILE_MAX_PARAMS:
    # Nobody trains a ladder rung on CPUs: a CPU host planning one plans for GPUs.
    platform = "gpu"
    notes.append(f"planning for {devices} GPUs ({n_params / 1e9:.1f}B parameters on a CPU "
                 "host); pass --plan.platform=tpu or cpu for another target")
  params = _sharded_bytes(setup.abstract_state["params"], setup.state_shardings["params"])
  opt = _sharded_bytes(setup.abstract_state["opt_state"], setup.state_shardings["opt_state"])
  backend = model_cfg.attention
  if backend == "auto":
    backend = AUTO_BACKEND.get(platform, "xla")
    if platform == "cpu" and opts.platform is None:
      notes.append("attention 'auto' is the dense XLA kernel on CPU (T x T probabilities); "
                   "pass --plan.platform=gpu or tpu to plan for an accelerator")
  acts = activation_bytes(model_cfg, rows, config.seq_len, mesh_sizes["tensor"], setup.rules,
                          backend)
  transient = transient_bytes(model_cfg, rows, config.seq_len, mesh_sizes, setup.rules, backend)
  remat = model_cfg.remat
  analytic_total = params + params + opt + acts[remat] + transient  # params, grads, Adam
  report: dict[str, Any] = {
      "config": {"d_model": model_cfg.d_model, "n_layers": model_cfg.n_layers,
                 "seq_len": config.seq_len, "batch_size": config.batch_size,
                 "vocab_size": model_cfg.vocab_size, "dtype": str(np.dtype(model_cfg.dtype)),
                 "remat": remat, "attention": backend, "rules": config.mesh.rules},
      "platform": platform, "devices": devices, "mesh": mesh_sizes,
      "dcn_shape": list(config.mesh.dcn_shape), "rows_per_device": rows,
      "params": n_params,
      "params_bytes_total": n_params * np.dtype(model_cfg.param_dtype).itemsize,
      "params_bytes": params, "grads_bytes": params, "opt_bytes": opt,
      "activations_bytes": acts, "transient_bytes": transient,
      "analytic_total_bytes": analytic_total, "compiled": None,
      "notes": notes, "problems": problems,
  }

  compiled, why = None, None
  if problems:
    why = "skipped: " + problems[0]
  elif opts.compile == "never":
    why = "skipped (--plan.compile=never)"
  else:
    compiled, why = _compiled_analysis(config, model_cfg, shape, devices, platform,
                                       local_platform, n_params, opts)
  report["compiled"] = compiled
  if why:
    notes.append(f"compiled memory analysis {why}")

  if opts.device_memory_gb:
    memory = opts.device_memory_gb * GIB
  else:
    memory, where = local_device_memory(platform)
    if memory:
      notes.append(f"device memory: {where}")
  report["device_memory_bytes"] = memory
  report["usable_fraction"] = opts.usable_fraction
  report["usable_bytes"] = int(memory * opts.usable_fraction) if memory else None
  source = "compiled" if compiled else "analytic"
  needed = compiled["peak_bytes"] if compiled else analytic_total
  report["source"] = source
  report["needed_bytes"] = needed
  if problems:
    report["fits"] = False
  elif memory:
    report["fits"] = bool(needed <= report["usable_bytes"])
  else:
    report["fits"] = None
    notes.append("pass --plan.device_memory_gb to decide whether it fits")
  return report


def _sharded_bytes(tree, shardings) -> int:
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    shard = sharding.shard_shape(leaf.shape) if leaf.shape else ()
    total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
  return int(total)


def _split(n: int, ways: int, sharded: bool) -> float:
  """Per-device width of an axis of size n over ``ways`` devices (replicated if not divisible)."""
  return n / ways if sharded and ways > 1 and n % ways == 0 else n


def activation_bytes(cfg, rows: int, seq: int, tensor: int, rules: dict,
                     backend: str) -> dict[str, int]:
  """Saved activations per device for remat ``none``/``dots``/``full`` (see module doc)."""
  b = np.dtype(cfg.dtype).itemsize
  d, e, layers = cfg.d_model, cfg.head_dim, cfg.n_layers
  h = _split(cfg.n_heads, tensor, rules.get("heads") == "tensor")
  k = _split(cfg.n_kv_heads, tensor, rules.get("heads") == "tensor")
  f = _split(cfg.d_ff, tensor, rules.get("mlp") == "tensor")
  tokens = rows * seq
  if backend in FLASH_BACKENDS:
    attn = tokens * h * 4  # log-sum-exp per query and head
  else:
    attn = tokens * h * seq * (4 + b)  # fp32 probabilities + their compute-dtype copy
  block_none = tokens * b * (4 * d + 2 * h * e + 2 * k * e + 3 * f) + attn
  block_dots = tokens * b * (3 * d + (h + 2 * k) * e + 2 * f)
  block_full = tokens * b * d
  return {"none": int(layers * block_none),
          "dots": int(layers * block_dots + block_none),
          "full": int(layers * block_full + block_none)}


def transient_bytes(cfg, rows: int, seq: int, mesh: dict, rules: dict, backend: str) -> int:
  """Logits chunk, final hidden states, dense mask and FSDP gather buffers per device."""
  b = np.dtype(cfg.dtype).itemsize
  tensor = mesh["tensor"]
  vocab = _split(cfg.num_pred_heads * cfg.vocab_size, tensor, rules.get("vocab") == "tensor")
  vocab += cfg.num_raw_pred_heads * 320  # the look-ahead raw heads' logits
  chunk = min(cfg.logits_chunk, seq)
  if seq % chunk:
    chunk = math.gcd(seq, chunk)
  total = 2 * rows * chunk * vocab * 4  # fp32 logits and their gradient, one chunk
  total += 2 * rows * seq * cfg.d_model * b  # final hidden states and their gradient
  if backend not in ("pallas_gpu", "pallas_tpu"):
    total += rows * seq * seq  # dense boolean mask
  if mesh["fsdp"] > 1 and rules.get("embed") == "fsdp":
    h = _split(cfg.n_heads, tensor, rules.get("heads") == "tensor")
    k = _split(cfg.n_kv_heads, tensor, rules.get("heads") == "tensor")
    f = _split(cfg.d_ff, tensor, rules.get("mlp") == "tensor")
    layer = cfg.d_model * ((2 * h + 2 * k) * cfg.head_dim + 3 * f)
    # Two gathered blocks in flight (prefetch) in the compute dtype + one block's
    # fp32 gradient before its reduce-scatter; the head likewise.
    total += layer * (2 * b + 4) + cfg.d_model * vocab * (b + 4)
  return int(total)


def _with_some_sources(config):
  """``config``, or a copy with a placeholder corpus when none is chosen (``NO_CORPUS``):
  the data checks then pass, and nothing in a plan reads the documents."""
  if config.data.sources.strip() != NO_CORPUS:
    return config
  config = config.copy_and_resolve_references()
  config.data.sources = "stdlib"
  return config


def host_available_bytes() -> int | None:
  """RAM this process may still take: ``MemAvailable`` (else free pages), capped by the
  cgroup's memory limit minus its usage (a container's limit is not in /proc/meminfo)."""
  avail = None
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          avail = int(line.split()[1]) * 1024
          break
  except (OSError, ValueError, IndexError):
    pass
  if avail is None:
    try:
      avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
      return None
  for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                  "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    try:
      with open(limit_file, encoding="ascii") as f:
        limit = f.read().strip()
      with open(usage_file, encoding="ascii") as f:
        usage = int(f.read().strip())
    except (OSError, ValueError):
      continue
    if limit.isdigit() and int(limit) < (1 << 60):  # 'max' or a huge number: no limit
      avail = min(avail, max(int(limit) - usage, 0))
    break
  return avail


def local_device_memory(platform: str) -> tuple[int | None, str]:
  """(bytes per local device of ``platform``, where the number comes from), or (None, why)."""
  if platform != jax.default_backend():
    return None, f"{platform} is not the local backend"
  devices = jax.local_devices()
  if platform == "cpu":
    avail = host_available_bytes()
    if not avail:
      return None, "the host's available RAM is unknown"
    n = len(devices)
    return avail // n, (f"the host's {avail / GIB:.2f} GiB of available RAM over {n} local "
                        f"cpu device{'s' if n > 1 else ''}")
  limits = []
  for d in devices:
    try:
      limits.append((d.memory_stats() or {}).get("bytes_limit"))
    except Exception:  # pylint: disable=broad-except
      limits.append(None)
  if not limits or None in limits:
    return None, f"the {platform} devices report no memory limit"
  return int(min(limits)), f"the smallest bytes_limit of {len(limits)} local {platform} devices"


def check_fits(config) -> dict[str, Any] | None:
  """``--mode=train``'s guard, before anything is built: the analytic ``--mode=plan``
  estimate for the local devices (seconds even for 14B: shapes only) must fit the usable
  memory (90%), else a ``UserError`` of one line with both numbers. Returns the report,
  or None when skipped (``config.check_fits`` False, or the memory is unknown)."""
  if not config.get("check_fits", True):
    return None
  platform = jax.default_backend()
  memory, where = local_device_memory(platform)
  if not memory:
    return None
  report = make_plan(config, Options(platform=platform, compile="never",
                                     device_memory_gb=memory / GIB))
  needed, usable = report["needed_bytes"], report["usable_bytes"]
  if needed <= usable:
    return report
  c, n = report["config"], report["devices"]
  state = report["params_bytes"] + report["grads_bytes"] + report["opt_bytes"]
  raise UserError(
      f"the {report['params'] / 1e9:.2f}B-parameter model does not fit: --mode=plan estimates "
      f"{needed / GIB:.2f} GiB per device (parameters, gradients and Adam moments "
      f"{state / GIB:.2f} GiB, activations and buffers {(needed - state) / GIB:.2f} GiB; "
      f"{n} {platform} device{'s' if n > 1 else ''}, {report['rows_per_device']} rows of "
      f"{c['seq_len']} each, remat {c['remat']}) but {usable / GIB:.2f} GiB per device is "
      f"usable ({report['usable_fraction']:.0%} of {memory / GIB:.2f} GiB per device: {where}); run the "
      "same command with --mode=plan [--plan.devices=N --plan.device_memory_gb=G] to size "
      "the model, batch and mesh, or pass --config.check_fits=false to start anyway")


def _compiled_analysis(config, model_cfg, shape, devices, platform, local_platform,
                       n_params, opts):
  """(compiled dict or None, note) from AOT compilation of the sharded train step."""
  force = opts.compile == "always"
  if opts.topology:
    try:
      from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
      target = list(topologies.get_topology_desc(opts.topology, platform="tpu").devices)
    except Exception as e:  # pylint: disable=broad-except
      return None, (f"unavailable: TPU topology {opts.topology!r} cannot be built here "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")
    if len(target) != devices:
      return None, f"skipped: topology {opts.topology} has {len(target)} devices, not {devices}"
    where = f"TPU topology {opts.topology}"
  else:
    if platform != local_platform:
      return None, (f"unavailable: target {platform} is not the local backend "
                    f"({local_platform}); analytic estimate only")
    target = jax.devices()
    if len(target) < devices:
      return None, (f"unavailable: {len(target)} local {local_platform} devices < {devices}; "
                    "analytic estimate only")
    target = target[:devices]
    if platform == "cpu" and n_params > CPU_COMPILE_MAX_PARAMS and not force:
      return None, (f"skipped: {n_params / 1e9:.1f}B parameters on CPU (slow compile that "
                    "measures XLA:CPU; --plan.compile=always forces it)")
    where = f"{devices} local {platform} devices"
  mesh = parallel.make_mesh(shape, target, dcn_shape=config.mesh.dcn_shape)
  real = step_lib.build(config, model_cfg, mesh)
  state = ckpt_lib.abstract_with_shardings(real.abstract_state, real.state_shardings)
  batch = abstract_batch(config, mesh)
  try:
    compiled = jax.jit(real.train_step, donate_argnums=0).lower(state, batch).compile()
    stats = compiled.memory_analysis()
  except Exception as e:  # pylint: disable=broad-except
    return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
  if stats is None:
    return None, f"unavailable: the {platform} backend reports no memory analysis"
  out = {k: int(getattr(stats, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "alias", "temp", "generated_code")}
  out["peak_bytes"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  out["where"] = where
  return out, None


def abstract_batch(config, mesh) -> dict:
  """ShapeDtypeStructs of one global batch, sharded like ``parallel.global_batch``."""
  b, t = config.batch_size, config.seq_len
  p = sum(packing.head_counts(config.model, warn=False))  # H main + R raw-head target columns
  out = {}
  for name in ("inputs", "targets", "segment_ids", "positions"):
    shp = (b, t, p) if name == "targets" and p > 1 else (b, t)
    out[name] = jax.ShapeDtypeStruct(shp, np.int32,
                                     sharding=parallel.batch_sharding(mesh, len(shp)))
  return out


def _gib(n: int | float | None) -> str:
  return "n/a" if n is None else f"{n / GIB:8.2f} GiB"


def format_report(r: dict[str, Any]) -> str:
  c, acts = r["config"], r["activations_bytes"]
  mesh = " x ".join(f"{k}={v}" for k, v in r["mesh"].items())
  lines = [
      f"proxyjax plan: {r['params'] / 1e9:.3f}B parameters, d_model {c['d_model']}, "
      f"{c['n_layers']} layers, vocab {c['vocab_size']}, seq {c['seq_len']}, "
      f"batch {c['batch_size']}",
      f"  target: {r['devices']} {r['platform']} devices, mesh {mesh} (dcn {r['dcn_shape']}), "
      f"rules {c['rules']}, {r['rows_per_device']} rows/device, attention {c['attention']}, "
      f"{c['dtype']} compute",
      "  per device (analytic):",
      f"    parameters (fp32)         {_gib(r['params_bytes'])}   "
      f"(all devices: {_gib(r['params_bytes_total'])})",
      f"    gradients (fp32)          {_gib(r['grads_bytes'])}",
      f"    Adam moments (2 x fp32)   {_gib(r['opt_bytes'])}",
      f"    activations, remat full   {_gib(acts['full'])}",
      f"    activations, remat dots   {_gib(acts['dots'])}",
      f"    activations, remat none   {_gib(acts['none'])}",
      f"    logits/mask/FSDP buffers  {_gib(r['transient_bytes'])}",
      f"    total (remat {c['remat']})".ljust(30) + f"{_gib(r['analytic_total_bytes'])}",
  ]
  comp = r["compiled"]
  if comp:
    lines += [
        f"  compiled ({comp['where']}): arguments {_gib(comp['argument'])}, outputs "
        f"{_gib(comp['output'])}, aliased {_gib(comp['alias'])}, temporaries "
        f"{_gib(comp['temp'])}",
        f"    peak = arguments + outputs - aliased + temporaries = {_gib(comp['peak_bytes'])}",
    ]
  for note in r["notes"]:
    lines.append(f"  note: {note}")
  for problem in r["problems"]:
    lines.append(f"  PROBLEM: {problem}")
  if r["fits"] is None:
    verdict = "unknown (no device memory given)"
  else:
    verdict = "FITS" if r["fits"] else "DOES NOT FIT"
  line = f"  {verdict}: needs {_gib(r['needed_bytes']).strip()} per device ({r['source']})"
  if r["usable_bytes"]:
    line += (f" of {_gib(r['usable_bytes']).strip()} usable "
             f"({r['usable_fraction']:.0%} of {_gib(r['device_memory_bytes']).strip()})")
  lines.append(line)
  return "\n".join(lines)
