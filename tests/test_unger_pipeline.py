"""UNGER end to end through run_unger.py on the tiny dataset (real MiniLM, stage I, hkmeans, stage II)."""

import csv
import json
from pathlib import Path

import numpy as np
import torch

import run_unger
from recbole.data.interaction import cat_interactions
from tests.test_unger_model import SMALL_UNGER, tiny_unger

CLI_SMALL = [f"--{key}={value}" for key, value in SMALL_UNGER.items()] + [
    "--show_progress=False", "--state=WARNING", "--train_batch_size=64", "--stage1_epochs=2", "--epochs=2"]


def test_unger_runs_end_to_end_and_reuses_cached_stages(tiny_data):
    results = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", "--save_predictions",
                              *CLI_SMALL])
    run_dir = Path(results["run_dir"])
    assert set(results["stage_seconds"]) >= {"semantic_encoder", "stage1", "quantizer", "train", "test"}
    assert 0.0 <= results["test_result"]["recall@10"] <= 1.0
    assert results["generation"] == {"users": 40, "invalid_rate": 0.0, "short_list_rate": 0.0}
    assert [entry["epoch"] for entry in results["learning_curve"]] == [1, 2]  # UNGER's warm-up trainer too
    assert all("ndcg@10" in entry["valid"] for entry in results["learning_curve"])

    with open(run_dir / "item_codes.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["item_id"] for r in rows) == sorted(f"i{i}" for i in range(20))  # every item, original ids
    assert len({r["code"] for r in rows}) == 20  # unique codes
    report = json.loads((run_dir / "codes_report.json").read_text())
    assert report["quantizer"]["collisions"] == 0 and report["stage1"]["epochs"] >= 1

    predictions = [json.loads(line) for line in Path(results["predictions_file"]).read_text().splitlines()]
    assert len(predictions) == 40
    assert all(len(p["items"]) == 20 and len(set(p["items"])) == 20 for p in predictions)  # beam 20, no repeats
    assert all(set(p["items"]) <= {f"i{i}" for i in range(20)} for p in predictions)

    again = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", *CLI_SMALL])
    assert again["stage_seconds"]["stage1"] < results["stage_seconds"]["stage1"]  # cached stage I and codes
    table, table_again = (np.load(Path(r["run_dir"]) / "code_table.npz") for r in (results, again))
    assert np.array_equal(table["codes"], table_again["codes"])

    changed = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", *CLI_SMALL,
                              "--quantizer=random", "--code_embedding=semantic", "--stop_after=codes"])
    random_codes = np.load(Path(changed["run_dir"]) / "code_table.npz")["codes"]
    assert "stage1" in changed["stage_seconds"] and not np.array_equal(random_codes, table["codes"])


def test_unger_overfits_a_toy_dataset_to_recall_at_1(tiny_data, tmp_path):
    """Proves the generation loss is wired to the codes the beam search decodes."""
    config, model, (train, _, _) = tiny_unger(tiny_data, tmp_path, ikd=True)
    batch = cat_interactions(list(train))  # all 200 training sequences in one batch
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    model.eval()
    items, _ = model.generate(batch["item_id_list"], batch["item_length"], beam_size=20, top_k=1)
    # A user's stride shows from two history items on; with one item the next item is ambiguous.
    determined = batch["item_length"] >= 2
    assert (items[determined, 0] == batch["item_id"][determined]).float().mean().item() == 1.0


def test_stage1_on_ml100k_writes_a_code_table_covering_every_movie(tmp_path, monkeypatch):
    """Stage I for one epoch on RecBole's ml-100k (texts from movie_title), then hkmeans codes."""
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    results = run_unger.main(["--model=UNGER", "--dataset=ml-100k", "--stop_after=codes", "--stage1_epochs=1",
                              "--stage1_embedding_size=32", "--train_batch_size=2048", "--show_progress=False",
                              "--state=WARNING"])
    run_dir = Path(results["run_dir"])
    report = json.loads((run_dir / "codes_report.json").read_text())
    assert report["item_text"]["title_field"] == "movie_title" and report["item_text"]["n_empty_text"] == 0
    assert report["stage1"]["epochs"] == 1 and report["stage1"]["best_valid"]["recall@10"] > 0
    with open(run_dir / "item_codes.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1682 and len({r["item_id"] for r in rows}) == 1682
    assert len({r["code"] for r in rows}) == 1682  # one unique code per movie
    table = np.load(run_dir / "code_table.npz")
    assert table["codes"].shape[0] == 1683 and (table["codes"][0] == -1).all()  # row 0: RecBole padding
