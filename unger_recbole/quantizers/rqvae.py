"""RQ-VAE quantizer (TIGER, Rajput et al. 2023; UNGER paper §4.6 "Choice of quantization methods").

An MLP encoder maps each item embedding to a latent ``z``; ``num_levels`` codebooks of
``codebook_size`` vectors quantize ``z`` residually (level ``l`` quantizes what levels ``< l`` left
over); an MLP decoder reconstructs the embedding from the sum of the chosen code vectors. Loss =
reconstruction MSE + sum over levels of (codebook loss + ``beta`` * commitment loss), with the
straight-through estimator carrying decoder gradients to the encoder.

Choices / deviations from TIGER:

* Adam (lr 1e-3) for ``epochs`` epochs instead of Adagrad for 20k epochs. The defaults (TIGER's
  MLP ``[512, 256, 128] -> 32``, ``epochs: 50``, ``batch_size: 256``) train 12k items x 128-d in
  about a minute on one CPU thread (30 epochs: 37 s measured, 9 collisions / 12k items). Loss
  curves are kept in the report (``loss_history``, ``recon_loss_history``).
* After every epoch, codebook vectors no item used in that epoch are moved onto residuals of
  random items (``restart_dead_codes``). In 10-epoch trials on 12k synthetic items the first level
  collapsed to 57 of 256 codes (7,390 collisions) without it, and used 253/256 (40 collisions)
  with it.
* Codebooks are initialised with k-means (k-means++ + Lloyd) on the residuals of the untrained
  encoder's latents of (a sample of up to 65,536) items, level by level.
* Collisions (items with the same ``num_levels``-token code) are resolved as TIGER does: one extra
  token is appended to *every* code, ``0, 1, 2, ...`` within each group of colliding items and
  ``0`` for items with a unique code, so all codes have length ``num_levels + 1`` and the table
  stays prefix-free. A group with more than ``codebook_size`` members cannot be disambiguated by
  one token and raises ``ValueError``. The report gives ``collisions_before_fix`` (items that
  share a code with an earlier item, i.e. ``n_items - distinct codes``), ``colliding_items``
  (items in groups of size > 1) and ``max_collision_group``.
* Training runs under ``torch.random.fork_rng`` with ``torch.manual_seed(seed)``, so the global
  RNG state of the caller is untouched and the same seed gives the same codes (same device).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import Quantizer, register_quantizer, resolve_device
from .hkmeans import kmeans

_INIT_SAMPLE = 65536


def _mlp(dims: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Encoder MLP -> residual quantizer (``num_levels`` x ``codebook_size``) -> decoder MLP."""

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        latent_dim: int,
        num_levels: int,
        codebook_size: int,
        beta: float = 0.25,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden_dims, latent_dim]
        self.encoder = _mlp(dims, dropout)
        self.decoder = _mlp(dims[::-1], dropout)
        self.codebooks = nn.Parameter(torch.randn(num_levels, codebook_size, latent_dim) * 0.1)
        self.beta = beta

    @staticmethod
    def _nearest(r: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        d = (r * r).sum(1, keepdim=True) - 2.0 * r @ book.t() + (book * book).sum(1).unsqueeze(0)
        return d.argmin(dim=1)

    def quantize(self, z: torch.Tensor):
        """Residual quantization: ``(z_q with straight-through grads, codes [B, L], vq loss)``."""
        residual = z
        z_q = torch.zeros_like(z)
        codes = []
        vq_loss = z.new_zeros(())
        for book in self.codebooks:
            idx = self._nearest(residual.detach(), book)
            e = book[idx]
            vq_loss = vq_loss + F.mse_loss(e, residual.detach()) + self.beta * F.mse_loss(
                residual, e.detach()
            )
            z_q = z_q + e.detach()
            # residual_l = z - sg(e_0 + ... + e_{l-1}): the commitment term of level l pulls z
            # towards the cumulative quantization, as in RQ-VAE (Lee et al., 2022)
            residual = residual - e.detach()
            codes.append(idx)
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return z_q, torch.stack(codes, dim=1), vq_loss

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        z_q, codes, vq_loss = self.quantize(z)
        x_hat = self.decoder(z_q)
        return x_hat, codes, vq_loss

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, gen: torch.Generator, max_iter: int = 20) -> None:
        """k-means initialisation of every level on the residuals left by the previous levels."""
        residual = self.encoder(x)
        for level in range(self.codebooks.shape[0]):
            k = self.codebooks.shape[1]
            centroids, labels, _ = kmeans(residual, k, gen, max_iter=max_iter, tol=1e-3)
            self.codebooks.data[level] = centroids
            residual = residual - centroids[labels]

    @torch.no_grad()
    def restart_dead_codes(
        self, x: torch.Tensor, used: torch.Tensor, gen: torch.Generator
    ) -> int:
        """Move codebook vectors unused during the last epoch (``used[l, k] == False``) onto
        residuals of random items at their level; returns how many were restarted."""
        n = x.shape[0]
        sample = torch.randperm(n, generator=gen, device=gen.device)[: min(n, 4096)].to(x.device)
        residual = self.encoder(x[sample])
        restarted = 0
        for level, book in enumerate(self.codebooks):
            dead = torch.nonzero(~used[level]).flatten()
            if dead.numel():
                pick = torch.randint(
                    residual.shape[0], (dead.numel(),), generator=gen, device=gen.device
                ).to(x.device)
                self.codebooks.data[level, dead] = residual[pick]
                restarted += int(dead.numel())
            residual = residual - book[self._nearest(residual, book)]
        return restarted

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        out = []
        for s in range(0, x.shape[0], batch_size):
            _, codes, _ = self.quantize(self.encoder(x[s : s + batch_size]))
            out.append(codes)
        return torch.cat(out, dim=0)


def disambiguate(codes: np.ndarray, codebook_size: int) -> tuple:
    """TIGER's collision fix: append ``0, 1, 2, ...`` within each group of identical codes.

    Returns ``(codes [n, L + 1], stats dict)``. Raises ``ValueError`` if a group is larger than
    ``codebook_size``.
    """
    n = codes.shape[0]
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, counts)
    max_group = int(counts.max())
    if max_group > codebook_size:
        raise ValueError(
            f"RQ-VAE assigned the same {codes.shape[1]}-token code to {max_group} items, more "
            f"than codebook_size={codebook_size} values one disambiguation token can tell apart; "
            f"raise codebook_size or num_levels (or train longer) in properties/quantizer/rqvae.yaml"
        )
    stats = {
        "collisions_before_fix": int(n - counts.size),
        "colliding_items": int(counts[counts > 1].sum()),
        "max_collision_group": max_group,
    }
    return np.concatenate([codes, rank[:, None]], axis=1), stats


@register_quantizer("rqvae")
class RQVAEQuantizer(Quantizer):
    """RQ-VAE codes of length ``num_levels + 1`` (last token resolves collisions)."""

    defaults: Dict[str, Any] = {
        "codebook_size": 256,
        "num_levels": 3,
        "hidden_dims": [512, 256, 128],
        "latent_dim": 32,
        "dropout": 0.0,
        "beta": 0.25,
        "epochs": 50,
        "batch_size": 256,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "kmeans_init": True,
        "restart_dead_codes": True,
        "seed": 2020,
        "device": "auto",
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        for key in ("num_levels", "latent_dim", "epochs", "batch_size"):
            if isinstance(p[key], bool) or int(p[key]) < 1:
                raise ValueError(f"{key} must be a positive integer, got {p[key]!r}")
        if not isinstance(p["hidden_dims"], (list, tuple)) or any(int(h) < 1 for h in p["hidden_dims"]):
            raise ValueError(
                f"hidden_dims must be a list of positive layer widths, got {p['hidden_dims']!r}"
            )
        if float(p["lr"]) <= 0:
            raise ValueError(f"lr must be > 0, got {p['lr']!r}")
        self.device = resolve_device(p["device"])
        self.model: RQVAE | None = None

    def quantize(self, embeddings: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        x_np = self._check_embeddings(embeddings)
        p = self.params
        n, dim = x_np.shape
        K, L = self.codebook_size, int(p["num_levels"])
        bs = int(p["batch_size"])
        seed = int(p["seed"])
        x = torch.from_numpy(np.ascontiguousarray(x_np)).to(self.device)

        cuda_devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
            model = RQVAE(
                dim,
                [int(h) for h in p["hidden_dims"]],
                int(p["latent_dim"]),
                L,
                K,
                beta=float(p["beta"]),
                dropout=float(p["dropout"]),
            ).to(self.device)
            if p["kmeans_init"]:
                if n > _INIT_SAMPLE:
                    sample = torch.randperm(n, generator=gen, device=gen.device)[:_INIT_SAMPLE]
                    model.init_codebooks(x[sample.to(x.device)], gen)
                else:
                    model.init_codebooks(x, gen)
            opt = torch.optim.Adam(
                model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
            )
            loss_hist, recon_hist = [], []
            restarted = 0
            model.train()
            for _ in range(int(p["epochs"])):
                perm = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
                used = torch.zeros(L, K, dtype=torch.bool, device=x.device)
                tot = rec = 0.0
                for s in range(0, n, bs):
                    xb = x[perm[s : s + bs]]
                    x_hat, codes_b, vq_loss = model(xb)
                    for level in range(L):
                        used[level, codes_b[:, level]] = True
                    recon = F.mse_loss(x_hat, xb)
                    loss = recon + vq_loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * xb.shape[0]
                    rec += float(recon.detach()) * xb.shape[0]
                loss_hist.append(tot / n)
                recon_hist.append(rec / n)
                if p["restart_dead_codes"]:
                    restarted += model.restart_dead_codes(x, used, gen)
            model.eval()
            raw = model.encode_codes(x, max(bs, 4096)).cpu().numpy().astype(np.int64)
        self.model = model

        usage = [int(np.unique(raw[:, l]).size) for l in range(L)]
        codes, stats = disambiguate(raw, K)
        return self._finish(
            codes,
            start,
            **stats,
            codebook_usage=usage,
            dead_codes_restarted=restarted,
            loss_history=loss_hist,
            recon_loss_history=recon_hist,
            device=self.device,
        )
