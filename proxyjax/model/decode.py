"""KV-cache decoding with the training transformer's own blocks.

``prefill`` runs left-padded prompts (pad = ``valid`` False, invisible) through
the same block math as training (``transformer.qkv``/``finish``, attention by
``attention.dense_attention`` with the mask rule of ``attention.index_mask``)
and returns the cache; ``decode_step`` appends one token per row, ``decode_block``
several in one forward (self-speculative decoding verifies drafts with it) and
``rewind`` drops the last ones appended again. The cache is a dict:

  k, v      ``[layers, batch, max_len, kv heads, head_dim]`` keys/values (in the
            model's compute dtype), sharded like the training activations
            (``CACHE_AXES``; a no-op outside a sharding context)
  valid     ``[batch, max_len]`` which slots hold a real token
  index     the next slot to write (shared by the rows: prompts are left-padded)
  position  ``[batch]`` the RoPE position of each row's next token

Positions count only the valid tokens of a row (the packed positions of the
training forward), so a row's logits do not depend on its padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from proxyjax import parallel
from proxyjax.model import attention as attention_lib
from proxyjax.model import transformer as tf

CACHE_AXES = ("layers", "batch", "length", "heads", "kv")


def _constrain_cache(c_LxBxSxKxE):
  return parallel.constrain(c_LxBxSxKxE, CACHE_AXES)


def _attend(cfg: tf.ModelConfig, q, k, v, mask):
  return attention_lib.dense_attention(q, k, v, mask, accum_dtype=cfg.accum_dtype)


def prefill(model: tf.Transformer, tokens_BxT, valid_BxT, max_len: int):
  """Runs left-padded prompts; returns (last hidden [B, D], cache with ``max_len`` slots)."""
  cfg = model.cfg
  t = tokens_BxT.shape[1]
  positions = jnp.maximum(jnp.cumsum(valid_BxT, axis=1) - 1, 0).astype(jnp.int32)
  cos, sin = tf.rope_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.accum_dtype)
  # Valid tokens form one segment per row: the training mask (causal, window).
  mask = attention_lib.make_mask(valid_BxT.astype(jnp.int32), causal=True, window=cfg.window)
  x = model.embed_tokens(tokens_BxT)

  def body(x, p):
    q, k, v = tf.qkv(cfg, p, x, cos, sin)
    o = _attend(cfg, q, k, v, mask)
    pad = [(0, 0), (0, max_len - t), (0, 0), (0, 0)]
    return tf.finish(cfg, p, x, o), (jnp.pad(k, pad), jnp.pad(v, pad))

  x, (k_cache, v_cache) = jax.lax.scan(body, x, model.stacked_blocks())
  k_cache, v_cache = _constrain_cache(k_cache), _constrain_cache(v_cache)
  valid_cache = jnp.pad(valid_BxT, [(0, 0), (0, max_len - t)])
  cache = {"k": k_cache, "v": v_cache, "valid": valid_cache, "index": jnp.int32(t),
           "position": positions[:, -1] + 1}
  return model.final_hidden(x)[:, -1], cache


def decode_step(model: tf.Transformer, cache, tokens_B):
  """Appends one token per row; returns (hidden [B, D], cache): ``decode_block`` of one."""
  hidden, cache = decode_block(model, cache, tokens_B[:, None])
  return hidden[:, 0], cache


def decode_block(model: tf.Transformer, cache, tokens_BxT):
  """Appends ``T`` tokens per row in one forward (slots ``index..index+T-1``, the row's
  next ``T`` positions); token j attends to the cache and to tokens ``0..j`` of the block.
  Returns (hidden ``[B, T, D]``, cache); ``rewind`` drops tokens appended here again.

  Self-speculative decoding verifies drafted tokens with it: the same block math as
  ``decode_step`` over ``T`` query positions at once.
  """
  cfg = model.cfg
  i = cache["index"]
  b, t = tokens_BxT.shape
  pos = cache["position"][:, None] + jnp.arange(t, dtype=cache["position"].dtype)[None]
  cos, sin = tf.rope_tables(pos, cfg.head_dim, cfg.rope_theta, cfg.accum_dtype)
  valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], jnp.ones((b, t), bool), i, axis=1)
  s = valid.shape[1]
  seen = attention_lib.index_mask(i + jnp.arange(t)[:, None], jnp.arange(s)[None],
                                  causal=True, window=cfg.window)  # [T, S]
  mask = (valid[:, None, :] & seen[None])[:, None]  # [B, 1 head, T queries, S]
  x = model.embed_tokens(tokens_BxT)

  def body(x, layer):
    p, k_cache, v_cache = layer
    q, k, v = tf.qkv(cfg, p, x, cos, sin)
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k, i, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v, i, axis=1)
    o = _attend(cfg, q, k_cache, v_cache, mask)
    return tf.finish(cfg, p, x, o), (k_cache, v_cache)

  x, (k_cache, v_cache) = jax.lax.scan(body, x, (model.stacked_blocks(), cache["k"], cache["v"]))
  k_cache, v_cache = _constrain_cache(k_cache), _constrain_cache(v_cache)
  cache = {"k": k_cache, "v": v_cache, "valid": valid, "index": i + t,
           "position": cache["position"] + t}
  return model.final_hidden(x), cache


def rewind(cache, n):
  """Drops the last ``n`` (traced, same for every row) appended tokens: their slots become
  invalid (and are overwritten by the next append) and the positions move back."""
  i = cache["index"] - n
  slots = jnp.arange(cache["valid"].shape[1])
  keep = (slots < i) | (slots >= cache["index"])
  return {**cache, "valid": cache["valid"] & keep[None], "index": i,
          "position": cache["position"] - n}
