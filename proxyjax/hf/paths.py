"""Output directories of the export and the import, checked before anything heavy is
imported (the command line refuses bad ``--out`` values in a second)."""

from __future__ import annotations

import os

from proxyjax import paths as storage
from proxyjax import rundir
from proxyjax.errors import UserError


def _steps(workdir: str) -> list[int]:
  try:
    names = storage.listdir(rundir.checkpoint_dir(workdir))
  except (FileNotFoundError, NotADirectoryError):
    return []
  return sorted(int(n) for n in names if n.isdigit())


def check_export_out(out: str, overwrite: bool) -> None:
  """The export's ``out`` (local, ``gs://`` or ``s3://``): missing or empty (or
  ``overwrite``), never a run directory."""
  if storage.exists(out) and not storage.isdir(out):
    raise UserError(f"--out={out} is a file, not a directory")
  if storage.isdir(storage.join(out, rundir.CHECKPOINTS)):
    raise UserError(f"--out={out} is a run directory (it has {rundir.CHECKPOINTS}/): choose "
                    "another directory")
  if storage.isdir(out) and storage.listdir(out) and not overwrite:
    raise UserError(f"--out={out} is not empty: choose an empty or new directory, or pass "
                    "--overwrite")


def check_import_out(workdir: str, overwrite: bool, hf_dir: str) -> None:
  """The import's run directory: not the HF directory, no checkpoints, no safetensors,
  missing or empty (or ``overwrite``)."""
  if os.path.realpath(workdir) == os.path.realpath(hf_dir):
    raise UserError(f"--out={workdir} is the --from_hf directory: choose another directory")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--out={workdir} is a file, not a directory")
  steps = _steps(workdir)
  if steps:
    raise UserError(f"--out={workdir} already has checkpoints (steps "
                    f"{', '.join(map(str, steps))}): choose another directory")
  if os.path.isdir(workdir) and any(n.endswith(".safetensors") for n in os.listdir(workdir)):
    raise UserError(f"--out={workdir} holds safetensors files (a Hugging Face checkpoint?): "
                    "choose another directory")
  if os.path.isdir(workdir) and os.listdir(workdir) and not overwrite:
    raise UserError(f"--out={workdir} is not empty: choose an empty or new directory, or pass "
                    "--overwrite")
