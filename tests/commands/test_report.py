"""The run report: accounting from synthetic metrics files, Markdown, plots, CLI."""

import json
import math
import os
import subprocess
import sys

import pytest

from proxyjax import report


def _write_run(root, name, lines, evals=None):
  d = root / name
  d.mkdir()
  with open(d / "metrics.jsonl", "w") as f:
    for rec in lines:
      f.write(json.dumps(rec) + "\n")
    f.write('{"step": 99, "loss": 1.0, "trunc')  # a line cut short by a crash: ignored
  if evals:
    (d / "eval").mkdir()
    for task, data in evals.items():
      (d / "eval" / f"{task}.json").write_text(json.dumps(data))
  return str(d)


def _train(step, loss, bpb, *, bytes_per_s=1000.0, step_time=0.5, tflops=2.0, **extra):
  return {"step": step, "loss": loss, "raw_bpb": bpb, "utf8_bytes_per_s": bytes_per_s,
          "symbols_per_s": 400.0, "tflops_per_device": tflops, "step_time": step_time, **extra}


@pytest.fixture
def runs(tmp_path):
  a = _write_run(tmp_path, "bytes", [
      _train(10, 3.0, 2.5),
      _train(20, 2.5, 2.0, bytes_per_s=2000.0),
      {"step": 20, "eval/raw_bpb": 2.2, "eval/raw_loss": 1.5},
      _train(30, 2.0, 1.8),
      {"step": 30, "eval/raw_bpb": 1.9},
  ], evals={"humaneval": {"task": "humaneval", "step": 30, "pass@1": 0.125, "num_problems": 164},
            "bpb": {"task": "bpb", "step": 30, "raw_bpb": 1.95}})
  b = _write_run(tmp_path, "proxy", [
      _train(10, 4.0, 3.0, devices=4),
      _train(20, 3.5, 2.9, devices=4),
      {"step": 20, "eval/raw_bpb": 2.8},
      # Resumed from step 10: steps 20 and 30 are logged (again); the last line wins.
      _train(20, 3.4, 2.7, step_time=1.0, devices=4),
      _train(30, 3.0, 2.5, devices=4),
      {"step": 30, "eval/raw_bpb": 2.9},
  ])
  return a, b


def test_accounting(runs):
  a, b = runs
  ra = report.load_run(a)
  assert list(ra.steps) == [10, 20, 30]
  # bytes: 10 steps x 0.5 s x (1000, 2000, 1000) B/s.
  assert list(ra.bytes_cum) == [5000.0, 15000.0, 20000.0]
  assert ra.devices is None
  assert ra.flops_cum[-1] == pytest.approx(3 * 10 * 0.5 * 2e12)
  rb = report.load_run(b)
  assert rb.devices == 4 and list(rb.steps) == [10, 20, 30]
  assert rb.train[1]["loss"] == 3.4  # the re-logged line replaced the first one
  assert rb.wall_cum[-1] == pytest.approx(5 + 10 + 5)
  assert rb.flops_cum[-1] == pytest.approx(4 * 2e12 * 20)
  steps, eb, _, ev = report.eval_curve(ra)
  assert list(steps) == [20, 30] and list(ev) == [2.2, 1.9] and list(eb) == [15000.0, 20000.0]


def test_summary_rows(runs):
  a, b = runs
  ra, rb = report.summarize(report.load_run(a)), report.summarize(report.load_run(b))
  assert ra["final_loss"] == 2.0 and ra["final_train_raw_bpb"] == 1.8
  assert ra["final_eval_raw_bpb"] == 1.9 and ra["best_eval_raw_bpb"] == 1.9
  assert ra["best_eval_step"] == 30 and ra["checkpoint_eval_raw_bpb"] == 1.95
  assert ra["humaneval pass@1"] == 0.125
  assert rb["best_eval_raw_bpb"] == 2.8 and rb["best_eval_step"] == 20
  assert rb["flops"] == pytest.approx(1.6e14) and rb["flops_per_device"] == pytest.approx(4e13)
  assert math.isnan(rb["checkpoint_eval_raw_bpb"])


def test_markdown_and_plot(runs, tmp_path):
  out = tmp_path / "out" / "report.md"
  text = report.write_report(list(runs), str(out))
  assert out.read_text() == text
  assert (tmp_path / "out" / "report_curves.png").stat().st_size > 5000
  lines = text.splitlines()
  header = next(l for l in lines if l.startswith("| run"))
  assert "FLOPs per device" in header and "humaneval pass@1" in header
  row_a = next(l for l in lines if l.startswith("| bytes "))
  row_b = next(l for l in lines if l.startswith("| proxy "))
  assert "20 kB" in row_a and "0.1250" in row_a and "1.9000 (30)" in row_a
  assert "4e+13" in row_b and "–" in row_b  # per-device FLOPs; no pass@1 for this run
  assert "![loss and raw BPB](report_curves.png)" in text
  # With the device count known for every run, FLOPs are totals.
  text = report.write_report(list(runs), str(out), devices=2)
  assert "| FLOPs |" in text.replace("FLOPs per device", "x")


def test_missing_metrics_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    report.load_run(str(tmp_path))


def test_cli(runs, tmp_path):
  out = tmp_path / "cli.md"
  r = subprocess.run([sys.executable, "-m", "proxyjax.report", *runs, f"--out={out}"],
                     capture_output=True, text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr
  assert "| bytes |" in r.stdout and out.exists()
  assert os.path.exists(tmp_path / "cli_curves.png")


def _exposed(step, bpb, scale, **extra):
  """A training line with running exposure totals growing ``scale`` per step."""
  return _train(step, 2.0, bpb, total_train_flops=1e12 * scale * step,
                total_utf8_bytes=1000.0 * scale * step, total_symbols=400.0 * scale * step,
                total_raw_bytes=100.0 * scale * step,
                total_compressed_symbols=300.0 * scale * step, **extra)


def test_raw_bpb_against_exposure_totals(runs, tmp_path):
  a = _write_run(tmp_path, "small", [
      _exposed(10, 3.0, 1), {"step": 10, "eval/raw_bpb": 2.9},
      _exposed(20, 2.5, 1), {"step": 20, "eval/raw_bpb": 2.4},
      _exposed(30, 2.2, 1), {"step": 30, "eval/raw_bpb": 2.1}])
  b = _write_run(tmp_path, "big", [  # twice the exposure per step, no eval lines
      _exposed(10, 2.8, 2), _exposed(20, 2.0, 2)])
  ra, rb = report.load_run(a), report.load_run(b)
  assert sorted(ra.totals) == sorted(k for k, _ in report.EXPOSURE)
  assert list(ra.totals["total_symbols"]) == [4000.0, 8000.0, 12000.0]
  x, v = report.exposure_curve(ra, "total_utf8_bytes")
  assert list(x) == [10000.0, 20000.0, 30000.0] and list(v) == [2.9, 2.4, 2.1]
  matched = report.matched_exposure([ra, rb])
  assert [m["total"] for m in matched] == [k for k, _ in report.EXPOSURE]
  bytes_row = matched[1]
  # Both runs reached 30 kB (small: step 30; big: 40 kB at step 20).
  assert bytes_row["at"] == 30000.0
  assert bytes_row["values"]["small"] == (2.1, "eval")
  # big has no eval lines: train raw BPB, interpolated between 20 kB (2.8) and 40 kB (2.0).
  assert bytes_row["values"]["big"][1] == "train"
  assert bytes_row["values"]["big"][0] == pytest.approx(2.4)
  out = tmp_path / "exp" / "report.md"
  text = report.write_report([a, b], str(out))
  assert (tmp_path / "exp" / "report_curves.png").stat().st_size > 5000  # kept
  assert (tmp_path / "exp" / "report_exposure.png").stat().st_size > 5000
  assert "![raw BPB against exposure](report_exposure.png)" in text
  row = next(l for l in text.splitlines() if l.startswith("| UTF-8 bytes |"))
  assert "30 kB" in row and "2.1000" in row and "2.4000 (train)" in row
  # Runs without totals (older metrics): no exposure plot or table, the rest unchanged.
  out2 = tmp_path / "old" / "report.md"
  text2 = report.write_report(list(runs), str(out2))
  assert not (tmp_path / "old" / "report_exposure.png").exists()
  assert "matched exposure" not in text2


def test_raw_bpb_against_one_axis(tmp_path):
  a = _write_run(tmp_path, "small", [
      _exposed(10, 3.0, 1), {"step": 10, "eval/raw_bpb": 2.9},
      _exposed(20, 2.5, 1), {"step": 20, "eval/raw_bpb": 2.4}])
  b = _write_run(tmp_path, "big", [_exposed(10, 2.8, 2), _exposed(20, 2.0, 2)])
  ra, rb = report.load_run(a), report.load_run(b)
  # Eval points on each axis: the logged totals, or training wall time (10 steps x 0.5 s).
  x, v = report.curve_on(ra, "utf8_bytes")
  assert list(x) == [10000.0, 20000.0] and list(v) == [2.9, 2.4]
  assert list(report.curve_on(ra, "wall_time")[0]) == [5.0, 10.0]
  assert list(report.axis_values(rb, "train_flops")) == list(rb.totals["total_train_flops"])
  assert len(report.curve_on(rb, "utf8_bytes")[1]) == 0  # no eval lines
  for axis in report.AXES:
    path = tmp_path / f"{axis}.png"
    ylim = report.plot_against([ra, rb], axis, str(path), title=axis)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
    # The y range follows the validation points (2.4-2.9), not the first train values.
    assert ylim == pytest.approx((2.4 - 0.125 - 0.3, 2.9 + 0.25 + 0.5))
