"""Training on several processes: torch's DistributedDataParallel under torchrun's environment.

A worker started by `torchrun` (or by any launcher that sets its variables: Slurm's `srun`, Kubeflow's
PyTorchJob, Ray) reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. With a world of more than
one process, `join()` starts the process group (gloo on the CPU, NCCL on CUDA) and `wrap()` puts the model in
DDP. The batch size stays the global batch: each rank takes its share of every shuffled batch (`core.shard`)
and weighs its loss by that share, so N processes train the model that one process trains.
What depends on time (when to sync, stop, checkpoint) is decided by rank 0 and shared (see `core.train`).
"""

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from engine.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def from_env() -> World:
    """The world torchrun's variables describe; one process when they are absent."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local_rank = int(env.get("LOCAL_RANK", rank if size > 1 else 0))
    local_size = int(env.get("LOCAL_WORLD_SIZE", size))
    return World(rank, size, local_rank, local_size)


def join(world: World, device: str) -> None:
    """Start the process group: NCCL when the run trains on CUDA (each process on its own GPU,
    LOCAL_RANK), gloo on the CPU. Nothing for a world of one."""
    if world.size == 1 or dist.is_initialized():
        return
    cuda = uses_cuda(device)
    if cuda:
        torch.cuda.set_device(world.local_rank)
    # torchrun's store, its keys under this attempt's prefix: after an elastic restart, gloo would
    # otherwise read the failed attempt's addresses and wait for peers that are gone
    store, rank, size = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"layerlab/attempt{attempt}/", store)
    dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=size)


def leave(failed: bool = False) -> None:
    """Leave the process group: all ranks together after a barrier (gloo aborts a process whose peer
    tears its connections down first), at once after a failure."""
    if dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def wrap(net: torch.nn.Module, device: torch.device, unused: bool = False) -> torch.nn.Module:
    """`net` in DistributedDataParallel (its parameters averaged after each backward)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=unused)


def sync_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norm over the whole global batch on CUDA (SyncBatchNorm), in place in the model's layers."""
    for name, layer in list(model.layers.items()):
        model.layers[name] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(layer)
    model._seq = [model.layers[nid] for nid, _ in model.plan]
    return model


def uses_cuda(device: str) -> bool:
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def check_world(
    processes: int, batch_size: int, device: str, per_machine: int | None = None
) -> None:
    """Refuse, before anything starts, a world these settings cannot train: a batch smaller than the
    number of processes (each takes a share of every batch), or more CUDA processes on a machine
    than it has GPUs."""
    if processes < 1:
        raise ConfigError("the number of processes must be 1 or more.")
    if batch_size < processes:
        raise ConfigError(
            f"the batch size ({batch_size}) is smaller than the number of processes ({processes}): "
            f"each process takes a share of every batch. Raise the batch size to {processes} or "
            "more, or train on fewer processes."
        )
    here = processes if per_machine is None else per_machine  # 0: other machines, not checked here
    if here > 1 and uses_cuda(device) and here > torch.cuda.device_count():
        raise ConfigError(
            f"{here} processes on CUDA need {here} GPUs on each machine, and this one has "
            f"{torch.cuda.device_count()}. Choose at most {torch.cuda.device_count()} processes, or "
            "the CPU (Device) to try several processes out."
        )


def torchrun(processes: int, max_restarts: int = 0) -> list[str]:
    """The torchrun command (as `python -m torch.distributed.run`) for `processes` on this machine."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}", f"--max-restarts={max_restarts}",
        "--monitor-interval=0.5",
    ]  # fmt: skip
