"""Multi-process training with torch.distributed: launching, rank roles and exact gathering.

RecBole 1.2.1 already runs data-parallel when ``config['single_spec']`` is False: its dataloaders
shard with a ``DistributedSampler`` and its Trainer wraps the model in DDP. What it lacks (a CPU
backend, a correct evaluation gather) is fixed in :mod:`unger_recbole.compat`; this module holds
the torch.distributed side that does not depend on RecBole:

* how a run is launched: ``python run_unger.py --nproc=N`` spawns N local processes (RecBole's own
  argument), ``torchrun --nproc_per_node=N run_unger.py ...`` starts them from outside
  (:func:`launch_plan`, :func:`spawn`);
* which process writes shared files (:func:`is_main_process`, :func:`main_process_first`);
* :func:`gather_rows`, which puts every evaluated user's row back together exactly once.

Every rank must see the same file system (``artifact_dir``, ``checkpoint_dir``): rank 0 writes
the caches, checkpoints and results, the others read them.
"""

import contextlib
import os
import socket

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed(config):
    return not config["single_spec"]


def global_rank(config):
    return dist.get_rank() if is_distributed(config) else 0


def is_main_process(config):
    return global_rank(config) == 0


def barrier(config):
    if is_distributed(config):
        dist.barrier()


@contextlib.contextmanager
def main_process_first(config):
    """Rank 0 runs the block first (filling the caches); the other ranks run it afterwards and
    find the caches filled. A failing rank 0 never releases the others: the launcher stops them."""
    if not is_main_process(config):
        barrier(config)
    yield
    if is_main_process(config):
        barrier(config)


def broadcast_object(config, value):
    """Rank 0's ``value`` on every rank."""
    if not is_distributed(config):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(config, value):
    """``[value of rank 0, value of rank 1, ...]`` on every rank."""
    if not is_distributed(config):
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def sum_over_ranks(config, counts):
    """Element-wise sum of a ``{name: int}`` dict over all ranks."""
    totals = {}
    for shard in all_gather_objects(config, dict(counts)):
        for name, value in shard.items():
            totals[name] = totals.get(name, 0) + value
    return totals


def merge_shards(shards, key):
    """Undo ``DistributedSampler(shuffle=False)`` sharding: rank r holds items r, r+W, r+2W, ... of
    the padded sequence, so a round robin over the ranks restores the original order. The sampler
    pads the shards to equal length by repeating the first items; only the first occurrence of
    each ``key`` is kept."""
    merged, seen = [], set()
    for position in range(max((len(shard) for shard in shards), default=0)):
        for shard in shards:
            if position < len(shard):
                item = shard[position]
                item_key = key(item)
                if item_key not in seen:
                    seen.add(item_key)
                    merged.append(item)
    return merged


def gather_rows(config, users, rows):
    """Every rank's evaluated rows, each user once, in the unsharded order.

    ``users`` is the 1-D tensor of user ids of this rank's rows; ``rows`` maps names to tensors
    whose first dimension is aligned with ``users``. Returns ``(users, rows)`` merged over ranks.
    """
    shards = all_gather_objects(config, (users.cpu(), {name: value.cpu() for name, value in rows.items()}))
    offsets, total = [], 0
    for shard_users, _ in shards:
        offsets.append(total)
        total += len(shard_users)
    entries = [[(offsets[rank] + i, int(user)) for i, user in enumerate(shard_users.tolist())]
               for rank, (shard_users, _) in enumerate(shards)]
    order = torch.tensor([index for index, _ in merge_shards(entries, key=lambda entry: entry[1])],
                         dtype=torch.long)
    merged_users = torch.cat([shard_users for shard_users, _ in shards])[order]
    merged_rows = {name: torch.cat([shard_rows[name] for _, shard_rows in shards])[order] for name in rows}
    return merged_users, merged_rows


def launch_plan(nproc, world_size, environ=os.environ):
    """``'torchrun'``, ``'spawn'`` or ``'single'``, from RecBole's ``nproc``/``world_size`` keys and
    the variables torchrun sets. Contradictions are errors, not guesses."""
    torchrun = "WORLD_SIZE" in environ and "RANK" in environ
    if torchrun:
        if nproc not in (1, int(environ["WORLD_SIZE"])):
            raise ValueError(f"started by torchrun with WORLD_SIZE={environ['WORLD_SIZE']} but nproc={nproc}: "
                             f"drop --nproc (torchrun's --nproc_per_node decides) or make them agree.")
        return "torchrun"
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if world_size not in (-1, nproc) and world_size < nproc:
        raise ValueError(f"world_size={world_size} is smaller than nproc={nproc} processes on this machine.")
    return "spawn" if nproc > 1 or world_size > 1 else "single"


def free_port():
    """A TCP port free on this machine now (for the rendezvous of spawned processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def spawn(entry, nproc, args):
    """Run ``entry(local_rank, queue, *args)`` in ``nproc`` fresh processes; return what rank 0 put
    in the queue. Any failing process stops the others and raises here."""
    import torch.multiprocessing as mp
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(entry, args=(queue, *args), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def default_backend(device):
    return "nccl" if torch.device(device).type == "cuda" else "gloo"
