"""ReCode's released perturbed datasets (``eval.recode_path``), read beside our own perturbations.

ReCode (amazon-science/recode) releases its perturbed HumanEval as JSONL files laid out as

    dataset-release/perturbed_finalized/humaneval/full/<category>/
        humaneval_<perturbation>_s<seed>.jsonl

with ``<category>`` one of ``format``, ``func_name``, ``natgen``, ``nlaugmenter`` and one file
per perturbation and seed (``s0`` only for the deterministic ones). Each line is a HumanEval
record of the perturbed problem: ``task_id``, ``prompt``, ``entry_point``,
``canonical_solution``, ``test`` (the ``natgen``/``format`` prompts carry part of the
solution, ``canonical_solution`` the rest). The Hugging Face copy
(``perturbed_humaneval``) has the same fields plus ``seed`` and ``perturbation_name`` per
record; those fields, when present, win over the file name, and a ``category`` field over
the folder. ``eval.recode_path`` is a file, a folder (searched recursively for ``*.jsonl``
and ``*.jsonl.gz``) or a glob.

Metrics per perturbation (``<category>/<name>``), over the problems of the nominal set that
the files cover: nominal pass@k (ours, unperturbed), robust pass@k (correct under every
seed), the drops and attack success (``metrics.robust_metrics``), and the mean pass@1 per
seed; per category the mean of its perturbations' robust pass@k. For the partial-code
categories ReCode compares with nominal partial-code prompts, which it does not release:
our nominal is the full prompt, so their drops are indicative only.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Callable, Sequence

from proxyjax import sandbox
from proxyjax.eval import codegen, passk
from proxyjax.eval.recode import metrics

CATEGORIES = ("format", "func_name", "natgen", "nlaugmenter")
_NAME = re.compile(r"^(?P<dataset>[A-Za-z0-9]+)_(?P<name>.+)_s(?P<seed>\d+)\.jsonl(\.gz)?$")


def find_files(path: str) -> list[str]:
  """The JSONL files ``eval.recode_path`` names (sorted); [] when none."""
  path = os.path.expanduser(path)
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    found = []
    for root, _, names in os.walk(path):
      found += [os.path.join(root, n) for n in names if n.endswith((".jsonl", ".jsonl.gz"))]
    return sorted(found)
  return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))


def hidden_paths(path: str) -> list[str]:
  """What the candidates must not read: the folder ``path`` names, else its files."""
  expanded = os.path.expanduser(path)
  return [expanded] if os.path.isdir(expanded) else find_files(path)


def _key(path: str, rec: dict[str, Any]) -> tuple[str, str, int]:
  """(category, perturbation name, seed) of one record of file ``path``."""
  m = _NAME.match(os.path.basename(path))
  folder = os.path.basename(os.path.dirname(path))
  category = str(rec.get("category") or (folder if folder in CATEGORIES else "released"))
  name = rec.get("perturbation_name") or (m.group("name") if m else None)
  seed = rec.get("seed", m.group("seed") if m else None)
  if name is None or seed is None:
    raise ValueError(f"{path}: cannot tell the perturbation and seed: name the file "
                     "<dataset>_<perturbation>_s<seed>.jsonl (ReCode's layout) or give "
                     "'perturbation_name' and 'seed' in each record")
  return category, str(name), int(seed)


def load(path: str) -> dict[tuple[str, str], dict[int, list[codegen.Problem]]]:
  """``{(category, perturbation): {seed: problems}}`` of the released files under ``path``.

  Raises FileNotFoundError when ``path`` names no file and ValueError on a record
  without the HumanEval fields.
  """
  files = find_files(path)
  if not files:
    raise FileNotFoundError(f"no ReCode JSONL files at {path}")
  out: dict[tuple[str, str], dict[int, list[codegen.Problem]]] = {}
  for f in files:
    for rec in codegen.read_records(f):
      missing = [k for k in ("task_id", "prompt", "entry_point", "test") if k not in rec]
      if missing:
        raise ValueError(f"{f}: a record lacks {', '.join(missing)} (ReCode's HumanEval "
                         "format: task_id, prompt, entry_point, canonical_solution, test)")
      category, name, seed = _key(f, rec)
      problem = codegen.Problem(
          task_id=str(rec["task_id"]), prompt=rec["prompt"], entry_point=rec["entry_point"],
          canonical_solution=rec.get("canonical_solution") or "", test=rec["test"],
          variant=f"recode:{category}:{name}:{seed}")
      out.setdefault((category, name), {}).setdefault(seed, []).append(problem)
  return out


def suites(released, nominal: Sequence[codegen.Problem]
           ) -> dict[tuple[str, str], list[list[codegen.Problem]]]:
  """Per perturbation, its seeds' problems aligned with ``nominal`` (``[seed][problem]``),
  keeping the nominal problems every seed covers; perturbations covering none are left out."""
  out = {}
  for key, by_seed in sorted(released.items()):
    maps = [{p.task_id: p for p in by_seed[s]} for s in sorted(by_seed)]
    covered = [p.task_id for p in nominal if all(p.task_id in m for m in maps)]
    if covered:
      out[key] = [[m[t] for t in covered] for m in maps]
  return out


def evaluate_released(nominal: Sequence[codegen.Problem], released,
                      complete: Callable[[Sequence[codegen.Problem]], Sequence[Sequence[str]]],
                      *, ks=(1,), limits: sandbox.Limits | None = None,
                      workers: int | None = None,
                      hide_paths: Sequence[str] | None = None) -> dict[str, Any]:
  """Nominal vs released perturbations (see the module doc). ``complete(problems)`` gives
  the post-processed completions of each problem's prompt; ``hide_paths``: files the
  candidates must not read (``codegen.execute``; pass the released files too)."""
  ks = tuple(ks)

  def correctness(ps):
    results = codegen.execute(ps, complete(ps), limits=limits, workers=workers,
                              hide_paths=hide_paths)
    return [[r.passed for r in rs] for rs in results]

  nominal_ok = dict(zip((p.task_id for p in nominal), correctness(nominal)))
  perturbations: dict[str, Any] = {}
  by_category: dict[str, list[dict[str, float]]] = {}
  for (category, name), seeds in suites(released, nominal).items():
    ids = [p.task_id for p in seeds[0]]
    per_seed = [correctness(ps) for ps in seeds]
    by_problem = [[per_seed[s][i] for s in range(len(seeds))] for i in range(len(ids))]
    m = metrics.robust_metrics([nominal_ok[t] for t in ids], by_problem, ks)
    seed_pass = [passk.mean_pass_at_k([len(x) for x in seed], [sum(x) for x in seed], (1,))
                 for seed in per_seed]
    m.update({"num_problems": len(ids), "num_seeds": len(seeds),
              "per_seed_pass@1": [p.get("pass@1", 0.0) for p in seed_pass]})
    perturbations[f"{category}/{name}"] = m
    by_category.setdefault(category, []).append(m)
  categories = {}
  for category, ms in by_category.items():
    categories[category] = {"perturbations": len(ms)}
    for k in ks:
      for key in (f"nominal_pass@{k}", f"robust_pass@{k}"):
        vals = [m[key] for m in ms if key in m]
        if vals:
          categories[category][f"mean_{key}"] = sum(vals) / len(vals)
  return {"perturbations": perturbations, "categories": categories}
