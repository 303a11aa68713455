"""What a colabs/ notebook settles before it runs anything: scale, work directory, runtime.

    from proxyjax import ablation
    rt = ablation.notebook_runtime("quickstart")   # prints scale, workdir, devices, backend
    rt.scale, rt.workdir, rt.backend, rt.root

The scale is ``scale=`` if given, else ``$PROXYJAX_SCALE``, else what the runtime is
(``detect_scale``: ``colab_tpu`` / ``colab_gpu`` / ``cpu``); the work directory likewise
``workdir=``, ``$PROXYJAX_WORKDIR``, else ``/content/proxyjax-NAME`` on Colab or a new
temporary directory. ``colabs/execute.py`` sets both variables (``--scale``, ``--workdir``).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Callable

from proxyjax.ablation import scales


@dataclasses.dataclass(frozen=True)
class Runtime:
  """A notebook's settings.

  Attributes:
    scale: ``ci``, ``cpu``, ``colab_gpu``, ``colab_tpu`` or ``pod``.
    workdir: where the notebook writes (created).
    backend: what ``model.attention='auto'`` resolves to on this runtime.
    why: the reason ``auto_backend`` gives for it.
    devices: ``"N x KIND"`` of the local JAX devices.
    root: the proxyjax checkout this package is imported from (it holds ``configs/``), or
      '' when the package was installed without one.
  """
  scale: str
  workdir: str
  backend: str
  why: str
  devices: str
  root: str


def checkout_root() -> str:
  """The directory holding ``configs/`` next to this ``proxyjax`` package, or ''."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return root if os.path.isdir(os.path.join(root, "configs")) else ""


def default_workdir(name: str) -> str:
  """``/content/proxyjax-NAME`` on Colab, else a new temporary directory."""
  if os.path.isdir("/content"):
    return f"/content/proxyjax-{name}"
  return tempfile.mkdtemp(prefix=f"proxyjax-{name}-")


def notebook_runtime(name: str, *, scale: str = "", workdir: str = "",
                     log: Callable[[str], None] | None = print) -> Runtime:
  """Scale, work directory and attention backend of notebook ``name``, printed via ``log``.

  Raises ``proxyjax.errors.UserError`` for an unknown scale (before JAX is imported).
  """
  scale = scale or os.environ.get("PROXYJAX_SCALE", "")
  if scale:
    scales.check_scale(scale)
  workdir = workdir or os.environ.get("PROXYJAX_WORKDIR", "") or default_workdir(name)
  import jax  # pylint: disable=g-import-not-at-top  (seconds: only once the flags are checked)

  from proxyjax.model import attention  # pylint: disable=g-import-not-at-top

  scale = scale or scales.detect_scale()
  os.makedirs(workdir, exist_ok=True)
  backend, why = attention.auto_backend()
  devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  rt = Runtime(scale=scale, workdir=workdir, backend=backend, why=why, devices=devices,
               root=checkout_root())
  if log is not None:
    log(f"scale {scale}, workdir {workdir}")
    log(f"jax {jax.__version__}: {devices}")
    log(f"model.attention='auto' -> {backend} ({why})")
  return rt
