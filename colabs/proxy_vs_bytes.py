# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Proxy compression vs raw bytes: which compressed view to train on
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/proxyjax/proxyjax/blob/main/colabs/proxy_vs_bytes.ipynb)
#
# The `views` ablation (`proxyjax.ablation`, docs/ablations.md): the same model trained
#
# * on raw UTF-8 bytes only (`bytes`, 8 prediction heads as configs/bytes.py),
# * on tokenizer ids only (`tokens`, configs/tokens.py, evaluated through its tokenizer),
# * and with proxy compression on each compressed view -- BPE ids (`tokenizer`), token ids
#   as bytes (`token_bytes`, also Gray-coded), raw DEFLATE (`deflate`), `gzip`, and neural
#   arithmetic coding (`neural`, given a trained compressor's shards): mostly compressed
#   symbols in `<comp>` sentinels, translation pairs early on --
#
# then scored the same way, through raw bytes only. The question: how much raw-byte
# modelling does training on cheap compressed symbols buy, for the same symbols or bytes?

# %%
# Install proxyjax (skipped when it already imports): from the checkout this notebook sits
# in, else from a clone of PROXYJAX_REPO (the notebooks read configs/ from the checkout).
PROXYJAX_REPO = "https://github.com/proxyjax/proxyjax"

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _checkout():
  here = pathlib.Path.cwd().resolve()
  for d in (here, *here.parents):
    if (d / "setup.cfg").is_file() and (d / "proxyjax" / "__init__.py").is_file():
      return d
  return None


if importlib.util.find_spec("proxyjax") is None:
  _root = _checkout()
  if _root is None:
    _root = pathlib.Path.home() / "proxyjax"
    if not _root.exists():
      subprocess.run(["git", "clone", "-q", "--depth", "1", PROXYJAX_REPO, str(_root)],
                     check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(_root)], check=True)
  sys.path.insert(0, str(_root))
  importlib.invalidate_caches()
if importlib.util.find_spec("matplotlib") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
  importlib.invalidate_caches()

# %%
# Scale, work directory and runtime: PROXYJAX_SCALE / PROXYJAX_WORKDIR, or pass them here
# ('' = the scale from the runtime: cpu, colab_gpu or colab_tpu; the work directory under
# /content on Colab, else a temporary one). On CPU and on GPUs older than sm_80,
# model.attention='auto' falls back to dense XLA attention; the cell prints the choice.
import os  # noqa: E402

from proxyjax import ablation  # noqa: E402

RT = ablation.notebook_runtime("proxy_vs_bytes", scale="", workdir="")
SCALE, WORKDIR = RT.scale, RT.workdir

# %%
# The ablation's options: a budget per arm (None = the ablation's default for the scale) and,
# for the neural arm, the shards of `python -m proxyjax.compress` (skipped without).
BUDGET = os.environ.get("PROXYJAX_BUDGET") or None  # e.g. "utf8_bytes:20M"
NEURAL_DIR = os.environ.get("PROXYJAX_NEURAL_DIR", "")

# %% [markdown]
# ## The arms
#
# Each arm is a training run: a name and the config fields it changes on top of the scale's
# base config (`proxyjax.ablation.scales`). All arms get the same budget (default: the same
# number of steps, i.e. the same symbols; `utf8_bytes:N` or `train_flops:N` in `BUDGET` lines
# them up on bytes seen or compute instead).

# %%
from IPython.display import Image, Markdown, display  # noqa: E402

from proxyjax.ablation import report as ablation_report  # noqa: E402

ABL = ablation.ABLATIONS["views"]
OPTIONS = ablation.Options(neural_dir=NEURAL_DIR)
# PROXYJAX_ARMS (comma-separated) picks arms; default: every arm, but at ci scale two proxy
# arms of one model shape (a smoke test in seconds; the comparison with bytes is at cpu scale
# and above). Arms done in WORKDIR are skipped: re-running on a finished workdir only
# writes the report.
ARMS = (os.environ.get("PROXYJAX_ARMS", "").split(",") if os.environ.get("PROXYJAX_ARMS")
        else ("deflate", "token_bytes") if SCALE == "ci" else None)
display(Markdown(ablation_report.arms_markdown(ABL, OPTIONS, SCALE, BUDGET, ARMS)))

# %% [markdown]
# ## Run
#
# `ablation.run` trains the arms one after another in `WORKDIR/arms/<arm>/` (normal run
# directories: metrics.jsonl, checkpoints, eval/), evaluates each (raw BPB of the final
# checkpoint; in-context translation for proxy arms), and writes `WORKDIR/report.md`,
# `report.json` and the plots. It resumes: a done arm is skipped, a partial one continues
# from its newest checkpoint. The same from a shell:
# `python -m proxyjax.ablate --ablation=views --scale=SCALE --workdir=WORKDIR`.

# %%
import time  # noqa: E402

t0 = time.perf_counter()
result = ablation.run("views", scale=SCALE, workdir=WORKDIR, budget=BUDGET, arms=ARMS,
                      neural_dir=NEURAL_DIR, log=print)
print(f"{time.perf_counter() - t0:.1f} s; report {result.report_md}")

# %% [markdown]
# ## Eval raw BPB per arm
#
# Every arm is scored the same way at the end: bits per UTF-8 byte of the validation split,
# through raw bytes (the tokens-only baseline through its own tokenizer, per UTF-8 byte).

# %%
BARS_PNG = os.path.join(WORKDIR, "eval_raw_bpb_by_arm.png")
ablation_report.plot_eval_bars(result, BARS_PNG)
for r in result.rows:
  print(f"{r['name']:<17} eval raw BPB {r['eval_raw_bpb']:.4f}  steps {r['steps']}  "
        f"compressed share {r['compressed_share']:.2f}  wall {r['wall_s']:.0f} s")

# %% [markdown]
# ## Report
#
# The table of `WORKDIR/report.md` (raw BPB at the end and at matched UTF-8 bytes / FLOPs,
# totals reached, translation), the bars above, then raw BPB along training against UTF-8
# bytes seen, training FLOPs and wall time (validation points; training raw BPB dashed).

# %%
display(Markdown(result.markdown.split("## Plots")[0]))
display(Image(filename=BARS_PNG))
for path in result.plots.values():
  display(Image(filename=path))
