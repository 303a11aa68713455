"""notebook_runtime: the scale / workdir precedence of the colabs/ notebooks."""

import os

import pytest

from proxyjax import ablation
from proxyjax.errors import UserError


def test_arguments_win_over_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("PROXYJAX_SCALE", "cpu")
  monkeypatch.setenv("PROXYJAX_WORKDIR", str(tmp_path / "env"))
  lines = []
  rt = ablation.notebook_runtime("x", scale="ci", workdir=str(tmp_path / "arg" / "w"),
                                 log=lines.append)
  assert (rt.scale, rt.workdir) == ("ci", str(tmp_path / "arg" / "w"))
  assert os.path.isdir(rt.workdir) and not os.path.exists(tmp_path / "env")
  # On this CPU test machine 'auto' is dense XLA attention, and the notebook says so.
  assert (rt.backend, lines[0]) == ("xla", f"scale ci, workdir {rt.workdir}")
  assert lines[2] == f"model.attention='auto' -> xla ({rt.why})"
  assert rt.devices.startswith(f"{len(__import__('jax').devices())} x ")
  assert os.path.isfile(os.path.join(rt.root, "configs", "tiny.py"))


def test_environment_then_runtime(tmp_path, monkeypatch):
  monkeypatch.setenv("PROXYJAX_SCALE", "colab_gpu")
  monkeypatch.setenv("PROXYJAX_WORKDIR", str(tmp_path / "env"))
  rt = ablation.notebook_runtime("x", log=None)
  assert (rt.scale, rt.workdir) == ("colab_gpu", str(tmp_path / "env"))
  monkeypatch.delenv("PROXYJAX_SCALE")
  monkeypatch.delenv("PROXYJAX_WORKDIR")
  monkeypatch.setattr(ablation.notebook, "default_workdir",
                      lambda name: str(tmp_path / f"default-{name}"))
  rt = ablation.notebook_runtime("quickstart", log=None)
  assert rt.scale == "cpu"  # detect_scale on a CPU runtime
  assert rt.workdir == str(tmp_path / "default-quickstart") and os.path.isdir(rt.workdir)


def test_unknown_scale_is_one_line(monkeypatch, tmp_path):
  monkeypatch.setenv("PROXYJAX_SCALE", "laptop")
  with pytest.raises(UserError, match="unknown scale 'laptop'"):
    ablation.notebook_runtime("x", workdir=str(tmp_path / "w"), log=None)
  assert not os.path.exists(tmp_path / "w")
