"""Prediction heads: targets and loss weights pinned by hand (issue 13, item 2), the loss
they give, and the deprecated ``model.raw_head``.

Ids: PAD 0, BOS 1, EOS 2, <raw> 12, </raw> 13, <comp> 14, </comp> 15, bytes 64..319,
compressed symbols >= 320 (``proxyjax.vocab``).
"""

import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from helpers import small_config

from proxyjax import config as config_lib
from proxyjax import trainer
from proxyjax.data import packing, pipeline
from proxyjax.errors import ConfigError
from proxyjax.model import transformer
from proxyjax.train import loss as loss_lib
from proxyjax.train import resume as resume_lib

# A 12-symbol row: [BOS <raw> 70 71 72 </raw> <comp> 400 401 </comp> EOS BOS], then the
# stream goes on with <raw> (the row's look-ahead) and ends.
ROW12 = [1, 12, 70, 71, 72, 13, 14, 400, 401, 15, 2, 1]


def _targets_and_weights(stream, num_pred, num_raw):
  row = packing.row_features(np.asarray(stream, np.int32), 12, num_pred + num_raw,
                             doc_mask=True)
  targets = np.asarray(row["targets"]).reshape(12, -1)
  w, raw_pos = loss_lib.head_weights(jnp.asarray(targets), jnp.asarray(targets != 0), num_pred,
                                     num_raw)
  return row, targets, np.asarray(w), np.asarray(raw_pos)


def test_h1_r1_targets_and_weights_by_hand():
  row, targets, w, raw_pos = _targets_and_weights(ROW12 + [12], 1, 1)
  assert row["inputs"].tolist() == ROW12
  # Column 0: main head, x_{t+1}; column 1: the raw head, x_{t+2} (beyond the main head).
  assert targets.tolist() == [
      [12, 70], [70, 71], [71, 72], [72, 13], [13, 14], [14, 400],
      [400, 401], [401, 15], [15, 2], [2, 1], [1, 12], [12, 0]]  # the stream ended: PAD
  h, r = 0.5, 0.5  # raw positions: every head 1/(H+R) = 1/2
  assert w.tolist() == [
      [h, r], [h, r], [h, r], [h, r], [h, r],
      [1, 0], [1, 0], [1, 0],  # a compressed symbol among the targets: main head only
      [h, r], [h, r], [h, r],
      [1, 0]]  # the raw head's target is PAD: main head only
  assert raw_pos.tolist() == [True] * 5 + [False] * 3 + [True] * 3 + [False]


def test_h8_r0_targets_and_weights_by_hand():
  stream = ROW12 + [12, 73, 74, 13]  # 16 ids: positions past 7 run into the stream's end
  row, targets, w, raw_pos = _targets_and_weights(stream, 8, 0)
  assert row["inputs"].tolist() == ROW12
  assert targets.tolist() == [
      [12, 70, 71, 72, 13, 14, 400, 401],
      [70, 71, 72, 13, 14, 400, 401, 15],
      [71, 72, 13, 14, 400, 401, 15, 2],
      [72, 13, 14, 400, 401, 15, 2, 1],
      [13, 14, 400, 401, 15, 2, 1, 12],
      [14, 400, 401, 15, 2, 1, 12, 73],
      [400, 401, 15, 2, 1, 12, 73, 74],
      [401, 15, 2, 1, 12, 73, 74, 13],
      [15, 2, 1, 12, 73, 74, 13, 0],
      [2, 1, 12, 73, 74, 13, 0, 0],
      [1, 12, 73, 74, 13, 0, 0, 0],
      [12, 73, 74, 13, 0, 0, 0, 0]]
  e = 1 / 8  # every head 1/H; past the stream's end the valid heads share the position's 1
  np.testing.assert_allclose(w, [
      [e] * 8, [e] * 8, [e] * 8, [e] * 8, [e] * 8, [e] * 8, [e] * 8, [e] * 8,
      [1 / 7] * 7 + [0], [1 / 6] * 6 + [0] * 2, [1 / 5] * 5 + [0] * 3, [1 / 4] * 4 + [0] * 4],
      rtol=1e-6)
  assert not raw_pos.any()


def _model(num_pred, num_raw, chunk):
  cfg = transformer.ModelConfig(
      vocab_size=512, num_ids=420, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
      head_dim=16, d_ff=64, num_pred_heads=num_pred, num_raw_pred_heads=num_raw,
      dtype=jnp.float32, attention="xla", remat="none", scan_layers=False,
      logits_chunk=chunk)
  return transformer.Transformer(cfg, rngs=nnx.Rngs(3))


@pytest.mark.parametrize("num_pred, num_raw, stream", [
    (1, 1, ROW12 + [12]), (8, 0, ROW12 + [12, 73, 74, 13]), (2, 3, ROW12 + [12, 73, 74])])
@pytest.mark.parametrize("chunk", [12, 4])  # one chunk, and the chunked (mapped) path
def test_loss_is_the_weighted_nll(num_pred, num_raw, stream, chunk):
  model = _model(num_pred, num_raw, chunk)
  row = packing.row_features(np.asarray(stream, np.int32), 12, num_pred + num_raw, True)
  batch = {k: jnp.asarray(v)[None] for k, v in row.items()}
  if batch["targets"].ndim == 2:
    batch["targets"] = batch["targets"][..., None]
  loss, m = loss_lib.compute_loss(model, batch)
  # By hand: log-softmax of each head's logits at its column.
  hid = model(batch["inputs"], batch["segment_ids"], batch["positions"])
  tg = np.asarray(batch["targets"][0])
  main = np.asarray(jax.nn.log_softmax(model.logits(hid)[0], axis=-1))  # [12, H, V]
  nll = [[-main[t, k, tg[t, k]] for k in range(num_pred)] for t in range(12)]
  if num_raw:
    raw = np.asarray(jax.nn.log_softmax(model.raw_logits(hid)[0], axis=-1))  # [12, R, 320]
    for t in range(12):
      nll[t] += [-raw[t, j, min(tg[t, num_pred + j], 319)] for j in range(num_raw)]
  w, raw_pos = loss_lib.head_weights(jnp.asarray(tg), jnp.asarray(tg != 0), num_pred, num_raw)
  want = float(np.sum(np.asarray(w) * np.asarray(nll))) / 12  # every position has a target
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(m["target_count"]) == 12
  if num_raw:
    n = int(np.sum(raw_pos))
    assert n > 0 and float(m["raw_head_count"]) == n * num_raw
    got = loss_lib.finalize_metrics(jax.device_get(m))["raw_head_loss"]
    assert got == pytest.approx(float(np.sum(np.asarray(nll)[:, num_pred:][np.asarray(raw_pos)]))
                                / (n * num_raw), rel=1e-5)
  else:
    assert "raw_head_count" not in m


def test_raw_bpb_scoring_passes_one_column():
  """eval.bpb scores head 0 with one target column: no raw heads are evaluated."""
  model = _model(1, 2, 4)
  hid = model(jnp.asarray([ROW12]), jnp.ones((1, 12), jnp.int32), jnp.arange(12)[None])
  tg = jnp.asarray([ROW12[1:] + [12]])[..., None]
  nll, raw = loss_lib.per_position_nll(model, hid, tg, 4)
  assert nll.shape == (1, 12, 1) and raw is None


def _model_section(**kw):
  m = config_lib.base_config().model
  for k, v in kw.items():
    m[k] = v
  return m


def test_raw_head_flag_is_one_look_ahead_raw_head():
  with pytest.warns(FutureWarning, match="num_raw_pred_heads"):
    assert packing.head_counts(_model_section(raw_head=True)) == (1, 1)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert packing.head_counts(_model_section(num_pred_heads=8)) == (8, 0)
    assert packing.head_counts(_model_section(num_raw_pred_heads=2)) == (1, 2)
    assert packing.head_counts({"num_pred_heads": 1, "raw_head": True}, warn=False) == (1, 1)
    assert packing.head_counts({"num_pred_heads": 2}) == (2, 0)  # recorded before the field
  with pytest.raises(ConfigError, match="model.raw_head"):
    packing.head_counts(_model_section(raw_head=True, num_raw_pred_heads=2))
  with pytest.raises(ConfigError, match="model.num_raw_pred_heads"):
    packing.head_counts(_model_section(num_raw_pred_heads=-1))
  c = config_lib.tiny_config()
  c.model.raw_head = True
  with pytest.warns(FutureWarning):
    cfg = transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))
  assert cfg.num_raw_pred_heads == 1
  params = transformer.init_params(cfg, 0)
  assert params["raw_head"].shape == (c.model.d_model, 320)  # as raw_head checkpoints
  c.model.raw_head, c.model.num_raw_pred_heads = False, 3
  cfg = transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))
  assert transformer.init_params(cfg, 0)["raw_head"].shape == (c.model.d_model, 960)


def test_rows_carry_h_plus_r_target_columns():
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 32, 2
  c.model.num_raw_pred_heads = 2
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  b = pipeline.next_batch(it)
  assert b["targets"].shape == (2, 32, 3)
  for k in range(1, 3):  # column k is the id at t + 1 + k
    np.testing.assert_array_equal(b["targets"][:, :-k, k], b["targets"][:, k:, 0])
  if hasattr(it, "close"):
    it.close()


def test_resume_compares_the_resolved_raw_heads(tmp_path):
  old = config_lib.tiny_config()
  old.model.raw_head = True  # recorded by a run before num_raw_pred_heads existed
  recorded = resume_lib.config_dict(old)
  del recorded["model"]["num_raw_pred_heads"]
  now = config_lib.tiny_config()
  now.model.num_raw_pred_heads = 1
  check = resume_lib.resume_check(now, "strict", str(tmp_path), 1)
  assert check(10, {"config": recorded}) is True  # the same model: one raw head
  now.model.num_raw_pred_heads = 0
  check = resume_lib.resume_check(now, "fresh_data", str(tmp_path), 1)
  with pytest.raises(resume_lib.IncompatibleCheckpointError, match="num_raw_pred_heads"):
    check(10, {"config": recorded})
  assert resume_lib.model_field_values(ml_collections.ConfigDict(recorded))[
      "model.num_raw_pred_heads"] == 1


def test_training_with_a_raw_head_logs_its_loss(tmp_path):
  c = small_config(num_steps=3, log_every=1)
  c.model.num_raw_pred_heads = 1
  last = trainer.train(c, str(tmp_path))
  assert last["step"] == 3 and np.isfinite(last["raw_head_loss"]) and last["raw_head_loss"] > 0
  assert np.isfinite(last["loss"]) and last["total_symbols"] == 3 * c.batch_size * c.seq_len
