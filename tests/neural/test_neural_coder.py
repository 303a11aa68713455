"""The neural view's coder: quantisation, fragility, windows, packing, round trips,
determinism across batch sizes, CRC checks and symbol spans."""

import dataclasses
import hashlib
import os
import sysconfig
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proxyjax import views
from proxyjax import vocab as V
from proxyjax.eval import validation
from proxyjax.neural import byte_lm, codec
from proxyjax.views.neural import NeuralView, coder, quantize
from proxyjax.views.neural.settings import Settings, compressor_config

STDLIB = sysconfig.get_paths()["stdlib"]
FILES = ["json/__init__.py", "textwrap.py", "functools.py", "email/utils.py", "difflib.py",
         "string.py", "copy.py", "bisect.py"]


@pytest.fixture(scope="module")
def trained(neural_compressor_run):
  config, workdir = neural_compressor_run
  model = byte_lm.ByteModel.restore(config, workdir)
  return config, workdir, codec.NeuralCompressor(model)


@pytest.fixture(scope="module")
def wide_model(tiny_compressor_config):
  """A random but wider model (d=128, 2 layers): wide enough that a float32 forward
  gives different tables for different batch sizes (the old behaviour)."""
  c = tiny_compressor_config()
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.head_dim, m.d_ff, m.init_std = 128, 2, 4, 32, 256, 0.1
  c.compressor.context = 64
  return byte_lm.ByteModel.init(c, seed=3)


def _with_batch_rows(model: byte_lm.ByteModel, rows: int) -> codec.NeuralCompressor:
  st = dataclasses.replace(model.settings, batch_rows=rows)
  return codec.NeuralCompressor(
      byte_lm.ByteModel(model.model_cfg, model.host_params, st, step=model.step))


def _docs():
  rng = np.random.default_rng(0)
  code = [open(os.path.join(STDLIB, n), "rb").read()[:700] for n in FILES[:3]]
  mixed = code[0][:300] + rng.bytes(160) + b"def f(x):\n    return x + 1\n" * 4
  return code + [b"", b"x", b"\xff\xfe\x80 caf\xc3\xa9 \xed\xa0\x80" * 12, mixed]


def _real_code(max_bytes=1500):
  return [open(os.path.join(STDLIB, n), "rb").read()[:max_bytes]
          for n in ("textwrap.py", "string.py", "bisect.py", "copy.py")]


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


def _boundary_logits(x_steps):
  """Logits whose byte 1 sits at ``x`` = ``x_steps`` 1/64-bit steps below byte 0."""
  logits = np.full((1, 256), -30.0, np.float64)
  logits[0, 0] = 0.0
  logits[0, 1] = -x_steps / quantize._SCALE  # pylint: disable=protected-access
  return logits


def test_fragility_detection_on_boundary_logits():
  # Byte 1 straddles the rounding boundary 100.5: two evaluations 1e-9 logits apart
  # (far more than float64 noise) round differently, and both are flagged.
  below, above = _boundary_logits(100.5 - 2e-8), _boundary_logits(100.5 + 2e-8)
  assert quantize.log2_steps(below)[0, 1] == 100 and quantize.log2_steps(above)[0, 1] == 101
  assert not np.array_equal(quantize.frequencies(below), quantize.frequencies(above))
  assert quantize.fragile(below)[0] and quantize.fragile(above)[0]
  # A quarter step from the boundary: robust, and the same noise changes nothing.
  robust = _boundary_logits(100.25)
  assert not quantize.fragile(robust)[0]
  for noise in (-1e-9, 1e-9):
    nudged = robust + noise * np.eye(256)[1]
    assert not quantize.fragile(nudged)[0]
    np.testing.assert_array_equal(quantize.frequencies(nudged), quantize.frequencies(robust))
  # The margin is what decides: just outside it is robust, just inside fragile.
  m = quantize.FRAGILE_MARGIN
  assert not quantize.fragile(_boundary_logits(100.5 - 2 * m))[0]
  assert quantize.fragile(_boundary_logits(100.5 - m / 2))[0]
  # Beyond the clamp (weight 0 either way) no boundary matters.
  assert not quantize.fragile(_boundary_logits(quantize.MAX_STEPS + 0.5))[0]


def test_device_tables_equal_the_numpy_reference():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(40, 256)) * rng.uniform(0.1, 12, (40, 1))
  logits = np.concatenate([logits, _boundary_logits(7.5 - 1e-8), _boundary_logits(7.5 + 1e-8),
                           np.zeros((1, 256))])
  with byte_lm.x64():
    dev_f, dev_fragile = jax.jit(lambda l: quantize.device_tables(l, 16))(
        jnp.asarray(logits, jnp.float64))
    dev_f, dev_fragile = np.asarray(dev_f), np.asarray(dev_fragile)
  ref_f, ref_fragile = quantize.tables_and_fragility(logits, 16)
  assert dev_f.dtype == np.uint16
  np.testing.assert_array_equal(dev_f, ref_f)
  np.testing.assert_array_equal(dev_fragile, ref_fragile)
  assert ref_fragile[-3] and ref_fragile[-2] and not ref_fragile[-1]
  np.testing.assert_array_equal(ref_f, quantize.frequencies(logits))
  assert not jax.config.jax_enable_x64  # 64-bit types only inside the context


# --- the coder with a synthetic model (no JAX) ------------------------------------------


def _synthetic_table(prefix: bytes) -> np.ndarray:
  """A deterministic toy model: favours (previous byte + 1), 'e' and ' '."""
  logits = np.full(256, -4.0, np.float32)
  logits[(prefix[-1] + 1) % 256 if prefix else 0] = 4.0
  logits[ord("e")], logits[ord(" ")] = 1.0, 1.5
  return quantize.frequencies(logits)


SYNTHETIC = (bytes(range(40, 120)) + b"the tree see " * 6 + bytes(range(200, 256))
             + bytes(np.random.default_rng(1).integers(0, 256, 120, dtype=np.uint8)) + b"abcdef")
PREDICTABLE = bytes(range(40, 120)) + b"the tree see " * 6 + bytes(range(140, 250))
ALL_CODED = dict(entropy_threshold=8.0, entropy_jump=8.0, literal_threshold=8.0)


def _windows(symbols: np.ndarray, st: Settings) -> list[tuple[int, int]]:
  """(first symbol, T-bit value) of each window of a stream."""
  out, s = [], 0
  while s < len(symbols):
    if symbols[s] < 256:
      s += 1
      continue
    out.append((s, coder.unpack_window(symbols[s:s + st.symbols_per_window], st)))
    s += st.symbols_per_window
  return out


@pytest.mark.parametrize("t,n", [(16, 16), (16, 8), (32, 16), (24, 8), (64, 16), (128, 8),
                                 (8, 8), (12, 4)])
def test_synthetic_round_trip_windows_and_packing(t, n):
  st = Settings(window_bits=t, symbol_bits=n, **ALL_CODED)
  symbols, stats = coder.encode_document(PREDICTABLE, st, _synthetic_table)
  assert coder.decode_document(symbols, st, _synthetic_table) == PREDICTABLE
  assert symbols.max() < 256 + (1 << n)
  # Symbols >= 256 come in whole windows of T/N symbols; each window is a T-bit value.
  is_packed = symbols >= 256
  runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], is_packed, [0]]))))[::2]
  assert all(r % (t // n) == 0 for r in runs)
  assert stats.windows * (t // n) == int(is_packed.sum())
  assert stats.literal_bytes + stats.coded_bytes == len(PREDICTABLE) == stats.bytes
  assert stats.symbols == len(symbols) and stats.segments == 1
  assert stats.windows > 0 or t < 16  # (8- and 12-bit windows do not shrink this toy text)
  # Random bytes do not shrink: SYNTHETIC under 2-symbol windows of 16 bits stays literal.
  if (t, n) == (16, 8):
    assert coder.encode_document(SYNTHETIC, st, _synthetic_table)[1].literal_segments == 1
  if 16 <= t <= 32:
    # Windows carry close to T bits of model information (termination costs a few).
    assert stats.model_bits > 0.6 * stats.windows * t
  if t <= 32:  # no window longer than window_context - 2 = 30 bytes
    _, starts, ends = coder.symbol_spans(PREDICTABLE, st, _synthetic_table)
    assert np.max(ends - starts) <= st.window_bytes


def test_pack_window_msb_first():
  st = Settings(window_bits=16, symbol_bits=8)
  assert coder.pack_window(0x1234, st) == [256 + 0x12, 256 + 0x34]
  assert coder.unpack_window(np.array([256 + 0x12, 256 + 0x34]), st) == 0x1234
  st4 = Settings(window_bits=16, symbol_bits=4)
  assert coder.pack_window(0xA0C3, st4) == [256 + 0xA, 256, 256 + 0xC, 256 + 0x3]
  assert coder.pack_window(5, Settings()) == [256 + 5]  # short codes: leading zero padding
  with pytest.raises(ValueError):
    coder.pack_window(1 << 16, Settings())


@pytest.mark.parametrize("t,n", [(16, 16), (32, 8)])
def test_every_window_decodes_alone(t, n):
  # The model's context restarts at each window: a window's symbols alone give its bytes,
  # with a model that sees only the window's own bytes (no byte before the window).
  st = Settings(window_bits=t, symbol_bits=n, entropy_threshold=5.0)
  symbols, starts, ends = coder.symbol_spans(SYNTHETIC, st, _synthetic_table)
  windows = _windows(symbols, st)
  assert len(windows) > 20
  for s, v in windows:
    assert coder.decode_window(v, st, _synthetic_table) == SYNTHETIC[starts[s]:ends[s]]


def test_windows_do_not_depend_on_the_bytes_before_them():
  # The same segment after different bytes: the same symbols (old coder: different).
  st = Settings(**ALL_CODED)
  piece = b"the tree see the tree see "
  a, _ = coder.encode_document(piece, st, _synthetic_table)
  for before in (b"x" * 7, bytes(range(60, 90))):
    segs = [coder.Segment(0, len(before), True), coder.Segment(len(before), len(before) + 26,
                                                               False)]
    coded = [None, coder.encode_segment(piece, st, _synthetic_table)]
    symbols, _, _ = coder.assemble(before + piece, segs, coded, st)
    np.testing.assert_array_equal(symbols[len(before):], a)


def _fragile_model(prefix: bytes):
  """The toy model, with its table flagged fragile after some window prefixes."""
  return _synthetic_table(prefix), bool(prefix) and zlib.crc32(prefix) % 5 == 3


def _perturbed(table: np.ndarray) -> np.ndarray:
  """Another valid table: what a decoder might compute at a fragile position."""
  return np.roll(table, 3)


def test_fragile_positions_are_never_relied_on():
  # A decoder whose tables differ from the encoder's at every fragile position (the
  # worst case of noise there) still reproduces the bytes: a window never reads one.
  st = Settings(**ALL_CODED)
  symbols, stats = coder.encode_document(SYNTHETIC, st, _fragile_model)
  assert stats.windows > 10
  # A window whose first table is fragile leaves its byte literal.
  first_fragile = lambda prefix: (_synthetic_table(prefix), not prefix)  # noqa: E731
  lit = coder.encode_segment(b"abcdef", st, first_fragile)
  assert lit.fragile_literals == lit.literal_bytes == 6 and lit.windows == 0

  def noisy(prefix: bytes) -> np.ndarray:
    table, fragile = _fragile_model(prefix)
    return _perturbed(table) if fragile else table

  assert coder.decode_document(symbols, st, noisy) == SYNTHETIC
  # Without the flags the same decoder fails (the test would catch a coder ignoring them).
  plain, _ = coder.encode_document(SYNTHETIC, st, _synthetic_table)
  try:
    wrong = coder.decode_document(plain, st, noisy)
  except coder.CorruptStreamError:
    wrong = None
  assert wrong != SYNTHETIC


def test_symbol_spans_tile_the_document():
  st = Settings(window_bits=32, symbol_bits=16, entropy_threshold=5.0)
  symbols, starts, ends = coder.symbol_spans(SYNTHETIC, st, _synthetic_table)
  np.testing.assert_array_equal(symbols, coder.encode_document(SYNTHETIC, st,
                                                               _synthetic_table)[0])
  assert len(starts) == len(ends) == len(symbols)
  lit = symbols < 256
  assert lit.any() and (~lit).any()
  np.testing.assert_array_equal(ends[lit] - starts[lit], 1)
  np.testing.assert_array_equal(symbols[lit], np.frombuffer(SYNTHETIC, np.uint8)[starts[lit]])
  assert np.all(ends[~lit] - starts[~lit] >= 1)
  # Each window's two symbols share one span; the distinct spans tile [0, n) in order.
  spans = sorted(set(zip(starts.tolist(), ends.tolist())))
  assert spans[0][0] == 0 and spans[-1][1] == len(SYNTHETIC)
  assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
  w = np.flatnonzero(~lit)
  assert len(w) % 2 == 0 and np.all(starts[w[::2]] == starts[w[1::2]])
  assert coder.symbol_spans(b"", st, _synthetic_table)[0].size == 0


def _table_with_entropy(top: int) -> np.ndarray:
  """An integer table (sum 2^16): ``top`` bytes share almost all the mass equally."""
  f = np.ones(256, np.int64)
  f[:top] += (65536 - 256) // top
  f[0] += 65536 - f.sum()
  return f.astype(np.uint16)


def test_integer_entropy_of_hand_built_tables():
  uniform = np.full(256, 256, np.uint16)
  assert quantize.entropy_bits(uniform) == 8.0  # exact
  peaked = np.ones(256, np.uint16)
  peaked[7] = 65536 - 255
  for f in (uniform, peaked, _table_with_entropy(4), _table_with_entropy(37)):
    p = f / 65536.0
    assert abs(quantize.entropy_bits(f) - float(-(p * np.log2(p)).sum())) < 1e-5
  assert quantize.entropy_bits(peaked) < 0.07  # the 255 floor entries: 255 * 16 / 65536 bits
  assert 2.0 < quantize.entropy_bits(_table_with_entropy(4)) < 2.2
  # The device computes the same integers.
  tables = np.stack([uniform, peaked, _table_with_entropy(4), _table_with_entropy(37)])
  with byte_lm.x64():
    dev = np.asarray(jax.jit(lambda f: quantize.device_entropy(f, 16))(jnp.asarray(tables)))
  np.testing.assert_array_equal(dev, quantize.entropy_units(tables))


def test_entropy_segmentation_on_a_hand_built_table():
  # h_t by hand (bits). Global threshold 6: starts at 3 (7.0) and 9 (6.5); jump 2:
  # starts at 6 (1.0 -> 3.5) but not at 4 (a fall) nor 8 (+1.5); 12 is unreliable
  # (a fragile table): a start whatever its value, and no jump test at 13.
  h = np.array([5.0, 1.0, 0.5, 7.0, 0.8, 1.0, 3.5, 3.0, 4.5, 6.5, 0.2, 0.1, 0.0, 3.0, 0.2])
  bad = np.zeros(15, bool)
  bad[12] = True
  st = Settings(entropy_threshold=6.0, entropy_jump=2.0, literal_threshold=4.0)
  starts = coder.segment_starts(h, st, bad)
  assert np.flatnonzero(starts).tolist() == [0, 3, 6, 9, 12]
  segs = coder.plan_segments(h, st, bad)
  assert [(s.start, s.end) for s in segs] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15)]
  # Literal rule (a): mean entropy over reliable positions > 4 bits ([3, 6): 8.8 / 3),
  # or too short to gain (none here: T/N = 1 symbol per window).
  assert [s.literal for s in segs] == [False, False, False, False, False]
  st_lit = dataclasses.replace(st, literal_threshold=2.5)
  assert [s.literal for s in coder.plan_segments(h, st_lit, bad)] == [False, True, True,
                                                                       False, False]
  # [12, 15): position 12 is unreliable, so its mean is (3.0 + 0.2) / 2 = 1.6.
  assert coder.plan_segments(h, dataclasses.replace(st, literal_threshold=1.59), bad)[-1].literal
  assert not coder.plan_segments(h, dataclasses.replace(st, literal_threshold=1.61),
                                 bad)[-1].literal
  # Thresholds of 8 bits never start a segment; T/N = 2 symbols make 2-byte segments literal.
  assert coder.segment_starts(h, Settings(**ALL_CODED)).tolist() == [True] + [False] * 14
  short = coder.plan_segments(np.array([7.0, 1.0, 7.0, 1.0, 1.0]),
                              Settings(window_bits=32, symbol_bits=16, entropy_threshold=6.0))
  assert [(s.start, s.end, s.literal) for s in short] == [(0, 2, True), (2, 5, False)]
  assert coder.plan_segments(np.zeros(0), st) == []


def test_literal_rule_b_keeps_segments_that_do_not_shrink():
  st = Settings(window_bits=16, symbol_bits=8, **ALL_CODED)  # two symbols per window
  rnd = bytes(np.random.default_rng(3).integers(0, 256, 40, dtype=np.uint8))
  coded = coder.encode_segment(rnd, st, _synthetic_table)
  assert len(coded.symbols) >= len(rnd)  # random bytes do not shrink under the toy model
  symbols, stats, _ = coder.assemble(rnd, [coder.Segment(0, 40, False)], [coded], st)
  np.testing.assert_array_equal(symbols, np.frombuffer(rnd, np.uint8))
  assert stats.literal_bytes == 40 and stats.literal_segments == 1 and stats.windows == 0


def test_corrupt_streams_are_rejected():
  st = Settings(window_bits=32, symbol_bits=16)
  with pytest.raises(coder.CorruptStreamError, match="truncated"):
    coder.decode_document(np.array([256 + 1]), st, _synthetic_table)
  with pytest.raises(coder.CorruptStreamError, match="outside"):
    coder.decode_document(np.array([256 + (1 << 16)]), st, _synthetic_table)
  with pytest.raises(ValueError):
    coder.code_window(b"abc", np.stack([_synthetic_table(b"")] * 3), None, st)


def test_settings_validation():
  from proxyjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="window_bits"):
    Settings(window_bits=20, symbol_bits=16)
  for field in ("entropy_threshold", "entropy_jump", "literal_threshold"):
    for bad in (-0.5, 8.5, float("nan"), float("inf")):
      with pytest.raises(ConfigError, match=f"compressor.{field}"):
        Settings(**{field: bad})
  with pytest.raises(ConfigError, match="compressor.window_context"):
    Settings(window_context=2)
  c = compressor_config()
  c.compressor.entropy_jump = 9
  with pytest.raises(ConfigError, match="compressor.entropy_jump"):
    Settings.from_config(c)
  c = compressor_config()
  c.compressor.context = c.seq_len + 1
  with pytest.raises(ConfigError, match="context"):
    Settings.from_config(c)
  c = compressor_config()
  c.compressor.entropy_window = 16  # fields of the coder before shard format 4
  c.compressor.min_literal_run = 8
  with pytest.raises(ConfigError, match="predates shard format 4") as e:
    Settings.from_config(c)
  message = str(e.value)
  assert "compressor.entropy_window" in message and "compressor.min_literal_run" in message
  assert "\n" not in message and "config.json" in message
  c = compressor_config()
  c.compressor.window_size = 16  # never a field
  with pytest.raises(ConfigError, match="unknown field"):
    Settings.from_config(c)
  s = Settings.from_config(compressor_config())
  assert s.alphabet_size == 256 + 65536 and s.symbols_per_window == 1
  assert s.window_bytes == 30 and s.window_batch_rows == s.batch_rows * 8
  assert V.Vocab(s.alphabet_size, literal_bytes=True).num_ids == 320 + 65536


# --- with a (briefly trained) model ------------------------------------------------------


def test_row_layout_covers_every_position_once():
  st = Settings(context=12, stride=4)  # W = 10 bytes per row
  served = []
  for j in range(byte_lm.num_rows(40, st)):
    a, e = byte_lm.row_span(j, st)
    start = byte_lm.row_start(j, st)
    assert 0 <= a - start and e - 1 - start <= st.row_bytes  # inside the row, with context
    served.extend(range(a, min(e, 40)))
    assert all(byte_lm.row_of(i, st) == j for i in range(a, min(e, 40)))
  assert served == list(range(40))


def test_round_trips_with_model(trained):
  _, _, comp = trained
  docs = _docs()
  results = list(comp.encode_with_stats(docs))
  assert comp.decode([s for s, _ in results]) == docs
  stats = coder.EncodeStats()
  for _, st in results:
    stats += st
  assert results[3][0].size == 0  # empty document -> no symbols
  assert stats.windows > 0 and stats.literal_bytes > 0 and stats.segments > 10
  # The random bytes in the mixed document stay literal, the code around them is coded.
  mixed_symbols = results[-1][0]
  assert np.sum(mixed_symbols < 256) >= 100 and np.sum(mixed_symbols >= 256) > 20
  # Longer than the model's rows (30 bytes): the entropy pass slides.
  assert len(docs[0]) > 10 * comp.settings.row_bytes
  assert sum(len(s) for s, _ in results) < sum(len(d) for d in docs)


def test_every_window_of_several_documents_decodes_alone(trained):
  # Each window's symbols, decoded with no byte before it (its own model rows only),
  # give exactly the bytes it covers -- for every window of four documents.
  _, _, comp = trained
  st = comp.settings
  docs = _real_code(1200)
  values, spans = [], []
  for doc, (symbols, starts, ends) in zip(docs, comp.symbol_spans(docs)):
    for s, v in _windows(symbols, st):
      values.append(v)
      spans.append(doc[starts[s]:ends[s]])
  assert len(values) > 100
  assert comp.decode_windows(values) == spans  # all at once, one row per window
  for w in range(0, len(values), len(values) // 12):  # and some truly one at a time
    assert comp.decode_windows([values[w]]) == [spans[w]]
  assert max(len(p) for p in spans) <= st.window_bytes


def test_segment_cache_codes_repeats_once(trained):
  _, _, comp = trained
  st = comp.settings
  base = _real_code(600)
  docs = base + base[::-1] + [base[0] + base[1]]
  cached = _with_batch_rows(comp.model, st.batch_rows)
  results = list(cached.encode_with_stats(docs))
  stats = coder.EncodeStats()
  for _, s in results:
    stats += s
  # Every coded segment of the repeated documents is a hit; the concatenation hits too.
  for _, s in results[len(base):2 * len(base)]:
    assert s.cache_lookups > 0 and s.cache_hits == s.cache_lookups
  assert results[-1][1].cache_hits > 0.5 * results[-1][1].cache_lookups
  assert cached.cache.hits == stats.cache_hits and len(cached.cache) > 0
  no_cache = codec.NeuralCompressor(byte_lm.ByteModel(
      comp.model.model_cfg, comp.model.host_params, dataclasses.replace(st, cache_entries=0)))
  plain = no_cache.encode(docs)
  assert len(no_cache.cache) == 0
  for (a, _), b in zip(results, plain):
    np.testing.assert_array_equal(a, b)
  assert cached.decode([a for a, _ in results]) == docs


def test_float64_forward_matches_the_training_forward(wide_model):
  # _logits64 is proxyjax.model.transformer run in float64: close to the float32 forward.
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from proxyjax.model import transformer  # pylint: disable=g-import-not-at-top
  m = wide_model
  st = m.settings
  rows = np.stack([byte_lm.row_ids(d, 0, st) for d in (_real_code() * 2)[:st.batch_rows]])
  graphdef, _ = transformer.abstract_model(m.model_cfg)
  model = nnx.merge(graphdef, m.host_params)
  c = st.context
  h = model(jnp.asarray(rows), jnp.ones_like(rows), jnp.broadcast_to(jnp.arange(c), rows.shape))
  ref = np.asarray(model.logits(h)[:, :, 0, V.BYTE_OFFSET:V.RAW_VOCAB_SIZE])
  ours = m.logits(rows)
  assert ours.dtype == np.float64 and ours.shape == ref.shape
  assert np.abs(ours - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
  assert not jax.config.jax_enable_x64


@pytest.mark.parametrize("which", ["trained", pytest.param("wide", marks=pytest.mark.slow)])
def test_same_symbols_from_any_batch_rows(which, trained, wide_model):
  # 4, 16 and 64 rows per call (32, 128, 512 window rows with the wide model's rows of 64):
  # different compiled shapes, different row slots and neighbours. Robust entropies are
  # bit-identical, and so are the symbols. (With the float32 forward the wide model's
  # tables differ between 4 and 64 rows.)
  model = trained[2].model if which == "trained" else wide_model
  docs = _real_code() + _docs()
  results = {}
  for rows in (4, 16, 64):
    comp = _with_batch_rows(model, rows)
    results[rows] = (list(comp.entropies(docs)), comp.encode(docs))
  base_h, base_symbols = results[4]
  assert sum(int(f.sum()) for *_, f in base_h) <= 0.01 * sum(len(d) + 1 for d in docs)
  for rows in (16, 64):
    entropies, symbols = results[rows]
    for (_, _, h0, f0), (_, _, h1, f1) in zip(base_h, entropies):
      robust = ~(f0 | f1)
      np.testing.assert_array_equal(h0[robust], h1[robust])
    for a, b in zip(base_symbols, symbols):
      np.testing.assert_array_equal(a, b)
  # Composition: alone, reversed.
  comp = _with_batch_rows(model, 4)
  alone = [comp.encode([d])[0] for d in docs]
  reversed_order = comp.encode(docs[::-1])[::-1]
  for a, b, c in zip(base_symbols, alone, reversed_order):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_decode_with_other_batch_rows(wide_model):
  # Encoded 64 rows per call, decoded 4 per call (and with PAD after the prefix).
  # Everything coded (no literal spans), so nearly every window table is read. Fails
  # with the float32 forward (the decode does not reproduce the CRC32).
  st = dataclasses.replace(wide_model.settings, **ALL_CODED)
  model = byte_lm.ByteModel(wide_model.model_cfg, wide_model.host_params, st)
  docs = [d[:300] for d in _real_code()]
  streams = _with_batch_rows(model, 64).encode(docs)
  assert sum(int(np.sum(s >= 256)) for s in streams) > 200
  decoded = _with_batch_rows(model, 4).decode(streams, crc32s=[zlib.crc32(d) for d in docs])
  assert decoded == docs


def test_decode_with_other_batch_rows_and_crc(trained):
  _, _, comp = trained
  docs = [d[:400] for d in _real_code()] + [b"", b"\xff\x00 odd bytes \x80"]
  crcs = [zlib.crc32(d) for d in docs]
  streams = _with_batch_rows(comp.model, 4).encode(docs)
  assert _with_batch_rows(comp.model, 16).decode(streams, crc32s=crcs) == docs
  # A decoder that does not reproduce the bytes raises instead of returning them.
  other = codec.NeuralCompressor(byte_lm.ByteModel.init(
      trained[0], seed=7, settings=comp.settings))
  with pytest.raises(coder.DecodeMismatchError, match="CRC32"):
    other.decode(streams[:1], crc32s=crcs[:1])
  with pytest.raises(coder.DecodeMismatchError, match="document 0"):
    comp.decode(streams[:1], crc32s=[crcs[0] ^ 1])


def test_symbol_spans_with_model(trained):
  _, _, comp = trained
  docs = _docs()
  for doc, symbols, (spans_symbols, starts, ends) in zip(docs, comp.encode(docs),
                                                          comp.symbol_spans(docs)):
    np.testing.assert_array_equal(symbols, spans_symbols)
    if doc:
      assert starts[0] == 0 and ends[-1] == len(doc) and np.all(ends > starts)


def test_neural_view_registry_and_round_trip(trained):
  with pytest.raises(NotImplementedError, match="proxyjax.compress"):
    views.make_view("neural")
  config, workdir, comp = trained
  codec.register()  # what the entry points do before building a neural view
  view = views.make_view("neural", neural_dir=workdir)  # lazily loaded; default config
  assert view.alphabet_size == 256 + 65536 and view.literal_bytes and view.lossless
  view = NeuralView(workdir, config)
  data = _docs()[0][:300]
  symbols = view.encode(data)
  assert symbols.dtype == np.int32
  np.testing.assert_array_equal(symbols, comp.encode([data])[0])
  assert view.decode(symbols) == data == view.decode(symbols, crc32=zlib.crc32(data))
  with pytest.raises(coder.DecodeMismatchError):
    view.decode(symbols, crc32=zlib.crc32(data) ^ 1)
  spans_symbols, starts, ends = view.symbol_spans(data)
  np.testing.assert_array_equal(spans_symbols, symbols)
  assert starts.shape == ends.shape == symbols.shape
  vocab = V.Vocab(view.alphabet_size, literal_bytes=True)
  ids = vocab.symbols_to_ids(symbols)
  assert ids.min() >= V.BYTE_OFFSET and ids.max() < vocab.num_ids
  np.testing.assert_array_equal(vocab.ids_to_symbols(ids), symbols)
  with pytest.raises(FileNotFoundError):
    NeuralView(str(workdir) + "_missing")


@pytest.mark.slow  # CI time
def test_gpu_sized_compressor_config():
  """configs/compressor.py:gpu: ~20M params, rows of 1024, accelerator training defaults,
  and the float64 coding path handles its scanned, bf16-trained layout."""
  import runpy  # pylint: disable=g-import-not-at-top

  from proxyjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  get_config = runpy.run_path(os.path.join(root, "configs", "compressor.py"))["get_config"]
  c = get_config("gpu")
  validation.validate(c)
  assert (c.seq_len, c.model.d_model, c.model.n_layers) == (1024, 512, 6)
  assert c.model.scan_layers and c.model.dtype == "bfloat16" and c.data.view == "raw"
  st = Settings.from_config(c)
  assert st.context == 1024 and st.batch_rows == 256
  assert get_config().model.d_model < c.model.d_model  # the default stays CPU-sized
  with pytest.raises(ConfigError, match="compressor size"):
    get_config("huge")
  # Its architecture through the float64 path, shrunk in depth and context for CPU time.
  c.model.n_layers, c.compressor.context, c.compressor.batch_rows = 2, 32, 2
  m = byte_lm.ByteModel.init(c, seed=0)
  rows = np.stack([byte_lm.row_ids(b"def f(x):\n    return x\n", 0, m.settings)] * 2)
  logits = m.logits(rows)
  assert logits.dtype == np.float64 and logits.shape == (2, 32, 256)
  assert np.all(np.isfinite(logits))
