"""Bad input a person types gives one line on stderr, exit status 2, no traceback
(``proxyjax.cli``); values accepted silently before are refused, naming the field."""

import os
import subprocess
import sys

import pytest

from proxyjax import cli, plan
from proxyjax import config as config_lib
from proxyjax.config import validation as config_validation
from proxyjax.errors import ConfigError, UserError
from proxyjax.eval import validation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(*args, workdir=None):
  """``python -m proxyjax.main`` on one CPU device: (exit status, stderr lines)."""
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "proxyjax.main", *args]
  if workdir is not None:
    cmd.append(f"--workdir={workdir}")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  return out.returncode, out.stderr.splitlines()


# Each runs a real process (~5 s: the imports); every error comes before any training.
CASES = [
    # (arguments, what the one line must contain)
    (["--config=configs/tiny.py", "--config.no_such_field=1"],
     "config has no field 'no_such_field' (in --config.no_such_field=1)"),
    (["--config=configs/no_such_file.py"], "config file 'configs/no_such_file.py' not found"),
    (["--config=configs/tiny.py", "--config.model.dtype=float13"], "'model.dtype'"),
    (["--config=configs/tiny.py", "--config.keep_checkpoints=0"], "'keep_checkpoints'"),
    (["--config=configs/tiny.py", "--mode=eval"], "no checkpoint to evaluate"),
    (["--config=configs/tiny.py", "--mode=plan", "--plan.devices=0"], "'plan.devices'"),
    (["--config=configs/tiny.py", "--config.data.validation_fraction=0",
      "--config.eval_every=5", "--config.num_steps=10"], "'data.validation_fraction'"),
    # a ConfigError raised inside a config file is re-raised by ml_collections with one argument
    (["--config=configs/bytes.py:3b"], "unknown size '3b'"),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[
    "unknown_field", "missing_config_file", "bad_dtype", "keep_checkpoints_0", "eval_empty_workdir",
    "plan_devices_0", "empty_validation_split", "config_file_raises_config_error"])
def test_one_line_error(tmp_path, args, expected):
  workdir = tmp_path / "run"
  code, lines = _main(*args, workdir=None if "--mode=plan" in args else workdir)
  assert code == 2 and len(lines) == 1, lines[-40:]
  assert lines[0].startswith("proxyjax: error: ") and expected in lines[0], lines
  assert not (workdir / "checkpoints").exists()  # nothing trained


def test_verbose_shows_the_traceback():
  code, lines = _main("--config=configs/tiny.py", "--config.no_such_field=1", "--verbose")
  assert code == 2 and len(lines) > 5 and "Traceback (most recent call last):" in lines
  assert lines[-1] == ("proxyjax: error: config has no field 'no_such_field' "
                       "(in --config.no_such_field=1)")


# --- in-process: the same diagnoses without starting processes ---------------------------


@pytest.mark.parametrize("field,value", [
    ("opt.peak_lr", -1.0), ("opt.peak_lr", 0.0), ("opt.warmup_steps", -5),
    ("checkpoint_every", -2), ("keep_checkpoints", 0), ("eval_every", -1),
    ("model.dtype", "float13"), ("model.param_dtype", "int8"), ("opt.clip", 0.0),
    ("opt.b2", 1.0), ("model.n_layers", 0), ("opt.min_lr_ratio", 1.5)])
def test_validate_refuses(field, value):
  c = config_lib.tiny_config()
  *parents, leaf = field.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=f"config field '{field}'") as info:
    validation.validate(c)
  assert "\n" not in str(info.value) and isinstance(info.value, UserError)


def test_validate_accepts_the_shipped_configs():
  for name in ("tiny", "0.5b", "14b"):
    config_validation.validate_numbers(config_lib.ladder_config(name))


def test_plan_devices_refused():
  with pytest.raises(ConfigError, match="plan.devices"):
    plan.validate_options(plan.Options(devices=0))
  with pytest.raises(ConfigError, match="plan.device_memory_gb"):
    plan.validate_options(plan.Options(device_memory_gb=-1.0))
  plan.validate_options(plan.Options(devices=8, device_memory_gb=80.0))


def test_describe_flag_errors(tmp_path):
  tiny = "--config=configs/tiny.py"
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    err = AttributeError("'x'")
    assert cli.describe_flag_error(err, ["m", tiny, "--config.model.d_modle=3"]) == (
        "config has no field 'model.d_modle'; did you mean 'model.d_model'? "
        "(in --config.model.d_modle=3)")
    assert "did you mean 'model.dtype'?" in cli.describe_flag_error(
        err, ["m", tiny, "--config.dtype=float32"])
    assert "'seq_len' has no sub-field 'x'" in cli.describe_flag_error(
        err, ["m", tiny, "--config.seq_len.x=1"])
    assert cli.describe_flag_error(err, ["m", "--config", "nope.py"]) == (
        "config file 'nope.py' not found (in --config nope.py)")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n  return 1 / 0\n")
    message = cli.describe_flag_error(err, ["m", f"--config={broken}"])
    assert "ZeroDivisionError" in message and "(line 2)" in message
  finally:
    os.chdir(cwd)


def test_eval_without_checkpoint_is_a_user_error(tmp_path):
  from proxyjax.eval import run as eval_run  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="no checkpoint to evaluate") as info:
    eval_run.evaluate(config_lib.tiny_config(), str(tmp_path))
  assert isinstance(info.value, FileNotFoundError)  # callers catching that still do


def test_positional_arguments_are_refused_by_every_command():
  """main, sample, export and ablate share cli.no_positional: leftovers after the flags."""
  cli.no_positional(["proxyjax.main"])
  with pytest.raises(UserError, match=r"unexpected arguments: extra words \(flags take"):
    cli.no_positional(["proxyjax.sample", "extra", "words"])
  # Read, not imported: importing the entry points defines their absl flags in this process.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for name in ("ablate", "export", "main", "sample"):
    with open(os.path.join(root, "proxyjax", f"{name}.py"), encoding="utf-8") as f:
      assert "  cli.no_positional(argv)\n" in f.read(), name
