"""ReCode metrics: nominal and robust pass@k, the robust drop, attack success.

A sample index counts as robustly correct only if it is correct under every
seed (worst of ``s``). The robust drop is given relative (ReCode's
definition) and absolute; ``robust_relative`` is the share of problem/sample
pairs whose outcome changes under some seed and ``attack_success`` the share
of nominally correct ones that some seed breaks.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from proxyjax.eval import passk


def robust_metrics(nominal: Sequence[Sequence[bool]], perturbed: Sequence[Sequence[Sequence[bool]]],
                   ks: Iterable[int] = (1,)) -> dict[str, float]:
  """ReCode metrics from correctness ``nominal[problem][sample]`` and
  ``perturbed[problem][seed][sample]``."""
  if len(nominal) != len(perturbed):
    raise ValueError("nominal and perturbed differ in their number of problems")
  ns, c_nom, c_rob = [], [], []
  changed = broken = correct = pairs = 0
  for nom, per in zip(nominal, perturbed):
    n = min([len(nom)] + [len(s) for s in per])
    ns.append(n)
    c_nom.append(sum(bool(x) for x in nom[:n]))
    worst = [all(bool(s[j]) for s in per) for j in range(n)]
    c_rob.append(sum(worst))
    for j in range(n):
      pairs += 1
      if any(bool(s[j]) != bool(nom[j]) for s in per):
        changed += 1
      if nom[j]:
        correct += 1
        if not worst[j]:
          broken += 1
  out: dict[str, float] = {}
  if not ns or min(ns) == 0:
    return out
  nominal_k = passk.mean_pass_at_k(ns, c_nom, ks)
  robust_k = passk.mean_pass_at_k(ns, c_rob, ks)
  for key, nom_v in nominal_k.items():
    rob_v = robust_k[key]
    out[f"nominal_{key}"] = nom_v
    out[f"robust_{key}"] = rob_v
    out[f"robust_drop_abs_{key}"] = nom_v - rob_v
    out[f"robust_drop_{key}"] = (nom_v - rob_v) / nom_v if nom_v > 0 else 0.0
  out["robust_relative"] = changed / pairs if pairs else 0.0
  out["attack_success"] = broken / correct if correct else 0.0
  return out
