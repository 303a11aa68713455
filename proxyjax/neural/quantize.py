"""Model logits -> integer frequency tables, bit-identically on every machine.

The coder needs the encoder and the decoder to agree on every frequency to the
last bit, so no transcendental function touches the model output here:

1. ``d = max(logits) - logits`` over the 256 byte ids, in fp32 (an exact IEEE
   subtraction, renormalising over the bytes: the softmax is shift-invariant);
2. ``u = rint(d * 64 / ln 2)``: the negative log2-probability (up to the
   normaliser) in steps of 1/64 bit, as an integer (IEEE multiply and
   round-half-even, done in float64);
3. ``w = 2^(30 - u/64)`` from an integer table (built with ``decimal``, whose
   powers are correctly rounded, then integer shifts);
4. ``f = 1 + floor(w * (M - 256) / sum(w))`` with ``M = 2^prob_bits``, and the
   remainder ``M - sum(f)`` goes to the most probable byte (lowest byte on
   ties). Integer arithmetic only: every byte gets ``f >= 1``, ``sum f = M``.

The 1/64-bit grid costs < 0.001 bits per byte against the fp32 softmax.
"""

from __future__ import annotations

import decimal
import functools

import numpy as np

STEPS_PER_BIT = 64
WEIGHT_BITS = 30
MAX_STEPS = STEPS_PER_BIT * (WEIGHT_BITS + 1)  # beyond: weight 0 (the +1 floor remains)
_SCALE = STEPS_PER_BIT / float(np.log(2.0))  # a fixed float64 constant


@functools.lru_cache(maxsize=None)
def weight_table() -> np.ndarray:
  """``TABLE[u] = floor(2^(30 - u/64))``-ish integers for u in [0, MAX_STEPS]."""
  with decimal.localcontext() as ctx:
    ctx.prec = 40
    base = [int((decimal.Decimal(2) ** (decimal.Decimal(WEIGHT_BITS * STEPS_PER_BIT - j)
                                         / STEPS_PER_BIT)).to_integral_value(
                                             rounding=decimal.ROUND_HALF_EVEN))
            for j in range(STEPS_PER_BIT)]
  u = np.arange(MAX_STEPS + 1)
  table = np.asarray(base, np.int64)[u % STEPS_PER_BIT] >> (u // STEPS_PER_BIT)
  table[-1] = 0
  table.setflags(write=False)
  return table


def log2_steps(logits: np.ndarray) -> np.ndarray:
  """fp32 logits ``[..., 256]`` -> integer steps of 1/64 bit below the maximum."""
  logits = np.asarray(logits, np.float32)
  if not np.all(np.isfinite(logits)):
    raise FloatingPointError("non-finite compressor logits")
  d = np.max(logits, axis=-1, keepdims=True) - logits  # fp32, exact rounding
  u = np.rint(np.minimum(d.astype(np.float64) * _SCALE, MAX_STEPS))
  return u.astype(np.int64)


def frequencies(logits: np.ndarray, prob_bits: int = 16) -> np.ndarray:
  """fp32 logits ``[..., 256]`` -> uint16/int32 frequencies summing to ``2^prob_bits``."""
  w = weight_table()[log2_steps(logits)]
  total = np.sum(w, axis=-1, keepdims=True)
  m = 1 << prob_bits
  f = 1 + (w * (m - 256)) // total
  rem = m - np.sum(f, axis=-1)
  top = np.argmax(w, axis=-1)  # first maximum: the lowest byte on ties
  np.put_along_axis(f, top[..., None], np.take_along_axis(f, top[..., None], -1)
                    + rem[..., None], axis=-1)
  return f.astype(np.uint16 if prob_bits <= 16 else np.int32)


@functools.lru_cache(maxsize=None)
def cost_table(prob_bits: int) -> np.ndarray:
  """``COST[f] = prob_bits - log2(f)`` bits (encoder-side segmentation only)."""
  f = np.arange(1 << prob_bits | 1, dtype=np.float64)
  with np.errstate(divide="ignore"):
    table = prob_bits - np.log2(f)
  table.setflags(write=False)
  return table
