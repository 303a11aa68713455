"""Evaluation, always through raw bytes (SPEC §7).

Modules (import the one you need; this package imports nothing eagerly, so the
sandbox and benchmark code stay usable without JAX):

* ``bpb``          raw bits-per-byte of a model on validation documents;
* ``generate``     KV-cache decoding through the raw-byte interface;
* ``run``          ``--mode=eval`` tasks (bpb, view_bpb, humaneval, humaneval_plus,
                   mbpp, mbpp_plus, recode, compressors), ``WORKDIR/eval/<task>.json``;
* ``sandbox``      sandboxed execution of generated programs (``isolation``: the
                   namespace/uid launcher that runs inside the child);
* ``differential`` verdicts decided outside the candidate's process: record the tests'
                   calls on the canonical solution, run the candidate on those inputs,
                   replay the tests on its plain values (``values``: the JSON encoding);
* ``codegen``      HumanEval / HumanEval+ / MBPP / MBPP+ problems and pass@k;
* ``passk``        the unbiased pass@k estimator;
* ``recode``       ReCode-style prompt perturbations (a module per family) and robust pass@k;
* ``compressor_analysis``  the ``compressors`` task: stability / collision / ratio per
                   view (CLI; ``compressor_plot`` draws it; ``compressors`` is a
                   deprecated alias).
"""
