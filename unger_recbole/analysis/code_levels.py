"""Where a trained UNGER loses the target: at which level of the item code (validation split).

    python -m unger_recbole.analysis.code_levels --run saved/<UNGER run> [--ks 1 5 10 20]

Teacher-forced on each validation user's target: at level 1 the rank of the target's first
symbol among all first symbols the trie allows; at level l > 1 its rank among the symbols the
trie allows after the target's own first l-1 symbols. A beam of width W can only return the
target if its prefix survives every level, so low level-1 hits point to the coarse code (cluster)
choice and low deeper-level hits, given the right prefix, to the fine one. Writes
``code_levels_valid.json`` into the run folder. Validation only: never used to pick on test.
"""

import argparse
import json
import time
from pathlib import Path

import unger_recbole.compat  # noqa: F401  (first: shims before RecBole)

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from unger_recbole.recommend import load_recommender

RESULT_FILE = "code_levels_valid.json"


def symbol_ranks(per_level_log_probs, symbols):
    """[B, L] rank (0 = best) of each true symbol among the allowed symbols of its level, and
    [B, L] the number of allowed symbols. Ties count in the target's favour."""
    ranks, choices = [], []
    for level, log_probs in enumerate(per_level_log_probs):
        true = log_probs.gather(1, symbols[:, level:level + 1])
        if not torch.isfinite(true).all():
            raise ValueError(f"a target symbol at level {level + 1} is not allowed by the trie: "
                             f"the code table does not match the model")
        ranks.append((log_probs > true).sum(dim=1))
        choices.append(torch.isfinite(log_probs).sum(dim=1))
    return torch.stack(ranks, dim=1), torch.stack(choices, dim=1)


def summarize_levels(ranks, choices, ks):
    """Per level: hit@k (true symbol within the k best allowed) and mean number of choices."""
    return [{"level": level + 1,
             "mean_choices": float(choices[:, level].float().mean()),
             **{f"hit@{k}": float((ranks[:, level] < k).float().mean()) for k in ks}}
            for level in range(ranks.shape[1])]


@torch.no_grad()
def level_ranks_on_valid(run_dir, device="auto"):
    """(config, ranks [U, L], choices [U, L]) over the run's validation users."""
    recommender = load_recommender(run_dir, device=device)
    model, config = recommender.model, recommender.config
    init_seed(config["seed"], config["reproducibility"])
    _, valid_data, _ = data_preparation(config, create_dataset(config))
    model.eval()
    ranks, choices = [], []
    for interaction, *_ in valid_data:
        interaction = interaction.to(model.device)
        per_level, symbols = model.level_log_probs(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN],
                                                   interaction[model.ITEM_ID])
        batch_ranks, batch_choices = symbol_ranks(per_level, symbols)
        ranks.append(batch_ranks.cpu())
        choices.append(batch_choices.cpu())
    return config, torch.cat(ranks), torch.cat(choices)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a completed UNGER run folder (saved/<run_id>)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    tic = time.time()
    config, ranks, choices = level_ranks_on_valid(args.run, device=args.device)
    ks = sorted(set(args.ks))
    rows = summarize_levels(ranks, choices, ks)
    print(f"{'level':>5}  {'choices':>8}  " + "  ".join(f"{'hit@' + str(k):>7}" for k in ks))
    for row in rows:
        print(f"{row['level']:>5}  {row['mean_choices']:>8.1f}  "
              + "  ".join(f"{row[f'hit@{k}']:>7.4f}" for k in ks))
    all_levels_top1 = float((ranks == 0).all(dim=1).float().mean())
    print(f"target's symbol ranked first at every level (greedy decoding finds it): {all_levels_top1:.4f}")
    payload = {"run": str(args.run), "split": "valid", "users": int(ranks.shape[0]), "levels": rows,
               "greedy_hit": all_levels_top1, "seconds": round(time.time() - tic, 2),
               "device": str(config["device"]), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (Path(args.run) / RESULT_FILE).write_text(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
