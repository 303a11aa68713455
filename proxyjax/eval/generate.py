"""Incremental decoding with a KV cache, through the raw-byte interface (SPEC §7).

Prompts are ``[BOS, <raw>, prompt bytes...]`` (no ``</raw>``), left-padded to a
common length (pad = segment 0, invisible). Prefill and the decode steps are
the model's (``proxyjax.model.decode``: the training blocks with a KV cache);
this module holds the raw-byte prompt interface, sampling and stop handling. Decoding is restricted to ids < 320
(raw bytes and specials); ``</raw>``, EOS or a completed stop string ends a
sample inside the decode loop (a batch stops when all its rows have ended), and
the host truncates at stop strings (``codegen.truncate_completion``: the
earliest occurrence of any stop string wins). ``n`` samples per prompt are decoded as one batch.
Greedy (temperature 0) or temperature + top-p sampling, seeded.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

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
  max_new_tokens: int = 256
  temperature: float = 0.0  # 0 = greedy
  top_p: float = 1.0
  n: int = 1  # samples per prompt
  seed: int = 0
  stop_strings: tuple[str, ...] = ()


def raw_logits(model: tf.Transformer, h_BxD):
  """Head-0 logits restricted to ids < 320 (raw bytes and specials), PAD/BOS excluded."""
  logits = model.logits(h_BxD[:, None])[:, 0, 0]
  ids = jnp.arange(logits.shape[-1])
  allowed = (ids < vocab_lib.RAW_VOCAB_SIZE) & (ids != vocab_lib.PAD) & (ids != vocab_lib.BOS)
  return jnp.where(allowed, logits, NEG)


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
                                             "stops", "sharding"))
def _generate(graphdef, params, tokens, valid, key, *, max_new, temperature, top_p,
              stops=(), sharding=None):
  """``sharding``: ``parallel.static_sharding(mesh, rules)`` or None."""
  with parallel.traced_sharding(sharding):
    return _decode(graphdef, params, tokens, valid, key, max_new, temperature, top_p, stops)


def _decode(graphdef, params, tokens, valid, key, max_new, temperature, top_p, stops):
  model = nnx.merge(graphdef, params)
  b, t = tokens.shape
  h, cache = decode_lib.prefill(model, tokens, valid, t + max_new)
  out = jnp.zeros((b, max_new), jnp.int32)
  done = jnp.zeros((b,), bool)

  def cond(carry):
    step, _, _, _, done, _ = carry
    return (step < max_new) & ~jnp.all(done)

  def body(carry):
    step, h, cache, out, done, key = carry
    key, sub = jax.random.split(key)
    tok = sample(raw_logits(model, h), sub, temperature, top_p)
    tok = jnp.where(done, vocab_lib.PAD, tok)
    out = out.at[:, step].set(tok)
    done = done | (tok == vocab_lib.EOS) | (tok == vocab_lib.RAW_CLOSE)
    for stop in stops:  # a stop string just completed: that sample is finished
      done = done | _ends_with(out, step, stop)
    h, cache = decode_lib.decode_step(model, cache, tok)
    return step + 1, h, cache, out, done, key

  carry = (jnp.int32(0), h, cache, out, done, key)
  _, _, _, out, _, _ = jax.lax.while_loop(cond, body, carry)
  return out


def encode_prompt(prompt: bytes) -> np.ndarray:
  return np.concatenate([[vocab_lib.BOS, vocab_lib.RAW_OPEN],
                         vocab_lib.bytes_to_ids(prompt)]).astype(np.int32)


def completion_bytes(ids: Sequence[int]) -> bytes:
  """Generated ids -> bytes, stopping at EOS or </raw>; other specials dropped."""
  out = bytearray()
  for i in ids:
    if i in (vocab_lib.EOS, vocab_lib.RAW_CLOSE, vocab_lib.PAD):
      break
    if vocab_lib.BYTE_OFFSET <= i < vocab_lib.RAW_VOCAB_SIZE:
      out.append(i - vocab_lib.BYTE_OFFSET)
  return bytes(out)


def generate(graphdef, params, prompts: Sequence[bytes], cfg: SamplingConfig,
             batch_size: int = 8, mesh=None, rules: dict | None = None) -> list[list[str]]:
  """``cfg.n`` completions (text, stop strings applied) for each prompt.

  Rows are batched in order of prompt length (less padding, fewer distinct
  compiled widths); the results come back in the order of ``prompts``. With a
  ``mesh`` and logical-axis ``rules`` (the training ones), activations and the
  KV cache are sharded like training (rows over data x fsdp).
  """
  sharding = parallel.static_sharding(mesh, rules)
  # Stop strings as id sequences (bytes 64 + b), matched in the decode loop so a
  # batch ends as soon as every row has hit one; the host then truncates.
  stops = tuple(tuple(int(i) for i in vocab_lib.bytes_to_ids(s.encode("utf-8")))
                for s in cfg.stop_strings if s and len(s.encode("utf-8")) <= cfg.max_new_tokens)
  rows = [(i, encode_prompt(p)) for i, p in enumerate(prompts) for _ in range(cfg.n)]
  rows.sort(key=lambda r: len(r[1]))  # stable: the n samples of a prompt stay together
  results: list[list[str]] = [[] for _ in prompts]
  key = jax.random.PRNGKey(cfg.seed)
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    width = max(len(r) for _, r in chunk)
    width = -(-width // 64) * 64  # bucket prompt lengths to limit recompiles
    n_rows = batch_size if len(rows) > batch_size else len(chunk)
    tokens = np.zeros((n_rows, width), np.int32)
    valid = np.zeros((n_rows, width), bool)
    for j, (_, r) in enumerate(chunk):
      tokens[j, width - len(r):] = r
      valid[j, width - len(r):] = True
    for j in range(len(chunk), n_rows):  # filler rows (a copy of the first prompt)
      tokens[j], valid[j] = tokens[0], valid[0]
    key, sub = jax.random.split(key)
    out = np.asarray(_generate(graphdef, params, jnp.asarray(tokens), jnp.asarray(valid), sub,
                               max_new=cfg.max_new_tokens, temperature=float(cfg.temperature),
                               top_p=float(cfg.top_p), stops=stops, sharding=sharding))
    for j, (i, _) in enumerate(chunk):
      text = completion_bytes(out[j].tolist()).decode("utf-8", "replace")
      results[i].append(codegen.truncate_completion(text, cfg.stop_strings))
  return results
