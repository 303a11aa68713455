"""Cached decoding equals a full forward pass; sampling and stop handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from proxyjax import vocab as V
from proxyjax.eval import codegen
from proxyjax.eval import generate as gen
from proxyjax.model import decode, transformer
from proxyjax.views import TokenizerView


def _model(window=None):
  cfg = transformer.ModelConfig(vocab_size=384, num_ids=320, d_model=64, n_layers=2, n_heads=4,
                                n_kv_heads=2, head_dim=16, d_ff=128, attention="xla",
                                dtype=jnp.float32, window=window, remat="none")
  graphdef, _ = transformer.abstract_model(cfg)
  params = transformer.init_params(cfg, 3)
  return graphdef, params, nnx.merge(graphdef, params)


@pytest.mark.slow  # CI runs tests/model/test_decode.py's decode == full forward (model/decode.py)
@pytest.mark.parametrize("window", [None, 5])
def test_cached_decoding_matches_full_forward(window):
  _, _, model = _model(window)
  r = np.random.default_rng(0)
  prompts = [gen.encode_prompt(r.integers(0, 256, n).astype(np.uint8).tobytes()) for n in (6, 11)]
  cont = r.integers(64, 320, (2, 5)).astype(np.int32)
  width = 16
  tokens = np.zeros((2, width), np.int32)
  valid = np.zeros((2, width), bool)
  for j, p in enumerate(prompts):
    tokens[j, width - len(p):], valid[j, width - len(p):] = p, True
  h, cache = decode.prefill(model, jnp.asarray(tokens), jnp.asarray(valid), width + 5)
  cached = [gen.raw_logits(model, h)]
  for s in range(4):
    h, cache = decode.decode_step(model, cache, jnp.asarray(cont[:, s]))
    cached.append(gen.raw_logits(model, h))
  for j, p in enumerate(prompts):
    full_ids = np.concatenate([p, cont[j, :4]])[None]
    n = full_ids.shape[1]
    hidden = model(jnp.asarray(full_ids), jnp.ones((1, n), jnp.int32),
                   jnp.arange(n, dtype=jnp.int32)[None])
    full = gen.raw_logits(model, hidden[0])
    for s in range(5):
      np.testing.assert_allclose(np.asarray(cached[s][j]), np.asarray(full[len(p) - 1 + s]),
                                 atol=2e-4, rtol=1e-4)


def test_generate_greedy_is_deterministic_and_restricted():
  graphdef, params, _ = _model()
  cfg = gen.SamplingConfig(max_new_tokens=12, temperature=0.0, n=2)
  a = gen.generate(graphdef, params, [b"def f(x):", b"import"], cfg, batch_size=4)
  b = gen.generate(graphdef, params, [b"def f(x):", b"import"], cfg, batch_size=3)
  assert a == b and len(a) == 2 and all(len(x) == 2 for x in a)
  assert a[0][0] == a[0][1]  # greedy: both samples agree
  sampled = gen.generate(graphdef, params, [b"x"], gen.SamplingConfig(
      max_new_tokens=12, temperature=1.0, top_p=0.95, n=4, seed=1))
  assert len(set(sampled[0])) > 1  # sampling differs between samples


def test_top_p_keeps_the_nucleus():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  draws = {int(gen.sample(logits, jax.random.PRNGKey(i), 1.0, 0.7)[0]) for i in range(200)}
  assert draws == {0, 1}


def test_completion_bytes_and_stops():
  ids = [64 + ord("a"), 64 + ord("b"), V.RAW_CLOSE, 64 + ord("c")]
  assert gen.completion_bytes(ids) == b"ab"
  assert not hasattr(gen, "truncate_at_stops")  # one truncation: codegen.truncate_completion


def test_generate_applies_stop_strings():
  """Stops cut each completion at the earliest stop (same function as codegen's)."""
  graphdef, params, _ = _model()
  prompts = [b"def f(x):", b"import"]
  plain = gen.generate(graphdef, params, prompts, gen.SamplingConfig(max_new_tokens=12, n=1))
  texts = [row[0] for row in plain]
  # Pick stops that occur inside the generated text (greedy, so reproducible).
  stops = tuple(t[3:5] for t in texts if len(t) >= 5)
  assert stops
  cut = gen.generate(graphdef, params, prompts,
                     gen.SamplingConfig(max_new_tokens=12, n=1, stop_strings=stops))
  for t, row in zip(texts, cut):
    assert row[0] == codegen.truncate_completion(t, stops)
    assert len(row[0]) <= 3 or not any(s in row[0] for s in stops)
  assert any(len(row[0]) < len(t) for t, row in zip(texts, cut))


def test_decode_loop_ends_a_row_at_its_stop_string():
  """A stop string completed inside the jitted loop marks the row done (PAD after it)."""
  graphdef, params, _ = _model()
  prompt = gen.encode_prompt(b"def f(x):")
  tokens, valid = jnp.asarray(prompt[None]), jnp.ones((1, len(prompt)), bool)
  key = jax.random.PRNGKey(0)
  run = lambda stops: np.asarray(gen._generate(  # pylint: disable=protected-access
      graphdef, params, tokens, valid, key, max_new=12, temperature=0.0, top_p=1.0,
      stops=stops))[0]
  free = run(())
  assert not np.isin(free, [V.PAD, V.EOS, V.RAW_CLOSE]).any()  # runs 12 steps
  stop = tuple(int(i) for i in free[3:5])
  end = next(j for j in range(1, 12) if tuple(free[j - 1:j + 1]) == stop)  # first completion
  stopped = run((stop,))
  np.testing.assert_array_equal(stopped[:end + 1], free[:end + 1])
  assert np.all(stopped[end + 1:] == V.PAD)


def test_sharded_generation_matches_and_shards_the_cache():
  """With the training mesh and rules (8 fake devices, FSDP), greedy decoding gives the
  same text, and the KV cache is split over the batch like the training activations."""
  from proxyjax import parallel  # pylint: disable=g-import-not-at-top
  graphdef, params, model = _model()
  mesh, rules = parallel.make_mesh((1, 8, 1)), parallel.rules_for("fsdp")
  prompts = [b"def f(x):", b"import os", b"class A:", b"x = 1"]
  cfg = gen.SamplingConfig(max_new_tokens=8, n=2)
  plain = gen.generate(graphdef, params, prompts, cfg)
  sharded = gen.generate(graphdef, params, prompts, cfg, mesh=mesh, rules=rules)
  assert sharded == plain

  tokens = jnp.asarray(np.stack([gen.encode_prompt(b"abcdefgh")] * 8))

  @jax.jit
  def cache_of(tokens):
    with parallel.sharding_context(mesh, rules):
      return decode.prefill(model, tokens, jnp.ones(tokens.shape, bool), 16)[1]["k"]

  k = cache_of(tokens)
  assert k.shape[1] == 8 and k.sharding.spec[1] == "fsdp"  # data has size 1
  assert k.addressable_shards[0].data.shape[1] == 1  # one row per device


# ---------------------------------------------------------------------------
# The model's context (eval.max_new_tokens is 2048 by default: never past the context).


def test_generation_stops_at_the_context():
  """A row whose prompt and max_new_tokens overflow the context stops at its last position."""
  graphdef, params, _ = _model()
  prompts = [gen.encode_prompt(b"def f(x):"), gen.encode_prompt(b"x")]  # 11 and 3 ids
  # 2 x 2 rows of 12 greedy ids: the shapes of test_generate_greedy_..., compiled once.
  cfg = gen.SamplingConfig(max_new_tokens=12, n=2)
  free = gen.generate_ids(graphdef, params, prompts, cfg, batch_size=4)[0][0]
  assert not np.isin(free, [V.PAD, V.EOS, V.RAW_CLOSE]).any()  # runs 12 steps
  with pytest.warns(UserWarning, match="1 of 2 prompts .* generation stops at the context"):
    capped = gen.generate_ids(graphdef, params, prompts, cfg, batch_size=4,
                              context_len=16)[0][0]
  # 16 - 11 + 1 = 6 new ids: the last predicted from position 15, the context's last.
  np.testing.assert_array_equal(capped[:6], free[:6])
  assert np.all(capped[6:] == V.PAD)


def test_long_prompts_are_cut_from_the_left_with_a_warning():
  graphdef, params, _ = _model()
  long = b"import os\nimport sys\n# a long prompt\ndef f(x):"
  ids = gen.encode_prompt(long)
  cut = gen.fit_context(ids, 20, 2)
  assert cut.tolist() == [V.BOS, V.RAW_OPEN] + ids[-18:].tolist()  # prefix kept, left cut
  assert gen.fit_context(ids, len(ids), 2) is ids  # fits: unchanged
  cfg = gen.SamplingConfig(max_new_tokens=12, n=2)  # shapes as in the test above
  short = gen.encode_prompt(b"x")
  with pytest.warns(UserWarning, match="1 of 2 prompts leave fewer than max_new_tokens=12"), \
       pytest.warns(UserWarning, match="1 of 2 prompts are longer than the model's context of "
                    "20 ids: cut from the left"):
    got = gen.generate_ids(graphdef, params, [ids, short], cfg, batch_size=4, context_len=20)
  with pytest.warns(UserWarning, match="generation stops"):
    expected = gen.generate_ids(graphdef, params, [cut, short], cfg, batch_size=4,
                                context_len=20)
  np.testing.assert_array_equal(got[0][0], expected[0][0])
  assert got[0][0][0] != V.PAD and np.all(got[0][0][1:] == V.PAD)  # a full context: 1 new id


# ---------------------------------------------------------------------------
# The tokens interface (a tokenizer-trained baseline).


class _ByteTokens:
  """A stand-in tokenizer view: one token per byte, token t = byte t (alphabet 256)."""

  name = "tokenizer"
  alphabet_size = 256

  def encode(self, data):
    return np.frombuffer(data, np.uint8).astype(np.int32)

  def decode(self, symbols):
    return np.asarray(symbols, np.uint8).tobytes()


def _tokens_model():
  cfg = transformer.ModelConfig(vocab_size=640, num_ids=576, d_model=32, n_layers=1,
                                n_heads=2, n_kv_heads=2, head_dim=16, d_ff=64,
                                attention="xla", dtype=jnp.float32, remat="none")
  graphdef, _ = transformer.abstract_model(cfg)
  return graphdef, transformer.init_params(cfg, 5)


def test_tokens_interface_prompts_and_decodes_through_the_tokenizer():
  vocab = V.Vocab(256, True)  # tokens at 320 + t
  for sentinels in (False, True):
    iface = gen.tokens_interface(_ByteTokens(), vocab, sentinels)
    prefix = [V.BOS, V.COMP_OPEN] if sentinels else [V.BOS]
    assert iface.encode(b"ab").tolist() == prefix + [320 + 97, 320 + 98]
    end = [V.COMP_CLOSE] if sentinels else [V.EOS]
    assert iface.decode([320 + 104, 320 + 105] + end + [320 + 33]) == b"hi"
    assert set(iface.end_ids) == {V.EOS} | set(end)
  # Decoding (one compile): with sentinels, as a run in sentinel mode was trained.
  graphdef, params = _tokens_model()
  cfg = gen.SamplingConfig(max_new_tokens=10, temperature=1.0, n=4, seed=2)
  rows = gen.generate_ids(graphdef, params, [iface.encode(b"def f(x):")], cfg, interface=iface)
  allowed = set(range(320, 576)) | {V.EOS, V.COMP_CLOSE}
  emitted = {int(i) for r in rows[0] for i in r if i != V.PAD}
  assert emitted and emitted <= allowed  # never a raw byte nor <raw>
  texts = gen.generate(graphdef, params, [b"def f(x):"], cfg, interface=iface)
  assert texts[0] == [iface.decode(r.tolist()).decode("utf-8", "replace") for r in rows[0]]


def test_tokens_interface_with_a_real_tokenizer(tokenizer_path):
  view = TokenizerView(tokenizer_path)
  vocab = V.Vocab(view.alphabet_size, True)
  iface = gen.tokens_interface(view, vocab, sentinels=False)
  text = b"def add(a, b):\n    return a + b\n"
  ids = iface.encode(text)
  assert ids[0] == V.BOS and ids[1:].min() >= 320 and len(ids) - 1 < len(text)
  assert iface.decode(ids[1:].tolist() + [V.EOS]) == text
  assert iface.stop_ids("\ndef") == tuple(int(i) for i in vocab.symbols_to_ids(
      view.encode(b"\ndef")))
