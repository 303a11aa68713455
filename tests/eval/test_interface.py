"""eval.interface: raw or tokens, from the training config; mismatches are ConfigErrors."""

import os

import pytest
from helpers import small_config

from proxyjax.config import load_config
from proxyjax.errors import ConfigError
from proxyjax.eval import interface, validation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _baseline(name):
  return load_config(os.path.join(ROOT, "configs", f"{name}.py"))


def test_default_follows_the_training_config():
  assert interface.resolve("", _baseline("tokens").data) == "tokens"
  assert interface.resolve("", _baseline("bytes").data) == "raw"
  assert interface.resolve("", small_config().data) == "raw"  # mixed deflate recipe
  mixed_tokens = small_config(**{"data.view": "tokenizer"}).data  # rate 0.4 -> 0.9: raw too
  assert interface.resolve("", mixed_tokens) == "raw"
  assert interface.resolve("tokens", mixed_tokens) == "tokens"  # it saw both


def test_tokens_baseline_trains_without_sentinels():
  d = _baseline("tokens").data
  assert not interface.trained_sentinels(d) and interface.final_mode(d) == "vanilla"
  assert interface.trained_sentinels(small_config().data)  # steady mode: sentinel


@pytest.mark.parametrize("config, requested, match", [
    ("bytes", "tokens", "byte-only model"),  # a tokens eval of a byte-only model
    ("tokens", "raw", "never saw any"),  # the reverse
    ("small", "tokens", "data.view='deflate', not 'tokenizer'"),
    ("small", "bytes", "must be '', 'raw' or 'tokens'"),
])
def test_mismatch_is_a_config_error(config, requested, match):
  c = small_config() if config == "small" else _baseline(config)
  with pytest.raises(ConfigError, match=f"eval.interface.*{match}"):
    interface.resolve(requested, c.data)
  c.eval.interface = requested
  with pytest.raises(ConfigError, match="eval.interface"):  # caught before any device work
    validation.validate(c)


def test_bytes_baseline_uses_eight_heads():
  c = _baseline("bytes")
  assert c.model.num_pred_heads == 8 and c.data.view == "raw"
