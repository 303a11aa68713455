"""The neural compressor behind the ``neural`` view (SPEC §6).

    settings    ``Settings`` (T, N, precision, segmentation, context) and the
                compressor's training config (``configs/compressor.py``)
    quantize    float64 logits -> integer frequency tables, bit-exact everywhere
                except at flagged (fragile) positions, which stay literal
    coder       segmentation, equal-information windows, N-bit packing; decoder
    byte_lm     the compressor LM: checkpoint loading, row layout, float64 fixed-shape calls
    compressor  batched encoding / lockstep decoding of many documents
    shards      the ArrayRecord shards written by ``python -m proxyjax.compress`` and
                the one parser of their records (numpy-only)
    shard_writer  the driver of ``python -m proxyjax.compress``: documents -> model ->
                coder -> shards, resumable, in input order
"""
