"""Run any RecBole model, or UNGER, on RecBole's benchmark: ``run(model, dataset, ...) -> results``.

This mirrors ``recbole.quick_start.run_recbole`` with RecBole's own building blocks (Config,
create_dataset, data_preparation, Trainer, evaluators) but never imports ``recbole.quick_start``
(it pulls in ray). On top it resolves our property files, keeps every run's outputs in one
folder, writes a results JSON and, on request, the ranked predictions of every test user.
With ``nproc > 1`` (or under torchrun) it trains data-parallel (docs/DISTRIBUTED.md).
"""

import datetime
import inspect
import json
import os
import time
import uuid
from logging import getLogger
from pathlib import Path

from unger_recbole.compat import (build_config, close_run_logger,  # first: shims before RecBole
                                  init_run_logger, join_process_group)

import torch
import torch.distributed as dist
import yaml
from recbole.data import create_dataset, data_preparation
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import get_model, init_seed

from unger_recbole import distributed
from unger_recbole.trainer import trainer_class_for

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
RECBOLE_MODEL_PACKAGES = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                          "knowledge_aware_recommender")
BUNDLED_DATASETS = ("ml-100k",)
RUN_MANIFEST = "run.json"
CURVE_FILE = "learning_curve.json"  # rewritten after every epoch, so a stopped run keeps its curve


def our_models():
    """Models this package adds to RecBole, by name."""
    from unger_recbole.model import MODELS
    return MODELS


def recbole_model_names():
    import importlib
    import pkgutil
    names = set()
    for package_name in RECBOLE_MODEL_PACKAGES:
        package = importlib.import_module(f"recbole.model.{package_name}")
        for module_info in pkgutil.iter_modules(package.__path__):
            try:
                module = importlib.import_module(f"recbole.model.{package_name}.{module_info.name}")
            except ImportError:  # optional third-party dependency of one model
                continue
            names.update(name for name, obj in vars(module).items()
                         if inspect.isclass(obj) and issubclass(obj, AbstractRecommender)
                         and obj.__module__ == module.__name__)
    return sorted(names)


def resolve_model(name):
    """The model class for ``name``: ours first, then RecBole's; an unknown name lists both."""
    if name in our_models():
        return our_models()[name]
    try:
        return get_model(name)
    except (ValueError, AttributeError, ImportError):  # ImportError: RecBole's exlib package needs lightgbm
        raise ValueError(
            f"Unknown model '{name}'. This package's models: {', '.join(sorted(our_models()))}. "
            f"RecBole's models: {', '.join(recbole_model_names())}."
        ) from None


def property_files(model_name, dataset_name, model_class=None):
    """overall.yaml, then the model's yaml, then the dataset's (later files win). A model class may
    name the yaml it shares with another model (``properties_name``)."""
    files = [PROPERTIES_DIR / "overall.yaml"]
    model_file = PROPERTIES_DIR / "model" / f"{getattr(model_class, 'properties_name', model_name)}.yaml"
    if model_file.is_file():
        files.append(model_file)
    dataset_file = PROPERTIES_DIR / "dataset" / f"{dataset_name}.yaml"
    if dataset_file.is_file():
        files.append(dataset_file)
    return [str(f) for f in files]


def model_overrides(model_name, dataset_name, user_files):
    """The ``model_overrides: {<Model>: {...}}`` section of the dataset's yaml for this model,
    minus keys that the user's own config files set (those must win over it)."""
    dataset_file = PROPERTIES_DIR / "dataset" / f"{dataset_name}.yaml"
    if not dataset_file.is_file():
        return {}
    section = (yaml.safe_load(dataset_file.read_text()) or {}).get("model_overrides", {}).get(model_name, {})
    user_keys = set()
    for path in user_files:
        user_keys.update((yaml.safe_load(Path(path).read_text()) or {}).keys())
    return {key: value for key, value in section.items() if key not in user_keys}


def check_dataset_exists(config):
    """Fail early, naming the folder searched and the command that prepares the dataset."""
    name = config["dataset"]
    inter_file = Path(config["data_path"]) / f"{name}.inter"
    if inter_file.is_file():
        return
    raise FileNotFoundError(
        f"Dataset '{name}' not found: looked for {inter_file} (data_path={config['data_path']!r}). "
        f"Prepare it first, e.g.\n  python -m unger_recbole.data.prepare {name} "
        f"--source ../shared/data/{name} --out {Path(config['data_path']).parent}/\n"
        f"or pass --data_path=<folder containing {name}/{name}.inter>. "
        f"Bundled datasets that need no preparation: {', '.join(BUNDLED_DATASETS)}."
    )


def data_file_digests(config):
    """Path and sha256 of the dataset's atomic files, so a run can be tied to its exact data."""
    from unger_recbole.artifacts import content_key
    digests = {}
    for suffix in ("inter", "item"):
        path = Path(config["data_path"]) / f"{config['dataset']}.{suffix}"
        if path.is_file():
            digests[suffix] = {"path": str(path.resolve()), "sha256": content_key(path)}
    return digests


def new_run_dir(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{config['model']}-{config['dataset']}-{stamp}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(config["checkpoint_dir"]) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_id, run_dir


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json_atomic(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    os.replace(tmp, path)


@torch.no_grad()
def prediction_records(trainer, test_data, k):
    """One dict per test user of this process: original user token, ground truth, top-k item
    tokens and scores.

    Scores come from ``trainer._full_sort_batch_eval``, the very function RecBole's evaluation
    uses, so metrics recomputed from them equal RecBole's. Items scored ``-inf`` (e.g. not
    generated by UNGER's beam search) are left out of the list.
    """
    dataset = test_data._dataset
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    trainer.model.eval()
    trainer.tot_item_num = dataset.item_num
    if trainer.item_tensor is None:
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    records = []
    for batched_data in test_data:
        interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batched_data)
        top_scores, top_items = torch.topk(scores, k=min(k, scores.shape[1]), dim=-1)
        users = interaction[uid_field].cpu().numpy()
        truth = {}
        for row, item in zip(positive_u.tolist(), positive_i.tolist()):
            truth.setdefault(row, []).append(item)
        for row in range(len(users)):
            keep = torch.isfinite(top_scores[row])
            records.append({
                "user": dataset.id2token(uid_field, users[row]).item(),
                "ground_truth": [str(t) for t in dataset.id2token(iid_field, truth.get(row, []))],
                "items": [str(t) for t in dataset.id2token(iid_field, top_items[row][keep].cpu().numpy())],
                "scores": [round(float(s), 6) for s in top_scores[row][keep].cpu()],
            })
    return records


def write_predictions(trainer, test_data, path, k):
    """``predictions.jsonl``: :func:`prediction_records` of every test user, once each, in the
    evaluation order (in a distributed run gathered from all ranks; rank 0 writes)."""
    config = trainer.config
    shards = distributed.all_gather_objects(config, prediction_records(trainer, test_data, k))
    if not distributed.is_main_process(config):
        return
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    with open(tmp, "w") as out:
        for record in distributed.merge_shards(shards, key=lambda record: record["user"]):
            out.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def run(model, dataset, config_file_list=(), config_dict=None, save_predictions=False):
    """Train ``model`` on ``dataset``, select on validation, test, and write the results JSON.

    Returns a dict with ``best_valid_result``, ``test_result``, ``results_file``, ``run_dir`` and
    ``stage_seconds`` (``None`` on the ranks other than 0 of a torchrun job). With ``nproc > 1``
    it spawns that many processes and trains data-parallel; under torchrun it joins the job.
    """
    model_class = resolve_model(model)
    user_files = [str(f) for f in config_file_list]
    files = property_files(model, dataset, model_class) + user_files
    overrides = {**model_overrides(model, dataset, user_files), **(config_dict or {})}
    config = build_config(model_class, dataset, files, overrides)
    plan = distributed.launch_plan(int(config["nproc"]), int(config["world_size"]))
    if plan == "single":
        return run_process(model_class, config, save_predictions)
    if plan == "torchrun":
        env = os.environ
        join_process_group(config, int(env["LOCAL_RANK"]), int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
                           int(env["RANK"]), int(env["WORLD_SIZE"]), "env://")
        try:
            return run_process(model_class, config, save_predictions)
        finally:
            dist.destroy_process_group()
    nproc = int(config["nproc"])
    world_size = nproc if int(config["world_size"]) == -1 else int(config["world_size"])
    if config["port"] is None and world_size > nproc:
        raise ValueError("a run over several machines needs a fixed rendezvous: pass --ip=<rank-0 host> --port=<port>")
    init_method = f"tcp://{config['ip']}:{config['port'] or distributed.free_port()}"
    return distributed.spawn(run_spawned_process, nproc, (model, dataset, files, overrides, save_predictions,
                                                          world_size, int(config["offset"]), init_method))


def run_spawned_process(local_rank, queue, model, dataset, files, overrides, save_predictions, world_size, offset,
                        init_method):
    """Entry point of each process started by ``run(..., nproc > 1)``; rank 0 returns the results."""
    model_class = resolve_model(model)
    config = build_config(model_class, dataset, files, overrides)
    rank = offset + local_rank
    join_process_group(config, local_rank, int(config["nproc"]), rank, world_size, init_method)
    try:
        results = run_process(model_class, config, save_predictions)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        queue.put(results)


def run_process(model_class, config, save_predictions):
    """One process's share of :func:`run` (the whole run when not distributed)."""
    start = time.time()
    dataset = config["dataset"]
    if dataset not in BUNDLED_DATASETS:
        check_dataset_exists(config)
    # Distinct random streams per rank (dropout, sampled negatives), as RecBole does; DDP copies
    # rank 0's initial weights to the others. config["seed"] itself stays: caches are keyed by it.
    seed = config["seed"] + distributed.global_rank(config)
    init_seed(seed, config["reproducibility"])
    run_id = distributed.broadcast_object(config, new_run_dir(config)[0] if distributed.is_main_process(config)
                                          else None)
    run_dir = Path(config["checkpoint_dir"]) / run_id
    handlers = init_run_logger(config)
    logger = getLogger()
    stage_seconds = {}
    try:
        logger.info(config)
        tic = time.time()
        recbole_dataset = create_dataset(config)
        logger.info(recbole_dataset)
        train_data, valid_data, test_data = data_preparation(config, recbole_dataset)
        stage_seconds["data"] = time.time() - tic

        if hasattr(model_class, "build_artifacts"):
            # Models with preparatory stages (UNGER: stage I + quantization) run them here, on
            # the same split, and hand their outputs to the model through config keys.
            stage_seconds.update(model_class.build_artifacts(config, train_data, valid_data, run_dir))
            if config.final_config_dict.get("stop_after") == "codes":
                logger.info(f"stop_after=codes: item codes and report are in {run_dir}")
                if not distributed.is_main_process(config):
                    return None
                return {"model": config["model"], "dataset": config["dataset"], "run_dir": str(run_dir),
                        "stage_seconds": stage_seconds}

        init_seed(seed, config["reproducibility"])
        recommender = model_class(config, train_data._dataset).to(config["device"])
        logger.info(recommender)
        trainer_class = (getattr(model_class, "trainer_class", None)
                         or trainer_class_for(config["MODEL_TYPE"], config["model"]))
        trainer = trainer_class(config, recommender, checkpoint_file=run_dir / "model.pth")
        if distributed.is_main_process(config):
            header = {"model": config["model"], "dataset": config["dataset"], "run_id": run_id,
                      "config": jsonable(config.final_config_dict)}
            trainer.on_curve_update = lambda curve: write_json_atomic(run_dir / CURVE_FILE,
                                                                      {**header, "learning_curve": curve})
        tic = time.time()
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=True, show_progress=config["show_progress"])
        stage_seconds["train"] = time.time() - tic
        tic = time.time()
        if hasattr(recommender, "reset_generation_stats"):
            recommender.reset_generation_stats()
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
        stage_seconds["test"] = time.time() - tic
        generation = None
        if hasattr(recommender, "generation_report"):
            recommender.generation_stats = distributed.sum_over_ranks(config, recommender.generation_stats)
            generation = recommender.generation_report()
        if generation:
            logger.info(f"generation on test: {generation}")
        logger.info(f"best valid : {dict(best_valid_result)}")
        logger.info(f"test result: {dict(test_result)}")

        predictions_file = None
        if save_predictions:
            predictions_file = run_dir / "predictions.jsonl"
            write_predictions(trainer, test_data, predictions_file, max(config["topk"]))
            logger.info(f"predictions: {predictions_file}")
        if not distributed.is_main_process(config):
            return None

        results = {
            "model": config["model"],
            "dataset": config["dataset"],
            "run_id": run_id,
            "run_dir": str(run_dir),
            "checkpoint": str(trainer.saved_model_file),
            "predictions_file": str(predictions_file) if predictions_file else None,
            "best_valid_score": float(best_valid_score),
            "valid_metric": config["valid_metric"],
            "best_valid_result": {k: float(v) for k, v in best_valid_result.items()},
            "test_result": {k: float(v) for k, v in test_result.items()},
            "epochs_trained": len(trainer.train_loss_dict),
            "learning_curve": trainer.learning_curve,
            "test_users": trainer.evaluated_users,
            "world_size": dist.get_world_size() if distributed.is_distributed(config) else 1,
            "generation": generation,
            "stage_seconds": {k: round(v, 2) for k, v in stage_seconds.items()},
            "wall_seconds": round(time.time() - start, 2),
            "device": str(config["device"]),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "config": jsonable(config.final_config_dict),
        }
        results_file = Path(config["results_dir"]) / f"{run_id}.json"
        write_json_atomic(results_file, results)
        # The run folder's manifest, written last: its presence marks a complete run.
        write_json_atomic(run_dir / RUN_MANIFEST, {**results, "results_file": str(results_file),
                                                  "data_files": data_file_digests(config)})
        logger.info(f"results: {results_file}")
        results["results_file"] = str(results_file)
        return results
    finally:
        close_run_logger(handlers)
