"""Semantic text encoders (paper §3.3: items' side information S -> embeddings E_S).

``build_encoder(name, **params)`` builds a registered encoder: ``hf`` (any local HuggingFace model
directory), its alias ``minilm`` (the bundled all-MiniLM-L6-v2), and ``precomputed`` (embeddings
exported from another encoder, read from an npz file). ``read_item_table`` and ``build_item_texts``
turn a RecBole ``.item`` file into one text per item. See docs/ENCODERS.md.
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
from .precomputed import PrecomputedEncoder

__all__ = [
    "ENCODERS",
    "TextEncoder",
    "build_encoder",
    "encoder_params_from_config",
    "register_alias",
    "register_encoder",
    "HFEncoder",
    "PrecomputedEncoder",
    "default_model_path",
    "model_fingerprint",
    "resolve_model_path",
    "ItemTable",
    "build_item_texts",
    "read_item_table",
    "render_field",
]
