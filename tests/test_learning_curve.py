"""Learning-curve report from results JSON files (pure, no training)."""

import json

import pytest

from unger_recbole.analysis import learning_curve


def result(model, run_id, valid_ndcg, seconds=(10.0, 2.0)):
    curve = [{"epoch": epoch, "train_loss": 1.0 / epoch, "train_seconds": seconds[0],
              **({} if value is None else {"valid": {"ndcg@10": value, "recall@10": 2 * value},
                                            "valid_seconds": seconds[1]})}
             for epoch, value in enumerate(valid_ndcg, start=1)]
    return {"model": model, "dataset": "toy", "run_id": run_id, "config": {}, "learning_curve": curve}


def test_points_skip_epochs_that_were_not_evaluated():
    run = result("SASRec", "s", [0.01, None, 0.03])
    assert learning_curve.curve_points(run, "ndcg@10") == [(1, 0.01), (3, 0.03)]


def test_recent_gain_is_last_minus_window_evaluations_earlier():
    points = [(1, 0.010), (2, 0.020), (3, 0.025), (4, 0.026)]
    assert learning_curve.recent_gain(points, 2) == pytest.approx(0.026 - 0.020)
    assert learning_curve.recent_gain(points, 4) is None


def test_markdown_marks_each_runs_best_epoch_and_summarises():
    rising = result("UNGER", "u", [0.01, 0.02, 0.03, 0.04])
    peaked = result("SASRec", "s", [0.05, 0.06, 0.06, 0.05], seconds=(20.0, 0.0))
    text = learning_curve.curves_markdown([rising, peaked], "ndcg@10", window=2)
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("|")}
    assert rows["Epoch"] == ["UNGER", "SASRec"]
    assert rows["2"] == ["0.0200", "**0.0600**"]  # the first of two equal best epochs
    assert rows["4"] == ["**0.0400**", "0.0500"]
    assert rows["Gain over the last 2 evaluations"] == ["+0.0200", "-0.0100"]
    assert rows["Seconds per epoch (train + valid)"] == ["12", "20"]


def test_clear_errors_for_old_results_and_unknown_metrics():
    old = {"run_id": "old", "test_result": {}}
    with pytest.raises(ValueError, match="no learning_curve.*Rerun"):
        learning_curve.curve_points(old, "ndcg@10")
    with pytest.raises(ValueError, match="has: ndcg@10, recall@10"):
        learning_curve.curve_points(result("SASRec", "s", [0.1]), "mrr@10")


def test_cli_writes_markdown_and_plot(tmp_path):
    files = []
    for run in (result("UNGER", "u", [0.01, 0.02]), result("SASRec", "s", [0.03, 0.02])):
        files.append(tmp_path / f"{run['run_id']}.json")
        files[-1].write_text(json.dumps(run))
    out = tmp_path / "figs" / "curve"
    learning_curve.main([*map(str, files), "--metric", "NDCG@10", "--out", str(out)])
    assert "**0.0300**" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
