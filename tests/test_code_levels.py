"""Per-level diagnostic of a trained UNGER: where along the code the target is lost."""

import json
from pathlib import Path

import pytest
import torch

import run_unger
from tests.test_unger_model import tiny_unger, with_target
from tests.test_unger_pipeline import CLI_SMALL
from unger_recbole.analysis.code_levels import RESULT_FILE, main, summarize_levels, symbol_ranks

NEG_INF = float("-inf")


def test_symbol_ranks_count_better_allowed_symbols_and_ties_favour_the_target():
    level1 = torch.tensor([[-1.0, -2.0, NEG_INF], [-0.5, -0.5, -3.0]])
    level2 = torch.tensor([[NEG_INF, 0.0, NEG_INF], [-2.0, -0.2, -1.0]])
    ranks, choices = symbol_ranks([level1, level2], torch.tensor([[1, 1], [1, 0]]))
    assert ranks.tolist() == [[1, 0], [0, 2]]
    assert choices.tolist() == [[2, 1], [3, 3]]
    rows = summarize_levels(ranks, choices, [1, 2])
    assert rows == [{"level": 1, "mean_choices": 2.5, "hit@1": 0.5, "hit@2": 1.0},
                    {"level": 2, "mean_choices": 2.0, "hit@1": 0.5, "hit@2": 0.5}]


def test_a_disallowed_target_symbol_is_an_error():
    with pytest.raises(ValueError, match="not allowed by the trie"):
        symbol_ranks([torch.tensor([[0.0, NEG_INF]])], torch.tensor([[1]]))


def test_level_ranks_agree_with_item_probabilities_summed_over_each_prefix(tiny_data, tmp_path):
    """P(first symbol s) = sum of P(item) over the items whose code starts with s, and likewise for
    the second symbol given the first, so ranks from item scores must equal the level ranks."""
    _, model, (_, _, test) = tiny_unger(tiny_data, tmp_path)
    model.eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        targets = interaction["item_id"]
        per_level, symbols = model.level_log_probs(interaction["item_id_list"], interaction["item_length"], targets)
        ranks, _ = symbol_ranks(per_level, symbols)
        item_probs = torch.stack([model.predict(with_target(interaction, item)).exp()
                                  for item in range(1, model.n_items)], dim=1)  # [B, n_real]
    item_symbols = model.item_symbols[1:]
    for user in range(len(targets)):
        target_code = item_symbols[targets[user] - 1]
        for level in range(2):
            same_prefix = (item_symbols[:, :level] == target_code[:level]).all(dim=1)
            mass = {}
            for item in torch.nonzero(same_prefix).flatten().tolist():
                symbol = int(item_symbols[item, level])
                mass[symbol] = mass.get(symbol, 0.0) + float(item_probs[user, item])
            target_mass = mass[int(target_code[level])]
            expected_rank = sum(value > target_mass * (1 + 1e-4) for value in mass.values())
            assert int(ranks[user, level]) == expected_rank


def test_cli_reports_every_level_on_the_validation_users(tiny_data):
    results = run_unger.main(["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", *CLI_SMALL])
    payload = main(["--run", results["run_dir"], "--ks", "1", "5", "64", "--device", "cpu"])
    assert payload["split"] == "valid" and payload["users"] == 40
    assert len(payload["levels"]) >= 1
    for row in payload["levels"]:
        assert 1 <= row["mean_choices"] <= 64 and row["hit@64"] == 1.0  # every allowed symbol ranked
        assert row["hit@1"] <= row["hit@5"] <= row["hit@64"]
    assert payload["greedy_hit"] <= payload["levels"][0]["hit@1"]
    assert json.loads((Path(results["run_dir"]) / RESULT_FILE).read_text())["users"] == 40
