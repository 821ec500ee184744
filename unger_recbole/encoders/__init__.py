"""Semantic text encoders (paper §3.3: items' side information S -> embeddings E_S).

``build_encoder(name, **params)`` builds a registered encoder: ``hf`` (any local HuggingFace model
directory) and its alias ``minilm`` (the bundled all-MiniLM-L6-v2). ``read_item_table`` and
``build_item_texts`` turn a RecBole ``.item`` file into one text per item. See docs/ENCODERS.md.
"""

from .base import (
    ENCODERS,
    TextEncoder,
    build_encoder,
    encoder_params_from_config,
    register_alias,
    register_encoder,
)
from .hf import HFEncoder, default_model_path, model_fingerprint, resolve_model_path
from .item_text import ItemTable, build_item_texts, read_item_table, render_field

__all__ = [
    "ENCODERS",
    "TextEncoder",
    "build_encoder",
    "encoder_params_from_config",
    "register_alias",
    "register_encoder",
    "HFEncoder",
    "default_model_path",
    "model_fingerprint",
    "resolve_model_path",
    "ItemTable",
    "build_item_texts",
    "read_item_table",
    "render_field",
]
