"""Evaluation (docs/method.md §7), through raw bytes or a tokens baseline's own tokenizer.

Modules (import the one you need; this package imports nothing eagerly, so the
sandbox and benchmark code stay usable without JAX):

* ``bpb``          raw bits-per-byte of a model on validation documents;
* ``interface``    ``eval.interface``: raw or tokens, from the training config;
* ``generate``     KV-cache decoding through the raw-byte or the tokenizer interface,
                   never past the model's context;
* ``translation``  in-context translation, compressed symbols -> raw bytes (Fig. 11);
* ``run``          ``--mode=eval`` tasks (bpb, view_bpb, humaneval, humaneval_plus,
                   mbpp, mbpp_plus, recode, translation, compressors),
                   ``WORKDIR/eval/<task>.json``;
* ``sandbox``      sandboxed execution of generated programs (``isolation``: the
                   namespace/uid launcher that runs inside the child);
* ``differential`` verdicts decided outside the candidate's process: record the tests'
                   calls on the canonical solution, run the candidate on those inputs,
                   replay the tests on its plain values (``values``: the JSON encoding);
* ``codegen``      HumanEval / HumanEval+ / MBPP / MBPP+ problems and pass@k;
* ``passk``        the unbiased pass@k estimator;
* ``recode``       ReCode-style prompt perturbations (a module per family) and robust pass@k;
                   ``recode.released`` reads ReCode's released perturbed files;
* ``compressor_analysis``  the ``compressors`` task: stability / collision / ratio per
                   view (CLI; ``compressor_plot`` draws it; ``compressors`` is a
                   deprecated alias).
"""
