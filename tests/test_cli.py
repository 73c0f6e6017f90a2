"""Command line: --help everywhere, clear errors, and train → resume → eval wired end to end on a toy."""

from __future__ import annotations

import json

import pytest
import torch

from fsslab.cli import main
from fsslab.jsonl import read_jsonl

COMMANDS = [[], ["data"], ["data", "synth"], ["train"], ["eval"], ["config"], ["predict"]]
DELEGATED = ("lists", "pascal", "coco")  # packaged in fsslab.cli.data (data_prep/*.py wrap them)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "fsslab")
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: fsslab" in capsys.readouterr().out


@pytest.mark.parametrize("what", DELEGATED)
def test_help_of_delegated_data_commands(what, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", what, "--help"])
    assert info.value.code == 0
    assert f"usage: fsslab data {what}" in capsys.readouterr().out


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    assert "usage: fsslab bench" in capsys.readouterr().out


def test_unknown_key_is_a_clear_error(capsys):
    assert main(["config", "synthetic/ipmt_tiny", "train.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'lrr'" in err and "base_lr" in err and "Traceback" not in err


def test_unknown_synthetic_knob_lists_valid_ones(tmp_path, capsys):
    assert main(["data", "synth", "--root", str(tmp_path / "s"), "difficulty=3"]) == 2
    err = capsys.readouterr().err
    assert "difficulty" in err and "diversity" in err
    assert not (tmp_path / "s").exists()


def test_synth_default_is_the_configs_benchmark(tmp_path, capsys):
    from fsslab.lab import FULL_SYNTHETIC

    root = tmp_path / "s"
    args = ["data", "synth", "--root", str(root), "--n-train", "6", "--n-val", "4", "--n-pretrain", "3"]
    assert main([*args, "--workers", "1", "--no-progress"]) == 0
    config = json.loads((root / "meta.json").read_text())["config"]
    # the calibrated knobs of every synthetic config; only the sizes were overridden
    assert {k: config[k] for k in FULL_SYNTHETIC if k != "n_pretrain"} == {
        k: v for k, v in FULL_SYNTHETIC.items() if k != "n_pretrain"}
    assert (config["n_train"], config["n_val"], config["n_pretrain"]) == (6, 4, 3)
    assert len((root / "lists" / "pretrain.txt").read_text().splitlines()) == 3


def test_config_list_and_show(capsys):
    assert main(["config", "--list"]) == 0
    assert "synthetic/amformer_tiny" in capsys.readouterr().out.split()
    assert main(["config", "synthetic/baseline_tiny", "data.shot=5"]) == 0
    assert "shot: 5" in capsys.readouterr().out


def test_prerequisite_is_trained_first_once(tmp_path, toy_world, capsys):
    common = "data: {dataset: synthetic, root: unused, batch_size: 2, workers: 0}\n"
    train = "log_every: 1, tensorboard: false, progress: false, device: cpu, validate: false"
    (tmp_path / "stage1.yaml").write_text(
        common
        + f"model: {{name: toy}}\ntrain: {{iterations: 2, {train}, out_dir: '{tmp_path}/s1_{{fold}}'}}\n"
    )
    (tmp_path / "stage2.yaml").write_text(
        common + f"model: {{name: toy, init_checkpoint: '{tmp_path}/s1_{{fold}}/latest.pt', "
        f"init_prefix: encoder., prerequisite: '{tmp_path}/stage1.yaml'}}\n"
        f"train: {{iterations: 1, {train}, out_dir: '{tmp_path}/s2'}}\n"
    )
    # without the flag a missing prerequisite is an error naming the command that trains it; nothing is trained
    assert main(["train", str(tmp_path / "stage2.yaml"), "data.fold=1"]) != 0
    err = capsys.readouterr().err
    assert "--with-prerequisites" in err and f"{tmp_path}/s1_1/latest.pt" in err and "does not exist" in err
    assert not (tmp_path / "s1_1").exists() and not (tmp_path / "s2").exists()
    assert main(["train", str(tmp_path / "stage2.yaml"), "data.fold=1", "--with-prerequisites"]) == 0
    stage1 = tmp_path / "s1_1" / "latest.pt"
    assert torch.load(stage1, weights_only=True)["iteration"] == 2
    out = capsys.readouterr().out
    assert "training the prerequisite" in out and "initialised 2/2 'encoder.*' tensors" in out
    stamp = stage1.stat().st_mtime_ns
    # stage 2 again (its directory holds the first stage-2 run: --overwrite); stage 1 is reused as it is
    assert main(["train", str(tmp_path / "stage2.yaml"), "data.fold=1", "--overwrite", "--with-prerequisites"]) == 0
    assert stage1.stat().st_mtime_ns == stamp and "training the prerequisite" not in capsys.readouterr().out
    # the finished stage 1 came from other data: refused, not silently reused
    assert main(["train", str(tmp_path / "stage2.yaml"), "data.fold=1", "data.root=elsewhere",
                 "--with-prerequisites"]) != 0
    err = capsys.readouterr().err
    assert str(stage1) in err and "was trained on unused" in err and "uses elsewhere" in err
    assert stage1.stat().st_mtime_ns == stamp
    # pointed at another starting checkpoint (fold 0's stage 1 for fold 2): the prerequisite is not trained
    assert main(["train", str(tmp_path / "stage2.yaml"), "data.fold=2", f"model.init_checkpoint={stage1}",
                 f"train.out_dir={tmp_path}/s2_fold2", "--with-prerequisites"]) == 0
    assert not (tmp_path / "s1_2").exists() and "training the prerequisite" not in capsys.readouterr().out


def test_a_finished_prerequisite_is_not_retrained_from_its_own_chain(tmp_path, toy_world, capsys):
    # pretraining -> stage 1 -> stage 2; fold 1's stage 1 started from fold 0's pretraining (as the synthetic
    # chain does): stage 2 of fold 1 must not train a fold-1 pretraining that nothing reads
    common = "data: {dataset: synthetic, root: unused, batch_size: 2, workers: 0}\n"
    train = "log_every: 1, tensorboard: false, progress: false, device: cpu, validate: false"
    (tmp_path / "pre.yaml").write_text(
        common + f"model: {{name: toy}}\ntrain: {{iterations: 2, {train}, out_dir: '{tmp_path}/pre_{{fold}}'}}\n")
    (tmp_path / "stage1.yaml").write_text(
        common + f"model: {{name: toy, init_checkpoint: '{tmp_path}/pre_{{fold}}/latest.pt', init_prefix: encoder., "
        f"prerequisite: '{tmp_path}/pre.yaml'}}\ntrain: {{iterations: 2, {train}, out_dir: '{tmp_path}/s1_{{fold}}'}}\n")
    (tmp_path / "stage2.yaml").write_text(
        common + f"model: {{name: toy, init_checkpoint: '{tmp_path}/s1_{{fold}}/latest.pt', init_prefix: encoder., "
        f"prerequisite: '{tmp_path}/stage1.yaml'}}\ntrain: {{iterations: 1, {train}, out_dir: '{tmp_path}/s2'}}\n")
    assert main(["train", str(tmp_path / "pre.yaml")]) == 0
    assert main(["train", str(tmp_path / "stage1.yaml"), "data.fold=1",
                 f"model.init_checkpoint={tmp_path}/pre_0/latest.pt"]) == 0
    capsys.readouterr()
    assert main(["train", str(tmp_path / "stage2.yaml"), "data.fold=1", "--with-prerequisites"]) == 0
    assert not (tmp_path / "pre_1").exists() and "training the prerequisite" not in capsys.readouterr().out
    assert (tmp_path / "s2" / "latest.pt").is_file()


def test_train_resume_eval_end_to_end(tmp_path, toy_world, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(f"""
name: toy
data: {{dataset: synthetic, root: unused, batch_size: 2, workers: 0}}
model: {{name: toy, params: {{dropout: 0.1}}}}
train: {{iterations: 4, base_lr: 0.05, log_every: 1, ckpt_every: 2, tensorboard: false, progress: false,
        device: cpu, out_dir: "{tmp_path}/run_{{shot}}shot"}}
eval: {{episodes: 6, seeds: [1, 2]}}
""")
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run_1shot"
    assert main(["train", str(config), "train.iterations=7", "--resume"]) == 0
    records = [r for r in read_jsonl(run / "log.jsonl") if "loss" in r]
    assert [r["iteration"] for r in records] == list(range(1, 8))
    assert torch.load(run / "latest.pt", weights_only=True)["iteration"] == 7
    assert (run / "best.pt").is_file() and (run / "config.yaml").is_file()
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", str(config), "--checkpoint", str(run / "latest.pt"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == [1, 2] and len(result["per_seed"]) == 2 and 0 <= result["miou"] <= 100
    assert "mean" in capsys.readouterr().out


def test_overrides_may_follow_options(capsys):
    from fsslab.cli import main

    # the override after --checkpoint reaches the config (and is validated there), not argparse
    status = main(["eval", "synthetic/baseline_tiny", "--checkpoint", "/nonexistent.pt", "bogus.key=1"])
    assert status == 2
    assert "unknown section 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "synthetic/baseline_tiny", "--checkpoint", "/nonexistent.pt", "--bogus"])


def test_a_delegated_script_returning_its_results_exits_zero(monkeypatch):
    import argparse

    from fsslab import cli

    monkeypatch.setattr(cli, "_script_main", lambda relative: (lambda argv: [{"model": "ipmt", "median_s": 0.1}]))
    assert cli._delegate("benchmarks/bench_models.py", "fsslab bench")(argparse.Namespace(rest=[])) == 0
    monkeypatch.setattr(cli, "_script_main", lambda relative: (lambda argv: 3))
    assert cli._delegate("benchmarks/bench_models.py", "fsslab bench")(argparse.Namespace(rest=[])) == 3


def test_bench_tiny_models_are_the_shipped_synthetic_configs():
    # `fsslab bench --settings tiny` times the models the synthetic configs train (weights aside)
    from fsslab.cli.bench import SETTINGS
    from fsslab.config import load_config

    for name, config in {"ipmt": "ipmt_tiny", "amformer": "amformer_tiny", "baseline": "baseline_tiny",
                         "pspnet": "pspnet_base_tiny"}.items():
        cfg = load_config(f"synthetic/{config}")
        params = {k: v for k, v in cfg.model.params.items() if k not in ("pretrained", "learn_threshold", "n_classes")}
        # the models' shot is filled from data.shot when the config is loaded; the bench times 1 and 5 shots
        assert params.pop("shot", cfg.data.shot) == cfg.data.shot, name
        tiny = {k: v for k, v in SETTINGS["tiny"][name].items() if k != "n_classes"}
        assert tiny == params, name
