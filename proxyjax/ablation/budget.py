"""Budgets: how long each arm trains, as steps, UTF-8 bytes seen or training FLOPs.

    steps:N          every arm trains N steps;
    utf8_bytes:B     each arm trains until it has seen about B UTF-8 bytes of documents;
    train_flops:F    each arm trains until it has spent about F training FLOPs.

Amounts take the suffixes k, M, G, T, P (powers of 1000) and exponents (``2e9``).

A byte or FLOP budget is turned into ``num_steps`` *before* training, so that the
learning-rate schedule ends where the arm ends. ``proxyjax.ablation.probe`` runs the arm's data pipeline
(no model) for a few batches per mixing phase and measures per step

* symbols: non-PAD input positions;
* UTF-8 bytes: symbols x (document bytes / ids emitted) of the stream, the estimate the
  trainer logs as ``utf8_bytes_per_s`` (each document counted once, also when it is both
  halves of a pair);
* FLOPs: ``proxyjax.train.metrics.train_flops``, the trainer's formula,
  ``6 N symbols + 12 H E L pairs`` (N: parameters touched per symbol, all but the
  embedding table; H heads of width E, L layers; pairs: causal same-document
  query/key pairs of the probe's rows).

With the paper's mixing schedule the compressed rate ramps up over the warm-up, so
bytes per step change: the probe measures the warm-up's start (initial rate and
mode), its end (peak rate, initial mode) and the steady phase (peak rate, steady
mode); a warm-up step in between takes ids-per-byte interpolated linearly between
the first two (ids per byte is linear in the rate). ``steps_for`` then finds the
smallest step count whose predicted total reaches the budget (the warm-up length
itself follows the step count, ``scales.finalize``). The report states the totals the
arm actually reached.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from proxyjax.errors import UserError

KINDS = ("steps", "utf8_bytes", "train_flops")
_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12, "P": 1e15}


class BudgetError(UserError, ValueError):
  """A budget that cannot be parsed or met."""


@dataclasses.dataclass(frozen=True)
class Budget:
  """What each arm of an ablation gets: ``kind`` (``KINDS``) and ``amount``."""
  kind: str
  amount: float

  def __str__(self) -> str:
    a = float(self.amount)
    return f"{self.kind}:{int(a)}" if a.is_integer() else f"{self.kind}:{a:g}"


def parse_budget(spec: str) -> Budget:
  """``KIND:AMOUNT`` (e.g. ``steps:200``, ``utf8_bytes:20M``, ``train_flops:3e13``)."""
  kind, sep, amount = str(spec).strip().partition(":")
  if not sep or kind not in KINDS:
    raise BudgetError(f"budget {spec!r}: expected KIND:AMOUNT with KIND one of "
                      f"{', '.join(KINDS)} (e.g. steps:200, utf8_bytes:20M)")
  m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGBTP]?)\s*", amount)
  if not m:
    raise BudgetError(f"budget {spec!r}: amount {amount!r} is not a number (suffixes k, M, "
                      "G, T, P allowed)")
  value = float(m.group(1)) * _SUFFIX[m.group(2)]
  if not math.isfinite(value) or value <= 0:
    raise BudgetError(f"budget {spec!r}: the amount must be positive")
  if kind == "steps":
    if not value.is_integer():
      raise BudgetError(f"budget {spec!r}: steps must be a whole number")
  return Budget(kind, float(int(value)) if value.is_integer() else value)


@dataclasses.dataclass(frozen=True)
class Phase:
  """Per-step means of the data stream at one constant rate and mode."""
  rate: float
  mode: str
  batches: int
  documents: int
  symbols_per_step: float
  pairs_per_step: float
  bytes_per_id: float
  flops_per_step: float

  @property
  def bytes_per_step(self) -> float:
    return self.symbols_per_step * self.bytes_per_id


@dataclasses.dataclass(frozen=True)
class Probe:
  """The stream's phases: ``start`` and ``warm_end`` of the mixing warm-up (None when
  the schedule is off) and ``steady``; ``n_dense`` as in the trainer."""
  n_dense: int
  steady: Phase
  start: Phase | None = None
  warm_end: Phase | None = None

  def to_dict(self) -> dict[str, Any]:
    out: dict[str, Any] = {"n_dense": self.n_dense}
    for name in ("start", "warm_end", "steady"):
      p = getattr(self, name)
      if p is not None:
        out[name] = {**dataclasses.asdict(p), "bytes_per_step": p.bytes_per_step}
    return out


def per_step(probe_: Probe, kind: str, num_steps: int, warmup_steps: int) -> np.ndarray:
  """Predicted bytes (``utf8_bytes``) or FLOPs (``train_flops``) of each of
  ``num_steps`` steps, with a mixing warm-up of ``warmup_steps`` steps."""
  n = int(num_steps)
  out = np.empty(n, dtype=np.float64)
  if kind == "utf8_bytes":
    out[:] = probe_.steady.bytes_per_step
  else:
    out[:] = probe_.steady.flops_per_step
  if probe_.start is not None and warmup_steps > 0:
    w = min(int(warmup_steps), n)
    t = np.arange(w, dtype=np.float64) / float(warmup_steps)
    a, b = probe_.start, probe_.warm_end
    if kind == "utf8_bytes":  # ids per byte is linear in the rate
      ipb = (1 - t) / max(a.bytes_per_id, 1e-12) + t / max(b.bytes_per_id, 1e-12)
      sym = (1 - t) * a.symbols_per_step + t * b.symbols_per_step
      out[:w] = sym / ipb
    else:
      out[:w] = (1 - t) * a.flops_per_step + t * b.flops_per_step
  return out


def steps_for(budget: Budget, probe_: Probe | None, warmup_of=lambda n: 0,
              max_steps: int = 10_000_000) -> int:
  """The smallest number of steps whose predicted total reaches ``budget``;
  ``warmup_of(n)`` is the mixing warm-up of an n-step run."""
  if budget.kind == "steps":
    return int(budget.amount)
  if probe_ is None:
    raise BudgetError(f"budget {budget}: needs a probe of the data stream")
  rate = (probe_.steady.bytes_per_step if budget.kind == "utf8_bytes"
          else probe_.steady.flops_per_step)
  if not rate > 0:
    raise BudgetError(f"budget {budget}: the probe measured no {budget.kind} per step (an "
                      "empty data stream?)")

  def total(n: int) -> float:
    return float(np.sum(per_step(probe_, budget.kind, n, warmup_of(n))))

  lo, hi = 1, max(1, math.ceil(budget.amount / rate))
  while total(hi) < budget.amount:  # the warm-up can make steps cheaper than the steady ones
    lo, hi = hi, hi * 2
    if hi > max_steps:
      raise BudgetError(f"budget {budget}: needs more than {max_steps} steps")
  while lo < hi:
    mid = (lo + hi) // 2
    if total(mid) >= budget.amount:
      hi = mid
    else:
      lo = mid + 1
  return lo


def predicted_totals(probe_: Probe | None, num_steps: int, warmup_steps: int) -> dict[str, float]:
  """Predicted ``utf8_bytes`` and ``train_flops`` of a planned run."""
  if probe_ is None:
    return {}
  return {k: float(np.sum(per_step(probe_, k, num_steps, warmup_steps)))
          for k in ("utf8_bytes", "train_flops")}
