"""Run directories: no silent overwrite, one run at a time (run.lock), resume from the newest loadable
checkpoint with a checked config, torn logs and stale temporary files after kills, SIGKILL-and-resume parity."""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures.run_dir_child import make_trainer
from fixtures.toys import ToyEpisodes, ToyNet, toy_config

from fsslab.config import ConfigError
from fsslab.engine import checkpoint as ckpt
from fsslab.engine.train.run_dir import RunDirError, RunLock, holds_run
from fsslab.engine.train.trainer import Trainer, TrainingStopped, seed_everything
from fsslab.jsonl import read_jsonl

torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parents[1]  # tests/: fixtures/run_dir_child.py, fixtures/toys.py


def _trainer(out, model=None, n=10, cfg=None, **train):
    cfg = cfg or toy_config(out, **train)
    seed_everything(cfg.train.seed)
    return Trainer.from_config(cfg, model or ToyNet(), ToyEpisodes(n))


def _losses(out_dir):
    return [(r["iteration"], r["loss"]["total"]) for r in read_jsonl(Path(out_dir) / "log.jsonl") if "loss" in r]


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.values(), b.values())) and list(a) == list(b)


def _die_at(trainer, iteration):
    """Make ``trainer`` stop (as a Ctrl-C would) when it reaches ``iteration``."""
    real_step = trainer.train_step

    def step(batch):
        if trainer.iteration == iteration:
            raise KeyboardInterrupt
        return real_step(batch)

    trainer.train_step = step


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-iteration run (checkpoints every 2): its weights and losses."""
    out = tmp_path_factory.mktemp("reference")
    trainer = _trainer(out, iterations=8, ckpt_every=2)
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, _losses(out)


# ------------------------------------------------------------------------------------------ protection
def test_fresh_run_into_a_run_directory_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    _trainer(tmp_path, iterations=6, ckpt_every=2).fit()
    before = (tmp_path / "latest.pt").read_bytes()
    with pytest.raises(RunDirError) as info:
        _trainer(tmp_path, iterations=2, ckpt_every=1).fit()
    message = str(info.value)
    assert str(tmp_path) in message and "already holds a run" in message and "latest.pt" in message
    assert "--resume" in message and "--overwrite" in message and "\n" not in message
    assert (tmp_path / "latest.pt").read_bytes() == before and not (tmp_path / "run.lock").exists()

    with pytest.raises(RunDirError, match="give one"):
        _trainer(tmp_path, iterations=2).fit(resume=True, overwrite=True)
    capsys.readouterr()
    _trainer(tmp_path, iterations=2, ckpt_every=1).fit(overwrite=True)
    assert "--overwrite: deleted the previous run" in capsys.readouterr().err
    # the old run's iter_*.pt are gone; the new run's log holds only its own records
    assert sorted(p.name for p in tmp_path.glob("iter_*.pt")) == ["iter_0000001.pt"]
    assert [i for i, _ in _losses(tmp_path)] == [1, 2]
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["iteration"] == 2


def test_cli_refuses_a_fresh_run_into_a_run_directory(tmp_path, monkeypatch, capsys):
    import fsslab.engine.build
    from fsslab import models
    from fsslab.cli import main

    monkeypatch.setitem(models.MODEL_REGISTRY, "toy", "fixtures.toys:ToyNet")
    monkeypatch.setattr(fsslab.engine.build, "build_dataset", lambda *a, **k: ToyEpisodes(10))
    config = tmp_path / "toy.yaml"
    config.write_text(
        "data: {dataset: synthetic, root: unused, batch_size: 2, workers: 0}\nmodel: {name: toy}\n"
        "train: {iterations: 2, log_every: 1, tensorboard: false, progress: false, device: cpu, validate: false, "
        f"out_dir: '{tmp_path}/run'}}\n"
    )
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (latest.pt, log.jsonl)" in err and "Traceback" not in err
    assert main(["train", str(config), "data.shot=5", "--resume"]) == 2
    assert "data.shot 1 -> 5" in capsys.readouterr().err
    assert main(["train", str(config), "--overwrite"]) == 0
    assert [i for i, _ in _losses(tmp_path / "run")] == [1, 2]


# ------------------------------------------------------------------------------------------------ lock
HOLD_LOCK = ("import sys, time\nfrom fsslab.engine.train.run_dir import RunLock\n"
             "RunLock(sys.argv[1]).acquire(); print('HELD', flush=True); time.sleep(60)")


def _holder(out):
    """Another process holding ``out``'s lock (killed by the caller)."""
    out.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "HELD"
    return other


def test_a_live_run_holds_the_directory_and_a_killed_ones_lock_is_taken_over(tmp_path, capsys):
    other = _holder(tmp_path)
    try:
        with pytest.raises(RunDirError) as info:
            _trainer(tmp_path, iterations=2).fit()
        message = str(info.value)
        assert f"pid {other.pid} on {socket.gethostname()}" in message and "in use by another fsslab run" in message
        assert not holds_run(tmp_path) and (tmp_path / "run.lock").exists()  # nothing touched
    finally:
        other.kill()  # SIGKILL: no clean-up; the kernel drops the flock
        other.wait()
    assert (tmp_path / "run.lock").exists()  # the killed run's file stays, unlocked
    capsys.readouterr()
    _trainer(tmp_path, iterations=2).fit()
    assert not (tmp_path / "run.lock").exists()  # released at the end


def test_a_leftover_lock_file_is_no_lock_and_lock_is_released_on_errors(tmp_path):
    tmp_path.joinpath("run.lock").write_text(json.dumps({"pid": 12345, "host": "elsewhere.example"}))
    trainer = _trainer(tmp_path, iterations=4)
    _die_at(trainer, 2)
    lock_during_run = []
    real_step = trainer.train_step
    trainer.train_step = lambda batch: lock_during_run.append((tmp_path / "run.lock").exists()) or real_step(batch)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert lock_during_run == [True, True, True] and not (tmp_path / "run.lock").exists()


def test_one_process_cannot_take_its_own_lock_twice_and_release_is_idempotent(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    assert lock.held and json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    with pytest.raises(RunDirError, match=f"in use by another fsslab run \\(pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    lock.release()
    assert not (tmp_path / "run.lock").exists()
    again = RunLock(tmp_path)  # free again
    again.acquire()
    again.release()


def test_a_lock_file_replaced_under_a_waiting_opener_is_not_trusted(tmp_path, monkeypatch):
    """A process that opened run.lock just before its holder deleted it locks an unlinked file: it must see that
    the path no longer names that file and try again on the new one."""
    from fsslab.engine.train import run_dir

    lock, real = RunLock(tmp_path), run_dir._try_lock
    calls = []

    def unlink_first(fd):
        calls.append(fd)
        if len(calls) == 1:  # the holder's release deletes the file between our open and our flock
            (tmp_path / "run.lock").unlink()
        return real(fd)

    monkeypatch.setattr(run_dir, "_try_lock", unlink_first)
    lock.acquire()
    assert len(calls) == 2 and lock.held and (tmp_path / "run.lock").exists()
    lock.release()


# ------------------------------------------------------------------------------------------ config
def test_resume_refuses_config_changes_and_lists_them(tmp_path):
    _trainer(tmp_path, iterations=4, ckpt_every=2).fit()
    cfg = toy_config(tmp_path, iterations=4, ckpt_every=2, seed=8, amp="bf16", batch_size=1)
    cfg.data.shot = 5
    with pytest.raises(ConfigError) as info:
        _trainer(tmp_path, cfg=cfg).fit(resume=True)
    message = str(info.value)
    for change in ("data.shot 1 -> 5", "train.seed 7 -> 8", "train.amp 'none' -> 'bf16'", "data.batch_size 2 -> 1"):
        assert change in message
    assert str(tmp_path / "latest.pt") in message and "Allowed on resume" in message
    assert not (tmp_path / "run.lock").exists()


def test_structural_model_change_is_a_clear_error_not_a_torch_listing(tmp_path):
    class Wider(ToyNet):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Conv2d(3, 6, 3, padding=1)
            self.head = torch.nn.Conv2d(12, 2, 1)

    cfg = toy_config(tmp_path, iterations=2)
    cfg.model.params = {"hidden_dim": 4}
    _trainer(tmp_path, cfg=cfg).fit()
    wider = toy_config(tmp_path, iterations=2)
    wider.model.params = {"hidden_dim": 6}
    with pytest.raises(ConfigError, match=r"model.params.hidden_dim 4 -> 6"):
        _trainer(tmp_path, Wider(), cfg=wider).fit(resume=True)
    wider.model.params = {}  # a key dropped from a free dict is a change too
    with pytest.raises(ConfigError, match=r"model.params.hidden_dim 4 -> '\(absent\)'"):
        _trainer(tmp_path, Wider(), cfg=wider).fit(resume=True)
    # the same config with another width (code changed between runs): still one line, no torch listing
    with pytest.raises(ckpt.CheckpointError) as info:
        _trainer(tmp_path, Wider(), cfg=cfg).fit(resume=True)
    message = str(info.value)
    assert "does not fit this model" in message and "encoder.weight (4, 3, 3, 3) in the file" in message
    assert "\n" not in message and len(message) < 600


def test_allowed_changes_are_applied(tmp_path, capsys):
    _trainer(tmp_path, iterations=4, ckpt_every=2).fit()
    resumed = _trainer(tmp_path, iterations=6, ckpt_every=3, base_lr=0.01, log_every=2, grad_clip=1.0)
    resumed.fit(resume=True)
    err = capsys.readouterr().err
    assert "train.iterations 4 -> 6" in err and "train.base_lr 0.05 -> 0.01" in err
    assert "applied from iteration 4" in err and "log_every" not in err  # bookkeeping needs no notice
    assert resumed.optimizers[0].optimizer.param_groups[0]["base_lr"] == 0.01  # not the checkpoint's 0.05
    with pytest.raises(ConfigError, match=r"iteration 6, past the end of this config's schedule \(3 iterations\)"):
        _trainer(tmp_path, iterations=3).fit(resume=True)


# ------------------------------------------------------------------------- checkpoints after failures
@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"),
     RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1472 vs 1366\nframe #0: c10::...")],
    ids=["oserror", "torch"],
)
def test_full_disk_is_one_line_and_resume_uses_the_newest_loadable_checkpoint(tmp_path, monkeypatch, reference,
                                                                               failure):
    real_save, calls = torch.save, []

    def save(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # iteration 4: iter_0000004.pt is written, then the disk is full for latest.pt
            handle.write(b"partial")
            raise failure
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(ckpt.CheckpointError) as info:
        _trainer(tmp_path, iterations=8, ckpt_every=2).fit()
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint {tmp_path / 'latest.pt'}: the disk is full")
    assert "\n" not in message and "inline_container" not in message
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["iteration"] == 2
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "run.lock").exists()
    resumed = _trainer(tmp_path, iterations=8, ckpt_every=2)
    resumed.fit(resume=True)  # from iter_0000004.pt, newer than latest.pt
    assert _same_weights(resumed.model.state_dict(), reference[0]) and _losses(tmp_path) == reference[1]


def test_unreadable_checkpoints_are_skipped_with_a_notice(tmp_path, capsys, reference):
    _trainer(tmp_path, iterations=8, ckpt_every=2).fit()
    (tmp_path / "latest.pt").write_bytes((tmp_path / "latest.pt").read_bytes()[:100])  # torn latest.pt
    periodic = sorted(tmp_path.glob("iter_*.pt"))
    assert [p.name for p in periodic] == ["iter_0000002.pt", "iter_0000004.pt", "iter_0000006.pt"]
    periodic[2].write_bytes(b"not a checkpoint")
    capsys.readouterr()
    resumed = _trainer(tmp_path, iterations=8, ckpt_every=2)
    resumed.fit(resume=True)
    err = capsys.readouterr().err
    assert f"skipped an unreadable checkpoint: checkpoint {tmp_path / 'latest.pt'} does not match the sha256" in err
    assert str(periodic[2]) in err and f"resuming from {periodic[1]} (iteration 4)" in err
    assert _same_weights(resumed.model.state_dict(), reference[0]) and _losses(tmp_path) == reference[1]
    # nothing loadable: the error lists every file with its problem
    for path in (tmp_path / "latest.pt", *tmp_path.glob("iter_*.pt")):
        path.write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match=r"no loadable checkpoint in .*latest.pt.*iter_0000006.pt.*"
                                                   r"--overwrite"):
        _trainer(tmp_path, iterations=8).fit(resume=True)
    weights_only = tmp_path / "weights.pt"
    torch.save({"model": ToyNet().state_dict()}, weights_only)
    with pytest.raises(ckpt.CheckpointError, match="holds no training state"):
        _trainer(tmp_path, iterations=8).fit(resume=str(weights_only))


# ------------------------------------------------------------------------------- logs and leftovers
def test_torn_log_record_and_stale_temp_files_are_cleaned_on_resume(tmp_path, capsys, reference):
    killed = _trainer(tmp_path, iterations=8, ckpt_every=2)
    _die_at(killed, 5)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    with (tmp_path / "log.jsonl").open("a") as log:
        log.write('{"iteration": 6, "loss": {"tot')  # SIGKILL while writing a record
    for name in (".latest.pt.k1.tmp", ".iter_0000006.pt.k2.tmp"):  # SIGKILL during checkpoint writes
        (tmp_path / name).write_bytes(b"\0" * 1000)
    capsys.readouterr()
    resumed = _trainer(tmp_path, iterations=8, ckpt_every=2)
    resumed.fit(resume=True)
    err = capsys.readouterr().err
    assert f"{tmp_path / 'log.jsonl'}: dropped a torn last record" in err
    assert f"removed 2 stale temporary files (0.0 MB) left in {tmp_path}" in err
    assert not list(tmp_path.glob(".*.tmp"))
    # records after the resumed iteration (5) were dropped, then redone once: the uninterrupted log
    assert _losses(tmp_path) == reference[1]
    assert _same_weights(resumed.model.state_dict(), reference[0])


def test_read_jsonl_skips_a_torn_last_line_and_names_a_bad_one(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"iteration": 1}\n{"iteration": 2, "lo')
    assert read_jsonl(log) == [{"iteration": 1}]
    log.write_text('{"iteration": 1}\n{oops\n{"iteration": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2"):
        read_jsonl(log)


def test_kill_before_the_first_checkpoint(tmp_path, capsys, reference):
    killed = _trainer(tmp_path, iterations=8, ckpt_every=4)
    _die_at(killed, 3)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert [i for i, _ in _losses(tmp_path)] == [1, 2, 3] and not list(tmp_path.glob("*.pt"))
    with pytest.raises(RunDirError, match=r"already holds a run \(log.jsonl\)"):
        _trainer(tmp_path, iterations=8, ckpt_every=2).fit()  # not appended to the old log
    capsys.readouterr()
    restarted = _trainer(tmp_path, iterations=8, ckpt_every=2)
    restarted.fit(resume=True)
    assert "holds no checkpoint (its run stopped before the first one): --resume starts it again from " \
           "iteration 0" in capsys.readouterr().err
    assert _losses(tmp_path) == reference[1] and _same_weights(restarted.model.state_dict(), reference[0])
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in .*nothing to resume"):
        _trainer(tmp_path / "empty", iterations=8).fit(resume=True)


class _NanAt(ToyNet):
    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, output, batch):
        losses = super().loss(output, batch)
        self.calls += 1
        if self.calls == self.at:
            losses["total"] = losses["total"] * float("nan")
        return losses


def test_nan_stop_names_a_checkpoint_that_exists(tmp_path):
    with pytest.raises(TrainingStopped) as info:
        _trainer(tmp_path / "early", _NanAt(2), iterations=6, ckpt_every=3).fit()
    assert f"no checkpoint exists yet in {tmp_path / 'early'}: start over with --overwrite" in str(info.value)
    assert not list((tmp_path / "early").glob("*.pt"))
    with pytest.raises(TrainingStopped) as info:
        _trainer(tmp_path / "late", _NanAt(5), iterations=6, ckpt_every=3).fit()
    latest = tmp_path / "late" / "latest.pt"
    assert f"--resume continues from {latest} (iteration 3)" in str(info.value) and latest.is_file()


# --------------------------------------------------------------------------------------------- DDP
@pytest.mark.parametrize("rank", [0, 1])
def test_under_ddp_a_refusal_on_rank_0_stops_every_rank(tmp_path, monkeypatch, rank):
    """Rank 0 alone checks the directory and broadcasts the outcome (the collective itself runs in
    tests/engine/test_ddp.py); here the broadcast is played by hand, rank 0's outcome for rank 1."""
    from fsslab.engine.distributed import DistInfo
    from fsslab.engine.train import resume

    (tmp_path / "log.jsonl").write_text('{"iteration": 1}\n')
    sent = []

    def broadcast(objects, src):
        if rank == 0:
            sent.append(dict(objects[0]))
        else:
            objects[0] = {"error": f"{tmp_path} already holds a run (log.jsonl): ...", "type": "RunDirError"}

    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast)
    info = DistInfo(rank=rank, world_size=2)
    with pytest.raises(RunDirError, match="already holds a run") as error:
        resume.start_run(tmp_path, toy_config(tmp_path), False, False, 6, info)
    if rank == 0:
        assert sent == [{"error": str(error.value), "type": "RunDirError"}]
    else:
        assert str(error.value).startswith("(rank 0) ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # no lock left, nothing else written


# ------------------------------------------------------------------------------ SIGKILL and resume
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tmp_path):
    reference = make_trainer(tmp_path / "reference")
    reference.fit()
    out, rng = tmp_path / "killed", random.Random(20240612)
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    runs, expected_notices = [], []
    # two kills inside a checkpoint write (the 1st-3rd of that start, drawn), one at a random time
    for plan in ["write", "time", "write", "finish"]:
        mode = "resume" if holds_run(out) else "fresh"
        block_at = rng.randint(1, 3) if plan == "write" else 0
        child = subprocess.Popen([sys.executable, str(TESTS / "fixtures" / "run_dir_child.py"), str(out), mode, str(block_at)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdout.readline().strip() == "READY"
        if plan == "time":
            time.sleep(rng.uniform(0.0, 0.8))
            child.kill()
        elif plan == "write":
            assert child.stdout.readline().strip() == "BLOCKED"
            child.kill()
        _, err = child.communicate(timeout=300)
        left = {"lock": (out / "run.lock").exists(), "temps": len(list(out.glob(".*.tmp")))}
        runs.append((plan, mode, child.returncode, left, err))
        if plan != "time":  # these got past the start (a random kill may come before the clean-up)
            assert all(notice in err for notice in expected_notices), runs
        # what the next start must clean up, with a notice (a killed run's run.lock needs none: its flock died with it)
        expected_notices = []
        if left["temps"]:
            expected_notices.append(f"removed {left['temps']} stale temporary file")
    assert [code for _, _, code, _, _ in runs] == [-9, -9, -9, 0], runs
    assert runs[0][3]["temps"] and runs[2][3]["temps"], runs  # the write kills left their temporary files
    final = ckpt.load_checkpoint(out / "latest.pt")
    assert final["iteration"] == 24 and _same_weights(final["model"], reference.model.state_dict())
    assert _losses(out) == _losses(tmp_path / "reference")  # each iteration once, the same floats
    assert not list(out.glob(".*.tmp")) and not (out / "run.lock").exists()
