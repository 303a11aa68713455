"""Pins the compressor analysis and every view's symbol spans on fixed documents.

``tests/fixtures/compressor_pins.json`` holds the documents, the analysis numbers
(ratio, stability, collisions per view) and a digest of each view's
``(symbols, starts, ends, span bytes)`` per document, recorded before the views
took over their symbol spans. Regenerate (only for an intended change) with
``PROXYJAX_REGEN_PINS=1 pytest tests/eval/test_compressor_pins.py``.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from proxyjax import views
from proxyjax.eval import compressor_analysis as analysis

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "compressor_pins.json")
SPAN_VIEWS = ("raw", "deflate", "gzip", "halfbyte", "doublebit", "bit", "doublebyte",
              "tokenizer", "token_bytes")
CFG = dict(num_docs=6, seed=3, window_chars=300, max_doc_bytes=4096)


def _documents() -> list[bytes]:
  """Six deterministic UTF-8 documents: code, prose, odd length, non-ASCII, repetitive."""
  rng = np.random.default_rng(1234)
  words = ["alpha", "beta", "gamma", "delta", "return", "value", "index", "café", "naïve",
           "→", "λ", "数据", "😀", "x", "y", "self"]
  code = "".join(f"def f{i}(x, y):\n    return x * {i} + y  # {words[i % len(words)]}\n"
                 for i in range(60))
  prose = " ".join(words[int(j)] for j in rng.integers(0, len(words), 700)) + "\n"
  odd = "abc" * 101
  unicode = "Grüße, 世界! ∑ 😀 " * 40
  repetitive = "0123456789" * 300
  short = "x = 1\n"
  return [d.encode("utf-8") for d in (code, prose, odd, unicode, repetitive, short)]


def _tokenizer(tmp_path_factory) -> str:
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator([d.decode("utf-8") for d in _documents()], trainer)
  path = tmp_path_factory.mktemp("pin_tok") / "tokenizer.json"
  tok.save(str(path))
  return str(path)


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    if isinstance(a, bytes):
      h.update(b"B" + a)
    else:
      h.update(b"A" + np.asarray(a, dtype=np.int64).tobytes())
  return h.hexdigest()


def _snapshot(tokenizer_path: str) -> dict:
  docs = _documents()
  spans = {}
  for name in SPAN_VIEWS:
    view = views.make_view(name, tokenizer_path=tokenizer_path)
    spans[name] = []
    for data in docs:
      syms, starts, ends, base = analysis.symbol_spans(view, data)
      spans[name].append({"n": int(len(syms)), "empty": int(np.sum(ends <= starts)),
                          "digest": _digest(syms, starts, ends, base)})
  cfg = analysis.AnalysisConfig(views=SPAN_VIEWS + ("neural",), tokenizer_path=tokenizer_path,
                                **CFG)
  summary = analysis.analyze(cfg, docs)
  return {"docs_sha256": _digest(*docs), "spans": spans,
          "analysis": {"views": summary["views"], "skipped": summary["skipped"],
                       "num_docs": summary["num_docs"], "doc_bytes": summary["doc_bytes"]}}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
  snap = _snapshot(_tokenizer(tmp_path_factory))
  if os.environ.get("PROXYJAX_REGEN_PINS"):
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w", encoding="utf-8") as f:
      json.dump(snap, f, indent=1, sort_keys=True)
      f.write("\n")
  return json.loads(json.dumps(snap))  # as the fixture stores it (tuples -> lists)


@pytest.fixture(scope="module")
def pinned():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


def test_documents_are_the_pinned_ones(snapshot, pinned):
  assert snapshot["docs_sha256"] == pinned["docs_sha256"]


@pytest.mark.parametrize("name", SPAN_VIEWS)
def test_symbol_spans_pinned(snapshot, pinned, name):
  assert snapshot["spans"][name] == pinned["spans"][name]


def test_analysis_numbers_pinned(snapshot, pinned):
  got, want = snapshot["analysis"], pinned["analysis"]
  assert set(got["views"]) == set(want["views"]) == set(SPAN_VIEWS)
  assert got["skipped"] == want["skipped"]
  assert (got["num_docs"], got["doc_bytes"]) == (want["num_docs"], want["doc_bytes"])
  for name in SPAN_VIEWS:
    g, w = _flat(got["views"][name]), _flat(want["views"][name])
    assert set(g) == set(w), name
    for key, value in w.items():
      if isinstance(value, float):
        assert g[key] == pytest.approx(value, rel=1e-12, abs=1e-15, nan_ok=True), (name, key)
      else:
        assert g[key] == value, (name, key)


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
