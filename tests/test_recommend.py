"""unger_recbole.recommend: a trained tiny UNGER run recommends without retraining, as evaluation ranked."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

import run_unger
from tests.conftest import TINY_TITLES, write_tiny_dataset
from tests.test_unger_pipeline import CLI_SMALL
from unger_recbole.pipeline import code_table_digest
from unger_recbole.recommend import HistoryError, RunFolderError, load_recommender, main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny UNGER run (with predictions.jsonl), trained once for the whole module."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("recommend")
    data = write_tiny_dataset(root / "dataset").parent
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        results = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={data}", "--save_predictions",
                                  *CLI_SMALL])
    return root, (root / results["run_dir"]).resolve(), data / "tiny"


@pytest.fixture
def in_root(tiny_run, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tiny_run[0])
    return tiny_run


def evaluation_histories(inter_file, max_length=20):
    """Each user's test-time history: all items but the last by timestamp, the last ``max_length``."""
    rows = {}
    with open(inter_file) as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows.setdefault(row["user_id:token"], []).append((float(row["timestamp:float"]), row["item_id:token"]))
    return {user: [item for _, item in sorted(items)][:-1][-max_length:] for user, items in rows.items()}


def copy_run(run_dir, destination):
    """A copy of the run folder at ``destination/saved/<run_id>`` (same folder layout as a real run)."""
    target = destination / "saved" / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def rewrite_checkpoint(run_dir, **config_changes):
    path = run_dir / "model.pth"
    checkpoint = torch.load(path, weights_only=False)
    for key, value in config_changes.items():
        checkpoint["config"][key] = value
    torch.save(checkpoint, path)


def test_recommend_reproduces_the_evaluation_ranking_of_every_test_user(in_root):
    _, run_dir, data = in_root
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    histories = evaluation_histories(data / "tiny.inter")
    recommender = load_recommender(run_dir, "cpu")
    results = recommender.recommend([histories[p["user"]] for p in predictions], k=20, beam=20)
    assert len(results) == len(predictions) == 40
    for expected, got in zip(predictions, results):
        assert got["items"] == expected["items"], expected["user"]
        np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-5)
        assert got["titles"] == [TINY_TITLES[int(token[1:])] for token in got["items"]]
    # k below the beam: the head of the same list (the beam keeps 20 candidates either way)
    top3 = recommender.recommend([histories[predictions[0]["user"]]], k=3)[0]
    assert top3["items"] == predictions[0]["items"][:3]


def test_histories_longer_than_max_length_keep_the_last_items(in_root):
    recommender = load_recommender(in_root[1], "cpu")
    assert recommender.max_history == 20
    long_history = [f"i{i % 20}" for i in range(27)]
    full, tail = recommender.recommend([long_history, long_history[-20:]], k=5)
    assert full["items"] == tail["items"] and full["history"] == long_history[-20:]


def test_unknown_items_are_skipped_with_a_warning_and_an_empty_history_is_an_error(in_root):
    recommender = load_recommender(in_root[1], "cpu")
    with pytest.warns(UserWarning, match="nope1 nope2"):
        with_unknown = recommender.recommend([["i1", "nope1", "i2", "nope2"]], k=5)[0]
    assert with_unknown["unknown"] == ["nope1", "nope2"]
    assert with_unknown["items"] == recommender.recommend([["i1", "i2"]], k=5)[0]["items"]
    with pytest.warns(UserWarning), pytest.raises(HistoryError, match="no item known"):
        recommender.recommend([["i1"], ["nope"]], k=5)
    with pytest.raises(HistoryError, match="empty"):
        recommender.recommend([[]], k=5)
    with pytest.raises(ValueError, match="must be <= beam"):
        recommender.recommend([["i1"]], k=10, beam=5)


def test_incomplete_foreign_and_partial_run_folders_are_refused(in_root, tmp_path):
    run_dir = in_root[1]
    incomplete = copy_run(run_dir, tmp_path / "a")
    (incomplete / "run.json").unlink()
    with pytest.raises(RunFolderError, match="not a complete run: run.json is missing"):
        load_recommender(incomplete, "cpu")

    other_model = copy_run(run_dir, tmp_path / "b")
    manifest = json.loads((other_model / "run.json").read_text())
    (other_model / "run.json").write_text(json.dumps({**manifest, "model": "SASRec"}))
    with pytest.raises(RunFolderError, match="model 'SASRec', not UNGER"):
        load_recommender(other_model, "cpu")

    no_checkpoint = copy_run(run_dir, tmp_path / "c")
    (no_checkpoint / "model.pth").unlink()
    (no_checkpoint / "item_codes.csv").unlink()
    with pytest.raises(RunFolderError, match="lacks model.pth, item_codes.csv"):
        load_recommender(no_checkpoint, "cpu")
    with pytest.raises(RunFolderError, match="does not exist"):
        load_recommender(tmp_path / "nowhere", "cpu")


def test_a_code_table_that_does_not_match_the_checkpoint_is_refused(in_root, tmp_path, monkeypatch):
    run_dir = in_root[1]
    table = dict(np.load(run_dir / "code_table.npz"))

    # codes swapped between two items: the table the checkpoint names (still present) differs
    swapped = copy_run(run_dir, tmp_path / "a")
    codes = table["codes"].copy()
    codes[[1, 2]] = codes[[2, 1]]
    np.savez(swapped / "code_table.npz", **{**table, "codes": codes})
    with pytest.raises(RunFolderError, match="code_table_digest differs"):  # stored by every run
        load_recommender(swapped, "cpu")

    # a checkpoint without the digest: the table the checkpoint names (still present) differs
    rewrite_checkpoint(swapped, code_table_digest=None)
    with pytest.raises(RunFolderError, match="differs from .*the code table the checkpoint was trained with"):
        load_recommender(swapped, "cpu")

    # away from the original run, item_codes.csv (written with the table at training time) catches it
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunFolderError, match="list different items or codes"):
        load_recommender(swapped, "cpu")

    # another codebook size: the checkpoint's token embedding has the wrong number of tokens
    other_k = copy_run(run_dir, tmp_path / "b")
    np.savez(other_k / "code_table.npz", **{**table, "codebook_size": np.int64(int(table["codebook_size"]) + 1)})
    rewrite_checkpoint(other_k, code_table_digest=None)
    with pytest.raises(RunFolderError, match=r"implies L\*\(K\+1\)\+3"):
        load_recommender(other_k, "cpu")

    # a checkpoint from another run
    foreign = copy_run(run_dir, tmp_path / "c")
    rewrite_checkpoint(foreign, code_table_file="saved/UNGER-tiny-other/code_table.npz")
    with pytest.raises(RunFolderError, match="belongs to another run"):
        load_recommender(foreign, "cpu")

    # a digest stored at training time is compared exactly
    digest = code_table_digest(table["codes"], table["codebook_size"], table["item_tokens"])
    stamped = copy_run(run_dir, tmp_path / "d")
    rewrite_checkpoint(stamped, code_table_digest=digest)
    assert load_recommender(stamped, "cpu").recommend([["i1"]], k=1)[0]["items"]
    rewrite_checkpoint(stamped, code_table_digest="0" * 64)
    with pytest.raises(RunFolderError, match="code_table_digest differs"):
        load_recommender(stamped, "cpu")


def test_cli_prints_titles_writes_batches_and_exits_2_on_errors(in_root, tmp_path, capsys):
    _, run_dir, _ = in_root
    assert main(["--run", str(run_dir), "--history", "i0", "i1", "i2", "--k", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    ranked = [line.split() for line in out.splitlines()[2:]]
    assert len(ranked) == 3 and [row[0] for row in ranked] == ["1", "2", "3"]
    assert all(" ".join(row[3:]) == TINY_TITLES[int(row[1][1:])] for row in ranked)

    histories = tmp_path / "histories.jsonl"
    histories.write_text('{"user": "a", "history": ["i0", "i1", "xx"]}\n\n{"history": ["i5"]}\n')
    output = tmp_path / "out" / "recs.jsonl"
    assert main(["--run", str(run_dir), "--input", str(histories), "--output", str(output), "--k", "4"]) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["user"] for line in lines] == ["a", None]
    assert all(len(line["items"]) == len(line["titles"]) == len(line["scores"]) == 4 for line in lines)
    assert lines[0]["titles"][0] == TINY_TITLES[int(lines[0]["items"][0][1:])]
    assert "line 1 (user a): skipping 1 item(s)" in capsys.readouterr().err

    # the .item file changed since the run: tokens without titles, and why
    changed = copy_run(run_dir, tmp_path / "changed")
    manifest = json.loads((changed / "run.json").read_text())
    manifest["data_files"]["item"]["sha256"] = "0" * 64
    (changed / "run.json").write_text(json.dumps(manifest))
    assert main(["--run", str(changed), "--history", "i0", "--k", "2"]) == 0
    captured = capsys.readouterr()
    assert "no titles shown" in captured.err and "changed since the run" in captured.err
    assert all(len(line.split()) == 3 for line in captured.out.splitlines()[2:])

    for argv, message in ((["--run", str(tmp_path / "nowhere"), "--history", "i0"], "does not exist"),
                          (["--run", str(run_dir), "--history", "zz"], "no item known"),
                          (["--run", str(run_dir), "--history", "i0", "--k", "30"], "must be <= beam")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.startswith("recommend: ")
