"""A tiny training run that tests/engine/test_run_dir.py kills with SIGKILL:
``python run_dir_child.py OUT fresh|resume BLOCK_AT``.

Every checkpoint write is slowed down (half the bytes, a pause, the rest; the bytes are the ones torch.save
makes), so that kills at random times may land inside one. The BLOCK_AT-th write of this start (0: none) stops
after its first half and prints ``BLOCKED``: a kill then lands inside that write whatever the machine's load.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
from engine_toys import ToyEpisodes, ToyNet, toy_config

from fsslab.engine.train.trainer import Trainer, seed_everything

# 10 episodes, batch 2: 5 iterations per epoch; 24 iterations cross four epoch boundaries, and are long enough
# (23 slowed writes) that none of the test's four kills comes after the end of the run
SETTINGS = {"iterations": 24, "ckpt_every": 2, "keep_checkpoints": 2}
WRITE_PAUSE_S = 0.1
_real_save = torch.save
_writes = {"done": 0, "block_at": 0}


def make_trainer(out_dir: str | Path) -> Trainer:
    cfg = toy_config(out_dir, **SETTINGS)
    seed_everything(cfg.train.seed)
    return Trainer.from_config(cfg, ToyNet(), ToyEpisodes(10))


def slow_save(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
    buffer = io.BytesIO()
    _real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    handle.write(data[: len(data) // 2])
    handle.flush()
    _writes["done"] += 1
    if _writes["done"] == _writes["block_at"]:
        print("BLOCKED", flush=True)
        time.sleep(3600)  # until the test's SIGKILL
    time.sleep(WRITE_PAUSE_S)
    handle.write(data[len(data) // 2 :])


if __name__ == "__main__":
    torch.set_num_threads(1)  # as the test process: the same float results
    torch.save = slow_save
    _writes["block_at"] = int(sys.argv[3])
    trainer = make_trainer(sys.argv[1])
    print("READY", flush=True)
    trainer.fit(resume=sys.argv[2] == "resume")
