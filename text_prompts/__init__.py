"""Words -> embeddings: prompt JSON schema and loader, frozen text encoder, embedding cache.

Installed as ``nnunetv2_medals.text_prompts``. Submodules import torch/transformers lazily.
"""
