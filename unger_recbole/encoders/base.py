"""Semantic text encoder interface and registry.

UNGER (paper §3.3) encodes every item's side information S (title, brand, categories, ...) with a
pretrained semantic encoder into embeddings E_S. This module defines the small interface that all
encoders share, so that the pipeline can swap the encoder with one yaml key (``encoder: minilm``,
``encoder: hf``) and cache the result by :meth:`TextEncoder.cache_key`.

An encoder is built by name::

    enc = build_encoder("minilm", batch_size=32)
    emb = enc.encode(["Maybelline Great Lash Mascara", ...])   # np.float32 [n, dim]

and :func:`encoder_params_from_config` maps the flat RecBole config keys ``encoder_<param>`` onto the
encoder's parameters.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import numpy as np

from unger_recbole.registry import Registry, with_defaults

__all__ = [
    "TextEncoder",
    "ENCODERS",
    "register_encoder",
    "register_alias",
    "build_encoder",
    "encoder_params_from_config",
]


class TextEncoder(abc.ABC):
    """Maps a list of texts to a float32 matrix ``[n, dim]``, row i for text i.

    Subclasses declare their parameters and defaults in ``DEFAULTS``; ``__init__`` rejects any other
    key with a ``ValueError`` naming the accepted ones, and stores the merged values in
    ``self.params``. Subclasses then implement :meth:`encode` and extend :meth:`cache_key` with
    everything else that changes the output (resolved model path, weights fingerprint, ...).
    """

    #: registry name, set by :func:`register_encoder`
    name: ClassVar[str] = "base"
    #: accepted parameters and their defaults
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = with_defaults("encoder", self.name, self.DEFAULTS, params)

    @classmethod
    def accepted_params(cls) -> list[str]:
        return sorted(cls.DEFAULTS)

    @abc.abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """Return ``np.float32`` array ``[len(texts), dim]`` in the order of ``texts``."""

    def cache_key(self) -> dict:
        """Everything that changes the output of :meth:`encode` (JSON-serialisable)."""
        return {"encoder": self.name, "params": dict(sorted(self.params.items()))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"


#: name -> encoder class (aliases point to the same class)
ENCODERS = Registry("encoder", TextEncoder)
register_encoder = ENCODERS.register
register_alias = ENCODERS.alias
build_encoder = ENCODERS.build


def encoder_params_from_config(config: Mapping[str, Any] | Any, name: str | None = None) -> tuple[str, dict]:
    """Read ``encoder`` and the ``encoder_<param>`` keys of a (RecBole) config.

    RecBole's config is flat and already uses keys such as ``device`` and ``batch_size``-like names,
    so the yaml files prefix every encoder parameter with ``encoder_`` (``encoder_path`` is the
    parameter ``encoder_path`` itself). Keys that are absent or ``None`` keep the encoder's default;
    only parameters the chosen encoder accepts are read. Returns ``(name, params)``.
    """

    def get(key: str) -> Any:
        try:
            return config[key]
        except (KeyError, IndexError, TypeError):
            return None

    name = name or get("encoder") or "minilm"
    cls = ENCODERS.get(name)
    if cls is None:
        raise ValueError(f"unknown encoder {name!r}; registered encoders: {sorted(ENCODERS)}")
    params: dict[str, Any] = {}
    for p in cls.DEFAULTS:
        key = p if p.startswith("encoder_") else f"encoder_{p}"
        val = get(key)
        if val is not None:
            params[p] = val
    return name, params
