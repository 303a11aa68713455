"""The compressor figures: the analysis bars and the symbol-span picture of one document."""

import os

import numpy as np
import pytest

from proxyjax import views
from proxyjax.eval import compressor_analysis, compressor_plot

DOC = (b'def f(x, lo=0):\n    """Return x."""\n    if lo < 0:\n        raise ValueError("lo")\n'
       b'    if lo < 0:\n        raise ValueError("lo")\n    return x  # caf\xc3\xa9!\n')


def test_span_boxes_group_and_lane_by_hand():
  # Two symbols on byte 0 (one box x2), an empty span, an overlapping span, a long one.
  got = compressor_plot.span_boxes([0, 0, 1, 1, 2, 0], [1, 1, 1, 3, 4, 4])
  assert got.num_symbols == 6 and got.empty_symbols == 1
  assert [(b.start, b.end, b.symbols, b.lane) for b in got.boxes] == [
      (0, 1, 2, 0), (1, 3, 1, 0), (2, 4, 1, 1), (0, 4, 1, 2)]
  assert got.lanes == 3
  assert compressor_plot.span_boxes([], []).lanes == 1


@pytest.mark.parametrize("names", [("raw", "deflate", "gzip", "halfbyte", "doublebyte")])
def test_plot_symbol_spans_draws_each_views_spans(tmp_path, names):
  spans, base = {}, None
  expected = {}
  for name in names:
    _, starts, ends, span_bytes = compressor_analysis.symbol_spans(views.make_view(name), DOC)
    spans[name] = (starts, ends)
    expected[name] = (starts, ends)
    if len(span_bytes) > len(DOC):
      base = span_bytes  # doublebyte pads odd input
  path = str(tmp_path / "spans.png")
  drawn = compressor_plot.plot_symbol_spans(DOC, spans, path, line_bytes=40, span_bytes=base,
                                            title="test")
  assert os.path.getsize(path) > 0
  assert list(drawn) == list(names)
  for name, (starts, ends) in expected.items():
    v = drawn[name]
    nonempty = [(int(s), int(e)) for s, e in zip(starts, ends) if e > s]
    # Every box, repeated once per symbol it stands for, gives back the spans in order.
    assert [(b.start, b.end) for b in v.boxes for _ in range(b.symbols)] == nonempty, name
    assert v.num_symbols == len(starts)
    assert v.empty_symbols == int(np.sum(np.asarray(ends) <= np.asarray(starts)))
    # Boxes sharing a lane never overlap (nothing hidden).
    for lane in range(v.lanes):
      boxes = sorted((b.start, b.end) for b in v.boxes if b.lane == lane)
      assert all(a[1] <= b[0] for a, b in zip(boxes, boxes[1:])), (name, lane)
  assert all(b.symbols == 1 and b.end - b.start == 1 for b in drawn["raw"].boxes)
  assert {b.symbols for b in drawn["halfbyte"].boxes} == {2}
  assert drawn["deflate"].empty_symbols > 0  # block header / Huffman table bytes
  assert drawn["gzip"].boxes[-1].start == 0 and drawn["gzip"].boxes[-1].end == len(DOC)  # trailer
  assert drawn["doublebyte"].boxes[-1].end == len(DOC) + 1  # the pad byte


def test_plot_symbol_spans_tokenizer(tmp_path, tokenizer_path):
  view = views.make_view("tokenizer", tokenizer_path=tokenizer_path)
  symbols, starts, ends, _ = compressor_analysis.symbol_spans(view, DOC)
  drawn = compressor_plot.plot_symbol_spans(DOC, {"tokenizer": (starts, ends)},
                                            str(tmp_path / "tok.png"))
  boxes = drawn["tokenizer"].boxes
  assert len(boxes) == len(symbols)  # one box per token, tiling the document
  assert boxes[0].start == 0 and boxes[-1].end == len(DOC)
  assert all(a.end == b.start for a, b in zip(boxes, boxes[1:]))

