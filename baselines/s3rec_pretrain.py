"""S3-Rec's pre-training stage, which ``run_unger.py`` cannot run (see baselines/README.md).

    python baselines/s3rec_pretrain.py --dataset=amazon-beauty --config_files="baselines/S3Rec.yaml" [--key=value ...]

Same arguments as run_unger.py (without --model: always S3Rec; ``train_stage`` is forced to
``pretrain``). It builds the config, dataset and split exactly like ``unger_recbole.quick_start.run``
(same property files and overrides), pre-trains on the training split for ``pretrain_epochs`` with
RecBole's own S3RecTrainer.pretrain, and writes, in a new run folder under ``checkpoint_dir``:

* ``pretrain.pth``: ``{"state_dict": ...}`` on CPU, nothing else, so that RecBole's S3Rec can load
  it in the fine-tuning stage with torch >= 2.6 (``torch.load`` there uses ``weights_only=True``,
  which refuses the pickled Config that RecBole's own pre-training checkpoints contain);
* ``pretrain.json``: model, dataset, checkpoint, epochs, last loss, wall seconds, date, device and the
  resolved config.

It prints ``pretrained: <checkpoint>`` and ``manifest: <pretrain.json>``. Fine-tune with
``python run_unger.py --model=S3Rec ... --pre_model_path=<checkpoint>``.
"""

import argparse
import datetime
import sys
import time
from logging import getLogger
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MANIFEST = "pretrain.json"
CHECKPOINT = "pretrain.pth"


def pretrain(dataset, config_file_list=(), config_dict=None):
    """Pre-train S3Rec on ``dataset``'s training split; returns the manifest dict."""
    from unger_recbole import quick_start as qs
    from unger_recbole.compat import build_config, close_run_logger, init_run_logger
    from unger_recbole.trainer import trainer_class_for

    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    start = time.time()
    model_class = qs.resolve_model("S3Rec")
    user_files = [str(f) for f in config_file_list]
    overrides = {**(config_dict or {}), "train_stage": "pretrain"}
    config = build_config(model_class, dataset, qs.property_files("S3Rec", dataset, model_class) + user_files,
                          {**qs.model_overrides("S3Rec", dataset, user_files), **overrides})
    if dataset not in qs.BUNDLED_DATASETS:
        qs.check_dataset_exists(config)
    init_seed(config["seed"], config["reproducibility"])
    run_id, run_dir = qs.new_run_dir(config)
    handlers = init_run_logger(config)
    logger = getLogger()
    try:
        logger.info(config)
        recbole_dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, recbole_dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = model_class(config, train_data._dataset).to(config["device"])
        trainer = trainer_class_for(config["MODEL_TYPE"], "S3Rec")(config, model)
        # RecBole's intermediate checkpoints (every save_step epochs) go to this run's folder.
        trainer.checkpoint_dir = str(run_dir)
        tic = time.time()
        trainer.pretrain(train_data, verbose=True, show_progress=config["show_progress"])
        pretrain_seconds = time.time() - tic
        checkpoint = run_dir / CHECKPOINT
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, checkpoint)
        losses = [float(v) for v in trainer.train_loss_dict.values()]
        manifest = {
            "model": "S3Rec",
            "stage": "pretrain",
            "dataset": config["dataset"],
            "run_id": run_id,
            "run_dir": str(run_dir),
            "checkpoint": str(checkpoint),
            "epochs_trained": len(losses),
            "last_loss": losses[-1] if losses else None,
            "stage_seconds": {"pretrain": round(pretrain_seconds, 2)},
            "wall_seconds": round(time.time() - start, 2),
            "device": str(config["device"]),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "config": qs.jsonable(config.final_config_dict),
        }
        qs.write_json_atomic(run_dir / MANIFEST, manifest)
        logger.info(f"pretrained: {checkpoint}")
        return manifest
    finally:
        close_run_logger(handlers)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default="", help="space-separated extra yaml files, applied last")
    args, extra = parser.parse_known_args(argv)
    from run_unger import parse_overrides
    overrides = parse_overrides(extra)
    if overrides.pop("model", "S3Rec") != "S3Rec":
        raise SystemExit("s3rec_pretrain.py: only S3Rec has this pre-training stage.")
    try:
        manifest = pretrain(args.dataset, args.config_files.split(), overrides)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"s3rec_pretrain.py: {error}") from None
    print(f"pretrained: {manifest['checkpoint']}")
    print(f"manifest: {Path(manifest['run_dir']) / MANIFEST}")
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
