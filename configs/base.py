"""The base config (fields documented in proxyjax/config/schema.py)."""

from proxyjax.config import base_config


def get_config():
  return base_config()
