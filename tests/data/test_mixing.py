"""Mixing modes (exact layouts), calibration, schedule and stream-position progress."""

import numpy as np
import pytest
from helpers import small_config

from proxyjax import vocab as V
from proxyjax.data import mixing, pipeline, validation
from proxyjax.data import stats as stats_lib
from proxyjax.errors import ConfigError
from proxyjax.views import SubByteView, TokenizerView

# "A" = 0x41: raw id 64 + 65 = 129; halfbyte symbols [4, 1].
R = [12, 129, 13]            # <raw> A </raw>
C = [14, 324, 321, 15]       # <comp> 4 1 </comp> with separate embedding (320 + s)


def _mixer(separate=True):
  view = SubByteView("halfbyte", 4)
  return mixing.Mixer(vocab=V.Vocab(view.alphabet_size, separate), view=view,
                      schedule=mixing.Schedule.constant(0.5, "sentinel"))


@pytest.mark.parametrize("plan, expected", [
    (mixing.Plan(((mixing.RAW,),)), [1] + R + [2]),
    (mixing.Plan(((mixing.COMP,),)), [1] + C + [2]),
    (mixing.Plan(((mixing.RAW,),), sentinels=False), [1, 129, 2]),
    (mixing.Plan(((mixing.COMP,),), sentinels=False), [1, 324, 321, 2]),
    (mixing.Plan(((mixing.RAW, mixing.COMP),)), [1] + R + C + [2]),
    (mixing.Plan(((mixing.COMP, mixing.RAW),)), [1] + C + R + [2]),
    (mixing.Plan(((mixing.RAW,), (mixing.COMP,))), [1] + R + [2, 1] + C + [2]),
    (mixing.Plan(((mixing.COMP,), (mixing.RAW,))), [1] + C + [2, 1] + R + [2]),
])
def test_document_layouts(plan, expected):
  stats = stats_lib.new_stats()
  assert _mixer().format(b"A", plan, stats).tolist() == expected
  assert stats["ids"] == len(expected)


def test_shared_embedding_offsets():
  ids = _mixer(separate=False).format(b"A", mixing.Plan(((mixing.COMP,),)), {})
  assert ids.tolist() == [1, 14, 64 + 4, 64 + 1, 15, 2]


# (rate, mode, u_view, u_order) -> expected plan segments
@pytest.mark.parametrize("rate, mode, u_view, u_order, expected", [
    (0.9, "sentinel", 0.89, 0.0, (("comp",),)),
    (0.9, "sentinel", 0.91, 0.0, (("raw",),)),
    (0.9, "vanilla", 0.5, 0.0, (("comp",),)),
    # p > 0.5: p' = 2 - 1/0.9 = 0.888..; raw-drawn documents become pairs.
    (0.9, "translation_raw_compressed", 0.88, 0.0, (("comp",),)),
    (0.9, "translation_raw_compressed", 0.89, 0.9, (("raw", "comp"),)),
    (0.9, "translation_compressed_raw", 0.95, 0.1, (("comp", "raw"),)),
    (0.9, "translation_random", 0.95, 0.49, (("raw", "comp"),)),
    (0.9, "translation_random", 0.95, 0.51, (("comp", "raw"),)),
    # p <= 0.5: p' = 0.4/0.6 = 0.666..; compressed-drawn documents become pairs.
    (0.4, "translation_random", 0.66, 0.2, (("raw", "comp"),)),
    (0.4, "translation_random", 0.67, 0.2, (("raw",),)),
    (0.4, "parallel_raw_compressed", 0.1, 0.9, (("raw",), ("comp",))),
    (0.4, "parallel_compressed_raw", 0.1, 0.1, (("comp",), ("raw",))),
    (0.4, "parallel_random", 0.1, 0.7, (("comp",), ("raw",))),
    (0.4, "parallel_random", 0.1, 0.3, (("raw",), ("comp",))),
    (0.0, "translation_random", 0.0, 0.0, (("raw",),)),
    (1.0, "translation_random", 0.999, 0.0, (("comp",),)),
    (0.5, "translation_random", 0.999, 0.0, (("raw", "comp"),)),
])
def test_plan_document(rate, mode, u_view, u_order, expected):
  assert mixing.plan_document(rate, mode, u_view, u_order).segments == expected


def test_calibration_formulas():
  assert mixing.calibrate(0.9, "translation_random") == pytest.approx((2 - 1 / 0.9, "raw"))
  assert mixing.calibrate(0.4, "parallel_random") == pytest.approx((0.4 / 0.6, "comp"))
  assert mixing.calibrate(0.6, "sentinel") == (0.6, None)
  assert mixing.expected_pair_fraction(0.4, "translation_random") == pytest.approx(2 / 3)
  assert mixing.expected_pair_fraction(0.6, "translation_random") == pytest.approx(2 / 3)
  assert mixing.expected_pair_fraction(0.9, "translation_random") == pytest.approx(1 / 9)


@pytest.mark.parametrize("mode", ["sentinel", "vanilla", "translation_random", "parallel_random",
                                  "translation_raw_compressed", "parallel_compressed_raw"])
@pytest.mark.parametrize("p", [0.1, 0.4, 0.6, 0.9])
def test_compressed_view_fraction_within_one_percent(mode, p):
  plans = list(mixing.iterate_plans(mixing.Schedule.constant(p, mode), seed=7, n=20_000))
  views = [v for plan in plans for v in plan.views]
  frac = views.count("comp") / len(views)
  assert abs(frac - p) < 0.01, (mode, p, frac)
  pairs = sum(len(plan.views) == 2 for plan in plans) / len(plans)
  assert abs(pairs - mixing.expected_pair_fraction(p, mode)) < 0.015


def test_draws_are_seeded():
  a = [p.segments for p in mixing.iterate_plans(mixing.Schedule.constant(0.5, "translation_random"), 1, 200)]
  b = [p.segments for p in mixing.iterate_plans(mixing.Schedule.constant(0.5, "translation_random"), 1, 200)]
  c = [p.segments for p in mixing.iterate_plans(mixing.Schedule.constant(0.5, "translation_random"), 2, 200)]
  assert a == b and a != c
  u = mixing.uniforms(mixing.stream_key(0, 0), 0, 10_000)
  assert 0.0 <= min(u) and max(u) < 1.0 and abs(np.mean(u) - 0.5) < 0.01


def test_schedule_paper_recipe():
  s = mixing.Schedule(initial_rate=0.4, peak_rate=0.9, final_rate=0.5, warmup_steps=100,
                      steady_steps=50, decay_steps=10, initial_mode="translation_random",
                      steady_mode="sentinel", final_mode="parallel_random")
  assert s.at(0) == (0.4, "translation_random")
  assert s.at(50) == (pytest.approx(0.65), "translation_random")
  assert s.at(100) == (0.9, "sentinel")
  assert s.at(149) == (0.9, "sentinel")
  assert s.at(155) == (pytest.approx(0.7), "parallel_random")
  assert s.at(10**6) == (0.5, "parallel_random")
  assert mixing.Schedule.constant(0.3, "vanilla").at(12345) == (0.3, "vanilla")


def test_step_from_stream_position():
  m = mixing.Mixer(vocab=V.Vocab(0), view=None, schedule=mixing.Schedule(), symbols_per_step=100)
  assert m.step_at(0, 0, 1) == 0 and m.step_at(99, 0, 1) == 0 and m.step_at(100, 0, 1) == 1
  # Worker 1 of 3: its local batches are the process's batches 1, 4, 7, ...
  assert [m.step_at(s, 1, 3) for s in (0, 100, 250)] == [1, 4, 7]


def test_view_failure_falls_back_to_raw(tokenizer_path):
  view = TokenizerView(tokenizer_path)
  m = mixing.Mixer(vocab=V.Vocab(view.alphabet_size), view=view,
                   schedule=mixing.Schedule.constant(1.0, "sentinel"))
  stats = stats_lib.new_stats()
  ids = m.format(b"\xff\xfeA", mixing.Plan(((mixing.COMP,),)), stats)
  assert ids.tolist() == [1, 12, 64 + 0xFF, 64 + 0xFE, 129, 13, 2]
  assert stats["view_fallback_raw"] == 1 and stats["views:raw"] == 1


# --- data.shared_ids (vanilla mode: byte-valued symbols on the byte ids 64 + s) -----------


def test_shared_ids_put_vanilla_symbols_on_byte_ids():
  view = SubByteView("halfbyte", 4)
  mixer = mixing.Mixer(vocab=V.for_view(view.alphabet_size, separate_embedding=True,
                                        shared_ids=True),
                       view=view, schedule=mixing.Schedule.constant(1.0, "vanilla"))
  comp = mixer.format(b"A", mixing.Plan(((mixing.COMP,),), sentinels=False), {})
  raw = mixer.format(b"A", mixing.Plan(((mixing.RAW,),), sentinels=False), {})
  assert comp.tolist() == [1, 64 + 4, 64 + 1, 2]  # [BOS, 64+s..., EOS]: no sentinels
  assert raw.tolist() == [1, 129, 2]
  assert mixer.vocab.size == 384  # 320 ids used: no separate compressed embedding rows


@pytest.mark.parametrize("overrides, match", [
    ({"data.shared_ids": True}, "vanilla mode"),  # the tiny recipe's schedule: translation...
    ({"data.shared_ids": True, "data.schedule.enabled": False, "data.mode": "sentinel"},
     "data.mode = sentinel"),
    ({"data.shared_ids": True, "data.schedule.enabled": False, "data.mode": "vanilla",
      "data.view": "tokenizer"}, "byte-valued view"),
    ({"data.shared_ids": True, "data.schedule.enabled": False, "data.mode": "vanilla",
      "data.view": "raw"}, "needs a compressed view"),
])
def test_shared_ids_checks(overrides, match):
  with pytest.raises(ConfigError, match=f"data.shared_ids.*{match}"):
    validation.validate_data(small_config(**overrides))


def test_shared_ids_in_vanilla_mode_is_accepted():
  validation.validate_data(small_config(**{
      "data.shared_ids": True, "data.schedule.enabled": False, "data.mode": "vanilla",
      "data.view": "deflate"}))


def test_pipeline_vocab_follows_shared_ids():
  c = small_config(**{"data.shared_ids": True, "data.schedule.enabled": False,
                      "data.mode": "vanilla", "data.view": "halfbyte", "data.rate": 1.0})
  validation.validate_data(c)
  v = pipeline.build_vocab(c)
  assert v.compressed_offset == 64 and v.size == 384
