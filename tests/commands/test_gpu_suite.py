"""benchmarks/gpu_suite.py: the CPU dry run writes every section, time boxes hold.

The dry run (``--dry_run``) runs every section of the GPU suite at toy sizes on
CPU (Pallas kernels in interpret mode), so the script the GPU machine runs
cannot rot between GPU visits.
"""

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = os.path.join(REPO, "benchmarks", "gpu_suite.py")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import gpu_suite  # noqa: E402  (benchmarks/ is not a package: imported after the path)


def _env(**extra):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # no 8 fake devices (tests/conftest.py) in the suite
  env.update(extra)
  return env


def _number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def test_dry_run_writes_every_section_with_numbers(tmp_path):
  out = tmp_path / "out"
  t = time.time()
  p = subprocess.run([sys.executable, SUITE, "--dry_run", f"--out={out}",
                      f"--work_dir={tmp_path / 'work'}"], capture_output=True, text=True,
                     cwd=REPO, env=_env(), timeout=400)
  wall = time.time() - t
  log = (out / "gpu_suite.log").read_text() if (out / "gpu_suite.log").exists() else ""
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:] + log[-3000:]
  assert wall < 180, f"dry run took {wall:.0f} s (limit 3 minutes)"
  suite = json.loads((out / "gpu_suite.json").read_text())
  md = (out / "gpu_suite.md").read_text()
  assert suite["dry_run"] and suite["finished"]
  secs = suite["sections"]
  assert set(secs) == set(gpu_suite.SECTIONS)
  for name, sec in secs.items():
    assert sec["status"] == "ok", (name, sec, log[-3000:])
    assert f"| {name} | ok |" in md

  env = secs["env"]["results"]
  assert env["jax"]["jax"] and env["jax"]["device_count"] >= 1
  assert env["attention_auto"]["backend"] == "xla"  # CPU

  cor = secs["correctness"]["results"]
  assert cor["pass"] is True
  for case in ("causal+window40",):  # the dry run's one case (the GPU run adds "causal")
    for impl in ("pallas_gpu", "xla_bf16"):
      errs = cor[case][impl]["errors"]
      assert all(_number(e["max_abs"]) and e["finite"] for e in errs.values())
    assert cor[case]["pallas_gpu"]["padding_zero"]

  rows = secs["attention"]["results"]["rows"]
  timed = {r["backend"] for r in rows if _number(r.get("fwd_bwd_ms"))}
  assert {"pallas_gpu", "cudnn"} <= timed
  pallas = next(r for r in rows if r["backend"] == "pallas_gpu")
  assert 0 < pallas["visible_block_fraction"] <= 1 and _number(pallas["tflops"])
  assert _number(secs["attention"]["results"]["target"]["speedup_vs_cudnn_dense"])

  train = secs["train"]["results"]["0.5b"]
  r = train["result"]
  for k in ("step_s", "symbols_per_s", "tflops_per_device", "compile_s"):
    assert _number(r[k]) and r[k] > 0, k
  assert r["remat"] and r["batch"] >= 1 and "mfu" in r  # no peak FLOP/s on CPU: None

  neural = secs["neural"]["results"]
  assert neural["model_forward"]["gb_per_hour"] > 0
  assert neural["end_to_end"]["gb_per_hour"] > 0
  assert neural["end_to_end"]["coder_workers"] >= 1
  assert "## neural compressor" in md and "## train step" in md


def test_a_hung_section_is_stopped_and_its_results_kept(tmp_path):
  out = tmp_path / "out"
  t = time.time()
  p = subprocess.run([sys.executable, SUITE, "--dry_run", f"--out={out}", "--sections=env",
                      "--total_s=6", f"--work_dir={tmp_path / 'work'}"],
                     capture_output=True, text=True, cwd=REPO,
                     env=_env(PROXYJAX_GPU_SUITE_STALL="env"), timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert time.time() - t < 60
  suite = json.loads((out / "gpu_suite.json").read_text())
  env = suite["sections"]["env"]
  assert env["status"] == "timeout" and "out of time" in env["error"]
  assert env["results"] == {"stalled": True}  # what it recorded before hanging
  assert "| env | timeout |" in (out / "gpu_suite.md").read_text()


def test_markdown_of_a_partial_suite():
  suite = {"started": "now", "dry_run": False, "command": "python3 gpu_suite.py", "total_s": 460,
           "wall_s": 100.0, "sections": {
               "env": {"status": "ok", "seconds": 3, "results": {"jax": {
                   "jax": "0.11.2", "jaxlib": "0.11.2", "device_kind": "NVIDIA H200",
                   "device_count": 1, "compute_capability": "9.0",
                   "bytes_limit": 130 * 2**30}, "attention_auto": {
                       "backend": "pallas_gpu", "why": "sm90"}}},
               "attention": {"status": "timeout", "error": "out of time (130 s)", "results": {
                   "rows": [{"seq_len": 16384, "batch": 2, "backend": "cudnn",
                             "fwd_bwd_ms": 40.0, "tflops": 100.0,
                             "speedup_vs_cudnn_dense": 1.0},
                            {"seq_len": 16384, "batch": 2, "backend": "pallas_gpu",
                             "fwd_bwd_ms": 10.0, "tflops": 400.0, "tflops_blocks": 500.0,
                             "visible_block_fraction": 0.38,
                             "speedup_vs_cudnn_dense": 4.0}],
                   "target": {"seq_len": 16384, "speedup_vs_cudnn_dense": 4.0, "met": True}}},
               "train": {"status": "running"}}}
  md = gpu_suite.render_markdown(suite)
  assert "| env | ok |" in md and "NVIDIA H200" in md
  assert "| attention | timeout |" in md and "4.00x (target 2x)" in md
  assert "| 16384 | 2 | pallas_gpu | 10.00 | 400.0 | 500.0 | 0.380 | 4.00 |" in md
  assert "| train | running |" in md and "| neural | pending |" in md


@pytest.mark.parametrize("argv,match", [
    (["--out=/tmp/x", "--sections=env,bogus"], "unknown sections"),
])
def test_bad_arguments(argv, match, capsys):
  with pytest.raises(SystemExit):
    gpu_suite.parse_args(argv)
  assert match in capsys.readouterr().err
