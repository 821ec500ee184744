"""Data-parallel runs on CPU with the gloo backend: 2 processes give the single-process result and
evaluate every test user exactly once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

import run_unger
from tests.conftest import REPO, write_tiny_dataset
from tests.test_unger_pipeline import CLI_SMALL
from unger_recbole.distributed import free_port, launch_plan, merge_shards

N_USERS = 41  # odd: DistributedSampler pads one of 2 shards with a repeated user


@pytest.mark.parametrize("n_items,world_size", [(41, 2), (40, 2), (10, 3), (7, 4), (2, 3)])
def test_merge_shards_undoes_distributed_sampler_padding_and_order(n_items, world_size):
    shards = [list(DistributedSampler(list(range(n_items)), num_replicas=world_size, rank=rank, shuffle=False))
              for rank in range(world_size)]
    assert sum(map(len, shards)) > n_items or n_items % world_size == 0  # the sampler pads uneven splits
    assert merge_shards(shards, key=lambda item: item) == list(range(n_items))


def test_launch_plan_reads_nproc_and_torchrun_and_rejects_contradictions():
    assert launch_plan(1, -1, environ={}) == "single"
    assert launch_plan(2, -1, environ={}) == "spawn"
    torchrun = {"RANK": "0", "WORLD_SIZE": "2"}
    assert launch_plan(1, -1, environ=torchrun) == "torchrun"
    with pytest.raises(ValueError, match="torchrun"):
        launch_plan(4, -1, environ=torchrun)
    with pytest.raises(ValueError, match="smaller than nproc"):
        launch_plan(4, 2, environ={})


@pytest.fixture
def odd_tiny_data(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    return write_tiny_dataset(tmp_path / "dataset", n_users=N_USERS).parent


def predictions(results):
    return [json.loads(line) for line in Path(results["predictions_file"]).read_text().splitlines()]


def assert_same_metrics_within_noise(single, parallel):
    # Same batches (no shuffling, no dropout): gradients averaged over 2 half batches equal the
    # full-batch gradient up to float summation order, so only near-ties may rank differently.
    for split in ("best_valid_result", "test_result"):
        for metric, value in single[split].items():
            assert abs(parallel[split][metric] - value) <= 2 / N_USERS, (split, metric)


def test_unger_on_two_gloo_processes_matches_one_process(odd_tiny_data):
    args = ["--model=UNGER", "--dataset=tiny", f"--data_path={odd_tiny_data}", "--save_predictions",
            "--shuffle=False", *CLI_SMALL]
    single = run_unger.main(args + ["--artifact_dir=artifacts-single"])
    parallel = run_unger.main(args + ["--nproc=2", "--artifact_dir=artifacts-parallel"])  # stage I trained again

    assert (single["world_size"], parallel["world_size"]) == (1, 2)
    assert single["test_users"] == parallel["test_users"] == N_USERS  # not 42: the padded repeat is dropped
    assert Path(parallel["run_dir"], "code_table.npz").is_file() and Path(parallel["checkpoint"]).is_file()
    assert parallel["generation"]["invalid_rate"] == 0.0
    assert_same_metrics_within_noise(single, parallel)
    users = [p["user"] for p in predictions(parallel)]
    assert users == [p["user"] for p in predictions(single)]  # every user once, in evaluation order
    assert len(set(users)) == N_USERS


def test_recbole_baseline_under_torchrun_matches_one_process(odd_tiny_data, tmp_path):
    args = ["--model=SASRec", "--dataset=tiny", f"--data_path={odd_tiny_data}", "--shuffle=False",
            "--hidden_dropout_prob=0.0", "--attn_dropout_prob=0.0", "--hidden_size=16", "--inner_size=32",
            "--n_layers=1", "--epochs=2", "--train_batch_size=64", "--show_progress=False", "--state=WARNING"]
    single = run_unger.main(args)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         str(REPO / "run_unger.py"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results_files = [line.split("results: ", 1)[1] for line in completed.stdout.splitlines()
                     if line.startswith("results: ")]
    assert len(results_files) == 1  # rank 0 reports, rank 1 stays quiet
    parallel = json.loads((tmp_path / results_files[0]).read_text())
    assert parallel["world_size"] == 2 and parallel["test_users"] == single["test_users"] == N_USERS
    assert_same_metrics_within_noise(single, parallel)
