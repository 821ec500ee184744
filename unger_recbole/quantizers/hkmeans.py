"""Hierarchical k-means quantizer (UNGER paper §3.3 "Unified Codes", following RecForest/[39]).

All items are split into ``K`` clusters with k-means; every cluster holding more than one item is
split again into ``K`` children, recursively, until each leaf holds a single item. An item's code
is the list of cluster indices along its root-to-leaf path, so codes have variable length and are
prefix-free by construction (an item ends at a leaf, leaves are never internal nodes).

Implementation notes (deviations / choices):

* k-means is k-means++ initialisation + Lloyd iterations written in torch (runs on the GPU when
  ``device`` resolves to CUDA). Distances use the ``|x|^2 - 2 x.c + |c|^2`` matmul trick in row
  chunks so memory stays bounded (about 64 MB of distances per chunk).
* Like faiss, centroids are fitted on at most ``max_points_per_centroid * K`` sampled points of a
  cluster (then all points are assigned); this keeps the first level of 1M items fast.
* A cluster with ``n <= K`` items is not clustered: its items get the ``n`` distinct indices
  ``0..n-1`` (in item-id order) at the next level; with ``K >= n_items`` codes have one token.
  Such a last token means nothing across clusters (index 5 of two clusters shares one embedding),
  which measurably slows stage II (docs/RESULTS.md, "Why stage II is below SASRec-CE").
* Empty k-means clusters are re-seeded with the points farthest from their centroid during Lloyd;
  if some stay empty the non-empty children are renumbered ``0..m-1`` (in centroid order), so
  tokens are dense.
* If k-means cannot split a cluster (e.g. all its embeddings are identical, so only one child is
  non-empty) the cluster is split deterministically into ``K`` contiguous chunks of item ids; each
  such event is counted in ``report["forced_splits"]``. Every split strictly shrinks the clusters,
  so the recursion always terminates.
* One ``torch.Generator`` seeded from ``seed`` drives all random choices (breadth-first order),
  so the same seed, data and device give the same codes.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .base import PAD, Quantizer, register_quantizer, resolve_device

_DIST_BUDGET = 1 << 24  # floats of distance matrix per chunk (64 MB in float32)


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _assign(
    x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row of ``x`` and the squared distance to it (chunked)."""
    n, k = x.shape[0], centroids.shape[0]
    c_sq = _sqnorm(centroids)
    chunk = max(1, _DIST_BUDGET // max(k, 1))
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    dists = torch.empty(n, dtype=x.dtype, device=x.device)
    ct = centroids.t().contiguous()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = torch.addmm(c_sq.unsqueeze(0), x[s:e], ct, beta=1.0, alpha=-2.0)
        d.add_(x_sq[s:e].unsqueeze(1))
        m, lab = d.min(dim=1)
        labels[s:e] = lab
        dists[s:e] = m.clamp_min_(0.0)
    return labels, dists


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums of the rows of ``x`` (a sparse one-hot matmul: much faster on CPU than
    ``index_add_`` and deterministic)."""
    n = x.shape[0]
    ind = torch.stack([labels, torch.arange(n, device=x.device)])
    onehot = torch.sparse_coo_tensor(
        ind, torch.ones(n, dtype=x.dtype, device=x.device), (k, n), check_invariants=False
    )
    return torch.sparse.mm(onehot, x)


def _kmeanspp(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, gen: torch.Generator
) -> torch.Tensor:
    """k-means++ seeding: ``k`` centroids drawn with probability proportional to D(x)^2."""
    n, dim = x.shape
    centroids = torch.empty(k, dim, dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=gen, device=gen.device).item())
    centroids[0] = x[first]
    d2 = (x_sq - 2.0 * (x @ x[first]) + x_sq[first]).clamp_min_(0.0)
    for i in range(1, k):
        cum = torch.cumsum(d2.double(), dim=0)
        total = cum[-1]
        u = torch.rand(1, generator=gen, device=gen.device, dtype=torch.float64).to(x.device)
        if float(total) <= 0.0:
            idx = int((u * n).long().clamp_max(n - 1).item())
        else:
            idx = int(torch.searchsorted(cum, u * total, right=True).clamp_max(n - 1).item())
        centroids[i] = x[idx]
        d_new = (x_sq - 2.0 * (x @ x[idx]) + x_sq[idx]).clamp_min_(0.0)
        torch.minimum(d2, d_new, out=d2)
    return centroids


def kmeans(
    x: torch.Tensor,
    k: int,
    gen: torch.Generator,
    max_iter: int = 50,
    tol: float = 1e-4,
    max_points_per_centroid: Optional[int] = 256,
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's k-means with k-means++ init.

    Returns ``(centroids [k, dim], labels [n] of all points, iterations run)``. Centroids are fit
    on a random sample of ``max_points_per_centroid * k`` points when ``x`` is larger (``None``:
    use all points); Lloyd stops when at most ``tol * n`` points change cluster. ``k`` may exceed
    ``n`` (duplicate seeds then give empty clusters).
    """
    n = x.shape[0]
    x_all, x_sq_all = x, _sqnorm(x)
    if max_points_per_centroid is not None and n > max_points_per_centroid * k:
        m = int(max_points_per_centroid * k)
        sample = torch.randperm(n, generator=gen, device=gen.device)[:m].to(x.device)
        x, x_sq = x_all[sample], x_sq_all[sample]
        n = m
    else:
        x_sq = x_sq_all
    centroids = _kmeanspp(x, x_sq, k, gen)
    prev: Optional[torch.Tensor] = None
    it = 0
    for it in range(1, max_iter + 1):
        labels, dists = _assign(x, x_sq, centroids)
        if prev is not None and int((labels != prev).sum()) <= tol * n:
            break
        prev = labels
        counts = torch.bincount(labels, minlength=k)
        sums = _cluster_sums(x, labels, k)
        nonempty = counts > 0
        centroids = torch.where(
            nonempty.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), centroids
        )
        n_empty = int((~nonempty).sum())
        if n_empty and float(dists.max()) > 0.0:
            # re-seed empty clusters with the points farthest from their centroid
            far = torch.topk(dists, min(n_empty, n)).indices
            empty_ids = torch.nonzero(~nonempty).flatten()[: far.numel()]
            centroids[empty_ids] = x[far]
    labels, _ = _assign(x_all, x_sq_all, centroids)
    return centroids, labels, it


@register_quantizer("hkmeans")
class HKMeansQuantizer(Quantizer):
    """Hierarchical k-means codes (variable length, prefix-free, one unique code per item)."""

    defaults: Dict[str, Any] = {
        "codebook_size": 256,
        "seed": 2020,
        "max_iter": 30,
        "tol": 1e-4,
        "max_points_per_centroid": 256,
        "device": "auto",
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        if int(p["max_iter"]) < 1:
            raise ValueError(f"max_iter must be >= 1, got {p['max_iter']!r}")
        if float(p["tol"]) < 0:
            raise ValueError(f"tol must be >= 0, got {p['tol']!r}")
        mpc = p["max_points_per_centroid"]
        if mpc is not None and int(mpc) < 1:
            raise ValueError(f"max_points_per_centroid must be >= 1 or null, got {mpc!r}")
        self.device = resolve_device(p["device"])

    def quantize(self, embeddings: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        x_np = self._check_embeddings(embeddings)
        n = x_np.shape[0]
        K = self.codebook_size
        p = self.params
        mpc = None if p["max_points_per_centroid"] is None else int(p["max_points_per_centroid"])

        x = torch.from_numpy(np.ascontiguousarray(x_np)).to(self.device)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(p["seed"]))

        codes = np.full((n, 8), PAD, dtype=np.int64)
        stats = {"forced_splits": 0, "kmeans_calls": 0, "lloyd_iterations": 0}

        def put(idx: np.ndarray, depth: int, tokens: np.ndarray) -> None:
            nonlocal codes
            if depth >= codes.shape[1]:
                extra = np.full((n, codes.shape[1]), PAD, dtype=np.int64)
                codes = np.concatenate([codes, extra], axis=1)
            codes[idx, depth] = tokens

        if n <= K:
            put(np.arange(n), 0, np.arange(n))
        queue: deque = deque()
        if n > K:
            queue.append((np.arange(n), 0))
        while queue:
            idx, depth = queue.popleft()
            labels = self._split(x, idx, gen, mpc, stats)
            # dense child ids 0..m-1 (drops empty clusters), stable grouping by child
            uniq, child = np.unique(labels, return_inverse=True)
            counts = np.bincount(child, minlength=uniq.size)
            put(idx, depth, child)
            order = np.argsort(child, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rank = np.empty(idx.size, dtype=np.int64)
            rank[order] = np.arange(idx.size) - np.repeat(starts, counts)
            size_of = counts[child]
            small = (size_of > 1) & (size_of <= K)
            if small.any():
                put(idx[small], depth + 1, rank[small])
            for c in np.flatnonzero(counts > K):
                members = order[starts[c] : starts[c] + counts[c]]
                queue.append((idx[members], depth + 1))

        lengths = (codes != PAD).sum(axis=1)
        codes = codes[:, : int(lengths.max())]
        return self._finish(
            codes,
            start,
            depth_max=int(lengths.max()),
            forced_splits=stats["forced_splits"],
            kmeans_calls=stats["kmeans_calls"],
            lloyd_iterations=stats["lloyd_iterations"],
            device=self.device,
        )

    def _split(
        self,
        x: torch.Tensor,
        idx: np.ndarray,
        gen: torch.Generator,
        mpc: Optional[int],
        stats: Dict[str, int],
    ) -> np.ndarray:
        """Child label (in ``[0, K)``, possibly with gaps) of every item in ``idx`` (``> K`` items)."""
        K = self.codebook_size
        n = idx.size
        sub = x[torch.from_numpy(idx).to(x.device)]
        spread = float((sub.max(dim=0).values - sub.min(dim=0).values).max())
        if spread > 0.0:
            _, labels_t, iters = kmeans(
                sub, K, gen, int(self.params["max_iter"]), float(self.params["tol"]), mpc
            )
            stats["kmeans_calls"] += 1
            stats["lloyd_iterations"] += iters
            labels = labels_t.cpu().numpy()
            if np.unique(labels).size >= 2:
                return labels
        # k-means could not split (identical embeddings): K contiguous chunks of item ids
        stats["forced_splits"] += 1
        return (np.arange(n, dtype=np.int64) * K) // n
