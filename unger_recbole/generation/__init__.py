"""Generation utilities: item-code prefix trie and trie-constrained beam search."""

from .beam_search import (
    StepDecoder,
    constrained_beam_search,
    masked_log_softmax,
    score_items_exhaustively,
)
from .trie import PrefixTrie, codes_to_symbols

__all__ = [
    "PrefixTrie",
    "codes_to_symbols",
    "StepDecoder",
    "constrained_beam_search",
    "masked_log_softmax",
    "score_items_exhaustively",
]
