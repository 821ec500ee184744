"""Batched, trie-constrained beam search over item codes (pure torch).

Score definition
----------------
An item's score is the sum over the ``L`` levels of the log-probability of its
symbol under a softmax *restricted to the symbols the trie allows after its
prefix* (masked log-softmax, i.e. renormalised over the valid children)::

    score(item) = sum_l log softmax_{s in allowed(prefix_l)}(logits_l)[sym_l]

A forced step (a single valid child, e.g. END after a short code) therefore
costs 0.  :func:`constrained_beam_search` and the reference
:func:`score_items_exhaustively` share this definition through
:func:`masked_log_softmax` and the :class:`StepDecoder` protocol.

Decoder protocol
----------------
The search drives a :class:`StepDecoder` once per level for ``B`` users and
``W`` beams (see its docstring).  A call at level 0 starts a new decode, so a
stateful decoder must reset its cache there.
"""

from __future__ import annotations

from typing import Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor

from .trie import PrefixTrie

__all__ = [
    "StepDecoder",
    "masked_log_softmax",
    "constrained_beam_search",
    "score_items_exhaustively",
]


@runtime_checkable
class StepDecoder(Protocol):
    """Incremental decoder driven level by level by the beam search.

    ``step(level, last_symbols, parent_beams) -> logits [B, W, K + 1]``

    * ``level == 0``: ``last_symbols`` and ``parent_beams`` are ``None``; the
      decoder input is just ``<BOS>``.  This call starts a new decode (reset
      any cache).  All ``W`` rows may be identical (only beam 0 is live); a
      ``[B, 1, K + 1]`` result is also accepted and broadcast.
    * ``level > 0``: ``parent_beams`` ``[B, W]`` int64 gives, for each current
      beam, the index (in ``0..W-1``) of the beam it was extended from at the
      previous step -- reorder any cache (e.g. self-attention keys/values)
      with ``cache.gather(1, parent_beams)`` semantics; ``last_symbols``
      ``[B, W]`` int64 is the symbol (``0..K``, ``K`` = END) that each current
      beam just appended.  Return logits for the next symbol.

    Dead beams (score ``-inf``) still receive in-range ``parent_beams`` and
    ``last_symbols``; their logits are ignored.
    """

    def step(self, level: int, last_symbols: Optional[Tensor], parent_beams: Optional[Tensor]) -> Tensor:
        ...


def masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Log-softmax over the entries where ``mask`` is True; ``-inf`` elsewhere.

    Computed in float32 (or wider).  Rows with no allowed entry give all
    ``-inf`` (never NaN).
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    out = torch.log_softmax(torch.where(mask, logits, neg_inf), dim=-1)
    return torch.where(mask & ~torch.isnan(out), out, neg_inf)


def _call_step(
    decoder: StepDecoder,
    level: int,
    last: Optional[Tensor],
    parent: Optional[Tensor],
    batch_size: int,
    width: int,
    vocab: int,
) -> Tensor:
    logits = decoder.step(level, last, parent)
    shape = tuple(logits.shape)
    if level == 0 and shape == (batch_size, 1, vocab):
        logits = logits.expand(batch_size, width, vocab)
    elif shape != (batch_size, width, vocab):
        raise ValueError(
            f"decoder.step(level={level}) returned logits of shape {shape}, "
            f"expected ({batch_size}, {width}, {vocab}) = (batch_size, beams, K + 1)"
        )
    return logits


@torch.no_grad()
def constrained_beam_search(
    decoder: StepDecoder,
    trie: PrefixTrie,
    batch_size: int,
    beam_size: int,
    top_k: int,
) -> Tuple[Tensor, Tensor]:
    """Trie-constrained beam search, batched over users and beams.

    Returns ``(items, scores)``: ``items`` int64 ``[B, top_k]`` and ``scores``
    float ``[B, top_k]``, sorted by descending score (see module docstring for
    the score).  Every returned item is a real item and none repeats for a
    user; if fewer than ``top_k`` valid items survive, the remaining slots are
    ``-1`` / ``-inf``.  Loops only over the ``L`` levels.  Runs on the trie's
    device (the decoder's logits must be on it too).
    """
    B, W, k = int(batch_size), int(beam_size), int(top_k)
    if B < 1 or W < 1 or k < 1:
        raise ValueError(f"batch_size, beam_size and top_k must be >= 1, got {B}, {W}, {k}")
    if k > W:
        raise ValueError(f"top_k ({k}) must be <= beam_size ({W}): beam search can return at most beam_size items")

    device = trie.device
    V = trie.vocab_size
    L = trie.num_levels
    neg_inf = float("-inf")

    node = torch.zeros(B, W, dtype=torch.long, device=device)  # current trie node of each beam
    beam_scores = torch.full((B, W), neg_inf, dtype=torch.float32, device=device)
    beam_scores[:, 0] = 0.0  # a single live beam at level 0: beams never duplicate
    last: Optional[Tensor] = None
    parent: Optional[Tensor] = None

    for level in range(L):
        logits = _call_step(decoder, level, last, parent, B, W, V)
        if logits.device != device:
            raise ValueError(f"decoder logits are on {logits.device} but the trie is on {device}")
        mask = trie.allowed[level][node]  # [B, W, V]
        logp = masked_log_softmax(logits, mask)
        beam_scores = beam_scores.to(logp.dtype)
        cand = (beam_scores.unsqueeze(-1) + logp).reshape(B, W * V)
        top_scores, top_idx = torch.topk(cand, W, dim=1)  # W <= W * V since V >= 2
        parent = torch.div(top_idx, V, rounding_mode="floor")
        last = top_idx - parent * V
        nxt = trie.child[level][node.gather(1, parent), last]
        alive = torch.isfinite(top_scores) & (nxt >= 0)
        node = torch.where(alive, nxt, torch.zeros_like(nxt))  # safe clamped id for dead beams
        beam_scores = torch.where(alive, top_scores, torch.full_like(top_scores, neg_inf))

    # after the last level, `node` holds item indices; beams are sorted by score
    items = torch.where(torch.isfinite(beam_scores), node, torch.full_like(node, -1))
    # topk sorts descending with -inf last, so the first k beams are the best k.
    return items[:, :k].contiguous(), beam_scores[:, :k].float().contiguous()


@torch.no_grad()
def score_items_exhaustively(
    decoder: StepDecoder,
    trie: PrefixTrie,
    batch_size: int,
    items: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Reference scorer: exact score of every item by teacher forcing.

    Runs the same :class:`StepDecoder` protocol with one beam per item, each
    forced along that item's symbols (``parent_beams = arange``), and scores
    with the same masked log-softmax as :func:`constrained_beam_search`.

    Returns float ``[B, n]`` where ``n`` is ``len(items)`` (default: all
    ``trie.n_items`` items, in index order).  ``chunk_size`` limits the number
    of items decoded at once (each chunk restarts the decoder at level 0).
    """
    device = trie.device
    V = trie.vocab_size
    B = int(batch_size)
    if items is None:
        items = torch.arange(trie.n_items, device=device)
    items = items.to(device=device, dtype=torch.long)
    n = int(items.numel())
    chunk = n if chunk_size is None else max(1, int(chunk_size))
    out = []
    for start in range(0, n, chunk):
        idx = items[start:start + chunk]
        W = int(idx.numel())
        sym = trie.symbols[idx].unsqueeze(0).expand(B, W, trie.num_levels)
        parent_ids = torch.arange(W, device=device).unsqueeze(0).expand(B, W)
        node = torch.zeros(B, W, dtype=torch.long, device=device)
        score = torch.zeros(B, W, dtype=torch.float32, device=device)
        last: Optional[Tensor] = None
        parent: Optional[Tensor] = None
        for level in range(trie.num_levels):
            logits = _call_step(decoder, level, last, parent, B, W, V)
            logp = masked_log_softmax(logits, trie.allowed[level][node])
            s = sym[:, :, level]
            score = score.to(logp.dtype) + logp.gather(-1, s.unsqueeze(-1)).squeeze(-1)
            node = trie.child[level][node, s]
            last, parent = s.contiguous(), parent_ids.contiguous()
        out.append(score.float())
    return torch.cat(out, dim=1) if out else torch.zeros(B, 0, device=device)
