"""Self-speculative decoding (proxyjax.eval.speculative): the ids of plain greedy decoding."""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from proxyjax import vocab as V
from proxyjax.eval import generate as gen
from proxyjax.eval import speculative as spec
from proxyjax.model import decode, transformer

PROMPTS = [b"def f(x):", b"import os\nimport sys", b"a"]


def _model(heads: int, raw_heads: int, seed: int = 1):
  cfg = transformer.ModelConfig(vocab_size=384, num_ids=320, d_model=32, n_layers=1, n_heads=2,
                                n_kv_heads=1, head_dim=16, d_ff=64, attention="xla",
                                dtype=jnp.float32, remat="none", num_pred_heads=heads,
                                num_raw_pred_heads=raw_heads)
  return cfg, transformer.abstract_model(cfg)[0], transformer.init_params(cfg, seed)


def _byte(c: str) -> int:
  return V.BYTE_OFFSET + ord(c)


def _bigram_params(cfg, params, ids, weights):
  """A bigram model over ``ids`` (blocks zeroed: the hidden state is the current id's
  embedding, one basis vector each, so the heads tell them apart). ``weights(k, i)`` gives
  head k's ``(targets, values)`` for source id ``i``: main heads k < H, then raw heads
  k = H + j; every other logit is 0."""
  params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
  params["blocks"]["wo"] = jnp.zeros_like(params["blocks"]["wo"])
  params["blocks"]["w_down"] = jnp.zeros_like(params["blocks"]["w_down"])
  embed = np.asarray(params["embed"]).copy()
  embed[list(ids)] = np.eye(len(ids), cfg.d_model)
  params["embed"] = jnp.asarray(embed)

  def head(n_heads, width, offset):
    w = np.zeros((cfg.d_model, n_heads * width), np.float32)
    for h in range(n_heads):
      for d, i in enumerate(ids):
        targets, values = weights(offset + h, i)
        w[d, [h * width + t for t in targets]] = values
    return jnp.asarray(w)

  params["lm_head"] = head(cfg.num_pred_heads, cfg.vocab_size, 0)
  if cfg.num_raw_pred_heads:
    params["raw_head"] = head(cfg.num_raw_pred_heads, V.RAW_VOCAB_SIZE, cfg.num_pred_heads)
  return params


def _chain_params(cfg, params, succ: dict[int, int], wrong_heads=()):
  """A bigram model in which head h maps id a to succ^(h+1)(a) for the ids of ``succ``
  (raw head j: as main head H + j); a head in ``wrong_heads`` predicts '?' instead, so
  its drafts fail."""

  def weights(k, i):
    target = i
    for _ in range(k + 1):
      target = succ[target]
    return [_byte("?") if k in wrong_heads else target], 10.0

  return _bigram_params(cfg, params, sorted(succ), weights)


CYCLE = {_byte(a): _byte(b) for a, b in zip("abcd", "bcda")}


def _stream(graphdef, params, prompt: bytes, cfg, **kw):
  s = gen.Stream(graphdef, params, gen.encode_prompt(prompt), cfg, **kw)
  ids = np.concatenate(list(s), axis=1)[0]
  return ids, s


def _ids(graphdef, params, prompts, speculative: bool, context_len=None, **kw):
  if not speculative:
    kw.pop("draft_len", None)
  cfg = gen.SamplingConfig(max_new_tokens=16, speculative=speculative, **kw)
  rows = gen.generate_ids(graphdef, params, [gen.encode_prompt(x) for x in prompts], cfg,
                          batch_size=4, context_len=context_len)
  return [r[0] for r in rows]


def test_speculative_greedy_equals_plain_greedy():
  """Random weights (drafts mostly rejected), a model whose drafts are all right and one
  with a wrong head, each in a batch with rows whose drafts fail: the ids of plain greedy
  decoding, prompt by prompt (main and raw heads draft)."""
  cfg, graphdef, params = _model(3, 1)
  for p in (params, _chain_params(cfg, params, CYCLE),
            _chain_params(cfg, params, CYCLE, wrong_heads=(1,))):
    plain = _ids(graphdef, p, PROMPTS, False)
    np.testing.assert_array_equal(np.stack(_ids(graphdef, p, PROMPTS, True)), np.stack(plain))
  assert gen.completion_bytes(plain[2]) == b"bcda" * 4  # the chain model's own output


def test_drafts_are_accepted_on_a_model_whose_heads_agree():
  """Every draft right: 1 + H - 1 + R ids per forward; a wrong head: the ids before it;
  every draft wrong: plain steps between drafting forwards, longer and longer."""
  cfg, graphdef, params = _model(3, 1)
  fast = gen.SamplingConfig(max_new_tokens=24, speculative=True)
  ids, s = _stream(graphdef, _chain_params(cfg, params, CYCLE), b"a", fast)
  assert gen.completion_bytes(ids) == b"bcda" * 6  # plain greedy's (the bigram chain)
  assert s.steps == 24 and s.forwards == 6  # the next id and 3 accepted drafts per forward
  ids, s = _stream(graphdef, _chain_params(cfg, params, CYCLE, wrong_heads=(2,)), b"a", fast)
  assert gen.completion_bytes(ids) == b"bcda" * 6
  assert s.forwards == 12  # the next id and head 1's draft per forward
  assert s.drafting == 12
  # Drafts that all fail: after m such forwards in a row, min(2^(m-1), 16) plain steps.
  ids, s = _stream(graphdef, _chain_params(cfg, params, CYCLE, wrong_heads=(1, 2, 3)), b"a",
                   fast)
  assert gen.completion_bytes(ids) == b"bcda" * 6
  assert s.forwards == 24 and s.drafting == 5  # ids 1, 3, 6, 11, 20 drafted
  one = gen.SamplingConfig(max_new_tokens=24, speculative=True, draft_len=1)
  assert gen.num_speculative_drafts(cfg, one) == 1 and gen.num_speculative_drafts(cfg, fast) == 3


def test_speculative_ends_rows_inside_an_accepted_block():
  """An end id, a stop string or the context's end inside a block of accepted drafts
  end the row there, PAD after it, as plain decoding does."""
  cfg, graphdef, params = _model(3, 1)
  chain = {_byte("a"): _byte("b"), _byte("b"): _byte("c"), _byte("c"): V.RAW_CLOSE,
           V.RAW_CLOSE: _byte("a")}
  cycle = _chain_params(cfg, params, CYCLE)
  prompts = PROMPTS[::-1]  # "a" first
  for p, kw, ctx, text in ((_chain_params(cfg, params, chain), {}, None, b"bc"),
                           (cycle, {"stop_strings": ("dab",), "draft_len": 1}, None,
                            b"bcdab"),  # one draft a forward: the stop spans forwards
                           (cycle, {}, 12, b"bcdabcdabc")):  # context 12: 12 - 3 + 1 ids
    with pytest.warns(UserWarning) if ctx else contextlib.nullcontext():
      plain = _ids(graphdef, p, prompts, False, ctx, **kw)
      fast = _ids(graphdef, p, prompts, True, ctx, **kw)
    np.testing.assert_array_equal(np.stack(fast), np.stack(plain))
    assert gen.completion_bytes(fast[0]) == text and fast[0][len(text) + 1] == V.PAD


@pytest.mark.slow  # CI: test_speculative_greedy_equals_plain_greedy on random weights fails too
def test_decode_block_and_rewind_match_decode_steps():
  """T ids in one forward give the hidden states of T single steps; after a rewind the
  cache continues as if the dropped ids had never been fed."""
  _, graphdef, params = _model(2, 0)
  prompt = gen.encode_prompt(b"def f(x):")
  tokens = jnp.asarray(np.pad(prompt, (3, 0))[None])
  block = jnp.asarray([[_byte(c) for c in "abcd"]])
  x = jnp.asarray([_byte("x")])

  @jax.jit
  def run(params):
    model = nnx.merge(graphdef, params)
    _, cache = decode.prefill(model, tokens, tokens != 0, 24)
    steps, c1 = [], cache
    for j in range(4):
      h, c1 = decode.decode_step(model, c1, block[:, j])
      steps.append(h)
      if j == 1:  # "ab" fed one by one, then "x"
        after_ab = decode.decode_step(model, c1, x)[0]
    hs, c2 = decode.decode_block(model, cache, block)
    c2 = decode.rewind(c2, 2)  # keep "ab" of "abcd", then "x"
    return jnp.stack(steps, 1), hs, after_ab, decode.decode_step(model, c2, x)[0], c2

  steps, hs, after_ab, after_rewind, c2 = run(params)
  np.testing.assert_allclose(np.asarray(hs), np.asarray(steps), atol=1e-5)
  np.testing.assert_allclose(np.asarray(after_rewind), np.asarray(after_ab), atol=1e-5)
  i = tokens.shape[1] + 2
  assert int(c2["index"]) == i and int(c2["valid"][0, :i].sum()) == len(prompt) + 2
  assert not c2["valid"][0, i:].any() and c2["position"].tolist() == [len(prompt) + 2]


def test_drafts_and_their_count():
  cfg, _, _ = _model(3, 2)
  assert spec.num_drafts(cfg, gen.RAW.allowed) == 4  # heads 1, 2 and both raw heads
  tokens_allowed = ((V.EOS, V.EOS + 1), (320, 576))
  assert spec.num_drafts(cfg, tokens_allowed) == 2  # raw heads cannot draft tokens
  assert spec.accepted(jnp.asarray([[1, 2, 3], [1, 9, 3], [0, 2, 3]]),
                       jnp.asarray([[1, 2, 3]] * 3)).tolist() == [3, 1, 0]


CHAIN = tuple(_byte(c) for c in "abcd")


def _markov_params(cfg, params, seed: int = 0):
  """A bigram model over the ids of CHAIN: every head (main and raw) gives each id of
  CHAIN its own random distribution over CHAIN (other ids get < 1e-6 of the mass). Head 0
  is a Markov chain whose marginals are matrix powers; the look-ahead heads' drafts are
  often rejected."""
  rng = np.random.default_rng(seed)
  return _bigram_params(cfg, params, CHAIN, lambda k, i: (
      CHAIN, 4.5 + 0.3 * rng.standard_normal(len(CHAIN))))


def _transitions(graphdef, params, temperature, top_p):
  """Head 0's sampling distribution over CHAIN after each id of CHAIN, from the model."""
  model = nnx.merge(graphdef, params)
  tokens = jnp.asarray([list(gen.encode_prompt(b"")) + [i] for i in CHAIN], jnp.int32)
  h, _ = decode.prefill(model, tokens, tokens != V.PAD, tokens.shape[1] + 1)
  logits = gen.filtered_logits(gen.raw_logits(model, h), temperature, top_p)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))[:, list(CHAIN)]
  assert probs.sum(1).min() > 1 - 1e-6  # the rest of the vocabulary is negligible
  return probs / probs.sum(1, keepdims=True)


def _check_marginals(rows, trans, start: str):
  """Each position's empirical distribution over CHAIN against the chain's marginal,
  id by id: within 4.5 standard errors (seeded, so not flaky)."""
  rows = np.stack(rows)
  n, steps = rows.shape
  marginal = np.eye(len(CHAIN))[CHAIN.index(_byte(start))]
  for k in range(steps):
    marginal = marginal @ trans
    seen = np.array([(rows[:, k] == i).mean() for i in CHAIN])
    assert seen.sum() == 1.0, f"position {k}: ids outside the chain"
    tolerance = 4.5 * np.sqrt(marginal * (1 - marginal) / n) + 1e-3
    assert np.all(np.abs(seen - marginal) <= tolerance), (k, seen, marginal)


@pytest.mark.parametrize("temperature,top_p,batch_sizes", [(1.0, 1.0, (1,)),
                                                          (0.8, 0.9, (1, 4))])
def test_speculative_sampling_has_plain_samplings_distribution(temperature, top_p,
                                                               batch_sizes):
  """Speculative sampling (drafts from 3 main and 2 raw look-ahead heads with their own
  distributions) gives each position the Markov chain's exact marginal. One row a batch
  is the sensitive case: dropping the id after the last accepted draft and sampling it
  again shifts a marginal by 9 standard errors there. Batches of 4 rows (rows stop at
  other rows' rejections: the pending id) and one stream of 2048 rows (mostly one
  accepted draft a forward) too; plain sampling as a control."""
  cfg, graphdef, params = _model(4, 2)
  params = _markov_params(cfg, params)
  trans = _transitions(graphdef, params, temperature, top_p)
  assert trans.max() < 0.8  # nothing near-deterministic; top-p cuts some ids off
  assert trans.min() > 0.01 if top_p == 1.0 else trans.min() == 0.0
  n = 2048
  cfg_s = gen.SamplingConfig(max_new_tokens=6, temperature=temperature, top_p=top_p, n=n,
                             seed=3, speculative=True)
  runs = [(cfg_s, b) for b in batch_sizes] + [(dataclasses.replace(cfg_s, speculative=False), n)]
  for sampling, batch_size in runs:
    rows = gen.generate_ids(graphdef, params, [gen.encode_prompt(b"a")], sampling,
                            batch_size=batch_size)[0]
    _check_marginals(rows, trans, "a")
  stream = gen.Stream(graphdef, params, gen.encode_prompt(b"c"), cfg_s, rows=n)
  _check_marginals(list(np.concatenate(list(stream), axis=1)), trans, "c")
  assert stream.drafting > 0


def test_speculative_sampling_accepts_drafts_and_is_seeded():
  """On the chain model of the greedy tests (every head right, so p = q), all drafts are
  accepted at any temperature: 6 ids a forward; the same seed gives the same ids."""
  cfg, graphdef, params = _model(4, 2)
  chain = _chain_params(cfg, params, CYCLE)
  sampled = gen.SamplingConfig(max_new_tokens=24, temperature=0.7, speculative=True, seed=5)
  ids, s = _stream(graphdef, chain, b"a", sampled)
  assert s.steps == 24 and s.forwards == 4 and s.drafting == 4
  assert gen.completion_bytes(ids).startswith(b"bcda")  # the chain holds ~all the mass
  cfg_m, graphdef, params = _model(3, 1)
  markov = _markov_params(cfg_m, params)
  runs = [_ids(graphdef, markov, PROMPTS, True, temperature=1.0, seed=s) for s in (1, 1, 2)]
  np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))
  assert not np.array_equal(np.stack(runs[0]), np.stack(runs[2]))
