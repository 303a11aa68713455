r"""Compare training runs: a Markdown table and loss / raw-BPB curves.

    python -m proxyjax.report DIR [DIR ...] [--out=report.md] [--devices=N]

Reads each run's ``DIR/metrics.jsonl`` and ``DIR/eval/*.json`` (if any) and
writes ``report.md`` plus ``report_curves.png`` next to it: loss and raw BPB
against UTF-8 bytes trained and against training FLOPs. Runs whose metric lines carry
the exposure totals (``total_train_flops``, ``total_utf8_bytes``, ``total_symbols``,
``total_raw_bytes``, ``total_compressed_symbols``: running totals kept by the trainer,
see ``proxyjax.train.metrics``) also get ``report_exposure.png``, raw BPB (train and
eval) against each total, and a table of eval raw BPB at matched totals: for each
total, the largest amount every run reached, and each run's eval raw BPB interpolated
there (train raw BPB, marked "(train)", for a run without eval lines).

Accounting, per logged training line (one per ``log_every`` steps; lines of a
resumed run that re-logs steps replace the earlier ones):

* UTF-8 bytes trained += ``utf8_bytes_per_s * step_time * steps since the
  previous line`` (``step_time`` is the window's mean step time);
* FLOPs += ``tflops_per_device * 1e12 * devices * step_time * steps``, where
  ``devices`` comes from ``--devices`` or a ``devices`` field in the metrics;
  without either, FLOPs are per device (the table says so);
* eval lines (``eval/raw_bpb``) are placed on these axes by their step.

The exposure totals are read as logged (no estimate); an eval line is placed on them
by its step like on the other axes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np
from absl import flags

from proxyjax import cli, paths
from proxyjax.errors import UserError


@dataclasses.dataclass
class Run:
  """One run's parsed metrics."""
  name: str
  path: str
  steps: np.ndarray  # training log steps (sorted, unique)
  train: list[dict[str, Any]]  # training lines, aligned with ``steps``
  evals: list[dict[str, Any]]  # lines with eval/... keys, sorted by step
  eval_files: dict[str, dict[str, Any]]  # DIR/eval/<task>.json
  bytes_cum: np.ndarray  # UTF-8 bytes trained up to each training line
  flops_cum: np.ndarray  # FLOPs (all devices, or per device) up to each line
  wall_cum: np.ndarray  # seconds of training up to each line
  devices: int | None  # None: FLOPs are per device
  totals: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # logged totals


# Exposure totals written by the trainer (proxyjax.train.metrics.EXPOSURE), with labels.
EXPOSURE = (("total_train_flops", "training FLOPs"), ("total_utf8_bytes", "UTF-8 bytes"),
            ("total_symbols", "symbols"), ("total_raw_bytes", "raw bytes"),
            ("total_compressed_symbols", "compressed symbols"))


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  out = []
  with paths.open_file(path, "rb") as f:  # local or remote (a gs:// / s3:// run)
    for line in f.read().decode("utf-8").splitlines():
      line = line.strip()
      if not line:
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a crash
      if isinstance(rec, dict) and "step" in rec:
        out.append(rec)
  return out


def _num(rec: dict[str, Any], key: str) -> float:
  v = rec.get(key)
  return float(v) if isinstance(v, (int, float)) and v is not None else math.nan


class MissingRunError(UserError, FileNotFoundError):
  """A run directory without metrics.jsonl."""


def load_run(path: str, devices: int | None = None) -> Run:
  """Parses ``path/metrics.jsonl`` (required) and ``path/eval/*.json``."""
  metrics = paths.join(path, "metrics.jsonl")
  if not paths.exists(metrics):
    raise MissingRunError(f"{metrics} does not exist: is {path} a proxyjax run directory?")
  records = _read_jsonl(metrics)
  by_step: dict[int, dict[str, Any]] = {}
  eval_by_step: dict[int, dict[str, Any]] = {}
  for rec in records:
    step = int(rec["step"])
    if "loss" in rec:
      by_step[step] = rec  # the last line for a step wins (resumed runs re-log)
    if any(k.startswith("eval/") for k in rec):
      eval_by_step.setdefault(step, {}).update(rec)
  steps = np.asarray(sorted(by_step), dtype=np.int64)
  train = [by_step[int(s)] for s in steps]
  if devices is None:
    found = [int(r["devices"]) for r in train if isinstance(r.get("devices"), (int, float))]
    devices = found[-1] if found else None
  delta = np.diff(np.concatenate([[0], steps])).astype(np.float64)
  step_time = np.asarray([_num(r, "step_time") for r in train])
  bytes_rate = np.asarray([_num(r, "utf8_bytes_per_s") for r in train])
  tflops = np.asarray([_num(r, "tflops_per_device") for r in train])
  wall = step_time * delta
  bytes_cum = np.cumsum(bytes_rate * wall)
  flops_cum = np.cumsum(tflops * 1e12 * wall * (devices or 1))
  eval_files = {}
  for f in paths.glob(paths.join(path, "eval", "*.json")):
    try:
      data = json.loads(paths.read_text(f))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
      continue
    if isinstance(data, dict):
      eval_files[os.path.splitext(paths.basename(f))[0]] = data
  name = (paths.basename(path) if paths.is_remote(path)
          else os.path.basename(os.path.normpath(path))) or path
  totals = {}
  for key, _ in EXPOSURE:
    values = np.asarray([_num(r, key) for r in train])
    if len(values) and not np.all(np.isnan(values)):
      totals[key] = values
  return Run(name=name, path=path, steps=steps, train=train,
             evals=[eval_by_step[s] for s in sorted(eval_by_step)], eval_files=eval_files,
             bytes_cum=bytes_cum, flops_cum=flops_cum, wall_cum=np.cumsum(wall),
             devices=devices, totals=totals)


def _at_step(run: Run, values: np.ndarray, step: int) -> float:
  """``values`` (aligned with training lines) interpolated at ``step``."""
  if not len(run.steps):
    return math.nan
  xs = np.concatenate([[0], run.steps]).astype(np.float64)
  ys = np.concatenate([[0.0], values])
  return float(np.interp(step, xs, ys))


def eval_curve(run: Run, key: str = "eval/raw_bpb") -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                np.ndarray]:
  """(steps, bytes, flops, values) of an eval metric."""
  pts = [(int(e["step"]), float(e[key])) for e in run.evals
         if isinstance(e.get(key), (int, float))]
  steps = np.asarray([p[0] for p in pts], dtype=np.int64)
  vals = np.asarray([p[1] for p in pts], dtype=np.float64)
  b = np.asarray([_at_step(run, run.bytes_cum, s) for s in steps])
  f = np.asarray([_at_step(run, run.flops_cum, s) for s in steps])
  return steps, b, f, vals


def exposure_curve(run: Run, total: str, key: str = "eval/raw_bpb") -> tuple[np.ndarray,
                                                                             np.ndarray]:
  """(totals, values) of an eval metric, each eval line placed on the logged ``total``
  by its step; empty when the run did not log ``total``."""
  if total not in run.totals:
    return np.zeros(0), np.zeros(0)
  pts = [(int(e["step"]), float(e[key])) for e in run.evals
         if isinstance(e.get(key), (int, float))]
  x = np.asarray([_at_step(run, run.totals[total], s) for s, _ in pts], dtype=np.float64)
  return x, np.asarray([v for _, v in pts], dtype=np.float64)


def _interp_within(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
  ok = ~(np.isnan(xs) | np.isnan(ys))
  xs, ys = xs[ok], ys[ok]
  if not len(xs) or x < xs.min() or x > xs.max():
    return math.nan
  order = np.argsort(xs, kind="stable")
  return float(np.interp(x, xs[order], ys[order]))


def matched_exposure(runs: Sequence[Run]) -> list[dict[str, Any]]:
  """Per total logged by every run: the largest amount all reached (``at``) and each
  run's eval raw BPB there (``(value, "eval" or "train")`` per run name)."""
  out = []
  for total, label in EXPOSURE:
    if not runs or not all(total in r.totals for r in runs):
      continue
    at = min(float(np.nanmax(r.totals[total])) for r in runs)
    values = {}
    for r in runs:
      ex, ev = exposure_curve(r, total)
      if len(ev):
        values[r.name] = (_interp_within(at, ex, ev), "eval")
      else:
        bpb = np.asarray([_num(line, "raw_bpb") for line in r.train])
        values[r.name] = (_interp_within(at, r.totals[total], bpb), "train")
    out.append({"total": total, "label": label, "at": at, "values": values})
  return out


def _pass_metrics(run: Run) -> dict[str, float]:
  out = {}
  for task, data in run.eval_files.items():
    for k, v in data.items():
      if isinstance(v, (int, float)) and ("pass@" in k) and not isinstance(v, bool):
        out[f"{task} {k}"] = float(v)
  return out


def summarize(run: Run) -> dict[str, Any]:
  """The table row of one run (numbers, NaN where unknown)."""
  last = run.train[-1] if run.train else {}
  ev_steps, _, _, ev = eval_curve(run)
  best_i = int(np.nanargmin(ev)) if len(ev) and not np.all(np.isnan(ev)) else None
  ckpt_bpb = run.eval_files.get("bpb", {}).get("raw_bpb")
  row = {
      "run": run.name,
      "steps": int(run.steps[-1]) if len(run.steps) else 0,
      "final_loss": _num(last, "loss"),
      "final_train_raw_bpb": _num(last, "raw_bpb"),
      "final_eval_raw_bpb": float(ev[-1]) if len(ev) else math.nan,
      "best_eval_raw_bpb": float(ev[best_i]) if best_i is not None else math.nan,
      "best_eval_step": int(ev_steps[best_i]) if best_i is not None else None,
      "checkpoint_eval_raw_bpb": (float(ckpt_bpb) if isinstance(ckpt_bpb, (int, float))
                                  else math.nan),
      "utf8_bytes": float(run.bytes_cum[-1]) if len(run.bytes_cum) else math.nan,
      "flops": float(run.flops_cum[-1]) if len(run.flops_cum) else math.nan,
      "flops_per_device": (float(run.flops_cum[-1]) / (run.devices or 1)
                           if len(run.flops_cum) else math.nan),
      "devices": run.devices,
      "train_seconds": float(run.wall_cum[-1]) if len(run.wall_cum) else math.nan,
  }
  row.update(_pass_metrics(run))
  return row


def _fmt(v: Any, kind: str = "f") -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "–"
  if kind == "bytes":
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
      if abs(v) >= scale:
        return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} B"
  if kind == "sci":
    return f"{v:.3g}"
  if kind == "int":
    return str(int(v))
  if kind == "time":
    return f"{v / 3600:.2f} h" if v >= 3600 else f"{v:.0f} s"
  return f"{v:.4f}"


def render_markdown(rows: Sequence[dict[str, Any]], plot_name: str | None = None,
                    matched: Sequence[dict[str, Any]] = (),
                    exposure_plot: str | None = None) -> str:
  """The report's Markdown: one table row per run, then the plot; with ``matched``
  (``matched_exposure``) the raw BPB at matched totals and the exposure plot."""
  pass_keys = sorted({k for r in rows for k in r if "pass@" in k})
  per_device = any(r["devices"] is None for r in rows)
  flops_head = "FLOPs per device" if per_device else "FLOPs"
  head = (["run", "steps", "final loss", "final train raw BPB", "final eval raw BPB",
           "best eval raw BPB (step)", "ckpt eval raw BPB", "UTF-8 bytes trained", flops_head,
           "train time"] + pass_keys)
  lines = ["# proxyjax runs", "", "| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
  for r in rows:
    best = _fmt(r["best_eval_raw_bpb"])
    if r["best_eval_step"] is not None:
      best += f" ({r['best_eval_step']})"
    flops = r["flops_per_device"] if per_device else r["flops"]
    cells = [r["run"], _fmt(r["steps"], "int"), _fmt(r["final_loss"]),
             _fmt(r["final_train_raw_bpb"]), _fmt(r["final_eval_raw_bpb"]), best,
             _fmt(r["checkpoint_eval_raw_bpb"]), _fmt(r["utf8_bytes"], "bytes"),
             _fmt(flops, "sci"), _fmt(r["train_seconds"], "time")]
    cells += [_fmt(r.get(k)) for k in pass_keys]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  notes = ["UTF-8 bytes trained = Σ utf8_bytes_per_s × step_time × steps per log line; "
           "FLOPs = Σ tflops_per_device × 1e12 × devices × step_time × steps."]
  if per_device:
    notes.append("Device counts are unknown for some runs (pass --devices), so FLOPs are per "
                 "device for all of them.")
  lines += [f"- {n}" for n in notes]
  if plot_name:
    lines += ["", f"![loss and raw BPB]({plot_name})"]
  if matched:
    names = list(matched[0]["values"])
    lines += ["", "## Raw BPB at matched exposure", "",
              "| total | matched at | " + " | ".join(names) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(names) + 1)) + "|"]
    for m in matched:
      kind = "bytes" if "bytes" in m["total"] else "sci"
      cells = [f"{_fmt(v)}{' (train)' if src == 'train' and not math.isnan(v) else ''}"
               for v, src in m["values"].values()]
      lines.append(f"| {m['label']} | {_fmt(m['at'], kind)} | " + " | ".join(cells) + " |")
    lines += ["", "- Matched at: the largest amount of each total that every run reached; "
              "eval raw BPB interpolated there between eval lines (– outside them)."]
  if exposure_plot:
    lines += ["", f"![raw BPB against exposure]({exposure_plot})"]
  return "\n".join(lines) + "\n"


def plot_runs(runs: Sequence[Run], path: str) -> None:
  """2 x 2 curves: loss and raw BPB against UTF-8 bytes and against FLOPs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  per_device = any(r.devices is None for r in runs)
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  for i, run in enumerate(runs):
    color = f"C{i % 10}"
    loss = np.asarray([_num(r, "loss") for r in run.train])
    bpb = np.asarray([_num(r, "raw_bpb") for r in run.train])
    _, eb, ef, ev = eval_curve(run)
    flops = run.flops_cum if not per_device or run.devices is None else run.flops_cum / run.devices
    eflops = ef if not per_device or run.devices is None else ef / run.devices
    for col, (x, ex) in enumerate(((run.bytes_cum, eb), (flops, eflops))):
      axes[0, col].plot(x, loss, color=color, label=run.name)
      axes[1, col].plot(x, bpb, color=color, alpha=0.6, label=f"{run.name} (train)")
      if len(ev):
        axes[1, col].plot(ex, ev, "o-", color=color, label=f"{run.name} (eval)")
  flops_label = "training FLOPs" + (" per device" if per_device else "")
  for row, ylabel in ((0, "loss"), (1, "raw bits per byte")):
    for col, xlabel in ((0, "UTF-8 bytes trained"), (1, flops_label)):
      ax = axes[row, col]
      ax.set_xlabel(xlabel)
      ax.set_ylabel(ylabel)
      ax.grid(alpha=0.3)
      if ax.lines and all(np.nanmin(line.get_xdata()) > 0 for line in ax.lines
                          if len(line.get_xdata())):
        ax.set_xscale("log")
  axes[0, 0].legend(fontsize=8)
  axes[1, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_exposure(runs: Sequence[Run], path: str) -> None:
  """Raw BPB (train lines and eval points) against each exposure total, one panel per
  total; runs without a total are left out of its panel."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(2, 3, figsize=(15, 8))
  flat = axes.ravel()
  for ax, (total, label) in zip(flat, EXPOSURE):
    for i, run in enumerate(runs):
      if total not in run.totals:
        continue
      color = f"C{i % 10}"
      bpb = np.asarray([_num(r, "raw_bpb") for r in run.train])
      ax.plot(run.totals[total], bpb, color=color, alpha=0.6, label=f"{run.name} (train)")
      ex, ev = exposure_curve(run, total)
      if len(ev):
        ax.plot(ex, ev, "o-", color=color, label=f"{run.name} (eval)")
    ax.set_xlabel(f"{label} (total)")
    ax.set_ylabel("raw bits per byte")
    ax.grid(alpha=0.3)
    xs = [x for line in ax.lines for x in np.asarray(line.get_xdata(), dtype=float)]
    if xs and np.nanmin(xs) > 0:
      ax.set_xscale("log")
  handles, labels = flat[0].get_legend_handles_labels()
  flat[-1].axis("off")
  if handles:
    flat[-1].legend(handles, labels, loc="center", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# Axes of ``plot_against``: name -> (the logged total, or None for training wall time; label).
AXES = {"utf8_bytes": ("total_utf8_bytes", "UTF-8 bytes seen"),
        "train_flops": ("total_train_flops", "training FLOPs"),
        "symbols": ("total_symbols", "symbols trained"),
        "wall_time": (None, "training wall time (s, without eval and checkpoints)")}


def axis_values(run: Run, axis: str) -> np.ndarray:
  """``run``'s position on ``axis`` (``AXES``) at each training line (empty when the run
  did not log that total)."""
  total, _ = AXES[axis]
  if total is None:
    return run.wall_cum
  return run.totals.get(total, np.zeros(0))


def curve_on(run: Run, axis: str, key: str = "eval/raw_bpb") -> tuple[np.ndarray, np.ndarray]:
  """(x, values) of an eval metric on ``axis``, each eval line placed by its step."""
  xs = axis_values(run, axis)
  if not len(xs):
    return np.zeros(0), np.zeros(0)
  pts = [(int(e["step"]), float(e[key])) for e in run.evals
         if isinstance(e.get(key), (int, float))]
  x = np.asarray([_at_step(run, xs, s) for s, _ in pts], dtype=np.float64)
  return x, np.asarray([v for _, v in pts], dtype=np.float64)


def plot_against(runs: Sequence[Run], axis: str, path: str, title: str | None = None,
                 names: Sequence[str] | None = None, dpi: int = 100) -> tuple[float, float]:
  """Raw BPB against one axis (``AXES``), one colour per run: eval points joined by a
  line, train raw BPB (byte targets of the training batches) as a thin dashed line. The
  y range follows the validation points when there are any. Returns the y range."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  _, label = AXES[axis]
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  evals: list[float] = []
  for i, run in enumerate(runs):
    name = names[i] if names is not None else run.name
    color = f"C{i % 10}"
    xs = axis_values(run, axis)
    if not len(xs):
      continue
    bpb = np.asarray([_num(r, "raw_bpb") for r in run.train])
    if np.any(np.isfinite(bpb)):
      ax.plot(xs, bpb, "--", color=color, alpha=0.45, linewidth=1)
    ex, ev = curve_on(run, axis)
    if len(ev):
      ax.plot(ex, ev, "o-", color=color, label=name)
      evals.extend(float(v) for v in ev if np.isfinite(v))
    else:
      ax.plot(xs, bpb, "-", color=color, label=f"{name} (train)")
  ax.set_xlabel(label)
  ax.set_ylabel("raw bits per byte (eval; dashed: train)")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  if evals:  # the validation points fill the plot; the first steps' train values are cut
    low, high = min(evals), max(evals)
    ax.set_ylim(max(0.0, low - 0.25 * (high - low) - 0.3), high + 0.5 * (high - low) + 0.5)
  xs_all = [x for line in ax.lines for x in np.asarray(line.get_xdata(), dtype=float)]
  if xs_all and np.nanmin(xs_all) > 0:
    ax.set_xscale("log")
  if ax.lines:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  ylim = tuple(float(v) for v in ax.get_ylim())
  plt.close(fig)
  return ylim


def write_report(dirs: Sequence[str], out: str = "report.md",
                 devices: int | None = None) -> str:
  """Writes ``out`` (Markdown) and ``<out stem>_curves.png`` (and ``<out
  stem>_exposure.png`` when a run logged exposure totals); returns the Markdown."""
  runs = [load_run(d, devices) for d in dirs]
  out_dir = os.path.dirname(os.path.abspath(out))
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.splitext(os.path.basename(out))[0]
  plot_name = stem + "_curves.png"
  plot_runs(runs, os.path.join(out_dir, plot_name))
  exposure_plot = None
  if any(r.totals for r in runs):
    exposure_plot = stem + "_exposure.png"
    plot_exposure(runs, os.path.join(out_dir, exposure_plot))
  text = render_markdown([summarize(r) for r in runs], plot_name, matched_exposure(runs),
                         exposure_plot)
  with open(out, "w", encoding="utf-8") as f:
    f.write(text)
  return text


def _define_flags():
  """Defines the CLI flags (only when run as a program)."""
  flags.DEFINE_string("out", "report.md", "Markdown output (the PNG goes next to it).")
  flags.DEFINE_integer("devices", None, "Devices per run, for total FLOPs (default: per device).")


def main(argv: Sequence[str]) -> None:
  dirs = list(argv[1:])
  if not dirs:
    raise SystemExit("usage: python -m proxyjax.report DIR [DIR ...] [--out=report.md]")
  f = flags.FLAGS
  text = write_report(dirs, f.out, f.devices)
  print(text, end="", flush=True)


if __name__ == "__main__":
  _define_flags()
  cli.run(main, prog="proxyjax.report")  # bad flags: one line (--verbose)
