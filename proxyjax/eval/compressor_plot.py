"""Compressor figures (matplotlib, imported on first use).

``plot``: stability, collisions and compression per view, from a summary of
``proxyjax.eval.compressor_analysis.analyze``. ``plot_symbol_spans``: one document
with each view's symbol boundaries drawn over its bytes, from the spans of
``compressor_analysis.symbol_spans`` (what a deflate byte, a token or a nibble covers).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

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


# ---------------------------------------------------------------------------
# One document with each view's symbol boundaries drawn over its bytes.


@dataclasses.dataclass(frozen=True)
class SpanBox:
  """One drawn span: bytes ``[start, end)`` covered by ``symbols`` consecutive symbols
  (all with that span), in vertical lane ``lane`` of its view's row."""

  start: int
  end: int
  symbols: int
  lane: int


@dataclasses.dataclass(frozen=True)
class ViewSpans:
  """What ``plot_symbol_spans`` drew for one view."""

  boxes: tuple[SpanBox, ...]
  num_symbols: int  # all symbols of the document
  empty_symbols: int  # symbols covering no input byte (headers, tables, padding): not drawn
  lanes: int  # rows of boxes needed so that overlapping spans do not hide each other

  @property
  def shades(self) -> list[int]:
    """0/1 per box, alternating along each lane (neighbours in a lane always differ)."""
    seen: dict[int, int] = {}
    out = []
    for b in self.boxes:
      out.append(seen.get(b.lane, 0) % 2)
      seen[b.lane] = seen.get(b.lane, 0) + 1
    return out


def span_boxes(starts: Sequence[int], ends: Sequence[int]) -> ViewSpans:
  """Groups consecutive symbols with one span into a box and gives each box a lane.

  A box goes to the lowest lane whose boxes it does not overlap (spans of
  DEFLATE bytes overlap where a code straddles two output bytes; a gzip trailer
  covers the whole document). Empty spans (``end <= start``) are counted, not drawn.
  """
  starts = np.asarray(starts, np.int64)
  ends = np.asarray(ends, np.int64)
  groups: list[list[int]] = []  # [start, end, count]
  empty = 0
  for s, e in zip(starts.tolist(), ends.tolist()):
    if e <= s:
      empty += 1
      continue
    if groups and groups[-1][0] == s and groups[-1][1] == e:
      groups[-1][2] += 1
    else:
      groups.append([s, e, 1])
  lane_ends: list[list[tuple[int, int]]] = []  # per lane, the spans placed in it
  boxes = []
  for s, e, n in groups:
    lane = 0
    while lane < len(lane_ends) and any(s < pe and ps < e for ps, pe in lane_ends[lane]):
      lane += 1
    if lane == len(lane_ends):
      lane_ends.append([])
    lane_ends[lane].append((s, e))
    boxes.append(SpanBox(s, e, n, lane))
  return ViewSpans(tuple(boxes), int(starts.size), empty, max(1, len(lane_ends)))


def _glyph(data: bytes, i: int) -> str:
  """The character drawn at byte ``i``: a UTF-8 character at its first byte, '' on its
  continuation bytes; whitespace and control bytes as visible marks."""
  b = data[i]
  if 0x80 <= b < 0xC0:  # continuation byte
    return ""
  if b >= 0xC0:
    n = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    return data[i:i + n].decode("utf-8", "replace")[:1]
  return {0x0A: "↵", 0x09: "→", 0x20: "·", 0x0D: "␍"}.get(b, chr(b) if 0x20 < b < 0x7F else "¤")


def plot_symbol_spans(data: bytes, spans: Mapping[str, tuple[Sequence[int], Sequence[int]]],
                      path: str, *, line_bytes: int = 64, span_bytes: bytes | None = None,
                      title: str = "") -> dict[str, ViewSpans]:
  """Draws ``data`` as characters with, under it, one row per view whose boxes are
  the byte spans of that view's symbols (PNG at ``path``).

  ``spans[name] = (starts, ends)`` as ``compressor_analysis.symbol_spans`` returns them
  (byte offsets into ``span_bytes``, default ``data``; ``doublebyte`` pads odd input with
  a 0x00 drawn as ``∅``). Consecutive symbols with the same span are one box,
  labelled ``×n`` when n > 1 (sub-byte views: n symbols per byte); the boxes of a lane
  alternate shades, and a vertical line marks every box edge. The text wraps every
  ``line_bytes`` bytes; a box crossing a line end continues on the next line.
  Returns what was drawn per view (``ViewSpans``), in the order of ``spans``.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import collections  # pylint: disable=g-import-not-at-top

  base = data if span_bytes is None else span_bytes
  drawn = {name: span_boxes(s, e) for name, (s, e) in spans.items()}
  n_bytes = max([len(base)] + [b.end for v in drawn.values() for b in v.boxes])
  n_lines = max(1, -(-n_bytes // line_bytes))
  lane_h, gap = 0.8, 0.35
  # One block per text line: the text row, then each view's lanes.
  rows_h = 1.0 + sum(v.lanes * lane_h + gap for v in drawn.values())
  block_h = rows_h + 0.8
  height = n_lines * block_h
  label_w = 1.0 + max((len(n) for n in drawn), default=0) * 0.8  # view names, in bytes
  fig, ax = plt.subplots(figsize=(0.16 * (line_bytes + label_w + 0.2), 0.32 * height + 0.7))
  cmap = plt.get_cmap("tab10")
  rects, colors, edges = [], [], []  # drawn as two collections (thousands of artists are slow)
  for line in range(n_lines):
    lo, hi = line * line_bytes, min((line + 1) * line_bytes, n_bytes)
    top = -line * block_h
    for i in range(lo, hi):
      ch = _glyph(base, i) if i < len(base) else ""
      if len(data) <= i < len(base):
        ch = "∅"
      if ch:
        ax.text(i - lo + 0.5, top - 0.5, ch, ha="center", va="center", family="monospace",
                fontsize=9, color="0.6" if ch in "·↵→␍∅" else "black")
    y = top - 1.0
    for k, (name, v) in enumerate(drawn.items()):
      ax.text(-0.6, y - v.lanes * lane_h / 2, name, ha="right", va="center", fontsize=9)
      tones = (cmap(k % 10), tuple(0.55 * c + 0.45 for c in cmap(k % 10)[:3]) + (1.0,))
      for j, box in enumerate(v.boxes):
        shade = v.shades[j]
        s, e = max(box.start, lo), min(box.end, hi)
        if s >= e:
          continue
        y0 = y - (box.lane + 1) * lane_h
        x0, x1, b0, b1 = s - lo, e - lo, y0 + 0.06, y0 + lane_h - 0.06
        rects.append([(x0, b0), (x1, b0), (x1, b1), (x0, b1)])
        colors.append(tones[shade])
        for edge, at in ((box.start, s), (box.end, e)):
          if edge == at:  # a symbol's boundary, not a line break
            edges.append([(at - lo, y0 + 0.02), (at - lo, y0 + lane_h - 0.02)])
        if box.symbols > 1:
          ax.text((x0 + x1) / 2, y0 + lane_h / 2, f"×{box.symbols}", ha="center",
                  va="center", fontsize=6)
      y -= v.lanes * lane_h + gap
  ax.add_collection(collections.PolyCollection(rects, facecolors=colors, edgecolors="none",
                                               alpha=0.75))
  ax.add_collection(collections.LineCollection(edges, colors="black", linewidths=0.8))
  ax.set_xlim(-label_w, line_bytes + 0.2)
  ax.set_ylim(-height, 0.2)
  ax.axis("off")
  summary = ", ".join(f"{n} {v.num_symbols}" + (f" ({v.empty_symbols} cover no byte)"
                                                 if v.empty_symbols else "")
                      for n, v in drawn.items())
  ax.set_title((title + "\n" if title else "") + f"{len(data)} bytes; symbols: {summary}",
               fontsize=9, wrap=True)
  fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - 0.6 / fig.get_figheight())
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return drawn
