"""``python -m proxyjax.sample``: streamed continuations equal eval generation's."""

import io
import os
import subprocess
import sys

import pytest

from proxyjax import config as config_lib
from proxyjax import rundir
from proxyjax import vocab as V
from proxyjax.data import pipeline
from proxyjax.errors import UserError
from proxyjax.eval import codegen, sampling
from proxyjax.eval import generate as gen
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import load as load_lib
from proxyjax.train import resume as resume_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTEXT = 64
PROMPT = "naïve → ünïcode:".encode()  # multi-byte characters


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run directory with one checkpoint (step 5) of a random tiny model with 2 heads,
  its parameters sharded over the 8 fake devices (FSDP), context 64."""
  workdir = str(tmp_path_factory.mktemp("run"))
  c = config_lib.tiny_config()
  c.seq_len = CONTEXT
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 32, 1, 2, 2, 16, 64
  m.num_pred_heads = 2
  c.mesh.shape = (1, -1, 1)
  vocab = pipeline.build_vocab(c)
  params = transformer.init_params(transformer.ModelConfig.from_config(c, vocab), 0)
  rundir.write_run_config(c, workdir)
  ck = ckpt_lib.Checkpointer(rundir.checkpoint_dir(workdir), async_save=False)
  ck.save(5, {"params": params}, None, {"step": 5, "config": resume_lib.config_dict(c),
                                        rundir.VOCAB_KEY: rundir.vocab_record(vocab)})
  ck.close()
  return workdir


@pytest.fixture(scope="module")
def loaded(run_dir):
  return load_lib.load_params(run_dir)


class _Out(io.BytesIO):
  """Records each flushed write (the stream's chunks)."""

  def __init__(self):
    super().__init__()
    self.writes = []

  def write(self, data):
    self.writes.append(bytes(data))
    return super().write(data)


def _sample(loaded, **kw):
  out, err = _Out(), io.StringIO()
  stats = sampling.run(sampling.Options(workdir="unused", **kw), out, err, loaded=loaded)
  return out, err.getvalue(), stats


def _eval_generation(loaded, prompt, **kw):
  """What --mode=eval's generation gives ``prompt`` (raw interface, the run's context)."""
  return gen.generate(loaded.graphdef, loaded.params, [prompt],
                      gen.SamplingConfig(max_new_tokens=24, **kw), mesh=loaded.mesh,
                      rules=loaded.rules, context_len=CONTEXT)[0][0]


def test_greedy_sample_is_eval_generation_streamed(loaded):
  """Greedy: exactly eval generation's text (invalid bytes as U+FFFD), written in more
  than one chunk; bytes/s on stderr. A prompt over the context: cut from the left with
  a warning, then the continuation of the cut prompt."""
  expected = _eval_generation(loaded, PROMPT)
  assert loaded.params["blocks"]["wq"].sharding.mesh.size == 8  # decoded sharded
  out, err, stats = _sample(loaded, prompt=PROMPT, max_new_tokens=24)
  assert out.getvalue().decode("utf-8") == expected and len(expected) >= 10
  assert len([w for w in out.writes if w]) >= 2  # streamed, not written once at the end
  assert stats["ids"] == 24 and 0 < stats["bytes"] <= 24 and stats["bytes_per_s"] > 0
  assert "bytes/s" in err and err.count("\n") == 1, err
  long = bytes(range(32, 127)) + PROMPT
  with pytest.warns(UserWarning, match="longer than the model's context"):
    expected = _eval_generation(loaded, long)
  out, err, _ = _sample(loaded, prompt=long, max_new_tokens=24)
  assert out.getvalue().decode("utf-8") == expected and len(expected) == 1  # a full context
  assert "sample: warning: 1 of 1 prompts are longer than the model's context of 64" in err


def test_samples_with_stops(loaded):
  """Sampled: sample 1 is eval's (n_samples 1, the same seed), cut at the earliest stop;
  two samples, each under a header."""
  kw = dict(temperature=1.0, top_p=0.9, seed=3)
  free = _eval_generation(loaded, PROMPT, **kw)
  stops = (free[6:8], "never")
  out, _, _ = _sample(loaded, prompt=PROMPT, max_new_tokens=24, stop=stops, num_samples=2,
                      **kw)
  first = codegen.truncate_completion(free, stops)
  assert len(first) < len(free)
  text = out.getvalue().decode("utf-8")
  assert text.startswith(f"--- sample 1/2 ---\n{first}\n--- sample 2/2 ---\n")
  assert text != f"--- sample 1/2 ---\n{first}\n--- sample 2/2 ---\n{first}"  # other draws


def test_speculative_sample_is_eval_generation_streamed(loaded):
  """--speculative with a temperature (speculative sampling): eval generation's sample
  with eval.speculative, the same seed (the same decode loop, streamed)."""
  kw = dict(temperature=1.0, top_p=0.9, seed=4, speculative=True)
  expected = _eval_generation(loaded, PROMPT, **kw)
  out, _, stats = _sample(loaded, prompt=PROMPT, max_new_tokens=24, **kw)
  assert out.getvalue().decode("utf-8") == expected and stats["ids"] > 0


def test_texts_decode_split_characters_invalid_bytes_and_stops():
  ids = list(V.bytes_to_ids("é€x".encode() + b"\xff" + "ok".encode()))
  chunks = [[i] for i in ids] + [[V.RAW_CLOSE, ids[0]]]  # one id per chunk, then the end
  pieces = list(sampling.texts(chunks, gen.RAW, ()))
  assert "".join(t for _, t in pieces) == "é€x\ufffdok"
  assert [t for _, t in pieces[:3]] == ["", "é", ""]  # 'é' whole once its 2nd byte came
  text = "".join(t for _, t in sampling.texts([list(V.bytes_to_ids(b"xxabyz"))], gen.RAW,
                                              ("aby", "b")))
  assert text == codegen.truncate_completion("xxabyz", ("aby", "b")) == "xx"
  # A stop that may still complete is held back; one that cannot is released.
  flt = sampling.StopFilter(["abc", "b"])
  assert flt.feed("xa") == "x" and flt.feed("bd") == "a" and flt.stopped
  assert sampling.parse_stops([r"\n\n,x\,y", "z"]) == ("\n\n", "x,y", "z")
  # Through a tokenizer (a baseline's interface): the new bytes of the whole decoding.
  tokens = gen.tokens_interface(_ByteTokens(), V.Vocab(256, True), sentinels=True)
  chunks = [[320 + ord("h")], [320 + ord("i"), V.COMP_CLOSE, 320 + ord("!")]]
  assert [d for d, _ in sampling.texts(chunks, tokens, ())] == [b"h", b"i", b""]


class _ByteTokens:
  """A stand-in tokenizer view: token t = byte t."""

  def encode(self, data):
    return list(data)

  def decode(self, symbols):
    return bytes(int(t) for t in symbols)


def test_bad_input_is_one_user_error(run_dir, tmp_path):
  with pytest.raises(UserError, match="no checkpoint in"):
    sampling.run(sampling.Options(workdir=str(tmp_path)), io.BytesIO(), io.StringIO())
  with pytest.raises(UserError, match=r"no checkpoint at step 3 .*steps: 5"):
    sampling.run(sampling.Options(workdir=run_dir, step=3), io.BytesIO(), io.StringIO())
  with pytest.raises(UserError, match="not both"):
    sampling.read_prompt("a", "b", io.BytesIO())
  raw = b"\xff\xfe not UTF-8"
  (tmp_path / "p").write_bytes(raw)
  assert sampling.read_prompt(None, str(tmp_path / "p"), io.BytesIO()) == raw  # as is
  assert sampling.read_prompt(None, "-", io.BytesIO(raw)) == raw


def test_command_line_streams(run_dir, loaded):
  """The real command: prompt on stdin, greedy speculative, stops (escaped comma)."""
  free = _eval_generation(loaded, PROMPT)
  stop = free[4:6]
  expected = codegen.truncate_completion(free, (stop, "x,y"))
  escaped = stop.replace("\\", "\\\\").replace(",", "\\,")
  out = subprocess.run(_command(run_dir, f"--stop={escaped}", "--stop=x\\,y", "--speculative"),
                       cwd=ROOT, input=PROMPT, capture_output=True, timeout=240)
  assert out.returncode == 0, out.stderr.decode()[-2000:]
  assert out.stdout.decode("utf-8") == expected
  assert b"bytes/s" in out.stderr and b"per forward" in out.stderr


@pytest.mark.slow  # CI: test_bad_input_is_one_user_error (the messages), tests/commands (cli.run)
def test_command_line_fails_in_one_line(run_dir):
  bad = subprocess.run(_command(run_dir, "--step=7"), cwd=ROOT, input=b"", capture_output=True,
                       timeout=240)
  lines = bad.stderr.decode().splitlines()
  assert bad.returncode == 2 and lines == [
      f"proxyjax.sample: error: no checkpoint at step 7 in {run_dir}/checkpoints (steps: 5)"]


def _command(run_dir, *args):
  return [sys.executable, "-m", "proxyjax.sample", f"--workdir={run_dir}",
          "--max_new_tokens=24", "--temperature=0", *args]


def test_stats_line_starts_a_line_when_text_and_stats_share_a_file(tmp_path):
  """``2>&1`` into one file: the bytes/s line must not run on from the sample's last line."""
  path = tmp_path / "both.txt"
  with open(path, "wb") as out, open(path, "ab") as err, open(tmp_path / "e.txt", "wb") as other:
    assert sampling._same_destination(out, err)
    assert not sampling._same_destination(out, other)
  assert not sampling._same_destination(io.BytesIO(), io.StringIO())
