"""Raw BPB against a hand computation; window bookkeeping."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from proxyjax import vocab as V
from proxyjax.eval import bpb
from proxyjax.model import transformer
from proxyjax.views import SubByteView, TokenizerView


def test_windows_score_every_target_once():
  stream = np.arange(1, 24, dtype=np.int32)  # 23 ids -> 22 targets
  for ctx, stride in [(8, 8), (8, 3), (5, 5), (30, 10)]:
    seen = []
    for inputs, targets, count in bpb.windows(stream, ctx, stride):
      seen += targets[count].tolist()
      # every counted target is the id after its input
      assert all(t == i + 1 for i, t in zip(inputs[count], targets[count]))
    assert seen == stream[1:].tolist(), (ctx, stride)


def _model():
  cfg = transformer.ModelConfig(vocab_size=384, num_ids=320, d_model=32, n_layers=1, n_heads=2,
                                n_kv_heads=2, head_dim=16, d_ff=64, attention="xla",
                                dtype=jnp.float32, remat="none", logits_chunk=16)
  graphdef, _ = transformer.abstract_model(cfg)
  params = transformer.init_params(cfg, 0)
  return graphdef, params, nnx.merge(graphdef, params)


def test_raw_bpb_matches_hand_computation():
  graphdef, params, model = _model()
  docs = [b"def f():\n  return 1\n", b"x=2"]
  got = bpb.raw_bpb(graphdef, params, docs, context_len=64, stride=64, batch_size=2)
  # Hand computation: one full-context forward per document (each fits in one window,
  # and the document mask makes the concatenation equivalent), log-softmax by hand.
  total = 0.0
  for d in docs:
    ids = np.concatenate([[V.BOS, V.RAW_OPEN], V.bytes_to_ids(d), [V.RAW_CLOSE, V.EOS]])
    n = ids.size
    h = model(jnp.asarray(ids[None]), jnp.ones((1, n), jnp.int32),
              jnp.arange(n, dtype=jnp.int32)[None])
    logits = np.asarray(model.logits(h))[0, :, 0, :].astype(np.float64)
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                  keepdims=True)) - logits.max(-1, keepdims=True)
    for t in range(n - 1):
      if 64 <= ids[t + 1] < 320:
        total -= logp[t, ids[t + 1]]
  expected = total / math.log(2) / sum(len(d) for d in docs)
  assert got["bytes"] == 23
  assert got["raw_bpb"] == pytest.approx(expected, rel=1e-4)
  # An untrained model is near uniform over 318 allowed ids: ~8.3 bits per byte.
  assert 7.5 < got["raw_bpb"] < 9.5


def test_stride_changes_context_not_counts():
  graphdef, params, _ = _model()
  docs = [bytes(range(32, 127))] * 2
  a = bpb.raw_bpb(graphdef, params, docs, context_len=32, stride=32)
  b = bpb.raw_bpb(graphdef, params, docs, context_len=32, stride=16)
  assert a["bytes"] == b["bytes"] == 190
  assert a["raw_bpb"] != b["raw_bpb"]


def test_sharded_scoring_matches():
  """BPB scored under the training mesh and rules (8 fake devices) equals unsharded."""
  from proxyjax import parallel  # pylint: disable=g-import-not-at-top
  graphdef, params, _ = _model()
  docs = [b"def f(x):\n    return x + 1\n" * 3, b"import os\nprint(os.sep)\n"]
  plain = bpb.raw_bpb(graphdef, params, docs, context_len=32, stride=16, batch_size=8)
  sharding = parallel.static_sharding(parallel.make_mesh((1, 8, 1)), parallel.rules_for("fsdp"))
  sharded = bpb.raw_bpb(graphdef, params, docs, context_len=32, stride=16, batch_size=8,
                        sharding=sharding)
  assert sharded["bytes"] == plain["bytes"]
  assert sharded["raw_bpb"] == pytest.approx(plain["raw_bpb"], rel=1e-5)


@pytest.mark.parametrize("sentinels, stream", [
    (True, [V.BOS, V.COMP_OPEN, 324, 321, V.COMP_CLOSE, V.EOS]),
    (False, [V.BOS, 324, 321, V.EOS]),  # vanilla mode (the tokens baseline): no sentinels
])
def test_view_bpb_formats_documents_as_trained(monkeypatch, sentinels, stream):
  """Documents as the run was trained; bits per UTF-8 byte of the documents."""
  seen = []

  def fake_score(graphdef, params, s, context_len, stride, batch_size, target_range, sharding):
    seen.append((s.tolist(), target_range))
    return 3.0 * math.log(2), 2  # 3 bits over the 2 symbol targets

  monkeypatch.setattr(bpb, "score_stream", fake_score)
  view = SubByteView("halfbyte", 4)
  got = bpb.view_bpb(None, None, [b"A"], view, V.Vocab(16, True), context_len=8, stride=8,
                     sentinels=sentinels)
  assert seen == [(stream, (320, 336))]
  assert got["bits_per_byte"] == pytest.approx(3.0) and got["bits_per_symbol"] == 1.5
  assert got["documents"] == 1 and got["sentinels"] == sentinels


def test_tokens_view_bpb_counts_per_utf8_byte(tokenizer_path):
  """A tokens model's BPB is per UTF-8 byte, so it compares with a byte model's raw BPB."""
  view = TokenizerView(tokenizer_path)
  vocab = V.Vocab(view.alphabet_size, True)
  cfg = transformer.ModelConfig(vocab_size=vocab.size, num_ids=vocab.num_ids, d_model=32,
                                n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16, d_ff=64,
                                attention="xla", dtype=jnp.float32, remat="none",
                                logits_chunk=16)
  graphdef, _ = transformer.abstract_model(cfg)
  params = transformer.init_params(cfg, 0)
  docs = ["def f():\n    return 'é'\n".encode(), b"import os\n"]
  got = bpb.view_bpb(graphdef, params, docs, view, vocab, context_len=64, stride=64,
                     sentinels=False)
  tokens = sum(len(view.encode(d)) for d in docs)
  assert got["symbols"] == tokens and got["bytes"] == sum(len(d) for d in docs)
  assert got["bits_per_byte"] == pytest.approx(got["bits_per_symbol"] * tokens / got["bytes"])
