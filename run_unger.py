"""Train and evaluate UNGER or any RecBole model on RecBole's leave-one-out full-ranking benchmark.

Same arguments as RecBole's run_recbole.py:

    python run_unger.py --model=UNGER --dataset=ml-100k
    python run_unger.py --model=SASRec --dataset=amazon-beauty --epochs=1 --train_batch_size=2048
    python run_unger.py --model=UNGER --dataset=amazon-beauty --config_files="my.yaml" --save_predictions

Any ``--key=value`` is a config override (values are parsed like RecBole's: numbers, lists, dicts).
"""

import argparse
import sys


def parse_overrides(extra_args):
    """``['--epochs=1', '--topk=[10]']`` -> ``{'epochs': '1', 'topk': '[10]'}`` with clear errors."""
    overrides = {}
    for arg in extra_args:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not arg.startswith("--") or not sep or not key:
            raise SystemExit(
                f"run_unger.py: cannot read argument '{arg}': overrides must look like --key=value "
                f"(e.g. --epochs=1 or --topk=[10,20]), with no space around '='."
            )
        if key in overrides and overrides[key] != value:
            raise SystemExit(f"run_unger.py: '{key}' is given twice with different values.")
        overrides[key] = value
    return overrides


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="UNGER", help="UNGER or any RecBole model name (default: UNGER)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default="", help="space-separated extra yaml files, applied last")
    parser.add_argument("--save_predictions", action="store_true",
                        help="write the ranked top-k item tokens of every test user as JSONL in the run folder")
    args, extra = parser.parse_known_args(argv)
    overrides = parse_overrides(extra)

    from unger_recbole.quick_start import run
    try:
        results = run(args.model, args.dataset, config_file_list=args.config_files.split(),
                      config_dict=overrides, save_predictions=args.save_predictions)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"run_unger.py: {error}") from None
    if results is None:  # a rank other than 0 of a torchrun job: rank 0 reports
        return None
    if "test_result" not in results:  # stop_after=codes
        print(f"item codes written to {results['run_dir']}")
        return results
    print("test  " + "  ".join(f"{k}={v:.4f}" for k, v in results["test_result"].items()))
    print(f"results: {results['results_file']}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
