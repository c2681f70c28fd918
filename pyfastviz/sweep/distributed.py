"""torch.distributed for sweeps: one process per device under torchrun, none otherwise."""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(days=7)  # ranks wait at the final barrier for the slowest one


@dataclass(frozen=True)
class Group:
    """This process's rank among `world` processes and the device it computes on."""

    rank: int
    world: int
    device: torch.device

    def broadcast(self, value):
        """Rank 0's value on every rank (picklable objects)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def local_device(device: str | torch.device | None = None) -> torch.device:
    """device with its index settled, as the model reports it: None is cuda when CUDA is available,
    else the CPU; cuda without an index is this process's GPU, cuda:LOCAL_RANK (one per torchrun
    rank, modulo the GPUs there are); cpu:N is the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return device


@contextmanager
def process_group(device: torch.device):
    """Yields the Group. Under torchrun (WORLD_SIZE > 1) joins the process group from its
    environment variables, NCCL for a CUDA device, else gloo, and leaves it at the end;
    an already initialised group is used as is."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        created = True
    try:
        if dist.is_initialized():
            yield Group(dist.get_rank(), dist.get_world_size(), device)
        else:
            yield Group(0, 1, device)
    finally:
        if created:
            dist.destroy_process_group()
