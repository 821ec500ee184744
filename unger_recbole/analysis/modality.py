"""Modality diagnostic for the semantic-domination issue (paper §4.3, eq. 9-10, Table 4, Fig. 5).

The paper asks how much of a *final* item embedding E (the plain concatenation of semantic and
collaborative embeddings, or UNGER's integrated embedding) follows the semantic embedding S and how
much it follows the collaborative embedding C, and measures it with KL divergences:

    Similarity_sem = 1 - KL(S||E) / (KL(S||E) + KL(C||E))                    (eq. 9)
    Similarity_col = 1 - KL(C||E) / (KL(S||E) + KL(C||E))                    (eq. 10)

The two numbers sum to 1. The paper does not say what the distributions S, C and E are. The three
embeddings live in spaces of different dimension (e.g. 384, 64 and 128), so they cannot be compared
coordinate by coordinate. Here each embedding is turned into **neighbourhood distributions** that are
comparable across spaces, in the manner of SNE / t-SNE (the paper's Fig. 5 is a t-SNE plot):

* The same anchor items ``a`` and the same reference items ``r_1..r_m`` are used for all three
  embeddings. Both sets are sampled once per seed, at most 2,000 of each by default.
* For an embedding X, the rows are centred (the mean over all items is subtracted) and the cosine
  similarity of each anchor to each reference is taken. An anchor's similarity to itself is left
  out. Then ``P_X(r_j | a) = softmax_j(cos(x_a, x_{r_j}) / temperature)``.
* ``KL(S||E)`` is the mean over anchors of ``KL(P_S(.|a) || P_E(.|a))``. ``KL(C||E)`` is formed the
  same way.

So KL(S||E) is small when every item has the same neighbours, with the same relative closeness, in E
as in S. The measure does not change if an embedding is rotated, scaled as a whole or shifted, and it
does not depend on the dimension. Because of that, "E = S up to rotation/scale" gives KL(S||E) = 0
and Similarity_sem = 1. It is still sensitive to the *relative scale of the parts of a concatenation*:
when the PCA-reduced semantic half has much more variance than the collaborative half, the cosines of
the concatenation are those of the semantic half. This is the domination effect that the paper reports.

Alternatives that were considered (see docs/MODALITY.md):

* ``perplexity=`` (implemented): calibrate a per-anchor temperature so that every distribution has
  the same entropy, like t-SNE's P matrix. This removes differences in how sharp the distributions
  are between the spaces and compares *which* neighbours an item has, not how peaked they are.
* KL between Gaussians fitted to each space, or between histograms of a 1-D projection. Neither
  works across dimensions without an arbitrary projection, and neither captures item-level structure.
* Distributions over the items' own feature values: these need equal dimensions.

The command prints a Table-4-like summary::

    python -m unger_recbole.analysis.modality --semantic S.npz --collaborative C.npz --integrated E.npz
    python -m unger_recbole.analysis.modality --artifact-dir artifacts --dataset-run saved/<run_id> --tsne fig5.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from unger_recbole.fusion import concat_embeddings

__all__ = [
    "sample_anchors_references",
    "neighbour_log_distributions",
    "neighbour_distributions",
    "kl_divergence",
    "relative_modality_similarity",
    "concat_embeddings",
    "align_rows",
    "load_npz_array",
    "find_run_inputs",
    "plot_embedding_tsne",
    "format_table",
    "main",
]

DEFAULT_TEMPERATURE = 0.1
DEFAULT_ANCHORS = 2000
DEFAULT_REFERENCES = 2000


# ---------------------------------------------------------------------------- distributions
def sample_anchors_references(n_items: int, n_anchors: int = DEFAULT_ANCHORS, n_references: int = DEFAULT_REFERENCES,
                              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices of the anchors and the references.

    All items are used when the catalogue is no larger than the requested size. Otherwise the two
    sets are drawn independently and without replacement, using ``np.random.default_rng(seed)``.
    """
    if n_items < 2:
        raise ValueError(f"need at least 2 items, got {n_items}")
    if n_anchors < 1 or n_references < 2:
        raise ValueError("n_anchors must be >= 1 and n_references >= 2")
    rng = np.random.default_rng(seed)

    def pick(k: int) -> np.ndarray:
        return np.arange(n_items) if k >= n_items else np.sort(rng.choice(n_items, size=k, replace=False))

    anchors = pick(n_anchors)
    references = pick(n_references)
    return anchors, references


def _cosines(embeddings: np.ndarray, anchors: np.ndarray, references: np.ndarray, center: bool) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [n_items, dim], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.maximum(norms, 1e-12)  # an all-zero row has cosine 0 to everything
    return unit[anchors] @ unit[references].T


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _entropy_from_log(logp: np.ndarray) -> np.ndarray:
    p = np.exp(logp)
    return -(p * np.where(p > 0, logp, 0.0)).sum(axis=1)


def _calibrated_log_softmax(cos: np.ndarray, self_mask: np.ndarray, perplexity: float) -> np.ndarray:
    """Per-anchor precision ``beta`` found by bisection on log(beta) so that ``exp(H(P)) = perplexity``."""
    n_valid = (~self_mask).sum(axis=1)
    if not 1.0 < perplexity < n_valid.min():
        raise ValueError(f"perplexity must be in (1, {n_valid.min()}) (the number of references per anchor)")
    target = np.log(perplexity)
    lo = np.full((cos.shape[0], 1), -12.0)  # log(beta): beta from 6e-6 (nearly uniform) ...
    hi = np.full((cos.shape[0], 1), 14.0)   # ... to 1.2e6 (nearly one-hot), cosines being in [-1, 1]
    for _ in range(25):  # log(beta) to within 26 / 2**25
        mid = (lo + hi) / 2
        logp = _log_softmax(np.where(self_mask, -np.inf, cos * np.exp(mid)))
        too_flat = (_entropy_from_log(logp) > target)[:, None]  # entropy falls as beta grows
        lo = np.where(too_flat, mid, lo)
        hi = np.where(too_flat, hi, mid)
    return _log_softmax(np.where(self_mask, -np.inf, cos * np.exp((lo + hi) / 2)))


def neighbour_log_distributions(embeddings: np.ndarray, anchors: np.ndarray, references: np.ndarray,
                                temperature: float = DEFAULT_TEMPERATURE, center: bool = True,
                                perplexity: float | None = None) -> np.ndarray:
    """``log P_X(r_j | a)``, shape ``[len(anchors), len(references)]``, float64.

    ``P_X(. | a) = softmax_j(cos(x_a, x_{r_j}) / temperature)`` over the references. The entry for
    ``r_j == a`` is -inf, so its probability is 0. ``center`` subtracts the mean over all rows first.
    With ``perplexity``, the fixed temperature is replaced by a per-anchor one chosen so that
    ``exp(entropy) == perplexity``, as in t-SNE.
    """
    anchors = np.asarray(anchors)
    references = np.asarray(references)
    cos = _cosines(embeddings, anchors, references, center)
    self_mask = anchors[:, None] == references[None, :]
    if (~self_mask).sum(axis=1).min() < 1:
        raise ValueError("every anchor needs at least one reference other than itself")
    if perplexity is not None:
        return _calibrated_log_softmax(cos, self_mask, float(perplexity))
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _log_softmax(np.where(self_mask, -np.inf, cos / float(temperature)))


def neighbour_distributions(embeddings, anchors, references, temperature=DEFAULT_TEMPERATURE, center=True,
                            perplexity=None) -> np.ndarray:
    """``P_X(r_j | a)`` (rows sum to 1). See :func:`neighbour_log_distributions`."""
    return np.exp(neighbour_log_distributions(embeddings, anchors, references, temperature, center, perplexity))


def kl_divergence(p: np.ndarray, q: np.ndarray, log: bool = False) -> np.ndarray:
    """``KL(p_i || q_i) = sum_j p_ij log(p_ij / q_ij)`` for each row, in nats. Terms with ``p_ij = 0`` count 0.

    With ``log=True``, ``p`` and ``q`` are log-probabilities. Those are what
    :func:`neighbour_log_distributions` returns, and they stay accurate for very small probabilities.
    """
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    if p.shape != q.shape:
        raise ValueError(f"p and q differ in shape: {p.shape} vs {q.shape}")
    if log:
        logp, logq = p, q
        prob = np.exp(logp)
    else:
        prob = p
        with np.errstate(divide="ignore"):
            logp, logq = np.log(p), np.log(q)
    with np.errstate(invalid="ignore"):
        terms = np.where(prob > 0, prob * (logp - logq), 0.0)
    return np.maximum(terms.sum(axis=1), 0.0)  # clip -1e-17 rounding


def relative_modality_similarity(semantic: np.ndarray, collaborative: np.ndarray, final: np.ndarray, *,
                                 temperature: float = DEFAULT_TEMPERATURE, n_anchors: int = DEFAULT_ANCHORS,
                                 n_references: int = DEFAULT_REFERENCES, seed: int = 0, center: bool = True,
                                 perplexity: float | None = None) -> dict:
    """Eq. 9-10: how much the final embedding's item neighbourhoods follow the semantic vs collaborative one.

    ``semantic`` [n, d_s], ``collaborative`` [n, d_c] and ``final`` [n, d_e] are the same n items in
    the same row order, with no padding row (see :func:`align_rows`). The dimensions may differ.
    Each embedding becomes one neighbourhood distribution per anchor, a softmax over the cosine
    similarities to shared reference items (:func:`neighbour_log_distributions`). ``KL(S||E)`` and
    ``KL(C||E)`` are the mean per-anchor KL divergences, in nats. Then::

        semantic      = 1 - KL(S||E) / (KL(S||E) + KL(C||E))
        collaborative = 1 - KL(C||E) / (KL(S||E) + KL(C||E))      (the two sum to 1)

    If both KLs are 0, E matches both modalities equally, and 0.5 / 0.5 is returned. The result
    is the same for the same seed. Anchors and references are subsampled to ``n_anchors`` /
    ``n_references`` when the catalogue is larger, so 12k items take a few seconds.

    Returns ``{"semantic", "collaborative", "kl_semantic", "kl_collaborative", "n_items",
    "n_anchors", "n_references", "temperature", "perplexity", "seed"}``.
    """
    arrays = {"semantic": semantic, "collaborative": collaborative, "final": final}
    rows = {name: np.shape(a)[0] if np.ndim(a) == 2 else None for name, a in arrays.items()}
    if None in rows.values() or len(set(rows.values())) != 1:
        shapes = {name: np.shape(a) for name, a in arrays.items()}
        raise ValueError(f"semantic, collaborative and final must be 2-D with the same number of rows, got {shapes}")
    n = rows["semantic"]
    anchors, references = sample_anchors_references(n, n_anchors, n_references, seed)
    kw = dict(temperature=temperature, center=center, perplexity=perplexity)
    log_e = neighbour_log_distributions(final, anchors, references, **kw)
    kl_s = float(kl_divergence(neighbour_log_distributions(semantic, anchors, references, **kw), log_e,
                               log=True).mean())
    kl_c = float(kl_divergence(neighbour_log_distributions(collaborative, anchors, references, **kw), log_e,
                               log=True).mean())
    total = kl_s + kl_c
    sim_s = 0.5 if total <= 0 else 1.0 - kl_s / total
    return {"semantic": sim_s, "collaborative": 1.0 - sim_s, "kl_semantic": kl_s, "kl_collaborative": kl_c,
            "n_items": int(n), "n_anchors": int(len(anchors)), "n_references": int(len(references)),
            "temperature": None if perplexity is not None else float(temperature),
            "perplexity": None if perplexity is None else float(perplexity), "seed": int(seed)}


# ---------------------------------------------------------------------------- loading
def _is_padding_row(row: np.ndarray) -> bool:
    return bool(np.all(np.asarray(row) == 0))


def align_rows(semantic: np.ndarray, **others: np.ndarray) -> dict[str, np.ndarray]:
    """Drop RecBole's padding row (internal item id 0) wherever there is one, so all arrays are [n_real, .].

    The semantic array is the reference. Real text embeddings are never all zero, so if its row 0
    is all zeros, that row is the padding row written by ``pipeline.with_padding_row`` and is
    dropped. This is the case for a run's ``semantic.npz``, but not for an ``item_embeddings``
    cache entry. The remaining ``n_real`` rows fix the item count. Any other array with ``n_real + 1``
    rows loses its row 0 (stage-I ``item_id`` / ``integrated``, ``code_table.npz`` ``integrated``).
    An array with ``n_real`` rows is kept as it is. Any other row count is an error. Returns
    ``{"semantic": ..., **others}``.
    """
    semantic = np.asarray(semantic)
    if semantic.ndim != 2 or semantic.shape[0] < 2:
        raise ValueError(f"semantic embeddings must be [n_items, dim], got shape {semantic.shape}")
    if _is_padding_row(semantic[0]):
        semantic = semantic[1:]
    n_real = semantic.shape[0]
    out = {"semantic": semantic}
    for name, array in others.items():
        array = np.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"{name} embeddings must be 2-D, got shape {array.shape}")
        if array.shape[0] == n_real + 1:
            array = array[1:]
        elif array.shape[0] != n_real:
            raise ValueError(f"{name} embeddings have {array.shape[0]} rows but the semantic embeddings describe "
                             f"{n_real} items (expected {n_real} or {n_real + 1} with a padding row): "
                             f"are they from the same dataset?")
        out[name] = array
    return out


_PREFERRED_KEYS = {"semantic": ("embeddings",), "collaborative": ("item_id", "embeddings"),
                   "integrated": ("integrated", "embeddings")}


def load_npz_array(spec: str | Path, key: str | None = None, role: str = "semantic") -> np.ndarray:
    """One 2-D array from an ``.npz`` file. ``spec`` may be ``path.npz:array_name``.

    If no name is given, ``key`` is used. Without ``key`` either, the role's usual name is tried:
    semantic: ``embeddings``; collaborative: ``item_id`` then ``embeddings``; integrated:
    ``integrated`` then ``embeddings``. After that, the file's only 2-D array is taken. The cache's
    ``__key__`` entry is ignored.
    """
    spec = str(spec)
    path, name = Path(spec), key
    if not path.is_file() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if Path(head).is_file():
            path, name = Path(head), tail
    if not path.is_file():
        raise FileNotFoundError(f"{role} embeddings: {spec} does not exist")
    with np.load(path, allow_pickle=False) as z:
        names = [n for n in z.files if n != "__key__"]
        if name is None:
            name = next((k for k in _PREFERRED_KEYS.get(role, ()) if k in names), None)
        if name is None:
            matrices = [n for n in names if z[n].ndim == 2]
            if len(matrices) != 1:
                raise ValueError(f"{role} embeddings: {path} holds {names}; say which with {path}:<name> or --key")
            name = matrices[0]
        if name not in names:
            raise KeyError(f"{role} embeddings: {path} has no array {name!r} (it has {names})")
        array = z[name]
    if array.ndim != 2:
        raise ValueError(f"{role} embeddings: {path}[{name!r}] has shape {array.shape}, expected [n_items, dim]")
    return array


def _run_dataset_name(run_dir: Path) -> str | None:
    try:
        return str(json.loads((run_dir / "run.json").read_text())["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    match = re.match(r"^[^-]+-(.+)-\d{8}-\d{6}-[0-9a-f]{6}$", run_dir.name)  # <model>-<dataset>-<stamp>-<hex>
    return match.group(1) if match else None


def _run_code_embedding(run_dir: Path) -> str | None:
    for manifest, path in (("codes_report.json", ("code_embedding",)), ("run.json", ("config", "code_embedding"))):
        try:
            value = json.loads((run_dir / manifest).read_text())
            for part in path:
                value = value[part]
            return str(value)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return None


def collaborative_command(dataset: str | None) -> str:
    return (f"python run_unger.py --model=UNGER --dataset={dataset or '<name>'} "
            f"--code_embedding=collaborative --stop_after=codes")


def find_collaborative_stage1(artifact_dir: str | Path, n_rows: int) -> list[dict]:
    """Collaborative-only stage-I cache entries (``align_weight`` 0) whose ``item_id`` has ``n_rows`` rows.

    Each entry is a dict with ``key``, ``json`` and ``created``; the newest comes first. Only the
    ``.json`` commit records are read here. The arrays are loaded and checked by ``ArtifactCache``.
    """
    found = []
    for meta_file in sorted((Path(artifact_dir) / "stage1").glob("*.json")):
        try:
            record = json.loads(meta_file.read_text(encoding="utf-8"))
            align_weight = float(record["meta"]["align_weight"])
            shape = record["arrays"]["item_id"]["shape"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if align_weight == 0.0 and shape[0] == n_rows and (meta_file.with_suffix(".npz")).is_file():
            found.append({"key": record.get("key", meta_file.stem), "json": meta_file,
                          "created": str(record.get("created", ""))})
    found.sort(key=lambda e: (e["created"], str(e["json"])), reverse=True)
    return found


def find_run_inputs(run_dir: str | Path, artifact_dir: str | Path, search_collaborative: bool = True,
                    log=print) -> dict:
    """Find a UNGER run's semantic, collaborative-only and integrated embeddings (rows as stored).

    * semantic: ``<run>/semantic.npz`` ``embeddings`` (with its padding row).
    * integrated: ``<run>/code_table.npz`` ``integrated``, if the run's ``code_embedding`` (from
      ``codes_report.json``, or the config in ``run.json``) was ``integrated``. Otherwise it is
      ``None`` and the "Ours" row cannot be formed from this run.
    * collaborative: the newest ``artifact_dir/stage1`` entry with ``align_weight`` 0 whose
      ``item_id`` row count is the semantic's. If there are several, the others are listed through
      ``log``. A run that quantized ``code_embedding=collaborative`` provides this directly in its
      code table. If nothing is found, ``FileNotFoundError`` names the command that produces it.
      ``search_collaborative=False`` skips this search (the caller has its own collaborative array).

    Returns ``{"semantic", "collaborative", "integrated", "dataset", "code_embedding", "sources"}``.
    """
    from unger_recbole.artifacts import ArtifactCache

    run_dir, artifact_dir = Path(run_dir), Path(artifact_dir)
    semantic_file, table_file = run_dir / "semantic.npz", run_dir / "code_table.npz"
    if not semantic_file.is_file():
        raise FileNotFoundError(f"{semantic_file} does not exist: is {run_dir} a UNGER run folder?")
    dataset = _run_dataset_name(run_dir)
    choice = _run_code_embedding(run_dir)
    semantic = load_npz_array(semantic_file, "embeddings", "semantic")
    sources = {"semantic": f"{semantic_file}[embeddings]"}
    table = None
    if table_file.is_file():
        with np.load(table_file, allow_pickle=False) as z:
            table = z["integrated"] if "integrated" in z.files else None

    integrated = collaborative = None
    if table is not None and choice == "integrated":
        integrated = table
        sources["integrated"] = f"{table_file}[integrated]"
    elif table is not None and choice == "collaborative":
        collaborative = table
        sources["collaborative"] = f"{table_file}[integrated] (run quantized code_embedding=collaborative)"
    if integrated is None:
        log(f"note: {run_dir} quantized code_embedding={choice or 'unknown'}, not the integrated embedding; "
            f"the 'Ours' row needs a run with code_embedding=integrated (or pass --integrated).")

    if collaborative is None and search_collaborative:
        n_rows = semantic.shape[0]  # stage-I arrays and semantic.npz both carry the padding row
        candidates = find_collaborative_stage1(artifact_dir, n_rows)
        cache = ArtifactCache(artifact_dir)
        for entry in candidates:
            hit = cache.load("stage1", entry["key"])
            if hit is not None and "item_id" in hit["arrays"]:
                collaborative = hit["arrays"]["item_id"]
                sources["collaborative"] = f"{cache.path('stage1', entry['key'])}[item_id] (align_weight 0)"
                others = [str(e["json"]) for e in candidates if e is not entry]
                if others:
                    log(f"note: {len(candidates)} collaborative-only stage-I entries with {n_rows} rows in "
                        f"{artifact_dir / 'stage1'}; using the newest. Others: {', '.join(others)} "
                        f"(pick one with --collaborative <file>.npz)")
                break
        if collaborative is None:
            raise FileNotFoundError(
                f"no collaborative-only stage-I embeddings (align_weight 0, {n_rows} rows incl. padding) in "
                f"{artifact_dir / 'stage1'}. Produce them with the run's settings:\n    "
                f"{collaborative_command(dataset)}\n(or pass --collaborative <npz> explicitly)")
    return {"semantic": semantic, "collaborative": collaborative, "integrated": integrated, "dataset": dataset,
            "code_embedding": choice, "sources": sources}


# ---------------------------------------------------------------------------- figure
def plot_embedding_tsne(embeddings: Mapping[str, np.ndarray], path: str | Path, n_clusters: int = 10,
                        sample: int = 2000, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000,
                        color_by: str | None = None) -> Path:
    """Paper Fig. 5: one t-SNE panel per embedding, points coloured by K-means clusters. Writes a PNG.

    ``embeddings`` maps a panel title to an ``[n, d]`` array. All arrays hold the same n items,
    and the dimensions may differ. The same ``sample`` items, chosen with ``seed``, are shown in
    every panel. K-means (``n_clusters``) runs on each embedding's own full-dimensional vectors
    of the shown items, as in the paper. With ``color_by=<name>``, every panel uses that
    embedding's clusters instead. This shows whether its clusters stay together in the other
    spaces. t-SNE perplexity is lowered to ``(sample - 1) / 3`` for small samples.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE

    if not embeddings:
        raise ValueError("no embeddings to plot")
    arrays = {name: np.asarray(a, dtype=np.float32) for name, a in embeddings.items()}
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) != 1 or any(a.ndim != 2 for a in arrays.values()):
        raise ValueError(f"embeddings must be [n, d] with the same n, got { {k: a.shape for k, a in arrays.items()} }")
    if color_by is not None and color_by not in arrays:
        raise KeyError(f"color_by={color_by!r} is not one of {list(arrays)}")
    n = sizes.pop()
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))
    k = max(1, min(n_clusters, len(rows)))
    labels = {name: KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(a[rows])
              for name, a in arrays.items()}
    if color_by is not None:
        labels = {name: labels[color_by] for name in arrays}
    perp = float(min(perplexity, max(1.0, (len(rows) - 1) / 3)))

    fig, axes = plt.subplots(1, len(arrays), figsize=(4.2 * len(arrays), 4.2), squeeze=False)
    for ax, (name, a) in zip(axes[0], arrays.items()):
        tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, max_iter=max_iter)
        xy = tsne.fit_transform(a[rows])
        ax.scatter(xy[:, 0], xy[:, 1], c=labels[name], cmap="tab10" if k <= 10 else "tab20", s=4, linewidths=0)
        ax.set_title(f"{name} ({a.shape[1]}-d)")
        ax.set_xticks([])
        ax.set_yticks([])
    suffix = f", colours: K-means of {color_by}" if color_by else ""
    fig.suptitle(f"t-SNE of {len(rows)} items, K-means k={k}{suffix}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- command
def format_table(rows: Mapping[str, Mapping]) -> str:
    """Table 4 layout: approach, semantic %, collaborative %, plus the raw KLs (nats)."""
    lines = [f"{'Approach':<10} {'Semantic modality':>18} {'Collaborative modality':>23} "
             f"{'KL(S||E)':>10} {'KL(C||E)':>10}"]
    for name, r in rows.items():
        lines.append(f"{name:<10} {100 * r['semantic']:>17.2f}% {100 * r['collaborative']:>22.2f}% "
                     f"{r['kl_semantic']:>10.4f} {r['kl_collaborative']:>10.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unger_recbole.analysis.modality",
        description="Relative similarity of the semantic and collaborative modalities to a final item embedding "
                    "(UNGER paper eq. 9-10, Table 4), for Concat = [PCA(semantic) || collaborative] and for the "
                    "integrated embedding (Ours). See docs/MODALITY.md.")
    src = parser.add_argument_group("inputs (npz files; FILE.npz:NAME picks an array)")
    src.add_argument("--semantic",
                     help="semantic embeddings E_S (run's semantic.npz or an item_embeddings cache entry)")
    src.add_argument("--collaborative", help="collaborative-only embeddings (stage-I cache entry with align_weight 0)")
    src.add_argument("--integrated", help="integrated embeddings (run's code_table.npz or a stage-I cache entry)")
    src.add_argument("--key", help="array name to read from every file given (default, by role: semantic 'embeddings'; "
                                   "collaborative 'item_id' or 'embeddings'; integrated 'integrated' or 'embeddings')")
    src.add_argument("--dataset-run", help="a UNGER run folder saved/<run_id>: finds the three embeddings")
    src.add_argument("--artifact-dir", default="artifacts", help="artifact cache to search (default: artifacts)")
    opt = parser.add_argument_group("measure")
    opt.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="softmax temperature on cosines")
    opt.add_argument("--perplexity", type=float, default=None,
                     help="calibrate a per-anchor temperature to this perplexity instead (t-SNE style)")
    opt.add_argument("--anchors", type=int, default=DEFAULT_ANCHORS, help="anchor items sampled (default 2000)")
    opt.add_argument("--references", type=int, default=DEFAULT_REFERENCES,
                     help="reference items sampled (default 2000)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--no-center", action="store_true", help="do not centre each embedding before cosines")
    fig = parser.add_argument_group("figure")
    fig.add_argument("--tsne", help="also write a Fig.-5-like t-SNE PNG here")
    fig.add_argument("--tsne-sample", type=int, default=2000)
    fig.add_argument("--tsne-clusters", type=int, default=10)
    parser.add_argument("--json", help="also write the results as JSON here")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    sources: dict[str, str] = {}
    dataset = None
    semantic = collaborative = integrated = None
    try:
        if args.dataset_run:
            found = find_run_inputs(args.dataset_run, args.artifact_dir,
                                    search_collaborative=not args.collaborative)
            semantic, collaborative, integrated = found["semantic"], found["collaborative"], found["integrated"]
            sources.update(found["sources"])
            dataset = found["dataset"]
        for role in ("semantic", "collaborative", "integrated"):
            spec = getattr(args, role)
            if spec:
                array = load_npz_array(spec, args.key, role)
                if role == "semantic":
                    semantic = array
                elif role == "collaborative":
                    collaborative = array
                else:
                    integrated = array
                sources[role] = str(spec)
        if semantic is None or collaborative is None:
            raise SystemExit("modality: need --semantic and --collaborative (or --dataset-run with --artifact-dir); "
                             "collaborative-only embeddings come from\n    " + collaborative_command(dataset))
        others = {"collaborative": collaborative} if integrated is None else {
            "collaborative": collaborative, "integrated": integrated}
        aligned = align_rows(semantic, **others)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise SystemExit(f"modality: {error}") from None

    semantic, collaborative = aligned["semantic"], aligned["collaborative"]
    concat = concat_embeddings(semantic, collaborative)
    finals = {"Concat": concat}
    if "integrated" in aligned:
        finals["Ours"] = aligned["integrated"]
    kw = dict(temperature=args.temperature, n_anchors=args.anchors, n_references=args.references, seed=args.seed,
              center=not args.no_center, perplexity=args.perplexity)
    rows = {name: relative_modality_similarity(semantic, collaborative, final, **kw) for name, final in finals.items()}

    first = next(iter(rows.values()))
    dims = ", ".join(f"{n} {a.shape[1]}-d" for n, a in
                     [("semantic", semantic), ("collaborative", collaborative)] + list(finals.items()))
    setting = (f"perplexity {args.perplexity:g}" if args.perplexity is not None
               else f"temperature {args.temperature:g}")
    print(f"items: {first['n_items']} ({dims}); anchors {first['n_anchors']} x references {first['n_references']}, "
          f"{setting}, seed {args.seed}")
    for role, src_ in sources.items():
        print(f"  {role}: {src_}")
    print(format_table(rows))
    if "Ours" not in rows:
        print("(no integrated embeddings given: only the Concat row)")

    if args.tsne:
        panels = {"Semantic": semantic, "Collaborative": collaborative, **finals}
        out = plot_embedding_tsne(panels, args.tsne, n_clusters=args.tsne_clusters, sample=args.tsne_sample,
                                  seed=args.seed)
        print(f"t-SNE figure: {out}")
    result = {"rows": rows, "sources": sources, "dataset": dataset}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"results: {args.json}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
