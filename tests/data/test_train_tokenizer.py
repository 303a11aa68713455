"""Tests for proxyjax.tools.train_tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from tokenizers import Tokenizer

from proxyjax.tools import train_tokenizer as tt

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STDLIB = sysconfig.get_paths()["stdlib"]
TRAIN_FILES = ("json/encoder.py", "json/decoder.py", "textwrap.py",
               "string.py", "bisect.py", "shlex.py")
HELD_OUT = "json/__init__.py"


@pytest.fixture
def corpus(tmp_path):
  root = tmp_path / "corpus"
  for rel in TRAIN_FILES:
    dest = root / rel.replace("/", "_")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(os.path.join(STDLIB, rel), dest)
  (root / "empty.py").write_bytes(b"")
  (root / "binary.py").write_bytes(b"\0\1\2\3")
  (root / "latin1.py").write_bytes(b"# caf\xe9\nx = 1\n")
  return root


def _held_out_text() -> str:
  with open(os.path.join(STDLIB, HELD_OUT), "rb") as f:
    return f.read().decode("utf-8")


def test_train_tokenizer_round_trips(corpus, tmp_path):
  out = tmp_path / "tok" / "tokenizer.json"
  summary = tt.train_tokenizer(f"files:{corpus}", vocab_size=400, out=str(out),
                               validation_fraction=0.0)
  assert out.exists()
  assert summary["vocab_size"] == 400
  assert summary["documents"] == len(TRAIN_FILES) + 1  # + latin1.py
  assert summary["skipped"] == {"empty": 1, "binary": 1}
  assert summary["invalid_utf8"] == 1
  assert summary["roundtrip_failures"] == 0
  assert summary["bytes_per_token"] > 1.5
  tokenizer = Tokenizer.from_file(str(out))
  assert tokenizer.get_vocab_size() == 400
  spec = json.loads(out.read_text())
  assert spec["model"]["type"] == "BPE"
  assert spec["pre_tokenizer"]["add_prefix_space"] is False
  text = _held_out_text()
  ids = tokenizer.encode(text).ids
  assert tokenizer.decode(ids) == text
  assert len(ids) < len(text.encode()) / 1.5
  tricky = "  leading spaces\n\ttab caf\u00e9 \U0001f600 \r\n trailing  "
  assert tokenizer.decode(tokenizer.encode(tricky).ids) == tricky
  assert "bytes/token" in tt.format_summary(summary)


def test_train_tokenizer_respects_max_bytes(corpus, tmp_path):
  out = tmp_path / "small.json"
  summary = tt.train_tokenizer(f"files:{corpus}", vocab_size=300, out=str(out),
                               max_bytes=1000, validation_fraction=0.0)
  sizes = sorted(os.path.getsize(p) for p in corpus.iterdir())
  # Stops at the first document that reaches the budget.
  assert 1000 <= summary["bytes"] <= 1000 + sizes[-1]
  assert summary["documents"] < len(TRAIN_FILES)


def test_train_tokenizer_rejects_bad_arguments(corpus, tmp_path):
  with pytest.raises(ValueError, match="vocab_size"):
    tt.train_tokenizer(f"files:{corpus}", vocab_size=200,
                       out=str(tmp_path / "x.json"))


def test_cli(corpus, tmp_path):
  out = tmp_path / "cli.json"
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  result = subprocess.run(
      [sys.executable, "-m", "proxyjax.tools.train_tokenizer",
       f"--sources=files:{corpus}", "--vocab_size=320", f"--out={out}",
       "--validation_fraction=0.2", "--min_frequency=2"],
      capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120,
      check=False)
  assert result.returncode == 0, result.stderr
  assert "vocab size:       320" in result.stdout
  assert "skipped:" in result.stdout
  tokenizer = Tokenizer.from_file(str(out))
  text = _held_out_text()
  assert tokenizer.decode(tokenizer.encode(text).ids) == text
