"""Two-process gloo DDP on CPU equals a single process with the same global batch (tolerance 1e-6)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fixtures package
from fixtures.toys import ToyEpisodes, ToyGD, ToyNet, toy_config

from fsslab.engine.evaluate import evaluate
from fsslab.engine.train.trainer import Trainer, seed_everything

TOLERANCE = 1e-6  # float32 all-reduce sums two half-batch gradients: reduction order differs in the last bits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models():
    # dropout off: each rank draws its own dropout masks, which a single process cannot reproduce
    return {"ddp": lambda: ToyNet(dropout=0.0), "manual": ToyGD}


def _train(kind: str, out_dir: Path) -> dict[str, torch.Tensor]:
    cfg = toy_config(out_dir, iterations=4, batch_size=4, base_lr=0.05)
    seed_everything(cfg.train.seed)
    trainer = Trainer.from_config(cfg, _models()[kind](), ToyEpisodes(16))
    trainer.fit()
    assert trainer.grad_sync == kind
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _evaluate() -> dict:
    seed_everything(0)
    model = ToyNet(dropout=0.0)
    result = evaluate(
        model,
        lambda seed, n: ToyEpisodes(n, evaluation=True, seed=seed),
        seeds=[1, 2],
        episodes=7,
        num_classes=3,
    )
    return result.to_dict()


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
        }
    )
    try:
        for kind in ("ddp", "manual"):
            state = _train(kind, Path(out) / kind)
            if rank == 0:
                torch.save(state, Path(out) / f"{kind}.pt")
            # only rank 0 writes logs and checkpoints
            assert (Path(out) / kind / "log.jsonl").exists()
        result = _evaluate()  # 7 episodes sharded 4 + 3 over the ranks, sums all-reduced
        if rank == 0:
            torch.save({"eval": result}, Path(out) / "eval.pt")
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    torch.set_num_threads(1)
    # fork: the children inherit the imported modules (spawn would re-import torch, ~5 s on 2 cores)
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path / "ddp")), nprocs=2, join=True, start_method="fork"
    )
    for kind in ("ddp", "manual"):
        single = _train(kind, tmp_path / "single" / kind)
        distributed = torch.load(tmp_path / "ddp" / f"{kind}.pt", weights_only=True)
        for name, value in single.items():
            torch.testing.assert_close(distributed[name], value, rtol=0, atol=TOLERANCE)
        # and training did move the weights, so the comparison means something
        seed_everything(7)
        initial = _models()[kind]().state_dict()
        assert any(not torch.allclose(initial[k], single[k]) for k in single)
    # distributed evaluation sums integer counts: identical to one process
    assert torch.load(tmp_path / "ddp" / "eval.pt", weights_only=True)["eval"] == _evaluate()
