"""The inspect CLI writes exactly the rows the pipeline produces."""

import json
import os
import subprocess
import sys

import numpy as np

from proxyjax.config import load_config
from proxyjax.data import inspect as inspect_lib
from proxyjax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_inspect_cli_matches_pipeline(tmp_path):
  out = tmp_path / "rows.jsonl"
  cmd = [sys.executable, "-m", "proxyjax.data.inspect", "--config=configs/tiny.py",
         "--num_batches=2", f"--out={out}", "--stats", "--config.data.view=halfbyte",
         "--config.seq_len=128"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert res.returncode == 0, res.stderr
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(rows) == 16
  assert all(set(r) == {"inputs", "targets", "segment_ids", "positions"} for r in rows)
  assert all(len(r["inputs"]) == 128 for r in rows)
  stats = json.loads(res.stdout[res.stdout.index("{"):])
  assert stats["vocab_size"] == 384 and stats["docs_read"] >= 1

  config = load_config(os.path.join(ROOT, "configs/tiny.py"))
  config.data.view = "halfbyte"
  config.seq_len = 128
  it = pipeline.make_iterator(config, process_index=0, process_count=1)
  expected = [next(it) for _ in range(2)]
  got = np.array([r["inputs"] for r in rows])
  np.testing.assert_array_equal(got, np.concatenate([b["inputs"] for b in expected]))


def test_inspect_cli_rejects_bad_config():
  cmd = [sys.executable, "-m", "proxyjax.data.inspect", "--config=configs/tiny.py",
         "--config.data.rate=1.5", "--config.data.schedule.enabled=False"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert res.returncode != 0 and "data.rate" in res.stderr
  cmd = [sys.executable, "-m", "proxyjax.data.inspect", "--config=configs/tiny.py",
         "--config.data.no_such_field=1"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert res.returncode != 0 and "no_such_field" in res.stderr


def test_render():
  assert inspect_lib.render(np.array([1, 12, 64 + 104, 64 + 105, 13, 14, 400, 15, 2])) == \
      "<bos><raw>hi</raw><comp>⟨400⟩</comp><eos>"
