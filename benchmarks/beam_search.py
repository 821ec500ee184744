"""UNGER's trie-constrained beam search: throughput over all test users of Amazon Beauty.

    python benchmarks/beam_search.py                          # 22,363 users, beam 20, top-20, CPU
    python benchmarks/beam_search.py --device cuda --dtype bfloat16 --hf-baseline --check
    python benchmarks/beam_search.py --run saved/<run_id>     # a trained run instead of random weights
    python benchmarks/beam_search.py --quick                  # seconds-long smoke test

What is timed: ``UNGER.generate`` (encoder, cross-attention keys/values, one incremental decoder
step per code level, the trie-masked log-softmax / top-k / child gathers of
``constrained_beam_search``) on batches of random full-length histories that already sit on the
device, plus copying the top-k items and scores back to the host. One batch is run untimed first
(warm-up). The model is either a trained run (``--run``) or a randomly initialised paper-size UNGER
on a code table (``--codes`` = a run's ``code_table.npz``, or a synthetic one: hierarchical
k-means, K=256, on random 128-d embeddings of 12,101 items, cached in ``benchmarks/cache``).
Random weights do not change the cost: the search does the same work whatever the scores.

``--check``  exactness on a small catalogue: with beam >= n_items the beam's top-k equals the
             top-k of ``score_items_exhaustively`` (teacher-forced scoring of every item).
``--hf-baseline``  the same-size HF ``T5ForConditionalGeneration`` with
             ``generate(num_beams, num_return_sequences, prefix_allowed_tokens_fn=<dict trie>)`` on
             ``--hf-users`` users, and the speed ratio UNGER / HF measured in the same process.
``--profile``  where the time goes: encoder, cross-attention K/V, decoder step per level, search
             ops (mask/log-softmax/top-k/gathers), fixed per-call overhead, top operators.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.common import Timer  # noqa: E402

TARGETS = {"cpu_all_users_seconds_max": 60.0, "gpu_all_users_seconds_max": 3.0, "gpu_speedup_vs_hf_min": 30.0,
           "hf_reference_users_per_s": {"H200": 206.0, "2-core CPU": "65-90"}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", help="a finished UNGER run folder (saved/<run_id>): its trained model")
    source.add_argument("--codes", help="a code_table.npz (e.g. saved/<run_id>/code_table.npz): random paper-size "
                                        "UNGER on these codes")
    p.add_argument("--n-items", type=int, default=common.BEAUTY_ITEMS, help="synthetic catalogue size (default 12101)")
    p.add_argument("--codebook-size", type=int, default=256, help="synthetic codes: hkmeans K (default 256)")
    p.add_argument("--users", type=int, default=common.BEAUTY_USERS, help="users to recommend for (default 22363)")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=None, help="users per generate() call (default: 128 cpu, "
                                                                "4096 cuda)")
    p.add_argument("--history", type=int, default=common.PAPER_STAGE2["max_history"],
                   help="history length of the random users (default 20, the paper's maximum)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<n>")
    p.add_argument("--dtype", default="float32", choices=sorted(common.DTYPES),
                   help="model weights/activations (scores are always accumulated in float32)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="timed passes over all users; the best is reported")
    p.add_argument("--check", action="store_true", help="exactness check on a small catalogue (PASS/FAIL)")
    p.add_argument("--check-items", type=int, default=200)
    p.add_argument("--check-codebook-size", type=int, default=8, help="small K so the check's codes have >= 3 levels")
    p.add_argument("--check-users", type=int, default=16)
    p.add_argument("--hf-baseline", action="store_true", help="time HF T5 generate() with prefix_allowed_tokens_fn")
    p.add_argument("--hf-users", type=int, default=256)
    p.add_argument("--hf-batch-size", type=int, default=None, help="default: 64 cpu, 256 cuda")
    p.add_argument("--profile", action="store_true", help="time breakdown of UNGER's search (extra passes)")
    p.add_argument("--profile-users", type=int, default=512)
    p.add_argument("--cache-dir", default=None, help="where synthetic code tables are cached (benchmarks/cache)")
    p.add_argument("--out", default=None,
                   help="JSON output (default benchmarks/results/beam_search-<device>-<date>.json)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 600 items (K=16), 96 users, beam 10, top-5, 32 HF users, tiny check")
    if p.parse_known_args(argv)[0].quick:  # quick changes the defaults; explicit options still win
        p.set_defaults(n_items=600, codebook_size=16, users=96, beam=10, topk=5, batch_size=32, check_items=60,
                       check_users=4, hf_users=32, profile_users=64)
    args = p.parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    if args.batch_size is None:
        args.batch_size = 4096 if device.type == "cuda" else 128
    if args.hf_batch_size is None:
        args.hf_batch_size = 256 if device.type == "cuda" else 64
    if args.topk > args.beam:
        p.error(f"--topk ({args.topk}) must be <= --beam ({args.beam})")
    return args, device


def log(*parts):
    print(*parts, flush=True)


# --------------------------------------------------------------------------------- the model
def build_model(args, device, dtype, log=log):
    if args.run:
        model = common.trained_unger(args.run, device, dtype)
        source = {"kind": "trained run", "run": str(args.run)}
    else:
        table = args.codes or common.synthetic_code_table(args.n_items, args.codebook_size, seed=args.seed,
                                                          cache_dir=args.cache_dir, log=log)
        model = common.random_unger(table, device=device, dtype=dtype, seed=args.seed,
                                    beam_size=args.beam, top_k=args.topk)
        with np.load(table) as npz:
            stats = common.code_table_stats(npz["codes"])
        source = {"kind": "random paper-size UNGER", "code_table": str(table),
                  "synthetic": args.codes is None, **stats}
    return model, source


def time_unger(model, item_seq, item_len, beam, topk, batch_size, device, repeats=1):
    """Best of ``repeats`` timed passes of ``generate`` over all users (one warm-up batch first)."""
    n = len(item_seq)
    items, _ = model.generate(item_seq[:batch_size], item_len[:batch_size], beam_size=beam, top_k=topk)
    items.cpu()
    best, batch_times = math.inf, []
    for _ in range(max(1, repeats)):
        times = []
        with Timer(device) as total:
            for start in range(0, n, batch_size):
                t0 = time.perf_counter()
                items, scores = model.generate(item_seq[start:start + batch_size], item_len[start:start + batch_size],
                                               beam_size=beam, top_k=topk)
                items, scores = items.cpu(), scores.cpu()  # waits for the device
                times.append(time.perf_counter() - t0)
        if total.seconds < best:
            best, batch_times = total.seconds, times
    valid = items >= 0
    return {"users": n, "beam": beam, "topk": topk, "batch_size": batch_size, "batches": len(batch_times),
            "repeats": max(1, repeats), "total_seconds": best, "users_per_s": n / best,
            "ms_per_user": 1000 * best / n, "batch_seconds_mean": float(np.mean(batch_times)),
            "batch_seconds_max": float(np.max(batch_times)),
            "last_batch_full_lists": float(valid.all(dim=1).float().mean())}


# ------------------------------------------------------------------------------ exactness
def exactness_check(args, device, log=log):
    """Beam with beam_size >= n_items must return exactly the exhaustive top-k (float32)."""
    from unger_recbole.generation import score_items_exhaustively
    from unger_recbole.model.unger import IncrementalDecoder

    table = common.synthetic_code_table(args.check_items, args.check_codebook_size, seed=args.seed + 1,
                                        cache_dir=args.cache_dir, log=log)
    model = common.random_unger(table, device=device, dtype=torch.float32, seed=args.seed + 1)
    n = model.n_items - 1
    k = min(args.topk, n)
    item_seq, item_len = common.random_histories(args.check_users, model.n_items, args.history, args.seed + 1, device)
    with torch.no_grad():
        items, scores = model.generate(item_seq, item_len, beam_size=n, top_k=k)  # ids 1..n
        memory, mask = model.encode(item_seq, item_len)
        exhaustive = score_items_exhaustively(IncrementalDecoder(model, memory, mask), model.trie, len(item_seq))
        exact_scores, exact_items = exhaustive.topk(k, dim=1)
        exact_items = exact_items + 1
        beam_items_exact_scores = exhaustive.gather(1, (items - 1).clamp(min=0))
        narrow_items, _ = model.generate(item_seq, item_len, beam_size=min(args.beam, n), top_k=min(k, args.beam))
    no_missing = bool((items >= 1).all())
    no_repeat = all(len(set(row)) == len(row) for row in items.tolist())
    scores_match = bool(torch.allclose(scores, exact_scores, atol=1e-4, rtol=1e-5))
    self_consistent = bool(torch.allclose(beam_items_exact_scores, scores, atol=1e-4, rtol=1e-5))
    same_items = float((items == exact_items).float().mean())
    kk = narrow_items.shape[1]
    overlap = np.mean([len(set(a) & set(b)) / kk for a, b in
                       zip(narrow_items.tolist(), exact_items[:, :kk].tolist())])
    passed = no_missing and no_repeat and scores_match and self_consistent
    with np.load(table) as npz:
        stats = common.code_table_stats(npz["codes"])
    result = {"passed": passed, "n_items": n, "codebook_size": args.check_codebook_size,
              "code_levels": stats["levels"], "code_length_histogram": stats["code_length_histogram"],
              "users": len(item_seq), "beam": n, "topk": k,
              "max_abs_score_diff": float((scores - exact_scores).abs().max()),
              "all_items_valid_and_distinct": no_missing and no_repeat,
              "topk_scores_equal_exhaustive": scores_match,
              "beam_scores_equal_exhaustive_of_same_items": self_consistent,
              "same_item_order_fraction": same_items,
              f"beam{min(args.beam, n)}_topk{kk}_overlap_with_exact": float(overlap)}
    log(f"exactness check (beam {n} >= {n} items, {stats['levels']} code levels, top-{k}, {len(item_seq)} users): "
        f"{'PASS' if passed else 'FAIL'}  max|score diff| {result['max_abs_score_diff']:.2e}, "
        f"same order {same_items:.3f}; beam {min(args.beam, n)} recovers {overlap:.3f} of the exact top-{kk}")
    return result


# ----------------------------------------------------------------------------- HF baseline
def hf_t5_like(model, dtype, device):
    """HF T5 of UNGER's size and token vocabulary, decoder start = UNGER's <BOS>, random weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=int(model.token_embedding.num_embeddings), d_model=int(model.hidden_size),
                      d_kv=int(model.hidden_size) // int(model.n_heads), d_ff=int(model.inner_size),
                      num_layers=int(model.n_encoder_layers), num_decoder_layers=int(model.n_decoder_layers),
                      num_heads=int(model.n_heads), dropout_rate=0.0, feed_forward_proj="relu",
                      decoder_start_token_id=int(model.bos_token), pad_token_id=0,
                      # never allowed by the trie, so every beam runs the L code steps
                      eos_token_id=int(model.distill_token), bos_token_id=int(model.bos_token),
                      tie_word_embeddings=True, use_cache=True)
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).to(device=device, dtype=dtype).eval()


def dict_trie(model):
    """{tuple(previous code tokens): [allowed next tokens]} -- the usual Python trie of HF setups."""
    symbols = model.item_symbols[1:].cpu().numpy()
    offset = model.level_offset.cpu().numpy()
    tokens = symbols + offset  # token of each level's symbol (END included)
    allowed = {}
    for row in tokens.tolist():
        for level in range(len(row)):
            allowed.setdefault(tuple(row[:level]), set()).add(row[level])
    return {prefix: sorted(nxt) for prefix, nxt in allowed.items()}


def fresh_cache():
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def time_hf(model, item_seq, item_len, beam, topk, batch_size, device, dtype):
    hf = hf_t5_like(model, dtype, device)
    trie = dict_trie(model)
    L = int(model.code_length)

    def allowed_tokens(batch_id, sent):  # sent = [decoder start, generated tokens...]
        return trie.get(tuple(sent[1:].tolist()), [int(model.distill_token)])

    cache_kwarg = []

    def run(seq, length):
        tokens = model.item_tokens[seq].reshape(len(seq), -1)  # the same code-token histories as UNGER
        kwargs = dict(input_ids=tokens, attention_mask=tokens != 0, num_beams=beam, num_return_sequences=topk,
                      max_new_tokens=L, min_new_tokens=L, do_sample=False, prefix_allowed_tokens_fn=allowed_tokens)
        # HF sizes its default decoder cache from config.num_layers (the *encoder* depth) when T5's
        # num_decoder_layers differs (1 vs 4 here) and fails; a lazily grown cache avoids that.
        names = cache_kwarg or ["cache", "past_key_values"]
        for name in names:
            try:
                out = hf.generate(**kwargs, **{name: fresh_cache()})
            except ValueError as error:
                if name in str(error) and name != names[-1]:
                    continue  # this transformers version calls the argument differently
                raise
            cache_kwarg[:] = [name]
            return out

    n = len(item_seq)
    with torch.no_grad():
        run(item_seq[:min(batch_size, n)], item_len[:min(batch_size, n)])  # warm-up
        with Timer(device) as total:
            for start in range(0, n, batch_size):
                out = run(item_seq[start:start + batch_size], item_len[start:start + batch_size]).cpu()
    generated = out[:, 1:1 + L]
    symbols = generated - model.level_offset.cpu()[:generated.shape[1]]
    valid = float((model.trie.item_of_symbols(symbols.to(model.trie.device)) >= 0).float().mean()) \
        if generated.shape[1] == L else 0.0
    return {"users": n, "beam": beam, "topk": topk, "batch_size": batch_size, "total_seconds": total.seconds,
            "users_per_s": n / total.seconds, "ms_per_user": 1000 * total.seconds / n,
            "last_batch_valid_item_fraction": valid, "trie_prefixes": len(trie),
            "parameters": int(sum(p.numel() for p in hf.parameters())),
            "model": "T5ForConditionalGeneration (random weights, relu FFN, tied embeddings)"}


# ------------------------------------------------------------------------------- profiling
def profile_search(model, item_seq, item_len, beam, topk, batch_size, device, log=log):
    """Per-user milliseconds of each part of ``generate`` (components synchronised one by one, so on
    a GPU the sum exceeds the pipelined total), per-call fixed overhead, and the top operators."""
    from unger_recbole.model import unger as unger_module

    timings = {"encoder": 0.0, "cross_kv": 0.0}
    step_times = {}
    original_encode = model.encode
    original_kv = model.memory_key_values
    original_step = unger_module.IncrementalDecoder.step

    def timed(key, fn):
        def wrapper(*a, **kw):
            common.synchronize(device)
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            common.synchronize(device)
            timings[key] += time.perf_counter() - t0
            return out
        return wrapper

    def timed_step(self, level, last, parent):
        common.synchronize(device)
        t0 = time.perf_counter()
        out = original_step(self, level, last, parent)
        common.synchronize(device)
        step_times[level] = step_times.get(level, 0.0) + time.perf_counter() - t0
        return out

    n = len(item_seq)
    model.generate(item_seq[:batch_size], item_len[:batch_size], beam_size=beam, top_k=topk)
    model.encode, model.memory_key_values = timed("encoder", original_encode), timed("cross_kv", original_kv)
    unger_module.IncrementalDecoder.step = timed_step
    try:
        with Timer(device) as total:
            for start in range(0, n, batch_size):
                model.generate(item_seq[start:start + batch_size], item_len[start:start + batch_size],
                               beam_size=beam, top_k=topk)
    finally:
        del model.encode, model.memory_key_values  # back to the class methods
        unger_module.IncrementalDecoder.step = original_step

    def per_user(seconds):
        return 1000 * seconds / n

    parts = {"encoder_ms": per_user(timings["encoder"]), "cross_attention_kv_ms": per_user(timings["cross_kv"])}
    for level in sorted(step_times):
        parts[f"decoder_step_level{level}_ms"] = per_user(step_times[level])
    accounted = sum(timings.values()) + sum(step_times.values())
    parts["search_ops_ms"] = per_user(total.seconds - accounted)  # mask gather, log-softmax, top-k, trie gathers
    parts["total_ms"] = per_user(total.seconds)

    # fixed cost of one generate() call: one user, many times (dominated by Python + op dispatch)
    one_seq, one_len = item_seq[:1], item_len[:1]
    model.generate(one_seq, one_len, beam_size=beam, top_k=topk)
    reps = 20
    with Timer(device) as single:
        for _ in range(reps):
            model.generate(one_seq, one_len, beam_size=beam, top_k=topk)
    call_ms = 1000 * single.seconds / reps
    parts["one_user_call_ms"] = call_ms
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.generate(one_seq, one_len, beam_size=beam, top_k=topk)
    # top-level aten ops launched by one generate() call: the per-call dispatch work (batch independent)
    parts["aten_ops_per_call"] = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None)
    parts["fixed_overhead_share"] = min(1.0, (call_ms / batch_size) / parts["total_ms"])

    # operator-level view
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sub = min(n, 4 * batch_size)
    with profile(activities=activities) as prof:
        for start in range(0, sub, batch_size):
            model.generate(item_seq[start:start + batch_size], item_len[start:start + batch_size],
                           beam_size=beam, top_k=topk)
        common.synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    grand = sum(getattr(e, key, 0.0) for e in events) or 1.0
    top_ops = [{"op": e.key, "share": getattr(e, key, 0.0) / grand, "calls": e.count} for e in events[:12]]
    result = {"users": n, "batch_size": batch_size, "parts_ms_per_user": parts, "top_ops": top_ops,
              "op_time": key}
    common.print_table([{"part": k, "ms": v} for k, v in parts.items() if k.endswith("_ms")],
                       [("part", "part", ""), ("ms", "ms/user", ".4f")],
                       title=f"profile: {n} users, batch {batch_size} (components synchronised one by one)")
    log(f"one-user generate() call: {call_ms:.2f} ms, {parts['aten_ops_per_call']} top-level aten ops -> fixed "
        f"overhead ~{100 * parts['fixed_overhead_share']:.1f}% of the per-user time at batch {batch_size}")
    log("top operators: " + ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in top_ops[:8]))
    return result


# ------------------------------------------------------------------------------------- main
def main(argv=None):
    args, device = parse_args(argv)
    dtype = common.DTYPES[args.dtype]
    payload = {"benchmark": "beam_search", "machine": common.machine_info(device), "args": vars(args),
               "targets": TARGETS}
    model, source = build_model(args, device, dtype)
    payload["model"] = {**common.model_summary(model), "source": source, "dtype": args.dtype}
    log(f"model: {source['kind']}, {payload['model']['n_items']} items, K={model.codebook_size}, "
        f"{model.code_length} code levels, {payload['model']['parameters']:,} parameters, {args.dtype} on {device}")

    item_seq, item_len = common.random_histories(args.users, model.n_items, min(args.history, model.max_seq_length),
                                                 args.seed, device)
    unger = time_unger(model, item_seq, item_len, args.beam, args.topk, args.batch_size, device, args.repeats)
    if args.users != common.BEAUTY_USERS:
        unger["extrapolated_all_users_seconds"] = common.BEAUTY_USERS / unger["users_per_s"]
    payload["unger"] = unger
    rows = [{"method": "UNGER constrained_beam_search", **unger}]

    payload["hf_baseline"] = None
    if args.hf_baseline:
        hf_users = min(args.hf_users, args.users)
        hf = time_hf(model, item_seq[:hf_users], item_len[:hf_users], args.beam, args.topk,
                     args.hf_batch_size, device, dtype)
        hf["extrapolated_all_users_seconds"] = common.BEAUTY_USERS / hf["users_per_s"]
        hf["unger_speedup"] = unger["users_per_s"] / hf["users_per_s"]
        payload["hf_baseline"] = hf
        rows.append({"method": "HF T5 generate + prefix_allowed_tokens_fn", **hf})

    common.print_table(rows, [("method", "method", ""), ("users", "users", "d"), ("batch_size", "batch", "d"),
                              ("total_seconds", "seconds", ".2f"), ("users_per_s", "users/s", ".1f"),
                              ("ms_per_user", "ms/user", ".3f"),
                              ("extrapolated_all_users_seconds", f"est. {common.BEAUTY_USERS} users s", ".1f")],
                       title=f"beam {args.beam}, top-{args.topk}, {args.dtype} on {device} "
                             f"({torch.get_num_threads()} CPU threads)")
    if payload["hf_baseline"]:
        log(f"UNGER is {payload['hf_baseline']['unger_speedup']:.1f}x faster than HF generate "
            f"(same process, same device, {payload['hf_baseline']['users']} HF users)")

    payload["check"] = exactness_check(args, device) if args.check else None
    payload["profile"] = (profile_search(model, item_seq[:args.profile_users], item_len[:args.profile_users],
                                         args.beam, args.topk, min(args.batch_size, args.profile_users), device)
                          if args.profile else None)
    all_users_seconds = (unger["total_seconds"] if args.users == common.BEAUTY_USERS
                         else unger["extrapolated_all_users_seconds"])
    limit = TARGETS["gpu_all_users_seconds_max" if device.type == "cuda" else "cpu_all_users_seconds_max"]
    payload["verdict"] = {"all_users_seconds": all_users_seconds,
                          "all_users_seconds_is_extrapolated": args.users != common.BEAUTY_USERS,
                          "all_users_target_seconds": limit, "all_users_target_met": all_users_seconds <= limit,
                          "check_passed": payload["check"]["passed"] if payload["check"] else None}
    if payload["hf_baseline"] and device.type == "cuda":
        payload["verdict"]["speedup_target_met"] = (payload["hf_baseline"]["unger_speedup"]
                                                    >= TARGETS["gpu_speedup_vs_hf_min"])
    out = common.write_json(args.out or common.default_out("beam_search", device), payload)
    log(f"wrote {out}")
    return 0 if (payload["check"] is None or payload["check"]["passed"]) else 1


if __name__ == "__main__":
    sys.exit(main())
