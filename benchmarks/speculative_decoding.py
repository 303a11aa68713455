r"""Plain vs self-speculative decoding of a trained byte model: bytes/s.

    python benchmarks/speculative_decoding.py --workdir=RUN [--max_new_tokens=200]
        [--repeats=3] [--draft_lens=0,3,1] [--temperature=0] [--top_p=1] [--seed=0]
        [--json=OUT.json]

Restores RUN's newest checkpoint (``proxyjax.train.load.load_params``) and decodes
each prompt through the raw interface, one row, greedily (or sampled with
``--temperature``/``--top_p``/``--seed``: speculative sampling), with plain decoding (one
id per forward) and with speculative decoding (``SamplingConfig.speculative``; each
``--draft_lens`` value caps the drafts per forward, 0 = every look-ahead head).
Each measurement is the decode loop of ``proxyjax.eval.generate.Stream`` after its
compile and prefill; the median of ``--repeats`` runs is reported: bytes/s,
generated ids per forward (1 + the mean accepted drafts per forward; after drafts
fail, speculative decoding takes a few plain one-id forwards before drafting again)
and, greedy, whether the ids equal plain greedy decoding's (sampled ids differ: the
draws differ, only the distribution is the same); the JSON also has the drafting
forwards and the mean drafts accepted by each. A model with one head and no raw heads drafts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

PROMPTS = (
    b"def main():\n    ",
    b"import os\nimport sys\n\n",
    b"class Foo(object):\n    def __init__(self",
    b"    for i in range(",
    b"# Copyright",
    b"    return self.",
)


def measure(loaded, prompt: bytes, cfg, repeats: int) -> dict:
  """Median decode time of ``prompt`` under ``cfg`` (one row), its ids and forwards."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from proxyjax.eval import generate as gen  # pylint: disable=g-import-not-at-top
  times, ids, forwards, steps, drafting = [], None, 0, 0, 0
  for _ in range(repeats):
    stream = gen.Stream(loaded.graphdef, loaded.params, gen.encode_prompt(prompt), cfg,
                        context_len=int(loaded.config.seq_len), mesh=loaded.mesh,
                        rules=loaded.rules, chunk_s=1e9)  # two chunks: 1 id, then the rest
    stream.compile()  # compile (first time only) and prefill: not timed
    t0 = time.perf_counter()
    ids = np.concatenate(list(stream), axis=1)[0]
    times.append(time.perf_counter() - t0)
    forwards, steps, drafting = stream.forwards, stream.steps, stream.drafting
  seconds = statistics.median(times)
  n_bytes = len(gen.completion_bytes(ids))
  return {"ids": ids, "bytes": n_bytes, "seconds": seconds, "bytes_per_s": n_bytes / seconds,
          "forwards": forwards, "ids_per_forward": steps / max(forwards, 1),
          "drafting_forwards": drafting,
          "accepted_per_drafting_forward": (steps - forwards) / max(drafting, 1)}


def run(workdir: str, max_new_tokens: int, repeats: int, draft_lens: list[int],
        temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> dict:
  """Every prompt under plain and each speculative setting; the results as a dict."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from proxyjax.eval import generate as gen  # pylint: disable=g-import-not-at-top
  from proxyjax.train import load  # pylint: disable=g-import-not-at-top
  loaded = load.load_params(workdir)
  m = loaded.model_cfg
  base = gen.SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, seed=seed)
  greedy = temperature <= 0.0
  modes = {"plain": base}
  for d in draft_lens:
    cfg = dataclasses.replace(base, speculative=True, draft_len=d)
    modes[f"speculative (drafts {gen.num_speculative_drafts(m, cfg)})"] = cfg
  rows = []
  for prompt in PROMPTS:
    res = {name: measure(loaded, prompt, cfg, repeats) for name, cfg in modes.items()}
    plain = res["plain"]["ids"]
    rows.append({"prompt": prompt.decode(), "completion": gen.completion_bytes(plain).decode(
        "utf-8", "replace")[:60], **{name: {
            "bytes_per_s": r["bytes_per_s"], "ids_per_forward": r["ids_per_forward"],
            "bytes": r["bytes"], "seconds": r["seconds"], "forwards": r["forwards"],
            "drafting_forwards": r["drafting_forwards"],
            "accepted_per_drafting_forward": r["accepted_per_drafting_forward"],
            "same_as_plain": bool(np.array_equal(r["ids"], plain)) if greedy else None}
            for name, r in res.items()}})
    print(f"{prompt!r}: " + ", ".join(f"{n} {r['bytes_per_s']:.0f} B/s "
                                      f"({r['ids_per_forward']:.2f}/fwd)"
                                      for n, r in res.items()), file=sys.stderr, flush=True)
  total = {name: {"bytes_per_s": sum(r[name]["bytes"] for r in rows)
                                 / sum(r[name]["seconds"] for r in rows),
                  "ids_per_forward": statistics.mean(r[name]["ids_per_forward"] for r in rows),
                  "all_same_as_plain": (all(r[name]["same_as_plain"] for r in rows)
                                        if greedy else None)}
           for name in modes}
  return {"workdir": workdir, "step": loaded.step, "model": {
      "d_model": m.d_model, "n_layers": m.n_layers, "num_pred_heads": m.num_pred_heads,
      "num_raw_pred_heads": m.num_raw_pred_heads, "dtype": str(m.dtype)},
      "context_len": int(loaded.config.seq_len), "max_new_tokens": max_new_tokens,
      "temperature": temperature, "top_p": top_p, "seed": seed,
      "repeats": repeats, "modes": list(modes), "prompts": rows, "total": total,
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
      "load_average": os.getloadavg()}


def markdown(result: dict) -> str:
  modes = result["modes"]
  lines = ["| prompt | " + " | ".join(f"{m}: bytes/s (ids/forward)" for m in modes) + " |",
           "|---|" + "---|" * len(modes)]
  for r in result["prompts"]:
    cells = [f"{r[m]['bytes_per_s']:.0f} ({r[m]['ids_per_forward']:.2f})"
             + (" **differs**" if r[m]["same_as_plain"] is False else "") for m in modes]
    lines.append(f"| `{r['prompt']!r}` | " + " | ".join(cells) + " |")
  t = result["total"]
  lines.append("| **all** | " + " | ".join(
      f"**{t[m]['bytes_per_s']:.0f}** ({t[m]['ids_per_forward']:.2f})" for m in modes) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="A trained run (not written to).")
  p.add_argument("--max_new_tokens", type=int, default=200)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--draft_lens", default="0,3,1",
                 help="Speculative settings: drafts per forward at most (0 = all heads).")
  p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy.")
  p.add_argument("--top_p", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default="", help="Also write the results here.")
  args = p.parse_args(argv)
  result = run(args.workdir, args.max_new_tokens, args.repeats,
               [int(x) for x in args.draft_lens.split(",") if x.strip()],
               args.temperature, args.top_p, args.seed)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  print(markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
