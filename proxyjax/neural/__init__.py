"""The neural compressor: a small byte LM behind the ``neural`` view (docs/method.md §6).

    byte_lm       the compressor LM: checkpoint loading, row layout, float64 fixed-shape calls
    codec         ``NeuralCompressor``: batched encoding / lockstep decoding of many
                  documents; registers how the neural view loads a compressor run
    shard_writer  the driver of ``python -m proxyjax.compress``: documents -> model ->
                  coder -> shards, resumable, in input order

What needs no model -- the settings, float64 logits -> integer tables, the window
coder and the shard format -- is part of the view (``proxyjax.views.neural``), so
the data pipeline reads precomputed shards without importing this package.
"""
