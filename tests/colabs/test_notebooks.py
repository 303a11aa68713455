"""The colabs/ notebooks: each .py/.ipynb pair in sync, and each notebook executed at the
``ci`` scale (nbclient, kernel python3) within 120 s, producing its table and plots.

The execution goes through ``colabs/execute.py`` (``execute``), as the committed outputs
(``python colabs/execute.py NAME --scale=cpu``) do, on an in-memory copy of the notebook.
"""

import importlib.util
import json
import os
import re
import time

import jupytext
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLABS = os.path.join(ROOT, "colabs")

_spec = importlib.util.spec_from_file_location("colabs_execute", os.path.join(COLABS, "execute.py"))
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)

TIMEOUT_S = 120  # per notebook at the ci scale

# What each notebook must leave behind: the header of its Markdown table, how many PNG
# outputs it displays at least, and the files it writes in PROXYJAX_WORKDIR.
EXPECTED = {
    "quickstart": ("| scale | steps | train loss |", 1,
                   ("quickstart.md", "loss.png", "metrics.jsonl", "eval/bpb.json",
                    "eval/translation.json")),
    "compressors": ("| view | alphabet | bytes / symbol |", 2,
                    ("compressors.json", "compressors.png", "compressors.md",
                     "symbol_spans.png")),
    "proxy_vs_bytes": ("| arm | eval raw BPB |", 4,
                       ("report.md", "report.json", "bpb_vs_utf8_bytes.png",
                        "bpb_vs_train_flops.png", "eval_raw_bpb_by_arm.png")),
    "mixing": ("| arm | eval raw BPB |", 4,
               ("report.md", "report.json", "bpb_vs_utf8_bytes.png", "bpb_vs_train_flops.png",
                "eval_raw_bpb_by_arm.png")),
}
NOTEBOOKS = sorted(n for n in EXPECTED if os.path.exists(os.path.join(COLABS, f"{n}.py")))
# Notebooks whose committed .ipynb holds the outputs of a cpu-scale run (execute.py --scale=cpu).
CPU_OUTPUTS = ["quickstart", "compressors", "proxy_vs_bytes", "mixing"]
COLAB_URL = "https://colab.research.google.com/github/proxyjax/proxyjax/blob/main/colabs/"


def _sources(nb):
  return [(c.cell_type, c.source) for c in nb.cells]


def test_every_notebook_is_expected():
  pairs = {f[:-len(".ipynb")] for f in os.listdir(COLABS) if f.endswith(".ipynb")}
  assert pairs == set(NOTEBOOKS) and pairs <= set(execute.NOTEBOOKS)
  assert {"quickstart", "compressors"} <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_in_sync(name):
  """The .py (jupytext py:percent) and the committed .ipynb have the same cells."""
  py, ipynb = execute.paths(name)
  from_py, from_ipynb = jupytext.read(py), jupytext.read(ipynb)
  assert _sources(from_py) == _sources(from_ipynb), (
      f"colabs/{name}.py and .ipynb differ: run `jupytext --sync colabs/{name}.py`")
  for nb in (from_py, from_ipynb):
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_badge_install_and_settings(name):
  """An Open in Colab badge for this notebook, the install cell shared by all notebooks
  (one PROXYJAX_REPO), then the scale, workdir and backend from
  ``ablation.notebook_runtime`` (tests/ablation/test_ablation_notebook.py)."""
  nb = jupytext.read(execute.paths(name)[0])
  assert f"{COLAB_URL}{name}.ipynb" in nb.cells[0].source
  install = nb.cells[1].source
  assert install.count("PROXYJAX_REPO = ") == 1
  first = jupytext.read(execute.paths("quickstart")[0]).cells[1].source
  assert install == first
  assert f'RT = ablation.notebook_runtime("{name}", scale="", workdir="")' in nb.cells[2].source


@pytest.mark.parametrize("name", CPU_OUTPUTS)
def test_committed_outputs_are_a_cpu_run(name):
  """The committed notebook shows a real run at the cpu scale, without errors."""
  nb = nbformat.read(execute.paths(name)[1], as_version=4)
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  assert "scale cpu," in text
  assert any("image/png" in o.get("data", {}) for o in outputs)


def _outputs(nb):
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  """One persistent compilation cache for the notebooks of this run (the ablation
  notebooks' ci arms share a model shape)."""
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_at_ci_scale(name, tmp_path, jax_cache):
  header, min_images, files = EXPECTED[name]
  nb = nbformat.read(execute.paths(name)[1], as_version=4)
  workdir = str(tmp_path / "work")
  t0 = time.perf_counter()
  execute.execute(nb, "ci", workdir, timeout=TIMEOUT_S, jax_cache=jax_cache)
  seconds = time.perf_counter() - t0
  print(f"colabs/{name}.ipynb at ci scale: {seconds:.1f} s")
  assert seconds < TIMEOUT_S
  outputs = _outputs(nb)
  errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
  assert not errors
  markdown = "\n".join(o["data"]["text/markdown"] for o in outputs
                       if "text/markdown" in o.get("data", {}))
  assert header in markdown
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= min_images
  for f in files:
    assert os.path.exists(os.path.join(workdir, f)), f
  text = "".join(o.get("text", "") for o in outputs)
  assert "scale ci," in text
  assert re.search(r"model\.attention='auto' -> \w+", text)
  assert json.dumps(nb.metadata)  # still a valid notebook
