"""Quantizer cost: hierarchical k-means and RQ-VAE on synthetic 128-d item embeddings.

    python benchmarks/quantizers.py                         # 12,101 / 100,000 / 1,000,000 items, CPU
    python benchmarks/quantizers.py --sizes 12101,100000 --methods hkmeans --threads 2
    python benchmarks/quantizers.py --device cuda
    python benchmarks/quantizers.py --quick

Each (method, size) runs in a fresh Python process (``--isolate``, the default outside ``--quick``),
so its peak memory is its own. Embeddings are i.i.d. standard normal float32 ``[n, 128]``
(generated before the clock starts, excluded from time and memory deltas). Time = wall time of
``quantizer.quantize(embeddings)`` (validation of the code table included).

Memory columns:

* ``peak_rss_delta_mb``: peak resident memory during ``quantize`` minus the resident memory
  before it (Linux: the peak is reset through ``/proc/self/clear_refs`` first and read from
  ``VmHWM``; elsewhere ``ru_maxrss``, which cannot be reset, so it can under-count). Covers numpy,
  torch CPU tensors and everything else.
* ``tracemalloc_peak_mb`` (with ``--tracemalloc``): peak of Python + numpy allocations (numpy
  reports its buffers to tracemalloc; torch CPU tensors are not seen), from a second, untimed run
  of the case, because tracemalloc slows RQ-VAE training 3-4x.
* ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` when ``--device cuda``.

RQ-VAE epochs: ``--rqvae-epochs`` is one number for all sizes or one per size; the default
``50,10,2`` trains 50 epochs at 12k items (the yaml default), 10 at 100k and 2 at 1M so the 1M run
stays in minutes -- the epochs used are in every row. Target: hkmeans on 1M items <= 10 min on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402

TARGET = {"hkmeans_1m_seconds_max_cpu": 600.0}
WORKER_TAG = "QUANTIZER_BENCH_RESULT "


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="12101,100000,1000000", help="comma-separated item counts")
    p.add_argument("--methods", default="hkmeans,rqvae", help="comma-separated: hkmeans, rqvae")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--rqvae-epochs", default="50,10,2",
                   help="RQ-VAE epochs: one number, or one per size (default 50,10,2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    isolate = p.add_mutually_exclusive_group()
    isolate.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                         help="one fresh process per case (default, except with --quick)")
    isolate.add_argument("--in-process", dest="isolate", action="store_false", help="run every case in this process")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also measure the tracemalloc peak, in a second untimed run of each case (tracemalloc "
                        "slows RQ-VAE training 3-4x, so it never runs during the timed run)")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="smoke test: 500 and 2,000 items, K=64, 1 RQ-VAE epoch")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: "method:n:epochs"
    if p.parse_known_args(argv)[0].quick:  # quick changes the defaults; explicit options still win
        p.set_defaults(sizes="500,2000", codebook_size=64, rqvae_epochs="1", isolate=False)
    args = p.parse_args(argv)
    if args.isolate is None:
        args.isolate = True
    args.size_list = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    args.method_list = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    unknown = set(args.method_list) - {"hkmeans", "rqvae"}
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; use hkmeans, rqvae")
    epochs = [int(e) for e in str(args.rqvae_epochs).split(",") if e.strip()]
    if len(epochs) == 1:
        epochs = epochs * len(args.size_list)
    elif len(epochs) != len(args.size_list):
        if args.rqvae_epochs == p.get_default("rqvae_epochs") and not args.worker:
            epochs = [50 if n <= 20000 else 10 if n <= 200000 else 2 for n in args.size_list]
        else:
            p.error(f"--rqvae-epochs has {len(epochs)} values for {len(args.size_list)} sizes")
    args.epoch_list = epochs
    return args


# ----------------------------------------------------------------------------------- memory
def _status_kb(field):
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss():
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def current_rss_mb():
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # best effort


def peak_rss_mb(resettable):
    if resettable:
        return _status_kb("VmHWM") / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ------------------------------------------------------------------------------------ a case
def run_case(method, n, epochs, args, device):
    """Time and memory of one quantizer on ``n`` random embeddings, in this process."""
    import tracemalloc

    from unger_recbole.quantizers import build_quantizer

    rng = np.random.default_rng(args.seed)
    embeddings = rng.standard_normal((n, args.dim), dtype=np.float32)
    params = {"codebook_size": args.codebook_size, "device": str(device)}
    if method == "rqvae":
        params["epochs"] = int(epochs)
    try:  # untimed warm-up on a few items: lazy imports and first-call allocations stay out of the timing
        build_quantizer(method, **{**params, "epochs": 1} if method == "rqvae" else params).quantize(embeddings[:512])
    except ValueError:  # e.g. RQ-VAE collisions on the tiny warm-up set: irrelevant here
        pass
    quantizer = build_quantizer(method, **params)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    resettable = reset_peak_rss()
    rss_before = current_rss_mb()
    start = time.perf_counter()
    codes = quantizer.quantize(embeddings)
    common.synchronize(device)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb(resettable)
    traced_peak = None
    if args.tracemalloc:  # second, untimed run: tracemalloc's own overhead must not reach the timing
        tracemalloc.start()
        build_quantizer(method, **params).quantize(embeddings)
        traced_peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    report = quantizer.report
    row = {"method": method, "n_items": n, "dim": args.dim, "codebook_size": args.codebook_size,
           "epochs": int(epochs) if method == "rqvae" else None, "seconds": seconds,
           "items_per_s": n / seconds, "peak_rss_delta_mb": max(0.0, peak - rss_before), "rss_before_mb": rss_before,
           "peak_rss_mb": peak, "peak_rss_resettable": resettable, "tracemalloc_peak_mb": traced_peak,
           "cuda_peak_mb": (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None),
           "embeddings_mb": embeddings.nbytes / 2 ** 20, "code_max_len": int(codes.shape[1]),
           "code_length_histogram": report.get("code_length_histogram"), "device": str(device)}
    for key in ("kmeans_calls", "lloyd_iterations", "forced_splits", "collisions_before_fix", "max_collision_group",
                "codebook_usage", "dead_codes_restarted"):
        if key in report:
            row[key] = report[key]
    if "loss_history" in report:
        row["final_loss"] = report["loss_history"][-1] if report["loss_history"] else None
    return row


def run_isolated(method, n, epochs, args):
    """``run_case`` in a fresh interpreter (so peak memory is this case's alone)."""
    cmd = [sys.executable, "-m", "benchmarks.quantizers", "--worker", f"{method}:{n}:{epochs}",
           "--dim", str(args.dim), "--codebook-size", str(args.codebook_size), "--device", args.device,
           "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(WORKER_TAG):
            return json.loads(line[len(WORKER_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"method": method, "n_items": n, "epochs": epochs, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def main(argv=None):
    args = parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    if args.worker:
        method, n, epochs = args.worker.split(":")
        row = run_case(method, int(n), int(epochs), args, device)
        print(WORKER_TAG + json.dumps(row), flush=True)
        return 0

    payload = {"benchmark": "quantizers", "machine": common.machine_info(device), "args": vars(args),
               "targets": TARGET, "embeddings": "i.i.d. standard normal float32", "rows": []}
    for method in args.method_list:
        for n, epochs in zip(args.size_list, args.epoch_list):
            label = f"{method} n={n:,}" + (f" epochs={epochs}" if method == "rqvae" else "")
            print(f"running {label} ...", flush=True)
            if args.isolate:
                row = run_isolated(method, n, epochs, args)
            else:
                try:
                    row = run_case(method, n, epochs, args, device)
                except Exception as error:  # keep the other cases going; the row says what failed
                    row = {"method": method, "n_items": n, "epochs": epochs, "error": repr(error)}
            if "error" in row:
                print(f"  {label}: FAILED {row['error']}", flush=True)
            payload["rows"].append(row)
    common.print_table(payload["rows"],
                       [("method", "method", ""), ("n_items", "items", ","), ("epochs", "epochs", ""),
                        ("seconds", "seconds", ".1f"), ("items_per_s", "items/s", ",.0f"),
                        ("peak_rss_delta_mb", "peak RSS +MB", ".0f"), ("tracemalloc_peak_mb", "tracemalloc MB", ".1f"),
                        ("cuda_peak_mb", "CUDA MB", ".0f"), ("code_max_len", "max code len", "")],
                       title=f"quantizers on {device} ({args.threads} CPU threads, "
                             f"{'one process per case' if args.isolate else 'one process'})")
    million = [r for r in payload["rows"] if r.get("method") == "hkmeans" and r.get("n_items") == 1_000_000
               and "seconds" in r]
    payload["hkmeans_1m_target_met"] = (million[0]["seconds"] <= TARGET["hkmeans_1m_seconds_max_cpu"]
                                        if million and device.type == "cpu" else None)
    out = common.write_json(args.out or common.default_out("quantizers", device), payload)
    print(f"wrote {out}", flush=True)
    return 1 if any("error" in r for r in payload["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
