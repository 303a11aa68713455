"""Model logits -> integer frequency tables, identical on every machine (or flagged).

The coder needs the encoder and the decoder to agree on every frequency to the
last bit. The model's logits are computed in float64 (``proxyjax.neural.byte_lm``),
so two runs differ by accumulated rounding only (~1e-13 relative); everything
after the logits is either an exactly rounded IEEE operation or integer
arithmetic:

1. ``d = max(logits) - logits`` over the 256 byte ids, in float64 (the
   softmax is shift-invariant, so this renormalises over the bytes);
2. ``x = d * 64 / ln 2`` in float64 and ``u = rint(min(x, MAX_STEPS))``: the
   negative log2-probability (up to the normaliser) in steps of 1/64 bit, an
   integer (round half to even);
3. ``w = 2^(30 - u/64)`` from an integer table (built with ``decimal``, whose
   powers are correctly rounded, then integer shifts);
4. ``f = 1 + floor(w * (M - 256) / sum(w))`` with ``M = 2^prob_bits``, and the
   remainder ``M - sum(f)`` goes to the most probable byte (lowest byte on
   ties). Integer arithmetic only: every byte gets ``f >= 1``, ``sum f = M``.

So the table is a function of the integer vector ``u`` alone, and ``u`` can
only differ between two machines where some ``x`` lies next to a rounding
boundary (a half-integer below ``MAX_STEPS``; beyond it the clamp makes every
value equal). **Fragility:** a position's table is *fragile* when any of its
256 entries has ``x < MAX_STEPS`` within ``FRAGILE_MARGIN`` steps of a
half-integer. A robust table is reproduced exactly by any evaluation whose
``x`` differs by less than the margin, whatever the batch shape, device,
XLA version or summation order; the coder never relies on a fragile table
(``proxyjax.views.neural.coder``). The decision *which* positions are fragile is the
encoder's alone (the decoder never evaluates it), so it need not be
reproducible itself. **(differs: docs/method.md §6 asks for tables that are bit-exact on any
machine; float logits cannot promise that at every position, so here they are
exact wherever the evaluation noise stays below the margin, and the positions
where that cannot be guaranteed are detected and never coded.)**

The same computation runs on the accelerator inside the model call
(``device_tables``, all integer after step 2) and on the host in numpy
(``frequencies``, the reference; tests check they agree exactly).

The 1/64-bit grid costs < 0.001 bits per byte against the exact softmax.
"""

from __future__ import annotations

import decimal
import functools

import numpy as np

STEPS_PER_BIT = 64
WEIGHT_BITS = 30
MAX_STEPS = STEPS_PER_BIT * (WEIGHT_BITS + 1)  # beyond: weight 0 (the +1 floor remains)
_SCALE = STEPS_PER_BIT / float(np.log(2.0))  # a fixed float64 constant

FRAGILE_MARGIN = 1e-6
"""Distance (in 1/64-bit steps) from a rounding boundary below which a table is fragile.

Noise budget: a logit error ``e`` moves ``x = (max - logit) * 92.3`` by at most
``2 * 92.3 * e``, so the margin tolerates logit differences up to ~5e-9
between the encoder's and the decoder's evaluation. The float64 forward's
cross-batch / cross-machine differences are ~1e-13 relative (~1e-12 absolute
for logits of magnitude 10): four orders of magnitude inside the margin. (The
float32 forward differs by ~1e-5 between batch shapes: it would need a margin
near 1e-2 steps, making nearly every 256-entry table fragile.) The price: each
entry below the clamp is fragile with probability ``2 * margin``, so about
``2e-6 * 256 = 5e-4`` of the positions are, and those bytes stay literal.
"""


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


def _scaled(logits: np.ndarray) -> np.ndarray:
  """float64 ``x = (max - logits) * 64 / ln 2`` (see the module docstring)."""
  logits = np.asarray(logits)
  if logits.dtype != np.float64:
    # float32 (or lower) logits are accepted but noisy: see FRAGILE_MARGIN.
    logits = logits.astype(np.float64)
  if not np.all(np.isfinite(logits)):
    raise FloatingPointError("non-finite compressor logits")
  d = np.max(logits, axis=-1, keepdims=True) - logits
  return d * _SCALE


def _fragile_entries(x: np.ndarray, margin: float) -> np.ndarray:
  """Entries within ``margin`` of a rounding boundary ``k + 1/2 < MAX_STEPS``."""
  return (x < MAX_STEPS) & (np.abs(x - np.floor(x) - 0.5) < margin)


def _steps(x: np.ndarray) -> np.ndarray:
  """``u = rint(min(x, MAX_STEPS))`` as integers (round half to even)."""
  return np.rint(np.minimum(x, MAX_STEPS)).astype(np.int64)


def log2_steps(logits: np.ndarray) -> np.ndarray:
  """float64 logits ``[..., 256]`` -> integer steps of 1/64 bit below the maximum."""
  return _steps(_scaled(logits))


def fragile(logits: np.ndarray, margin: float = FRAGILE_MARGIN) -> np.ndarray:
  """``[...]`` bool: whether each position's table is fragile (module docstring)."""
  return np.any(_fragile_entries(_scaled(logits), margin), axis=-1)


def frequencies_from_steps(u: np.ndarray, prob_bits: int = 16) -> np.ndarray:
  """Integer steps ``[..., 256]`` -> frequencies summing to ``2^prob_bits`` (step 3-4)."""
  w = weight_table()[u]
  total = np.sum(w, axis=-1, keepdims=True)
  m = 1 << prob_bits
  f = 1 + (w * (m - 256)) // total
  rem = m - np.sum(f, axis=-1)
  top = np.argmax(w, axis=-1)  # first maximum: the lowest byte on ties
  np.put_along_axis(f, top[..., None], np.take_along_axis(f, top[..., None], -1)
                    + rem[..., None], axis=-1)
  return f.astype(np.uint16 if prob_bits <= 16 else np.int32)


def frequencies(logits: np.ndarray, prob_bits: int = 16) -> np.ndarray:
  """float64 logits ``[..., 256]`` -> uint16 frequencies summing to ``2^prob_bits``."""
  return frequencies_from_steps(log2_steps(logits), prob_bits)


def tables_and_fragility(logits: np.ndarray, prob_bits: int = 16,
                         margin: float = FRAGILE_MARGIN) -> tuple[np.ndarray, np.ndarray]:
  """(frequencies ``[..., 256]``, fragile ``[...]``): the numpy reference of
  ``device_tables``."""
  x = _scaled(logits)
  return (frequencies_from_steps(_steps(x), prob_bits),
          np.any(_fragile_entries(x, margin), axis=-1))


def device_tables(logits, prob_bits: int, margin: float = FRAGILE_MARGIN):
  """``tables_and_fragility`` in ``jax.numpy``, for use inside a jitted call with
  x64 enabled (float64 logits in, uint16 frequencies and bool fragility out).

  Steps 1-2 are single IEEE operations (subtract, multiply, min, round half to
  even) and steps 3-4 are int64 arithmetic, so for the same float64 logits the
  result equals the numpy reference bit for bit.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if logits.dtype != jnp.float64:
    raise TypeError(f"device_tables needs float64 logits (x64 enabled), got {logits.dtype}")
  x = (jnp.max(logits, axis=-1, keepdims=True) - logits) * _SCALE
  is_fragile = jnp.any((x < MAX_STEPS) & (jnp.abs(x - jnp.floor(x) - 0.5) < margin), axis=-1)
  u = jnp.rint(jnp.minimum(x, MAX_STEPS)).astype(jnp.int32)  # half to even, as np.rint
  w = jnp.asarray(weight_table(), jnp.int64)[u]
  total = jnp.sum(w, axis=-1, keepdims=True)
  m = 1 << prob_bits
  f = 1 + (w * (m - 256)) // total
  rem = m - jnp.sum(f, axis=-1)
  top = jnp.argmax(w, axis=-1)  # first maximum, as numpy
  f = f + jnp.where(jnp.arange(256) == top[..., None], rem[..., None], 0)
  return f.astype(jnp.uint16 if prob_bits <= 16 else jnp.int32), is_fragile


@functools.lru_cache(maxsize=None)
def cost_table(prob_bits: int) -> np.ndarray:
  """``COST[f] = prob_bits - log2(f)`` bits (encoder-side segmentation only)."""
  f = np.arange(1 << prob_bits | 1, dtype=np.float64)
  with np.errstate(divide="ignore"):
    table = prob_bits - np.log2(f)
  table.setflags(write=False)
  return table


# --- predictive entropy of an integer table (segmentation; encoder only) ------------

ENTROPY_FRAC_BITS = 20
"""h_t is computed in integer units of 2^-(prob_bits + 20) bits (exact sums)."""


@functools.lru_cache(maxsize=None)
def entropy_table(prob_bits: int) -> np.ndarray:
  """``ENT[f] = round(f * log2(f) * 2^20)`` (int64) for f in [0, 2^prob_bits]."""
  f = np.arange((1 << prob_bits) + 1, dtype=np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    v = np.where(f > 0, f * np.log2(np.maximum(f, 1.0)), 0.0)
  table = np.rint(v * (1 << ENTROPY_FRAC_BITS)).astype(np.int64)
  table.setflags(write=False)
  return table


def entropy_units(freqs: np.ndarray, prob_bits: int = 16) -> np.ndarray:
  """Integer entropy of tables ``[..., 256]`` (sum ``M = 2^prob_bits``):
  ``prob_bits * M * 2^20 - sum_c ENT[f_c]``, i.e. ``h * M * 2^20`` with
  ``h = -sum_c (f_c / M) log2(f_c / M)`` (the table's entropy in bits). A function of
  the integer table alone, so equal tables give equal entropies on any device."""
  ent = entropy_table(prob_bits)[np.asarray(freqs, np.int64)]
  return (prob_bits << (prob_bits + ENTROPY_FRAC_BITS)) - ent.sum(-1)


def units_to_bits(units: np.ndarray, prob_bits: int = 16) -> np.ndarray:
  """``entropy_units`` -> float64 bits (exact: a division by a power of two)."""
  return np.asarray(units, np.int64).astype(np.float64) / float(1 << (prob_bits + ENTROPY_FRAC_BITS))


def entropy_bits(freqs: np.ndarray, prob_bits: int = 16) -> np.ndarray:
  """The predictive entropy ``h`` in bits of tables ``[..., 256]``."""
  return units_to_bits(entropy_units(freqs, prob_bits), prob_bits)


def device_entropy(freqs, prob_bits: int):
  """``entropy_units`` in ``jax.numpy`` (int64: call with x64 enabled, inside a jit)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ent = jnp.asarray(entropy_table(prob_bits), jnp.int64)[freqs.astype(jnp.int32)]
  return (prob_bits << (prob_bits + ENTROPY_FRAC_BITS)) - jnp.sum(ent, axis=-1)
