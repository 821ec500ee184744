"""Quantizer interface, registry and code-table validation.

A quantizer turns item embeddings ``[n_items, dim]`` into an item -> code table: an int64 array
``[n_items, max_len]`` whose row ``i`` is the code (a sequence of tokens in ``[0, codebook_size)``)
of item ``i``, right-padded with ``-1`` when that code is shorter than ``max_len``.

Whatever the method, the table must let a prefix trie decode every item unambiguously, so
:func:`validate_codes` enforces, and every quantizer checks on its own output:

* every code is non-empty and its tokens lie in ``[0, codebook_size)``;
* padding ``-1`` only occurs after the end of a code;
* no two items share a code;
* no code is a proper prefix of another item's code (prefix-free).

Quantizers are registered by name with :func:`register_quantizer` and built with
:func:`build_quantizer`; their parameters are exactly the keys of
``properties/quantizer/<name>.yaml`` (the class attribute ``defaults`` mirrors that file).
"""

from __future__ import annotations

import abc
import time
from collections import Counter
from typing import Any, Dict

import numpy as np

from unger_recbole.registry import Registry, with_defaults

PAD = -1

def resolve_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when a GPU is available (else ``"cpu"``); check the others."""
    import torch

    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available; "
                "use device: cpu or device: auto"
            )
        return device
    if device == "cpu":
        return device
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<n>' or 'auto', got {device!r}")


def code_lengths(codes: np.ndarray) -> np.ndarray:
    """Length of every code (number of tokens before the first ``-1``)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array [n_items, max_len], got shape {codes.shape}")
    is_pad = codes == PAD
    has_pad = is_pad.any(axis=1)
    return np.where(has_pad, is_pad.argmax(axis=1), codes.shape[1]).astype(np.int64)


def _fmt(code: np.ndarray) -> str:
    return "(" + ", ".join(str(int(t)) for t in code if t != PAD) + ")"


def validate_codes(codes: np.ndarray, codebook_size: int) -> None:
    """Check that ``codes`` is a valid, trie-decodable item -> code table.

    Raises ``ValueError`` naming the offending items when the table is not a 2-D integer array,
    holds an empty code, a token outside ``[0, codebook_size)``, a ``-1`` followed by a token,
    two items with the same code, or a code that is a proper prefix of another item's code.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array [n_items, max_len], got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must have an integer dtype, got {codes.dtype}")
    n, max_len = codes.shape
    if n == 0:
        return
    if max_len == 0:
        raise ValueError("codes have max_len 0: every item has an empty code")
    codebook_size = int(codebook_size)

    bad = (codes < PAD) | (codes >= codebook_size)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{int(bad.sum())} code token(s) out of range [0, {codebook_size}) "
            f"(padding must be {PAD}); e.g. item {i} position {j} has value {codes[i, j]}"
        )

    is_pad = codes == PAD
    if is_pad[:, 0].any():
        items = np.flatnonzero(is_pad[:, 0])
        raise ValueError(
            f"{items.size} item(s) have an empty code (first token is {PAD}); e.g. items "
            f"{items[:5].tolist()}"
        )
    # padding must be a suffix: once -1 appears, everything after it is -1
    pad_seen = np.logical_or.accumulate(is_pad, axis=1)
    gap = pad_seen & ~is_pad
    if gap.any():
        i = int(np.flatnonzero(gap.any(axis=1))[0])
        raise ValueError(
            f"{int(gap.any(axis=1).sum())} code(s) have {PAD} in the middle (padding must only "
            f"follow the end of a code); e.g. item {i}: {codes[i].tolist()}"
        )
    if n == 1:
        return

    # Sort codes lexicographically; -1 sorts before every token, so a code sorts right before
    # its extensions, and any duplicate / prefix pair has an adjacent witness pair.
    order = np.lexsort(codes.T[::-1])
    s = codes[order]
    lengths = code_lengths(s)
    mismatch = s[1:] != s[:-1]
    first_mismatch = np.where(mismatch.any(axis=1), mismatch.argmax(axis=1), max_len)
    la, lb = lengths[:-1], lengths[1:]
    dup = first_mismatch >= max_len  # identical rows (same length, same tokens)
    if dup.any():
        k = np.flatnonzero(dup)
        a, b = int(order[k[0]]), int(order[k[0] + 1])
        raise ValueError(
            f"codes are not unique: {k.size} duplicate pair(s); e.g. items {a} and {b} both have "
            f"code {_fmt(codes[a])}"
        )
    prefix = (first_mismatch >= la) & (la < lb)
    if prefix.any():
        k = np.flatnonzero(prefix)
        a, b = int(order[k[0]]), int(order[k[0] + 1])
        raise ValueError(
            f"codes are not prefix-free: {k.size} item(s) have a code that is a proper prefix of "
            f"another item's code (a trie could not decode them); e.g. item {a} code "
            f"{_fmt(codes[a])} is a prefix of item {b} code {_fmt(codes[b])}"
        )


class Quantizer(abc.ABC):
    """Base class: maps item embeddings ``[n_items, dim]`` to a padded int64 code table.

    Subclasses set ``defaults`` (the accepted parameters and their default values, mirroring
    ``properties/quantizer/<name>.yaml``) and implement :meth:`quantize`, which must fill
    ``self.report`` (see :meth:`_finish`) and return codes that pass :func:`validate_codes`.
    """

    name: str = "base"
    defaults: Dict[str, Any] = {}

    def __init__(self, **params: Any) -> None:
        self.params: Dict[str, Any] = with_defaults("quantizer", self.name, self.defaults, params)
        if "codebook_size" in self.params:
            k = self.params["codebook_size"]
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
                raise ValueError(
                    f"codebook_size must be an integer >= 2 (number of tokens per code position), "
                    f"got {k!r}; set codebook_size in properties/quantizer/{self.name}.yaml or "
                    f"override it, e.g. codebook_size=256 as in the paper"
                )
            self.codebook_size = int(k)
        self.report: Dict[str, Any] = {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    @abc.abstractmethod
    def quantize(self, embeddings: np.ndarray) -> np.ndarray:
        """Return int64 codes ``[n_items, max_len]`` (``-1``-padded) for ``embeddings``."""

    # ---------------------------------------------------------------- helpers for subclasses
    @staticmethod
    def _check_embeddings(embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array [n_items, dim], got shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("embeddings is empty: there are no items to quantize")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"embeddings must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or inf values")
        return x

    def _finish(self, codes: np.ndarray, start_time: float, **extra: Any) -> np.ndarray:
        """Validate ``codes`` and fill ``self.report`` with the common statistics plus ``extra``."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        validate_codes(codes, self.codebook_size)
        lengths = code_lengths(codes)
        hist = Counter(lengths.tolist())
        self.report = {
            "quantizer": self.name,
            "params": dict(self.params),
            "n_items": int(codes.shape[0]),
            "codebook_size": self.codebook_size,
            "max_len": int(codes.shape[1]),
            "code_length_histogram": {int(k): int(hist[k]) for k in sorted(hist)},
            "first_level_clusters_used": int(np.unique(codes[:, 0]).size),
            "collisions": 0,
            **extra,
            "seconds": float(time.perf_counter() - start_time),
        }
        return codes


QUANTIZERS = Registry("quantizer", Quantizer)
register_quantizer = QUANTIZERS.register
build_quantizer = QUANTIZERS.build
