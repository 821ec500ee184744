"""Tests for unger_recbole.generation (prefix trie + constrained beam search)."""

from itertools import product
from typing import Optional

import numpy as np
import pytest
import torch
from torch import Tensor

from unger_recbole.generation import (
    PrefixTrie,
    StepDecoder,
    constrained_beam_search,
    masked_log_softmax,
    score_items_exhaustively,
)

K = 4
V = K + 1
L = 3
N_ITEMS = 40  # catalogue size used by the module-level trie fixture
B = 3  # users per batch


# --------------------------------------------------------------------- helpers
def make_catalogue(n_items: int, seed: int) -> np.ndarray:
    """Unique, prefix-free codes with K=4, L=3, including short codes."""
    short = [[0], [1, 2], [3, 1]]
    longs = [
        list(c)
        for c in product(range(K), repeat=L)
        if not any(list(c[: len(s)]) == s for s in short)
    ]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(longs), size=n_items - len(short), replace=False)
    rows = [s + [-1] * (L - len(s)) for s in short] + [longs[i] for i in pick]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return np.asarray(rows, dtype=np.int64)


def prefix_index(level: int, prefix_code: Tensor) -> Tensor:
    """Index of a prefix (mixed radix number of length `level`) in a flat table."""
    offset = sum(V ** j for j in range(level))
    return offset + prefix_code


class LookupDecoder:
    """logits = table[user, prefix]: an arbitrary deterministic function of (user, full prefix).

    Tracks each beam's prefix as a mixed-radix integer, reordered by parent_beams.
    """

    def __init__(self, table: Tensor):
        self.table = table  # [B, n_prefixes, V]
        self.B = table.shape[0]
        self.calls = []

    def step(self, level: int, last_symbols: Optional[Tensor], parent_beams: Optional[Tensor]) -> Tensor:
        self.calls.append((level, last_symbols, parent_beams))
        if level == 0:
            assert last_symbols is None and parent_beams is None
            return self.table[:, :1, :]  # [B, 1, V] is broadcast by the search
        W = last_symbols.shape[1]
        if level == 1:
            self.code = torch.zeros(self.B, W, dtype=torch.long)
        assert parent_beams.shape == last_symbols.shape == (self.B, W)
        assert parent_beams.dtype == torch.long and last_symbols.dtype == torch.long
        assert int(parent_beams.min()) >= 0 and int(parent_beams.max()) < W
        assert int(last_symbols.min()) >= 0 and int(last_symbols.max()) < V
        self.code = self.code.gather(1, parent_beams) * V + last_symbols
        idx = prefix_index(level, self.code)  # [B, W]
        return self.table.gather(1, idx.unsqueeze(-1).expand(-1, -1, V))


def random_table(B: int, seed: int, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    n_prefix = sum(V ** j for j in range(L))
    return scale * torch.randn(B, n_prefix, V, generator=g)


class _GRUBase:
    def __init__(self, B: int, seed: int, hidden: int = 8):
        g = torch.Generator().manual_seed(seed)
        self.B = B
        self.user = torch.randn(B, hidden, generator=g)
        self.emb = torch.randn(V, hidden, generator=g)
        self.w_ih = torch.randn(3 * hidden, hidden, generator=g) * 0.7
        self.w_hh = torch.randn(3 * hidden, hidden, generator=g) * 0.7
        self.out = torch.randn(V, hidden, generator=g) * 1.5
        self.hidden = hidden

    def cell(self, x: Tensor, h: Tensor) -> Tensor:
        return torch._VF.gru_cell(x, h, self.w_ih, self.w_hh, None, None)

    def logits(self, h: Tensor) -> Tensor:
        return h @ self.out.T


class CachedGRUDecoder(_GRUBase):
    """Keeps a hidden-state cache [B, W, H] and reorders it with parent_beams."""

    def __init__(self, *a, reorder: bool = True, **kw):
        super().__init__(*a, **kw)
        self.reorder = reorder

    def step(self, level, last_symbols, parent_beams):
        if level == 0:
            self.h = None
            h0 = self.user.unsqueeze(1)  # [B, 1, H]
            return self.logits(h0)
        W = last_symbols.shape[1]
        if self.h is None:
            self.h = self.user.unsqueeze(1).expand(self.B, W, self.hidden)
        h = self.h
        if self.reorder:
            h = h.gather(1, parent_beams.unsqueeze(-1).expand(-1, -1, self.hidden))
        x = self.emb[last_symbols]
        h = self.cell(x.reshape(-1, self.hidden), h.reshape(-1, self.hidden)).reshape(self.B, W, self.hidden)
        self.h = h
        return self.logits(h)


class RecomputeGRUDecoder(_GRUBase):
    """Keeps only the symbol history and reruns the GRU from <BOS> over the full prefix."""

    def step(self, level, last_symbols, parent_beams):
        if level == 0:
            self.hist = None
            return self.logits(self.user.unsqueeze(1))
        W = last_symbols.shape[1]
        if self.hist is None:
            self.hist = last_symbols.unsqueeze(-1)
        else:
            prev = self.hist.gather(1, parent_beams.unsqueeze(-1).expand(-1, -1, self.hist.shape[-1]))
            self.hist = torch.cat([prev, last_symbols.unsqueeze(-1)], dim=-1)
        h = self.user.unsqueeze(1).expand(self.B, W, self.hidden).reshape(-1, self.hidden)
        for t in range(self.hist.shape[-1]):
            h = self.cell(self.emb[self.hist[:, :, t]].reshape(-1, self.hidden), h)
        return self.logits(h.reshape(self.B, W, self.hidden))


def brute_force_score(table: Tensor, trie: PrefixTrie, user: int, item: int) -> float:
    """Independent score computation from the definition (python loops, no protocol)."""
    sym = trie.symbols[item].tolist()
    total, code, node = 0.0, 0, 0
    for level in range(L):
        logits = table[user, prefix_index(level, torch.tensor(code))]
        allowed = trie.allowed[level][node]
        total += float(torch.log_softmax(logits[allowed], -1)[allowed[: sym[level]].sum()])
        node = int(trie.child[level][node, sym[level]])
        code = code * V + sym[level]
    return total


# ------------------------------------------------------------------ trie tests
HAND_CODES = np.array(
    [
        [0, 1, 2],   # item 0
        [0, 1, 3],   # item 1
        [0, 2, -1],  # item 2 (short)
        [1, 0, 0],   # item 3
        [2, -1, -1], # item 4 (shortest)
    ],
    dtype=np.int64,
)


def test_trie_tables_hand_example():
    trie = PrefixTrie.from_codes(HAND_CODES, codebook_size=K)
    assert trie.num_levels == 3 and trie.codebook_size == K and trie.n_items == 5
    assert trie.num_nodes == [1, 3, 4]
    E = K  # END symbol
    assert trie.symbols.tolist() == [[0, 1, 2], [0, 1, 3], [0, 2, E], [1, 0, 0], [2, E, E]]

    # level 0: root allows 0, 1, 2; nodes at level 1 are prefixes (0,), (1,), (2,)
    assert trie.allowed[0].tolist() == [[True, True, True, False, False]]
    assert trie.child[0].tolist() == [[0, 1, 2, -1, -1]]
    # level 1: (0,) -> {1, 2}; (1,) -> {0}; (2,) -> {END}
    # level-2 nodes sorted lexicographically: (0,1), (0,2), (1,0), (2,E)
    assert trie.allowed[1].tolist() == [
        [False, True, True, False, False],
        [True, False, False, False, False],
        [False, False, False, False, True],
    ]
    assert trie.child[1].tolist() == [
        [-1, 0, 1, -1, -1],
        [2, -1, -1, -1, -1],
        [-1, -1, -1, -1, 3],
    ]
    # level 2 children are item indices
    assert trie.child[2].tolist() == [
        [-1, -1, 0, 1, -1],   # (0,1) -> 2: item 0, 3: item 1
        [-1, -1, -1, -1, 2],  # (0,2) -> END: item 2
        [3, -1, -1, -1, -1],  # (1,0) -> 0: item 3
        [-1, -1, -1, -1, 4],  # (2,E) -> END: item 4
    ]
    for level in range(3):
        assert torch.equal(trie.allowed[level], trie.child[level] >= 0)
        assert trie.allowed[level].dtype == torch.bool and trie.child[level].dtype == torch.long


def test_trie_item_of_symbols_roundtrip_and_invalid():
    trie = PrefixTrie.from_codes(torch.as_tensor(HAND_CODES), codebook_size=K)
    assert trie.item_of_symbols(trie.symbols).tolist() == [0, 1, 2, 3, 4]
    assert trie.item_of_codes(torch.as_tensor(HAND_CODES)).tolist() == [0, 1, 2, 3, 4]
    E = K
    queries = torch.tensor(
        [
            [[0, 1, 3], [2, E, E]],
            [[0, 1, E], [0, 2, 0]],   # stops early / continues past END
            [[3, 0, 0], [-1, 0, 0]],  # unknown first symbol / out of range
            [[2, 0, E], [1, 0, 5]],   # value after END / out of range
        ]
    )
    assert trie.item_of_symbols(queries).tolist() == [[1, 4], [-1, -1], [-1, -1], [-1, -1]]

    big = PrefixTrie.from_codes(make_catalogue(N_ITEMS, seed=1), codebook_size=K)
    assert torch.equal(big.item_of_symbols(big.symbols), torch.arange(N_ITEMS))
    perm = torch.randperm(N_ITEMS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(big.item_of_symbols(big.symbols[perm]), perm)


def test_trie_rejects_bad_tables():
    with pytest.raises(ValueError):
        PrefixTrie.from_codes(np.array([[0, 1], [0, 1]]), codebook_size=K)  # duplicate
    with pytest.raises(ValueError):
        PrefixTrie.from_codes(np.array([[0, -1, 1]]), codebook_size=K)  # padding not trailing
    with pytest.raises(ValueError):
        PrefixTrie.from_codes(np.array([[0, K]]), codebook_size=K)  # out of range
    with pytest.raises(ValueError):
        PrefixTrie.from_codes(np.array([[-1, -1]]), codebook_size=K)  # empty code


def test_masked_log_softmax_renormalises_and_forced_step_costs_zero():
    logits = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, True, False], [False, False, False]])
    out = masked_log_softmax(logits, mask)
    expected0 = torch.log_softmax(torch.tensor([1.0, 3.0]), -1)
    assert torch.allclose(out[0, [0, 2]], expected0)
    assert out[0, 1] == float("-inf")
    assert out[1].tolist() == [float("-inf"), 0.0, float("-inf")]
    assert torch.isneginf(out[2]).all()  # no NaN for an empty row


# ---------------------------------------------------------- beam search tests
@pytest.fixture(scope="module")
def trie():
    return PrefixTrie.from_codes(make_catalogue(N_ITEMS, seed=0), codebook_size=K)


def test_decoder_protocol_is_runtime_checkable():
    assert isinstance(LookupDecoder(random_table(1, 0)), StepDecoder)
    assert isinstance(CachedGRUDecoder(1, 0), StepDecoder)


def test_exhaustive_reference_matches_definition(trie):
    table = random_table(B, seed=3)
    ref = score_items_exhaustively(LookupDecoder(table), trie, batch_size=B)
    assert ref.shape == (B, N_ITEMS)
    for user in range(B):
        for item in (0, 5, 17, 31, 39):
            assert ref[user, item].item() == pytest.approx(brute_force_score(table, trie, user, item), abs=1e-5)
    # scores are log-probabilities of a distribution over all items
    assert torch.allclose(ref.exp().sum(1), torch.ones(B), atol=1e-5)
    # chunked scoring restarts the decoder per chunk and gives the same answer
    chunked = score_items_exhaustively(LookupDecoder(table), trie, batch_size=B, chunk_size=7)
    assert torch.allclose(chunked, ref, atol=1e-6)
    sub = torch.tensor([9, 2, 35])
    assert torch.allclose(
        score_items_exhaustively(LookupDecoder(table), trie, batch_size=B, items=sub), ref[:, sub], atol=1e-6
    )


def test_full_beam_equals_exhaustive_ranking(trie):
    table = random_table(B, seed=4, scale=2.0)
    ref = score_items_exhaustively(LookupDecoder(table), trie, batch_size=B)
    ref_scores, ref_items = ref.sort(dim=1, descending=True)
    items, scores = constrained_beam_search(LookupDecoder(table), trie, batch_size=B, beam_size=N_ITEMS, top_k=N_ITEMS)
    assert items.shape == scores.shape == (B, N_ITEMS)
    assert items.dtype == torch.long and scores.dtype == torch.float32
    assert torch.equal(items, ref_items)
    assert torch.allclose(scores, ref_scores, atol=1e-5)

    # a beam larger than the catalogue finds everything too
    items2, scores2 = constrained_beam_search(LookupDecoder(table), trie, B, beam_size=N_ITEMS + 13, top_k=N_ITEMS)
    assert torch.equal(items2, ref_items)
    assert torch.allclose(scores2, ref_scores, atol=1e-5)


@pytest.mark.parametrize("beam_size,top_k", [(1, 1), (4, 3), (10, 10)])
def test_small_beam_valid_unique_sorted_and_exact_scores(trie, beam_size, top_k):
    table = random_table(B, seed=5, scale=1.5)
    ref = score_items_exhaustively(LookupDecoder(table), trie, batch_size=B)
    items, scores = constrained_beam_search(LookupDecoder(table), trie, B, beam_size=beam_size, top_k=top_k)
    assert items.shape == (B, top_k)
    assert ((items >= 0) & (items < N_ITEMS)).all()
    for u in range(B):
        assert len(set(items[u].tolist())) == top_k
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    # each returned score is that item's exact (teacher-forced) score
    assert torch.allclose(scores, ref.gather(1, items), atol=1e-5)
    # beam search can never beat the true best item
    assert (scores[:, 0] <= ref.max(1).values + 1e-5).all()


def test_easy_decoder_top1_matches_exhaustive(trie):
    # peaked decoder: for each user, strongly prefer the symbols of a target item
    table = random_table(B, seed=6, scale=0.5)
    targets = [3, 20, 37]
    for u, item in enumerate(targets):
        sym = trie.symbols[item].tolist()
        code = 0
        for level in range(L):
            table[u, prefix_index(level, torch.tensor(code)), sym[level]] += 6.0
            code = code * V + sym[level]
    ref = score_items_exhaustively(LookupDecoder(table), trie, batch_size=B)
    assert ref.argmax(1).tolist() == targets
    items, scores = constrained_beam_search(LookupDecoder(table), trie, B, beam_size=2, top_k=2)
    assert items[:, 0].tolist() == targets
    assert torch.allclose(scores[:, 0], ref.max(1).values, atol=1e-5)


def test_cached_decoder_reorders_with_parent_beams(trie):
    ref = score_items_exhaustively(RecomputeGRUDecoder(B, seed=7), trie, batch_size=B)
    ref_cached = score_items_exhaustively(CachedGRUDecoder(B, seed=7), trie, batch_size=B)
    assert torch.allclose(ref, ref_cached, atol=1e-5)

    for beam_size, top_k in [(5, 5), (12, 8), (N_ITEMS, N_ITEMS)]:
        i_c, s_c = constrained_beam_search(CachedGRUDecoder(B, seed=7), trie, B, beam_size, top_k)
        i_r, s_r = constrained_beam_search(RecomputeGRUDecoder(B, seed=7), trie, B, beam_size, top_k)
        assert torch.equal(i_c, i_r)
        assert torch.allclose(s_c, s_r, atol=1e-5)
        # scores of what beam search returns match teacher-forced scores, so the
        # parent_beams passed during the search really are each beam's ancestor
        assert torch.allclose(s_c, ref.gather(1, i_c), atol=1e-5)
    assert torch.equal(i_c, ref.argsort(1, descending=True))

    # sanity: a decoder that ignores parent_beams gets the wrong scores
    i_bad, s_bad = constrained_beam_search(CachedGRUDecoder(B, seed=7, reorder=False), trie, B, 12, 8)
    assert not torch.allclose(s_bad, ref.gather(1, i_bad), atol=1e-3)


def test_parent_beams_and_symbols_passed_to_decoder(trie):
    dec = LookupDecoder(random_table(B, seed=8))
    W = 6
    items, _ = constrained_beam_search(dec, trie, B, beam_size=W, top_k=W)
    assert [c[0] for c in dec.calls] == [0, 1, 2]
    # calls[1] carries the level-0 symbols; calls[2] the level-1 symbols and the
    # parent (index into calls[1]'s beams) of each level-2 beam
    (_, s0, _), (_, s1, p2) = dec.calls[1], dec.calls[2]
    prefixes = torch.stack([s0.gather(1, p2), s1], dim=-1)  # [B, W, 2]
    for u in range(B):
        live = {tuple(p) for p in prefixes[u].tolist()}
        assert len(live) == W  # 40 items leave more than W live length-2 prefixes: all distinct
        for it in items[u].tolist():
            assert tuple(trie.symbols[it, :2].tolist()) in live


def test_padding_when_few_valid_items():
    codes = np.array([[1, 2, -1], [3, -1, -1], [1, 0, 2]], dtype=np.int64)
    small = PrefixTrie.from_codes(codes, codebook_size=K)
    table = random_table(2, seed=9)
    ref = score_items_exhaustively(LookupDecoder(table), small, batch_size=2)
    items, scores = constrained_beam_search(LookupDecoder(table), small, batch_size=2, beam_size=8, top_k=5)
    assert items.shape == (2, 5)
    ref_scores, ref_items = ref.sort(1, descending=True)
    assert torch.equal(items[:, :3], ref_items)
    assert torch.allclose(scores[:, :3], ref_scores, atol=1e-5)
    assert (items[:, 3:] == -1).all()
    assert torch.isneginf(scores[:, 3:]).all()
    assert torch.isfinite(scores[:, :3]).all()

    # single item: every step is forced, score 0
    one = PrefixTrie.from_codes(np.array([[2, 1, -1]]), codebook_size=K)
    items, scores = constrained_beam_search(LookupDecoder(table), one, batch_size=2, beam_size=3, top_k=3)
    assert items.tolist() == [[0, -1, -1], [0, -1, -1]]
    assert scores[:, 0].tolist() == [0.0, 0.0]


def test_top_k_larger_than_beam_raises(trie):
    with pytest.raises(ValueError, match="top_k"):
        constrained_beam_search(LookupDecoder(random_table(1, 0)), trie, batch_size=1, beam_size=3, top_k=4)


def test_bad_logits_shape_raises(trie):
    class Bad:
        def step(self, level, last_symbols, parent_beams):
            return torch.zeros(2, 3, V + 1)

    with pytest.raises(ValueError, match="shape"):
        constrained_beam_search(Bad(), trie, batch_size=2, beam_size=3, top_k=1)
