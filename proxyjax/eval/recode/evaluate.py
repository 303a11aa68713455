"""Nominal and per-family robust metrics of a completion function (runs the tests)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from proxyjax import sandbox
from proxyjax.eval import codegen, passk
from proxyjax.eval.recode import engine, metrics

Problem = codegen.Problem


def evaluate_robustness(problems: Sequence[Problem],
                        complete: Callable[[Sequence[Problem]], Sequence[Sequence[str]]], *,
                        families: Iterable[str] = engine.FAMILIES,
                        num_seeds: int = engine.DEFAULT_NUM_SEEDS,
                        ks: Iterable[int] = (1,), limits: sandbox.Limits | None = None,
                        workers: int | None = None) -> dict[str, Any]:
  """Nominal and per-family robust metrics of a completion function.

  ``complete(problems)`` returns post-processed completions per problem (it
  sees the perturbed prompts and entry points).
  """
  ks = tuple(ks)

  def correctness(ps):
    results = codegen.execute(ps, complete(ps), limits=limits, workers=workers)
    return [[r.passed for r in rs] for rs in results]

  nominal = correctness(problems)
  out: dict[str, Any] = {"num_problems": len(problems), "num_seeds": num_seeds, "families": {}}
  for family in families:
    per_seed = [correctness(ps) for ps in engine.perturbed_suite(problems, family, num_seeds)]
    by_problem = [[per_seed[s][i] for s in range(num_seeds)] for i in range(len(problems))]
    family_metrics = metrics.robust_metrics(nominal, by_problem, ks)
    family_metrics["per_seed_pass@1"] = [
        sum(sum(x) / len(x) for x in seed if x) / max(len(seed), 1) for seed in per_seed]
    out["families"][family] = family_metrics
  nominal_ks = passk.mean_pass_at_k([len(x) for x in nominal], [sum(x) for x in nominal], ks)
  out.update({f"nominal_{k}": v for k, v in nominal_ks.items()})
  return out
