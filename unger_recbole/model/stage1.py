"""UNGER stage I: integrated item embeddings (paper §3.3).

Xiao et al., "UNGER: Generative Recommendation with A Unified Code via Semantic and Collaborative
Integration", 2025.

A collaborative sequential recommender (DIN-style target attention, or a SASRec-style causal
transformer) with item ID embeddings E_C is trained on next-item prediction over all items
(eq. 4) jointly with the cross-modality knowledge alignment task (eq. 3) between E_C and the
adapted semantic embeddings E_T = MAL(E_S) (eq. 2): L = L_seq + alpha * L_align (eq. 5).
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from unger_recbole.model.layers import ModalityAdaptationLayer
from unger_recbole.pipeline import build_semantic_artifact

INTEGRATED_CHOICES = ("item_id", "adapted_semantic", "sum")


def info_nce(anchors, positives, temperature, similarity="cosine"):
    """Cross-modality knowledge alignment loss, paper eq. (3), with in-batch negatives.

    Row i of ``anchors`` (E_C of item i) is pulled towards row i of ``positives`` (E_T of item
    i) and pushed from every other row j != i. Deviation: eq. (3) as printed puts the sum over
    items inside the log and leaves the positive out of the denominator; we use the standard
    Info-NCE it cites ([3], mean over items of -log softmax), whose denominator includes it.
    """
    if similarity == "cosine":
        anchors, positives = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"align_similarity must be 'cosine' or 'dot', got {similarity!r}")
    logits = anchors @ positives.T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def din_target_attention_scores(history, history_mask, candidates, attention_weight):
    """Scores of every candidate item for every user with DIN-style target attention.

    DIN pools the history with weights that depend on the candidate (target) item. Deviation:
    DIN's MLP activation unit is replaced by a bilinear score h_j^T W e_t / sqrt(d), which makes
    scoring all N items one batched matrix product instead of N MLP passes (eq. 4 needs all):

        a_j(t)   = softmax_j(h_j^T W e_t / sqrt(d))      over real history positions j
        score(t) = sum_j a_j(t) * h_j^T e_t

    ``history`` [B, T, d], ``history_mask`` [B, T] bool, ``candidates`` [N, d] -> [B, N].
    """
    d = history.shape[-1]
    attention_logits = (history @ attention_weight) @ candidates.T / d ** 0.5  # [B, T, N]
    attention_logits = attention_logits.masked_fill(~history_mask[:, :, None], float("-inf"))
    attention = torch.softmax(attention_logits, dim=1)
    return (attention * (history @ candidates.T)).sum(dim=1)


class UNGERStage1(SequentialRecommender):
    """Stage I of UNGER as a RecBole sequential recommender.

    Deviations from the paper, all yaml-selectable: ``stage1_backbone: din`` uses the bilinear
    target attention of :func:`din_target_attention_scores` (DIN's MLP unit is too costly for
    a full softmax over the catalogue); ``stage1_backbone: sasrec`` uses a causal transformer.
    The semantic encoder is whatever ``encoder`` names (the paper uses Llama2-7b; the offline
    default is all-MiniLM-L6-v2). ``integrated_embedding`` picks the tensor exported as the
    integrated item embedding: ``item_id`` (E_C after joint training, default), ``adapted_semantic``
    (E_T) or ``sum`` (E_C + E_T).
    """

    # Run alone (--model=UNGERStage1, trained with epochs/learning_rate), it needs E_S first.
    build_artifacts = staticmethod(build_semantic_artifact)
    properties_name = "UNGER"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["stage1_embedding_size"]
        self.backbone = config["stage1_backbone"]
        self.dropout_prob = config["stage1_dropout"]
        self.n_layers = config["stage1_n_layers"]
        self.n_heads = config["stage1_n_heads"]
        self.align_weight = config["align_weight"]
        self.align_temperature = config["align_temperature"]
        self.align_similarity = config["align_similarity"]
        self.integrated_embedding = config["integrated_embedding"]
        semantic_file = config["semantic_embedding_file"]

        if self.backbone not in ("din", "sasrec"):
            raise ValueError(f"stage1_backbone must be 'din' or 'sasrec', got {self.backbone!r}")
        if self.integrated_embedding not in INTEGRATED_CHOICES:
            raise ValueError(f"integrated_embedding must be one of {INTEGRATED_CHOICES}, got "
                             f"{self.integrated_embedding!r}")
        d = self.embedding_size
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, d)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.layer_norm = nn.LayerNorm(d)
        if self.backbone == "din":
            self.attention_weight = nn.Parameter(torch.eye(d))
        else:
            layer = nn.TransformerEncoderLayer(d, self.n_heads, 4 * d, self.dropout_prob,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, self.n_layers, enable_nested_tensor=False)

        # E_S: fixed semantic embeddings aligned to RecBole's internal item ids (row 0 = padding).
        semantic = torch.as_tensor(np.load(semantic_file)["embeddings"], dtype=torch.float32)
        if semantic.shape[0] != self.n_items:
            raise ValueError(f"{semantic_file} has {semantic.shape[0]} rows but the dataset has "
                             f"{self.n_items} item ids (padding included): stale semantic embeddings?")
        self.register_buffer("semantic_embeddings", semantic, persistent=False)
        self.modality_adaptation = ModalityAdaptationLayer(semantic.shape[1], d)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def adapted_semantic_embeddings(self, items=None):
        semantic = self.semantic_embeddings if items is None else self.semantic_embeddings[items]
        return self.modality_adaptation(semantic)

    def encode_history(self, item_seq):
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        history = self.item_embedding(item_seq) + self.position_embedding(positions)
        return self.dropout(self.layer_norm(history))

    def forward(self, item_seq, item_seq_len, candidates):
        """Scores [B, N] of ``candidates`` [N, d] for each user's history (eq. 4's logits)."""
        history = self.encode_history(item_seq)
        mask = item_seq != 0
        if self.backbone == "din":
            return din_target_attention_scores(history, mask, candidates, self.attention_weight)
        causal = torch.triu(torch.ones(item_seq.shape[1], item_seq.shape[1], dtype=torch.bool,
                                       device=item_seq.device), diagonal=1)
        output = self.transformer(history, mask=causal, src_key_padding_mask=~mask)
        user = self.gather_indexes(output, item_seq_len - 1)
        return user @ candidates.T

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        seq_loss = F.cross_entropy(self.forward(item_seq, item_seq_len, self.item_embedding.weight), target)
        if self.align_weight == 0:
            return seq_loss
        items = torch.unique(target)  # duplicates would be false negatives of each other
        align_loss = info_nce(self.item_embedding(items), self.adapted_semantic_embeddings(items),
                              self.align_temperature, self.align_similarity)
        return seq_loss + self.align_weight * align_loss

    def predict(self, interaction):
        item = interaction[self.ITEM_ID]
        scores = self.full_sort_predict(interaction)
        return scores.gather(1, item[:, None]).squeeze(1)

    def full_sort_predict(self, interaction):
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.item_embedding.weight)

    @torch.no_grad()
    def export_embeddings(self):
        """{name: [n_items, d] float32 array} for the integrated embedding and its parts."""
        item_id = self.item_embedding.weight
        adapted = self.adapted_semantic_embeddings()
        integrated = {"item_id": item_id, "adapted_semantic": adapted, "sum": item_id + adapted}
        return {
            "integrated": integrated[self.integrated_embedding].cpu().numpy(),
            "item_id": item_id.cpu().numpy(),
            "adapted_semantic": adapted.cpu().numpy(),
        }
