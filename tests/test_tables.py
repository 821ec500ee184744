"""unger_recbole.analysis.tables: paper-layout tables and figures from fixture results JSON files."""

import csv
import io
import json
from pathlib import Path

import pytest

from unger_recbole.analysis import tables

FULL = {"epochs": 300, "stopping_step": 10, "stage1_epochs": 100, "stage1_stopping_step": 5, "stage1_backbone": "din",
        "pretrain_epochs": 150}
UNGER_CONFIG = {"code_embedding": "integrated", "ikd": True, "quantizer": "hkmeans", "n_decoder_layers": 4,
                "encoder": "minilm", "stage1_epochs": 100, "stage1_stopping_step": 5}


def make_result(model, metrics, label=None, dataset="amazon-beauty", epochs=300, trained=40, wall=120.0,
                date="2025-01-01T00:00:00", **config):
    r10, r20, n10, n20 = metrics
    base = dict(UNGER_CONFIG) if model == "UNGER" else {}
    base.update({"epochs": epochs, "stopping_step": 10, **config})
    if label is not None:
        base["run_label"] = label
    return {"model": model, "dataset": dataset, "run_id": f"{label or model}-{dataset}-{date}",
            "best_valid_result": {}, "test_result": {"recall@10": r10, "recall@20": r20, "ndcg@10": n10,
                                                     "ndcg@20": n20},
            "epochs_trained": trained, "stage_seconds": {"train": wall / 2}, "wall_seconds": wall,
            "device": "cpu", "date": date, "config": base}


def write_results(folder, results):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, result in enumerate(results):
        (folder / f"{index:02d}-{result['run_id']}.json").write_text(json.dumps(result))
    return folder


@pytest.fixture
def beauty(tmp_path):
    """SASRec best on R@10, UNGER best elsewhere; GRU4Rec a reduced run; HGN missing."""
    results = [
        make_result("GRU4Rec", (0.0200, 0.0400, 0.0100, 0.0150), "GRU4Rec", epochs=2, trained=2, wall=30.0),
        make_result("SASRec", (0.0700, 0.0900, 0.0300, 0.0390), "SASRec", wall=600.0),
        make_result("S3Rec", (0.0650, 0.0950, 0.0320, 0.0400), "S3Rec", wall=100.0,
                    train_stage="finetune", pretrain_epochs=150, pretrain_seconds=3500.0),
        make_result("UNGER", (0.0600, 0.1200, 0.0500, 0.0600), "UNGER", wall=5400.0),
    ]
    return tmp_path, write_results(tmp_path / "results", results)


def report(tmp_path, results_dir, columns=("GRU4Rec", "SASRec", "HGN", "S3Rec", "UNGER"), dataset="amazon-beauty",
           notes=None):
    results = tables.load_results(results_dir)
    chosen = {c: tables.latest_by_label(results).get(c) for c in columns}
    paths = tables.write_dataset_report(dataset, list(columns), chosen, results, tmp_path / "out", notes, FULL)
    return (tmp_path / "out" / f"{dataset}.md").read_text(), paths


def row(markdown, name):
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_layout_rows_metrics_columns_models(beauty):
    tmp_path, results_dir = beauty
    md, paths = report(tmp_path, results_dir)
    header = row(md, "Metric")
    assert header == ["Metric", "GRU4Rec†", "SASRec", "HGN", "S3Rec", "UNGER"]
    table_rows = [line.split("|")[1].strip() for line in md.split("## Paper")[0].splitlines()
                  if line.startswith("| ") and not line.startswith("| ---")]
    assert table_rows == ["Metric", "R@10", "R@20", "N@10", "N@20", "Time", "Epochs"]
    assert {p.name for p in paths} >= {"amazon-beauty.md", "amazon-beauty.csv"}


def test_best_bold_second_underlined(beauty):
    md, _ = report(*beauty)
    assert row(md, "R@10") == ["R@10", "0.0200", "**0.0700**", "–", "<u>0.0650</u>", "0.0600"]
    assert row(md, "R@20") == ["R@20", "0.0400", "0.0900", "–", "<u>0.0950</u>", "**0.1200**"]
    assert row(md, "N@20") == ["N@20", "0.0150", "0.0390", "–", "<u>0.0400</u>", "**0.0600**"]


def test_missing_cells_and_footnote(beauty):
    md, _ = report(*beauty, notes={"HGN": "run failed with exit status 1"})
    assert all(row(md, name)[3] == "–" for name in ("R@10", "R@20", "N@10", "N@20", "Time", "Epochs"))
    assert "– no result: HGN (run failed with exit status 1)." in md


def test_reduced_runs_marked_with_epochs(beauty):
    md, _ = report(*beauty)
    assert row(md, "Epochs")[1:3] == ["2†", "40"]
    assert "† reduced run, not the full schedule: GRU4Rec: 2 epochs trained (epochs=2 < 300)." in md
    assert "SASRec:" not in md.split("† reduced run")[1].split("\n")[0]


def test_time_row_includes_s3rec_pretraining(beauty):
    md, _ = report(*beauty)
    assert row(md, "Time")[1:] == ["30 s", "10.0 min", "–", "60.0 min", "1.5 h"]
    assert "Time of S3-Rec includes its pre-training run." in md


def test_paper_table3_beside_ours(beauty):
    md, _ = report(*beauty)
    paper = md.split("## Paper, Table 3 (Beauty)")[1]
    assert row(paper, "R@10")[-2:] == ["<u>0.0836</u>", "**0.0939**"]
    assert "0.0617*" in row(paper, "R@10")  # TIGER, reimplemented by the UNGER authors
    assert row(paper, "Metric")[1:] == list(tables.PAPER_TABLE3_COLUMNS)


@pytest.mark.parametrize("dataset,name,value", [("amazon-sports-outdoors", "Sports", "**0.0710**"),
                                                ("amazon-toys-games", "Toys", "**0.0505**")])
def test_paper_table3_other_datasets(dataset, name, value):
    text = tables.paper_table3_markdown(dataset)
    assert value in text
    columns, rows = tables.paper_table3(dataset)
    assert len(columns) == 12 and all(len(v) == 12 for v in rows.values())


def test_dataset_without_paper_numbers_says_so(beauty):
    tmp_path, results_dir = beauty
    md, _ = report(tmp_path, results_dir, dataset="ml-100k")
    assert "The paper reports no numbers for this dataset" in md
    assert all(cell == "–" for cell in row(md, "R@10")[1:])


def test_runs_section_names_the_run_device_and_time_of_every_column(beauty):
    markdown, _ = report(*beauty)
    runs = markdown.split("## Runs", 1)[1]
    assert "python run_unger.py --model=<model> --dataset=amazon-beauty" in runs
    assert row(runs, "SASRec") == ["SASRec", "SASRec", "`SASRec-amazon-beauty-2025-01-01T00:00:00`", "cpu",
                                   "2025-01-01T00:00", "10.0 min"]
    assert row(runs, "S3Rec")[-1] == "60.0 min"  # fine-tuning plus its pre-training
    assert not any(line.startswith("| HGN |") for line in runs.splitlines())  # missing: no run to list


def test_csv_has_values_time_epochs_and_reduced(beauty):
    tmp_path, results_dir = beauty
    report(tmp_path, results_dir)
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "amazon-beauty.csv").read_text())))
    assert rows[0] == ["metric", "GRU4Rec", "SASRec", "HGN", "S3Rec", "UNGER"]
    by_name = {r[0]: r[1:] for r in rows[1:]}
    assert by_name["R@10"] == ["0.02", "0.07", "", "0.065", "0.06"]
    assert by_name["time_seconds"] == ["30.0", "600.0", "", "3600.0", "5400.0"]
    assert by_name["reduced"][0].startswith("2 epochs trained") and by_name["reduced"][1] == ""


def unger_runs():
    metrics = (0.05, 0.08, 0.03, 0.04)
    return [
        make_result("UNGER", (0.09, 0.12, 0.05, 0.06), "UNGER"),
        make_result("UNGER", metrics, "UNGER-rqvae", quantizer="rqvae", quantizer_codebook_size=256),
        make_result("UNGER", metrics, "UNGER-random", quantizer="random"),
        make_result("UNGER", metrics, "UNGER-K128", quantizer_codebook_size=128),
        make_result("UNGER", metrics, "UNGER-K512", quantizer_codebook_size=512),
        make_result("UNGER", metrics, "UNGER-CKA", ikd=False),
        make_result("UNGER", metrics, "Concat", code_embedding="concat", ikd=False),
        # a different schedule: must not enter the figures
        make_result("UNGER", metrics, "UNGER-L8", n_decoder_layers=8, epochs=3, trained=3),
    ]


def test_variant_tables_and_figures(tmp_path):
    results_dir = write_results(tmp_path / "results", unger_runs())
    md, paths = report(tmp_path, results_dir, columns=("UNGER",))
    assert "## Table 5 layout" in md and "## Table 6 layout" in md and "## Paper, Table 6 (Beauty)" in md
    table6 = md.split("## Table 6 layout: this repository")[1].split("## Paper")[0]
    assert row(table6, "Metric")[1:] == ["\\ (neither; = Concat)", "CKA", "CKA + IKD (Ours)"]
    assert row(table6, "R@10")[1:] == ["<u>0.0500</u>", "<u>0.0500</u>", "**0.0900**"]
    assert "Semantic Only" in row(md.split("## Table 5 layout")[1], "Metric")[1]
    assert "| Quantizer | hkmeans |" in md  # all-variants table with settings rows
    names = {p.name for p in paths}
    assert {"amazon-beauty.fig8_quantizers.png", "amazon-beauty.fig9_codebook_size.png"} <= names
    assert not any("fig6" in n or "fig7" in n for n in names)
    for path in paths:
        if path.suffix == ".png":
            data = path.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "![Quantization methods (cf. paper Fig. 8)](amazon-beauty.fig8_quantizers.png)" in md


def test_figure_points_compare_one_setting_at_a_time():
    results = unger_runs() + [make_result("UNGER", (0.1, 0.1, 0.1, 0.1), "UNGER-L2", n_decoder_layers=2),
                              make_result("UNGER", (0.1, 0.1, 0.1, 0.1), "UNGER-llama",
                                          encoder="hf", encoder_path="/models/Llama-2-7b-hf/")]
    assert [v for v, _ in tables.figure_points(results, "quantizer")] == ["random", "rqvae", "hkmeans"]
    assert [v for v, _ in tables.figure_points(results, "codebook_size")] == [128, 256, 512]
    assert [v for v, _ in tables.figure_points(results, "n_decoder_layers")] == [2, 4]  # L8 has another schedule
    assert [v for v, _ in tables.figure_points(results, "encoder")] == ["Llama-2-7b-hf", "all-MiniLM-L6-v2"]


def test_labels_inferred_when_run_label_is_absent():
    assert tables.result_label(make_result("SASRec", (0, 0, 0, 0))) == "SASRec"
    assert tables.result_label(make_result("UNGER", (0, 0, 0, 0))) == "UNGER"
    assert tables.result_label(make_result("UNGER", (0, 0, 0, 0), ikd=False)) == "UNGER-CKA"
    assert tables.result_label(make_result("UNGER", (0, 0, 0, 0), quantizer="rqvae")) == "UNGER-rqvae"
    assert tables.result_label(make_result("UNGER", (0, 0, 0, 0), quantizer_codebook_size=512)) == "UNGER-K512"
    assert tables.result_label(make_result("UNGER", (0, 0, 0, 0), code_embedding="semantic",
                                           ikd=False)) == "Semantic-only"
    assert tables.result_label(make_result("UNGER", (0, 0, 0, 0), "mine")) == "mine"


def test_load_results_skips_broken_files_and_filters_dataset(tmp_path):
    folder = write_results(tmp_path, [make_result("SASRec", (0.1, 0.2, 0.1, 0.1), "SASRec"),
                                      make_result("SASRec", (0.1, 0.2, 0.1, 0.1), "SASRec", dataset="ml-100k")])
    (folder / "broken.json").write_text("{not json")
    (folder / "codes-only.json").write_text(json.dumps({"model": "UNGER", "run_dir": "x"}))
    assert len(tables.load_results(folder)) == 2
    assert [r["dataset"] for r in tables.load_results(folder, "ml-100k")] == ["ml-100k"]


def test_rank_marks_ties_and_missing():
    marks = tables.rank_marks({"a": 0.3, "b": 0.3, "c": 0.2, "d": None, "e": 0.1})
    assert marks == {"a": "best", "b": "best", "c": "second", "d": None, "e": None}
    assert tables.rank_marks({"a": None}) == {"a": None}


def test_reduction_rules():
    assert tables.reduction(make_result("SASRec", (0, 0, 0, 0)), FULL) is None
    unger = make_result("UNGER", (0, 0, 0, 0), stage1_epochs=5, trained=8)
    assert tables.reduction(unger, FULL) == "8 epochs trained (stage1_epochs=5 < 100)"
    budget = make_result("SASRec", (0, 0, 0, 0), epochs=7, trained=1, time_budget_seconds=600.0)
    assert tables.reduction(budget, FULL) == "1 epoch trained (time budget 600 s, epochs=7 < 300)"
    sasrec_stage1 = make_result("UNGER", (0, 0, 0, 0), stage1_epochs=1, trained=1, stage1_backbone="sasrec")
    assert tables.reduction(sasrec_stage1, FULL) == ("1 epoch trained (stage1_epochs=1 < 100, "
                                                     "stage1_backbone=sasrec instead of din)")
    semantic_only = make_result("UNGER", (0, 0, 0, 0), code_embedding="semantic", stage1_backbone="sasrec")
    assert tables.reduction(semantic_only, FULL) is None  # no stage I at all


def test_full_run_settings_read_from_the_yaml_files():
    assert tables.full_run_settings() == FULL
