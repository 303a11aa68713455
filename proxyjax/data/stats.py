"""Pipeline accounting: every document read is used or skipped with a reason.

Counters live in the mixing iterator's state (so they are checkpointed with
the data and travel from Grain workers to the main process with each
element). ``collect`` sums them over all workers from an iterator's state;
``summarize`` adds the derived ratios the training metrics report.

Counter keys:
  docs_read, docs_used             documents pulled from the sources / emitted
  doc_bytes                        UTF-8 bytes of the used documents (each counted once)
  skipped:<reason>                 empty, too_large, unreadable, binary,
                                   malformed_json, missing_text, corrupt_record
                                   (a neural shard record failing its checksums),
                                   malformed_symbols (its symbols not decodable)
  invalid_utf8_kept                used documents that are not valid UTF-8
  view_fallback_raw                compressed view failed -> raw view instead
  docs_from:<source>               documents read per source
  unread_at_end:<source>           finite streams, once ended: documents of the
                                   source past the end of the mixture (0 with
                                   data.mixture_end='all'; see proxyjax.data.mixture)
  streams_ended                    finite streams (process x worker) that ended
  views:<kind>, bytes:<kind>, symbols:<kind>   per view kind (raw/compressed):
                                   views emitted, UTF-8 bytes they cover,
                                   symbols (excluding sentinels/BOS/EOS)
  pairs_translation, pairs_parallel
  ids                              ids emitted (including sentinels)
"""

from __future__ import annotations

import json
from typing import Any, Mapping

STATE_KEY = "proxyjax_stats"


def new_stats() -> dict[str, int]:
  return {"docs_read": 0, "docs_used": 0, "ids": 0}


def add(stats: dict[str, int], key: str, n: int = 1) -> None:
  stats[key] = stats.get(key, 0) + n


def count_view(stats: dict[str, int], kind: str, num_bytes: int, num_symbols: int) -> None:
  add(stats, "views:" + kind)
  add(stats, "bytes:" + kind, num_bytes)
  add(stats, "symbols:" + kind, num_symbols)


def collect(state: Any) -> dict[str, int]:
  """Sums the stats blocks of all workers found in a (nested) iterator state.

  In each subtree the outermost block wins: a packer reports its live
  counters next to the (older) state it would replay from, and the latter
  must not be counted twice.
  """
  total: dict[str, int] = {}

  def visit(node):
    if isinstance(node, Mapping):
      block = node.get(STATE_KEY)
      if isinstance(block, Mapping):
        for name, n in block.items():
          total[name] = total.get(name, 0) + int(n)
        return
      for v in node.values():
        visit(v)
    elif isinstance(node, (list, tuple)):
      for v in node:
        visit(v)
    elif isinstance(node, (str, bytes)) and STATE_KEY.encode() in (
        node if isinstance(node, bytes) else node.encode()):
      # mp_prefetch may keep worker states serialized as JSON.
      try:
        visit(json.loads(node))
      except ValueError:
        pass

  visit(state)
  return total


def live(parent_state: Any) -> dict[str, int]:
  """The current counters below an iterator (for packers that buffer documents)."""
  return collect(parent_state)


def summarize(stats: Mapping[str, int]) -> dict[str, float | int]:
  """Adds derived metrics: compression ratios, compressed fractions, skip total."""
  out: dict[str, float | int] = dict(stats)
  skipped = sum(v for k, v in stats.items() if k.startswith("skipped:"))
  out["docs_skipped"] = skipped
  for kind in ("raw", "compressed"):
    sym = stats.get("symbols:" + kind, 0)
    if sym:
      out["compression_ratio:" + kind] = stats.get("bytes:" + kind, 0) / sym
  views_raw = stats.get("views:raw", 0)
  views_comp = stats.get("views:compressed", 0)
  if views_raw + views_comp:
    out["compressed_view_fraction"] = views_comp / (views_raw + views_comp)
  sym_raw = stats.get("symbols:raw", 0)
  sym_comp = stats.get("symbols:compressed", 0)
  if sym_raw + sym_comp:
    out["compressed_symbol_fraction"] = sym_comp / (sym_raw + sym_comp)
  return out
