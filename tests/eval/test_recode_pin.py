"""Pins the ReCode perturbations: byte-identical output for fixed inputs and seeds.

The fixture (``tests/fixtures/recode_pin.json``) was recorded from the
single-module implementation (``proxyjax/eval/robustness.py``) before it was
split into ``proxyjax/eval/recode/``; every perturbation must still produce
exactly the same problems. It holds a sha256 of every field of each perturbed
problem for the first 20 HumanEval problems x every family x seeds 0 and 1,
one combined sha256 per (family, seed) over all 164 problems for seeds 0-4,
the same for an MBPP-style problem, and each family's rewrite names.

Regenerate (only for an intended change of behaviour):
``python tests/eval/test_recode_pin.py --regen``.
"""

import dataclasses
import hashlib
import json
import os
import sys

import pytest

from proxyjax.eval import codegen, recode

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "fixtures", "recode_pin.json")
NUM_PER_OUTPUT = 20
PER_OUTPUT_SEEDS = (0, 1)
COMBINED_SEEDS = (0, 1, 2, 3, 4)

MBPP_RECORD = {
    "task_id": 7, "text": "Write a function to add one to every item of a list.",
    "code": "def add_one_all(xs):\n  return [x + 1 for x in xs]\n",
    "test_list": ["assert add_one_all([1, 2]) == [2, 3]", "assert add_one_all([]) == []"]}


def _digest(problem) -> str:
  blob = json.dumps(dataclasses.asdict(problem), sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def record() -> dict:
  humaneval = codegen.load_humaneval()
  mbpp = codegen.problem_from_record(MBPP_RECORD)
  out = {"families": list(recode.FAMILIES),
         "rewrites": {f: list(recode.family_rewrites(f)) for f in recode.FAMILIES},
         "per_output": {}, "combined": {}, "mbpp": {}}
  for family in recode.FAMILIES:
    for seed in COMBINED_SEEDS:
      digests = [_digest(recode.perturb(p, family, seed)) for p in humaneval]
      if seed in PER_OUTPUT_SEEDS:
        for p, d in zip(humaneval[:NUM_PER_OUTPUT], digests):
          out["per_output"][f"{family}|{seed}|{p.task_id}"] = d
      out["combined"][f"{family}|{seed}"] = hashlib.sha256(
          "\n".join(digests).encode()).hexdigest()
      out["mbpp"][f"{family}|{seed}"] = _digest(recode.perturb(mbpp, family, seed))
  return out


@pytest.fixture(scope="module")
def pinned():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def current():
  return record()


def test_families_and_rewrites_pinned(pinned, current):
  assert current["families"] == pinned["families"]
  assert current["rewrites"] == pinned["rewrites"]


def test_every_output_of_the_first_problems_pinned(pinned, current):
  assert len(pinned["per_output"]) == len(recode.FAMILIES) * len(PER_OUTPUT_SEEDS) * NUM_PER_OUTPUT
  changed = sorted(k for k, v in pinned["per_output"].items() if current["per_output"].get(k) != v)
  assert not changed


def test_all_problems_and_seeds_pinned(pinned, current):
  assert len(pinned["combined"]) == len(recode.FAMILIES) * len(COMBINED_SEEDS)
  assert current["combined"] == pinned["combined"]
  assert current["mbpp"] == pinned["mbpp"]


if __name__ == "__main__":
  if sys.argv[1:] != ["--regen"]:
    sys.exit(f"usage: python {sys.argv[0]} --regen")
  with open(FIXTURE, "w", encoding="utf-8") as f:
    json.dump(record(), f, indent=1, sort_keys=True)
    f.write("\n")
  print(f"wrote {FIXTURE}")
