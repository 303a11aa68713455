"""Every view: round trip on real code, empty and non-UTF-8 input, alphabet bounds, determinism."""

import gzip
import pickle

import numpy as np
import pytest

from proxyjax import views
from proxyjax.views import tokenizer as tok_lib

ODD = [b"", b"\x00", b"\xff\xfe\x80 not utf-8 \xc3\x28", "caf\u00e9 \U0001f600\n".encode()]
BYTE_VIEWS = ["raw", "deflate", "gzip", "halfbyte", "doublebit", "bit", "doublebyte"]


def _all_views(tokenizer_path):
  out = [views.make_view(n) for n in BYTE_VIEWS]
  out.append(views.make_view("tokenizer", tokenizer_path=tokenizer_path))
  out.append(views.make_view("token_bytes", tokenizer_path=tokenizer_path))
  out.append(views.make_view("token_bytes", tokenizer_path=tokenizer_path, gray_code=True))
  return out


def test_round_trip_alphabet_determinism(tokenizer_path, stdlib_sample):
  for view in _all_views(tokenizer_path):
    utf8_only = isinstance(view, (views.TokenizerView, views.TokenBytesView))
    for data in stdlib_sample + ODD:
      if utf8_only and data.startswith(b"\xff"):
        continue
      if isinstance(view, views.DoubleByteView) and data == b"\x00":
        assert view.decode(view.encode(data), num_bytes=1) == data
        continue
      sym = view.encode(data)
      assert sym.dtype == np.int32 and sym.ndim == 1
      if sym.size:
        assert 0 <= sym.min() and sym.max() < view.alphabet_size, view
      assert view.decode(sym) == data, (view, data[:40])
      np.testing.assert_array_equal(view.encode(data), sym)  # deterministic
      clone = pickle.loads(pickle.dumps(view))  # as Grain ships it to workers
      np.testing.assert_array_equal(clone.encode(data), sym)


def test_compression_ratios_on_real_code(tokenizer_path, stdlib_sample):
  data = b"".join(stdlib_sample)
  ratio = {v.name: len(data) / len(v.encode(data)) for v in _all_views(tokenizer_path)}
  assert ratio["raw"] == 1.0 and ratio["halfbyte"] == 0.5 and ratio["bit"] == 0.125
  assert ratio["doublebyte"] == pytest.approx(2.0, abs=1e-3)
  assert 3.0 < ratio["deflate"] < 6.0
  assert ratio["gzip"] < ratio["deflate"]  # 18 bytes of header/trailer
  assert ratio["tokenizer"] > 2.0
  assert ratio["token_bytes"] == pytest.approx(ratio["tokenizer"] / 2)


def test_exact_encodings():
  assert views.make_view("halfbyte").encode(b"\xa5\x0f").tolist() == [0xA, 0x5, 0x0, 0xF]
  assert views.make_view("doublebit").encode(b"\xe4").tolist() == [3, 2, 1, 0]
  assert views.make_view("bit").encode(b"\x81").tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
  assert views.make_view("doublebyte").encode(b"\x01\x02\x03").tolist() == [0x0102, 0x0300]
  data = b"def f():\n    return 1\n" * 20
  deflate = views.make_view("deflate").encode(data)
  gz = views.make_view("gzip").encode(data)
  # The raw DEFLATE stream is gzip's payload without its 10-byte header and 8-byte trailer.
  assert gz[10:-8].tolist() == deflate.tolist()
  assert bytes(gz[:4].astype(np.uint8)) == b"\x1f\x8b\x08\x00"
  assert gzip.decompress(bytes(gz.astype(np.uint8))) == data


def test_tokenizer_rejects_invalid_utf8(tokenizer_path):
  view = views.make_view("tokenizer", tokenizer_path=tokenizer_path)
  with pytest.raises(views.ViewError):
    view.encode(b"\xff\xfe")
  assert view.lossless


def test_token_bytes_width_and_gray_code(tokenizer_path):
  plain = views.make_view("token_bytes", tokenizer_path=tokenizer_path)
  grayv = views.make_view("token_bytes", tokenizer_path=tokenizer_path, gray_code=True)
  ids = plain.inner.encode_ids(b"import os\n")
  assert plain.width == 2  # 600 ids need 10 bits
  sym = plain.encode(b"import os\n")
  assert sym.tolist() == [b for i in ids.tolist() for b in (i >> 8, i & 0xFF)]
  # Gray code: rank by token bytes (ties by id), then rank ^ (rank >> 1).
  vocab = plain.inner.alphabet_size
  keys = [plain.inner.token_bytes(i) for i in range(vocab)]
  rank = {i: r for r, i in enumerate(sorted(range(vocab), key=lambda i: (keys[i], i)))}
  codes = [rank[i] ^ (rank[i] >> 1) for i in ids.tolist()]
  assert grayv.encode(b"import os\n").tolist() == [b for c in codes for b in (c >> 8, c & 0xFF)]
  # Byte-level tokens map back to their exact bytes (single bytes for the base alphabet).
  assert sorted(keys[i] for i in range(vocab) if len(keys[i]) == 1) == [bytes([b]) for b in range(256)]


def test_gray_helpers_are_inverse():
  n = np.arange(1 << 16)
  g = tok_lib.gray(n)
  assert (np.bitwise_count(g[1:] ^ g[:-1]) == 1).all()
  np.testing.assert_array_equal(tok_lib.inverse_gray(g), n)


def test_byte_level_alphabet_is_a_bijection():
  table = tok_lib.byte_level_alphabet()
  assert sorted(table.values()) == list(range(256)) and len(table) == 256
  assert table["A"] == 65 and table["\u0120"] == 32  # space is 'Ġ'


def test_unknown_view_and_neural_placeholder():
  with pytest.raises(ValueError, match="unknown view"):
    views.make_view("lzma")
  with pytest.raises(NotImplementedError, match="proxyjax.compress"):
    views.make_view("neural")


def test_registry_names_classes_and_from_config(tokenizer_path):
  """Each name maps to a class that names itself and builds itself from the config."""
  assert views.VIEW_NAMES == ("raw", "deflate", "gzip", "tokenizer", "token_bytes", "halfbyte",
                              "doublebit", "bit", "doublebyte", "neural")
  assert views.NEEDS_TOKENIZER == ("tokenizer", "token_bytes")
  opts = views.ViewOptions(tokenizer_path=tokenizer_path)
  for name in views.VIEW_NAMES[:-1]:
    cls = views.view_class(name)
    assert cls.name == name
    view = cls.from_config(opts)
    assert type(view) is cls and view.name == name  # pylint: disable=unidiomatic-typecheck
  gray = views.ViewOptions.from_config({"tokenizer_path": tokenizer_path, "gray_code": True})
  assert views.build("token_bytes", gray).name == "token_bytes_gray"
  with pytest.raises(NotImplementedError, match="neural_dir"):
    views.build("neural")
  with pytest.raises(ValueError, match="known views: raw, deflate"):
    views.view_class("nope")


def test_symbol_spans_contract(tokenizer_path):
  """Every view's spans: one per symbol, symbols == encode, inside ``span_bytes``."""
  data = "def f(x):\n    return {'a': x}  # café → 😀\n".encode() * 3 + b"!"
  for view in _all_views(tokenizer_path):
    syms, starts, ends = view.symbol_spans(data)
    base = view.span_bytes(data)
    np.testing.assert_array_equal(np.asarray(syms), view.encode(data).astype(np.asarray(syms).dtype))
    assert len(syms) == len(starts) == len(ends), view
    assert np.all(starts >= 0) and np.all(ends <= len(base)) and np.all(starts <= ends), view
