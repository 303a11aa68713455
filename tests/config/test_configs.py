"""Every config file, with every SIZE argument, gives exactly the config it gave when the
files were rewritten to spell out their experiment (issue 12, item 7).

The expected values in ``tests/fixtures/configs.json`` were dumped from the one-line config
files of commit 50c7e4e (``ladder_config(size)`` and friends) before the rewrite. Each entry
lists every field as ``[dotted name, type, value]``, so a changed value, a changed type (int
vs float, tuple vs list) or a missing or extra field fails. Regenerate
(``python tests/config/test_configs.py --write``) only for an intended change. Intended
changes since: issue 22, item 6 -- the ladder rungs (and bytes.py / tokens.py on them) name
no corpus (``data.sources`` is ``NO_CORPUS``, ''), and every config has ``check_fits``.
"""

import json
import os
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "configs.json")
LADDER = ("0.5b", "1.5b", "4b", "7b", "14b")

# Config strings as given to --config (relative to the repository root).
CONFIG_STRINGS = (
    ["configs/base.py", "configs/tiny.py"]
    + [f"configs/{size}.py" for size in LADDER]
    + ["configs/bytes.py", "configs/tokens.py"]
    + [f"configs/{name}.py:{size}" for name in ("bytes", "tokens") for size in ("tiny",) + LADDER]
    + ["configs/compressor.py", "configs/compressor.py:tiny", "configs/compressor.py:gpu"])


def _fields(c: ml_collections.ConfigDict, prefix: str = "") -> list:
  """``[dotted name, type name, value]`` for every leaf, in the config's own order."""
  out = []
  for key, value in c.items():
    name = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      out.append([name, "ConfigDict", None])
      out.extend(_fields(value, name + "."))
    else:
      out.append([name, type(value).__name__, list(value) if isinstance(value, tuple) else value])
  return out


def load(config_string: str) -> ml_collections.ConfigDict:
  """The config ``--config=<config_string>`` gives, parsed by the same flag as proxyjax.main."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values)
  path, _, arg = config_string.partition(":")
  full = os.path.join(ROOT, path) + (":" + arg if arg else "")
  values(["test", f"--config={full}"])
  return values.config


def _module(path: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("config_under_test", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def snapshot() -> dict:
  return {s: _fields(load(s)) for s in CONFIG_STRINGS}


@pytest.fixture(scope="module")
def expected():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


def test_fixture_covers_every_config_file(expected):
  files = {n for n in os.listdir(os.path.join(ROOT, "configs")) if n.endswith(".py")}
  assert files == {s.split(":")[0].split("/")[1] for s in CONFIG_STRINGS}
  assert sorted(expected) == sorted(CONFIG_STRINGS)


@pytest.mark.parametrize("config_string", CONFIG_STRINGS)
def test_config_unchanged(config_string, expected):
  got = _fields(load(config_string))
  want = expected[config_string]
  assert [f[0] for f in got] == [f[0] for f in want]  # same fields, same order
  for g, w in zip(got, want):
    assert g == w, f"{config_string}: {g[0]} is {g[2]!r} ({g[1]}), was {w[2]!r} ({w[1]})"


@pytest.mark.parametrize("size", LADDER)
def test_rung_files_match_ladder_preset(size):
  """configs/<size>.py and proxyjax.config.ladder_config(size) (used by tests, plan) agree."""
  from proxyjax import config as config_lib  # pylint: disable=g-import-not-at-top
  assert load(f"configs/{size}.py").to_dict() == config_lib.ladder_config(size).to_dict()


# configs/tiny.py (the README's demo) is proxyjax.config.tiny_config() (the base of the tests'
# configs and of the neural compressor's: ~3.6M params, deflate, rows of 512) with the demo's
# own recipe: exactly these fields differ (field: the demo's value).
DEMO_RECIPE = {
    "checkpoint_every": 600,
    "data.max_document_bytes": 8192,
    "data.schedule.final_rate": 0.33,
    "data.schedule.initial_rate": 0.25,
    "data.schedule.peak_rate": 0.33,
    "data.schedule.warmup_steps": 300,
    "data.tokenizer_vocab_size": 1024,
    "data.view": "tokenizer",
    "eval.batch_size": 32,
    "eval.max_docs": 0,
    "eval.max_document_bytes": 8192,
    "eval_every": 600,
    "model.d_ff": 384,
    "model.d_model": 128,
    "model.head_dim": 32,
    "model.logits_chunk": 256,
    "num_steps": 1200,
    "opt.peak_lr": 0.006,
    "opt.warmup_steps": 60,
    "seq_len": 256,
    "summary_prompt": "import unittest\n\n\nclass TestPath(unittest.TestCase):\n",
}


def _flat(c: ml_collections.ConfigDict) -> dict:
  return {name: value for name, kind, value in _fields(c) if kind != "ConfigDict"}


def test_tiny_file_is_tiny_preset_plus_demo_recipe():
  from proxyjax import config as config_lib  # pylint: disable=g-import-not-at-top
  demo, preset = _flat(load("configs/tiny.py")), _flat(config_lib.tiny_config())
  assert sorted(demo) == sorted(preset)
  assert {k: v for k, v in demo.items() if v != preset[k]} == DEMO_RECIPE


@pytest.mark.parametrize("size", ["tiny", "gpu"])
def test_compressor_file_matches_compressor_preset(size):
  from proxyjax.views.neural.settings import compressor_config  # pylint: disable=g-import-not-at-top
  assert load(f"configs/compressor.py:{size}").to_dict() == compressor_config(size).to_dict()


@pytest.mark.parametrize("name", ["bytes", "tokens"])
def test_unknown_size_is_refused(name):
  from proxyjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="'size': unknown size '3b'; known: tiny, 0.5b"):
    _module(f"configs/{name}.py").get_config("3b")


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "--write":
    entries = [json.dumps(name) + ": [\n" + ",\n".join("  " + json.dumps(field) for field in fields)
               + "\n]" for name, fields in snapshot().items()]
    with open(FIXTURE, "w", encoding="utf-8") as f:
      f.write("{\n" + ",\n".join(entries) + "\n}\n")
  else:
    print(json.dumps(snapshot(), indent=1)[:2000])
