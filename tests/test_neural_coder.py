"""The neural view's coder: quantisation, windows, packing, round trips, determinism."""

import dataclasses
import hashlib
import os
import shutil
import sysconfig

import numpy as np
import pytest

from proxyjax import vocab as V
from proxyjax import views
from proxyjax.neural import coder
from proxyjax.neural import compressor as compressor_lib
from proxyjax.neural import model as model_lib
from proxyjax.neural import quantize
from proxyjax.neural.settings import Settings, compressor_config
from proxyjax.views.neural import NeuralView

STDLIB = sysconfig.get_paths()["stdlib"]
FILES = ["json/__init__.py", "textwrap.py", "functools.py", "email/utils.py", "difflib.py",
         "string.py", "copy.py", "bisect.py"]


def tiny_compressor_config(corpus_dir: str = ""):
  """A compressor small enough to train in seconds (40 steps) and code fast."""
  c = compressor_config()
  c.data.sources = f"files:{corpus_dir}" if corpus_dir else "stdlib"
  c.seq_len, c.batch_size = 64, 8
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 40, 10, 0, 0
  c.progress_bar, c.async_checkpointing = False, False
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 32, 1, 2, 0, 16, 64
  m.logits_chunk = 64
  c.opt.warmup_steps, c.opt.peak_lr = 5, 1e-2
  c.mesh.shape = (1, -1, 1)
  c.compressor.context = 32  # rows of 30 bytes: test documents are far longer
  c.compressor.batch_rows = 4
  c.compressor.literal_threshold = 7.0  # the barely trained model: random bytes stay literal
  return c


def trained_compressor(tmp_path_factory):
  """(config, workdir) of a briefly trained compressor, shared by the test session."""
  base = tmp_path_factory.getbasetemp()
  workdir, corpus = base / "neural_compressor_run", base / "neural_compressor_corpus"
  config = tiny_compressor_config(str(corpus))
  if not (workdir / "checkpoints").exists():
    from proxyjax.train import loop  # pylint: disable=g-import-not-at-top
    corpus.mkdir(exist_ok=True)
    for name in FILES:
      shutil.copy(os.path.join(STDLIB, name), corpus / name.replace("/", "_"))
    loop.train(config, str(workdir))
  return config, str(workdir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config, workdir = trained_compressor(tmp_path_factory)
  model = model_lib.ByteModel.restore(config, workdir)
  return config, workdir, compressor_lib.NeuralCompressor(model)


def _docs():
  rng = np.random.default_rng(0)
  code = [open(os.path.join(STDLIB, n), "rb").read()[:700] for n in FILES[:3]]
  mixed = code[0][:300] + rng.bytes(160) + b"def f(x):\n    return x + 1\n" * 4
  return code + [b"", b"x", b"\xff\xfe\x80 caf\xc3\xa9 \xed\xa0\x80" * 12, mixed]


# --- quantisation ------------------------------------------------------------------


def test_weight_table_is_pinned():
  # Integer-only (decimal powers, shifts): the same on every machine.
  t = quantize.weight_table()
  assert t[0] == 1 << 30 and t[64] == 1 << 29 and t[-1] == 0
  digest = hashlib.sha256(t.astype("<i8").tobytes()).hexdigest()
  assert digest == "dc020276e0f9f89cc6da3ea628d07fcf89b8be45c317a9fb34ddeb0fa2315995"


def test_frequencies_are_valid_and_close():
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(50, 256)) * rng.uniform(0.1, 8, (50, 1))).astype(np.float32)
  f = quantize.frequencies(logits)
  assert f.dtype == np.uint16 and f.min() >= 1
  np.testing.assert_array_equal(f.sum(-1, dtype=np.int64), 1 << 16)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  kl = np.sum(p * np.log2(p / (f / 65536.0)), -1)
  assert kl.max() < 0.01  # bits per byte lost to quantisation
  # Peaked and flat extremes; ties go to the lowest byte.
  peaked = np.zeros((1, 256), np.float32)
  peaked[0, 7] = 1e4
  assert quantize.frequencies(peaked)[0, 7] == 65536 - 255
  flat = quantize.frequencies(np.zeros((1, 256), np.float32))[0]
  assert flat.sum() == 65536 and flat.max() - flat.min() <= 256 and flat[0] == flat.max()
  with pytest.raises(FloatingPointError):
    quantize.frequencies(np.full((1, 256), np.nan, np.float32))


# --- the coder with a synthetic model (no JAX) ------------------------------------------


def _synthetic_table(prefix: bytes) -> np.ndarray:
  """A deterministic toy model: favours (previous byte + 1), 'e' and ' '."""
  logits = np.full(256, -4.0, np.float32)
  logits[(prefix[-1] + 1) % 256 if prefix else 0] = 4.0
  logits[ord("e")], logits[ord(" ")] = 1.0, 1.5
  return quantize.frequencies(logits)


def _tables(data: bytes) -> np.ndarray:
  return np.stack([_synthetic_table(data[:i]) for i in range(len(data) + 1)])


SYNTHETIC = (bytes(range(40, 120)) + b"the tree see " * 6 + bytes(range(200, 256))
             + bytes(np.random.default_rng(1).integers(0, 256, 120, dtype=np.uint8)) + b"abcdef")


@pytest.mark.parametrize("t,n", [(16, 16), (16, 8), (32, 16), (24, 8), (64, 16), (128, 8),
                                 (8, 8), (12, 4)])
def test_synthetic_round_trip_windows_and_packing(t, n):
  st = Settings(window_bits=t, symbol_bits=n, literal_threshold=6.0)
  symbols, stats = coder.encode_document(SYNTHETIC, _tables(SYNTHETIC), st)
  assert coder.decode_document(symbols, st, _synthetic_table) == SYNTHETIC
  assert symbols.max() < 256 + (1 << n)
  # Symbols >= 256 come in whole windows of T/N symbols; each window is a T-bit value.
  is_packed = symbols >= 256
  runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], is_packed, [0]]))))[::2]
  assert all(r % (t // n) == 0 for r in runs)
  assert stats.windows * (t // n) == int(is_packed.sum())
  assert stats.literal_bytes + stats.coded_bytes == len(SYNTHETIC) == stats.bytes
  assert stats.symbols == len(symbols)
  if t >= 16:
    # The toy model predicts the ascending runs (136 bytes) and nothing else well.
    assert stats.coded_bytes >= 120 and stats.literal_bytes >= 120
  if 16 <= t <= 32:  # (longer windows are cut short by the ends of coded spans)
    # Windows carry close to T bits of model information (termination costs a few).
    assert stats.model_bits > 0.6 * stats.windows * t


def test_pack_window_msb_first():
  st = Settings(window_bits=16, symbol_bits=8)
  assert coder.pack_window(0x1234, st) == [256 + 0x12, 256 + 0x34]
  assert coder.unpack_window(np.array([256 + 0x12, 256 + 0x34]), st) == 0x1234
  st4 = Settings(window_bits=16, symbol_bits=4)
  assert coder.pack_window(0xA0C3, st4) == [256 + 0xA, 256, 256 + 0xC, 256 + 0x3]
  assert coder.pack_window(5, Settings()) == [256 + 5]  # short codes: leading zero padding
  with pytest.raises(ValueError):
    coder.pack_window(1 << 16, Settings())


def test_window_decodes_on_its_own():
  # Each window restarts the coder: decoding needs only the document bytes before it.
  st = Settings(literal_threshold=float("inf"))
  symbols, stats = coder.encode_document(SYNTHETIC, _tables(SYNTHETIC), st)
  assert stats.literal_bytes == 0 and stats.windows == len(symbols)
  full = coder.decode_document(symbols, st, _synthetic_table)
  consumed = 0
  for w in range(len(symbols)):
    steps = coder.decode_steps(symbols[w:w + 1], st)
    prefix = full[:consumed]
    try:
      out = next(steps)
      while True:
        out = steps.send(_synthetic_table(prefix + bytes(out)))
    except StopIteration as stop:
      piece = stop.value
    assert piece and full[consumed:consumed + len(piece)] == piece
    consumed += len(piece)
  assert consumed == len(SYNTHETIC)


def test_segmentation_keeps_badly_predicted_spans_literal():
  st = Settings(literal_threshold=8.0, entropy_window=8, min_literal_run=4)
  costs = np.concatenate([np.full(50, 1.0), np.full(30, 14.0), np.full(50, 1.0),
                          np.full(2, 20.0), np.full(20, 1.0)])
  lit = coder.literal_mask(costs, st)
  assert not lit[:40].any() and lit[55:75].all() and not lit[95:].any()
  assert coder.literal_mask(np.zeros(0), st).shape == (0,)
  assert coder.literal_mask(costs, dataclasses.replace(st, literal_threshold=0.0)).all()


def test_corrupt_streams_are_rejected():
  st = Settings(window_bits=32, symbol_bits=16)
  with pytest.raises(coder.CorruptStreamError, match="truncated"):
    coder.decode_document(np.array([256 + 1]), st, _synthetic_table)
  with pytest.raises(coder.CorruptStreamError, match="outside"):
    coder.decode_document(np.array([256 + (1 << 16)]), st, _synthetic_table)
  with pytest.raises(ValueError):
    coder.encode_document(b"abc", _tables(b"ab"), st)


def test_settings_validation():
  from proxyjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="window_bits"):
    Settings(window_bits=20, symbol_bits=16)
  c = compressor_config()
  c.compressor.context = c.seq_len + 1
  with pytest.raises(ConfigError, match="context"):
    Settings.from_config(c)
  s = Settings.from_config(compressor_config())
  assert s.alphabet_size == 256 + 65536 and s.symbols_per_window == 1
  assert V.Vocab(s.alphabet_size, literal_bytes=True).num_ids == 320 + 65536


# --- with a (briefly trained) model ------------------------------------------------------


def test_row_layout_covers_every_position_once():
  st = Settings(context=12, stride=4)  # W = 10 bytes per row
  served = []
  for j in range(model_lib.num_rows(40, st)):
    a, e = model_lib.row_span(j, st)
    start = model_lib.row_start(j, st)
    assert 0 <= a - start and e - 1 - start <= st.row_bytes  # inside the row, with context
    served.extend(range(a, min(e, 40)))
    assert all(model_lib.row_of(i, st) == j for i in range(a, min(e, 40)))
  assert served == list(range(40))


def test_round_trips_with_model(trained):
  _, _, comp = trained
  docs = _docs()
  results = list(comp.encode_with_stats(docs))
  assert comp.decode([s for s, _ in results]) == docs
  stats = coder.EncodeStats()
  for s, st in results:
    stats += st
  assert results[3][0].size == 0  # empty document -> no symbols
  assert stats.windows > 0 and stats.literal_bytes > 0
  # The random bytes in the mixed document stay literal, the code around them is coded.
  mixed_symbols = results[-1][0]
  assert np.sum(mixed_symbols < 256) >= 100 and np.sum(mixed_symbols >= 256) > 20
  # Longer than the model's rows (30 bytes): the context slides.
  assert len(docs[0]) > 10 * comp.settings.row_bytes
  assert sum(len(s) for s, _ in results) < sum(len(d) for d in docs)


def test_same_symbols_from_any_batching(trained):
  _, _, comp = trained
  docs = _docs()
  together = comp.encode(docs)
  alone = [comp.encode([d])[0] for d in docs]
  reversed_order = comp.encode(docs[::-1])[::-1]
  for a, b, c in zip(together, alone, reversed_order):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_neural_view_registry_and_round_trip(trained):
  with pytest.raises(NotImplementedError, match="proxyjax.compress"):
    views.make_view("neural")
  config, workdir, comp = trained
  view = views.make_view("neural", neural_dir=workdir)  # lazily loaded; default config
  assert view.alphabet_size == 256 + 65536 and view.literal_bytes and view.lossless
  view = NeuralView(workdir, config)
  data = _docs()[0][:300]
  symbols = view.encode(data)
  assert symbols.dtype == np.int32
  np.testing.assert_array_equal(symbols, comp.encode([data])[0])
  assert view.decode(symbols) == data
  vocab = V.Vocab(view.alphabet_size, literal_bytes=True)
  ids = vocab.symbols_to_ids(symbols)
  assert ids.min() >= V.BYTE_OFFSET and ids.max() < vocab.num_ids
  np.testing.assert_array_equal(vocab.ids_to_symbols(ids), symbols)
  with pytest.raises(FileNotFoundError):
    NeuralView(str(workdir) + "_missing")
