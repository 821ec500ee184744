"""Tests of unger_recbole.quantizers (no RecBole needed; small synthetic data, CPU only)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unger_recbole.quantizers import (
    QUANTIZERS,
    Quantizer,
    build_quantizer,
    validate_codes,
)
from unger_recbole.quantizers.base import code_lengths
from unger_recbole.quantizers.rqvae import disambiguate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is much faster (and steadier) on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# small RQ-VAE config shared by the tests (trains in ~1 s)
RQ_SMALL = dict(
    codebook_size=16,
    num_levels=2,
    hidden_dims=[64, 32],
    latent_dim=8,
    epochs=40,
    batch_size=64,
    lr=3e-3,
    device="cpu",
)


def blobs(n_blobs, per_blob, dim=16, spread=50.0, std=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_blobs, dim)) * spread
    labels = np.repeat(np.arange(n_blobs), per_blob)
    x = centers[labels] + rng.standard_normal((labels.size, dim)) * std
    perm = rng.permutation(labels.size)  # items of one blob are not contiguous
    return x[perm].astype(np.float32), labels[perm]


def is_bijection(a, b):
    """True when equal values of ``a`` are exactly equal values of ``b`` (same partition)."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def paths(codes, depth):
    """Code prefixes of length ``depth`` as hashable tuples."""
    return np.array([hash(tuple(r[:depth])) for r in codes])


# ------------------------------------------------------------------------------ registry / base
def test_registry_and_unknown_name():
    assert {"hkmeans", "rqvae", "random"} <= set(QUANTIZERS)
    for name, cls in QUANTIZERS.items():
        assert issubclass(cls, Quantizer) and cls.name == name
    with pytest.raises(ValueError) as err:
        build_quantizer("nope")
    msg = str(err.value)
    assert "nope" in msg and all(n in msg for n in ("hkmeans", "rqvae", "random"))


@pytest.mark.parametrize("name", ["hkmeans", "rqvae", "random"])
def test_unknown_param_and_small_codebook(name):
    with pytest.raises(ValueError) as err:
        build_quantizer(name, codebok_size=8)
    assert "codebok_size" in str(err.value) and "codebook_size" in str(err.value)
    for k in (1, 0, -3):
        with pytest.raises(ValueError, match="codebook_size must be an integer >= 2"):
            build_quantizer(name, codebook_size=k)


@pytest.mark.parametrize("name", ["hkmeans", "rqvae", "random"])
def test_yaml_matches_constructor_defaults(name):
    path = ROOT / "properties" / "quantizer" / f"{name}.yaml"
    params = yaml.safe_load(path.read_text())
    assert params == QUANTIZERS[name].defaults
    # every key documented by a comment on its line
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            assert "#" in line, f"undocumented key in {path.name}: {line}"
    build_quantizer(name, **params)


def test_embeddings_checked():
    q = build_quantizer("hkmeans", codebook_size=4, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        q.quantize(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        q.quantize(np.zeros(5))


# ------------------------------------------------------------------------------ validate_codes
def test_validate_codes_accepts_variable_length_prefix_free():
    codes = np.array([[0, 1, -1], [0, 2, 0], [0, 2, 1], [1, -1, -1], [2, 0, -1]])
    validate_codes(codes, 3)
    assert code_lengths(codes).tolist() == [2, 3, 3, 1, 2]


@pytest.mark.parametrize(
    "codes, pattern",
    [
        ([[0, 1], [1, 0], [0, 1]], r"not unique.*items 0 and 2.*\(0, 1\)"),
        ([[1, 0, -1], [0, 1, -1], [1, 0, -1]], r"not unique.*items 0 and 2.*\(1, 0\)"),
        ([[0, -1, -1], [0, 1, 2], [1, 0, -1]], r"prefix-free.*item 0 code \(0\).*item 1 code \(0, 1, 2\)"),
        ([[1, 2, -1], [1, 2, 0], [0, 0, 0]], r"prefix-free.*item 0 code \(1, 2\)"),
        ([[0, 4], [1, 1]], r"out of range \[0, 4\)"),
        ([[0, -2], [1, 1]], r"out of range"),
        ([[0, -1, 2], [1, 1, 1]], r"-1 in the middle.*item 0"),
        ([[-1, -1], [1, 1]], r"empty code.*\[0\]"),
    ],
)
def test_validate_codes_rejects(codes, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_codes(np.array(codes, dtype=np.int64), 4)


def test_validate_codes_rejects_bad_arrays():
    with pytest.raises(ValueError, match="integer dtype"):
        validate_codes(np.zeros((3, 2)), 4)
    with pytest.raises(ValueError, match="2-D"):
        validate_codes(np.zeros(3, dtype=np.int64), 4)


def test_validate_codes_finds_prefix_among_many():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 8, size=(2000, 4)), axis=0)
    validate_codes(codes, 8)
    bad = codes.copy()
    bad[100, 2:] = -1  # item 100's code becomes a prefix of items sharing its first two tokens
    if (np.all(codes[:, :2] == codes[100, :2], axis=1).sum()) > 1:
        with pytest.raises(ValueError, match="prefix"):
            validate_codes(bad, 8)


# ------------------------------------------------------------------------------ hkmeans
def test_hkmeans_unique_prefix_free_codes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    q = build_quantizer("hkmeans", codebook_size=8, device="cpu")
    codes = q.quantize(x)
    assert codes.dtype == np.int64 and codes.shape[0] == 1500
    validate_codes(codes, 8)
    assert len({tuple(r) for r in codes}) == 1500
    r = q.report
    assert r["quantizer"] == "hkmeans" and r["n_items"] == 1500 and r["collisions"] == 0
    assert sum(r["code_length_histogram"].values()) == 1500
    assert r["depth_max"] == codes.shape[1] == max(r["code_length_histogram"])
    assert r["first_level_clusters_used"] == len(np.unique(codes[:, 0])) == 8
    assert r["forced_splits"] == 0 and r["seconds"] > 0
    # k-means on 1500 random points splits into fairly balanced clusters: depth ~ log_8(1500)
    assert 4 <= r["depth_max"] <= 7


def test_hkmeans_first_level_follows_blobs():
    x, blob = blobs(n_blobs=6, per_blob=60)
    codes = build_quantizer("hkmeans", codebook_size=6, device="cpu").quantize(x)
    validate_codes(codes, 6)
    # same blob <=> same first token: the shared prefix carries the cluster structure
    assert is_bijection(codes[:, 0], blob)


def test_hkmeans_sampled_centroid_fit():
    # centroids fit on 5 * K sampled points (faiss-style), then every item is assigned
    x, blob = blobs(n_blobs=5, per_blob=80)
    q = build_quantizer("hkmeans", codebook_size=5, max_points_per_centroid=5, device="cpu")
    codes = q.quantize(x)
    validate_codes(codes, 5)
    assert is_bijection(codes[:, 0], blob)


def test_hkmeans_more_clusters_than_blobs_stay_pure():
    x, blob = blobs(n_blobs=4, per_blob=100)
    codes = build_quantizer("hkmeans", codebook_size=10, device="cpu").quantize(x)
    for c in np.unique(codes[:, 0]):
        assert len(np.unique(blob[codes[:, 0] == c])) == 1  # no first-level cluster mixes blobs


def test_hkmeans_hierarchy_follows_nested_blobs():
    # 4 far-apart super-blobs, each made of 4 sub-blobs: level 1 = super-blob, level 2 = sub-blob
    rng = np.random.default_rng(3)
    sup = rng.standard_normal((4, 8)) * 1000.0
    sub = rng.standard_normal((4, 4, 8)) * 30.0
    s_lab = np.repeat(np.arange(4), 80)
    b_lab = np.tile(np.repeat(np.arange(4), 20), 4)
    x = sup[s_lab] + sub[s_lab, b_lab] + rng.standard_normal((320, 8))
    codes = build_quantizer("hkmeans", codebook_size=4, device="cpu").quantize(x)
    validate_codes(codes, 4)
    assert is_bijection(codes[:, 0], s_lab)
    assert is_bijection(paths(codes, 2), s_lab * 4 + b_lab)
    # items sharing a longer prefix are closer
    d = lambda m: np.linalg.norm(x[m][:, None] - x[m][None], axis=-1).mean()
    same2 = paths(codes, 2) == paths(codes, 2)[0]
    same1 = codes[:, 0] == codes[0, 0]
    assert d(same2) < d(same1) < d(np.ones(320, bool))


def test_hkmeans_seed_determinism():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    a = build_quantizer("hkmeans", codebook_size=8, seed=7, device="cpu").quantize(x)
    b = build_quantizer("hkmeans", codebook_size=8, seed=7, device="cpu").quantize(x)
    c = build_quantizer("hkmeans", codebook_size=8, seed=8, device="cpu").quantize(x)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_hkmeans_single_level_when_codebook_covers_items():
    x = np.random.default_rng(5).standard_normal((50, 4))
    q = build_quantizer("hkmeans", codebook_size=64, device="cpu")
    codes = q.quantize(x)
    assert codes.shape == (50, 1)
    assert sorted(codes[:, 0].tolist()) == list(range(50))
    assert q.report["kmeans_calls"] == 0 and q.report["code_length_histogram"] == {1: 50}
    assert build_quantizer("hkmeans", codebook_size=50, device="cpu").quantize(x).shape == (50, 1)


def test_hkmeans_identical_embeddings_forced_split():
    x = np.ones((300, 5), dtype=np.float32)
    q = build_quantizer("hkmeans", codebook_size=4, device="cpu")
    codes = q.quantize(x)
    validate_codes(codes, 4)
    assert q.report["forced_splits"] > 0
    # chunks of a balanced 4-way split: depth ceil(log_4 300) = 5
    assert codes.shape[1] == 5


def test_hkmeans_partly_duplicated_embeddings():
    rng = np.random.default_rng(6)
    x = np.concatenate([np.zeros((200, 6)), rng.standard_normal((100, 6)) + 10.0]).astype(np.float32)
    q = build_quantizer("hkmeans", codebook_size=3, device="cpu")
    codes = q.quantize(x)
    validate_codes(codes, 3)
    assert q.report["forced_splits"] > 0
    # the 200 duplicates never share a first-level cluster with the distant points
    assert not set(codes[:200, 0]) & set(codes[200:, 0])


def test_hkmeans_tokens_are_dense():
    x, _ = blobs(n_blobs=3, per_blob=50)
    codes = build_quantizer("hkmeans", codebook_size=8, device="cpu").quantize(x)
    # fewer non-empty clusters than K: child ids are renumbered 0..m-1 (no holes)
    first = np.unique(codes[:, 0])
    assert first.tolist() == list(range(first.size))


# ------------------------------------------------------------------------------ rqvae
@pytest.fixture(scope="module")
def rq_data():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((400, 6))
    w = rng.standard_normal((6, 32))
    return (z @ w + 0.05 * rng.standard_normal((400, 32))).astype(np.float32)


@pytest.fixture(scope="module")
def rq_run(rq_data):
    q = build_quantizer("rqvae", **RQ_SMALL)
    return q, q.quantize(rq_data)


def test_rqvae_codes_unique_and_disambiguated(rq_run):
    q, codes = rq_run
    L = RQ_SMALL["num_levels"]
    assert codes.shape == (400, L + 1)
    validate_codes(codes, RQ_SMALL["codebook_size"])
    r = q.report
    raw = codes[:, :L]
    _, counts = np.unique(raw, axis=0, return_counts=True)
    assert r["collisions"] == 0
    assert r["collisions_before_fix"] == 400 - counts.size
    assert r["colliding_items"] == counts[counts > 1].sum()
    assert r["max_collision_group"] == counts.max()
    # 400 items on 16**2 = 256 codes must collide; the extra token is 0..m-1 inside each group
    assert r["collisions_before_fix"] >= 400 - 256
    for key in np.unique(raw, axis=0)[:20]:
        grp = np.all(raw == key, axis=1)
        assert sorted(codes[grp, L].tolist()) == list(range(grp.sum()))
    # trained codebooks are used, not collapsed
    assert min(r["codebook_usage"]) >= 8


def test_rqvae_learns(rq_run, rq_data):
    q, _ = rq_run
    rec = q.report["recon_loss_history"]
    assert len(rec) == RQ_SMALL["epochs"] == len(q.report["loss_history"])
    assert rec[-1] < 0.5 * rec[0]
    assert rec[-1] < 0.5 * rq_data.var(axis=0).mean()  # better than predicting the mean


def test_rqvae_seed_determinism(rq_run, rq_data):
    q, codes = rq_run
    again = build_quantizer("rqvae", **RQ_SMALL)
    np.testing.assert_array_equal(again.quantize(rq_data), codes)
    assert again.report["loss_history"] == q.report["loss_history"]


def test_disambiguate_too_many_collisions():
    codes = np.zeros((5, 2), dtype=np.int64)
    fixed, stats = disambiguate(codes, 5)
    assert fixed[:, 2].tolist() == [0, 1, 2, 3, 4] and stats["collisions_before_fix"] == 4
    with pytest.raises(ValueError, match="raise codebook_size or num_levels"):
        disambiguate(codes, 4)


# ------------------------------------------------------------------------------ random
def test_random_codes_default_length():
    x = np.zeros((300, 3))
    q = build_quantizer("random", codebook_size=16, seed=1)
    codes = q.quantize(x)
    assert codes.shape == (300, 3)  # 16**2 = 256 < 300 <= 16**3
    validate_codes(codes, 16)
    assert q.report["code_length"] == 3 and q.report["code_length_histogram"] == {3: 300}
    # tokens look uniform: every value appears at every position
    for pos in range(3):
        assert len(np.unique(codes[:, pos])) == 16
    other = build_quantizer("random", codebook_size=16, seed=2).quantize(x)
    np.testing.assert_array_equal(codes, build_quantizer("random", codebook_size=16, seed=1).quantize(x))
    assert not np.array_equal(codes, other)


def test_random_codes_requested_length_and_capacity():
    x = np.zeros((256, 2))
    codes = build_quantizer("random", codebook_size=4, code_length=4).quantize(x)
    assert codes.shape == (256, 4)  # exactly fills the 4**4 code space
    validate_codes(codes, 4)
    assert len({tuple(r) for r in codes}) == 256
    with pytest.raises(ValueError, match="raise code_length"):
        build_quantizer("random", codebook_size=4, code_length=3).quantize(np.zeros((65, 2)))
    # huge code space (256**9 > 2**62) goes through rejection sampling
    big = build_quantizer("random", codebook_size=256, code_length=9).quantize(np.zeros((500, 2)))
    assert big.shape == (500, 9)
    validate_codes(big, 256)
