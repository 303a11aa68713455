"""The ablation's comparison: W/report.md, W/report.json and PNG plots in W.

One row per arm (``rows``): the eval raw BPB of the final checkpoint (``eval/bpb.json``;
through the tokenizer for the tokens-only arm), the raw BPB at matched totals (the
largest UTF-8 bytes / training FLOPs every arm reached, interpolated along each arm's
validation curve, ``proxyjax.report.matched_exposure``), steps, the totals reached,
the compressed share of the symbols, wall time and, for proxy arms, in-context
translation. Plots: raw BPB against UTF-8 bytes seen, training FLOPs and training wall
time, one line per arm (``proxyjax.report.plot_against``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Callable, Sequence

from proxyjax import paths
from proxyjax import report as report_lib

# Plot name -> file name in W.
PLOTS = {"utf8_bytes": "bpb_vs_utf8_bytes.png", "train_flops": "bpb_vs_train_flops.png",
         "wall_time": "bpb_vs_wall_time.png"}
MATCHED = (("utf8_bytes", "total_utf8_bytes"), ("train_flops", "total_train_flops"))


@dataclasses.dataclass
class Result:
  """What ``proxyjax.ablation.run`` returns (the notebooks read these).

  Attributes:
    ablation, scale, budget, workdir: what ran where (``budget`` as ``KIND:AMOUNT``).
    markdown: the text of ``report_md``.
    report_md, report_json: paths of W/report.md and W/report.json.
    plots: plot name (``utf8_bytes``, ``train_flops``, ``wall_time``; ``compressors``
      for the compressors ablation) -> PNG path.
    rows: one dict per arm in the report (``name``, ``eval_raw_bpb``, ``steps``, the
      ``total_*`` reached, ``wall_s``, ...).
    skipped: arm name -> why it did not run.
  """
  ablation: str
  scale: str
  budget: str
  workdir: str
  markdown: str
  report_md: str
  report_json: str
  plots: dict[str, str]
  rows: list[dict[str, Any]]
  skipped: dict[str, str]


def _clean(obj):
  """NaN / inf -> None, numpy scalars -> Python (strict JSON)."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def _num(v: Any) -> float:
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def arm_row(arm, run: report_lib.Run, record: dict[str, Any]) -> dict[str, Any]:
  """The report row of one arm (NaN where unknown)."""
  s = report_lib.summarize(run)
  last = run.train[-1] if run.train else {}
  bpb = run.eval_files.get("bpb", {})
  tr = run.eval_files.get("translation", {})
  plan = record.get("plan") or {}
  row: dict[str, Any] = {
      "name": arm.name, "description": arm.description, "dir": run.path,
      "steps": s["steps"], "planned_steps": plan.get("num_steps"),
      "eval_raw_bpb": _num(bpb.get("raw_bpb")),
      "eval_interface": bpb.get("interface", "raw"),
      "final_train_raw_bpb": s["final_train_raw_bpb"], "final_loss": s["final_loss"],
      "last_validation_raw_bpb": s["final_eval_raw_bpb"],
  }
  for key, _ in report_lib.EXPOSURE:
    row[key] = _num(last.get(key))
  # Both counted by the data pipeline when a document is packed (raw bytes = raw symbols).
  seen = row["total_compressed_symbols"] + row["total_raw_bytes"]
  row["compressed_share"] = (row["total_compressed_symbols"] / seen
                             if seen and math.isfinite(seen) else math.nan)
  row["train_seconds"] = s["train_seconds"]
  row["wall_s"] = float(record.get("train_wall_s", 0.0)) + float(record.get("eval_wall_s", 0.0))
  row["attention"] = record.get("attention", "")
  row["translation_exact_match"] = _num(tr.get("exact_match"))
  row["translation_byte_accuracy"] = _num(tr.get("byte_accuracy"))
  row["predicted"] = plan.get("predicted") or {}
  return row


def add_matched(rows: list[dict[str, Any]], runs: Sequence[report_lib.Run]) -> list[dict]:
  """Adds ``bpb_at_matched_<axis>`` to each row; returns the matched points."""
  matched = report_lib.matched_exposure(runs) if runs else []
  by_total = {m["total"]: m for m in matched}
  out = []
  for axis, total in MATCHED:
    m = by_total.get(total)
    for row, run in zip(rows, runs):
      value, source = (m["values"].get(run.name, (math.nan, "eval")) if m else
                       (math.nan, "eval"))
      row[f"bpb_at_matched_{axis}"] = value
      row[f"bpb_at_matched_{axis}_source"] = source
    if m:
      out.append({"axis": axis, "total": total, "at": m["at"]})
  return out


def _fmt(v: Any, kind: str = "f") -> str:
  if isinstance(v, float) and math.isnan(v):
    return "–"
  if kind == "pct":
    return f"{100 * v:.0f}%"
  return report_lib._fmt(v, kind)  # pylint: disable=protected-access


def render(ablation, scale: str, budget: str, rows: Sequence[dict[str, Any]],
           matched: Sequence[dict[str, Any]], skipped: dict[str, str], plots: dict[str, str],
           compressors: dict[str, Any] | None = None, seed: int = 0) -> str:
  """The Markdown report."""
  lines = [f"# Ablation `{ablation.name}` (scale `{scale}`, budget `{budget}`"
           + (f", seed `{seed}`)" if seed else ")"), "",
           ablation.description, ""]
  at = {m["axis"]: m["at"] for m in matched}
  if rows:
    head = ["arm", "eval raw BPB", f"@ {_fmt(at.get('utf8_bytes', math.nan), 'bytes')} UTF-8",
            f"@ {_fmt(at.get('train_flops', math.nan), 'sci')} FLOPs", "steps", "UTF-8 bytes",
            "FLOPs", "compressed share", "wall", "translation exact / bytes"]
    lines += ["| " + " | ".join(head) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
      tr = "–"
      if math.isfinite(r["translation_byte_accuracy"]):
        tr = f"{r['translation_exact_match']:.2f} / {r['translation_byte_accuracy']:.2f}"
      name = r["name"] + (" (via tokenizer)" if r["eval_interface"] == "tokens" else "")
      lines.append("| " + " | ".join([
          name, _fmt(r["eval_raw_bpb"]), _fmt(r["bpb_at_matched_utf8_bytes"]),
          _fmt(r["bpb_at_matched_train_flops"]), _fmt(r["steps"], "int"),
          _fmt(r["total_utf8_bytes"], "bytes"), _fmt(r["total_train_flops"], "sci"),
          _fmt(r["compressed_share"], "pct"), _fmt(r["wall_s"], "time"), tr]) + " |")
    lines += [
        "",
        "- **eval raw BPB**: bits per UTF-8 byte of the final checkpoint on the validation "
        "split (`eval/bpb.json`; \"(via tokenizer)\": through the arm's tokenizer, bits per UTF-8 "
        "byte of tokenized documents).",
        "- **@ matched**: validation raw BPB interpolated at the largest amount of UTF-8 bytes "
        "seen / training FLOPs that every arm reached (– where an arm's validation points "
        "do not reach down to it; a `utf8_bytes` / `train_flops` budget lines them up).",
        "- **UTF-8 bytes, FLOPs**: totals the arm reached (`total_utf8_bytes`, "
        "`total_train_flops` of its last metric line); **compressed share**: compressed "
        "symbols / (compressed symbols + raw bytes) the data stream packed; **wall**: training + eval of this arm, all runs of it.",
        ""]
    lines += ["## Arms", "", "| arm | what | attention | steps planned | predicted UTF-8 "
              "bytes | predicted FLOPs |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
      p = r["predicted"]
      lines.append(f"| {r['name']} | {r['description']} | {r['attention'] or '–'} | "
                   f"{_fmt(r['planned_steps'], 'int') if r['planned_steps'] else '–'} | "
                   f"{_fmt(p.get('utf8_bytes', math.nan), 'bytes')} | "
                   f"{_fmt(p.get('train_flops', math.nan), 'sci')} |")
    lines.append("")
  if skipped:
    lines += ["## Skipped", ""] + [f"- `{k}`: {v}" for k, v in skipped.items()] + [""]
  if compressors is not None:
    lines += ["## Compressors", "", f"{compressors['num_docs']} documents, "
              f"{_fmt(float(compressors['doc_bytes']), 'bytes')}.", "",
              "| view | bytes / symbol | bits / byte | stability (norm. Levenshtein) | "
              "chunks / symbol | H(chunk \\| symbol) |", "|---|---:|---:|---:|---:|---:|"]
    for name, v in compressors["views"].items():
      c = v["collisions"]
      lines.append(f"| {name} | {_fmt(_num(v['compression']['bytes_per_symbol']))} | "
                   f"{_fmt(_num(v['compression']['bits_per_byte']))} | "
                   f"{_fmt(_num(v['stability'].get('mean')))} | "
                   f"{_fmt(_num(c.get('mean_chunks_per_symbol')))} | "
                   f"{_fmt(_num(c.get('conditional_entropy_bits')))} |")
    for name, reason in compressors.get("skipped", {}).items():
      lines.append(f"| {name} | skipped: {reason} | | | | |")
    lines.append("")
  if plots:
    lines += ["## Plots", ""]
    for name, path in plots.items():
      lines += [f"![{name}]({paths.basename(path)})", ""]
  return "\n".join(lines).rstrip() + "\n"


def write(ablation, scale: str, budget: str, workdir: str, arms: Sequence[tuple],
          skipped: dict[str, str], compressors: dict[str, Any] | None = None,
          log: Callable[[str], Any] = print, seed: int = 0) -> Result:
  """Writes W/report.md, W/report.json and the plots for ``arms`` (``(Arm, run dir,
  arm.json record)`` of finished arms); returns the ``Result``."""
  runs, rows = [], []
  for arm, path, record in arms:
    run = report_lib.load_run(path)
    run.name = arm.name
    runs.append(run)
    rows.append(arm_row(arm, run, record))
  matched = add_matched(rows, runs)
  plots: dict[str, str] = {}
  if runs:
    for name, file in PLOTS.items():
      plots[name] = paths.join(workdir, file)
      with tempfile.TemporaryDirectory(prefix="proxyjax-plot-") as tmp:  # W may be remote
        local = os.path.join(tmp, file)
        report_lib.plot_against(runs, name, local,
                                title=f"{ablation.name} ({scale}, {budget}"
                                      + (f", seed {seed})" if seed else ")"))
        with open(local, "rb") as f:
          paths.write_bytes(plots[name], f.read())
  if compressors is not None and paths.exists(paths.join(workdir, "compressors.png")):
    plots["compressors"] = paths.join(workdir, "compressors.png")
  text = render(ablation, scale, budget, rows, matched, skipped, plots, compressors, seed)
  md = paths.join(workdir, "report.md")
  js = paths.join(workdir, "report.json")
  paths.write_text(md, text)
  data = {"ablation": ablation.name, "scale": scale, "budget": budget, "seed": seed,
          "rows": rows,
          "matched": matched, "skipped": skipped,
          "plots": {k: paths.basename(v) for k, v in plots.items()}}
  if compressors is not None:
    data["compressors"] = compressors
  paths.write_text(js, json.dumps(_clean(data), indent=1, allow_nan=False))
  log(f"{ablation.name}: report in {md}")
  return Result(ablation=ablation.name, scale=scale, budget=budget, workdir=workdir,
                markdown=text, report_md=md, report_json=js, plots=plots, rows=rows,
                skipped=dict(skipped))


def arms_markdown(ablation, options, scale: str, budget: str | None,
                  selected: Sequence[str] | None) -> str:
  """A Markdown table of ``ablation``'s arms (what each changes, whether it runs), for
  the notebooks: ``selected`` are the arms picked (None: all)."""
  lines = [f"{ablation.description} Budget `{budget or ablation.budgets.get(scale)}` per arm "
           f"at scale `{scale}`.", "", "| arm | what | config fields | here |",
           "|---|---|---|---|"]
  for arm in ablation.make_arms(options):
    here = ("skipped: " + arm.skip if arm.skip
            else "runs" if not selected or arm.name in selected else "not selected")
    fields = ", ".join(f"`{k}={v!r}`" for k, v in arm.overrides.items())
    lines.append(f"| `{arm.name}` | {arm.description} | {fields} | {here} |")
  return "\n".join(lines)


def plot_eval_bars(result: Result, path: str) -> list[dict[str, Any]]:
  """Bars of each arm's eval raw BPB (gray: no compressed symbols) saved to ``path``;
  returns the rows drawn (arms without a finite eval raw BPB are left out)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = [r for r in result.rows if r.get("eval_raw_bpb") is not None
          and math.isfinite(r["eval_raw_bpb"])]
  fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 0.9 * len(rows)), 3.8))
  ax.bar(range(len(rows)), [r["eval_raw_bpb"] for r in rows],
         color=["tab:gray" if r["compressed_share"] == 0 else "tab:blue" for r in rows])
  for i, r in enumerate(rows):
    ax.text(i, r["eval_raw_bpb"], f"{r['eval_raw_bpb']:.2f}", ha="center", va="bottom",
            fontsize=8)
  ax.set_xticks(range(len(rows)))
  ax.set_xticklabels([r["name"] for r in rows], rotation=30, ha="right")
  ax.set_ylabel("eval raw BPB (lower is better)")
  ax.set_title(f"{result.ablation.capitalize()} ablation\n{result.scale} scale, "
               f"{result.budget} per arm", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return rows
