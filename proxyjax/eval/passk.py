"""pass@k with the unbiased estimator (Chen et al., 2021).

With ``n`` samples of which ``c`` pass, the probability that at least one of
``k`` samples drawn without replacement passes is

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i),

and the product form never builds huge binomials (stable for n in the
thousands). It is 1 when ``n - c < k`` (every k-subset holds a pass).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of one problem with ``c`` of ``n`` samples correct."""
  n, c, k = int(n), int(c), int(k)
  if not 0 <= c <= n:
    raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
  if n - c < k:
    return 1.0
  i = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / i))


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int],
                       k: int) -> np.ndarray:
  """Per-problem pass@k; ``num_samples`` is one n for all or one per problem."""
  num_correct = list(num_correct)
  if isinstance(num_samples, (int, np.integer)):
    ns = [int(num_samples)] * len(num_correct)
  else:
    ns = list(num_samples)
    if len(ns) != len(num_correct):
      raise ValueError("num_samples and num_correct differ in length")
  return np.asarray([pass_at_k(n, c, k) for n, c in zip(ns, num_correct)], dtype=np.float64)


def mean_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int],
                   ks: Iterable[int]) -> dict[str, float]:
  """``{"pass@k": mean over problems}`` for every k that every problem has n >= k for."""
  num_correct = list(num_correct)
  if not num_correct:
    return {}
  n_min = (int(num_samples) if isinstance(num_samples, (int, np.integer))
           else min(int(n) for n in num_samples))
  out = {}
  for k in sorted(set(int(k) for k in ks)):
    if 1 <= k <= n_min:
      out[f"pass@{k}"] = float(np.mean(estimate_pass_at_k(num_samples, num_correct, k)))
  return out


__all__ = ["pass_at_k", "estimate_pass_at_k", "mean_pass_at_k"]
