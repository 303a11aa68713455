"""Hugging Face interchange: Llama export and import of proxyjax models.

``layout`` (the parameter map), ``safetensors_io`` (streamed, sharded weight files),
``tokenizer_json`` (the byte-level tokenizer), ``llama_export``, ``llama_import`` and
``verify`` (logits against proxyjax). The command line is ``proxyjax.export``.
"""
