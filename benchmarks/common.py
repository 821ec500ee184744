"""Helpers shared by the benchmark scripts: machine info, JSON output, tables, timing, and a
paper-size UNGER built on a code table without any RecBole data file.

Paper-size stage II (UNGER §4.1): d_model 128, 1 encoder layer, 4 decoder layers, 4 heads,
feed-forward 512, history 20. Amazon Beauty: 22,363 test users, 12,101 items.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/<script>.py` puts benchmarks/ first, not the repo
    sys.path.insert(0, str(REPO))

from unger_recbole import compat  # noqa: E402,F401  (numpy/pandas shims before RecBole)

import torch  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / "cache"

BEAUTY_USERS = 22363
BEAUTY_ITEMS = 12101
PAPER_STAGE2 = {"hidden_size": 128, "n_encoder_layers": 1, "n_decoder_layers": 4, "n_heads": 4,
                "inner_size": 512, "max_history": 20}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------- environment
def setup_torch(threads, device):
    """Set the CPU thread count (both intra- and inter-op where still allowed) and return the device."""
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(int(threads))
    except RuntimeError:  # only settable before the first parallel op; harmless
        pass
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no CUDA device is visible")
    return device


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    """HEAD's commit and whether the tree is dirty (read-only git calls; None outside a checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine_info(device):
    device = torch.device(device)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average_1_5_15": load,  # >> cores means the numbers were measured on a busy machine
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "git": git_commit(),
    }
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - a declared dependency
        info["transformers"] = None
    return info


def default_out(name, device):
    """``benchmarks/results/<name>-<device>-<YYYYMMDD-HHMMSS>.json``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"{name}-{torch.device(device).type}-{stamp}.json"


def write_json(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(rows, columns, title=None, out=None):
    """Plain-text table of ``rows`` (dicts) showing ``columns`` [(key, header, format)]."""
    out = out or sys.stdout
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None else (format(value, fmt) if fmt else str(value)))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    if title:
        print(title, file=out)
    for index, line in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)), file=out)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)
    out.flush()


class Timer:
    """``with Timer(device) as t: ...`` -> ``t.seconds`` (synchronises CUDA on both ends)."""

    def __init__(self, device="cpu"):
        self.device = device
        self.seconds = None

    def __enter__(self):
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start
        return False


# ------------------------------------------------------------------------------- code tables
def code_table_stats(codes):
    """Code-length histogram and trie depth of a padded code table (padding row excluded)."""
    real = np.asarray(codes)[1:]
    lengths = (real >= 0).sum(axis=1)
    hist = {int(k): int(v) for k, v in zip(*np.unique(lengths, return_counts=True))}
    return {"n_items": int(real.shape[0]), "levels": int(real.shape[1]), "code_length_histogram": hist}


def synthetic_code_table(n_items, codebook_size=256, dim=128, seed=0, cache_dir=None, log=print):
    """``.npz`` path of a code table for ``n_items`` real items: hkmeans codes of random Gaussian
    ``dim``-d embeddings, in ``code_table.npz`` layout (row 0 = RecBole's padding item).

    Cached under ``cache_dir`` (default ``benchmarks/cache``) by (n_items, K, dim, seed).
    """
    from unger_recbole.quantizers import build_quantizer

    cache_dir = Path(cache_dir) if cache_dir else CACHE_DIR
    path = cache_dir / f"codes-hkmeans-n{n_items}-K{codebook_size}-d{dim}-seed{seed}.npz"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n_items, dim)).astype(np.float32)
    quantizer = build_quantizer("hkmeans", codebook_size=codebook_size, seed=seed, device="cpu")
    start = time.perf_counter()
    codes = quantizer.quantize(embeddings)
    log(f"synthetic code table: hkmeans K={codebook_size} on {n_items} random {dim}-d embeddings "
        f"({time.perf_counter() - start:.1f}s) -> {path}")
    padded = np.vstack([np.full((1, codes.shape[1]), -1, dtype=np.int64), codes])
    integrated = np.vstack([np.zeros((1, dim), np.float32), embeddings])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, codes=padded, integrated=integrated, codebook_size=np.int64(codebook_size),
             item_tokens=np.array([f"i{i}" for i in range(n_items)]))
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------ models
def unger_config(code_table_file, beam_size=20, top_k=20, device="cpu", **overrides):
    """The handful of config keys ``UNGER.__init__`` (and RecBole's ``SequentialRecommender``)
    read, paper-size stage II by default. A plain dict: no RecBole ``Config``, no data files."""
    config = {
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": PAPER_STAGE2["max_history"], "device": torch.device(device),
        "hidden_size": PAPER_STAGE2["hidden_size"], "n_encoder_layers": PAPER_STAGE2["n_encoder_layers"],
        "n_decoder_layers": PAPER_STAGE2["n_decoder_layers"], "n_heads": PAPER_STAGE2["n_heads"],
        "inner_size": PAPER_STAGE2["inner_size"], "dropout_prob": 0.1, "ikd": True, "distill_weight": 1.0,
        "distill_negatives": 128, "beam_size": int(beam_size), "topk": [int(top_k)],
        "code_table_file": str(code_table_file),
        "enable_amp": False,  # the benchmarks cast the whole model to --dtype instead of autocasting
    }
    config.update(overrides)
    return config


def random_unger(code_table_file, device="cpu", dtype=torch.float32, seed=0, beam_size=20, top_k=20,
                 **overrides):
    """A randomly initialised UNGER (paper size unless overridden) on ``code_table_file``, eval mode."""
    from unger_recbole.model.unger import UNGER
    from unger_recbole.recommend import RunDataset

    with np.load(code_table_file) as table:
        n_rows = int(table["codes"].shape[0])
    config = unger_config(code_table_file, beam_size=beam_size, top_k=top_k, device=device, **overrides)
    torch.manual_seed(seed)
    model = UNGER(config, RunDataset(config["ITEM_ID_FIELD"], n_rows))
    return model.to(device=device, dtype=dtype).eval()


def trained_unger(run_dir, device="cpu", dtype=torch.float32):
    """The trained UNGER of a finished run (``saved/<run_id>``), via ``load_recommender``."""
    from unger_recbole.recommend import load_recommender

    recommender = load_recommender(run_dir, device=str(device))
    return recommender.model.to(dtype=dtype).eval()


def random_histories(n_users, n_items_with_pad, length, seed=0, device="cpu"):
    """``(item_seq [U, length], item_len [U])``: full-length histories of uniform random real items
    (internal ids 1..n-1), left-aligned as RecBole feeds them."""
    gen = torch.Generator().manual_seed(seed)
    item_seq = torch.randint(1, n_items_with_pad, (n_users, length), generator=gen)
    item_len = torch.full((n_users,), length, dtype=torch.long)
    return item_seq.to(device), item_len.to(device)


def model_summary(model):
    trie = model.trie
    return {"n_items": int(model.n_items - 1), "codebook_size": int(model.codebook_size),
            "code_levels": int(model.code_length), "trie_nodes_per_level": trie.num_nodes,
            "token_vocab": int(model.token_embedding.num_embeddings), "hidden_size": int(model.hidden_size),
            "n_encoder_layers": int(model.n_encoder_layers), "n_decoder_layers": int(model.n_decoder_layers),
            "n_heads": int(model.n_heads), "inner_size": int(model.inner_size),
            "max_history": int(model.max_seq_length),
            "parameters": int(sum(p.numel() for p in model.parameters()))}
