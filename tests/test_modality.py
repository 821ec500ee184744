"""The modality diagnostic (paper §4.3, eq. 9-10): distributions, KL, relative similarity, CLI, t-SNE figure."""

import json
import math

import numpy as np
import pytest

from unger_recbole.analysis.modality import (
    align_rows,
    collaborative_command,
    concat_embeddings,
    kl_divergence,
    main,
    neighbour_distributions,
    plot_embedding_tsne,
    relative_modality_similarity,
    sample_anchors_references,
)


def clustered(n, dim, n_clusters, seed, spread=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    return (centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def rotation(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


@pytest.fixture(scope="module")
def modalities():
    """Semantic (48-d) and collaborative (8-d) embeddings of 150 items with independent cluster structure."""
    return clustered(150, 48, 6, seed=1), clustered(150, 8, 5, seed=2)


# ---------------------------------------------------------------------------- hand-computed
def test_kl_divergence_by_hand():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [0.5, 0.5]])
    expected = [0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), math.log(2.0)]  # 0 * log 0 counts 0
    np.testing.assert_allclose(kl_divergence(p, q), expected, rtol=1e-12)
    np.testing.assert_allclose(kl_divergence(np.log(q), np.log(q), log=True), [0.0, 0.0], atol=1e-15)


def test_neighbour_distribution_and_kl_by_hand():
    # Anchor 0, references 0, 1, 2 (itself excluded), temperature 1, no centring.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cos(0,1) = 0, cos(0,2) = -1
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])   # cos(0,1) = 0, cos(0,2) = +1
    e = math.e
    p = neighbour_distributions(x, [0], [0, 1, 2], temperature=1.0, center=False)
    q = neighbour_distributions(y, [0], [0, 1, 2], temperature=1.0, center=False)
    np.testing.assert_allclose(p, [[0.0, e / (1 + e), 1 / (1 + e)]], rtol=1e-12)
    np.testing.assert_allclose(q, [[0.0, 1 / (1 + e), e / (1 + e)]], rtol=1e-12)
    # KL = a log(a/b) + b log(b/a) = (a - b) log(a/b) with a = e/(1+e), b = 1/(1+e): (e - 1)/(e + 1)
    np.testing.assert_allclose(kl_divergence(p, q), [(e - 1) / (e + 1)], rtol=1e-12)
    # A temperature of 0.5 doubles the logits.
    p_half = neighbour_distributions(x, [0], [0, 1, 2], temperature=0.5, center=False)
    np.testing.assert_allclose(p_half[0, 1:], [e**2 / (1 + e**2), 1 / (1 + e**2)], rtol=1e-12)


def test_eq_9_10_from_the_kls(modalities):
    s, c = modalities
    e = np.concatenate([s[:, :8], c], axis=1)
    r = relative_modality_similarity(s, c, e, seed=0)
    total = r["kl_semantic"] + r["kl_collaborative"]
    assert r["semantic"] == pytest.approx(1 - r["kl_semantic"] / total)
    assert r["collaborative"] == pytest.approx(1 - r["kl_collaborative"] / total)
    assert r["semantic"] + r["collaborative"] == pytest.approx(1.0)


def test_perplexity_calibration_hits_the_target_entropy(modalities):
    s, _ = modalities
    anchors, refs = sample_anchors_references(len(s), 20, 100, seed=0)
    p = neighbour_distributions(s, anchors, refs, perplexity=10.0)
    entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(axis=1)
    np.testing.assert_allclose(np.exp(entropy), 10.0, rtol=1e-3)


# ---------------------------------------------------------------------------- sanity
def test_final_equal_to_one_modality_up_to_rotation_scale_shift(modalities):
    s, c = modalities
    e_sem = 3.0 * s @ rotation(s.shape[1], 3) + 7.0
    r = relative_modality_similarity(s, c, e_sem)
    assert r["kl_semantic"] < 1e-8 < r["kl_collaborative"]
    assert r["semantic"] == pytest.approx(1.0, abs=1e-8) and r["collaborative"] == pytest.approx(0.0, abs=1e-8)

    e_col = 0.2 * c @ rotation(c.shape[1], 4)
    r = relative_modality_similarity(s, c, e_col)
    assert r["collaborative"] == pytest.approx(1.0, abs=1e-8) and r["semantic"] == pytest.approx(0.0, abs=1e-8)


def test_concat_with_a_strong_semantic_part_is_semantic_dominated(modalities):
    """The paper's Table 4 'Concat' finding, on synthetic data: high-variance semantic half dominates."""
    s, c = modalities
    strong_s, weak_c = 5.0 * s, 0.05 * c
    concat = concat_embeddings(strong_s, weak_c)
    assert concat.shape == (len(s), 2 * c.shape[1]) and concat.dtype == np.float32
    r = relative_modality_similarity(strong_s, weak_c, concat)
    assert r["semantic"] > 0.5
    # ... and the measure is not biased towards the semantic side: the reverse scaling flips it.
    r_rev = relative_modality_similarity(0.05 * s, 5.0 * c, concat_embeddings(0.05 * s, 5.0 * c))
    assert r_rev["collaborative"] > 0.5


def test_deterministic_for_a_seed_and_subsampled(modalities):
    s, c = modalities
    e = np.concatenate([s[:, :8], c], axis=1)
    kw = dict(n_anchors=40, n_references=60)
    a = relative_modality_similarity(s, c, e, seed=5, **kw)
    assert a == relative_modality_similarity(s, c, e, seed=5, **kw)
    assert (a["n_anchors"], a["n_references"], a["n_items"]) == (40, 60, 150)
    assert a["kl_semantic"] != relative_modality_similarity(s, c, e, seed=6, **kw)["kl_semantic"]
    anchors, refs = sample_anchors_references(150, 40, 60, seed=5)
    assert len(set(anchors)) == 40 and len(set(refs)) == 60 and anchors.max() < 150
    full_a, full_r = sample_anchors_references(10, 2000, 2000, seed=5)
    assert list(full_a) == list(full_r) == list(range(10))


def test_rejects_misaligned_inputs(modalities):
    s, c = modalities
    with pytest.raises(ValueError, match="same number of rows"):
        relative_modality_similarity(s, c[:-1], s)


def test_align_rows_strips_padding_rows():
    real = np.random.default_rng(0).normal(size=(5, 4)) + 1.0
    padded = np.vstack([np.zeros((1, 4)), real])
    other = np.random.default_rng(1).normal(size=(6, 3))  # 5 items + padding row
    for semantic in (real, padded):  # semantic: cache entry (no padding) or run's semantic.npz (padding)
        out = align_rows(semantic, collaborative=other, integrated=other[1:])
        np.testing.assert_array_equal(out["semantic"], real)
        np.testing.assert_array_equal(out["collaborative"], other[1:])
        np.testing.assert_array_equal(out["integrated"], other[1:])
    with pytest.raises(ValueError, match="same dataset"):
        align_rows(real, collaborative=other[:3])


# ---------------------------------------------------------------------------- command + figure
def write_inputs(folder, s, c, e):
    """A run's semantic.npz and code_table.npz (padding row 0) and a stage-I-like npz (padding row 0)."""
    pad = lambda a: np.vstack([np.zeros((1, a.shape[1]), a.dtype), a])  # noqa: E731
    np.savez(folder / "semantic.npz", embeddings=pad(s))
    np.savez(folder / "code_table.npz", codes=np.zeros((len(s) + 1, 3), np.int64), integrated=pad(e))
    np.savez(folder / "stage1.npz", integrated=pad(e), item_id=pad(c), adapted_semantic=pad(c),
             __key__=np.array("0" * 64))


def test_cli_prints_concat_and_ours_rows(tmp_path, capsys, modalities):
    s, c = modalities
    e = np.concatenate([s[:, :8], 10 * c], axis=1)
    write_inputs(tmp_path, s, c, e)
    result = main(["--semantic", str(tmp_path / "semantic.npz"), "--collaborative", str(tmp_path / "stage1.npz"),
                   "--integrated", str(tmp_path / "code_table.npz"), "--anchors", "50", "--references", "80",
                   "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert "Semantic modality" in out and "Collaborative modality" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["Concat"].count("%") == 2 and lines["Ours"].count("%") == 2
    assert "items: 150" in out  # padding rows stripped
    assert set(result["rows"]) == {"Concat", "Ours"}
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["rows"]["Ours"]["semantic"] == result["rows"]["Ours"]["semantic"]

    # The explicit array-name syntax, and Concat only when no integrated embedding is given.
    main(["--semantic", f"{tmp_path / 'semantic.npz'}:embeddings", "--collaborative",
          f"{tmp_path / 'stage1.npz'}:item_id", "--anchors", "30", "--references", "30"])
    out = capsys.readouterr().out
    assert "Concat" in out and "Ours " not in out


def test_cli_dataset_run_finds_the_stage1_cache(tmp_path, capsys, modalities):
    from unger_recbole.artifacts import ArtifactCache

    s, c = modalities
    e = np.concatenate([s[:, :8], 10 * c], axis=1)
    run = tmp_path / "saved" / "UNGER-amazon-beauty-20250101-120000-abc123"
    run.mkdir(parents=True)
    write_inputs(run, s, c, e)
    (run / "codes_report.json").write_text(json.dumps({"code_embedding": "integrated"}))
    art = tmp_path / "artifacts"
    args = ["--artifact-dir", str(art), "--dataset-run", str(run), "--anchors", "30", "--references", "30"]

    with pytest.raises(SystemExit) as missing:
        main(args)
    message = str(missing.value)
    assert collaborative_command("amazon-beauty") in message
    assert "--code_embedding=collaborative --stop_after=codes" in message

    cache = ArtifactCache(art)
    pad = lambda a: np.vstack([np.zeros((1, a.shape[1]), a.dtype), a])  # noqa: E731
    cache.save("stage1", "a" * 64, {"integrated": pad(e), "item_id": pad(2 * c), "adapted_semantic": pad(c)},
               {"align_weight": 1.0})  # the integrated entry: not collaborative-only
    cache.save("stage1", "b" * 64, {"integrated": pad(c), "item_id": pad(c), "adapted_semantic": pad(c)},
               {"align_weight": 0.0})
    cache.save("stage1", "c" * 64, {"integrated": pad(c[:9]), "item_id": pad(c[:9]), "adapted_semantic": pad(c[:9])},
               {"align_weight": 0.0})  # another dataset (9 items)
    result = main(args)
    out = capsys.readouterr().out
    assert "b" * 64 in result["sources"]["collaborative"]
    assert "Concat" in out and "Ours" in out and "items: 150" in out
    explicit = main(["--semantic", str(run / "semantic.npz"), "--collaborative", str(run / "stage1.npz"),
                     "--integrated", str(run / "code_table.npz"), "--anchors", "30", "--references", "30"])
    assert explicit["rows"] == result["rows"]


def test_tsne_figure_is_written(tmp_path, modalities):
    s, c = modalities
    path = plot_embedding_tsne({"Semantic": s[:40], "Collaborative": c[:40]}, tmp_path / "fig" / "tsne.png",
                               n_clusters=3, sample=30, seed=0, max_iter=250)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
