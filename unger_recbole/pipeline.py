"""UNGER's preparatory stages, run on the same RecBole split as stage II:

    item texts -> semantic encoder (E_S) -> stage I (integrated embeddings) -> quantizer -> code table

Each step's output is cached in ``artifact_dir`` under a key made of everything that determines
it (file contents, encoder identity, stage-I and quantizer settings, seed), so a rerun with the
same inputs reuses it and any changed input recomputes. The run folder receives the files stage
II and inference read: ``semantic.npz``, ``code_table.npz`` (codes + integrated embeddings,
aligned to RecBole's internal item ids), ``item_codes.csv`` (original item ids) and
``codes_report.json``.

In a distributed run every rank trains stage I (data-parallel); rank 0 alone encodes texts,
quantizes and writes files, the other ranks then read its caches (``main_process_first``).
"""

import copy
import csv
import json
import time
from logging import getLogger
from pathlib import Path

import numpy as np
import yaml

from unger_recbole.artifacts import ArtifactCache, array_digest, cached_item_embeddings, content_key
from unger_recbole.compat import CheckpointTrainer
from unger_recbole.distributed import barrier, is_main_process, main_process_first
from unger_recbole.encoders import build_encoder
from unger_recbole.encoders.base import encoder_params_from_config
from unger_recbole.encoders.item_text import build_item_texts, read_item_table
from unger_recbole.fusion import concat_embeddings
from unger_recbole.quantizers import build_quantizer

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
CODE_EMBEDDINGS = ("integrated", "semantic", "collaborative", "concat")
STAGE1_KEYS = ("stage1_backbone", "stage1_embedding_size", "stage1_n_layers", "stage1_n_heads", "stage1_dropout",
               "stage1_epochs", "stage1_learning_rate", "stage1_stopping_step", "align_weight",
               "align_temperature", "align_similarity", "integrated_embedding", "seed", "MAX_ITEM_LIST_LENGTH",
               "train_batch_size", "eval_args", "valid_metric")


def load_properties(kind, name):
    """``properties/<kind>/<name>.yaml`` as a dict (empty if the component ships no yaml)."""
    path = PROPERTIES_DIR / kind / f"{name}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def quantizer_params(config):
    """The quantizer's yaml defaults overridden by config keys ``quantizer_<param>``."""
    overrides = {key[len("quantizer_"):]: value for key, value in config.final_config_dict.items()
                 if key.startswith("quantizer_") and value is not None}
    return {**load_properties("quantizer", config["quantizer"]), **overrides}


def file_digest(path):
    return content_key(Path(path))


def item_file_of(config):
    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    if not path.is_file():
        raise FileNotFoundError(f"UNGER needs item texts but {path} does not exist. Prepare the dataset with "
                                f"python -m unger_recbole.data.prepare (it writes the .item file).")
    return path


def with_padding_row(rows, fill=0.0):
    """Prepend RecBole's padding item (internal id 0) to an [n_real_items, ...] array."""
    pad = np.full((1, *rows.shape[1:]), fill, dtype=rows.dtype)
    return np.concatenate([pad, rows], axis=0)


def item_texts(config, item_tokens):
    """``(texts, stats)``: one text per item token from the ``item_text_fields`` of the .item file."""
    return build_item_texts(read_item_table(item_file_of(config)), item_tokens, list(config["item_text_fields"]))


def configured_encoder(config):
    """The semantic encoder the config names, with its yaml defaults under the config's keys."""
    # The encoder's yaml uses the same encoder_<param> keys as the config, which overrides it.
    settings = {key: value for key, value in config.final_config_dict.items() if key.startswith("encoder")}
    name, params = encoder_params_from_config({**load_properties("encoder", config["encoder"]), **settings})
    return build_encoder(name, **params)


def semantic_embeddings(config, item_tokens, cache, logger):
    """E_S [n_real_items, d_s] from the configured encoder and item text fields."""
    texts, stats = item_texts(config, item_tokens)
    logger.info(f"item texts: {stats}")
    return cached_item_embeddings(cache, configured_encoder(config), texts, meta={"dataset": config["dataset"]}), stats


def stage1_config(config):
    """The run's config with stage-I training keys in RecBole's slots (epochs, learning rate...)."""
    derived = copy.deepcopy(config)
    derived["model"] = "UNGERStage1"
    derived["epochs"] = config["stage1_epochs"]
    derived["learning_rate"] = config["stage1_learning_rate"]
    derived["stopping_step"] = config["stage1_stopping_step"]
    return derived


def train_stage1(config, train_data, valid_data, semantic_file, align_weight, run_dir, logger):
    from unger_recbole.model.stage1 import UNGERStage1
    derived = stage1_config(config)
    derived["align_weight"] = align_weight
    derived["semantic_embedding_file"] = str(semantic_file)
    model = UNGERStage1(derived, train_data._dataset).to(derived["device"])
    logger.info(model)
    checkpoint = run_dir / f"stage1_align{align_weight:g}.pth"
    trainer = CheckpointTrainer(derived, model, checkpoint_file=checkpoint)
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=derived["show_progress"])
    trainer.load_best_checkpoint()
    logger.info(f"stage I (align_weight={align_weight:g}) best valid: {dict(best_valid)}")
    return model.export_embeddings(), {k: float(v) for k, v in best_valid.items()}, len(trainer.train_loss_dict)


def stage1_embeddings(config, train_data, valid_data, semantic, semantic_file, data_key, cache, run_dir, logger):
    """The embedding that is quantized, per ``code_embedding`` (paper Table 5 rows)."""
    choice = config["code_embedding"]
    if choice not in CODE_EMBEDDINGS:
        raise ValueError(f"code_embedding must be one of {CODE_EMBEDDINGS}, got {choice!r}")
    if choice == "semantic":
        return semantic, {}
    align_weight = config["align_weight"] if choice == "integrated" else 0.0
    key = content_key("stage1/v1", data_key, array_digest(semantic), align_weight,
                      {k: config[k] for k in STAGE1_KEYS})
    hit = cache.load("stage1", key)
    if hit is not None:
        logger.info(f"stage I: reusing cached embeddings {cache.path('stage1', key)}")
        exported, info = hit["arrays"], hit["meta"]
    else:
        exported, best_valid, epochs = train_stage1(config, train_data, valid_data, semantic_file, align_weight,
                                                    run_dir, logger)
        info = {"best_valid": best_valid, "epochs": epochs, "align_weight": align_weight}
        if is_main_process(config):
            cache.save("stage1", key, exported, info)
    real = slice(1, None)  # drop the padding row
    if choice == "integrated":
        return exported["integrated"][real], info
    if choice == "collaborative":
        return exported["item_id"][real], info
    return concat_embeddings(semantic, exported["item_id"][real]), info


def quantize(config, embeddings, cache, logger):
    name = config["quantizer"]
    params = quantizer_params(config)
    key = content_key("codes/v1", name, params, array_digest(embeddings))
    hit = cache.load("codes", key)
    if hit is not None:
        logger.info(f"codes: reusing {cache.path('codes', key)}")
        return hit["arrays"]["codes"], hit["meta"]
    quantizer = build_quantizer(name, **params)
    codes = quantizer.quantize(embeddings)
    report = {**quantizer.report, "params": params}
    cache.save("codes", key, {"codes": codes}, report)
    return codes, report


def code_table_digest(codes, codebook_size, item_tokens):
    """Content hash of a code table: codes (padding row included), K and the item tokens in order.

    Stored in the config (and so in every checkpoint) as ``code_table_digest``, so that
    ``unger_recbole.recommend`` refuses a checkpoint paired with any other code table.
    """
    return content_key("code_table/v1", np.asarray(codes), int(codebook_size), [str(t) for t in item_tokens])


def write_code_table_csv(path, item_tokens, codes):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "code"])
        for token, code in zip(item_tokens, codes):
            writer.writerow([token, " ".join(str(c) for c in code if c >= 0)])
    tmp.replace(path)


def build_unger_artifacts(config, train_data, valid_data, run_dir):
    """Run semantic encoding, stage I and quantization; point ``config`` at the code table.

    Returns wall seconds per step; the report with code statistics is ``codes_report.json``.
    """
    logger = getLogger()
    dataset = train_data._dataset
    item_tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field][1:]]
    cache = ArtifactCache(config["artifact_dir"])
    data_key = content_key("data/v1", file_digest(Path(config["data_path"]) / f"{config['dataset']}.inter"),
                           item_tokens)
    seconds = {}

    tic = time.time()
    semantic_file = run_dir / "semantic.npz"
    with main_process_first(config):
        semantic, text_stats = semantic_embeddings(config, item_tokens, cache, logger)
        if is_main_process(config):
            np.savez(semantic_file, embeddings=with_padding_row(semantic))
    seconds["semantic_encoder"] = time.time() - tic

    tic = time.time()
    embeddings, stage1_info = stage1_embeddings(config, train_data, valid_data, semantic, semantic_file,
                                                data_key, cache, run_dir, logger)
    seconds["stage1"] = time.time() - tic

    tic = time.time()
    with main_process_first(config):
        codes, report = quantize(config, embeddings, cache, logger)
    seconds["quantizer"] = time.time() - tic

    table_file = run_dir / "code_table.npz"
    padded_codes, codebook_size = with_padding_row(codes, fill=-1), quantizer_params(config)["codebook_size"]
    if is_main_process(config):
        np.savez(table_file, codes=padded_codes, integrated=with_padding_row(embeddings),
                 codebook_size=np.int64(codebook_size), item_tokens=np.array(item_tokens))
        write_code_table_csv(run_dir / "item_codes.csv", item_tokens, codes)
        full_report = {"code_embedding": config["code_embedding"], "encoder": config["encoder"],
                       "item_text": text_stats, "stage1": stage1_info, "quantizer": report,
                       "seconds": {k: round(v, 2) for k, v in seconds.items()}}
        (run_dir / "codes_report.json").write_text(json.dumps(full_report, indent=2, default=str))
    barrier(config)  # the code table exists for every rank
    logger.info(f"codes: {json.dumps(report, default=str)}")
    config["code_table_file"] = str(table_file)
    config["code_table_digest"] = code_table_digest(padded_codes, codebook_size, item_tokens)
    return seconds


def build_semantic_artifact(config, train_data, valid_data, run_dir):
    """Only E_S, for training stage I alone (``--model=UNGERStage1``)."""
    dataset = train_data._dataset
    item_tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field][1:]]
    tic = time.time()
    semantic_file = run_dir / "semantic.npz"
    with main_process_first(config):
        semantic, _ = semantic_embeddings(config, item_tokens, ArtifactCache(config["artifact_dir"]), getLogger())
        if is_main_process(config):
            np.savez(semantic_file, embeddings=with_padding_row(semantic))
    config["semantic_embedding_file"] = str(semantic_file)
    return {"semantic_encoder": time.time() - tic}
