"""Each RecBole compatibility fix in unger_recbole/compat.py, with a test that fails without it."""

import logging
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch


from unger_recbole.compat import (CheckpointTrainer, build_config, check_pandas_version, close_run_logger,
                                  init_run_logger)
from tests.conftest import REPO, TINY_OVERRIDES


def tiny_config(data_path, **overrides):
    return build_config("SASRec", "tiny", config_dict={
        "data_path": str(data_path), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "loss_type": "CE", "train_neg_sample_args": None, "eval_args": {"split": {"LS": "valid_and_test"},
                                                                       "order": "TO", "mode": "full"},
        "hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 5,
        "checkpoint_dir": "saved", **TINY_OVERRIDES, **overrides})


def test_numpy2_aliases_let_recbole_config_build(tiny_data):
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    config = tiny_config(tiny_data)  # Config.compatibility_settings reads np.float_ & co.
    assert config["model"] == "SASRec"


def test_recbole_metrics_work_without_building_a_config():
    """A process that only unpickles a checkpoint's Config never runs compatibility_settings."""
    code = ("import unger_recbole.compat, numpy as np; from recbole.evaluator.metrics import NDCG; "
            "print(NDCG.metric_info(None, np.array([[True, False]]), np.array([1])).tolist())")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[[1.0, 1.0]]"


def test_pandas3_is_refused_with_an_actionable_message():
    with pytest.raises(ImportError, match=r"pip install 'pandas>=2.2,<3'"):
        check_pandas_version("3.0.1")
    check_pandas_version("2.3.3")


def test_item_file_with_empty_fields_loads_with_missing_floats_filled(tiny_data):
    from recbole.data import create_dataset
    (tiny_data / "tiny" / "tiny.item").write_text(
        "item_id:token\ttitle:token\tcategories:token_seq\tprice:float\n"
        "i0\tMascara\tBeauty Makeup\t5.5\n"
        "i1\t\t\t\n"
        + "".join(f"i{i}\tItem {i}\tBeauty\t{i}.0\n" for i in range(2, 20)))
    config = tiny_config(tiny_data, load_col={"inter": ["user_id", "item_id", "timestamp"],
                                              "item": ["item_id", "title", "categories", "price"]})
    dataset = create_dataset(config)
    internal = dataset.token2id("item_id", "i1")
    price = dataset.item_feat["price"][internal].item()
    assert not np.isnan(price)  # RecBole fills missing floats; pandas 3 left NaN here
    assert dataset.item_feat["categories"][internal].sum().item() == 0  # empty token_seq -> all padding


def test_command_line_arguments_never_leak_into_config(tiny_data, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=77", "-q"])
    config = tiny_config(tiny_data)
    assert config["epochs"] == 1
    assert sys.argv == ["pytest", "--epochs=77", "-q"]  # restored


def test_run_logger_attaches_handlers_and_keeps_stdout(tiny_data, tmp_path):
    stdout_before = sys.stdout
    config = tiny_config(tiny_data)
    handlers = init_run_logger(config)  # pytest already has handlers on the root logger
    try:
        assert sys.stdout is stdout_before
        assert any(isinstance(h, logging.FileHandler) for h in handlers)
        assert all(h in logging.getLogger().handlers for h in handlers)
    finally:
        close_run_logger(handlers)
    assert not any(h in logging.getLogger().handlers for h in handlers)


def test_checkpoint_trainer_reloads_checkpoints_that_pickle_the_config(tiny_data):
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    config = tiny_config(tiny_data)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = SASRec(config, train._dataset)
    trainer = CheckpointTrainer(config, model, checkpoint_file=tiny_data / "ckpt.pth")
    trainer.fit(train, valid, saved=True, show_progress=False)
    assert trainer.saved_model_file == str(tiny_data / "ckpt.pth")
    with pytest.raises(pickle.UnpicklingError):  # what RecBole's own Trainer does on torch >= 2.6
        Trainer(config, model).evaluate(test, load_best_model=True, model_file=trainer.saved_model_file)
    result = trainer.evaluate(test, load_best_model=True)
    assert 0.0 <= result["recall@10"] <= 1.0


@pytest.mark.parametrize("mode", ["full", "uni10"])
def test_every_evaluated_user_is_counted_once_in_full_and_sampled_ranking(tiny_data, mode):
    """The collector's user of each ranking row (what distributed evaluation merges on)."""
    from unger_recbole.quick_start import run
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": mode}
    results = run("SASRec", "tiny", config_dict={
        "data_path": str(tiny_data), "eval_args": eval_args, "hidden_size": 16, "inner_size": 16, "n_layers": 1,
        "n_heads": 1, **TINY_OVERRIDES})
    assert results["test_users"] == 40


def test_enable_amp_trains_under_the_configured_autocast_dtype(tiny_data):
    """RecBole autocasts to the device's default dtype; amp_dtype decides instead."""
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    config = tiny_config(tiny_data, enable_amp=True, amp_dtype="float16")
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = SASRec(config, train._dataset)
    seen = []
    original = model.calculate_loss
    model.calculate_loss = lambda interaction: seen.append(torch.get_autocast_dtype("cpu")) or original(interaction)
    default = torch.get_autocast_dtype("cpu")
    try:
        CheckpointTrainer(config, model, checkpoint_file=tiny_data / "ckpt.pth")._train_epoch(train, 0)
    finally:
        torch.set_autocast_dtype("cpu", default)
    assert seen and set(seen) == {torch.float16} and default == torch.bfloat16
