"""Content-keyed cache of stage artifacts (item embeddings, code tables, ...).

Every artifact is addressed by ``(kind, key)`` where ``key = content_key(...)`` hashes *everything*
that determines it (the encoder's :meth:`cache_key`, the item texts, a quantizer's config and input
embeddings, ...). Changing any input changes the key, so a stale artifact is never picked up; an
unchanged input finds the stored one and the stage is skipped.

On disk, under ``root/<kind>/``::

    <key>.npz    the arrays (np.savez, no pickles) + ``__key__``, the key itself
    <key>.json   {"key", "kind", "arrays": {name: {shape, dtype, sha256}}, "meta": {...}, "created"}

Both are written to a temp file in the same directory and moved into place with ``os.replace``
(npz first, json last: the json is the commit record), so a crash never leaves a half-written file
under a final name. :meth:`ArtifactCache.load` returns ``None`` -- never a wrong artifact -- when the
json is missing/unreadable, when the key stored in the json or in the npz differs from the requested
one, or when an array's name/shape/dtype/sha256 differs from the json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["content_key", "ArtifactCache", "cached_item_embeddings", "array_digest"]

_KEY_ARRAY = "__key__"
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_KEY_RE = re.compile(r"^[0-9a-f]{8,128}$")


# ---------------------------------------------------------------------------- hashing
def array_digest(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    a = np.asarray(a)
    if a.dtype.hasobject:
        raise TypeError("object arrays cannot be hashed or cached")
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _file_digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", x: Any) -> None:
    """Feed a type-tagged, unambiguous encoding of ``x`` into ``h``."""
    if x is None:
        h.update(b"N;")
    elif isinstance(x, bool) or isinstance(x, np.bool_):
        h.update(b"B1;" if x else b"B0;")
    elif isinstance(x, (int, np.integer)):
        h.update(f"I{int(x)};".encode())
    elif isinstance(x, (float, np.floating)):
        v = float(x)
        if v.is_integer() and math.isfinite(v):
            h.update(f"F{int(v)};".encode())  # 1.0 and np.float32(1) hash alike
        else:
            h.update(f"F{v!r};".encode())
    elif isinstance(x, str):
        b = x.encode("utf-8")
        h.update(f"S{len(b)}:".encode() + b)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        b = bytes(x)
        h.update(f"Y{len(b)}:".encode() + b)
    elif isinstance(x, np.ndarray):
        h.update(f"A{array_digest(x)};".encode())
    elif isinstance(x, os.PathLike):
        p = Path(x)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
            h.update(f"D{len(files)}[".encode())
            for q in files:
                _feed(h, q.relative_to(p).as_posix())
                h.update(f"{_file_digest(q)};".encode())
            h.update(b"]")
        elif p.is_file():
            h.update(f"P{_file_digest(p)};".encode())
        else:
            raise FileNotFoundError(f"content_key: {p} does not exist")
    elif isinstance(x, Mapping):
        items = sorted(((str(k), v) for k, v in x.items()), key=lambda kv: kv[0])
        h.update(f"M{len(items)}{{".encode())
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
        h.update(b"}")
    elif isinstance(x, (list, tuple)):
        h.update(f"L{len(x)}[".encode())
        for v in x:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(x, (set, frozenset)):
        _feed(h, sorted(x, key=repr))
    elif hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        _feed(h, x.detach().cpu().numpy())
    else:
        raise TypeError(f"content_key: cannot hash object of type {type(x).__name__}")


def content_key(*parts: Any) -> str:
    """sha256 hex digest of ``parts``.

    Canonical over: None/bool/int/float/str/bytes, dicts (keys sorted, as str), lists/tuples (order
    matters; a tuple hashes like a list), sets, numpy arrays (dtype + shape + bytes), torch tensors,
    and ``pathlib.Path`` objects, which are hashed **by file content** (directories: relative names +
    contents of all files). Plain strings are always hashed as strings, never read as paths.
    """
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()


# ---------------------------------------------------------------------------- cache
def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    return repr(o)


def _atomic_write(final: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``final`` and ``os.replace`` it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".{uuid.uuid4().hex[:8]}.tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ArtifactCache:
    """Directory of ``(kind, key)`` -> arrays + meta. See the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ArtifactCache({str(self.root)!r})"

    @staticmethod
    def _check(kind: str, key: str) -> None:
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise ValueError(f"artifact kind must match {_KIND_RE.pattern}, got {kind!r}")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"artifact key must be a lowercase hex digest (content_key), got {key!r}")

    def path(self, kind: str, key: str) -> Path:
        """Path of the ``.npz`` file of ``(kind, key)`` (the meta is the same path with ``.json``)."""
        self._check(kind, key)
        return self.root / kind / f"{key}.npz"

    def meta_path(self, kind: str, key: str) -> Path:
        return self.path(kind, key).with_suffix(".json")

    def exists(self, kind: str, key: str) -> bool:
        return self.meta_path(kind, key).is_file() and self.path(kind, key).is_file()

    def save(self, kind: str, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Path:
        """Store ``arrays`` (name -> ndarray, no object dtypes) and JSON-able ``meta``; returns the npz path."""
        npz, js = self.path(kind, key), self.meta_path(kind, key)
        arrs: dict[str, np.ndarray] = {}
        for name, a in arrays.items():
            if not isinstance(name, str) or not name or name == _KEY_ARRAY or "/" in name:
                raise ValueError(f"invalid array name {name!r}")
            a = np.asarray(a)
            if a.dtype.hasobject:
                raise TypeError(f"array {name!r} has object dtype; only plain numeric/str arrays are cached")
            arrs[name] = a
        record = {
            "key": key,
            "kind": kind,
            "arrays": {n: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": array_digest(a)} for n, a in arrs.items()},
            "meta": dict(meta or {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta_bytes = json.dumps(record, indent=1, sort_keys=True, default=_json_default).encode("utf-8")
        payload = {**arrs, _KEY_ARRAY: np.array(key)}
        _atomic_write(npz, lambda f: np.savez(f, **payload))
        _atomic_write(js, lambda f: f.write(meta_bytes))
        return npz

    def load(self, kind: str, key: str, verify: bool = True) -> dict | None:
        """``{"arrays": {name: ndarray}, "meta": dict}`` if a valid artifact for exactly this key exists.

        Returns ``None`` (and logs why at WARNING level, except for a plain miss) if anything does not
        match. ``verify=False`` skips the per-array sha256 check (names, shapes, dtypes and the key are
        still checked).
        """
        npz, js = self.path(kind, key), self.meta_path(kind, key)
        if not js.is_file() or not npz.is_file():
            return None
        try:
            record = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            logger.warning("artifact %s/%s: unreadable meta %s (%s); ignoring it", kind, key[:12], js, e)
            return None
        if not isinstance(record, dict) or record.get("key") != key or record.get("kind") != kind:
            logger.warning("artifact %s/%s: meta %s belongs to another key; ignoring it", kind, key[:12], js)
            return None
        try:
            with np.load(npz, allow_pickle=False) as z:
                names = set(z.files)
                if _KEY_ARRAY not in names or str(z[_KEY_ARRAY][()]) != key:
                    logger.warning("artifact %s/%s: %s stores another key; ignoring it", kind, key[:12], npz)
                    return None
                arrays = {n: z[n] for n in names if n != _KEY_ARRAY}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            logger.warning("artifact %s/%s: unreadable %s (%s); ignoring it", kind, key[:12], npz, e)
            return None
        spec = record.get("arrays") or {}
        if set(spec) != set(arrays):
            logger.warning("artifact %s/%s: arrays %s differ from meta %s; ignoring it",
                           kind, key[:12], sorted(arrays), sorted(spec))
            return None
        for n, a in arrays.items():
            s = spec[n]
            if list(a.shape) != list(s.get("shape", [])) or a.dtype.str != s.get("dtype") or (
                verify and array_digest(a) != s.get("sha256")
            ):
                logger.warning("artifact %s/%s: array %r does not match its meta; ignoring it", kind, key[:12], n)
                return None
        return {"arrays": arrays, "meta": record.get("meta") or {}}


# ---------------------------------------------------------------------------- embeddings
def cached_item_embeddings(
    cache: ArtifactCache | None,
    encoder: Any,
    texts: list[str],
    kind: str = "item_embeddings",
    meta: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """``encoder.encode(texts)`` (float32 ``[n, dim]``), cached under ``content_key(encoder.cache_key(), texts)``.

    ``cache=None`` just encodes. ``meta`` (e.g. dataset name, text stats) is stored alongside on a
    miss; it does not enter the key.
    """
    texts = [str(t) for t in texts]
    if cache is None:
        return np.asarray(encoder.encode(texts), dtype=np.float32)
    enc_key = encoder.cache_key()
    key = content_key("item_embeddings/v1", enc_key, texts)
    hit = cache.load(kind, key)
    if hit is not None:
        emb = hit["arrays"].get("embeddings")
        if emb is not None and emb.ndim == 2 and emb.shape[0] == len(texts):
            logger.info("item embeddings: cache hit %s (%d x %d) %s", key[:12], *emb.shape, cache.path(kind, key))
            return emb.astype(np.float32, copy=False)
        logger.warning("item embeddings: cached %s has an unexpected shape; recomputing", key[:12])
    logger.info("item embeddings: cache miss %s; encoding %d texts with %s", key[:12], len(texts), enc_key.get("encoder"))
    t0 = time.perf_counter()
    emb = np.asarray(encoder.encode(texts), dtype=np.float32)
    secs = time.perf_counter() - t0
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {emb.shape} for {len(texts)} texts")
    cache.save(kind, key, {"embeddings": emb},
               {"encoder": enc_key, "n": int(emb.shape[0]), "dim": int(emb.shape[1]),
                "encode_seconds": round(secs, 3), **dict(meta or {})})
    logger.info("item embeddings: saved %s (%d x %d, %.1fs)", cache.path(kind, key), *emb.shape, secs)
    return emb
