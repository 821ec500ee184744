"""The benchmark scripts' quick modes: they run in seconds on tiny sizes, write JSON with the
expected keys, and the beam-search exactness check passes."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import beam_search, quantizers, unified_vs_two_codes
from benchmarks.unified_vs_two_codes import merge_by_confidence

REPO = Path(__file__).resolve().parent.parent
MACHINE_KEYS = {"date", "cpu_model", "cpu_count", "torch", "device", "device_name", "torch_threads"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def read(path):
    payload = json.loads(Path(path).read_text())
    assert MACHINE_KEYS <= set(payload["machine"])
    return payload


def test_beam_search_quick_with_check_hf_baseline_and_profile(tmp_path):
    out = tmp_path / "beam.json"
    code = beam_search.main(["--quick", "--users", "32", "--hf-users", "8", "--profile-users", "32", "--check",
                             "--hf-baseline", "--profile", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    payload = read(out)
    assert payload["benchmark"] == "beam_search"
    unger = payload["unger"]
    assert {"users", "beam", "topk", "total_seconds", "users_per_s", "ms_per_user",
            "extrapolated_all_users_seconds"} <= set(unger)
    assert unger["users"] == 32 and unger["beam"] == 10 and unger["topk"] == 5 and unger["users_per_s"] > 0
    assert unger["last_batch_full_lists"] == 1.0
    assert payload["model"]["hidden_size"] == 128 and payload["model"]["n_decoder_layers"] == 4
    check = payload["check"]
    assert check["passed"] is True and check["topk_scores_equal_exhaustive"] and check["all_items_valid_and_distinct"]
    assert check["code_levels"] >= 3 and check["max_abs_score_diff"] < 1e-4
    hf = payload["hf_baseline"]
    assert hf["users"] == 8 and hf["users_per_s"] > 0 and hf["unger_speedup"] > 0
    assert hf["last_batch_valid_item_fraction"] == 1.0  # the dict trie keeps HF on real items too
    parts = payload["profile"]["parts_ms_per_user"]
    assert {"encoder_ms", "cross_attention_kv_ms", "decoder_step_level0_ms", "search_ops_ms", "total_ms",
            "aten_ops_per_call"} <= set(parts)
    assert payload["profile"]["top_ops"]
    assert set(payload["verdict"]) >= {"all_users_seconds", "all_users_target_met", "check_passed"}


def test_unified_vs_two_codes_quick(tmp_path):
    out = tmp_path / "fig2.json"
    code = unified_vs_two_codes.main(["--quick", "--users", "16", "--cache-dir", str(tmp_path / "cache"),
                                      "--out", str(out)])
    assert code == 0
    payload = read(out)
    results = payload["results"]
    assert set(results) == {"unified", "two_codes_shared_encoder", "two_codes_two_models"}
    for row in results.values():
        assert row["users"] == 16 and row["ms_per_user"] > 0 and row["first_batch_full_lists"] == 1.0
    assert results["unified"]["ratio_to_unified"] == 1.0
    assert payload["ratio_two_codes_shared_encoder"] > 0 and payload["ratio_two_codes_two_models"] > 0
    assert set(payload["code_tables"]) == {"unified", "semantic", "collaborative"}


def test_quantizers_quick(tmp_path):
    out = tmp_path / "quant.json"
    code = quantizers.main(["--quick", "--sizes", "300,600", "--out", str(out)])
    assert code == 0
    payload = read(out)
    rows = payload["rows"]
    assert [(r["method"], r["n_items"]) for r in rows] == [("hkmeans", 300), ("hkmeans", 600), ("rqvae", 300),
                                                          ("rqvae", 600)]
    for row in rows:
        assert {"seconds", "items_per_s", "peak_rss_delta_mb", "peak_rss_mb", "code_max_len"} <= set(row)
        assert row["seconds"] > 0 and row["peak_rss_delta_mb"] >= 0
    assert [r["epochs"] for r in rows] == [None, None, 1, 1]


def test_merge_by_confidence_keeps_best_score_of_duplicates():
    items_a = torch.tensor([[5, 3, 9]])
    scores_a = torch.tensor([[-0.1, -0.5, -2.0]])
    items_b = torch.tensor([[3, 7, -1]])
    scores_b = torch.tensor([[-0.2, -0.3, float("-inf")]])
    items, scores = merge_by_confidence(items_a, scores_a, items_b, scores_b, 4)
    assert items.tolist() == [[5, 3, 7, 9]]
    assert torch.allclose(scores, torch.tensor([[-0.1, -0.2, -0.3, -2.0]]))
    items, scores = merge_by_confidence(items_a[:, :1], scores_a[:, :1], items_a[:, :1], scores_a[:, :1], 2)
    assert items.tolist() == [[5, -1]] and scores[0, 1] == float("-inf")  # fewer distinct items than k


def test_run_all_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "run_all.sh")]).returncode == 0
    help_text = subprocess.run(["bash", str(REPO / "benchmarks" / "run_all.sh"), "--help"], capture_output=True,
                               text=True).stdout
    assert "--quick" in help_text
