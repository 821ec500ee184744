"""Paper-style result tables and figures built from the results JSON files of ``run_unger.py``.

Everything here is a pure function of already-loaded results (dicts as written by
``unger_recbole.quick_start.run``), except the thin writers :func:`write_dataset_report` and the
figure functions, which write files. ``baselines/run_table.py`` decides which results to use
(one per column) and calls :func:`write_dataset_report`.

Layout of the tables (UNGER paper, Xiao et al. 2025):

* Table 3: rows Recall@10/20 and NDCG@10/20 (R@10 ... N@20), one column per model, best value of a
  row in bold, second best underlined (``<u>`` in markdown); plus the run time and epochs of each
  run. The paper's own numbers for the dataset (Beauty, Sports, Toys) follow as a second table.
* Table 5 (code embeddings: Semantic-only, Collaborative-only, Concat, Ours) and Table 6
  (ablation: neither CKA nor IKD = Concat, CKA = UNGER-CKA, CKA + IKD = UNGER), when any of their
  variants has a result; the paper's Beauty numbers beside them.
* Figures 6-9 (decoder layers, semantic encoders, quantizers, K) from the UNGER runs that differ
  from the reference UNGER run in that one setting only, when at least two settings are present.

A column's label is ``config['run_label']`` (every baselines/*.yaml sets it; run_table.py passes
``--run_label``), else the model name, or for UNGER a name inferred from its settings
(:func:`infer_label`). A run is *reduced* (marked †) when its training schedule is shorter than
the benchmark's (:func:`full_run_settings`: epochs, early-stopping patience, stage-I and S3-Rec
pre-training epochs) or when it ran under a time budget.
"""

import csv
import datetime
import io
import json
import math
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROPERTIES_DIR = REPO / "properties"
BASELINES_DIR = REPO / "baselines"

METRICS = (("recall@10", "R@10"), ("recall@20", "R@20"), ("ndcg@10", "N@10"), ("ndcg@20", "N@20"))
MISSING = "–"
REDUCED_MARK = "†"

# ----------------------------------------------------------------------------------------------
# The paper's numbers (transcribed from the paper text, /work/shared/paper/unger.txt)
# ----------------------------------------------------------------------------------------------
PAPER_DATASET_NAMES = {"amazon-beauty": "Beauty", "amazon-sports-outdoors": "Sports", "amazon-toys-games": "Toys"}
PAPER_TABLE3_COLUMNS = ("GRU4REC", "Caser", "SASRec", "BERT4Rec", "HGN", "FDSA", "S3-Rec",
                        "RecForest", "TIGER", "ColaRec", "EAGER", "UNGER")
# Columns marked * in Table 3: reimplemented by the UNGER authors (the others are quoted from [39, 47]).
PAPER_TABLE3_REIMPLEMENTED = ("TIGER", "ColaRec")
PAPER_TABLE3 = {
    "Beauty": {
        "R@10": (0.0283, 0.0347, 0.0605, 0.0347, 0.0512, 0.0407, 0.0647, 0.0664, 0.0617, 0.0524, 0.0836, 0.0939),
        "R@20": (0.0479, 0.0556, 0.0902, 0.0599, 0.0773, 0.0656, 0.0994, 0.0915, 0.0924, 0.0807, 0.1124, 0.1289),
        "N@10": (0.0137, 0.0176, 0.0318, 0.0170, 0.0266, 0.0208, 0.0327, 0.0400, 0.0339, 0.0263, 0.0525, 0.0559),
        "N@20": (0.0187, 0.0229, 0.0394, 0.0233, 0.0332, 0.0270, 0.0414, 0.0464, 0.0417, 0.0335, 0.0599, 0.0646),
    },
    "Sports": {
        "R@10": (0.0204, 0.0194, 0.0350, 0.0191, 0.0313, 0.0288, 0.0385, 0.0247, 0.0376, 0.0348, 0.0441, 0.0471),
        "R@20": (0.0333, 0.0314, 0.0507, 0.0315, 0.0477, 0.0463, 0.0607, 0.0375, 0.0577, 0.0533, 0.0659, 0.0710),
        "N@10": (0.0110, 0.0097, 0.0192, 0.0099, 0.0159, 0.0156, 0.0204, 0.0133, 0.0196, 0.0179, 0.0236, 0.0259),
        "N@20": (0.0142, 0.0126, 0.0231, 0.0130, 0.0201, 0.0200, 0.0260, 0.0164, 0.0246, 0.0226, 0.0291, 0.0319),
    },
    "Toys": {
        "R@10": (0.0176, 0.0270, 0.0675, 0.0203, 0.0497, 0.0381, 0.0700, 0.0383, 0.0578, 0.0474, 0.0714, 0.0822),
        "R@20": (0.0301, 0.0420, 0.0941, 0.0358, 0.0716, 0.0632, 0.1065, 0.0483, 0.0838, 0.0704, 0.1024, 0.1154),
        "N@10": (0.0084, 0.0141, 0.0374, 0.0099, 0.0277, 0.0189, 0.0376, 0.0285, 0.0321, 0.0242, 0.0505, 0.0489),
        "N@20": (0.0116, 0.0179, 0.0441, 0.0138, 0.0332, 0.0252, 0.0468, 0.0310, 0.0386, 0.0300, 0.0538, 0.0573),
    },
}
# Our run labels -> the paper's Table 3 column names.
PAPER_TABLE3_NAMES = {"GRU4Rec": "GRU4REC", "Caser": "Caser", "SASRec": "SASRec", "BERT4Rec": "BERT4Rec",
                      "HGN": "HGN", "FDSA": "FDSA", "S3Rec": "S3-Rec", "UNGER": "UNGER"}
TABLE3_LABELS = tuple(PAPER_TABLE3_NAMES)

# Table 5 (Beauty): which embedding is quantized. (our label, title, paper values R@10, R@20, N@10, N@20)
TABLE5 = (
    ("Semantic-only", "Semantic Only", (0.0791, 0.1077, 0.0462, 0.0535)),
    ("Collaborative-only", "Collaborative Only", (0.0744, 0.0997, 0.0469, 0.0532)),
    ("Concat", "Concat", (0.0759, 0.1071, 0.0452, 0.0530)),
    ("UNGER", "Ours", (0.0939, 0.1289, 0.0559, 0.0646)),
)
# Table 6 (Beauty): ablation. The paper's "\" column (neither CKA nor IKD) equals Table 5's Concat row.
TABLE6 = (
    ("Concat", "\\ (neither; = Concat)", (0.0759, 0.1071, 0.0452, 0.0530)),
    ("UNGER-CKA", "CKA", (0.0827, 0.1122, 0.0509, 0.0583)),
    ("UNGER", "CKA + IKD (Ours)", (0.0939, 0.1289, 0.0559, 0.0646)),
)
PAPER_VARIANT_DATASET = "amazon-beauty"  # Tables 5 and 6 and Figures 5-9 are on Beauty only

# UNGER settings that define a variant, and their defaults (properties/model/UNGER.yaml).
UNGER_DEFAULTS = {"code_embedding": "integrated", "ikd": True, "quantizer": "hkmeans", "codebook_size": 256,
                  "n_decoder_layers": 4, "encoder": "all-MiniLM-L6-v2"}
DEFAULT_ENCODER_NAMES = {"minilm": "all-MiniLM-L6-v2", "hf": "all-MiniLM-L6-v2"}  # hf without encoder_path = bundled MiniLM
SHORT_NAMES = {"semantic": "Semantic-only", "collaborative": "Collaborative-only", "concat": "Concat"}

FIGURES = (
    # (setting varied, file suffix, title, x label, plot kind)
    ("n_decoder_layers", "fig6_decoder_layers", "Decoder layers (cf. paper Fig. 6)", "decoder layers", "line"),
    ("encoder", "fig7_encoders", "Semantic encoders (cf. paper Fig. 7)", "semantic encoder", "bar"),
    ("quantizer", "fig8_quantizers", "Quantization methods (cf. paper Fig. 8)", "quantizer", "bar"),
    ("codebook_size", "fig9_codebook_size", "Clusters per split K (cf. paper Fig. 9)", "K", "line"),
)
QUANTIZER_ORDER = {"random": 0, "rqvae": 1, "hkmeans": 2}


# ----------------------------------------------------------------------------------------------
# Reading results
# ----------------------------------------------------------------------------------------------
def load_results(results_dir, dataset=None):
    """Every complete results JSON under ``results_dir`` (optionally of one dataset), oldest first.

    A file that is not JSON or has no ``test_result`` is skipped. Each dict gets ``_path``."""
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or not isinstance(result.get("test_result"), dict):
            continue
        if dataset is not None and result.get("dataset") != dataset:
            continue
        result["_path"] = str(path)
        results.append(result)
    return sorted(results, key=result_order)


def result_order(result):
    return (str(result.get("date", "")), str(result.get("_path", "")))


def _yaml_value(path, key, default):
    try:
        return (yaml.safe_load(Path(path).read_text()) or {}).get(key, default)
    except (OSError, yaml.YAMLError):
        return default


def default_codebook_size(quantizer):
    return _yaml_value(PROPERTIES_DIR / "quantizer" / f"{quantizer}.yaml", "codebook_size", 256)


def unger_settings(config):
    """The settings that tell UNGER variants apart, resolved to their effective values."""
    quantizer = config.get("quantizer", UNGER_DEFAULTS["quantizer"])
    codebook = config.get("quantizer_codebook_size")
    encoder = str(config.get("encoder", "minilm"))
    path = config.get("encoder_path")
    if path:
        encoder = Path(str(path).rstrip("/")).name
        for suffix in (".gguf",):
            encoder = encoder[: -len(suffix)] if encoder.endswith(suffix) else encoder
    else:
        encoder = DEFAULT_ENCODER_NAMES.get(encoder, encoder)
    ikd = config.get("ikd", True)
    if isinstance(ikd, str):
        ikd = ikd.lower() == "true"
    return {"code_embedding": config.get("code_embedding", UNGER_DEFAULTS["code_embedding"]), "ikd": bool(ikd),
            "quantizer": quantizer,
            "codebook_size": int(codebook) if codebook is not None else int(default_codebook_size(quantizer)),
            "n_decoder_layers": int(config.get("n_decoder_layers", UNGER_DEFAULTS["n_decoder_layers"])),
            "encoder": encoder}


def is_unger(result):
    return result.get("model") == "UNGER"


def infer_label(result):
    """A column name for a run without ``run_label``: the model, or for UNGER its variant."""
    if not is_unger(result):
        return str(result.get("model"))
    s = unger_settings(result.get("config", {}))
    if s["code_embedding"] == "integrated":
        name = "UNGER" if s["ikd"] else "UNGER-CKA"
    else:
        name = SHORT_NAMES.get(s["code_embedding"], f"UNGER-{s['code_embedding']}") + ("+IKD" if s["ikd"] else "")
    if s["quantizer"] != UNGER_DEFAULTS["quantizer"]:
        name += f"-{s['quantizer']}"
    if s["codebook_size"] != UNGER_DEFAULTS["codebook_size"]:
        name += f"-K{s['codebook_size']}"
    if s["n_decoder_layers"] != UNGER_DEFAULTS["n_decoder_layers"]:
        name += f"-L{s['n_decoder_layers']}"
    if s["encoder"] != UNGER_DEFAULTS["encoder"]:
        name += f"-{s['encoder']}"
    return name


def result_label(result):
    label = result.get("config", {}).get("run_label")
    return str(label) if label not in (None, "") else infer_label(result)


def latest_by_label(results):
    """``{label: newest result}`` (results as returned by :func:`load_results`)."""
    chosen = {}
    for result in sorted(results, key=result_order):
        chosen[result_label(result)] = result
    return chosen


# ----------------------------------------------------------------------------------------------
# Reduced runs and run time
# ----------------------------------------------------------------------------------------------
def full_run_settings():
    """The benchmark's full training schedule, read from the yaml files that define it."""
    overall = PROPERTIES_DIR / "overall.yaml"
    unger = PROPERTIES_DIR / "model" / "UNGER.yaml"
    return {"epochs": _yaml_value(overall, "epochs", 300),
            "stopping_step": _yaml_value(overall, "stopping_step", 10),
            "stage1_epochs": _yaml_value(unger, "stage1_epochs", 100),
            "stage1_stopping_step": _yaml_value(unger, "stage1_stopping_step", 5),
            "stage1_backbone": _yaml_value(unger, "stage1_backbone", "din"),
            "pretrain_epochs": _yaml_value(BASELINES_DIR / "S3Rec.yaml", "pretrain_epochs", 150)}


def _applies(key, result):
    config = result.get("config", {})
    if key.startswith("stage1_"):
        return is_unger(result) and config.get("code_embedding", "integrated") != "semantic"
    if key == "pretrain_epochs":
        return result.get("model") == "S3Rec" and config.get("train_stage") == "finetune"
    return True


def reduction(result, full=None):
    """``None`` for a full run, else a short text saying how the run was cut, e.g.
    ``'2 epochs trained (epochs=2 < 300)'`` or ``'... (stage1_backbone=sasrec instead of din)'``."""
    full = full_run_settings() if full is None else full
    config = result.get("config", {})
    cuts = []
    budget = config.get("time_budget_seconds")
    if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget > 0:
        cuts.append(f"time budget {budget:g} s")
    for key, value_full in full.items():
        value = config.get(key)
        if not _applies(key, result) or value is None:
            continue
        if isinstance(value_full, str):  # a cheaper component than the paper's (e.g. stage I backbone)
            if str(value) != value_full:
                cuts.append(f"{key}={value} instead of {value_full}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value < value_full:
            cuts.append(f"{key}={value:g} < {value_full:g}")
    if not cuts:
        return None
    trained = result.get("epochs_trained", "?")
    return f"{trained} epoch{'' if trained == 1 else 's'} trained ({', '.join(cuts)})"


def total_seconds(result):
    """Wall time of the run, plus the S3-Rec pre-training run it fine-tunes (``pretrain_seconds``)."""
    seconds = result.get("wall_seconds")
    if not isinstance(seconds, (int, float)):
        return None
    extra = result.get("config", {}).get("pretrain_seconds")
    return float(seconds) + (float(extra) if isinstance(extra, (int, float)) and not isinstance(extra, bool) else 0.0)


def format_seconds(seconds):
    if seconds is None:
        return MISSING
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def rank_marks(values):
    """``{column: 'best' | 'second' | None}`` for ``{column: value or None}``; ties share a mark,
    missing values get none."""
    present = sorted({v for v in values.values() if isinstance(v, (int, float)) and not math.isnan(v)},
                     reverse=True)
    marks = {}
    for column, value in values.items():
        if present and value == present[0]:
            marks[column] = "best"
        elif len(present) > 1 and value == present[1]:
            marks[column] = "second"
        else:
            marks[column] = None
    return marks


def metric_value(result, metric):
    if result is None:
        return None
    value = result.get("test_result", {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def build_table(columns, chosen, titles=None, full=None):
    """The numbers of one table: ``columns`` (labels) in order, ``chosen`` ``{label: result or None}``.

    Returns a dict with ``columns``, ``titles``, ``rows`` ([(row name, {column: value})] for the four
    metrics), ``marks`` ({row name: {column: mark}}), ``seconds``, ``epochs``, ``reduced``
    ({column: text or None}), ``missing`` (columns without a result) and ``results``."""
    full = full_run_settings() if full is None else full
    titles = dict(titles or {})
    rows, marks = [], {}
    for metric, name in METRICS:
        values = {c: metric_value(chosen.get(c), metric) for c in columns}
        rows.append((name, values))
        marks[name] = rank_marks(values)
    results = {c: chosen.get(c) for c in columns}
    return {
        "columns": list(columns),
        "titles": {c: titles.get(c, c) for c in columns},
        "rows": rows,
        "marks": marks,
        "seconds": {c: total_seconds(r) if r else None for c, r in results.items()},
        "epochs": {c: r.get("epochs_trained") if r else None for c, r in results.items()},
        "reduced": {c: reduction(r, full) if r else None for c, r in results.items()},
        "missing": [c for c in columns if results[c] is None],
        "results": results,
    }


def format_cell(value, mark=None, suffix=""):
    if value is None:
        return MISSING
    text = f"{value:.4f}{suffix}"
    if mark == "best":
        return f"**{text}**"
    if mark == "second":
        return f"<u>{text}</u>"
    return text


def markdown_row(cells):
    return "| " + " | ".join(cells) + " |"


def markdown_table(table, first_header="Metric", notes=None, extra_rows=()):
    """Markdown for :func:`build_table`'s output, followed by its footnotes (missing cells,
    reduced runs). ``notes`` ``{column: text}`` explains missing columns (e.g. a failed run);
    ``extra_rows`` are (name, {column: text}) rows added after Epochs."""
    columns = table["columns"]
    header = [first_header] + [table["titles"][c] + (REDUCED_MARK if table["reduced"][c] else "") for c in columns]
    lines = [markdown_row(header), markdown_row(["---"] + ["---:"] * len(columns))]
    for name, values in table["rows"]:
        lines.append(markdown_row([name] + [format_cell(values[c], table["marks"][name][c]) for c in columns]))
    lines.append(markdown_row(["Time"] + [format_seconds(table["seconds"][c]) for c in columns]))
    lines.append(markdown_row(["Epochs"] + [
        MISSING if table["epochs"][c] is None else f"{table['epochs'][c]}{REDUCED_MARK if table['reduced'][c] else ''}"
        for c in columns]))
    for name, values in extra_rows:
        lines.append(markdown_row([name] + [str(values.get(c, MISSING)) for c in columns]))
    footnotes = []
    if table["missing"]:
        notes = notes or {}
        explained = [f"{table['titles'][c]} ({notes[c]})" if notes.get(c) else table["titles"][c]
                     for c in table["missing"]]
        footnotes.append(f"{MISSING} no result: {', '.join(explained)}.")
    reduced = [c for c in columns if table["reduced"][c]]
    if reduced:
        footnotes.append(f"{REDUCED_MARK} reduced run, not the full schedule: "
                         + "; ".join(f"{table['titles'][c]}: {table['reduced'][c]}" for c in reduced) + ".")
    if any(table["results"][c] and table["results"][c].get("config", {}).get("pretrain_seconds") for c in columns):
        footnotes.append("Time of S3-Rec includes its pre-training run.")
    return "\n".join(lines + ([""] + footnotes if footnotes else [])) + "\n"


def csv_table(table):
    """CSV for :func:`build_table`'s output: one row per metric plus time, epochs, reduced, run id."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = table["columns"]
    writer.writerow(["metric"] + [table["titles"][c] for c in columns])
    for name, values in table["rows"]:
        writer.writerow([name] + ["" if values[c] is None else f"{values[c]:.6g}" for c in columns])
    writer.writerow(["time_seconds"] + ["" if table["seconds"][c] is None else f"{table['seconds'][c]:.1f}"
                                        for c in columns])
    writer.writerow(["epochs_trained"] + ["" if table["epochs"][c] is None else table["epochs"][c] for c in columns])
    writer.writerow(["reduced"] + [table["reduced"][c] or "" for c in columns])
    writer.writerow(["run_id"] + [(table["results"][c] or {}).get("run_id", "") for c in columns])
    return out.getvalue()


def paper_markdown(columns, values_by_row, starred=()):
    """Markdown for a table of the paper's numbers: ``values_by_row`` ``{row: {column: value}}``."""
    lines = [markdown_row(["Metric"] + list(columns)), markdown_row(["---"] + ["---:"] * len(columns))]
    for row, values in values_by_row.items():
        marks = rank_marks(values)
        lines.append(markdown_row([row] + [format_cell(values.get(c), marks[c], "*" if c in starred else "")
                                      for c in columns]))
    return "\n".join(lines) + "\n"


def paper_table3(dataset):
    """``(columns, {row: {column: value}})`` of the paper's Table 3 for ``dataset``, or ``None``."""
    name = PAPER_DATASET_NAMES.get(dataset)
    if name is None:
        return None
    rows = {row: dict(zip(PAPER_TABLE3_COLUMNS, values)) for row, values in PAPER_TABLE3[name].items()}
    return list(PAPER_TABLE3_COLUMNS), rows


def paper_table3_markdown(dataset):
    table = paper_table3(dataset)
    if table is None:
        return None
    columns, rows = table
    return (paper_markdown(columns, rows, PAPER_TABLE3_REIMPLEMENTED)
            + "\n\\* reimplemented by the UNGER authors; the other baselines are quoted from [39, 47] of the paper. "
              "Paper setup: Llama2-7b semantic encoder, DIN stage I, K = 256, 1 encoder / 4 decoder layers.\n")


def variant_paper_markdown(spec):
    columns = [title for _, title, _ in spec]
    rows = {name: {title: values[i] for _, title, values in spec} for i, (_, name) in enumerate(METRICS)}
    return paper_markdown(columns, rows)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def run_length(result):
    config = result.get("config", {})
    return tuple(config.get(k) for k in ("epochs", "stopping_step", "stage1_epochs", "stage1_stopping_step",
                                         "time_budget_seconds"))


def reference_result(unger_results, chosen=None):
    """The UNGER run the figures compare against: the chosen 'UNGER' column, else the newest run
    with default settings, else ``None`` (then only settings are compared)."""
    if chosen and chosen.get("UNGER") is not None:
        return chosen["UNGER"]
    defaults = [r for r in unger_results if unger_settings(r.get("config", {})) == UNGER_DEFAULTS]
    return max(defaults, key=result_order) if defaults else None


def figure_points(results, setting, chosen=None):
    """``[(value, result)]`` for the UNGER runs that differ from the reference run only in
    ``setting`` (same other settings, same training schedule), one run per value (a chosen run
    first, else the newest), ordered for plotting."""
    unger_results = [r for r in results if is_unger(r)]
    reference = reference_result(unger_results, chosen)
    ref_settings = unger_settings(reference["config"]) if reference else dict(UNGER_DEFAULTS)
    ref_length = run_length(reference) if reference else None
    preferred = {id(r) for r in (chosen or {}).values() if r is not None}
    by_value = {}
    for result in sorted(unger_results, key=result_order):
        settings = unger_settings(result.get("config", {}))
        if any(settings[k] != ref_settings[k] for k in settings if k != setting):
            continue
        if ref_length is not None and run_length(result) != ref_length:
            continue
        value = settings[setting]
        if value in by_value and id(by_value[value]) in preferred and id(result) not in preferred:
            continue
        by_value[value] = result
    if setting == "quantizer":
        order = sorted(by_value, key=lambda v: (QUANTIZER_ORDER.get(v, -1), str(v)))
    elif setting == "encoder":
        order = sorted(by_value, key=str)
    else:
        order = sorted(by_value)
    return [(value, by_value[value]) for value in order]


def plot_points(points, path, title, xlabel, kind="bar", full=None):
    """Recall@10/20 (left) and NDCG@10/20 (right) of ``points`` ``[(value, result)]`` as a PNG.
    Reduced runs get † after their tick label and a note under the plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = full_run_settings() if full is None else full
    labels = [f"{value}{REDUCED_MARK if reduction(result, full) else ''}" for value, result in points]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, (group, metrics) in zip(axes, (("Recall", ("recall@10", "recall@20")),
                                             ("NDCG", ("ndcg@10", "ndcg@20")))):
        positions = list(range(len(points)))
        top = 0.0
        for index, metric in enumerate(metrics):
            values = [metric_value(result, metric) or 0.0 for _, result in points]
            top = max([top] + values)
            name = metric.replace("recall", "Recall").replace("ndcg", "NDCG")
            if kind == "line":
                axis.plot(positions, values, marker="o", label=name)
            else:
                width = 0.38
                axis.bar([p + (index - 0.5) * width for p in positions], values, width=width, label=name)
        axis.set_xticks(positions)
        axis.set_xticklabels(labels)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(group)
        axis.set_ylim(0, top * 1.25 if top > 0 else 1.0)  # headroom for the legend
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8, loc="upper left", ncol=2)
    fig.suptitle(title)
    if any(reduction(result, full) for _, result in points):
        fig.text(0.01, 0.01, f"{REDUCED_MARK} reduced run (shorter training schedule)", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(dataset, results, out_dir, chosen=None, full=None):
    """The figures of :data:`FIGURES` that the results support (two or more values of the
    setting). Returns ``[(title, path, [(value, result)])]``."""
    written = []
    for setting, suffix, title, xlabel, kind in FIGURES:
        points = figure_points([r for r in results if r.get("dataset") == dataset], setting, chosen)
        if len(points) < 2:
            continue
        path = plot_points(points, Path(out_dir) / f"{dataset}.{suffix}.png", f"{dataset}: {title}", xlabel, kind, full)
        written.append((title, path, points))
    return written


# ----------------------------------------------------------------------------------------------
# The report of one dataset
# ----------------------------------------------------------------------------------------------
def variant_rows(table):
    """Settings rows for a table of UNGER runs."""
    rows = []
    for key, name in (("code_embedding", "Code embedding"), ("ikd", "IKD"), ("quantizer", "Quantizer"),
                      ("codebook_size", "K"), ("n_decoder_layers", "Decoder layers"), ("encoder", "Encoder")):
        rows.append((name, {c: unger_settings(r["config"])[key] for c, r in table["results"].items() if r}))
    return rows


def pick(label, chosen, by_label):
    return chosen[label] if label in chosen else by_label.get(label)


def dataset_report(dataset, columns, chosen, results, out_dir, notes=None, full=None, date=None):
    """Markdown and CSV texts (and figures written to ``out_dir``) for one dataset.

    ``columns``: labels of the Table-3-layout table, in order; ``chosen``: ``{label: result or None}``
    (the runs picked for the requested labels; labels not in it fall back to the newest result of
    that label in ``results``); ``results``: every result of the dataset (for Tables 5/6, the UNGER
    variants table and the figures). Returns ``{'markdown': str, 'csv': {suffix: str},
    'figures': [paths]}``."""
    full = full_run_settings() if full is None else full
    notes = notes or {}
    results = [r for r in results if r.get("dataset") == dataset]
    chosen = {label: r if r is not None and r.get("dataset") == dataset else None for label, r in chosen.items()}
    by_label = latest_by_label(results)
    date = date or datetime.date.today().isoformat()
    paper_name = PAPER_DATASET_NAMES.get(dataset)

    main = build_table(columns, {c: pick(c, chosen, by_label) for c in columns}, full=full)
    md = [f"# {dataset}: results of this repository and of the UNGER paper", "",
          f"Generated on {date} by `baselines/run_table.py` from the results JSON files of `run_unger.py`. "
          "Protocol (properties/overall.yaml): leave-one-out split in time order, history of at most 20 items, "
          "full ranking over all items, model selection on validation NDCG@10. "
          "Per row the best value is **bold** and the second best <u>underlined</u>. "
          "Time is the wall time of the whole run (UNGER: semantic encoder, stage I, quantizer and stage II).", "",
          "## Table 3 layout: this repository", "",
          markdown_table(main, notes=notes)]
    csvs = {"": csv_table(main)}
    md += [f"## Paper, Table 3 ({paper_name or dataset})", ""]
    paper = paper_table3_markdown(dataset)
    md.append(paper if paper else "The paper reports no numbers for this dataset (it uses Beauty, Sports and Toys).\n")

    for number, spec, intro in (
            (5, TABLE5, "Which embedding is quantized into the item codes."),
            (6, TABLE6, "Ablation of cross-modality knowledge alignment (CKA) and intra-modality knowledge "
                        "distillation (IKD).")):
        labels = [label for label, _, _ in spec]
        table_chosen = {label: pick(label, chosen, by_label) for label in labels}
        if not any(table_chosen[label] for label in labels if label != "UNGER"):
            continue
        table = build_table(labels, table_chosen, {label: title for label, title, _ in spec}, full=full)
        md += [f"## Table {number} layout: this repository", "", intro, "", markdown_table(table, "Metric", notes)]
        csvs[f".table{number}"] = csv_table(table)
        if dataset == PAPER_VARIANT_DATASET:
            md += [f"## Paper, Table {number} (Beauty)", "", variant_paper_markdown(spec)]

    unger_labels = sorted((label for label, r in {**by_label, **{k: v for k, v in chosen.items() if v}}.items()
                           if r is not None and is_unger(r)), key=lambda label: (label != "UNGER", label))
    if len(unger_labels) > 1:
        table = build_table(unger_labels, {label: pick(label, chosen, by_label) for label in unger_labels}, full=full)
        md += ["## All UNGER variants with results", "", markdown_table(table, "Metric", notes, variant_rows(table))]
        csvs[".variants"] = csv_table(table)

    figures = write_figures(dataset, results, out_dir, chosen={k: v for k, v in chosen.items() if v}, full=full)
    if figures:
        md += ["## Figures", "", "UNGER runs that differ from the reference UNGER run in one setting only "
               "(same other settings and training schedule).", ""]
        for title, path, points in figures:
            md += [f"### {title}", "", f"![{title}]({Path(path).name})", "",
                   "Runs: " + ", ".join(f"{value} = `{result.get('run_id', '?')}`" for value, result in points), ""]
    used = {label: pick(label, chosen, by_label) for label in [*columns, *unger_labels]}
    md += runs_section(dataset, {label: r for label, r in used.items() if r is not None})
    return {"markdown": "\n".join(md).rstrip() + "\n", "csv": csvs, "figures": [p for _, p, _ in figures]}


def runs_section(dataset, used):
    """Markdown lines listing the run behind every column: id, device, date, wall time, and how it
    was started (run_table.py's command; the full resolved config is in the results JSON)."""
    if not used:
        return []
    lines = ["## Runs", "",
             f"Each column is one `python run_unger.py --model=<model> --dataset={dataset} "
             "--config_files=baselines/<column>.yaml --run_label=<column> [overrides]` run (started by "
             "`baselines/run_table.py`); its results JSON (`results/<run id>.json`) holds the resolved config, "
             "the seconds per stage and the device.", "",
             "| Column | Model | Run id | Device | Date | Wall time |", "| --- | --- | --- | --- | --- | --- |"]
    for label, result in used.items():
        lines.append(f"| {label} | {result.get('model', '?')} | `{result.get('run_id', '?')}` | "
                     f"{result.get('device', '?')} | {str(result.get('date', '?'))[:16]} | "
                     f"{format_seconds(total_seconds(result))} |")
    return lines + [""]


def write_dataset_report(dataset, columns, chosen, results, out_dir="docs/tables", notes=None, full=None):
    """Write ``<out_dir>/<dataset>.md``, ``<dataset>.csv`` (+ ``.table5.csv``, ``.table6.csv``,
    ``.variants.csv`` when present) and the figures. Returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = dataset_report(dataset, columns, chosen, results, out_dir, notes, full)
    written = [out_dir / f"{dataset}.md"]
    written[0].write_text(report["markdown"])
    for suffix, text in report["csv"].items():
        path = out_dir / f"{dataset}{suffix}.csv"
        path.write_text(text)
        written.append(path)
    return written + [Path(p) for p in report["figures"]]
