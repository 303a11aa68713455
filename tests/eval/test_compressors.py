"""Compressor analysis: Levenshtein, deletions, symbol -> byte alignment, the summary and CLI."""

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from proxyjax import views
from proxyjax.eval import compressor_analysis as compressors
from proxyjax.neural import codec
from proxyjax.views import deflate_inspect

SMALL = compressors.AnalysisConfig(num_docs=6, max_doc_bytes=4096, window_chars=400)


def _py_levenshtein(a, b):
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i]
    for j, y in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
    prev = cur
  return prev[-1]


def test_levenshtein_known_values():
  kitten, sitting = list(b"kitten"), list(b"sitting")
  assert compressors.levenshtein(kitten, sitting) == 3
  assert compressors._levenshtein_numpy(np.array(kitten), np.array(sitting)) == 3
  assert compressors.levenshtein([], [1, 2, 3]) == 3
  assert compressors.levenshtein([70000, 1], [70000, 1]) == 0  # ids beyond a byte
  assert compressors.normalized_levenshtein([], []) == 0.0
  assert compressors.normalized_levenshtein([1, 2, 3, 4], [1, 2]) == 0.5


def test_levenshtein_numpy_matches_reference():
  rng = np.random.default_rng(0)
  for _ in range(60):
    a = rng.integers(0, 4, size=rng.integers(0, 25))
    b = rng.integers(0, 4, size=rng.integers(0, 25))
    want = _py_levenshtein(a.tolist(), b.tolist())
    assert compressors._levenshtein_numpy(a, b) == want
    assert compressors.levenshtein(a, b) == want


def test_delete_characters_is_seeded_and_exact():
  text = "αβγ def f(x): return x  # ünïcode " * 10
  a = compressors.delete_characters(text, 0.1, np.random.default_rng(3))
  b = compressors.delete_characters(text, 0.1, np.random.default_rng(3))
  c = compressors.delete_characters(text, 0.1, np.random.default_rng(4))
  assert a == b and a != c
  assert len(text) - len(a) == round(0.1 * len(text))
  it = iter(text)  # a subsequence of the original
  assert all(ch in it for ch in a)


@pytest.mark.parametrize("data", [
    b"", b"x", b"hello hello hello hello",  # fixed Huffman, a match
    os.urandom(5000),  # stored blocks
    b"".join(b"line %d: the quick brown fox\n" % i for i in range(2000)),  # dynamic, several blocks
])
def test_inflate_codes_reproduces_the_stream(data):
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  stream = c.compress(data) + c.flush()
  out, codes = deflate_inspect.inflate_codes(stream)
  assert out == data
  if len(data):
    # Codes are in stream order, non-overlapping, and their outputs tile the document.
    assert np.all(codes[1:, 0] >= codes[:-1, 1])
    assert codes[0, 2] == 0 and codes[-1, 3] == len(data)
    assert np.all(codes[1:, 2] == codes[:-1, 3])


def test_symbol_spans_byte_aligned_views(stdlib_sample):
  data = stdlib_sample[0][:3000]
  for name in ("raw", "halfbyte", "doublebit", "bit", "doublebyte"):
    view = views.make_view(name)
    syms, starts, ends, base = compressors.symbol_spans(view, data)
    assert len(syms) == len(starts) == len(ends)
    assert np.array_equal(syms, view.encode(data))
    if name == "raw":
      assert all(base[s:e] == bytes([v]) for v, s, e in zip(syms, starts, ends))
    if name == "halfbyte":  # each nibble is part of its byte
      for j, (v, s) in enumerate(zip(syms[:200], starts[:200])):
        byte = base[s]
        assert v == (byte >> 4 if j % 2 == 0 else byte & 15)
  odd = views.make_view("doublebyte")
  syms, starts, ends, base = compressors.symbol_spans(odd, b"abc")
  assert [base[s:e] for s, e in zip(starts, ends)] == [b"ab", b"c\x00"]


def test_symbol_spans_deflate_and_gzip(stdlib_sample):
  data = stdlib_sample[1][:6000]
  d_syms, d_starts, d_ends, _ = compressors.symbol_spans(views.make_view("deflate"), data)
  g_syms, g_starts, g_ends, _ = compressors.symbol_spans(views.make_view("gzip"), data)
  assert len(g_syms) == len(d_syms) + 18
  assert np.all(g_ends[:10] == g_starts[:10])  # header: overhead
  assert np.all(g_starts[-8:] == 0) and np.all(g_ends[-8:] == len(data))  # trailer: all of it
  assert np.array_equal(g_starts[10:-8], d_starts) and np.array_equal(g_ends[10:-8], d_ends)
  produced = d_ends > d_starts
  assert produced.mean() > 0.9
  # Spans advance monotonically through the document and reach its end.
  assert np.all(np.diff(d_starts[produced]) >= 0) and d_ends[produced].max() == len(data)


def test_symbol_spans_tokenizer_views(tokenizer_path):
  data = "def f(x):\n    return {'a': x}  # café → 😀\n".encode()
  tok = views.make_view("tokenizer", tokenizer_path=tokenizer_path)
  ids, starts, ends, base = compressors.symbol_spans(tok, data)
  assert b"".join(base[s:e] for s, e in zip(starts, ends)) == data
  assert all(base[s:e] == tok.token_bytes(int(i)) for i, s, e in zip(ids, starts, ends))
  tb = views.make_view("token_bytes", tokenizer_path=tokenizer_path)
  syms, s2, e2, _ = compressors.symbol_spans(tb, data)
  assert len(syms) == len(ids) * tb.width
  assert np.array_equal(s2[::tb.width], starts)


def test_unknown_view_has_no_alignment():
  with pytest.raises(compressors.NotAligned):
    compressors.symbol_spans(object(), b"abc")


def test_neural_collisions_from_a_trained_compressor(neural_compressor_run, tmp_path):
  """The neural view's spans (literals: their byte; windows: their coded bytes) feed the
  same stability / collision / ratio analysis; the run's config.json rebuilds its model."""
  _, workdir = neural_compressor_run
  assert os.path.exists(os.path.join(workdir, "config.json"))
  codec.register()  # what the entry points do before building a neural view
  view = views.make_view("neural", neural_dir=workdir)
  data = b"def f(x):\n    return x + 1\n" * 6
  symbols, starts, ends, base = compressors.symbol_spans(view, data)
  np.testing.assert_array_equal(symbols, view.encode(data))
  lit = symbols < 256
  assert np.all(ends[lit] - starts[lit] == 1) and (~lit).any()
  assert sorted(set(zip(starts.tolist(), ends.tolist())))[-1][1] == len(data)
  corpus = tmp_path / "c"
  corpus.mkdir()
  for i in range(3):
    (corpus / f"m{i}.py").write_bytes(b"import os\n\ndef g%d(a, b):\n    return a * b + %d\n" % (i, i))
  s = compressors.analyze(compressors.AnalysisConfig(
      views=("raw", "neural"), num_docs=3, seed=0, sources=f"files:{corpus}", split="all",
      neural_dir=workdir))
  neural = s["views"]["neural"]
  assert "neural" not in s["skipped"]
  assert neural["collisions"]["distinct_symbols"] > 0
  assert neural["collisions"]["unit"] == "window symbol sequence"
  assert 0.0 < neural["compression"]["bytes_per_symbol"]
  assert 0.0 <= neural["stability"]["mean"] <= 1.5


def test_collision_stats_by_hand():
  # Symbol 0 -> chunks {A, A, B}; symbol 1 -> {C}.
  syms = np.array([0, 0, 0, 1])
  keys = np.array([10, 10, 11, 12], dtype=np.uint64)
  st = compressors.collision_stats(syms, keys, np.zeros(4, bool))
  assert st["distinct_symbols"] == 2
  assert st["mean_chunks_per_symbol"] == 1.5
  assert st["occurrence_weighted_chunks_per_symbol"] == pytest.approx((3 * 2 + 1) / 4)
  assert st["collision_rate"] == 0.5 and st["max_chunks_per_symbol"] == 2
  h = -(2 / 4 * np.log2(2 / 3) + 1 / 4 * np.log2(1 / 3))
  assert st["conditional_entropy_bits"] == pytest.approx(h)


@pytest.fixture(scope="module")
def small_summary():
  cfg = compressors.AnalysisConfig(
      views=("raw", "deflate", "gzip", "halfbyte", "doublebyte", "neural", "tokenizer"),
      num_docs=6, max_doc_bytes=4096, window_chars=400)
  return compressors.analyze(cfg)


def test_analysis_summary(small_summary):
  s = small_summary
  assert s["num_docs"] == 6 and set(s["skipped"]) == {"neural", "tokenizer"}
  v = s["views"]
  assert set(v) == {"raw", "deflate", "gzip", "halfbyte", "doublebyte"}
  # Raw bytes: 10% deletions move the output by ~10%; no collisions; 8 bits per byte.
  assert v["raw"]["stability"]["mean"] == pytest.approx(0.1, abs=0.01)
  assert v["raw"]["collisions"]["mean_chunks_per_symbol"] == 1.0
  assert v["raw"]["collisions"]["conditional_entropy_bits"] == 0.0
  assert v["raw"]["compression"]["bits_per_byte"] == 8.0
  assert v["halfbyte"]["compression"]["bytes_per_symbol"] == 0.5
  assert v["halfbyte"]["collisions"]["mean_chunks_per_symbol"] > 1.0
  assert v["doublebyte"]["collisions"]["collision_rate"] == 0.0
  # DEFLATE compresses but is unstable and ambiguous (the paper's point).
  for name in ("deflate", "gzip"):
    assert v[name]["compression"]["bits_per_byte"] < 4.0
    assert v[name]["stability"]["mean"] > 3 * v["raw"]["stability"]["mean"]
    assert v[name]["collisions"]["collision_rate"] > 0.5
  gz, df = v["gzip"]["compression"], v["deflate"]["compression"]
  assert gz["total_symbols"] == df["total_symbols"] + 18 * 6  # header + trailer per document
  assert json.loads(json.dumps(s))["num_docs"] == 6


def test_analysis_is_deterministic(small_summary):
  again = compressors.analyze(compressors.AnalysisConfig(
      views=("raw", "deflate", "gzip", "halfbyte", "doublebyte", "neural", "tokenizer"),
      num_docs=6, max_doc_bytes=4096, window_chars=400))
  assert again == small_summary


def test_tokenizer_views_in_the_analysis(tokenizer_path):
  cfg = compressors.AnalysisConfig(views=("tokenizer", "token_bytes"), num_docs=4,
                                   max_doc_bytes=4096, window_chars=300,
                                   tokenizer_path=tokenizer_path)
  v = compressors.analyze(cfg)["views"]
  assert v["tokenizer"]["collisions"]["mean_chunks_per_symbol"] == 1.0  # byte-level BPE
  assert v["tokenizer"]["compression"]["bytes_per_symbol"] > 1.5
  assert v["token_bytes"]["collisions"]["mean_chunks_per_symbol"] > 1.0


def test_run_writes_json_and_png(tmp_path):
  out = tmp_path / "cmp"
  cfg = compressors.AnalysisConfig(views=("raw", "deflate"), num_docs=3, max_doc_bytes=2048,
                                   window_chars=200)
  summary = compressors.run(cfg, str(out))
  assert (out / "compressors.png").stat().st_size > 1000
  assert json.loads((out / "compressors.json").read_text())["views"].keys() == {"raw", "deflate"}
  assert "deflate" in compressors.format_summary(summary)


def test_cli(tmp_path):
  out = tmp_path / "cli"
  r = subprocess.run([sys.executable, "-m", "proxyjax.eval.compressor_analysis", "--views=raw,gzip",
                      "--num_docs=2", "--max_doc_bytes=2048", "--window_chars=200",
                      f"--out={out}"], capture_output=True, text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr
  assert "gzip" in r.stdout
  summary = json.loads((out / "compressors.json").read_text())
  assert summary["num_docs"] == 2 and (out / "compressors.png").exists()


def test_source_options_reach_the_sources(tmp_path):
  """text_field / record_format / tfds_data_dir are passed to the sources, as in training."""
  path = tmp_path / "docs.jsonl"
  docs = ["def a():\n    return 1\n" * 5, "class B:\n    pass\n" * 5, "x = [1, 2, 3]\n" * 5]
  path.write_text("".join(json.dumps({"body": d, "text": ""}) + "\n" for d in docs))
  base = dict(views=("raw",), num_docs=10, sources=f"jsonl:{path}", window_chars=50)
  assert compressors.sample_documents(compressors.AnalysisConfig(**base)) == []  # 'text' is empty
  got = compressors.sample_documents(compressors.AnalysisConfig(text_field="body", **base))
  assert sorted(got) == sorted(d.encode() for d in docs)


def test_neural_collisions_count_window_symbol_sequences():
  # T = 32, N = 16: two symbols per window. Windows (256+1, 256+2) cover "ab" twice and
  # "cd" once; (256+1, 256+3) covers "ab". Per symbol, 256+1 would stand for one chunk
  # and 256+2 for two; per window sequence, (1, 2) stands for {"ab", "cd"}.
  syms = np.array([256 + 1, 256 + 2, ord("x"), 256 + 1, 256 + 2, 256 + 1, 256 + 2,
                   256 + 1, 256 + 3])
  starts = np.array([0, 0, 2, 3, 3, 5, 5, 7, 7])
  ends = np.array([2, 2, 3, 5, 5, 7, 7, 9, 9])
  data = b"abxabcdab"
  units, u_starts, u_ends = compressors.window_units(syms, starts, ends, 2, 16)
  assert units.tolist() == [256 + (1 << 16 | 2), ord("x"), 256 + (1 << 16 | 2),
                            256 + (1 << 16 | 2), 256 + (1 << 16 | 3)]
  assert u_starts.tolist() == [0, 2, 3, 5, 7] and u_ends.tolist() == [2, 3, 5, 7, 9]
  st = compressors.collision_stats(units, compressors._chunk_keys(data, u_starts, u_ends),
                                   np.zeros(len(units), bool))
  assert st["distinct_symbols"] == 3 and st["max_chunks_per_symbol"] == 2
  assert st["collision_rate"] == pytest.approx(1 / 3)
  # One symbol per window: the units are the symbols.
  same, _, _ = compressors.window_units(syms[:3], starts[:3], ends[:3], 1, 16)
  assert same.tolist() == syms[:3].tolist()
