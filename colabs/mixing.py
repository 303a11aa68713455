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
# # Mixing raw and compressed views: what the recipe needs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/proxyjax/proxyjax/blob/main/colabs/mixing.ipynb)
#
# The `mixing` ablation (`proxyjax.ablation`, docs/ablations.md): one proxy view (`VIEW`,
# default the BPE tokenizer's ids) for every arm, changing one thing of the proxy recipe at a time:
#
# * `sentinel` -- the recipe: `<raw>`/`<comp>` sentinels, a warm-up on translation pairs
#   (raw and compressed halves of one document), then 90% compressed;
# * `vanilla` -- no sentinels; `no_warmup` -- no translation warm-up; `parallel` -- the
#   warm-up on parallel pairs (two documents) instead; `no_doc_mask` -- attention across
#   the documents packed in a row; `rate_0.5` -- half the views compressed instead of 90%.
#
# Every arm is scored through raw bytes only.

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

RT = ablation.notebook_runtime("mixing", scale="", workdir="")
SCALE, WORKDIR = RT.scale, RT.workdir

# %%
# The ablation's options: the proxy view every arm trains on, and a budget per arm
# (None = the ablation's default for the scale).
# (ci: token_bytes, one model shape with the proxy_vs_bytes notebook's ci arms, so a test
# run compiles it once for both notebooks.)
VIEW = os.environ.get("PROXYJAX_VIEW") or ("token_bytes" if SCALE == "ci" else "tokenizer")
BUDGET = os.environ.get("PROXYJAX_BUDGET") or None  # e.g. "utf8_bytes:20M"

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

ABL = ablation.ABLATIONS["mixing"]
OPTIONS = ablation.Options(view=VIEW)
# PROXYJAX_ARMS (comma-separated) picks arms; default: every arm, but only the recipe at ci
# scale (a smoke test in seconds).
# Arms done in WORKDIR are skipped: re-running on a finished workdir only writes the report.
ARMS = (os.environ.get("PROXYJAX_ARMS", "").split(",") if os.environ.get("PROXYJAX_ARMS")
        else ("sentinel",) if SCALE == "ci" else None)
display(Markdown(ablation_report.arms_markdown(ABL, OPTIONS, SCALE, BUDGET, ARMS)))

# %% [markdown]
# ## Run
#
# `ablation.run` trains the arms one after another in `WORKDIR/arms/<arm>/` (normal run
# directories: metrics.jsonl, checkpoints, eval/), evaluates each (raw BPB of the final
# checkpoint; in-context translation for proxy arms), and writes `WORKDIR/report.md`,
# `report.json` and the plots. It resumes: a done arm is skipped, a partial one continues
# from its newest checkpoint. The same from a shell:
# `python -m proxyjax.ablate --ablation=mixing --scale=SCALE --workdir=WORKDIR`.

# %%
import time  # noqa: E402

t0 = time.perf_counter()
result = ablation.run("mixing", scale=SCALE, workdir=WORKDIR, budget=BUDGET, arms=ARMS,
                      view=VIEW, log=print)
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
