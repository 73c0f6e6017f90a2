"""Run checkpoints carry their sha256; a NaN stop names (and keeps) the last healthy checkpoint; a resume from
a diverging one warns (issue #26, items 2 and 5)."""

from __future__ import annotations

import pytest
import torch
from fixtures.toys import ToyEpisodes, ToyNet, toy_config

from fsslab.engine import checkpoint as ckpt
from fsslab.engine.train.stops import LossHealth
from fsslab.engine.train.trainer import Trainer, TrainingStopped, seed_everything
from fsslab.files import sha256_file

torch.set_num_threads(1)


def _trainer(tmp_path, model_cls=ToyNet, **train):
    cfg = toy_config(tmp_path, **train)
    seed_everything(cfg.train.seed)
    return Trainer.from_config(cfg, model_cls(), ToyEpisodes(10))


def test_a_flipped_byte_in_a_run_checkpoint_is_refused(tmp_path):
    path = ckpt.save_checkpoint({"model": {"w": torch.arange(1000, dtype=torch.float32)}}, tmp_path / "latest.pt")
    assert ckpt.digest_path(path).read_text().split()[1] == "latest.pt"
    assert ckpt.load_checkpoint(path)["model"]["w"][999] == 999
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, inside the tensor data: torch.load alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"latest.pt does not match the sha256 recorded .*latest.pt.sha256"):
        ckpt.load_checkpoint(path)
    ckpt.digest_path(path).unlink()  # a copy without its sidecar loads unchecked (official files, older runs)
    ckpt.load_checkpoint(path)


def test_a_kill_between_the_two_renames_leaves_a_pair_that_verifies(tmp_path):
    path = ckpt.save_checkpoint({"model": {"w": torch.zeros(3)}}, tmp_path / "latest.pt")
    old = sha256_file(path)
    # the state between "sidecar lists new and old" and the rename of the new file: the old file still verifies
    ckpt._write_digests(path, ["0" * 64, old])
    assert ckpt.load_checkpoint(path)["model"]["w"].sum() == 0
    ckpt.remove_checkpoint(path)
    assert not path.exists() and not ckpt.digest_path(path).exists()


def test_a_directory_or_a_model_entry_that_is_no_state_dict_is_one_line(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="is a directory, not a checkpoint file"):
        ckpt.load_checkpoint(tmp_path)
    torch.save({"model": [torch.zeros(2)]}, tmp_path / "list.pt")
    with pytest.raises(ckpt.CheckpointError, match="its 'model' entry is a list, not a state dict"):
        ckpt.load_checkpoint(tmp_path / "list.pt")


def test_a_full_disk_before_the_first_checkpoint_does_not_advise_resume(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(ckpt.CheckpointError, match="disk is full.*no checkpoint of this run was written yet.*--overwrite"):
        ckpt.save_checkpoint({"model": {}}, tmp_path / "latest.pt")
    (tmp_path / "iter_0000002.pt").write_bytes(b"x")
    with pytest.raises(ckpt.CheckpointError, match=r"\(iter_0000002.pt\) are intact.*--resume"):
        ckpt.save_checkpoint({"model": {}}, tmp_path / "latest.pt")


def test_loss_health_flags_an_exploding_loss():
    health = LossHealth()
    for _ in range(20):
        health.update(0.5)
    assert not health.diverging
    for _ in range(10):
        health.update(1e23)  # finite, but 1e23: the state of the latest.pt
    assert health.diverging and health.record(True)["diverging"]
    assert LossHealth().record(False)["diverging"]  # NaN/inf weights are never healthy


class Explodes(ToyNet):
    """From the 13th step on, the total loss grows without bound (a constant added: the gradients stay the
    toy's), then it is NaN at the 19th step."""

    calls = 0

    def loss(self, output, batch):
        losses = super().loss(output, batch)
        Explodes.calls += 1
        if Explodes.calls > 12:
            losses["total"] = losses["total"] + 10.0 ** (3 * (Explodes.calls - 12))
        if Explodes.calls == 19:
            losses["total"] = losses["total"] * float("nan")
        return losses


def test_a_nan_stop_names_and_keeps_the_last_healthy_checkpoint_and_resume_warns(tmp_path, capsys):
    Explodes.calls = 0
    trainer = _trainer(tmp_path, model_cls=Explodes, iterations=30, ckpt_every=4, keep_checkpoints=1)
    with pytest.raises(TrainingStopped) as info:
        trainer.fit()
    message = str(info.value)
    assert "non-finite loss" in message
    # 4, 8 and 12 were healthy; 16 was saved while the loss was 1e12: latest.pt is finite but diverged
    assert f"--resume {tmp_path / 'iter_0000012.pt'} continues from the last healthy checkpoint (iteration 12" in message
    assert "latest.pt (iteration 16) was saved while the loss was already exploding" in message
    assert (tmp_path / "iter_0000012.pt").is_file()  # keep_checkpoints=1 did not rotate it away
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["health"]["diverging"]
    assert not ckpt.load_checkpoint(tmp_path / "iter_0000012.pt")["health"]["diverging"]
    capsys.readouterr()
    resumed = _trainer(tmp_path, iterations=30, ckpt_every=4)
    resumed.resume(tmp_path / "latest.pt")
    err = capsys.readouterr().err
    assert "saved while the run was diverging" in err and "iter_0000012.pt (iteration 12)" in err


def test_eval_refuses_weights_with_nan():
    from fsslab.engine.build import load_model_weights
    from fsslab.errors import CheckpointError

    model = ToyNet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.weight"][0, 0] = float("inf")
    with pytest.raises(CheckpointError, match=r"run.pt: 1 weight tensor\(s\) hold NaN or inf \(e.g. head.weight\)"):
        load_model_weights(model, {"model": state}, "run.pt")
