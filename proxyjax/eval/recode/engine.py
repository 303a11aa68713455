"""Choosing and applying a family's rewrites: ``perturb`` and ``perturbed_suite``.

``perturb(problem, family, seed)`` is deterministic: the rewrite is chosen
from a per-problem order of the family's rewrites (seed ``s`` takes the
``s``-th, so different seeds give different rewrites as long as there are
enough) and its random choices come from ``random.Random`` keyed by
``(family, task_id, seed)``. Each result is checked: the prompt must parse,
``prompt + canonical_solution`` must compile, and the entry function must
still be there; a rewrite that fails is skipped for the next one, and a
problem no rewrite applies to comes back unchanged (``variant`` says so).
"""

from __future__ import annotations

import dataclasses
import random
import tokenize
from typing import Sequence

from proxyjax.eval.recode import docstrings, formatting, function_names, source, syntax

Problem = source.Problem

_OPS: dict[str, dict[str, source.Op]] = {
    m.FAMILY: m.OPS for m in (function_names, formatting, syntax, docstrings)}
FAMILIES = tuple(_OPS)  # ("func_name", "format", "syntax", "docstring")
DEFAULT_NUM_SEEDS = 5


def _family_ops(family: str) -> dict[str, source.Op]:
  if family not in _OPS:
    raise ValueError(f"unknown perturbation family {family!r}; known: {', '.join(FAMILIES)}")
  return _OPS[family]


def family_rewrites(family: str) -> tuple[str, ...]:
  """Names of a family's rewrites."""
  return tuple(_family_ops(family))


def perturb(problem: Problem, family: str, seed: int) -> Problem:
  """A deterministic perturbation of ``problem`` (see the module doc).

  The result keeps ``task_id``; ``entry_point`` is the new name for
  ``func_name``; ``canonical_solution`` and the tests follow renames;
  ``variant`` is ``family:rewrite:seed`` (``family:none:seed`` when no rewrite
  applies).
  """
  ops = _family_ops(family)
  parsed = source.parse(problem)
  if parsed is not None:
    order = _applicable(problem, family, parsed, ops)
    for j in range(len(order)):
      name = order[(seed + j) % len(order)]
      out = _apply(problem, family, parsed, ops[name], name, seed)
      if out is not None:
        return dataclasses.replace(out, variant=f"{family}:{name}:{seed}")
  return dataclasses.replace(problem, variant=f"{family}:none:{seed}")


def perturbed_suite(problems: Sequence[Problem], family: str,
                    num_seeds: int = DEFAULT_NUM_SEEDS) -> list[list[Problem]]:
  """``[seed][problem]`` perturbed problems."""
  return [[perturb(p, family, s) for p in problems] for s in range(num_seeds)]


def _apply(problem: Problem, family: str, parsed: source.Parsed, op: source.Op, name: str,
           seed: int | str) -> Problem | None:
  rng = random.Random(f"{family}|{problem.task_id}|{seed}|{name}")
  try:
    out = op(problem, parsed, rng)
  except (SyntaxError, ValueError, tokenize.TokenError, IndentationError):
    return None
  if out is None or out.prompt == problem.prompt or not source.valid(out):
    return None
  return out


_APPLICABLE_CACHE: dict[tuple, list[str]] = {}


def _applicable(problem: Problem, family: str, parsed: source.Parsed,
                ops: dict[str, source.Op]) -> list[str]:
  """The family's rewrites in a per-problem order, those that apply first.

  Seed ``s`` starts at the ``s``-th, so the first seeds get distinct rewrites
  whenever enough of them apply.
  """
  key = (family, problem.task_id, problem.prompt, problem.entry_point,
         problem.canonical_solution)
  cached = _APPLICABLE_CACHE.get(key)
  if cached is not None:
    return cached
  names = sorted(ops)
  order = random.Random(f"order|{family}|{problem.task_id}").sample(names, len(names))
  works = [n for n in order if _apply(problem, family, parsed, ops[n], n, "probe") is not None]
  result = works + [n for n in order if n not in works]
  if len(_APPLICABLE_CACHE) > 4096:
    _APPLICABLE_CACHE.clear()
  _APPLICABLE_CACHE[key] = result
  return result
