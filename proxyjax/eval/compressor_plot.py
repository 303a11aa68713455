"""The compressor analysis figure: stability, collisions and compression per view.

Draws a summary of ``proxyjax.eval.compressor_analysis.analyze`` (matplotlib,
imported on first use).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def plot(summary: dict[str, Any], path: str) -> None:
  """Bar charts of stability, collisions and compression per view (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(summary["views"])
  v = summary["views"]
  x = np.arange(len(names))
  fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 3.8))
  stab = [v[n]["stability"].get("mean", np.nan) for n in names]
  err = [v[n]["stability"].get("std", 0.0) for n in names]
  axes[0].bar(x, stab, yerr=err, color="tab:blue", capsize=3)
  axes[0].set_ylabel("normalised Levenshtein distance")
  axes[0].set_title(f"Stability ({summary['config']['deletion_fraction']:.0%} chars deleted)")
  chunks = [v[n]["collisions"].get("mean_chunks_per_symbol", np.nan) for n in names]
  axes[1].bar(x, chunks, color="tab:orange")
  axes[1].set_yscale("log")
  axes[1].set_ylabel("distinct byte chunks per symbol")
  axes[1].set_title("Collisions")
  for i, n in enumerate(names):
    if v[n]["collisions"].get("status") == "n/a":
      axes[1].text(i, 1, "n/a", ha="center", va="bottom")
  bpb = [v[n]["compression"]["bits_per_byte"] for n in names]
  axes[2].bar(x, bpb, color="tab:green")
  axes[2].axhline(8.0, color="gray", lw=0.8, ls="--")
  axes[2].set_ylabel("bits per UTF-8 byte")
  axes[2].set_title("Compression")
  for ax in axes:
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
  fig.suptitle(f"Compressor analysis: {summary['num_docs']} documents")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
