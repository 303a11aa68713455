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
# # Compressors: compression ratio, stability and collisions of each view
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/proxyjax/proxyjax/blob/main/colabs/compressors.ipynb)
#
# What the model reads in place of raw bytes (paper Fig. 4 and 6), measured by
# `proxyjax.eval.compressor_analysis` over a sample of documents:
#
# * **compression** -- UTF-8 bytes per symbol and bits per byte at log2(alphabet) bits a symbol;
# * **stability** -- delete 10% of a window's characters, compress both and compare the symbol
#   sequences (normalised Levenshtein distance: 0 = the output barely moves, 1 = unrelated);
# * **collisions** -- how many distinct byte chunks one symbol stands for (the chunk of a symbol
#   is the smallest span of input bytes whose encoding includes any bit of it).
#
# Then one document with each view's symbol boundaries drawn over its bytes: what a DEFLATE
# byte, a BPE token or a nibble covers.

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

RT = ablation.notebook_runtime("compressors", scale="", workdir="")
SCALE, WORKDIR = RT.scale, RT.workdir

# %% [markdown]
# ## A tokenizer for the tokenizer views
#
# `tokenizer` (BPE ids) and `token_bytes` (BPE ids written as bytes) need a tokenizer. At
# `cpu` scale and above this is the one configs/tokens.py trains: a 4096-token byte-level BPE
# on the train split of the stdlib corpus, cached under `~/.cache/proxyjax/tokenizers`
# (`pipeline.resolve_tokenizer`). At `ci` scale a 512-token BPE on 256 KB of it.

# %%
from proxyjax import config as config_lib  # noqa: E402
from proxyjax.data import pipeline, tokenizer_training  # noqa: E402

if SCALE == "ci":
  TOKENIZER = os.path.join(WORKDIR, "bpe512.json")
  if not os.path.exists(TOKENIZER):
    tokenizer_training.train_tokenizer("stdlib", 512, TOKENIZER, max_bytes=256 << 10)
else:
  tok_config = config_lib.tiny_config()
  tok_config.data.view = "tokenizer"
  TOKENIZER = pipeline.resolve_tokenizer(tok_config)
print(f"tokenizer: {TOKENIZER}")

# %% [markdown]
# ## The analysis
#
# `AnalysisConfig` says what to analyse; `compressor_analysis.run` writes
# `WORKDIR/compressors.json` and the bar charts `WORKDIR/compressors.png`
# (`proxyjax.eval.compressor_plot.plot`). The neural view needs a trained compressor: set
# `NEURAL_DIR` (or `PROXYJAX_NEURAL_DIR`) to a run of `configs/compressor.py` or the shards
# `python -m proxyjax.compress` wrote.

# %%
import time  # noqa: E402

from proxyjax.eval import compressor_analysis  # noqa: E402

NEURAL_DIR = os.environ.get("PROXYJAX_NEURAL_DIR", "")
VIEWS = ("raw", "deflate", "gzip", "tokenizer", "token_bytes", "halfbyte", "doublebit",
         "doublebyte") + (("neural",) if NEURAL_DIR else ())
if SCALE == "ci":  # seconds: a handful of small documents
  analysis = compressor_analysis.AnalysisConfig(
      views=("raw", "deflate", "gzip", "tokenizer", "token_bytes", "halfbyte"), num_docs=6,
      max_doc_bytes=4096, window_chars=300, tokenizer_path=TOKENIZER, neural_dir=NEURAL_DIR)
else:
  analysis = compressor_analysis.AnalysisConfig(
      views=VIEWS, num_docs=200 if SCALE == "cpu" else 1000, tokenizer_path=TOKENIZER,
      neural_dir=NEURAL_DIR)
t0 = time.perf_counter()
summary = compressor_analysis.run(analysis, WORKDIR)
print(f"{time.perf_counter() - t0:.1f} s")
print(compressor_analysis.format_summary(summary))

# %% [markdown]
# ## One document, each view's symbols over its bytes
#
# One row of boxes per view under the document's characters (`·` a space, `↵` a newline):
# a box is the byte span one symbol stands for (`compressor_analysis.symbol_spans`);
# consecutive symbols with the same span share a box marked `×n` (a byte is 2 nibbles in
# `halfbyte`, a token 2 bytes in `token_bytes`). DEFLATE bytes straddle the codes they hold,
# so their spans overlap (stacked lanes); a length/distance code covers the whole span it
# copies; header and Huffman-table bytes cover no input (counted in the title, not drawn);
# gzip's 8 trailer bytes (CRC32, length) depend on the whole document.

# %%
from proxyjax import views as views_lib  # noqa: E402
from proxyjax.eval import compressor_plot  # noqa: E402

DOC = (b'def clamp(x, lo=0, hi=None):\n'
       b'    """Return x clamped to [lo, hi]."""\n'
       b'    if lo is not None and x < lo:\n'
       b'        return lo\n'
       b'    if hi is not None and x > hi:\n'
       b'        return hi\n'
       b'    return x\n')
SPAN_VIEWS = ("raw", "tokenizer", "token_bytes", "deflate", "gzip", "halfbyte", "doublebyte")
spans, padded = {}, None
for name in SPAN_VIEWS:
  view = views_lib.make_view(name, tokenizer_path=TOKENIZER)
  _, starts, ends, span_bytes = compressor_analysis.symbol_spans(view, DOC)
  spans[name] = (starts, ends)
  if len(span_bytes) > len(DOC):
    padded = span_bytes  # doublebyte pads odd input with 0x00
SPANS_PNG = os.path.join(WORKDIR, "symbol_spans.png")
drawn = compressor_plot.plot_symbol_spans(DOC, spans, SPANS_PNG, line_bytes=64,
                                          span_bytes=padded, title="One document, each view")
for name, v in drawn.items():
  print(f"{name:<12} {v.num_symbols:4d} symbols in {len(v.boxes):4d} boxes "
        f"({v.empty_symbols} cover no byte)")

# %% [markdown]
# ## Results

# %%
from IPython.display import Image, Markdown, display  # noqa: E402


def _num(value, fmt):
  return "n/a" if value is None or value != value else format(value, fmt)


rows = ["| view | alphabet | bytes / symbol | bits / byte | stability (edit distance) "
        "| chunks / symbol | collision rate | H(chunk \\| symbol) bits |",
        "|---|---|---|---|---|---|---|---|"]
for name, v in summary["views"].items():
  c, comp = v["collisions"], v["compression"]
  rows.append(f"| {name} | {v['alphabet_size']} | {_num(comp['bytes_per_symbol'], '.3f')} "
              f"| {_num(comp['bits_per_byte'], '.3f')} "
              f"| {_num(v['stability'].get('mean'), '.3f')} "
              f"| {_num(c.get('mean_chunks_per_symbol'), '.2f')} "
              f"| {_num(c.get('collision_rate'), '.3f')} "
              f"| {_num(c.get('conditional_entropy_bits'), '.3f')} |")
for name, reason in summary["skipped"].items():
  rows.append(f"| {name} | skipped: {reason} | | | | | | |")
TABLE = "\n".join(rows)
with open(os.path.join(WORKDIR, "compressors.md"), "w", encoding="utf-8") as f:
  f.write(f"{summary['num_docs']} documents, {summary['doc_bytes']} bytes\n\n{TABLE}\n")
display(Markdown(f"{summary['num_docs']} documents, {summary['doc_bytes']:,} bytes ({SCALE} scale)"))
display(Markdown(TABLE))
display(Image(filename=os.path.join(WORKDIR, "compressors.png")))
display(Image(filename=SPANS_PNG))
