"""Ladder runs refuse to do the wrong thing (issue 22, item 6).

* No corpus chosen: the ladder configs (configs/<size>.py and bytes.py / tokens.py on them)
  have ``data.sources = NO_CORPUS``; train and eval stop at once with one line naming the
  flag and ``python -m proxyjax.data.prepare``; ``--mode=plan`` needs no data.
* Too big for the devices: train checks ``--mode=plan``'s analytic estimate against the local
  devices before it builds anything, so a 7B run on a CPU host fails in seconds, naming
  ``--mode=plan`` and both numbers, instead of being OOM-killed.
"""

import importlib.util
import os
import subprocess
import sys
import time

import pytest

from proxyjax import config as config_lib
from proxyjax import plan
from proxyjax.config import validation as config_validation
from proxyjax.errors import ConfigError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LADDER = ("0.5b", "1.5b", "4b", "7b", "14b")
LIMIT_S = 60  # generous for a slow CI machine; each run takes ~3-5 s (the imports)


def _main(*args):
  """``python -m proxyjax.main ARGS`` with the tests' 8 fake CPU devices:
  (exit status, stdout, stderr lines, wall seconds)."""
  cmd = [sys.executable, "-m", "proxyjax.main", *args]
  t0 = time.perf_counter()
  out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                       timeout=300)
  wall = time.perf_counter() - t0
  print(f"{' '.join(args)}: exit {out.returncode} in {wall:.1f} s")
  return out.returncode, out.stdout, out.stderr.strip().splitlines(), wall


# Each command below is a real process (~4-7 s, the imports); in-process tests further down
# cover every rung with every view.
@pytest.mark.parametrize("config,mode", [("configs/7b.py", "train"),
                                         ("configs/tokens.py:14b", "train"),
                                         ("configs/bytes.py:0.5b", "eval")])
def test_no_corpus_stops_at_once_in_one_line(config, mode, tmp_path):
  workdir = tmp_path / "run"
  rc, _, err, wall = _main(f"--config={config}", f"--workdir={workdir}", f"--mode={mode}")
  assert rc == 2, err
  assert len(err) == 1, err
  line = err[0]
  rung = config.rpartition(":")[2] if ":" in config else config.split("/")[1][:-3]
  assert line.startswith(f"proxyjax: error: config field 'data.sources': the {rung} ladder "
                         "config needs your corpus: --config.data.sources='prepared:DIR'"), line
  assert "python -m proxyjax.data.prepare" in line
  assert wall < LIMIT_S
  assert not workdir.exists()  # nothing was built


@pytest.mark.parametrize("config", ["configs/7b.py", "configs/bytes.py:7b"])
def test_7b_on_this_host_does_not_fit_and_says_so_in_seconds(config, tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  workdir = tmp_path / "run"
  rc, _, err, wall = _main(f"--config={config}", f"--workdir={workdir}",
                           f"--config.data.sources=files:{corpus}")
  assert rc == 2, err
  assert len(err) == 1, err
  line = err[0]
  assert line.startswith("proxyjax: error: the ") and "model does not fit" in line, line
  assert "--mode=plan estimates" in line and "GiB per device" in line and "usable" in line
  assert "8 cpu devices" in line and "8 local cpu devices" in line  # the host RAM is shared
  assert "--config.check_fits=false" in line
  assert wall < LIMIT_S
  assert not workdir.exists()


def test_plan_needs_no_corpus():
  rc, out, err, wall = _main("--config=configs/7b.py", "--mode=plan", "--plan.devices=64",
                             "--plan.device_memory_gb=80")
  assert rc == 0, err
  assert out.startswith("proxyjax plan: 7.25") and "FITS: needs" in out, out
  assert wall < LIMIT_S


# In-process checks of the same pieces.


def _load(name: str, size: str | None = None):
  """``get_config()`` of configs/<name>.py, or ``get_config(size)`` (bytes.py, tokens.py)."""
  path = os.path.join(ROOT, "configs", f"{name}.py")
  if size is None:
    return config_lib.load_config(path)
  spec = importlib.util.spec_from_file_location(f"ladder_guards_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(size)


@pytest.mark.parametrize("size", LADDER)
@pytest.mark.parametrize("name", ["rung", "bytes", "tokens"])
def test_every_rung_has_no_corpus_and_is_refused_but_planned(size, name):
  """configs/<size>.py, configs/bytes.py:<size>, configs/tokens.py:<size>."""
  c = _load(size) if name == "rung" else _load(name, size)
  assert c.data.sources == config_lib.NO_CORPUS == ""
  r = plan.make_plan(c, plan.Options(devices=64, device_memory_gb=80, platform="gpu",
                                     compile="never"))
  assert r["params"] > 4e8
  assert config_validation.ladder_rung(c) == size
  with pytest.raises(ConfigError, match=f"the {size} ladder config needs your corpus") as info:
    config_validation.validate_corpus(c)
  assert "\n" not in str(info.value)
  c.data.sources = "jsonl:/data/*.jsonl"
  config_validation.validate_corpus(c)


def test_a_corpus_free_config_that_is_no_rung_is_named_generically():
  c = config_lib.tiny_config()
  config_validation.validate_corpus(c)  # stdlib: the demo corpus is a choice
  c.data.sources = " "
  with pytest.raises(ConfigError, match="'data.sources': this config needs your corpus"):
    config_validation.validate_corpus(c)


def test_cpu_devices_share_the_host_ram():
  avail = plan.host_available_bytes()
  assert avail and avail > 0
  mem, where = plan.local_device_memory("cpu")  # conftest: 8 fake CPU devices
  assert "over 8 local cpu devices" in where
  assert mem == pytest.approx(avail / 8, rel=0.25)  # RAM moves a little between the reads
  assert plan.local_device_memory("gpu") == (None, "gpu is not the local backend")


def test_tiny_fits_and_the_check_is_cheap():
  c = config_lib.tiny_config()
  t0 = time.perf_counter()
  r = plan.check_fits(c)
  wall = time.perf_counter() - t0
  print(f"check_fits(tiny): {wall:.3f} s, needs {r['needed_bytes'] / 2**20:.0f} MiB of "
        f"{r['usable_bytes'] / 2**20:.0f} MiB per device")
  assert r["needed_bytes"] <= r["usable_bytes"] and r["source"] == "analytic"
  assert wall < 10


def test_check_fits_refuses_and_the_escape_hatch(monkeypatch):
  c = config_lib.tiny_config()
  monkeypatch.setattr(plan, "local_device_memory", lambda platform: (1 << 20, "a test"))
  with pytest.raises(UserError, match="does not fit: --mode=plan estimates") as info:
    plan.check_fits(c)
  msg = str(info.value)
  assert "\n" not in msg and "0.00 GiB per device is usable (90% of 0.00 GiB per device: a test)" \
      in msg and "--config.check_fits=false" in msg
  c.check_fits = False
  assert plan.check_fits(c) is None
