"""Every fix needed to run RecBole 1.2.1 on today's numpy, pandas and torch, and nothing else.

Import this module before anything from ``recbole`` (``unger_recbole/__init__.py`` does). Each fix
is named after the failure it prevents and has a test in ``tests/test_compat.py`` that fails
without it.

* numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``; ``recbole.config.Config``
  touches them in ``compatibility_settings`` (``AttributeError``). That method also restores
  ``np.float`` & co., which RecBole's metrics use (NDCG), but only when a ``Config`` is built: a
  process that evaluates with a config unpickled from a checkpoint needs it run here.
* pandas 3 breaks RecBole's dataset code (``token_seq`` fields crash in ``Dataset._remap``, empty
  ``token_seq`` cells crash, missing floats stay NaN). We require ``pandas<3`` and stop early
  with an actionable message instead of letting a run fail half-way.
* torch >= 2.6 loads checkpoints with ``weights_only=True``, but RecBole pickles its ``Config``
  into every checkpoint: :class:`CheckpointTrainer` loads our own checkpoints with
  ``weights_only=False`` (never a process-wide switch) and names them uniquely per run
  (RecBole names them to the second, so two runs in one second overwrite each other).
* ``Config`` parses ``sys.argv``: :func:`isolated_argv` hides the caller's argv (pytest flags,
  our own CLI flags) while a ``Config`` is built; values reach it only through ``config_dict``.
* ``init_logger`` wraps ``sys.stdout``/``sys.stderr`` through colorama and silently does nothing
  when the root logger already has handlers: :func:`init_run_logger` fixes both.
* ``recbole.quick_start`` imports ray (no wheel for Python >= 3.12): this package never imports it.
* Distributed runs (:mod:`unger_recbole.distributed`): ``Config`` joins the process group only
  with NCCL on CUDA devices, so :func:`join_process_group` does it with the backend that suits
  the device (gloo on CPU); ``AbstractTrainer`` builds DDP with ``device_ids=[local_rank]``, which
  DDP rejects for CPU modules; its evaluation averages per-rank metrics weighted by
  ``len(batched_data)`` (4 per full-sort batch, whatever the number of users) and counts the
  users ``DistributedSampler`` repeats to even out the shards. :class:`CheckpointTrainerMixin`
  gathers every user's ranking row exactly once and evaluates them together instead.
* RecBole's mixed precision (``enable_amp``) autocasts to the device's default dtype (float16 on
  CUDA, which needs loss scaling): the ``amp_dtype`` key picks the dtype (bfloat16 by default).
"""

import contextlib
import logging
import sys

import numpy as np

for _removed, _replacement in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _removed):
        setattr(np, _removed, _replacement)

import pandas as pd  # noqa: E402  (after the numpy shim on purpose)

SUPPORTED_PANDAS = "pandas>=2.2,<3"


def check_pandas_version(version=pd.__version__):
    """Raise if ``version`` of pandas is one RecBole 1.2.1's dataset code silently breaks on."""
    major = int(version.split(".")[0])
    if major >= 3:
        raise ImportError(
            f"pandas {version} is installed, but RecBole 1.2.1's dataset code breaks on pandas 3 "
            f"(token_seq fields crash, missing floats stay NaN). Install a supported version: "
            f"pip install '{SUPPORTED_PANDAS}'"
        )


check_pandas_version()

try:
    import recbole  # noqa: F401,E402
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "RecBole is not installed. Run `bash install.sh` from the repository root "
        "(it installs recbole==1.2.1 without its unused ray/thop/plotly pins)."
    ) from error

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.evaluator import Collector  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_logger  # noqa: E402

from unger_recbole.distributed import barrier, default_backend, gather_rows  # noqa: E402

Config.compatibility_settings(None)  # it only sets numpy aliases; `self` is unused


@contextlib.contextmanager
def isolated_argv():
    """Hide command-line arguments from RecBole's ``Config`` while it is built."""
    saved = sys.argv
    sys.argv = saved[:1] if saved else ["unger_recbole"]
    try:
        yield
    finally:
        sys.argv = saved


def build_config(model, dataset, config_file_list=None, config_dict=None):
    """``recbole.config.Config`` built only from files and ``config_dict`` (never from sys.argv)."""
    with isolated_argv():
        return Config(model=model, dataset=dataset, config_file_list=config_file_list,
                      config_dict=config_dict)


def join_process_group(config, local_rank, local_size, rank, world_size, init_method):
    """Join the process group and set the config keys RecBole's distributed code reads, as
    ``Config._init_device`` would for ``local_rank`` but with gloo on CPU (``dist_backend`` key).
    ``local_size`` is the number of processes on this machine (one GPU each)."""
    use_cuda = bool(config["use_gpu"]) and torch.cuda.is_available()
    if use_cuda and len(str(config["gpu_id"]).split(",")) < local_size:
        raise ValueError(f"{local_size} processes on GPUs need as many GPUs in gpu_id, got "
                         f"gpu_id={config['gpu_id']!r}: pass e.g. --gpu_id=0,1")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=config["dist_backend"] or default_backend(device),
                            init_method=init_method, rank=rank, world_size=world_size)
    config["single_spec"] = False
    config["local_rank"] = local_rank
    config["world_size"] = world_size
    config["device"] = device
    if rank != 0:  # as RecBole does: only rank 0 logs
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False


def init_run_logger(config):
    """RecBole's ``init_logger`` that always attaches its handlers and leaves sys.stdout alone."""
    root = logging.getLogger()
    foreign_handlers = list(root.handlers)
    for handler in foreign_handlers:
        root.removeHandler(handler)
    stdout, stderr = sys.stdout, sys.stderr
    try:
        init_logger(config)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    recbole_handlers = [h for h in root.handlers if h not in foreign_handlers]
    for handler in foreign_handlers:
        root.addHandler(handler)
    return recbole_handlers


def close_run_logger(handlers):
    """Detach (and close) the handlers :func:`init_run_logger` attached, so runs do not pile up."""
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()


def load_checkpoint(path, device):
    """Load one of this project's own checkpoints (they pickle a RecBole Config)."""
    return torch.load(path, map_location=device, weights_only=False)


AMP_DTYPES = ("bfloat16", "float16")


def amp_dtype(config):
    """The torch dtype named by ``amp_dtype`` (bfloat16 unless set)."""
    name = config["amp_dtype"] or "bfloat16"
    if name not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}, got {name!r}")
    return getattr(torch, name)


class UserTrackingCollector(Collector):
    """RecBole's Collector that also remembers the user of every collected ranking row."""

    def __init__(self, config):
        super().__init__(config)
        self.uid_field = config["USER_ID_FIELD"]
        self.batch_users = []
        self.last_users = torch.empty(0, dtype=torch.long)
        self.last_struct = None

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        users = interaction[self.uid_field].cpu()
        if len(users) != len(scores_tensor):
            # Sampled ranking (e.g. uni100): one interaction per candidate, grouped by user.
            users = torch.unique_consecutive(users)
        if len(users) != len(scores_tensor):
            raise ValueError(f"cannot tell which user each of the {len(scores_tensor)} ranking rows belongs to "
                             f"({len(interaction)} interactions in the batch)")
        self.batch_users.append(users)

    def get_data_struct(self):
        self.last_struct = super().get_data_struct()
        self.last_users = torch.cat(self.batch_users) if self.batch_users else torch.empty(0, dtype=torch.long)
        self.batch_users = []
        return self.last_struct


# DataStruct entries with one row per evaluated user (recbole.evaluator.collector).
PER_USER_ROWS = ("rec.topk", "rec.items", "rec.meanrank", "rec.score")


class CheckpointTrainerMixin:
    """Checkpoints that torch >= 2.6 can load, at a path chosen per run, and data-parallel runs
    on any device with an exact evaluation (mix into any RecBole trainer)."""

    def __init__(self, config, model, checkpoint_file=None):
        distributed = not config["single_spec"]
        config["single_spec"] = True  # keeps RecBole from wrapping DDP with CUDA-only device_ids
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = not distributed
        if distributed:
            device = torch.device(config["device"])
            if device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if config["enable_amp"]:
            # RecBole's autocast takes the device's default dtype (float16 on CUDA); ours is a key.
            torch.set_autocast_dtype(torch.device(config["device"]).type, amp_dtype(config))
        self.eval_collector = UserTrackingCollector(config)
        self.evaluated_users = 0
        if checkpoint_file is not None:
            self.saved_model_file = str(checkpoint_file)

    def load_best_checkpoint(self, model_file=None):
        """Load the checkpoint rank 0 saved (every rank waits until it is written)."""
        barrier(self.config)
        checkpoint_file = model_file or self.saved_model_file
        checkpoint = load_checkpoint(checkpoint_file, self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            self.load_best_checkpoint(model_file)
        result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        if self.config["single_spec"] and eval_data:
            self.evaluated_users = len(self.eval_collector.last_users)
        return result

    def _map_reduce(self, result, num_sample):
        """Evaluate the ranking rows of all ranks together, each user once (replaces RecBole's
        weighted average of per-rank metrics)."""
        struct = self.eval_collector.last_struct
        if "rec.topk" not in struct and "rec.items" not in struct:
            raise NotImplementedError("distributed evaluation supports ranking metrics (full or sampled "
                                      "ranking), not value metrics such as AUC/LogLoss: run with --nproc=1.")
        rows = {key: struct[key] for key in PER_USER_ROWS if key in struct}
        users, merged = gather_rows(self.config, self.eval_collector.last_users, rows)
        for key, value in merged.items():
            struct.set(key, value)
        self.evaluated_users = len(users)
        return self.evaluator.evaluate(struct)


class CheckpointTrainer(CheckpointTrainerMixin, Trainer):
    """RecBole's plain Trainer with :class:`CheckpointTrainerMixin`."""
