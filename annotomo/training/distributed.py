"""Training in several processes with PyTorch DistributedDataParallel: one per GPU (NCCL), or CPU
processes (gloo).

Each process draws its own patches (its own random stream) and DDP averages the gradients, so N
processes train on N batches per step; every decision that ends the loop (time budget, Ctrl-C, Stop) is
agreed on by all of them at every step, so none waits for a partner that has left. Process 0 alone
scores the validation slices, keeps the best model and writes the model file, log and checkpoint: the
same files as single-process training, which resumes the same way.

Started by `annotomo train --gpus N` / `--processes N` (torch.multiprocessing), or by torchrun (which
sets RANK, WORLD_SIZE and LOCAL_RANK; annotomo then joins the process group it describes).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import AnnotomoError


@dataclass
class Context:
    """This process's place in a training run of several processes."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Process 0: it validates, keeps the best model and writes the files."""
        return self.rank == 0

    def wrap(self, model):
        """The model as DDP trains it (gradients averaged over the processes)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sync(self, fraction: float, stop: bool) -> tuple[float, bool]:
        """Process 0's fraction of the budget done, and whether any process stops: the same on all."""
        value = torch.tensor(
            [fraction if self.is_main else 0.0, 1.0 if stop else 0.0], dtype=torch.float64, device=self.device
        )
        dist.all_reduce(value)  # one collective per step: the sum carries process 0's clock and any stop
        return float(value[0]), bool(value[1] > 0)

    def barrier(self):
        """Wait for every process (e.g. while process 0 validates)."""
        dist.barrier()


def context(device: torch.device) -> Context | None:
    """The distributed context when this process is one of several (spawned, or started by torchrun)."""
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)  # torchrun's environment: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return Context(rank, world, local_rank, device)


def free_port() -> int:
    """A free TCP port on this machine for the processes' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, function, *args, use_gpus: bool | None = None):
    """Run `function(*args)` in `processes` processes joined in one process group (this machine).

    On GPUs (use_gpus, default: when CUDA is available) each process takes one GPU and NCCL; else the
    processes share the CPU cores and use gloo.

    Raises:
        AnnotomoError: more GPU processes than GPUs, or a process failed.
    """
    import torch.multiprocessing as mp

    gpus = torch.cuda.is_available() if use_gpus is None else use_gpus
    if gpus and processes > torch.cuda.device_count():
        raise AnnotomoError(f"--gpus {processes}: only {torch.cuda.device_count()} GPU(s) visible to torch")
    port = free_port()
    try:
        mp.spawn(_run, args=(processes, port, gpus, function, args), nprocs=processes, join=True)
    except mp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "a training process failed"
        raise AnnotomoError(f"distributed training failed: {last}") from None


def _run(rank, world, port, gpus, function, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    if not gpus:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if gpus else "gloo", rank=rank, world_size=world)
    try:
        function(*args)
        dist.barrier()  # all done before any process tears the group down
    finally:
        dist.destroy_process_group()
