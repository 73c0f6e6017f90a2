"""Trainer: bit-exact resume, atomic checkpoints, G/D alternation, NaN stop, schedule, eval determinism."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from fixtures.toys import ToyEpisodes, ToyGD, ToyNet, toy_config

from fsslab.engine import checkpoint as ckpt
from fsslab.engine.evaluate import evaluate
from fsslab.engine.train.trainer import Trainer, TrainingStopped, poly_factor, seed_everything
from fsslab.jsonl import read_jsonl

torch.set_num_threads(1)


def _trainer(tmp_path, model_cls=ToyNet, n=10, **train):
    cfg = toy_config(tmp_path, **train)
    seed_everything(cfg.train.seed)
    return Trainer.from_config(cfg, model_cls(), ToyEpisodes(n))


def _losses(out_dir):
    return [(r["iteration"], r["loss"]["total"]) for r in read_jsonl(out_dir / "log.jsonl") if "loss" in r]


def test_kill_and_resume_equals_uninterrupted_bit_for_bit(tmp_path):
    # 10 episodes, batch 2 → 5 iterations per epoch; 12 iterations cross two epoch boundaries.
    full = _trainer(tmp_path / "full", iterations=12, ckpt_every=4)
    full.fit()

    killed = _trainer(tmp_path / "killed", iterations=12, ckpt_every=4)
    real_step = killed.train_step

    def step_then_die(batch):
        if killed.iteration == 7:  # dies mid-epoch, after the checkpoint of iteration 4
            raise KeyboardInterrupt
        return real_step(batch)

    killed.train_step = step_then_die
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert ckpt.load_checkpoint(tmp_path / "killed" / "latest.pt")["iteration"] == 4

    resumed = _trainer(tmp_path / "killed", iterations=12, ckpt_every=4)
    resumed.fit(resume=True)
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "full")  # exact floats, iterations 1..12
    assert [i for i, _ in _losses(tmp_path / "full")] == list(range(1, 13))
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        trainer.fit(resume=True)


@pytest.mark.parametrize("failure", ["during_write", "at_fsync", "at_replace"])
def test_interrupted_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "latest.pt"
    ckpt.atomic_save({"model": {"w": torch.ones(3)}, "iteration": 1}, path)

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash

    if failure == "during_write":
        real_save = torch.save

        def partial_save(obj, handle):
            real_save(obj, handle)
            handle.truncate(10)  # half-written file, then the "crash"
            raise Crash

        monkeypatch.setattr(torch, "save", partial_save)
    elif failure == "at_fsync":
        monkeypatch.setattr(os, "fsync", crash)
    else:
        monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Crash):
        ckpt.atomic_save({"model": {"w": torch.zeros(3)}, "iteration": 2}, path)
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left behind


def test_killed_process_leaves_stray_temp_but_latest_loads(tmp_path):
    path = tmp_path / "latest.pt"
    ckpt.atomic_save({"model": {"w": torch.ones(2)}, "iteration": 3}, path)
    (tmp_path / ".latest.pt.abc.tmp").write_bytes(path.read_bytes()[:20])  # SIGKILL mid-write
    assert ckpt.load_checkpoint(path)["iteration"] == 3
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ckpt.CheckpointError, match="truncated.pt"):
        ckpt.load_checkpoint(truncated)


def test_rng_state_round_trips_through_weights_only_file(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.atomic_save({"model": {}, "rng": state}, tmp_path / "r.pt")
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_gd_alternation_updates_exactly_the_intended_parameters(tmp_path):
    trainer = _trainer(tmp_path, model_cls=ToyGD, base_lr=0.01)
    model = trainer.model
    batch = next(iter(trainer._loader(0, 0)))

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    for iteration, moved, still in [
        (0, model.generator, model.discriminator),
        (1, model.discriminator, model.generator),
    ]:
        trainer.iteration = iteration
        trainer.set_learning_rates(iteration)
        before_moved, before_still = snapshot(moved), snapshot(still)
        trainer.train_step(batch)
        assert all(torch.equal(a, b) for a, b in zip(before_still, still.parameters()))
        assert all(not torch.equal(a, b) for a, b in zip(before_moved, moved.parameters()))
    opt = {b.name: b.optimizer for b in trainer.optimizers}
    assert type(opt["generator"]).__name__ == "AdamW" and type(opt["discriminator"]).__name__ == "Adam"


def test_several_objectives_in_one_iteration_touch_only_their_parameters(tmp_path):
    class BothAtOnce(ToyGD):
        def step_objectives(self, losses, iteration):
            return {"generator": losses["total"], "discriminator": losses["d"]}

    trainer = _trainer(tmp_path, model_cls=BothAtOnce)
    batch = next(iter(trainer._loader(0, 0)))
    copy = BothAtOnce()
    copy.load_state_dict(trainer.model.state_dict())
    copy.train()
    d_loss = copy.loss(copy(batch), batch)["d"]
    expected = torch.autograd.grad(d_loss, list(copy.discriminator.parameters()))
    trainer.train_step(batch)
    # the G objective back-propagates through D (g_adv) but must not add to D's gradient
    for got, want in zip(trainer.model.discriminator.parameters(), expected):
        torch.testing.assert_close(got.grad, want, rtol=1e-6, atol=1e-8)


def test_nan_loss_stops_with_clear_message(tmp_path):
    class NanAtThree(ToyNet):
        calls = 0

        def loss(self, output, batch):
            losses = super().loss(output, batch)
            NanAtThree.calls += 1
            if NanAtThree.calls == 4:
                losses["total"] = losses["total"] * float("nan")
            return losses

    trainer = _trainer(tmp_path, model_cls=NanAtThree, ckpt_every=2)
    with pytest.raises(TrainingStopped) as info:
        trainer.fit()
    message = str(info.value)
    assert "iteration 3" in message and "non-finite loss" in message and "base_lr" in message
    assert info.value.iteration == 3
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["iteration"] == 2


def test_unknown_objective_is_rejected(tmp_path):
    class Typo(ToyNet):
        def step_objectives(self, losses, iteration):
            return {"totl": losses["total"]}

    trainer = _trainer(tmp_path, model_cls=Typo)
    with pytest.raises(ValueError, match="totl"):
        trainer.train_step(next(iter(trainer._loader(0, 0))))


def test_poly_schedule_and_warmup_follow_the_references(tmp_path):
    trainer = _trainer(tmp_path, iterations=10, power=0.9)
    lrs = trainer.set_learning_rates(4)
    assert lrs["main"] == pytest.approx(0.05 * (1 - 5 / 10) ** 0.9, rel=1e-12)
    assert poly_factor(9, 10, 0.9) == 0.0  # the references' last step runs at lr 0
    assert poly_factor(1, 100, 0.9, warmup=10) == pytest.approx(0.001 + 0.999 * 2 / 10)


def test_checkpoint_holds_everything_needed_to_resume(tmp_path):
    trainer = _trainer(tmp_path, iterations=3, ckpt_every=100)
    trainer.fit()
    state = ckpt.load_checkpoint(tmp_path / "latest.pt")
    assert {"model", "optimizers", "scaler", "rng", "config", "iteration", "fsslab_version"} <= set(state)
    assert state["config"]["train"]["iterations"] == 3 and state["iteration"] == 3
    assert "momentum_buffer" in str(state["optimizers"]["main"]["state"])


def test_evaluation_is_deterministic_and_reports_mean_over_seeds():
    seed_everything(0)
    model = ToyNet()

    def factory(seed, episodes):
        return ToyEpisodes(episodes, evaluation=True, seed=seed)

    state = torch.get_rng_state()
    first = evaluate(model, factory, seeds=[1, 2, 3], episodes=6, num_classes=3, class_ids=[1, 2, 3])
    second = evaluate(model, factory, seeds=[1, 2, 3], episodes=6, num_classes=3, class_ids=[1, 2, 3])
    assert first.to_dict() == second.to_dict()
    assert torch.equal(state, torch.get_rng_state())  # evaluation leaves the training RNG alone
    mious = [r["miou"] for r in first.per_seed]
    assert first.miou_mean == pytest.approx(np.mean(mious)) and first.miou_std == pytest.approx(np.std(mious))
    assert len(set(mious)) > 1  # different seeds → different episodes
    assert "mean" in first.table() and first.to_dict()["per_seed"][0]["seed"] == 1


def test_out_of_memory_stops_with_advice(tmp_path):
    trainer = _trainer(tmp_path)

    def oom(batch):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer.train_step = oom
    with pytest.raises(TrainingStopped, match=r"(?s)iteration 0: out of memory.*data.batch_size \(now 2\)"):
        trainer.fit()


def test_image_grid_shows_query_prediction_and_truth():
    from fsslab.engine.train.runlog import episode_grid

    batch = next(iter(torch.utils.data.DataLoader(ToyEpisodes(3), batch_size=3)))
    grid = episode_grid(batch, torch.randn(3, 2, 8, 8), max_items=2)
    assert grid.shape == (3, 16, 24) and 0 <= float(grid.min()) and float(grid.max()) <= 1


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_and_channels_last_train(tmp_path, amp):
    trainer = _trainer(tmp_path, amp=amp, channels_last=True, iterations=2, grad_clip=1.0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    assert all(np.isfinite(loss) for _, loss in _losses(tmp_path))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_bf16_on_a_cpu_without_native_bf16_says_it_is_emulated(monkeypatch):
    import torch

    from fsslab.engine.evaluate import warn_if_emulated_bf16
    from fsslab.errors import FsslabWarning

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with pytest.warns(FsslabWarning, match="emulated and slower than fp32"):
        warn_if_emulated_bf16("bf16", "cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_emulated_bf16("bf16", "cpu")  # native: silent
        warn_if_emulated_bf16("none", "cpu")


def test_optimisers_use_the_fused_update_on_cpu():
    # PyTorch's CPU default is a per-parameter Python loop; fsslab asks for the fused kernel (same update rule)
    from fsslab.engine.train.optim import build_optimizers

    built = build_optimizers(ToyGD(), 0.01, 1e-4)
    assert built and all(g["fused"] for b in built for g in b.optimizer.param_groups)


def test_explicit_arguments_train_as_the_config_adapter(tmp_path):
    # Trainer takes the training section, batch size and workers; from_config is only the RunConfig adapter
    cfg = toy_config(tmp_path / "adapter", iterations=4)
    seed_everything(cfg.train.seed)
    adapted = Trainer.from_config(cfg, ToyNet(), ToyEpisodes(10))
    adapted.fit()
    seed_everything(cfg.train.seed)
    explicit = Trainer(ToyNet(), ToyEpisodes(10), cfg.train, batch_size=2, workers=0, out_dir=tmp_path / "explicit")
    explicit.fit()
    assert explicit.iteration == adapted.iteration == 4
    for (name, a), (_, b) in zip(adapted.model.state_dict().items(), explicit.model.state_dict().items()):
        assert torch.equal(a, b), name
    # the checkpoint records the run config it was given, or the training section it was built from
    assert ckpt.load_checkpoint(tmp_path / "adapter" / "latest.pt")["config"]["name"] == "toy"
    recorded = ckpt.load_checkpoint(tmp_path / "explicit" / "latest.pt")["config"]
    assert recorded["train"]["iterations"] == 4 and recorded["data"]["batch_size"] == 2
