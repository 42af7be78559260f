"""Several processes (torchrun): each process trains on its own slice of every global batch.

    torchrun --nproc_per_node 2 partN/train.py    # 2 processes; a plain `python` run is rank 0 of 1

This file is the same in every part from Part 4 on (tools, not a chapter): `diff` shows it unchanged.
"""
import os

import torch
import torch.distributed as dist


def setup_distributed(device):
    """Returns (rank, world_size, device). torchrun sets RANK/WORLD_SIZE; a plain `python` run is rank 0 of 1."""
    if "RANK" not in os.environ:
        return 0, 1, device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def wrap_model(model, device, world_size):
    """DDP averages the gradients of all processes during backward; one process needs no wrapper."""
    if world_size == 1:
        return model
    device_ids = [device] if device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def mean_over_processes(value, world_size, device):
    if world_size == 1:
        return value
    t = torch.tensor(value, device=device)
    dist.all_reduce(t)
    return t.item() / world_size


def finish_distributed():
    if dist.is_initialized():  # also under torchrun with one process, which setup_distributed initialised
        dist.destroy_process_group()
