"""Next-symbol cross-entropy over the shared vocabulary (docs/method.md §5), chunked.

* Every position with a non-PAD target is trained, sentinels and cross-document
  targets included (as the authors do), unless ``mask_special_targets``.
* Rows carry P = H + R target columns (``proxyjax.data.packing.head_counts``):
  main head h (h < H, full vocabulary) predicts column h, the id at t+1+h;
  look-ahead raw head j (j < R, 320-way: specials and raw bytes) predicts column
  H + j, the id at t+1+H+j, *beyond* the main heads (the authors'
  ``raw_multibyte_lm_head``).
* Weights per position (``head_weights``): without raw heads, the valid main heads
  share weight 1 (1/H each when all are valid). With raw heads, a *raw position* is
  one whose H + R targets are all valid and < 320 (specials and raw bytes; literal
  bytes inside a compressed view count, as for the authors): there every head,
  main and raw, has weight 1/(H+R); elsewhere the raw heads have weight 0 and the
  main heads share 1 as without raw heads. For H = R = 1 this is the authors'
  ``(CE_main + CE_raw) / 2`` at raw positions and ``CE_main`` elsewhere.
* The loss is the weighted sum over positions and heads divided by the number of
  positions with a valid main target (each such position carries weight 1).
* Logits are computed per chunk of positions inside a rematerialised scan, so
  ``[B, T, V]`` logits never exist at once (forward or backward).

Metrics (head 0): ``raw_loss`` over raw-byte targets (64..319), ``comp_loss``
over compressed targets (>= 320), ``raw_bpb = raw_loss / ln 2`` and the counts;
with raw heads also ``raw_head_loss``, the mean raw-head NLL at raw positions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from proxyjax import vocab as vocab_lib

LN2 = math.log(2.0)


def _nll(logits, targets):
  """-log softmax(logits)[target] in fp32; logits [..., V], targets [...]."""
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return lse - picked


def _num_raw(model) -> int:
  return int(getattr(model.cfg, "num_raw_pred_heads", 0) or 0)


def per_position_nll(model, h_BxTxD, targets_BxTxP, chunk: int):
  """(main nll ``[B, T, min(P, H)]``, raw-head nll ``[B, T, R]`` or None), chunked over T.

  Main head h scores column h; with fewer columns than heads (P = 1, as raw BPB
  passes) every head scores column 0 and the result has the heads' shape. Raw heads
  are scored only when the targets carry all H + R columns (raw head j: column H + j,
  clipped into the 320-way range; positions where it is >= 320 get weight 0).
  """
  b, t, d = h_BxTxD.shape
  num_p = targets_BxTxP.shape[-1]
  num_main = model.cfg.num_pred_heads
  num_raw = _num_raw(model)
  raw = num_raw > 0 and num_p >= num_main + num_raw
  if num_p > num_main:
    main_targets = targets_BxTxP[..., :num_main]
  else:
    main_targets = targets_BxTxP

  def raw_targets(tg):
    return jnp.clip(tg[..., num_main:num_main + num_raw], 0, vocab_lib.RAW_VOCAB_SIZE - 1)

  chunk = min(chunk, t)
  if t % chunk:
    chunk = math.gcd(t, chunk)
  n = t // chunk
  if n == 1:  # the whole row is one chunk: no map, no rematerialisation
    nll = _nll(model.logits(h_BxTxD), main_targets)
    if not raw:
      return nll, None
    return nll, _nll(model.raw_logits(h_BxTxD), raw_targets(targets_BxTxP))
  h_c = h_BxTxD.reshape(b, n, chunk, d).swapaxes(0, 1)
  tg_c = targets_BxTxP.reshape(b, n, chunk, num_p).swapaxes(0, 1)

  @jax.checkpoint
  def one(h, tg):
    nll = _nll(model.logits(h), tg[..., :num_main] if num_p > num_main else tg)  # [B, c, P]
    if raw:
      return nll, _nll(model.raw_logits(h), raw_targets(tg))  # [B, c, R]
    return nll, jnp.zeros(tg.shape[:2], jnp.float32)

  nll_c, raw_c = jax.lax.map(lambda xs: one(*xs), (h_c, tg_c))
  nll = nll_c.swapaxes(0, 1).reshape(b, t, nll_c.shape[-1])
  raw_nll = raw_c.swapaxes(0, 1).reshape(b, t, num_raw) if raw else None
  return nll, raw_nll


def head_weights(targets_BxTxP, valid_BxTxP, num_pred_heads: int, num_raw_heads: int):
  """Loss weights ``[B, T, H + R]`` of the main heads then the raw heads, and the raw
  positions ``[B, T]`` (see the module docstring). ``valid``: targets that may be
  trained (non-PAD, and not masked)."""
  h, r = num_pred_heads, num_raw_heads
  main_valid = valid_BxTxP[..., :h]
  count = jnp.sum(main_valid, axis=-1, keepdims=True)
  main_w = main_valid / jnp.maximum(count, 1).astype(jnp.float32)
  if not r:
    return main_w, jnp.zeros(targets_BxTxP.shape[:-1], bool)
  carried = targets_BxTxP[..., :h + r]
  raw_pos = (jnp.all(valid_BxTxP[..., :h + r], axis=-1)
             & jnp.all(carried < vocab_lib.RAW_VOCAB_SIZE, axis=-1))
  both = jnp.concatenate([main_w, jnp.zeros(main_w.shape[:-1] + (r,), jnp.float32)], axis=-1)
  w = jnp.where(raw_pos[..., None], 1.0 / (h + r), both)
  return w, raw_pos


def compute_loss(model, batch, *, mask_special_targets: bool = False):
  """Scalar loss and metrics for one batch (see module docstring)."""
  h = model(batch["inputs"], batch["segment_ids"], batch["positions"])
  targets = batch["targets"]
  if targets.ndim == 2:
    targets = targets[..., None]
  num_main, num_raw = model.cfg.num_pred_heads, _num_raw(model)
  if num_raw and targets.shape[-1] < num_main + num_raw:
    raise ValueError(f"the batch carries {targets.shape[-1]} target columns; "
                     f"{num_main} main + {num_raw} raw heads need {num_main + num_raw}")
  nll, raw_nll = per_position_nll(model, h, targets, model.cfg.logits_chunk)
  valid = targets != vocab_lib.PAD  # [B, T, P]
  if mask_special_targets:
    valid &= targets >= vocab_lib.BYTE_OFFSET
    valid &= (batch["inputs"] != vocab_lib.EOS)[..., None]
  extra = {}
  if raw_nll is None:  # no raw heads: the same operations as before they existed
    main_valid = valid[..., :num_main] if targets.shape[-1] > num_main else valid
    head_count = jnp.sum(main_valid, axis=-1)
    main = jnp.sum(jnp.where(main_valid, nll, 0.0), axis=-1) / jnp.maximum(head_count, 1)
    pos_valid = head_count > 0
    n_valid = jnp.sum(pos_valid)
    loss = jnp.sum(jnp.where(pos_valid, main, 0.0)) / jnp.maximum(n_valid, 1)
  else:
    w, raw_pos = head_weights(targets, valid, num_main, num_raw)
    all_nll = jnp.concatenate([nll, raw_nll], axis=-1)  # [B, T, H + R]
    pos_valid = jnp.any(valid[..., :num_main], axis=-1)
    n_valid = jnp.sum(pos_valid)
    loss = jnp.sum(jnp.where(w > 0, w * all_nll, 0.0)) / jnp.maximum(n_valid, 1)
    extra = {"raw_head_nll_sum": jnp.sum(jnp.where(raw_pos[..., None], raw_nll, 0.0)),
             "raw_head_count": jnp.sum(raw_pos) * num_raw}

  t0, nll0 = targets[..., 0], nll[..., 0]
  is_byte = (t0 >= vocab_lib.BYTE_OFFSET) & (t0 < vocab_lib.RAW_VOCAB_SIZE)
  is_comp = t0 >= vocab_lib.RAW_VOCAB_SIZE
  n_byte, n_comp = jnp.sum(is_byte), jnp.sum(is_comp)
  raw_sum = jnp.sum(jnp.where(is_byte, nll0, 0.0))
  comp_sum = jnp.sum(jnp.where(is_comp, nll0, 0.0))
  metrics = {
      "loss": loss,
      "raw_nll_sum": raw_sum, "raw_count": n_byte,
      "comp_nll_sum": comp_sum, "comp_count": n_comp,
      "target_count": n_valid,
      **extra,
  }
  return loss, metrics


def finalize_metrics(m: dict) -> dict:
  """Derived metrics from summed counters (host side)."""
  out = {k: float(v) for k, v in m.items()}
  if out.get("raw_count"):
    out["raw_loss"] = out["raw_nll_sum"] / out["raw_count"]
    out["raw_bpb"] = out["raw_loss"] / LN2
  if out.get("comp_count"):
    out["comp_loss"] = out["comp_nll_sum"] / out["comp_count"]
  if out.get("raw_head_count"):
    out["raw_head_loss"] = out["raw_head_nll_sum"] / out["raw_head_count"]
  for k in ("raw_nll_sum", "comp_nll_sum", "raw_head_nll_sum"):
    out.pop(k, None)
  return out
