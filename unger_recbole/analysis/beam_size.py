"""Choose the beam size of a trained UNGER on the validation split (never on test).

    python -m unger_recbole.analysis.beam_size --run saved/<UNGER run> --beams 20 50 100

Rebuilds the run's model (as ``unger_recbole.recommend`` does), rebuilds its RecBole split from
the config stored in the checkpoint, and evaluates the validation users once per beam size with
RecBole's evaluator, timing each pass. Prints a table and writes ``beam_size_valid.json`` into
the run folder. The smallest beam whose ``valid_metric`` is within ``--tolerance`` of the best is
reported as the choice: a wider beam costs time linearly and only helps as long as it finds
better items.
"""

import argparse
import json
import time
from pathlib import Path

from unger_recbole.compat import CheckpointTrainer  # first: shims before RecBole

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from unger_recbole.recommend import load_recommender

RESULT_FILE = "beam_size_valid.json"


def choose_beam(rows, metric, tolerance):
    """The smallest beam whose ``metric`` is at least the best value minus ``tolerance``."""
    best = max(row["valid"][metric] for row in rows)
    eligible = [row["beam_size"] for row in rows if row["valid"][metric] >= best - tolerance]
    return min(eligible)


@torch.no_grad()
def evaluate_beams(run_dir, beams, device="auto"):
    """``[{beam_size, valid: {metric: value}, seconds, users}]`` on the run's validation split."""
    recommender = load_recommender(run_dir, device=device)
    model, config = recommender.model, recommender.config
    if max(config["topk"]) > min(beams):
        raise ValueError(f"every beam size must be >= the largest topk {max(config['topk'])}, got {sorted(beams)}")
    config["show_progress"] = False
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    _, valid_data, _ = data_preparation(config, dataset)
    trainer = CheckpointTrainer(config, model)
    rows = []
    for beam_size in beams:
        model.beam_size = beam_size
        model.reset_generation_stats()
        tic = time.time()
        result = trainer.evaluate(valid_data, load_best_model=False)
        rows.append({"beam_size": beam_size, "valid": {k: float(v) for k, v in result.items()},
                     "seconds": round(time.time() - tic, 2), "users": trainer.evaluated_users,
                     "generation": model.generation_report()})
    return config, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a completed UNGER run folder (saved/<run_id>)")
    parser.add_argument("--beams", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--tolerance", type=float, default=0.0005,
                        help="a beam within this much of the best valid metric counts as as good (default 0.0005)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    config, rows = evaluate_beams(args.run, sorted(set(args.beams)), device=args.device)
    metric = config["valid_metric"].lower()
    choice = choose_beam(rows, metric, args.tolerance)
    print(f"{'beam':>6}  " + "  ".join(f"{name:>10}" for name in rows[0]["valid"]) + f"  {'seconds':>8}")
    for row in rows:
        print(f"{row['beam_size']:>6}  " + "  ".join(f"{v:>10.4f}" for v in row["valid"].values())
              + f"  {row['seconds']:>8.1f}")
    print(f"chosen on validation {metric} (tolerance {args.tolerance}): beam_size={choice}")
    payload = {"run": str(args.run), "split": "valid", "metric": metric, "tolerance": args.tolerance,
               "chosen_beam_size": choice, "rows": rows, "device": str(config["device"]),
               "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (Path(args.run) / RESULT_FILE).write_text(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
