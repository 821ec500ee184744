"""Building blocks shared by UNGER's two stages: the modality adaptation layer (eq. 2) and the
transformer layers of the stage-II encoder-decoder."""

import math

import torch
from torch import nn
from torch.nn import functional as F


class AdaLN(nn.Module):
    """Adaptive layer normalisation, conditioned on its own input.

    The UNGER paper cites DiT's AdaLN without saying what conditions it. Here the condition is
    the (projected) semantic embedding itself, following DiT's adaLN-Zero recipe:

        (gamma, beta) = Linear(SiLU(x))            # Linear initialised to zero
        AdaLN(x)      = LayerNorm(x) * (1 + gamma) + beta   # LayerNorm without its own affine

    so the layer starts as a plain LayerNorm and learns an input-dependent scale and shift.
    """

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.modulation = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x):
        gamma, beta = self.modulation(F.silu(x)).chunk(2, dim=-1)
        return self.norm(x) * (1 + gamma) + beta


class ModalityAdaptationLayer(nn.Module):
    """MAL, paper eq. (2): E_T = AdaLN(W E_S + b), mapping semantic into collaborative space."""

    def __init__(self, semantic_dim, dim):
        super().__init__()
        self.projection = nn.Linear(semantic_dim, dim)
        self.adaln = AdaLN(dim)

    def forward(self, semantic_embeddings):
        return self.adaln(self.projection(semantic_embeddings))


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention`` (fused kernels on GPU)."""

    def __init__(self, dim, n_heads, dropout):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"hidden size {dim} is not divisible by the number of heads {n_heads}")
        self.n_heads, self.head_dim, self.dropout = n_heads, dim // n_heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x):
        return x.view(*x.shape[:-1], self.n_heads, self.head_dim).transpose(-2, -3)

    def project_key_value(self, memory):
        key, value = self.key_value(memory).chunk(2, dim=-1)
        return self.split_heads(key), self.split_heads(value)

    def forward(self, x, key, value, mask=None, is_causal=False):
        """``x`` [..., Tq, D]; ``key``/``value`` [..., H, Tk, Dh] (from :meth:`project_key_value`);
        ``mask`` bool, True where attention is allowed, broadcastable to [..., H, Tq, Tk]."""
        query = self.split_heads(self.query(x))
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(-2, -3).reshape(*x.shape))


class FeedForward(nn.Sequential):
    def __init__(self, dim, inner_dim, dropout):
        super().__init__(nn.Linear(dim, inner_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner_dim, dim))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer (self-attention + feed-forward)."""

    def __init__(self, dim, n_heads, inner_dim, dropout):
        super().__init__()
        self.self_attention = MultiHeadAttention(dim, n_heads, dropout)
        self.feed_forward = FeedForward(dim, inner_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, key_padding_mask):
        """``key_padding_mask`` [B, T] bool, True for real tokens."""
        h = self.norm1(x)
        key, value = self.self_attention.project_key_value(h)
        x = x + self.dropout(self.self_attention(h, key, value, mask=key_padding_mask[:, None, None, :]))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: causal self-attention, cross-attention, feed-forward.

    Cross-attention keys/values are computed once per user (:meth:`memory_key_value`). During
    beam search the beams of one user are stacked along the query axis ([B, W*t, D]) and attend
    to that user's memory without copying it W times: cross-attention treats queries
    independently, so this is exact.
    """

    def __init__(self, dim, n_heads, inner_dim, dropout):
        super().__init__()
        self.self_attention = MultiHeadAttention(dim, n_heads, dropout)
        self.cross_attention = MultiHeadAttention(dim, n_heads, dropout)
        self.feed_forward = FeedForward(dim, inner_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def memory_key_value(self, memory):
        return self.cross_attention.project_key_value(memory)

    def forward(self, x, memory_kv, memory_mask, self_kv_cache=None):
        """Training / full-prefix mode when ``self_kv_cache`` is None: ``x`` [B, T, D], causal.

        Incremental mode: ``x`` [B, W, 1, D] holds the newest token of each of W beams and
        ``self_kv_cache`` is ``(keys, values)`` [B, W, H, t, Dh] of earlier tokens (or None
        tensors at the first step); returns (output, updated cache).
        """
        h = self.norm1(x)
        key, value = self.self_attention.project_key_value(h)
        if self_kv_cache is None:
            x = x + self.dropout(self.self_attention(h, key, value, is_causal=True))
            new_cache = None
        else:
            past_key, past_value = self_kv_cache
            if past_key is not None:
                key, value = torch.cat([past_key, key], dim=-2), torch.cat([past_value, value], dim=-2)
            x = x + self.self_attention(h, key, value)
            new_cache = (key, value)
        h = self.norm2(x)
        memory_key, memory_value = memory_kv
        if h.dim() == 4:  # [B, W, 1, D] -> beams as queries of one user: [B, W, D]
            cross = self.cross_attention(h.squeeze(2), memory_key, memory_value,
                                         mask=memory_mask[:, None, None, :]).unsqueeze(2)
        else:
            cross = self.cross_attention(h, memory_key, memory_value, mask=memory_mask[:, None, None, :])
        x = x + self.dropout(cross)
        x = x + self.dropout(self.feed_forward(self.norm3(x)))
        return x, new_cache


def sinusoidal_positions(length, dim):
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table
