"""Content-keyed artifact cache (unger_recbole.artifacts)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from unger_recbole.artifacts import ArtifactCache, cached_item_embeddings, content_key


# ---------------------------------------------------------------------------- content_key
def test_content_key_canonical():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    k = content_key({"b": 1, "a": [1, 2]}, a, "x")
    assert len(k) == 64 and k == content_key({"a": [1, 2], "b": 1}, a.copy(), "x")  # dict order irrelevant
    assert k == content_key({"a": (1, 2), "b": 1}, np.asfortranarray(a), "x")  # tuple == list, memory layout
    assert k != content_key({"a": [2, 1], "b": 1}, a, "x")  # list order matters
    assert k != content_key({"a": [1, 2], "b": 1}, a.reshape(3, 2), "x")  # shape
    assert k != content_key({"a": [1, 2], "b": 1}, a.astype(np.float64), "x")  # dtype
    assert k != content_key({"a": [1, 2], "b": 1}, a, "y")
    assert content_key("ab", "c") != content_key("a", "bc")  # no concatenation ambiguity
    assert content_key(["ab"]) != content_key("ab")
    assert content_key(1) != content_key("1") != content_key(True)
    assert content_key(None) != content_key("None")


def test_content_key_files_by_content(tmp_path):
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    f1.write_text("same")
    f2.write_text("same")
    assert content_key(f1) == content_key(f2)  # by content, not by name
    assert content_key(str(f1)) != content_key(f1)  # a str is a string, not a path
    f2.write_text("other")
    assert content_key(f1) != content_key(f2)
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("1")
    k = content_key(d)
    (d / "x").write_text("2")
    assert content_key(d) != k
    with pytest.raises(FileNotFoundError):
        content_key(tmp_path / "missing")
    with pytest.raises(TypeError):
        content_key(object())


# ---------------------------------------------------------------------------- ArtifactCache
def _arrays():
    return {"codes": np.array([[1, 2], [3, 4]], dtype=np.int64), "emb": np.random.default_rng(0).random((3, 4), dtype=np.float32)}


def test_save_load_roundtrip(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = content_key("x")
    assert cache.load("codes", key) is None
    p = cache.save("codes", key, _arrays(), {"n": np.int64(2), "name": "toy"})
    assert p == cache.path("codes", key) == tmp_path / "codes" / f"{key}.npz" and p.is_file()
    got = cache.load("codes", key)
    for n, a in _arrays().items():
        np.testing.assert_array_equal(got["arrays"][n], a)
        assert got["arrays"][n].dtype == a.dtype
    assert got["meta"] == {"n": 2, "name": "toy"}
    assert sorted(x.name for x in (tmp_path / "codes").iterdir()) == sorted([f"{key}.npz", f"{key}.json"])  # no temp files
    assert cache.load("codes", content_key("y")) is None
    assert cache.load("other_kind", key) is None


def test_bad_kind_or_key(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ValueError):
        cache.path("../up", content_key("x"))
    with pytest.raises(ValueError):
        cache.path("codes", "not-a-key")
    with pytest.raises(TypeError):
        cache.save("codes", content_key("x"), {"o": np.array([object()])}, {})


def test_mismatched_file_not_reused(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    ka, kb = content_key("a"), content_key("b")
    cache.save("emb", ka, {"e": np.zeros((2, 2), np.float32)}, {})
    # artifact of key a copied under key b: the stored keys (npz and json) do not match
    pa, pb = cache.path("emb", ka), cache.path("emb", kb)
    pb.write_bytes(pa.read_bytes())
    pb.with_suffix(".json").write_bytes(pa.with_suffix(".json").read_bytes())
    with caplog.at_level(logging.WARNING):
        assert cache.load("emb", kb) is None
    assert "another key" in caplog.text
    # json fixed up to claim key b, npz still holds key a
    meta = json.loads(pa.with_suffix(".json").read_text())
    meta["key"] = kb
    pb.with_suffix(".json").write_text(json.dumps(meta))
    assert cache.load("emb", kb) is None
    assert cache.load("emb", ka) is not None


def test_corrupted_file_not_reused(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = content_key("c")
    cache.save("emb", key, {"e": np.arange(1000, dtype=np.float32)}, {})
    npz, js = cache.path("emb", key), cache.meta_path("emb", key)
    good_npz, good_js = npz.read_bytes(), js.read_bytes()
    npz.write_bytes(good_npz[: len(good_npz) // 2])  # truncated
    assert cache.load("emb", key) is None
    npz.write_bytes(good_npz)
    js.write_text("{not json")
    assert cache.load("emb", key) is None
    js.unlink()  # npz without its commit record
    assert cache.load("emb", key) is None
    js.write_bytes(good_js)
    # same key, different array content (e.g. a concurrent writer with another result): checksum differs
    meta = json.loads(good_js)
    meta["arrays"]["e"]["sha256"] = "0" * 64
    js.write_text(json.dumps(meta))
    assert cache.load("emb", key) is None
    js.write_bytes(good_js)
    assert cache.load("emb", key) is not None


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    key = content_key("d")
    cache.save("emb", key, {"e": np.ones(3, np.float32)}, {"v": 1})

    def boom(f, **kw):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        cache.save("emb", key, {"e": np.zeros(3, np.float32)}, {"v": 2})
    monkeypatch.undo()
    got = cache.load("emb", key)  # the old artifact is intact, no temp files left
    assert got["meta"] == {"v": 1} and got["arrays"]["e"].tolist() == [1, 1, 1]
    assert len(list((tmp_path / "emb").iterdir())) == 2


# ---------------------------------------------------------------------------- cached_item_embeddings
class CountingEncoder:
    name = "counting"

    def __init__(self, dim=4, tag="v1"):
        self.dim, self.tag, self.calls = dim, tag, 0

    def cache_key(self):
        return {"encoder": self.name, "dim": self.dim, "tag": self.tag}

    def encode(self, texts):
        self.calls += 1
        return np.array([[len(t) + i for i in range(self.dim)] for t in texts], dtype=np.float32)


def test_cached_item_embeddings(tmp_path, caplog):
    cache = ArtifactCache(tmp_path / "artifacts")
    enc = CountingEncoder()
    texts = ["title: a", "title: bb", ""]
    with caplog.at_level(logging.INFO, logger="unger_recbole.artifacts"):
        e1 = cached_item_embeddings(cache, enc, texts)
        assert "cache miss" in caplog.text
        caplog.clear()
        e2 = cached_item_embeddings(cache, enc, list(texts))
        assert "cache hit" in caplog.text
    assert enc.calls == 1 and e1.dtype == np.float32 and e1.shape == (3, 4)
    np.testing.assert_array_equal(e1, e2)
    cached_item_embeddings(cache, enc, ["title: a", "title: bc", ""])  # one character changed
    assert enc.calls == 2
    cached_item_embeddings(cache, enc, texts[::-1])  # order matters
    assert enc.calls == 3
    enc2 = CountingEncoder(tag="v2")  # different encoder key
    cached_item_embeddings(cache, enc2, texts)
    assert enc2.calls == 1
    cached_item_embeddings(cache, CountingEncoder(), texts)  # a fresh but identical encoder hits
    assert len(list((tmp_path / "artifacts" / "item_embeddings").glob("*.npz"))) == 4
    assert cached_item_embeddings(None, enc, texts).shape == (3, 4) and enc.calls == 4


def test_cached_item_embeddings_ignores_corrupt(tmp_path):
    cache = ArtifactCache(tmp_path)
    enc = CountingEncoder()
    cached_item_embeddings(cache, enc, ["x"])
    (npz,) = Path(tmp_path, "item_embeddings").glob("*.npz")
    npz.write_bytes(b"garbage")
    e = cached_item_embeddings(cache, enc, ["x"])
    assert enc.calls == 2 and e.shape == (1, 4)
    cached_item_embeddings(cache, enc, ["x"])  # rewritten by the recompute
    assert enc.calls == 2
