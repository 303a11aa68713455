"""The ablation's directory W: what it was started with, and the checks before any work.

    W/state.json         {"ablation", "scale", "budget", "options", "arms": {arm: "done"}}
    W/arms/<arm>/arm.json  the arm's overrides, plan (steps, probe) and status

Everything here is cheap (no JAX): ``preflight`` runs every check on what was asked
(ablation, arms, scale, budget, and W's recorded ablation, scale, budget and options),
so a bad request fails in one line before anything is imported or trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

from proxyjax import paths
from proxyjax.ablation import budget as budget_lib
from proxyjax.ablation import catalog, scales
from proxyjax.errors import UserError

STATE_FILE = "state.json"
ARM_FILE = "arm.json"
STATE_VERSION = 1


class WorkdirMismatch(UserError):
  """W was started with another ablation, scale, budget or options."""


def read_json(path: str) -> dict[str, Any] | None:
  """The JSON object in ``path``; None if missing or unreadable."""
  try:
    data = json.loads(paths.read_text(path))
  except (OSError, json.JSONDecodeError, UnicodeDecodeError):
    return None
  return data if isinstance(data, dict) else None


def write_json(path: str, data: Any) -> None:
  """Writes ``data`` atomically (temporary file, then rename; one upload remotely)."""
  paths.write_text(path, json.dumps(data, indent=1, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class Request:
  """A checked request: what ``runner.run`` does."""
  ablation: catalog.Ablation
  scale: str
  workdir: str
  budget: budget_lib.Budget | None  # None: the ablation trains nothing
  options: catalog.Options
  arms: tuple[catalog.Arm, ...]

  @property
  def budget_str(self) -> str:
    return str(self.budget) if self.budget is not None else "none"

  def state(self) -> dict[str, Any]:
    return {"version": STATE_VERSION, "ablation": self.ablation.name, "scale": self.scale,
            "budget": self.budget_str, "options": dataclasses.asdict(self.options)}


def resolve_budget(ablation: catalog.Ablation, scale: str,
                   budget: str | None) -> budget_lib.Budget | None:
  """The parsed budget (the ablation's default for ``scale`` when None or '')."""
  if ablation.kind != "train":
    if budget:
      raise UserError(f"the {ablation.name!r} ablation trains nothing: it takes no budget")
    return None
  return budget_lib.parse_budget(budget or ablation.budgets[scale])


def check_workdir(workdir: str, state: dict[str, Any]) -> None:
  """Refuses a W started with another ablation, scale, budget or options."""
  old = read_json(paths.join(workdir, STATE_FILE))
  if old is None:
    return
  for key in ("ablation", "scale", "budget"):
    if old.get(key) != state[key]:
      raise WorkdirMismatch(
          f"{workdir} holds the {old.get('ablation')!r} ablation at scale {old.get('scale')!r} "
          f"with budget {old.get('budget')}, but this run asks for {key} {state[key]!r}: "
          f"use another workdir, or {key} {old.get(key)!r}")
  defaults = dataclasses.asdict(catalog.Options())  # options added since W was started
  for key, value in state["options"].items():
    was = old.get("options", {}).get(key, defaults.get(key))
    if was != value:
      raise WorkdirMismatch(f"{workdir} was started with {key}={was!r}, this run asks for "
                            f"{key}={value!r}: use another workdir, or the same {key}")


def preflight(ablation: str, scale: str, workdir: str, budget: str | None = None,
              arms: Sequence[str] | str | None = None, neural_dir: str = "",
              view: str = "tokenizer", seed: int = 0, sources: str = "") -> Request:
  """Checks a request against the catalog and W (see ``runner.run`` for the arguments)."""
  abl = catalog.get(ablation)
  scales.check_scale(scale)
  if not workdir:
    raise UserError("a workdir is required (--workdir=W)")
  if isinstance(arms, str):
    arms = [a.strip() for a in arms.split(",") if a.strip()]
  if neural_dir and not os.path.isdir(neural_dir):
    raise UserError(f"--neural_dir: no such directory: {neural_dir}")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise UserError(f"--seed must be an integer >= 0, got {seed!r}")
  if scale == "pod" and not sources.strip():
    raise UserError("the pod scale trains the ladder configs, which need your corpus: "
                    "--sources='prepared:DIR' (made by `python -m proxyjax.data.prepare`) or "
                    "'parquet:GLOB' / 'jsonl:GLOB' / 'hf:PATH'")
  options = catalog.Options(view=view, neural_dir=os.path.abspath(neural_dir)
                            if neural_dir else "", seed=seed, sources=sources.strip())
  selected = catalog.select_arms(abl, options, arms)
  parsed = resolve_budget(abl, scale, budget)
  if not paths.is_remote(workdir):  # W may be gs:// (every file through proxyjax.paths)
    workdir = os.path.abspath(os.path.expanduser(workdir))
  req = Request(abl, scale, workdir, parsed, options, selected)
  check_workdir(workdir, req.state())
  return req
