"""Beam size chosen on validation: the tool reproduces the run's own validation metrics."""

import json
from pathlib import Path

import pytest

import run_unger
from tests.test_unger_pipeline import CLI_SMALL
from unger_recbole.analysis.beam_size import RESULT_FILE, choose_beam, main


def rows(*pairs):
    return [{"beam_size": beam, "valid": {"ndcg@10": value}} for beam, value in pairs]


def test_choose_beam_takes_the_smallest_beam_within_tolerance_of_the_best():
    assert choose_beam(rows((20, 0.030), (50, 0.0352), (100, 0.0355)), "ndcg@10", 0.0005) == 50
    assert choose_beam(rows((20, 0.030), (50, 0.0352), (100, 0.0355)), "ndcg@10", 0.0) == 100
    assert choose_beam(rows((20, 0.036), (50, 0.0352)), "ndcg@10", 0.0) == 20


def test_beam_size_tool_reproduces_the_runs_best_validation_result(tiny_data):
    results = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", *CLI_SMALL])
    payload = main(["--run", results["run_dir"], "--beams", "20", "30", "--device", "cpu"])
    by_beam = {row["beam_size"]: row for row in payload["rows"]}
    # The run's checkpoint is its best-validation epoch, evaluated then with beam_size=20.
    assert by_beam[20]["valid"] == pytest.approx(results["best_valid_result"], abs=1e-4)
    assert by_beam[20]["users"] == 40 and by_beam[20]["generation"]["invalid_rate"] == 0.0
    # 20 items: a beam of 20 already keeps every item, so a wider one changes nothing.
    assert by_beam[30]["valid"] == by_beam[20]["valid"]
    assert payload["chosen_beam_size"] == 20 and payload["split"] == "valid"
    assert json.loads((Path(results["run_dir"]) / RESULT_FILE).read_text())["chosen_beam_size"] == 20


def test_beam_size_tool_rejects_a_beam_below_topk(tiny_data):
    results = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", *CLI_SMALL])
    with pytest.raises(ValueError, match="largest topk 20"):
        main(["--run", results["run_dir"], "--beams", "10", "20", "--device", "cpu"])
