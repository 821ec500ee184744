"""Shared fixtures: a tiny deterministic RecBole dataset and a clean working directory per test.

RecBole writes ./log, ./log_tensorboard and ./saved into the working directory, so every test
that runs a pipeline runs inside its own tmp_path.
"""

import csv
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Small catalogue with readable titles so the real text encoder has something to work with.
TINY_TITLES = [
    "Maybelline Great Lash Mascara", "L'Oreal Voluminous Mascara", "Revlon Lipstick Red", "MAC Matte Lipstick",
    "Conair Ionic Hair Dryer", "Revlon Hair Dryer Brush", "Neutrogena Face Wash", "Cetaphil Gentle Cleanser",
    "OPI Nail Polish Pink", "Essie Nail Polish Red", "Nivea Body Lotion", "Aveeno Daily Lotion",
    "Dove Shampoo", "Pantene Conditioner", "Olay Night Cream", "Clinique Moisturizer",
    "Eyeliner Pencil Black", "Liquid Eyeliner", "Tweezers Slanted", "Makeup Brush Set",
]


def write_tiny_dataset(root, name="tiny", n_users=40, seq_len=8):
    """Users walk the catalogue in fixed strides, so the next item is predictable from history."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    n_items = len(TINY_TITLES)
    with open(folder / f"{name}.inter", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["user_id:token", "item_id:token", "timestamp:float"])
        for user in range(n_users):
            stride = 1 + user % 3
            for position in range(seq_len):
                item = (user + stride * position) % n_items
                writer.writerow([f"u{user}", f"i{item}", 1000 * user + position])
    with open(folder / f"{name}.item", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["item_id:token", "title:token"])
        for item, title in enumerate(TINY_TITLES):
            writer.writerow([f"i{item}", title])
    return folder


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """A tiny dataset under tmp_path/dataset and tmp_path as the working directory."""
    torch.set_num_threads(1)  # 2 threads spin-wait badly when the 2 cores are shared
    monkeypatch.chdir(tmp_path)
    write_tiny_dataset(tmp_path / "dataset")
    return tmp_path / "dataset"


TINY_OVERRIDES = {"epochs": 1, "show_progress": False, "train_batch_size": 64, "eval_batch_size": 64,
                  "state": "WARNING"}
