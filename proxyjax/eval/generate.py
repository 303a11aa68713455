"""Incremental decoding with a KV cache, through the model's interface (SPEC §7).

Prompts are ``[BOS, <raw>, prompt bytes...]`` (no ``</raw>``) through the raw
interface (``RAW``), or the tokenizer's ids formatted as the run was trained
(``tokens_interface``: ``[BOS, ids...]`` in vanilla mode, ``[BOS, <comp>, ids...]``
otherwise), left-padded to a common length (pad = segment 0, invisible). Prefill
and the decode steps are the model's (``proxyjax.model.decode``: the training
blocks with a KV cache); this module holds the prompt interfaces, sampling and
stop handling. Decoding is restricted to the interface's ids (raw: ids < 320,
raw bytes and specials; tokens: the tokenizer's ids, EOS and ``</comp>``); its
end ids (``</raw>`` or ``</comp>``, EOS) or a completed stop string end a sample
inside the decode loop (a batch stops when all its rows have ended), and the
host truncates at stop strings (``codegen.truncate_completion``: the earliest
occurrence of any stop string wins). ``n`` samples per prompt are decoded as
one batch. Greedy (temperature 0) or temperature + top-p sampling, seeded.

The model's context (``context_len``, the training ``seq_len``) is never
exceeded: a prompt longer than the context is cut from the left (its format
prefix, e.g. ``[BOS, <raw>]``, kept) with a warning, and a row stops once its
last token sits at the last position of the context (a warning says how many
rows stopped there before ``max_new_tokens``).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from proxyjax import parallel
from proxyjax import vocab as vocab_lib
from proxyjax.eval import codegen  # stop-string truncation (one implementation, JAX-free)
from proxyjax.model import decode as decode_lib
from proxyjax.model import transformer as tf

NEG = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 2048  # eval.max_new_tokens (HumanEval has solutions over 512 bytes)
  temperature: float = 0.0  # 0 = greedy
  top_p: float = 1.0
  n: int = 1  # samples per prompt
  seed: int = 0
  stop_strings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Interface:
  """How prompts become ids and generated ids become bytes.

  Attributes:
    name: ``raw`` or ``tokens``.
    prefix: the ids every prompt starts with (kept when a prompt is cut).
    allowed: the id ranges ``[lo, hi)`` the decoder may emit.
    end_ids: ids that end a sample.
    view: the tokenizer view (tokens only).
    vocab: its id layout (tokens only).
  """

  name: str = "raw"
  prefix: tuple[int, ...] = (vocab_lib.BOS, vocab_lib.RAW_OPEN)
  allowed: tuple[tuple[int, int], ...] = ((vocab_lib.EOS, vocab_lib.RAW_VOCAB_SIZE),)
  end_ids: tuple[int, ...] = (vocab_lib.EOS, vocab_lib.RAW_CLOSE)
  view: Any = None
  vocab: vocab_lib.Vocab | None = None

  def body_ids(self, data: bytes) -> np.ndarray:
    """The ids of ``data`` in this interface (no prefix)."""
    if self.name == "raw":
      return vocab_lib.bytes_to_ids(data)
    return self.vocab.symbols_to_ids(self.view.encode(data))

  def encode(self, prompt: bytes) -> np.ndarray:
    return np.concatenate([np.asarray(self.prefix, np.int32),
                           self.body_ids(prompt)]).astype(np.int32)

  def decode(self, ids: Sequence[int]) -> bytes:
    """Generated ids -> bytes, stopping at an end id or PAD; ids outside the body dropped."""
    kept = []
    lo, hi = self.allowed[-1]
    for i in ids:
      i = int(i)
      if i in self.end_ids or i == vocab_lib.PAD:
        break
      if (vocab_lib.BYTE_OFFSET if self.name == "raw" else lo) <= i < hi:
        kept.append(i)
    if self.name == "raw":
      return vocab_lib.ids_to_bytes(kept)
    if not kept:
      return b""
    return self.view.decode(self.vocab.ids_to_symbols(np.asarray(kept, np.int32)))

  def stop_ids(self, stop: str) -> tuple[int, ...]:
    """``stop`` as ids (tokens: its tokenization alone; the loop's stop is then only an
    early exit, the host's truncation at the text decides)."""
    try:
      return tuple(int(i) for i in self.body_ids(stop.encode("utf-8")))
    except Exception:  # pylint: disable=broad-except  (a stop the tokenizer cannot encode)
      return ()


RAW = Interface()


def tokens_interface(view, vocab: vocab_lib.Vocab, sentinels: bool) -> Interface:
  """The tokenizer interface: ``[BOS, (<comp>,) ids...]``, decoding the view's ids, EOS and
  (with sentinels) ``</comp>``; completions decoded with the tokenizer."""
  lo, hi = vocab.compressed_offset, vocab.num_ids
  if sentinels:
    return Interface("tokens", (vocab_lib.BOS, vocab_lib.COMP_OPEN),
                     ((vocab_lib.EOS, vocab_lib.EOS + 1),
                      (vocab_lib.COMP_CLOSE, vocab_lib.COMP_CLOSE + 1), (lo, hi)),
                     (vocab_lib.EOS, vocab_lib.COMP_CLOSE), view, vocab)
  return Interface("tokens", (vocab_lib.BOS,), ((vocab_lib.EOS, vocab_lib.EOS + 1), (lo, hi)),
                   (vocab_lib.EOS,), view, vocab)


def restricted_logits(model: tf.Transformer, h_BxD, allowed: tuple[tuple[int, int], ...]):
  """Head-0 logits restricted to the id ranges ``allowed``."""
  logits = model.logits(h_BxD[:, None])[:, 0, 0]
  ids = jnp.arange(logits.shape[-1])
  mask = jnp.zeros(ids.shape, bool)
  for lo, hi in allowed:
    mask = mask | ((ids >= lo) & (ids < hi))
  return jnp.where(mask, logits, NEG)


def raw_logits(model: tf.Transformer, h_BxD):
  """Head-0 logits restricted to ids < 320 (raw bytes and specials), PAD/BOS excluded."""
  return restricted_logits(model, h_BxD, RAW.allowed)


def sample(logits_BxV, key, temperature: float, top_p: float):
  if temperature <= 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits = logits_BxV / temperature
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    cum = jnp.cumsum(probs, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least one id).
    cutoff_idx = jnp.sum(cum - probs < top_p, axis=-1) - 1
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx[:, None], axis=-1)
    logits = jnp.where(logits < cutoff, NEG, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _ends_with(out_BxN, step, stop: tuple[int, ...]):
  """Whether the tokens written up to ``step`` (inclusive) end with ``stop``."""
  n = len(stop)
  start = jnp.maximum(step + 1 - n, 0)
  tail = jax.lax.dynamic_slice_in_dim(out_BxN, start, n, axis=1)
  return (step + 1 >= n) & jnp.all(tail == jnp.asarray(stop, jnp.int32)[None], axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new", "temperature", "top_p",
                                             "stops", "allowed", "ends", "sharding"))
def _generate(graphdef, params, tokens, valid, key, *, max_new, temperature, top_p,
              stops=(), limits=None, allowed=RAW.allowed, ends=RAW.end_ids, sharding=None):
  """``limits``: new tokens per row (None: ``max_new``); ``sharding``:
  ``parallel.static_sharding(mesh, rules)`` or None."""
  with parallel.traced_sharding(sharding):
    return _decode(graphdef, params, tokens, valid, key, max_new, temperature, top_p, stops,
                   limits, allowed, ends)


def _decode(graphdef, params, tokens, valid, key, max_new, temperature, top_p, stops, limits,
            allowed, ends):
  model = nnx.merge(graphdef, params)
  b, t = tokens.shape
  h, cache = decode_lib.prefill(model, tokens, valid, t + max_new)
  out = jnp.zeros((b, max_new), jnp.int32)
  done = jnp.zeros((b,), bool)
  if limits is None:
    limits = jnp.full((b,), max_new, jnp.int32)

  def cond(carry):
    step, _, _, _, done, _ = carry
    return (step < max_new) & ~jnp.all(done)

  def body(carry):
    step, h, cache, out, done, key = carry
    key, sub = jax.random.split(key)
    tok = sample(restricted_logits(model, h, allowed), sub, temperature, top_p)
    tok = jnp.where(done, vocab_lib.PAD, tok)
    out = out.at[:, step].set(tok)
    for end in ends:
      done = done | (tok == end)
    done = done | (step + 1 >= limits)  # the row's context is full
    for stop in stops:  # a stop string just completed: that sample is finished
      done = done | _ends_with(out, step, stop)
    h, cache = decode_lib.decode_step(model, cache, tok)
    return step + 1, h, cache, out, done, key

  carry = (jnp.int32(0), h, cache, out, done, key)
  _, _, _, out, _, _ = jax.lax.while_loop(cond, body, carry)
  return out


def encode_prompt(prompt: bytes) -> np.ndarray:
  """``[BOS, <raw>, prompt bytes]``."""
  return RAW.encode(prompt)


def completion_bytes(ids: Sequence[int]) -> bytes:
  """Generated ids -> bytes, stopping at EOS or </raw>; other specials dropped."""
  return RAW.decode(ids)


def fit_context(ids: np.ndarray, context_len: int | None, prefix_len: int) -> np.ndarray:
  """``ids`` cut from the left to ``context_len`` ids, keeping its first ``prefix_len``
  (the format prefix); unchanged when it fits (or without a context)."""
  if context_len is None or len(ids) <= context_len:
    return ids
  if context_len <= prefix_len:
    raise ValueError(f"a context of {context_len} ids cannot hold the prompt prefix")
  return np.concatenate([ids[:prefix_len], ids[len(ids) - (context_len - prefix_len):]])


def generate_ids(graphdef, params, prompts: Sequence[np.ndarray], cfg: SamplingConfig, *,
                 interface: Interface = RAW, batch_size: int = 8, mesh=None,
                 rules: dict | None = None, context_len: int | None = None
                 ) -> list[list[np.ndarray]]:
  """``cfg.n`` generated id rows (``max_new_tokens`` wide, PAD after the end) per prompt.

  ``prompts`` are id arrays starting with ``interface.prefix``. A prompt longer than
  ``context_len`` is cut from the left (prefix kept) and a row stops when its context is
  full; each of these warns once per call. Rows are batched in order of prompt length
  (less padding, fewer distinct compiled widths); the results come back in the order of
  ``prompts``. With a ``mesh`` and logical-axis ``rules`` (the training ones),
  activations and the KV cache are sharded like training (rows over data x fsdp).
  """
  sharding = parallel.static_sharding(mesh, rules)
  max_new = cfg.max_new_tokens
  # Stop strings as id sequences, matched in the decode loop so a batch ends as soon as
  # every row has hit one; the host then truncates.
  stops = tuple(ids for ids in (interface.stop_ids(s) for s in cfg.stop_strings if s)
                if 0 < len(ids) <= max_new)
  fitted = [fit_context(np.asarray(p, np.int32), context_len, len(interface.prefix))
            for p in prompts]
  cut = [i for i, (p, f) in enumerate(zip(prompts, fitted)) if len(f) < len(p)]
  if cut:
    warnings.warn(f"{len(cut)} of {len(prompts)} prompts are longer than the model's context "
                  f"of {context_len} ids: cut from the left to their last "
                  f"{context_len - len(interface.prefix)} ids (prompt {cut[0]}: "
                  f"{len(prompts[cut[0]])} ids)", stacklevel=2)
  limits = [max_new if context_len is None else max(1, min(max_new, context_len - len(f) + 1))
            for f in fitted]
  capped = sum(1 for n in limits if n < max_new)
  if capped:
    warnings.warn(f"{capped} of {len(prompts)} prompts leave fewer than max_new_tokens="
                  f"{max_new} positions in the model's context of {context_len} ids: their "
                  f"generation stops at the context (as few as {min(limits)} new ids)",
                  stacklevel=2)
  rows = [(i, fitted[i], limits[i]) for i in range(len(prompts)) for _ in range(cfg.n)]
  rows.sort(key=lambda r: len(r[1]))  # stable: the n samples of a prompt stay together
  results: list[list[np.ndarray]] = [[] for _ in prompts]
  key = jax.random.PRNGKey(cfg.seed)
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    width = max(len(r) for _, r, _ in chunk)
    width = -(-width // 64) * 64  # bucket prompt lengths to limit recompiles
    n_rows = batch_size if len(rows) > batch_size else len(chunk)
    tokens = np.zeros((n_rows, width), np.int32)
    valid = np.zeros((n_rows, width), bool)
    row_limits = np.full((n_rows,), max_new, np.int32)
    for j, (_, r, n) in enumerate(chunk):
      tokens[j, width - len(r):] = r
      valid[j, width - len(r):] = True
      row_limits[j] = n
    for j in range(len(chunk), n_rows):  # filler rows (a copy of the first prompt)
      tokens[j], valid[j], row_limits[j] = tokens[0], valid[0], row_limits[0]
    key, sub = jax.random.split(key)
    out = np.asarray(_generate(graphdef, params, jnp.asarray(tokens), jnp.asarray(valid), sub,
                               max_new=max_new, temperature=float(cfg.temperature),
                               top_p=float(cfg.top_p), stops=stops,
                               limits=jnp.asarray(row_limits), allowed=interface.allowed,
                               ends=interface.end_ids, sharding=sharding))
    for j, (i, _, _) in enumerate(chunk):
      results[i].append(out[j])
  return results


def generate(graphdef, params, prompts: Sequence[bytes], cfg: SamplingConfig,
             batch_size: int = 8, mesh=None, rules: dict | None = None, *,
             interface: Interface = RAW, context_len: int | None = None) -> list[list[str]]:
  """``cfg.n`` completions (text, stop strings applied) for each prompt, through
  ``interface`` (``generate_ids`` says how prompts, the context and batches are handled)."""
  ids = generate_ids(graphdef, params, [interface.encode(p) for p in prompts], cfg,
                     interface=interface, batch_size=batch_size, mesh=mesh, rules=rules,
                     context_len=context_len)
  return [[codegen.truncate_completion(interface.decode(row.tolist()).decode("utf-8", "replace"),
                                       cfg.stop_strings) for row in rows] for rows in ids]
