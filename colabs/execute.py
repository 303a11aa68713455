r"""Syncs a notebook pair and executes the notebook in place, keeping its outputs.

    python colabs/execute.py NAME [--scale=cpu] [--workdir=DIR] [--timeout=SECONDS]

``NAME`` is a notebook of this folder (``quickstart``, ``compressors``, ``proxy_vs_bytes``,
``mixing``). First ``jupytext --sync colabs/NAME.py`` (the newer of the pair gives the cells'
sources; outputs stay in the .ipynb), then the .ipynb runs top to bottom in the ``python3``
kernel (nbclient) with ``PROXYJAX_SCALE`` and ``PROXYJAX_WORKDIR`` set, and is written back
with its outputs. The kernel runs in this folder, with this checkout first on ``PYTHONPATH``
(so it imports the code next to the notebook, without installing it); at the ``ci`` scale
XLA compiles without backend optimisations into a persistent compilation cache (those runs
are mostly compiles; ``kernel_env``). A cell that raises
stops the run and leaves the .ipynb as it was. ``tests/colabs/test_notebooks.py`` executes
the notebooks the same way (``execute``) at the ``ci`` scale.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jupytext
import jupytext.cli
import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NOTEBOOKS = ("quickstart", "compressors", "proxy_vs_bytes", "mixing")


def paths(name: str) -> tuple[str, str]:
  """``(colabs/NAME.py, colabs/NAME.ipynb)``."""
  return os.path.join(HERE, f"{name}.py"), os.path.join(HERE, f"{name}.ipynb")


def sync(name: str) -> None:
  """``jupytext --sync`` of the pair (creates the .ipynb from the .py if missing)."""
  py, ipynb = paths(name)
  if not os.path.exists(ipynb):
    nb = jupytext.read(py)
    jupytext.write(nb, ipynb, fmt="ipynb")
  jupytext.cli.jupytext(["--sync", "--quiet", py])


def kernel_env(scale: str, workdir: str, jax_cache: str = "") -> dict[str, str]:
  """The kernel's environment: this one, plus the scale, the workdir and the checkout on
  ``PYTHONPATH``; one CPU device (no fake multi-device XLA_FLAGS from a test run). At the
  ``ci`` scale XLA skips its backend optimisations and compiled programs are kept in the
  persistent cache ``jax_cache`` (default a folder in the temp dir), so arms of one
  ablation with the same shapes compile once."""
  env = dict(os.environ)
  env["PROXYJAX_SCALE"] = scale
  env["PROXYJAX_WORKDIR"] = workdir
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  env.pop("XLA_FLAGS", None)
  if scale == "ci":  # seconds-long smoke runs are mostly XLA compiles
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    env["JAX_COMPILATION_CACHE_DIR"] = jax_cache or os.path.join(tempfile.gettempdir(),
                                                                 "proxyjax-colabs-jax-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env.setdefault("TOKENIZERS_PARALLELISM", "false")
  env.setdefault("MPLBACKEND", "Agg")
  return env


def execute(nb: nbformat.NotebookNode, scale: str, workdir: str,
            timeout: int = 3600, jax_cache: str = "") -> nbformat.NotebookNode:
  """Runs ``nb`` (in place) in the python3 kernel; ``timeout`` seconds per cell
  (``jax_cache``: ``kernel_env``).

  Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that raises.
  """
  os.makedirs(workdir, exist_ok=True)
  client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                          resources={"metadata": {"path": HERE}})
  client.execute(env=kernel_env(scale, workdir, jax_cache), cwd=HERE)
  return nb


def strip_noise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  """Drops what changes on every run without meaning anything (execution metadata)."""
  for cell in nb.cells:
    cell.get("metadata", {}).pop("execution", None)
  return nb


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", choices=NOTEBOOKS)
  parser.add_argument("--scale", default="cpu",
                      help="PROXYJAX_SCALE: ci, cpu, colab_gpu, colab_tpu (default cpu)")
  parser.add_argument("--workdir", default="",
                      help="PROXYJAX_WORKDIR (default /tmp/proxyjax-colab-NAME-SCALE)")
  parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
  args = parser.parse_args(argv)
  workdir = os.path.abspath(args.workdir or f"/tmp/proxyjax-colab-{args.name}-{args.scale}")
  sync(args.name)
  _, ipynb = paths(args.name)
  nb = nbformat.read(ipynb, as_version=4)
  t0 = time.perf_counter()
  execute(nb, args.scale, workdir, args.timeout)
  seconds = time.perf_counter() - t0
  nbformat.write(strip_noise(nb), ipynb)
  print(f"executed {os.path.relpath(ipynb, ROOT)} at scale {args.scale} in {seconds:.1f} s "
        f"(workdir {workdir})", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
