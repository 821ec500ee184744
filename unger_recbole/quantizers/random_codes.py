"""Random codes (UNGER paper §4.6 "Choice of quantization methods", the "random assignment" arm).

Every item gets a distinct fixed-length code whose tokens are uniform in ``[0, codebook_size)``:
codes are drawn without replacement from the ``K ** code_length`` possible codes with a seeded
``numpy.random.Generator``, so they carry no information about the items. Equal lengths make the
table prefix-free as soon as codes are distinct. ``code_length: null`` uses the shortest length
with ``K ** L >= n_items``.
"""

from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

from .base import Quantizer, register_quantizer

_INT_SAMPLING_LIMIT = 1 << 62  # below this, sample integer ids of codes without replacement


def min_code_length(n_items: int, codebook_size: int) -> int:
    """Smallest ``L >= 1`` with ``codebook_size ** L >= n_items``."""
    length, capacity = 1, codebook_size
    while capacity < n_items:
        length += 1
        capacity *= codebook_size
    return length


@register_quantizer("random")
class RandomQuantizer(Quantizer):
    """Uniformly random, distinct codes of length ``code_length`` (the embeddings are ignored)."""

    defaults: Dict[str, Any] = {
        "codebook_size": 256,
        "code_length": None,
        "seed": 2020,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        length = self.params["code_length"]
        if length is not None and (isinstance(length, bool) or int(length) < 1):
            raise ValueError(f"code_length must be a positive integer or null, got {length!r}")

    def quantize(self, embeddings: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        n = self._check_embeddings(embeddings).shape[0]
        K = self.codebook_size
        length = self.params["code_length"]
        length = min_code_length(n, K) if length is None else int(length)
        capacity = K**length  # python int, exact
        if capacity < n:
            raise ValueError(
                f"random codes of length {length} over codebook_size={K} give only {capacity} "
                f"distinct codes for {n} items; raise code_length (>= {min_code_length(n, K)}), "
                f"raise codebook_size, or set code_length: null"
            )
        rng = np.random.default_rng(int(self.params["seed"]))
        if capacity <= _INT_SAMPLING_LIMIT:
            ids = rng.choice(capacity, size=n, replace=False)
            codes = np.empty((n, length), dtype=np.int64)
            for pos in range(length - 1, -1, -1):
                codes[:, pos] = ids % K
                ids = ids // K
        else:
            # huge code space: draw uniformly and redraw the (rare) duplicates
            codes = rng.integers(0, K, size=(n, length), dtype=np.int64)
            while True:
                _, first = np.unique(codes, axis=0, return_index=True)
                dup = np.setdiff1d(np.arange(n), first)
                if dup.size == 0:
                    break
                codes[dup] = rng.integers(0, K, size=(dup.size, length), dtype=np.int64)
        return self._finish(codes, start, code_length=length, code_space=float(capacity))
