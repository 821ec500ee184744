"""baselines/: every yaml builds a RecBole Config; every classical baseline trains one tiny epoch
through run_unger.py (S3-Rec with its pre-training stage); run_table.py finds, runs and reuses."""

import contextlib
import csv
import io
import sys
from pathlib import Path

import pytest
import torch
import yaml

import run_unger
from tests.conftest import REPO
from unger_recbole.compat import build_config
from unger_recbole.quick_start import property_files, resolve_model

BASELINES = REPO / "baselines"
sys.path.insert(0, str(BASELINES))
import run_table  # noqa: E402
import s3rec_pretrain  # noqa: E402

CLASSICAL = ["GRU4Rec", "Caser", "SASRec", "BERT4Rec", "HGN", "FDSA", "S3Rec"]
SMALL = ["--hidden_size=16", "--embedding_size=16", "--inner_size=32", "--n_layers=1", "--n_heads=1",
         "--epochs=1", "--train_batch_size=64", "--eval_batch_size=64", "--show_progress=False", "--state=WARNING"]
YAMLS = sorted(p.name for p in BASELINES.glob("*.yaml"))
DATASET_ITEM_FILES = {"amazon-beauty": REPO / "dataset" / "amazon-beauty" / "amazon-beauty.item",
                      "amazon-sports-outdoors": REPO / "dataset" / "amazon-sports-outdoors" / "amazon-sports-outdoors.item"}


def model_and_dataset(filename):
    """'FDSA.ml-100k.yaml' -> ('FDSA', 'FDSA', 'ml-100k'); 'UNGER-CKA.yaml' -> ('UNGER-CKA', 'UNGER', default)."""
    name, _, dataset = filename[: -len(".yaml")].partition(".")
    try:
        resolve_model(name)
        model = name
    except ValueError:
        model = "UNGER"
    return name, model, dataset or "amazon-beauty"


def test_all_configs_present():
    expected = {f"{m}.yaml" for m in CLASSICAL + run_table.VARIANTS + ["UNGER"]}
    assert expected <= set(YAMLS)


@pytest.mark.parametrize("filename", YAMLS)
def test_every_yaml_builds_a_recbole_config(filename):
    name, model, dataset = model_and_dataset(filename)
    files = [BASELINES / f"{name}.yaml"] + ([BASELINES / filename] if filename != f"{name}.yaml" else [])
    model_class = resolve_model(model)
    config = build_config(model_class, dataset, property_files(model, dataset, model_class) + [str(f) for f in files])
    assert config["run_label"] == name
    expected = {}
    for path in files:  # every key of the yaml files (later files win) arrives in the resolved config
        expected.update(yaml.safe_load(path.read_text()) or {})
    for key, value in expected.items():
        assert config[key] == value, key
    if model != "UNGER":
        assert config["loss_type"] == "CE" and config["train_neg_sample_args"]["distribution"] == "none"  # CE: no negatives
    item_file = DATASET_ITEM_FILES.get(dataset)
    if "item" in config["load_col"] and item_file and item_file.is_file():
        header = [field.split(":")[0] for field in item_file.read_text().split("\n", 1)[0].split("\t")]
        assert set(config["load_col"]["item"]) <= set(header)


def test_variant_settings():
    def settings(name):
        return yaml.safe_load((BASELINES / f"{name}.yaml").read_text())
    assert settings("UNGER-CKA")["ikd"] is False
    assert settings("Concat") == {"run_label": "Concat", "code_embedding": "concat", "ikd": False}
    assert settings("Semantic-only")["code_embedding"] == "semantic"
    assert settings("Collaborative-only")["code_embedding"] == "collaborative"
    assert settings("UNGER-rqvae")["quantizer"] == "rqvae" and settings("UNGER-random")["quantizer"] == "random"
    assert settings("UNGER-K128")["quantizer_codebook_size"] == 128
    assert settings("UNGER-K512")["quantizer_codebook_size"] == 512


@pytest.fixture
def tiny_features(tiny_data):
    """The tiny dataset with Amazon-like item features: categories:token_seq and brand:token."""
    item_file = tiny_data / "tiny" / "tiny.item"
    rows = list(csv.reader(item_file.open(), delimiter="\t"))
    with item_file.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(rows[0] + ["categories:token_seq", "brand:token"])
        for index, row in enumerate(rows[1:]):
            writer.writerow(row + [f"Beauty c{index % 4} d{index % 3}", f"b{index % 5}"])
    return tiny_data


def common(data):
    return ["--dataset=tiny", f"--data_path={data}", *SMALL]


@pytest.mark.parametrize("model", [m for m in CLASSICAL if m != "S3Rec"])
def test_classical_baseline_trains_one_epoch(tiny_features, model):
    results = run_unger.main([f"--model={model}", f"--config_files={BASELINES / f'{model}.yaml'}",
                              *common(tiny_features)])
    assert results["epochs_trained"] == 1 and results["config"]["run_label"] == model
    assert all(0.0 <= v <= 1.0 for v in results["test_result"].values())


def test_s3rec_pretrains_then_finetunes(tiny_features):
    files = f"--config_files={BASELINES / 'S3Rec.yaml'}"
    manifest = s3rec_pretrain.main([files, "--pretrain_epochs=1", *common(tiny_features)])
    assert manifest["epochs_trained"] == 1 and manifest["config"]["train_stage"] == "pretrain"
    state = torch.load(manifest["checkpoint"], weights_only=True)  # what RecBole's S3Rec does in finetune
    assert "item_embedding.weight" in state["state_dict"]
    results = run_unger.main(["--model=S3Rec", files, f"--pre_model_path={manifest['checkpoint']}",
                              f"--pretrain_seconds={manifest['wall_seconds']}", *common(tiny_features)])
    assert results["config"]["train_stage"] == "finetune" and results["epochs_trained"] == 1
    assert results["config"]["pretrain_seconds"] == manifest["wall_seconds"]  # extra keys survive


def in_process_runner(calls):
    """run_table's runner without subprocesses: call the scripts' main() and capture their output."""
    def runner(cmd):
        calls.append(cmd)
        main = run_unger.main if cmd[1].endswith("run_unger.py") else s3rec_pretrain.main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(cmd[2:])
                code = 0
            except SystemExit as error:
                code = 1 if error.code else 0
        return code, out.getvalue()
    return runner


def test_run_table_runs_missing_reuses_existing_and_writes_tables(tiny_features, capsys):
    argv = ["--dataset", "tiny", "--models", "SASRec", "S3Rec", "HGN", "--max-epochs", "1",
            "--set", f"data_path={tiny_features}", "--set", "hidden_size=16", "--set", "n_layers=1",
            "--set", "state=WARNING", "--out-dir", "tables"]
    calls = []
    chosen = run_table.main(argv, runner=in_process_runner(calls))
    scripts = [Path(c[1]).name for c in calls]
    assert scripts == ["run_unger.py", "s3rec_pretrain.py", "run_unger.py", "run_unger.py"]
    assert all(chosen[m]["config"]["run_label"] == m for m in ("SASRec", "S3Rec", "HGN"))
    assert chosen["S3Rec"]["config"]["pre_model_path"].endswith("pretrain.pth")
    md = Path("tables/tiny.md").read_text()
    assert "| Metric | SASRec† | S3Rec† | HGN† |" in md and "SASRec: 1 epoch trained (epochs=1 < 300)" in md
    assert Path("tables/tiny.csv").is_file()

    calls.clear()  # everything is there now: nothing runs, the same results are used
    again = run_table.main(argv, runner=in_process_runner(calls))
    assert calls == [] and {m: r["run_id"] for m, r in again.items()} == {m: r["run_id"] for m, r in chosen.items()}

    capsys.readouterr()  # two epochs were never run: the dry run prints the commands, S3Rec reuses nothing
    run_table.main([*argv[:-2], "--max-epochs", "2", "--dry-run"], runner=in_process_runner(calls))
    printed = capsys.readouterr().out
    assert calls == [] and printed.count("--epochs=2") == 4 and "s3rec_pretrain.py" in printed
    assert "--run_label=HGN" in printed and "--pretrain_epochs=2" in printed


def test_run_table_writes_table4_and_fig5_from_the_unger_and_collaborative_only_runs(tiny_data):
    from tests.test_unger_pipeline import CLI_SMALL
    small = [f"{arg[2:]}" for arg in CLI_SMALL if not arg.startswith(("--stage1_epochs", "--epochs"))]
    argv = ["--dataset", "tiny", "--models", "UNGER", "Collaborative-only", "--max-epochs", "1",
            "--set", f"data_path={tiny_data}", *[item for pair in small for item in ("--set", pair)],
            "--out-dir", "tables"]
    chosen = run_table.main(argv, runner=in_process_runner([]))
    report = Path("tables/tiny-modality.md").read_text()
    assert "Concat" in report and "Ours" in report and "Semantic modality" in report
    assert f"{chosen['Collaborative-only']['run_dir']}/code_table.npz:integrated" in report  # the same table's run
    assert Path("tables/tiny-fig5-tsne.png").read_bytes()[:4] == b"\x89PNG"


def test_run_table_names_and_groups():
    assert run_table.expand_models(["table6", "UNGER"]) == ["Concat", "UNGER-CKA", "UNGER"]
    request = run_table.resolve_request("UNGER-L8", "amazon-beauty", {})
    assert request.model == "UNGER" and request.overrides["n_decoder_layers"] == "8"
    assert run_table.resolve_request("FDSA", "ml-100k", {}).files[-1].name == "FDSA.ml-100k.yaml"
    with pytest.raises(SystemExit, match="neither a model nor an UNGER variant"):
        run_table.resolve_request("NoSuchThing", "amazon-beauty", {})


def test_set_scoped_to_a_model_reaches_only_that_models_runs():
    settings = run_table.parse_settings(["state=WARNING", "UNGER:stage1_backbone=sasrec"])
    assert settings == {None: {"state": "WARNING"}, "UNGER": {"stage1_backbone": "sasrec"}}
    concat = run_table.resolve_request("Concat", "amazon-beauty", settings)
    sasrec = run_table.resolve_request("SASRec", "amazon-beauty", settings)
    assert concat.overrides["stage1_backbone"] == "sasrec" and concat.overrides["state"] == "WARNING"
    assert "stage1_backbone" not in sasrec.overrides and sasrec.overrides["state"] == "WARNING"
    with pytest.raises(SystemExit, match="Model:key=value"):
        run_table.parse_settings([":stage1_backbone=sasrec"])


def test_epoch_cap_from_time_budget():
    probe = {"wall_seconds": 30.0, "stage_seconds": {"data": 5.0, "stage1": 4.0, "train": 6.0}, "config": {}}
    # fixed 20 s, one epoch of both stages 10 s: (200 - 30 - 20) / 10 = 15
    assert run_table.epochs_within_budget(probe, 200, 300) == 15
    assert run_table.epochs_within_budget(probe, 40, 300) == 1
    assert run_table.epochs_within_budget(probe, 10 ** 6, 300) == 300
    s3rec = {"wall_seconds": 10.0, "stage_seconds": {"train": 2.0}, "config": {"pretrain_seconds": 20.0}}
    pretraining = {"wall_seconds": 20.0, "stage_seconds": {"pretrain": 8.0}}
    # probe 30 s; fixed 8 + 12 = 20 s; one epoch 2 + 8 = 10 s: (150 - 30 - 20) / 10 = 10
    assert run_table.epochs_within_budget(s3rec, 150, 300, pretraining) == 10
