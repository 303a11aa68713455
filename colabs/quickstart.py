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
# # proxyjax quickstart: one model, raw bytes and compressed views
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/proxyjax/proxyjax/blob/main/colabs/quickstart.ipynb)
#
# Trains the README's tiny demo (`configs/tiny.py`: one small model on the raw UTF-8 bytes
# and the BPE token ids of the Python standard library, `<raw>`/`<comp>` sentinels,
# translation pairs early on), looks at the packed rows it is fed, evaluates raw bits per
# byte, generates code from a prompt and translates token ids back to text in context --
# always through raw bytes.
#
# The scale follows the runtime (CPU, Colab GPU, Colab TPU); set `PROXYJAX_SCALE` (or
# `scale=` below) to choose: `ci` is a seconds-long smoke run, `cpu` the demo as the README
# runs it (minutes on 2 cores).

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

RT = ablation.notebook_runtime("quickstart", scale="", workdir="")
SCALE, WORKDIR = RT.scale, RT.workdir

# %% [markdown]
# ## The config
#
# `configs/tiny.py` is what `python -m proxyjax.main --config=configs/tiny.py` trains (every
# field it does not set keeps its documented default from proxyjax/config/schema.py). At `ci`
# scale the model and the run shrink to seconds; on a GPU or TPU the rows get longer, the
# batch bigger and the weights bfloat16.

# %%
from proxyjax import config as config_lib  # noqa: E402

config = config_lib.load_config(os.path.join(RT.root, "configs", "tiny.py"))
config.model.attention = "auto"
config.progress_bar = False
if SCALE == "ci":  # seconds: a 1-layer model, a few steps
  m = config.model
  m.d_model, m.n_layers, m.n_heads, m.head_dim, m.d_ff = 64, 1, 2, 32, 128
  m.logits_chunk = 128
  config.seq_len, config.batch_size = 128, 4
  config.num_steps, config.log_every, config.eval_every = 6, 3, 0
  config.checkpoint_every = 6
  config.opt.warmup_steps = 2
  config.data.schedule.warmup_steps = 3
  config.data.tokenizer_vocab_size = 512
  config.data.sources = "files:" + os.path.join(os.path.dirname(os.__file__), "email")
  config.data.validation_fraction = 0.1
  config.eval.max_docs = 2
elif SCALE in ("colab_gpu", "colab_tpu", "pod"):  # longer rows, bigger batches, bf16
  config.model.dtype = "bfloat16"
  config.seq_len, config.batch_size = 1024, 32
  config.num_steps, config.eval_every, config.checkpoint_every = 1000, 250, 250
  config.log_every = 50
# 'cpu': configs/tiny.py as it is.
config.data.tokenizer_cache_dir = os.path.join(WORKDIR, "tokenizers")
config.eval.translation_docs = 4 if SCALE == "ci" else 16
config.eval.translation_max_bytes = 48 if SCALE == "ci" else 128
print(f"model {config.model.d_model} wide x {config.model.n_layers} layers, "
      f"{config.batch_size} rows x {config.seq_len} ids, {config.num_steps} steps, "
      f"view {config.data.view}")

# %% [markdown]
# ## What the model is fed
#
# The Grain pipeline (`proxyjax.data.pipeline`) picks raw or compressed views per document
# (early on: raw/token translation pairs), formats them with sentinels and packs them into
# rows. `proxyjax.data.inspect.render` shows a row: specials by name, raw bytes as text,
# compressed symbols as `⟨id⟩`.

# %%
import numpy as np  # noqa: E402

from proxyjax.data import inspect as inspect_lib  # noqa: E402
from proxyjax.data import pipeline  # noqa: E402

it = pipeline.make_iterator(config, "train")
try:
  batch = pipeline.next_batch(it)
  stats = pipeline.pipeline_stats(it)
finally:
  if hasattr(it, "close"):
    it.close()
print({k: v.shape for k, v in batch.items()})
for r in range(2):
  print(f"--- row {r}: {len(np.unique(batch['segment_ids'][r][batch['segment_ids'][r] > 0]))} "
        "documents ---")
  print(inspect_lib.render(batch["inputs"][r], max_chars=600 if SCALE == "ci" else 1200))
print({k: v for k, v in stats.items() if not isinstance(v, dict)})

# %% [markdown]
# ## Train
#
# `proxyjax.trainer.train(config, workdir)` is what
# `python -m proxyjax.main --config=configs/tiny.py --workdir=...` runs: metric lines in
# `WORKDIR/metrics.jsonl`, checkpoints in `WORKDIR/checkpoints/`. Running it again resumes
# from the newest checkpoint (a finished run returns at once).

# %%
import json  # noqa: E402

from proxyjax import trainer  # noqa: E402

trainer.train(config, WORKDIR)
with open(os.path.join(WORKDIR, "metrics.jsonl"), encoding="utf-8") as f:
  lines = [json.loads(line) for line in f]
train_lines = [m for m in lines if "loss" in m]
last = train_lines[-1]  # the last training metrics (also when the run had finished before)
print({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()
       if k in ("step", "loss", "raw_loss", "comp_loss", "raw_bpb", "compressed_fraction")})

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LOSS_PNG = os.path.join(WORKDIR, "loss.png")
fig, ax = plt.subplots(figsize=(6, 3.5))
steps = [m["step"] for m in train_lines]
for key, label in (("loss", "all targets"), ("raw_loss", "raw byte targets"),
                   ("comp_loss", "compressed targets")):
  ys = [m.get(key, float("nan")) for m in train_lines]
  ax.plot(steps, ys, marker="o", ms=3, label=label)
ax.set_xlabel("step")
ax.set_ylabel("loss (nats / symbol)")
ax.set_title(f"Training loss ({SCALE} scale)")
ax.legend()
fig.tight_layout()
fig.savefig(LOSS_PNG, dpi=110)
plt.close(fig)

# %% [markdown]
# ## Evaluate raw bits per byte and in-context translation
#
# `proxyjax.eval.run.evaluate` restores the newest checkpoint and runs `eval.tasks`: `bpb`
# scores the validation split through raw bytes only; `translation` feeds
# `[BOS, <comp>, token ids, </comp>, <raw>]` and decodes raw bytes greedily until
# `</raw>` (paper Fig. 11). Results also go to `WORKDIR/eval/<task>.json`.

# %%
from proxyjax.eval import run as eval_run  # noqa: E402
from proxyjax.eval import validation as eval_validation  # noqa: E402

eval_config = config.copy_and_resolve_references()
eval_config.eval.tasks = "bpb,translation"
eval_validation.validate(eval_config)
results = eval_run.evaluate(eval_config, WORKDIR)
bpb = results["bpb"]
tr = results["translation"]
print(f"raw BPB {bpb['raw_bpb']:.4f} on {bpb['documents']} validation documents "
      f"({bpb['bytes']} bytes)")
print(f"translation {config.data.view} -> raw: exact match {tr.get('exact_match', float('nan')):.2f}, "
      f"byte accuracy {tr.get('byte_accuracy', float('nan')):.3f} over {tr['documents']} documents")

# %% [markdown]
# The same translations by hand (same documents, batch and length as the task, so the decode
# loop is not compiled again): the prompt is a document's token ids, the model writes
# its raw bytes.

# %%
from proxyjax.eval import generate, translation  # noqa: E402
from proxyjax.train import load as load_lib  # noqa: E402

loaded = load_lib.load_params(WORKDIR, config=config)
view = pipeline.build_view(config)
e = config.eval
docs = [translation.cut_utf8(d, e.translation_max_bytes)
        for d in eval_run.eval_documents(config)[:e.translation_docs]]
prompts = [translation.prompt_ids(view.encode(d), loaded.vocab) for d in docs]
rows = generate.generate_ids(
    loaded.graphdef, loaded.params, prompts,
    generate.SamplingConfig(max_new_tokens=max(len(d) for d in docs) + 1, temperature=0.0,
                            seed=config.seed),
    interface=translation.INTERFACE, batch_size=e.batch_size, mesh=loaded.mesh,
    rules=loaded.rules, context_len=config.seq_len)
got = translation.INTERFACE.decode(rows[0][0].tolist())
print(f"{len(docs[0])} bytes -> {len(prompts[0]) - 4} {config.data.view} symbols; "
      "the model's raw bytes:")
print(f"expected: {docs[0].decode('utf-8', 'replace')!r}")
print(f"got:      {got.decode('utf-8', 'replace')!r}")

# %% [markdown]
# ## Generate code from a prompt
#
# Prompts are `[BOS, <raw>, prompt bytes]`; decoding uses the KV cache and may emit only raw
# bytes (ids < 320), as at deployment: no tokenizer, no compressor.

# %%
# configs/tiny.py's summary prompt (the run's end-of-training sample), then a bare function
# header: a model this small writes a line or two, then falls into runs of indentation.
PROMPTS = [config.summary_prompt or "import os\n", "def fibonacci(n):\n"]
completions = generate.generate(
    loaded.graphdef, loaded.params, [p.encode() for p in PROMPTS],
    generate.SamplingConfig(max_new_tokens=32 if SCALE == "ci" else 160, temperature=0.0,
                            stop_strings=("\ndef ", "\nif __name__")),
    mesh=loaded.mesh, rules=loaded.rules, context_len=config.seq_len)
for prompt, row in zip(PROMPTS, completions):
  print(f"--- greedy completion of {prompt!r}:")
  print(prompt + row[0])

# %% [markdown]
# ## Results
#
# What to expect at the `cpu` scale (the committed outputs above): a model of about two
# million parameters, trained for minutes on 2 CPU cores while about half of what it read
# were BPE token ids, models raw bytes well below chance (8 bits per byte) and its greedy
# completion reads like Python, but it is far too small to translate token ids back to text
# reliably; that needs the larger scales (`colab_gpu`, `colab_tpu`). The ablation notebooks
# (`proxy_vs_bytes`, `mixing`) compare recipes.

# %%
from IPython.display import Image, Markdown, display  # noqa: E402

TABLE = "\n".join([
    "| scale | steps | train loss | raw loss | raw BPB (validation) | translation exact match "
    "| translation byte accuracy |",
    "|---|---|---|---|---|---|---|",
    f"| {SCALE} | {last['step']} | {last['loss']:.3f} | {last.get('raw_loss', float('nan')):.3f} "
    f"| {bpb['raw_bpb']:.3f} | {tr.get('exact_match', float('nan')):.2f} "
    f"| {tr.get('byte_accuracy', float('nan')):.3f} |",
])
with open(os.path.join(WORKDIR, "quickstart.md"), "w", encoding="utf-8") as f:
  f.write(TABLE + "\n")
display(Markdown(TABLE))
display(Image(filename=LOSS_PNG))
