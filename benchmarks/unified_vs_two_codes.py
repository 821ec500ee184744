"""Paper Fig. 2: inference time of one unified code vs two separate codes (beam 100, top-5).

    python benchmarks/unified_vs_two_codes.py                        # 2,048 users, CPU
    python benchmarks/unified_vs_two_codes.py --users 22363 --device cuda --dtype bfloat16
    python benchmarks/unified_vs_two_codes.py --quick

* unified: one paper-size UNGER decoder on the unified code table generates the top-k with a
  trie-constrained beam search (``UNGER.generate``).
* two codes (EAGER-style): a semantic code and a collaborative code, each with its own decoder of
  the same size and its own trie; each decoder generates its top-k with the same beam, and the two
  lists are merged by confidence: the union ranked by score (an item found by both keeps its better
  score), first k kept. Measured two ways:
    - ``two_codes_shared_encoder``: one encoder pass feeds both decoders (EAGER's architecture:
      shared encoder, two decoders) -- the cheapest two-code setup, the conservative comparison;
    - ``two_codes_two_models``: two complete UNGER models (encoder + decoder each).

The code tables are synthetic by default (hierarchical k-means, K=256, on three different sets of
random 128-d embeddings of the same 12,101 items) or given with ``--codes`` (unified) and
``--codes-semantic`` / ``--codes-collaborative``. Weights are random: the cost of the search does
not depend on them. All variants run on the same batches, interleaved batch by batch (so a change in
background load hits them alike), after one untimed warm-up batch each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402

TARGET_RATIO = 2.0  # two codes >= 2x slower than the unified code (paper Fig. 2)
VARIANTS = ("unified", "two_codes_shared_encoder", "two_codes_two_models")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--codes", help="unified code_table.npz (default: synthetic)")
    p.add_argument("--codes-semantic", help="semantic code_table.npz (default: synthetic)")
    p.add_argument("--codes-collaborative", help="collaborative code_table.npz (default: synthetic)")
    p.add_argument("--n-items", type=int, default=common.BEAUTY_ITEMS)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--users", type=int, default=2048, help="users timed (default 2048; 22363 = all Beauty users)")
    p.add_argument("--beam", type=int, default=100)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 cpu, 1024 cuda")
    p.add_argument("--history", type=int, default=common.PAPER_STAGE2["max_history"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(common.DTYPES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="smoke test: 600 items (K=16), 48 users, beam 20, top-5")
    if p.parse_known_args(argv)[0].quick:  # quick changes the defaults; explicit options still win
        p.set_defaults(n_items=600, codebook_size=16, users=48, beam=20, batch_size=16)
    args = p.parse_args(argv)
    device = common.setup_torch(args.threads, args.device)
    if args.batch_size is None:
        args.batch_size = 1024 if device.type == "cuda" else 64
    if args.topk > args.beam:
        p.error(f"--topk ({args.topk}) must be <= --beam ({args.beam})")
    return args, device


def merge_by_confidence(items_a, scores_a, items_b, scores_b, k):
    """EAGER-style merge of two top-k lists: union ranked by score, duplicates keep their best score.

    ``items_*`` int64 ``[B, k_*]`` (-1 = empty slot), ``scores_*`` float ``[B, k_*]``; returns the first
    ``k`` of the merged ranking (``-1`` / ``-inf`` where fewer than ``k`` distinct items exist).
    """
    items = torch.cat([items_a, items_b], dim=1)
    scores = torch.cat([scores_a, scores_b], dim=1).float()
    scores = torch.where(items >= 0, scores, torch.full_like(scores, float("-inf")))
    scores, order = scores.sort(dim=1, descending=True)
    items = items.gather(1, order)
    n = items.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=items.device).tril(-1)  # [j, i]: i < j
    duplicate = ((items[:, :, None] == items[:, None, :]) & earlier).any(dim=2) & (items >= 0)
    scores = torch.where(duplicate, torch.full_like(scores, float("-inf")), scores)
    scores, order = scores.topk(min(k, n), dim=1)
    items = items.gather(1, order)
    return torch.where(torch.isfinite(scores), items, torch.full_like(items, -1)), scores


class Variants:
    """The three ways to produce a user's top-k, sharing the same batches."""

    def __init__(self, unified, semantic, collaborative, collaborative_own_encoder, beam, topk):
        self.unified, self.semantic, self.collaborative = unified, semantic, collaborative
        self.collaborative_own_encoder = collaborative_own_encoder  # same weights, encodes its own histories
        self.beam, self.topk = beam, topk

    def unified_topk(self, seq, length):
        return self.unified.generate(seq, length, beam_size=self.beam, top_k=self.topk)

    def _decode(self, model, memory, mask, batch):
        from unger_recbole.generation import constrained_beam_search
        from unger_recbole.model.unger import IncrementalDecoder

        if model.trie.device != memory.device:
            model.trie.to(memory.device)
        items, scores = constrained_beam_search(IncrementalDecoder(model, memory, mask), model.trie, batch,
                                                self.beam, self.topk)
        return torch.where(items >= 0, items + 1, items), scores

    @torch.no_grad()
    def two_codes_shared_encoder(self, seq, length):
        memory, mask = self.semantic.encode(seq, length)  # one encoder pass, two decoders
        a = self._decode(self.semantic, memory, mask, len(seq))
        b = self._decode(self.collaborative, memory, mask, len(seq))
        return merge_by_confidence(*a, *b, self.topk)

    @torch.no_grad()
    def two_codes_two_models(self, seq, length):
        a = self.semantic.generate(seq, length, beam_size=self.beam, top_k=self.topk)
        b = self.collaborative_own_encoder.generate(seq, length, beam_size=self.beam, top_k=self.topk)
        return merge_by_confidence(*a, *b, self.topk)


def build(args, device, dtype, log=print):
    tables, synthetic = {}, {}
    for name, given, seed in (("unified", args.codes, args.seed), ("semantic", args.codes_semantic, args.seed + 10),
                              ("collaborative", args.codes_collaborative, args.seed + 11)):
        synthetic[name] = given is None
        tables[name] = given or common.synthetic_code_table(args.n_items, args.codebook_size, seed=seed,
                                                            cache_dir=args.cache_dir, log=log)
    models = {name: common.random_unger(path, device=device, dtype=dtype, seed=args.seed + i, beam_size=args.beam,
                                        top_k=args.topk)
              for i, (name, path) in enumerate(tables.items())}
    sizes = {name: model.n_items for name, model in models.items()}
    if len(set(sizes.values())) != 1:
        raise SystemExit(f"the code tables cover different catalogues: {sizes}")
    info = {}
    for name, path in tables.items():
        with np.load(path) as npz:
            info[name] = {"code_table": str(path), "synthetic": synthetic[name],
                          **common.code_table_stats(npz["codes"]), "trie_nodes_per_level": models[name].trie.num_nodes}
    return models, info


def main(argv=None):
    args, device = parse_args(argv)
    dtype = common.DTYPES[args.dtype]
    payload = {"benchmark": "unified_vs_two_codes", "machine": common.machine_info(device), "args": vars(args),
               "target_ratio_min": TARGET_RATIO}
    models, payload["code_tables"] = build(args, device, dtype)
    payload["model"] = {**common.model_summary(models["unified"]), "dtype": args.dtype}
    payload["model"].pop("code_levels"), payload["model"].pop("trie_nodes_per_level")
    variants = Variants(models["unified"], models["semantic"], models["collaborative"], models["collaborative"],
                        args.beam, args.topk)
    run = {"unified": variants.unified_topk, "two_codes_shared_encoder": variants.two_codes_shared_encoder,
           "two_codes_two_models": variants.two_codes_two_models}
    item_seq, item_len = common.random_histories(args.users, models["unified"].n_items,
                                                 min(args.history, models["unified"].max_seq_length), args.seed, device)
    bs = args.batch_size
    with torch.no_grad():
        for name in VARIANTS:  # warm-up
            run[name](item_seq[:bs], item_len[:bs])[0].cpu()
        seconds = dict.fromkeys(VARIANTS, 0.0)
        for start in range(0, args.users, bs):
            seq, length = item_seq[start:start + bs], item_len[start:start + bs]
            for name in VARIANTS:
                common.synchronize(device)
                t0 = time.perf_counter()
                items, scores = run[name](seq, length)
                items.cpu(), scores.cpu()
                seconds[name] += time.perf_counter() - t0
        full = {name: float((run[name](item_seq[:bs], item_len[:bs])[0] >= 0).all(dim=1).float().mean())
                for name in VARIANTS}
    rows = []
    for name in VARIANTS:
        rows.append({"variant": name, "users": args.users, "total_seconds": seconds[name],
                     "ms_per_user": 1000 * seconds[name] / args.users, "users_per_s": args.users / seconds[name],
                     "ratio_to_unified": seconds[name] / seconds["unified"], "first_batch_full_lists": full[name]})
    payload["results"] = {row["variant"]: row for row in rows}
    payload["ratio_two_codes_shared_encoder"] = rows[1]["ratio_to_unified"]
    payload["ratio_two_codes_two_models"] = rows[2]["ratio_to_unified"]
    payload["target_met"] = {"shared_encoder": rows[1]["ratio_to_unified"] >= TARGET_RATIO,
                             "two_models": rows[2]["ratio_to_unified"] >= TARGET_RATIO}
    common.print_table(rows, [("variant", "variant", ""), ("users", "users", "d"), ("total_seconds", "seconds", ".2f"),
                              ("ms_per_user", "ms/user", ".3f"), ("users_per_s", "users/s", ".1f"),
                              ("ratio_to_unified", "x unified", ".2f")],
                       title=f"unified vs two codes: beam {args.beam}, top-{args.topk}, batch {bs}, {args.dtype} on "
                             f"{device} ({torch.get_num_threads()} CPU threads); target two codes >= "
                             f"{TARGET_RATIO:g}x unified")
    out = common.write_json(args.out or common.default_out("unified_vs_two_codes", device), payload)
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
