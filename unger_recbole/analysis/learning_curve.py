"""Validation learning curves of finished runs side by side: which model is still improving?

    python -m unger_recbole.analysis.learning_curve results/UNGER-<run>.json results/SASRec-<run>.json \\
        --metric ndcg@10 --out docs/tables/amazon-beauty-curve

Reads the ``learning_curve`` each results JSON keeps (one entry per trained epoch: training loss
and seconds, and the validation result where the epoch was evaluated); for a run that was stopped
before it finished, pass its ``saved/<run>/learning_curve.json``, rewritten after every epoch.
Writes ``<out>.md``, the validation metric per epoch for each run with its best epoch in bold,
and ``<out>.png``. The
"gain over the last N evaluations" row tells a converged run (about 0) from one stopped early by
its epoch budget. Only validation numbers are shown: the curve is for judging training length,
never for picking anything on test.
"""

import argparse
import json
from pathlib import Path

from unger_recbole.analysis.tables import markdown_row, result_label


def curve_points(result, metric):
    """``[(epoch, value)]`` of ``metric`` over the evaluated epochs of one results dict."""
    curve = result.get("learning_curve")
    if curve is None:
        raise ValueError(f"run {result.get('run_id')} has no learning_curve: it was written before runs "
                         f"recorded one. Rerun it to get its curve.")
    points = [(entry["epoch"], entry["valid"][metric]) for entry in curve if "valid" in entry and metric in entry["valid"]]
    if not points:
        available = sorted({name for entry in curve for name in entry.get("valid", {})})
        raise ValueError(f"run {result.get('run_id')} has no validation {metric!r} in its learning curve "
                         f"(it has: {', '.join(available) or 'no evaluated epoch'}); pick --metric from these.")
    return points


def recent_gain(points, window):
    """Last value minus the value ``window`` evaluations earlier (None when the curve is shorter)."""
    if len(points) <= window:
        return None
    return points[-1][1] - points[-1 - window][1]


def seconds_per_epoch(result):
    """Mean training plus validation seconds over the epochs of one run."""
    curve = result["learning_curve"]
    return sum(entry["train_seconds"] + entry.get("valid_seconds", 0.0) for entry in curve) / len(curve)


def curves_markdown(results, metric, window=3):
    """Markdown table: one row per epoch, one column per run; best epoch bold, then summary rows."""
    labels = [result_label(result) for result in results]
    points = [dict(curve_points(result, metric)) for result in results]
    best = [max(by_epoch, key=lambda epoch: (by_epoch[epoch], -epoch)) for by_epoch in points]
    epochs = sorted(set().union(*points))
    lines = [f"Validation {metric} per epoch (best epoch in bold).", "",
             markdown_row(["Epoch"] + labels), markdown_row(["---:"] * (len(labels) + 1))]
    for epoch in epochs:
        cells = []
        for by_epoch, best_epoch in zip(points, best):
            value = by_epoch.get(epoch)
            text = "" if value is None else f"{value:.4f}"
            cells.append(f"**{text}**" if epoch == best_epoch else text)
        lines.append(markdown_row([str(epoch)] + cells))
    gains = [recent_gain(sorted(by_epoch.items()), window) for by_epoch in points]
    lines.append(markdown_row([f"Gain over the last {window} evaluations"]
                              + ["" if gain is None else f"{gain:+.4f}" for gain in gains]))
    lines.append(markdown_row(["Seconds per epoch (train + valid)"]
                              + [f"{seconds_per_epoch(result):.0f}" for result in results]))
    lines.append(markdown_row(["Run"] + [f"`{result.get('run_id')}`" for result in results]))
    return "\n".join(lines) + "\n"


def plot_curves(results, metric, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for result in results:
        epochs, values = zip(*curve_points(result, metric))
        axis.plot(epochs, values, marker="o", label=result_label(result))
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"validation {metric}")
    axis.set_title(f"{results[0].get('dataset')}: validation {metric} per epoch")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results JSON files (results/<run_id>.json)")
    parser.add_argument("--metric", default="ndcg@10", help="validation metric to plot (default ndcg@10)")
    parser.add_argument("--window", type=int, default=3, help="evaluations over which the recent gain is taken")
    parser.add_argument("--out", required=True, help="output path without extension: writes <out>.md and <out>.png")
    args = parser.parse_args(argv)
    results = [json.loads(Path(path).read_text()) for path in args.results]
    metric = args.metric.lower()
    markdown = curves_markdown(results, metric, args.window)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown)
    plot_curves(results, metric, out.with_suffix(".png"))
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
