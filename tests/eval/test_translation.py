"""The translation task (paper Fig. 11): exact prompt ids, metrics by hand."""

import numpy as np
import pytest
from helpers import small_config

from proxyjax import vocab as V
from proxyjax.errors import ConfigError
from proxyjax.eval import generate, translation, validation
from proxyjax.eval import run as eval_run
from proxyjax.views import SubByteView


def test_cut_at_a_utf8_boundary():
  text = "aé€😀".encode()  # 1 + 2 + 3 + 4 bytes
  cuts = {k: translation.cut_utf8(text, k) for k in range(len(text) + 1)}
  assert cuts[0] == b"" and cuts[1] == cuts[2] == b"a"
  assert cuts[3] == cuts[4] == cuts[5] == "aé".encode()
  assert cuts[6] == cuts[7] == cuts[8] == cuts[9] == "aé€".encode()
  assert cuts[10] == text
  assert translation.cut_utf8(b"\xff\xfe\xfd", 2) == b"\xff\xfe"  # not UTF-8: cut anywhere


def test_prompt_ids_are_exact():
  view = SubByteView("halfbyte", 4)  # "A" = 0x41 -> symbols [4, 1]
  separate = translation.prompt_ids(view.encode(b"A"), V.Vocab(16, True))
  assert separate.tolist() == [V.BOS, V.COMP_OPEN, 320 + 4, 320 + 1, V.COMP_CLOSE, V.RAW_OPEN]
  shared = translation.prompt_ids(view.encode(b"A"), V.Vocab(16, False))
  assert shared.tolist() == [1, 14, 64 + 4, 64 + 1, 15, 12]


def test_score_by_hand():
  assert translation.score(b"abcd", b"abcd") == (True, 4)
  assert translation.score(b"abcd", b"abxd") == (False, 3)
  assert translation.score(b"abcd", b"ab") == (False, 2)  # missing bytes are wrong
  assert translation.score(b"ab", b"abcd") == (False, 2)  # extra bytes: inexact only


def _fake_generate_ids(outputs, calls):
  """generate.generate_ids stand-in: the raw ids of outputs[i] for the i-th prompt."""

  def fake(graphdef, params, prompts, cfg, *, interface, batch_size=8, mesh=None, rules=None,
           context_len=None):
    del graphdef, params, mesh, rules
    calls.append({"prompts": [np.asarray(p).tolist() for p in prompts], "cfg": cfg,
                  "interface": interface, "batch_size": batch_size, "context_len": context_len})
    rows = []
    for out in outputs[:len(prompts)]:
      row = np.zeros(cfg.max_new_tokens, np.int32)
      ids = out if isinstance(out, list) else V.bytes_to_ids(out).tolist() + [V.RAW_CLOSE]
      row[:len(ids)] = ids[:cfg.max_new_tokens]
      rows.append([row])
    return rows

  return fake


def test_translate_prompts_and_metrics(monkeypatch):
  view = SubByteView("halfbyte", 4)
  vocab = V.Vocab(16, True)
  docs = [b"AB", b"hello", "abcdé".encode(), b"xyz"]
  # exact; one byte wrong; cut to "abcd" (5 bytes would split the é), decoded up to the
  # end of the row without </raw>; one byte then EOS (what follows is not read)
  outputs = [b"AB", b"hallo", V.bytes_to_ids(b"abcd").tolist(),
             V.bytes_to_ids(b"x").tolist() + [V.EOS, 64 + ord("y")]]
  calls = []
  monkeypatch.setattr(generate, "generate_ids", _fake_generate_ids(outputs, calls))
  res = translation.translate(None, None, docs, view, vocab, max_bytes=5, batch_size=3,
                              context_len=64)
  (call,) = calls
  expected_prompts = []
  for d in (b"AB", b"hello", b"abcd", b"xyz"):
    sym = view.encode(d)
    expected_prompts.append([V.BOS, V.COMP_OPEN] + (320 + sym).tolist()
                            + [V.COMP_CLOSE, V.RAW_OPEN])
  assert call["prompts"] == expected_prompts
  assert call["cfg"].temperature == 0.0 and call["cfg"].n == 1  # greedy
  assert call["cfg"].max_new_tokens == 6  # longest document + </raw>
  assert call["interface"].allowed == generate.RAW.allowed  # decodes raw bytes
  assert call["interface"].prefix == (V.BOS, V.COMP_OPEN)  # kept if a prompt is cut
  assert call["context_len"] == 64 and call["batch_size"] == 3
  assert res["documents"] == 4 and res["bytes"] == 2 + 5 + 4 + 3
  assert res["exact_match"] == pytest.approx(2 / 4)
  assert res["byte_accuracy"] == pytest.approx((2 + 4 + 4 + 1) / 14)
  assert [d["correct_bytes"] for d in res["per_document"]] == [2, 4, 4, 1]
  assert [d["exact"] for d in res["per_document"]] == [True, False, True, False]
  assert res["symbols"] == sum(len(p) - 4 for p in expected_prompts)


def test_translation_task_during_eval(monkeypatch):
  c = small_config(**{"eval.tasks": "translation", "eval.train_tasks": "bpb,translation",
                      "eval.translation_docs": 2, "eval.translation_max_bytes": 8})
  validation.validate(c)
  calls = []
  monkeypatch.setattr(generate, "generate_ids", _fake_generate_ids([b"", b""], calls))
  ctx = eval_run.Context(c, None, None, 3)
  res = eval_run.run_tasks(ctx, ["translation"], None)["translation"]
  docs = [translation.cut_utf8(d, 8) for d in ctx.documents()[:2]]
  view, vocab = ctx.view_and_vocab()
  assert calls[0]["prompts"] == [translation.prompt_ids(view.encode(d), vocab).tolist()
                                 for d in docs]
  assert res["view"] == "deflate" and res["documents"] == 2 and res["exact_match"] == 0.0
  assert res["views"]["deflate"]["byte_accuracy"] == 0.0
  assert calls[0]["context_len"] == c.seq_len


@pytest.mark.parametrize("field, value", [("eval.translation_docs", 0),
                                          ("eval.translation_max_bytes", -1)])
def test_translation_fields_are_checked(field, value):
  with pytest.raises(ConfigError, match=field):
    validation.validate(small_config(**{field: value}))
