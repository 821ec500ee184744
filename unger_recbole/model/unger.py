"""UNGER stage II: generative recommendation over unified item codes (paper §3.4–3.5).

Xiao et al., "UNGER: Generative Recommendation with A Unified Code via Semantic and Collaborative
Integration", 2025.

An encoder reads the user's history, each item written as its code tokens (as in TIGER); a
decoder generates the target item's code after <BOS> (eq. 1, loss eq. 6). The intra-modality
knowledge distillation task (IKD, eq. 7) appends a learnable [c_dis] token to the decoder input
and contrasts its final-layer output with the stage-I integrated embedding of the target item
against sampled other items: L = L_gen + beta * L_distillation (eq. 8). Recommendations come from a
batched beam search constrained by a prefix trie of the item codes, so every generated code is a
real item and none repeats.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from unger_recbole.compat import amp_dtype
from unger_recbole.generation import PrefixTrie, constrained_beam_search, masked_log_softmax
from unger_recbole.model.layers import DecoderLayer, EncoderLayer
from unger_recbole.pipeline import build_unger_artifacts
from unger_recbole.trainer import WarmupTrainer

PAD = 0


class UNGER(SequentialRecommender):
    """UNGER's stage-II encoder-decoder as a RecBole sequential recommender.

    Token layout: 0 = PAD, then for each code level l the K+1 symbols of that level (K code
    values and END, which pads codes shorter than the longest), then <BOS> and [c_dis]. The
    output layer is tied to the level's slice of the token embedding. Deviations from the paper,
    stated here: the IKD score is c_dis' = W c_dis + b against E_t (a learned projection, so the
    decoder width need not equal the embedding width; eq. 7 uses the plain dot product); the
    item score used for ranking is the sum over levels of the log-probability renormalised over
    the symbols the trie allows (see ``unger_recbole/generation/beam_search.py``).
    """

    # Stage I + quantization run first, on the same split (see unger_recbole/pipeline.py).
    build_artifacts = staticmethod(build_unger_artifacts)
    trainer_class = WarmupTrainer

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.n_encoder_layers = config["n_encoder_layers"]
        self.n_decoder_layers = config["n_decoder_layers"]
        self.n_heads = config["n_heads"]
        self.inner_size = config["inner_size"]
        self.dropout_prob = config["dropout_prob"]
        self.ikd = config["ikd"]
        self.distill_weight = config["distill_weight"]
        self.distill_negatives = config["distill_negatives"]
        self.beam_size = config["beam_size"]
        self.autocast_dtype = amp_dtype(config) if config["enable_amp"] else None
        self.top_k = max(config["topk"])
        code_table_file = config["code_table_file"]

        table = np.load(code_table_file)
        codes, embeddings = table["codes"], table["integrated"]
        if codes.shape[0] != self.n_items or embeddings.shape[0] != self.n_items:
            raise ValueError(f"{code_table_file} covers {codes.shape[0]} item ids but the dataset has "
                             f"{self.n_items} (padding included): the code table belongs to another dataset.")
        self.codebook_size = int(table["codebook_size"])
        self.code_length = codes.shape[1]
        if self.top_k > self.beam_size:
            raise ValueError(f"beam_size ({self.beam_size}) must be >= the largest topk ({self.top_k}).")

        K, L, d = self.codebook_size, self.code_length, self.hidden_size
        # Row 0 (RecBole's padding item) has no code; the trie indexes real items 1..n-1 as 0..n-2.
        self.trie = PrefixTrie.from_codes(codes[1:], K)
        symbols = torch.full((self.n_items, L), K, dtype=torch.long)
        symbols[1:] = self.trie.symbols
        level_offset = 1 + torch.arange(L) * (K + 1)
        item_tokens = symbols + level_offset
        item_tokens[0] = PAD
        item_tokens[symbols == K] = PAD  # END carries no information in the history
        self.register_buffer("item_tokens", item_tokens, persistent=False)
        self.register_buffer("item_symbols", symbols, persistent=False)
        self.register_buffer("level_offset", level_offset, persistent=False)
        self.register_buffer("integrated_embeddings", torch.as_tensor(embeddings, dtype=torch.float32),
                             persistent=False)
        self.bos_token = 1 + L * (K + 1)
        self.distill_token = self.bos_token + 1

        self.token_embedding = nn.Embedding(self.distill_token + 1, d, padding_idx=PAD)
        self.position_embedding = nn.Embedding(self.max_seq_length, d)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d, self.n_heads, self.inner_size, self.dropout_prob) for _ in range(self.n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(d)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d, self.n_heads, self.inner_size, self.dropout_prob) for _ in range(self.n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.distill_projection = nn.Linear(d, embeddings.shape[1])
        self.apply(self._init_weights)
        self.reset_generation_stats()

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ----- encoder -----
    def encode(self, item_seq, item_seq_len):
        """Memory [B, T*L, d] and its mask [B, T*L] from histories [B, T] (RecBole, left-aligned)."""
        B, T = item_seq.shape
        tokens = self.item_tokens[item_seq]  # [B, T, L]
        # Position = recency (0 = most recent item), shared by the tokens of one item.
        recency = (item_seq_len[:, None] - 1 - torch.arange(T, device=item_seq.device)).clamp(min=0)
        x = self.token_embedding(tokens) + self.position_embedding(recency)[:, :, None, :]
        x = self.dropout(x.reshape(B, T * self.code_length, -1))
        mask = tokens.reshape(B, -1) != PAD
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return self.encoder_norm(x), mask

    def memory_key_values(self, memory):
        return [layer.memory_key_value(memory) for layer in self.decoder_layers]

    # ----- decoder -----
    def level_logits(self, hidden, level):
        """Logits over the K+1 symbols of ``level`` (output layer tied to the token embedding)."""
        start = 1 + level * (self.codebook_size + 1)
        return hidden @ self.token_embedding.weight[start:start + self.codebook_size + 1].T

    def forward(self, item_seq, item_seq_len, target_items, with_distill_token):
        """Teacher-forced decoder states [B, L(+1), d]: position l predicts level l; with
        ``with_distill_token`` the extra last position is [c_dis]'s output."""
        memory, memory_mask = self.encode(item_seq, item_seq_len)
        target_tokens = self.item_symbols[target_items] + self.level_offset  # [B, L]
        bos = torch.full_like(target_tokens[:, :1], self.bos_token)
        pieces = [bos, target_tokens[:, :-1]]
        if with_distill_token:
            # [c_dis] follows the full code so that it attends to every code token; the causal
            # mask keeps it invisible to the code positions, so it cannot leak into generation.
            pieces += [target_tokens[:, -1:], torch.full_like(bos, self.distill_token)]
        x = self.dropout(self.token_embedding(torch.cat(pieces, dim=1)))
        for layer, memory_kv in zip(self.decoder_layers, self.memory_key_values(memory)):
            x, _ = layer(x, memory_kv, memory_mask)
        hidden = self.decoder_norm(x)
        if with_distill_token:
            hidden = torch.cat([hidden[:, :self.code_length], hidden[:, -1:]], dim=1)
        return hidden

    def generation_loss(self, hidden, target_items):
        """Eq. (6): cross-entropy of every code symbol given <BOS> and the previous symbols."""
        symbols = self.item_symbols[target_items]
        losses = [F.cross_entropy(self.level_logits(hidden[:, level], level), symbols[:, level])
                  for level in range(self.code_length)]
        return torch.stack(losses).mean()

    def distillation_loss(self, distill_hidden, target_items):
        """Eq. (7): softmax cross-entropy of [c_dis] against E_t and sampled negatives E_neg."""
        query = self.distill_projection(distill_hidden)  # [B, D_e]
        positive = (query * self.integrated_embeddings[target_items]).sum(-1, keepdim=True)
        negatives = self.sample_negatives(target_items)  # [B, N]
        negative = torch.einsum("bd,bnd->bn", query, self.integrated_embeddings[negatives])
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(target_items))

    def sample_negatives(self, target_items):
        """``distill_negatives`` uniform items per row from 1..n_items-1, never the target."""
        n_real = self.n_items - 1
        offsets = torch.randint(1, n_real, (len(target_items), self.distill_negatives), device=target_items.device)
        # target + offset (mod n_real) over real ids 1..n_real hits every other item uniformly.
        return (target_items[:, None] - 1 + offsets) % n_real + 1

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        hidden = self.forward(item_seq, item_seq_len, target, with_distill_token=self.ikd)
        loss = self.generation_loss(hidden, target)
        if self.ikd:
            loss = loss + self.distill_weight * self.distillation_loss(hidden[:, -1], target)
        return loss

    # ----- inference -----
    def level_log_probs(self, item_seq, item_seq_len, items):
        """Teacher-forced, per level l: log-probabilities [B, K+1] over the symbols the trie allows
        after the first l symbols of each item's own code (-inf elsewhere); and the symbols [B, L]."""
        hidden = self.forward(item_seq, item_seq_len, items, with_distill_token=False)
        symbols = self.item_symbols[items]
        node = torch.zeros_like(items)
        per_level = []
        for level in range(self.code_length):
            per_level.append(masked_log_softmax(self.level_logits(hidden[:, level], level),
                                                self.trie.allowed[level][node]))
            node = self.trie.child[level][node, symbols[:, level]].clamp(min=0)
        return per_level, symbols

    def predict(self, interaction):
        """Score of one given item per user: its code's log-probability (same definition as the beam)."""
        per_level, symbols = self.level_log_probs(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                                  interaction[self.ITEM_ID])
        return sum(log_probs.gather(1, symbols[:, level:level + 1]).squeeze(1)
                   for level, log_probs in enumerate(per_level))

    @torch.no_grad()
    def generate(self, item_seq, item_seq_len, beam_size=None, top_k=None):
        """Top-k items (RecBole internal ids, -1 where fewer) and their scores, by constrained beam search."""
        beam_size, top_k = beam_size or self.beam_size, top_k or self.top_k
        # Mixed precision (enable_amp) for the network; beam scores are accumulated in float32.
        with torch.autocast(item_seq.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            memory, memory_mask = self.encode(item_seq, item_seq_len)
            decoder = IncrementalDecoder(self, memory, memory_mask)
            if self.trie.device != memory.device:
                self.trie.to(memory.device)
            items, scores = constrained_beam_search(decoder, self.trie, len(item_seq), beam_size, top_k)
        return torch.where(items >= 0, items + 1, items), scores

    def reset_generation_stats(self):
        self.generation_stats = {"users": 0, "invalid": 0, "short_lists": 0}

    def generation_report(self):
        """Invalid-generation rate (a code that is no item; 0 by construction of the trie) and the
        fraction of users who got fewer than top-k items, since the last reset."""
        users = max(1, self.generation_stats["users"])
        return {"users": self.generation_stats["users"],
                "invalid_rate": self.generation_stats["invalid"] / users,
                "short_list_rate": self.generation_stats["short_lists"] / users}

    def full_sort_predict(self, interaction):
        """[B, n_items] scores: beam log-probabilities for generated items, -inf for all others."""
        items, scores = self.generate(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        valid = items >= 0
        self.generation_stats["users"] += len(items)
        self.generation_stats["invalid"] += int((~valid & torch.isfinite(scores)).sum())
        self.generation_stats["short_lists"] += int((~valid).any(dim=1).sum())
        full = torch.full((len(items), self.n_items), float("-inf"), device=items.device)
        return full.scatter_(1, items.clamp(min=0), torch.where(valid, scores, float("-inf")))


class IncrementalDecoder:
    """Drives UNGER's decoder one level at a time for :func:`constrained_beam_search`.

    Cross-attention keys/values are computed once per user and shared by its beams; each layer
    keeps a self-attention key/value cache that is reordered by ``parent_beams`` at every step,
    so a step costs one token per beam, not a re-run over the prefix.
    """

    def __init__(self, model, memory, memory_mask):
        self.model, self.memory_mask = model, memory_mask
        self.memory_kv = model.memory_key_values(memory)
        self.cache = None

    def step(self, level, last_symbols, parent_beams):
        model = self.model
        B = self.memory_mask.shape[0]
        if level == 0:
            tokens = torch.full((B, 1), model.bos_token, dtype=torch.long, device=self.memory_mask.device)
            self.cache = [(None, None)] * len(model.decoder_layers)
        else:
            batch = torch.arange(B, device=parent_beams.device)[:, None]
            width = parent_beams.shape[1]

            def reorder(cached):  # level 0 ran a single beam: expand is then a free broadcast
                return cached.expand(B, width, *cached.shape[2:])[batch, parent_beams]

            self.cache = [(reorder(key), reorder(value)) for key, value in self.cache]
            tokens = last_symbols + model.level_offset[level - 1]
        x = model.token_embedding(tokens)[:, :, None, :]  # [B, W, 1, d]
        new_cache = []
        for layer, memory_kv, layer_cache in zip(model.decoder_layers, self.memory_kv, self.cache):
            x, layer_cache = layer(x, memory_kv, self.memory_mask, self_kv_cache=layer_cache)
            new_cache.append(layer_cache)
        self.cache = new_cache
        return model.level_logits(model.decoder_norm(x[:, :, 0]), level).float()
