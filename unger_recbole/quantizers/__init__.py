"""Item quantizers: embeddings [n_items, dim] -> prefix-free int64 code table [n_items, max_len].

Registered quantizers (``properties/quantizer/<name>.yaml`` holds each one's parameters):

* ``hkmeans`` -- hierarchical k-means, the paper's unified codes (§3.3);
* ``rqvae``   -- TIGER-style RQ-VAE with a disambiguation token (§4.6 ablation);
* ``random``  -- random distinct codes (§4.6 ablation).
"""

from .base import (
    PAD,
    QUANTIZERS,
    Quantizer,
    build_quantizer,
    code_lengths,
    register_quantizer,
    validate_codes,
)
from . import hkmeans, random_codes, rqvae  # noqa: F401  (register the quantizers)

__all__ = [
    "PAD",
    "QUANTIZERS",
    "Quantizer",
    "build_quantizer",
    "code_lengths",
    "register_quantizer",
    "validate_codes",
]
