"""Self-speculative decoding with the model's look-ahead heads (EvaByte-style).

A model trained with ``num_pred_heads`` = H main heads (head h predicts the id at
t+1+h) and ``num_raw_pred_heads`` = R raw heads (raw head j predicts the raw id at
t+1+H+j) drafts ``H - 1 + R`` ids beyond the next one from a single hidden state
(raw heads only through the raw interface: they predict ids < 320). One forward
over ``[next, drafts...]`` (``proxyjax.model.decode.decode_block``) gives head 0's
prediction after each of them; the drafts are accepted up to the first one head 0
disagrees with, plus head 0's own next id, and the cache positions of the rejected
ones are dropped (``decode.rewind``). Every accepted id is head 0's greedy choice
after the ids before it, so the output is plain greedy decoding's, in fewer
forwards. Only greedy decoding is speculative (``proxyjax.eval.generate`` refuses
``speculative`` with a temperature). A forward over the drafts costs more than one over
a single id (1.5-2x on a CPU), so after drafts fail the decode loop takes a few plain
steps before drafting again (``generate.MAX_WAIT``); ``draft_len`` caps the drafts.

The functions here are traced inside the decode loop of ``proxyjax.eval.generate``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from proxyjax import vocab as vocab_lib
from proxyjax.model import transformer as tf

NEG = -1e30


def restrict(logits_xV, allowed: tuple[tuple[int, int], ...]):
  """``logits`` with the ids outside the ranges ``allowed`` (``[lo, hi)``) set to NEG."""
  ids = jnp.arange(logits_xV.shape[-1])
  mask = jnp.zeros(ids.shape, bool)
  for lo, hi in allowed:
    mask = mask | ((ids >= lo) & (ids < hi))
  return jnp.where(mask, logits_xV, NEG)


def raw_drafts(allowed: tuple[tuple[int, int], ...]) -> bool:
  """Whether the raw heads may draft: every allowed id is a raw id (< 320)."""
  return all(hi <= vocab_lib.RAW_VOCAB_SIZE for _, hi in allowed)


def num_drafts(cfg: tf.ModelConfig, allowed: tuple[tuple[int, int], ...]) -> int:
  """Ids drafted per forward: main heads 1..H-1, then the raw heads (raw interface)."""
  return cfg.num_pred_heads - 1 + (cfg.num_raw_pred_heads if raw_drafts(allowed) else 0)


def propose(model: tf.Transformer, h_BxD, allowed: tuple[tuple[int, int], ...]):
  """``[B, 1 + num_drafts]``: head 0's greedy id after ``h`` (plain greedy decoding's),
  then the look-ahead heads' greedy ids after it (main heads, then raw heads)."""
  cfg = model.cfg
  h = h_BxD[:, None]
  parts = [restrict(model.logits(h)[:, 0], allowed).argmax(-1)]  # [B, H]
  if cfg.num_raw_pred_heads and raw_drafts(allowed):
    parts.append(restrict(model.raw_logits(h)[:, 0], allowed).argmax(-1))
  return jnp.concatenate(parts, axis=1).astype(jnp.int32)


def head0_greedy(model: tf.Transformer, h_BxTxD, allowed: tuple[tuple[int, int], ...]):
  """Head 0's greedy ids ``[B, T]`` after each position of ``h`` (head 0's weights only)."""
  logits = model.head_logits(h_BxTxD, 0, model.cfg.vocab_size)
  return restrict(logits, allowed).argmax(-1).astype(jnp.int32)


def accepted(drafts_BxK, verified_BxK) -> jax.Array:
  """Per row, how many leading drafts head 0 agrees with (``verified[:, j]`` is its id
  after the block's first ``j + 1`` ids, i.e. its check of ``drafts[:, j]``)."""
  agree = (drafts_BxK == verified_BxK).astype(jnp.int32)
  return jnp.sum(jnp.cumprod(agree, axis=1), axis=1)
