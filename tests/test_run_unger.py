"""run_unger.py end to end: RecBole baselines, results JSON, predictions, bad input."""

import json
import math
from pathlib import Path

import pytest

import run_unger


SMALL_SASREC = ["--hidden_size=16", "--inner_size=32", "--n_layers=1", "--n_heads=1", "--show_progress=False",
                "--state=WARNING"]


def cli(*args):
    return run_unger.main(list(args))


def test_sasrec_one_epoch_on_ml100k_reports_recall(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    results = cli("--model=SASRec", "--dataset=ml-100k", "--epochs=1", "--train_batch_size=2048", *SMALL_SASREC)
    assert 0.0 < results["test_result"]["recall@10"] <= 1.0
    assert "recall@10=" in capsys.readouterr().out
    saved = json.loads(Path(results["results_file"]).read_text())
    assert saved["test_result"] == results["test_result"]
    assert saved["config"]["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert saved["config"]["MAX_ITEM_LIST_LENGTH"] == 20 and saved["epochs_trained"] == 1
    assert Path(saved["checkpoint"]).is_file()


def recall_at(k, rows):
    return sum(len(set(r["items"][:k]) & set(r["ground_truth"])) / len(r["ground_truth"]) for r in rows) / len(rows)


def ndcg_at(k, rows):
    total = 0.0
    for r in rows:
        dcg = sum(1 / math.log2(rank + 2) for rank, item in enumerate(r["items"][:k]) if item in r["ground_truth"])
        total += dcg / sum(1 / math.log2(rank + 2) for rank in range(min(k, len(r["ground_truth"]))))
    return total / len(rows)


def test_saved_predictions_reproduce_recboles_metrics(tiny_data):
    results = cli("--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data}", "--save_predictions",
                  "--epochs=3", "--train_batch_size=64", *SMALL_SASREC)
    rows = [json.loads(line) for line in Path(results["predictions_file"]).read_text().splitlines()]
    assert len(rows) == 40  # one line per test user
    assert all(r["user"].startswith("u") and r["ground_truth"][0].startswith("i") for r in rows)
    assert all(len(r["items"]) == 20 and len(set(r["items"])) == 20 for r in rows)
    assert recall_at(10, rows) == pytest.approx(results["test_result"]["recall@10"], abs=1e-4)
    assert ndcg_at(20, rows) == pytest.approx(results["test_result"]["ndcg@20"], abs=1e-4)


def test_results_keep_the_learning_curve_of_every_epoch(tiny_data):
    results = cli("--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data}", "--epochs=3", "--eval_step=1",
                  "--train_batch_size=64", *SMALL_SASREC)
    curve = json.loads(Path(results["results_file"]).read_text())["learning_curve"]
    # The run folder's copy is rewritten every epoch, for runs that are stopped before the end.
    assert json.loads((Path(results["run_dir"]) / "learning_curve.json").read_text())["learning_curve"] == curve
    assert [entry["epoch"] for entry in curve] == [1, 2, 3]
    assert all(entry["train_loss"] > 0 and set(entry["valid"]) == set(results["best_valid_result"]) for entry in curve)
    best = max(curve, key=lambda entry: entry["valid"]["ndcg@10"])  # RecBole keeps the first best epoch
    assert best["valid"] == results["best_valid_result"]


def test_two_runs_never_share_a_checkpoint(tiny_data):
    args = ["--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data}", *SMALL_SASREC, "--epochs=1"]
    first, second = cli(*args), cli(*args)
    assert first["checkpoint"] != second["checkpoint"] and first["results_file"] != second["results_file"]


def test_unknown_dataset_names_the_folder_and_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"(?s)dataset/amazon-toys-games/amazon-toys-games.inter.*"
                                         r"python -m unger_recbole.data.prepare amazon-toys-games"):
        cli("--model=SASRec", "--dataset=amazon-toys-games")


def test_unknown_model_lists_known_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as error:
        cli("--model=SASRek", "--dataset=ml-100k")
    message = str(error.value)
    assert "Unknown model 'SASRek'" in message
    assert all(name in message for name in ("UNGER", "SASRec", "BERT4Rec", "GRU4Rec", "BPR"))


@pytest.mark.parametrize("bad", ["--epochs", "epochs=1", "--=3", "--epochs 1"])
def test_malformed_override_says_what_is_wrong(bad):
    with pytest.raises(SystemExit, match="must look like --key=value"):
        run_unger.parse_overrides([bad])


def test_overrides_are_passed_as_strings_for_recbole_to_parse():
    assert run_unger.parse_overrides(["--topk=[10,20]", "--epochs=1"]) == {"topk": "[10,20]", "epochs": "1"}
