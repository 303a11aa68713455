"""The end-of-run summary (``proxyjax.train.summary``, printed by ``trainer.train``) and the
progress bar's raw BPB for a log window without raw bytes."""

import re

from helpers import model_config, restored_params, small_config

from proxyjax import parallel, trainer
from proxyjax.eval import generate
from proxyjax.train import metrics as metrics_lib
from proxyjax.train import step as step_lib
from proxyjax.train import summary as summary_lib


def test_window_without_raw_bytes_shows_a_dash_not_zero():
  """A window whose targets were all compressed has no raw_bpb in its metric line, and the
  progress bar shows "–" for it (a window with raw bytes shows the number)."""
  c = small_config()
  window = trainer._Window()
  window.steps, window.tokens = 1, 512
  window.add({"loss": 5.0, "grad_norm": 1.0, "param_norm": 2.0, "lr": 1e-3,
              "raw_nll_sum": 0.0, "raw_count": 0.0, "comp_nll_sum": 2560.0,
              "comp_count": 512.0})
  line = window.scalars(1.0, model_config(c), 1000, None, {})
  assert "raw_bpb" not in line and "raw_loss" not in line and line["comp_loss"] == 5.0
  assert metrics_lib.progress_postfix(line) == {"loss": "5.000", "bpb": "–"}
  window = trainer._Window()
  window.steps, window.tokens = 1, 512
  window.add({"loss": 5.0, "grad_norm": 1.0, "param_norm": 2.0, "lr": 1e-3,
              "raw_nll_sum": 0.0, "raw_count": 4.0, "comp_nll_sum": 0.0, "comp_count": 0.0})
  line = window.scalars(1.0, model_config(c), 1000, None, {})
  assert line["raw_bpb"] == 0.0 and metrics_lib.progress_postfix(line)["bpb"] == "0.000"


def test_summary_text_without_validation_or_sample(tmp_path):
  c = small_config()
  lines = [{"step": 5, "loss": 3.0, "total_symbols": 100, "total_raw_bytes": 30,
            "total_compressed_symbols": 10, "total_utf8_bytes": 40}]
  text = summary_lib.format_summary(c, str(tmp_path), lines, wall_s=75.4, start_step=0,
                                    end_step=5, argv=["--config=configs/x.py", "--mode=train"])
  assert "steps 0->5 in 1 min 15 s" in text
  assert "validation raw BPB: none" in text
  assert "trained on 100 symbols; of the document symbols, 75% raw bytes (30) and 25% " \
         "compressed symbols (10)" in text
  assert f"python -m proxyjax.main --config=configs/x.py --workdir={tmp_path} --mode=eval" in text
  assert "greedy sample" not in text


def test_a_greedy_loop_at_the_end_of_the_sample_is_shown_as_a_count(tmp_path):
  c = small_config()
  c.summary_prompt = "class A:\n"
  loop = "    def f(self):\n        return 1\n" + " " * 150
  text = summary_lib.format_summary(c, str(tmp_path), [], wall_s=1.0, start_step=0,
                                    end_step=1, sample=loop)
  assert text.endswith("    | class A:\n    |     def f(self):\n    |         return 1\n"
                       "    | <then ' ' x 150: greedy decoding repeats itself; python -m "
                       "proxyjax.sample --temperature=0.8 samples instead>")
  short = "x = 1\n" + "#" * 16  # a run of 16: shown as is
  text = summary_lib.format_summary(c, str(tmp_path), [], wall_s=1.0, start_step=0,
                                    end_step=1, sample=short)
  assert text.endswith("    | x = 1\n    | " + "#" * 16)
  lines = "\n".join(f"line {i}" for i in range(20))
  assert summary_lib.sample_lines(lines) == [f"line {i}" for i in range(8)]


def test_summary_names_the_documents_validation_scored(tmp_path):
  c = small_config()
  c.eval.max_document_bytes = 8192
  lines = [{"step": 4, "eval/raw_bpb": 4.5, "eval/documents": 31.0},
           {"step": 8, "eval/raw_bpb": 3.25, "eval/documents": 31.0}]
  text = summary_lib.format_summary(c, str(tmp_path), lines, wall_s=1.0, start_step=0,
                                    end_step=8)
  assert ("validation raw BPB (bits per byte on 31 (of at most 8,192 bytes) held-out "
          "documents, lower is better; 8 = random bytes): 4.500 at step 4 -> 3.250 at step 8"
          ) in text


def check_summary(c, workdir: str, text: str) -> None:
  """The summary printed by a finished ``trainer.train(c, workdir)`` (``text``) shows the
  numbers of its metrics.jsonl, and its sample is the greedy raw-interface generation
  of ``proxyjax.eval.generate`` from the final checkpoint's parameters.

  Called by tests/train/test_train_pin.py on its 20-step run of the demo (CI time)."""
  lines = summary_lib.read_metrics(workdir)
  ev = [(x["step"], x["eval/raw_bpb"]) for x in lines if "eval/raw_bpb" in x]
  assert len(ev) >= 2
  assert (f"{ev[0][1]:.3f} at step {ev[0][0]} -> {ev[-1][1]:.3f} at step {ev[-1][0]}") in text
  last = [x for x in lines if "loss" in x][-1]
  raw, comp = int(last["total_raw_bytes"]), int(last["total_compressed_symbols"])
  assert raw > 0 and comp > 0
  m = re.search(r"trained on ([\d,]+) symbols; of the document symbols, (\d+)% raw bytes "
                r"\(([\d,]+)\) and (\d+)% compressed symbols \(([\d,]+)\)", text)
  assert m, text
  assert int(m[1].replace(",", "")) == int(last["total_symbols"])
  assert int(m[3].replace(",", "")) == raw and int(m[5].replace(",", "")) == comp
  assert int(m[2]) == round(100 * raw / (raw + comp))
  steps = summary_lib.checkpoint_steps(workdir)
  assert f"checkpoints/    steps {', '.join(map(str, steps))} " in text and workdir in text
  step, params = restored_params(workdir, c)
  assert step == c.num_steps == steps[-1]
  room = c.seq_len - len(generate.RAW.encode(c.summary_prompt.encode())) + 1
  cfg = generate.SamplingConfig(max_new_tokens=min(summary_lib.SAMPLE_MAX_BYTES, room))
  graphdef = step_lib.build(c, model_config(c), parallel.make_mesh(c.mesh.shape)).graphdef
  want = generate.generate(graphdef, params, [c.summary_prompt.encode()], cfg,
                           interface=generate.RAW, context_len=c.seq_len)[0][0]
  note = ""
  run = len(want) - len(want.rstrip(want[-1])) if want else 0
  if run > summary_lib.SAMPLE_MAX_RUN:  # a greedy loop: shown as a count
    want, note = want[:-run], f"<then {want[-1]!r} x {run}: greedy decoding repeats itself"
  shown = (c.summary_prompt + "\n".join((want + note).split("\n")[:summary_lib.SAMPLE_MAX_LINES]))
  want_block = "\n".join("    | " + x for x in shown.split("\n"))
  assert "greedy sample through the raw-byte interface" in text
  tail = text.rstrip("\n")
  if note:
    assert want_block in tail and tail.endswith("samples instead>"), (text, want)
  else:
    assert tail.endswith(want_block), (text, want)
