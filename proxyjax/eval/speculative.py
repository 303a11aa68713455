"""Self-speculative decoding with the model's look-ahead heads (EvaByte-style).

A model trained with ``num_pred_heads`` = H main heads (head h predicts the id at
t+1+h) and ``num_raw_pred_heads`` = R raw heads (raw head j predicts the raw id at
t+1+H+j) drafts ``H - 1 + R`` ids beyond the next one from a single hidden state
(raw heads only through the raw interface: they predict ids < 320). One forward
over ``[next, drafts...]`` (``proxyjax.model.decode.decode_block``) gives head 0's
prediction after each of them; the drafts are accepted up to the first one head 0
rejects, and the cache positions of the rest are dropped (``decode.rewind``).

* **Greedy** (temperature 0): the drafts and the next id are the heads' argmaxes and
  head 0 accepts a draft when it is its own argmax after the ids before it. Every
  accepted id is head 0's greedy choice, so the output is plain greedy decoding's.
* **Sampling** (temperature > 0, top-p): speculative sampling (Leviathan et al. 2023;
  Chen et al. 2023). The next id is sampled from head 0 and draft j from look-ahead
  head j's distribution q_j (the same temperature and top-p); head 0's distribution
  p_j after the ids before draft j accepts it with probability min(1, p_j/q_j), and
  the id after the last accepted one is drawn from max(0, p_j - q_j), renormalized
  (``verify_sampled``). Each id then has exactly plain sampling's distribution given
  the ids before it; q_j may ignore the drafts before j, since the argument needs only
  that q_j is fixed before the checks. A batch advances by the ids every running row
  accepts (``e``), so a row may stop before its own first rejection: the id it would
  write there (its accepted draft, or its residual sample) is kept as the next step's
  first id (``pending``) instead of being drawn again. Drawing it again would bias
  the output: that position would hold an accepted draft (distributed as
  min(p, q) / beta, beta the acceptance rate) when the batch went past it and a fresh
  p sample when it stopped there, and that mixture is not p.

A forward over the drafts costs more than one over a single id (1.5-2x on a CPU), so
after drafts fail the decode loop takes a few plain steps before drafting again
(``generate.MAX_WAIT``); ``draft_len`` caps the drafts.

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


def draft_logits(model: tf.Transformer, h_BxD, allowed: tuple[tuple[int, int], ...]):
  """``[B, 1 + num_drafts, V]``: head 0's logits after ``h`` (the next id), then the
  look-ahead heads' (main heads, then raw heads padded to V), restricted to ``allowed``."""
  cfg = model.cfg
  h = h_BxD[:, None]
  parts = [restrict(model.logits(h)[:, 0], allowed)]  # [B, H, V]
  if cfg.num_raw_pred_heads and raw_drafts(allowed):
    raw = restrict(model.raw_logits(h)[:, 0], allowed)  # [B, R, 320]
    pad = parts[0].shape[-1] - raw.shape[-1]
    parts.append(jnp.pad(raw, ((0, 0), (0, 0), (0, pad)), constant_values=NEG))
  return jnp.concatenate(parts, axis=1)


def head0_logits(model: tf.Transformer, h_BxTxD, allowed: tuple[tuple[int, int], ...]):
  """Head 0's logits ``[B, T, V]`` after each position of ``h`` (head 0's weights only),
  restricted to ``allowed``."""
  return restrict(model.head_logits(h_BxTxD, 0, model.cfg.vocab_size), allowed)


def verify_sampled(key, drafts_BxK, q_BxKxV, p_BxKxV):
  """Speculative sampling's check of ``drafts`` (draft j drawn from ``q[:, j]``) against
  head 0's probabilities ``p[:, j]`` after the ids before draft j.

  Returns ``(accepted, then)``: per row, how many leading drafts are accepted (draft j
  with probability min(1, p_j(d)/q_j(d))); and ``then[:, j]``, the id that follows when
  a row stops after draft j - 1 (its ``j + 1`` first block ids): draft j when it was
  accepted, else a sample from max(0, p_j - q_j) renormalized. Only ``then[:, j]`` for
  ``j <= accepted`` is meaningful.
  """
  k_accept, k_residual = jax.random.split(key)
  pick = lambda probs: jnp.take_along_axis(probs, drafts_BxK[..., None], axis=-1)[..., 0]
  u = jax.random.uniform(k_accept, drafts_BxK.shape)
  ok = u * pick(q_BxKxV) < pick(p_BxKxV)
  residual = jnp.maximum(p_BxKxV - q_BxKxV, 0.0)
  # p == q leaves no residual, but then every draft is accepted: any id will do.
  residual = jnp.where(jnp.sum(residual, -1, keepdims=True) > 0, residual, p_BxKxV)
  resampled = jax.random.categorical(k_residual, jnp.log(residual), axis=-1)
  then = jnp.where(ok, drafts_BxK, resampled.astype(jnp.int32))
  return jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1), then


def accepted(drafts_BxK, verified_BxK) -> jax.Array:
  """Per row, how many leading drafts head 0 agrees with (``verified[:, j]`` is its id
  after the block's first ``j + 1`` ids, i.e. its check of ``drafts[:, j]``)."""
  agree = (drafts_BxK == verified_BxK).astype(jnp.int32)
  return jnp.sum(jnp.cumprod(agree, axis=1), axis=1)
