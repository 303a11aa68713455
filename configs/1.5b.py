r"""Ladder rung 1.5b (SPEC §5): tokenizer proxy + raw head, ~2M symbols per step, 50k steps.

Point it at your corpus: --config.data.sources='jsonl:/data/code/*.jsonl'.

Recommended meshes (launch/README.md; `--mode=plan` estimates, not measured):
  8 x H100 80 GB nodes, one process per node, 1 node: mesh.shape=(1,8,1)
  TPU v5p-32 (16 chips): mesh.shape=(1,16,1)
Check another layout with: python -m proxyjax.main --config=configs/1.5b.py --mode=plan \
    --plan.devices=N --plan.device_memory_gb=80 --config.mesh.shape='(...)'
"""

from proxyjax.config import ladder_config


def get_config():
  return ladder_config("1.5b")
