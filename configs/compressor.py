"""The neural compressor: a small raw-byte LM (SPEC §6), CPU-trainable in minutes.

    python -m proxyjax.main --config=configs/compressor.py --workdir=/tmp/compressor
    python -m proxyjax.compress --config=configs/compressor.py --workdir=/tmp/compressor \
        --input=stdlib --output=/tmp/neural_shards
    python -m proxyjax.main --config=configs/tiny.py --workdir=/tmp/proxyjax-neural \
        --config.data.view=neural --config.data.neural_dir=/tmp/neural_shards \
        --config.data.sources='arrayrecord:/tmp/neural_shards/*.array_record'

``configs/compressor.py:gpu`` is the accelerator-sized compressor (~19M params,
rows of 1024 bytes, 20k steps). The ``compressor`` section sets the coder (T, N, segmentation, context); see
``proxyjax.neural.settings.Settings``.
"""

from proxyjax.neural.settings import compressor_config


def get_config(size: str = "tiny"):
  """``configs/compressor.py`` (tiny, CPU minutes) or ``configs/compressor.py:gpu``."""
  return compressor_config(size or "tiny")
