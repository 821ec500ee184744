"""Dense prefix trie over item codes, used to constrain decoding.

Conventions
-----------
An item code table ``codes`` is an int64 array/tensor of shape ``[n_items, L]``
with values in ``[0, K)`` and ``-1`` padding after the end of shorter codes.
Row ``i`` is the code of item ``i``.

For decoding every code is a fixed-length sequence of ``L`` *symbols*: at each
level the alphabet has ``K + 1`` entries, ``0..K-1`` being code values and
``K`` being END (what ``-1`` padding becomes).  A code ``[3, 7]`` with ``L = 3``
therefore decodes as the symbols ``[3, 7, K]``.

The trie stores one dense table pair per level ``l`` in ``0..L-1``:

* ``allowed[l]``: bool ``[n_nodes_l, K + 1]``, whether symbol ``s`` may follow
  the prefix represented by node ``n`` of level ``l``;
* ``child[l]``: int64 ``[n_nodes_l, K + 1]``, the node id at level ``l + 1``
  reached by appending ``s`` (at the last level: the item index), ``-1`` where
  not allowed.

Level 0 has exactly one node, the root (id 0).  Node ids of level ``l`` are
the ranks of the distinct length-``l`` symbol prefixes in lexicographic order.
"""

from __future__ import annotations

from typing import List, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["PrefixTrie", "codes_to_symbols"]


def _as_long_tensor(x: Union[Tensor, np.ndarray, list]) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(torch.long)
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


def codes_to_symbols(codes: Union[Tensor, np.ndarray], codebook_size: int) -> Tensor:
    """Map a code table (``-1`` padded) to its symbol table (``-1`` -> ``K``)."""
    codes = _as_long_tensor(codes)
    return torch.where(codes < 0, torch.full_like(codes, codebook_size), codes)


class PrefixTrie:
    """Prefix trie over item symbol sequences, stored as dense per-level tables.

    Build it with :meth:`from_codes`.  All tables are torch tensors on
    :attr:`device`; :meth:`to` moves them (in place, returns ``self``).
    """

    def __init__(
        self,
        allowed: List[Tensor],
        child: List[Tensor],
        symbols: Tensor,
        codebook_size: int,
    ) -> None:
        if len(allowed) != len(child) or len(allowed) == 0:
            raise ValueError("allowed and child must be non-empty lists of equal length")
        self.allowed: List[Tensor] = list(allowed)
        self.child: List[Tensor] = list(child)
        self._symbols: Tensor = symbols
        self._codebook_size = int(codebook_size)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_codes(cls, codes: Union[Tensor, np.ndarray], codebook_size: int) -> "PrefixTrie":
        """Build the trie from a ``[n_items, L]`` code table with ``-1`` padding.

        The table is expected to be unique and prefix-free (validated
        elsewhere); the cheap structural checks done here raise ``ValueError``
        on values out of ``[-1, K)``, non-trailing padding, empty codes and
        duplicate codes.
        """
        device = codes.device if isinstance(codes, Tensor) else torch.device("cpu")
        codes = _as_long_tensor(codes).to(device)
        K = int(codebook_size)
        if K < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        if codes.dim() != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
            raise ValueError(f"codes must be a non-empty 2-D table [n_items, L], got shape {tuple(codes.shape)}")
        if bool(((codes < -1) | (codes >= K)).any()):
            raise ValueError(f"code values must lie in [0, {K}) or be -1 padding")
        pad = codes < 0
        if bool((pad[:, :-1] & ~pad[:, 1:]).any()):
            raise ValueError("-1 padding must only appear after the end of a code")
        if bool(pad[:, 0].any()):
            raise ValueError("every item code must have at least one value (found an empty code)")

        n_items, L = codes.shape
        V = K + 1
        symbols = codes_to_symbols(codes, K)

        allowed: List[Tensor] = []
        child: List[Tensor] = []
        node = torch.zeros(n_items, dtype=torch.long, device=device)  # node of each item at level l
        n_nodes = 1
        for level in range(L):
            sym = symbols[:, level]
            key = node * V + sym  # identifies the length-(level+1) prefix
            if level < L - 1:
                uniq, nxt = torch.unique(key, sorted=True, return_inverse=True)
                target = nxt
                n_next = int(uniq.numel())
            else:
                target = torch.arange(n_items, dtype=torch.long, device=device)
                if int(torch.unique(key).numel()) != n_items:
                    raise ValueError("item codes must be unique")
                n_next = n_items
            a = torch.zeros(n_nodes, V, dtype=torch.bool, device=device)
            c = torch.full((n_nodes, V), -1, dtype=torch.long, device=device)
            a[node, sym] = True
            # every item sharing (node, sym) shares the same target (same prefix),
            # so duplicate writes are consistent.
            c[node, sym] = target
            allowed.append(a)
            child.append(c)
            node = target
            n_nodes = n_next
        return cls(allowed, child, symbols, K)

    # ------------------------------------------------------------ properties
    @property
    def num_levels(self) -> int:
        """Number of decoding levels ``L``."""
        return len(self.allowed)

    @property
    def codebook_size(self) -> int:
        """``K``; the symbol alphabet has ``K + 1`` entries (``K`` = END)."""
        return self._codebook_size

    @property
    def vocab_size(self) -> int:
        """``K + 1``: number of symbols per level (code values + END)."""
        return self._codebook_size + 1

    @property
    def end_symbol(self) -> int:
        """The END symbol id, ``K``."""
        return self._codebook_size

    @property
    def n_items(self) -> int:
        return int(self._symbols.shape[0])

    @property
    def symbols(self) -> Tensor:
        """``[n_items, L]`` symbol table (codes with ``-1`` replaced by ``K``)."""
        return self._symbols

    @property
    def num_nodes(self) -> List[int]:
        """Number of nodes at each level ``0..L-1``."""
        return [int(a.shape[0]) for a in self.allowed]

    @property
    def device(self) -> torch.device:
        return self._symbols.device

    def to(self, device: Union[str, torch.device]) -> "PrefixTrie":
        """Move all tables to ``device`` (in place); returns ``self``."""
        self.allowed = [a.to(device) for a in self.allowed]
        self.child = [c.to(device) for c in self.child]
        self._symbols = self._symbols.to(device)
        return self

    # --------------------------------------------------------------- queries
    def item_of_symbols(self, symbols: Tensor) -> Tensor:
        """Map symbol sequences ``[..., L]`` to item indices ``[...]`` (``-1`` if none).

        Sequences with any symbol outside ``[0, K]`` or that leave the trie
        map to ``-1``.  Vectorised: loops over levels only.
        """
        symbols = _as_long_tensor(symbols).to(self.device)
        if symbols.dim() == 0 or symbols.shape[-1] != self.num_levels:
            raise ValueError(f"symbols must have shape [..., {self.num_levels}], got {tuple(symbols.shape)}")
        lead = symbols.shape[:-1]
        flat = symbols.reshape(-1, self.num_levels)
        V = self.vocab_size
        ok = ((flat >= 0) & (flat < V)).all(dim=1)
        safe = flat.clamp(0, V - 1)
        node = torch.zeros(flat.shape[0], dtype=torch.long, device=self.device)
        for level in range(self.num_levels):
            s = safe[:, level]
            nxt = self.child[level][node, s]
            ok = ok & (nxt >= 0)
            node = nxt.clamp(min=0)
        out = torch.where(ok, node, torch.full_like(node, -1))
        return out.reshape(lead)

    def item_of_codes(self, codes: Tensor) -> Tensor:
        """Like :meth:`item_of_symbols` but for ``-1`` padded codes ``[..., L]``."""
        return self.item_of_symbols(codes_to_symbols(codes, self.codebook_size))

    def __repr__(self) -> str:
        return (
            f"PrefixTrie(n_items={self.n_items}, num_levels={self.num_levels}, "
            f"codebook_size={self.codebook_size}, num_nodes={self.num_nodes}, device={self.device})"
        )
