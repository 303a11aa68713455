r"""Run an ablation: its arms one after another, then one comparison report.

    python -m proxyjax.ablate --ablation=views --scale=ci --workdir=W \
        [--arms=bytes,deflate] [--budget=utf8_bytes:20M] [--neural_dir=SHARDS] [--view=tokenizer]
        [--seed=0]

Writes W/arms/<arm>/ (a training run directory each), W/report.md, W/report.json and
the plots in W. Re-running the same command resumes: finished arms are skipped, a
partial arm continues from its newest checkpoint. ``--list`` prints the ablations and
their arms. Bad flags, an unknown ablation or arm, or a W started with another scale or
budget: one line, exit status 2. The library is ``proxyjax.ablation``; see
docs/ablations.md.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags, logging

from proxyjax import ablation, cli
from proxyjax.ablation import budget as budget_lib
from proxyjax.ablation import catalog
from proxyjax.ablation import workdir as workdir_lib
from proxyjax.errors import UserError


def _define_flags():
  """Defines the CLI flags (only when run as a program)."""
  flags.DEFINE_string("ablation", None, "Ablation: " + ", ".join(ablation.ABLATIONS) + ".")
  flags.DEFINE_string("scale", "", "Scale: " + ", ".join(ablation.SCALES)
                      + " ('' = detect: cpu, colab_gpu or colab_tpu).")
  flags.DEFINE_string("workdir", None, "The ablation's directory W.")
  flags.DEFINE_list("arms", [], "Arms to run (default: all of the ablation).")
  flags.DEFINE_string("budget", "", "KIND:AMOUNT with KIND steps, utf8_bytes or train_flops "
                      "('' = the ablation's default for the scale).")
  flags.DEFINE_string("neural_dir", "", "Shards of `python -m proxyjax.compress` for the "
                      "neural arm (skipped without).")
  flags.DEFINE_string("view", "tokenizer", "The proxy view of the mixing ablation.")
  flags.DEFINE_integer("seed", 0, "config.seed of every arm (data order, view draws, init); "
                       "run another seed in another workdir to measure the spread.")
  flags.DEFINE_string("sources", "", "data.sources of every arm ('' = the scale's corpus; "
                      "required at --scale=pod, whose ladder configs have none).")
  flags.DEFINE_bool("list", False, "Print the ablations and their arms, then exit.")


def list_ablations() -> str:
  lines = []
  for name, abl in ablation.ABLATIONS.items():
    budgets = ", ".join(f"{k} {v}" for k, v in abl.budgets.items()) or "no training"
    lines.append(f"{name}: {abl.description} (default budgets: {budgets})")
    for arm in abl.arms:
      lines.append(f"  {arm.name:<18} {arm.description}")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  cli.no_positional(argv)
  f = flags.FLAGS
  if f.list:
    print(list_ablations())
    return
  if not f.ablation:
    raise UserError("--ablation is required: one of " + ", ".join(ablation.ABLATIONS))
  if not f.workdir:
    raise UserError("--workdir is required")
  logging.set_verbosity(logging.WARNING)
  if not f.scale:  # what can be checked before detecting the scale (which imports JAX)
    abl = catalog.get(f.ablation)
    catalog.select_arms(abl, catalog.Options(view=f.view), list(f.arms))
    if f.budget:
      budget_lib.parse_budget(f.budget)
  scale = f.scale or ablation.detect_scale()
  request = dict(scale=scale, workdir=f.workdir, budget=f.budget or None,
                 arms=list(f.arms) or None, neural_dir=f.neural_dir, view=f.view, seed=f.seed,
                 sources=f.sources)
  workdir_lib.preflight(f.ablation, **request)  # bad input: one line, before importing JAX

  def log(line: str) -> None:
    print(f"ablate: {line}", file=sys.stderr, flush=True)

  result = ablation.run(f.ablation, log=log, **request)
  print(result.markdown, end="", flush=True)


if __name__ == "__main__":
  _define_flags()
  cli.run(main, prog="proxyjax.ablate")  # bad flags, UserError: one line (--verbose)
