"""Sampling from a trained run, streamed as it is generated (``python -m proxyjax.sample``).

``run(options, out, err)`` restores a checkpoint's parameters (``load_params``: the
run's mesh and logical-axis rules, so a big model decodes sharded like training),
feeds the prompt through the interface eval generation uses (raw bytes, or the
tokenizer for a tokenizer-only baseline), and writes each sample's continuation to
``out`` (bytes) chunk by chunk while the decode loop runs
(``proxyjax.eval.generate.Stream``): ids become bytes, the bytes go through an
incremental UTF-8 decoder (a character split across chunks prints whole; invalid
bytes print as U+FFFD), text that could still begin a stop string is held back until
it cannot, and the text is written as UTF-8. The text equals what eval generation
(``generate.generate``) returns for the prompt and sampling settings: greedy always,
sampled for sample 1 and ``eval.n_samples=1`` (the same PRNG key, ``--seed``).
``err`` gets warnings (a prompt cut to the context) and the bytes/s at the end.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import os
import time
import warnings
from typing import BinaryIO, Iterable, Iterator, Sequence, TextIO

import jax
import jax.numpy as jnp
import ml_collections

from proxyjax import rundir
from proxyjax import vocab as vocab_lib
from proxyjax.errors import UserError
from proxyjax.eval import generate as gen
from proxyjax.eval import run as eval_run
from proxyjax.eval import speculative as spec_lib
from proxyjax.train import load as load_lib


@dataclasses.dataclass(frozen=True)
class Options:
  """What to sample (the command line's flags)."""
  workdir: str
  prompt: bytes = b""
  step: int | None = None
  max_new_tokens: int = 256
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0
  stop: tuple[str, ...] = ()
  num_samples: int = 1
  speculative: bool = False
  draft_len: int = 0  # with speculative: ids drafted per forward at most (0 = all heads)
  dtype: str = ""  # the compute dtype ('' = the run's), e.g. float32 on CPU


def check(options: Options) -> None:
  """Refuses bad values, naming the flag (``UserError``)."""
  if options.max_new_tokens < 1:
    raise UserError(f"--max_new_tokens must be at least 1, got {options.max_new_tokens}")
  if options.temperature < 0.0:
    raise UserError(f"--temperature must be >= 0 (0 = greedy), got {options.temperature}")
  if not 0.0 < options.top_p <= 1.0:
    raise UserError(f"--top_p must be in (0, 1], got {options.top_p}")
  if options.num_samples < 1:
    raise UserError(f"--num_samples must be at least 1, got {options.num_samples}")
  if options.draft_len < 0:
    raise UserError(f"--draft_len must be >= 0 (0 = every look-ahead head), got "
                    f"{options.draft_len}")
  if options.step is not None and options.step < 0:
    raise UserError(f"--step must be >= 0, got {options.step}")
  if options.dtype:
    try:
      jnp.dtype(options.dtype)
    except TypeError as e:
      raise UserError(f"--dtype={options.dtype} is not a dtype (e.g. float32, bfloat16)") from e


def parse_stops(values: Sequence[str]) -> tuple[str, ...]:
  r"""Stop strings from ``--stop`` values: each a comma-separated list; ``\n``, ``\t``,
  ``\r``, ``\\`` and ``\,`` (a comma inside a stop string) are escapes."""
  escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", ",": ","}
  stops = []
  for value in values:
    current, chars = [], iter(value)
    for c in chars:
      if c == "\\":
        nxt = next(chars, "")
        current.append(escapes.get(nxt, "\\" + nxt))
      elif c == ",":
        stops.append("".join(current))
        current = []
      else:
        current.append(c)
    stops.append("".join(current))
  return tuple(s for s in stops if s)


class StopFilter:
  """Text in, the text before the earliest stop string out (``truncate_completion`` of
  the whole text), holding back what could still start a stop."""

  def __init__(self, stops: Sequence[str]):
    self.stops = [s for s in stops if s]
    self.pending = ""
    self.stopped = False

  def _partial_start(self) -> int | None:
    """The first index from which ``pending`` is a proper prefix of some stop."""
    longest = max((len(s) for s in self.stops), default=0)
    for i in range(max(0, len(self.pending) - longest + 1), len(self.pending)):
      tail = self.pending[i:]
      if any(len(tail) < len(s) and s.startswith(tail) for s in self.stops):
        return i
    return None

  def feed(self, text: str, final: bool = False) -> str:
    """The text now known to come before any stop (all of it when ``final``)."""
    if self.stopped:
      return ""
    self.pending += text
    found = [j for j in (self.pending.find(s) for s in self.stops) if j >= 0]
    first = min(found) if found else None
    partial = None if final else self._partial_start()
    if first is not None and (partial is None or first <= partial):
      self.stopped = True
      out, self.pending = self.pending[:first], ""
      return out
    cut = len(self.pending) if partial is None else partial
    out, self.pending = self.pending[:cut], self.pending[cut:]
    return out


class IdsToBytes:
  """Generated ids -> bytes, as ``Interface.decode`` reads a whole row, chunk by chunk."""

  def __init__(self, interface: gen.Interface):
    self.interface = interface
    self.ids: list[int] = []
    self.emitted = b""
    self.ended = False

  def feed(self, ids: Sequence[int]) -> bytes:
    if self.ended:
      return b""
    ids = [int(i) for i in ids]
    stop = [k for k, i in enumerate(ids) if i in self.interface.end_ids or i == vocab_lib.PAD]
    if stop:
      ids, self.ended = ids[:stop[0]], True
    if self.interface.name == "raw":  # bytes one id at a time
      return self.interface.decode(ids)
    self.ids.extend(ids)  # a tokenizer: the new suffix of the whole decoding
    text = self.interface.decode(self.ids)
    new = text[len(self.emitted):] if text.startswith(self.emitted) else b""
    self.emitted = text
    return new


def texts(chunks: Iterable[Sequence[int]], interface: gen.Interface,
          stop_strings: Sequence[str]) -> Iterator[tuple[bytes, str]]:
  """(the chunk's bytes, the text to print) per chunk of generated ids: the row's bytes
  up to its end, decoded incrementally (U+FFFD for invalid bytes; a character split
  over chunks once whole), the text before the earliest stop string."""
  to_bytes, stops = IdsToBytes(interface), StopFilter(stop_strings)
  utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
  for ids in chunks:
    data = to_bytes.feed(ids)
    yield data, stops.feed(utf8.decode(data))
  yield b"", stops.feed(utf8.decode(b"", final=True), final=True)


def _isatty(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):
    return False


def _same_destination(out, err) -> bool:
  """``out`` and ``err`` end in one place (a terminal, or ``2>&1`` into one file)."""
  if _isatty(out) and _isatty(err):
    return True
  try:
    a, b = os.fstat(out.fileno()), os.fstat(err.fileno())
  except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
    return False
  return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write(out: BinaryIO, text: str) -> None:
  if text:
    out.write(text.encode("utf-8"))
    out.flush()


def _load(options: Options) -> load_lib.LoadedParams:
  """The checkpoint's parameters (``options.dtype``: with that compute dtype)."""
  config = None
  if options.dtype and load_lib.checkpoint_steps(options.workdir):
    config = load_lib.recorded_config(options.workdir)
    if config is None:
      raise UserError(f"--dtype needs the run's {rundir.RUN_CONFIG_FILE} in {options.workdir}")
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.dtype = options.dtype
  return load_lib.load_params(options.workdir, options.step, config=config)


def interface_of(loaded: load_lib.LoadedParams) -> gen.Interface:
  """The prompt interface eval generation uses for this run (``Context.prompt_interface``)."""
  ctx = eval_run.Context(loaded.config, loaded.graphdef, loaded.params, loaded.step,
                         mesh=loaded.mesh, rules=loaded.rules, vocab=loaded.vocab)
  return ctx.prompt_interface()


def run(options: Options, out: BinaryIO, err: TextIO,
        loaded: load_lib.LoadedParams | None = None) -> dict:
  """Samples ``options.num_samples`` continuations, streamed to ``out``; returns stats
  (bytes, seconds, bytes_per_s, ids, forwards, compile_s)."""
  check(options)
  loaded = loaded if loaded is not None else _load(options)
  interface = interface_of(loaded)
  context_len = int(loaded.config.seq_len)
  if options.speculative and spec_lib.num_drafts(loaded.model_cfg, interface.allowed) == 0:
    print(f"sample: warning: the model has no look-ahead heads to draft with "
          f"(model.num_pred_heads={loaded.model_cfg.num_pred_heads}, "
          f"model.num_raw_pred_heads={loaded.model_cfg.num_raw_pred_heads}): "
          "--speculative decodes one id per forward", file=err, flush=True)
  cfg = gen.SamplingConfig(max_new_tokens=options.max_new_tokens,
                           temperature=options.temperature, top_p=options.top_p, n=1,
                           seed=options.seed, stop_strings=tuple(options.stop),
                           speculative=options.speculative, draft_len=options.draft_len)
  key = jax.random.PRNGKey(options.seed)
  stats = {"bytes": 0, "seconds": 0.0, "ids": 0, "forwards": 0, "compile_s": 0.0}
  prompt_ids = interface.encode(options.prompt)
  for i in range(options.num_samples):
    key, sub = jax.random.split(key)  # sample 1: the key of eval's first batch
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      stream = gen.Stream(loaded.graphdef, loaded.params, prompt_ids, cfg, interface=interface,
                          context_len=context_len, mesh=loaded.mesh, rules=loaded.rules,
                          key=sub)
    if i == 0:
      for w in caught:
        print(f"sample: warning: {w.message}", file=err, flush=True)
    stats["compile_s"] += stream.compile()
    if options.num_samples > 1:
      _write(out, f"{'' if i == 0 else chr(10)}--- sample {i + 1}/{options.num_samples} ---\n")
    t0 = time.perf_counter()
    for data, text in texts((ids[0] for ids in stream), interface, cfg.stop_strings):
      stats["bytes"] += len(data)
      _write(out, text)
    stats["seconds"] += time.perf_counter() - t0
    stats["ids"] += stream.steps
    stats["forwards"] += stream.forwards
  if _same_destination(out, err):  # the stats on a line of their own after the text
    print(file=err)
  stats["bytes_per_s"] = stats["bytes"] / max(stats["seconds"], 1e-9)
  per_forward = stats["ids"] / max(stats["forwards"], 1)
  print(f"sample: {stats['bytes']} bytes in {stats['seconds']:.2f} s: "
        f"{stats['bytes_per_s']:.1f} bytes/s ({stats['ids']} ids in {stats['forwards']} "
        f"forwards, {per_forward:.2f} per forward; step {loaded.step}; compile "
        f"{stats['compile_s']:.1f} s not counted)", file=err, flush=True)
  return stats


def read_prompt(prompt: str | None, prompt_file: str | None, stdin: BinaryIO) -> bytes:
  """The prompt's bytes: ``--prompt`` (UTF-8; bytes that were not UTF-8 on the command
  line are kept), else ``--prompt_file`` (``-`` = stdin), else stdin; files are fed as is."""
  if prompt is not None and prompt_file is not None:
    raise UserError("give --prompt or --prompt_file, not both")
  if prompt is not None:
    return prompt.encode("utf-8", "surrogateescape")
  if prompt_file is None or prompt_file == "-":
    return stdin.read()
  try:
    with open(prompt_file, "rb") as f:
      return f.read()
  except OSError as e:
    raise UserError(f"cannot read --prompt_file={prompt_file}: "
                    f"{e.strerror or type(e).__name__}") from e
