"""torch.distributed helpers: set-up from torchrun's environment, rank/world queries, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from fsslab.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def select_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """ "auto": CUDA (this rank's GPU) when available, else CPU; "cuda" fails clearly without a GPU."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible (torch.cuda.is_available() is False: no "
                          "GPU, no driver, or a CPU-only torch build); use train.device=auto or train.device=cpu")
    if preference != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup_distributed(device_preference: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    NCCL on GPUs, gloo on CPU. Without those env vars (a plain ``python``/``fsslab`` call) this is a
    single-process run and nothing is initialised. Multi-node runs use torchrun's own rendezvous.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_preference, local_rank)
    if world_size > 1 and not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=timedelta(minutes=30)
        )
    if is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown_distributed() -> None:
    """Destroy the process group if this process created one."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def _comm_device(tensor: torch.Tensor) -> torch.device:
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device if tensor.device.type == "cpu" else torch.device("cpu")


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (returns a new tensor; identity outside distributed runs)."""
    if not is_initialized() or get_world_size() == 1:
        return tensor.clone()
    buf = tensor.detach().to(_comm_device(tensor)).clone()
    dist.all_reduce(buf)
    return (buf / get_world_size()).to(tensor.device)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one flat buffer (the ``grad_sync=manual`` path)."""
    if not is_initialized() or get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    device = _comm_device(flat)
    flat = flat.to(device)
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (DDP does this itself on wrap)."""
    if not is_initialized() or get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            buf = tensor.detach().to(_comm_device(tensor))
            dist.broadcast(buf, src)
            tensor.copy_(buf.to(tensor.device))


__all__ = [
    "DistInfo",
    "all_reduce_gradients",
    "all_reduce_mean",
    "barrier",
    "broadcast_module",
    "get_rank",
    "get_world_size",
    "is_initialized",
    "is_main_process",
    "select_device",
    "setup_distributed",
    "teardown_distributed",
]
