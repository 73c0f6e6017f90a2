"""Bad input through the command line: one clear line naming the value or file and exit status 2; any other
exception keeps its traceback. Also: the data fallbacks that runs take are printed in their summaries."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.toys import ToyNet

from fsslab import cli, models
from fsslab.cli import main
from fsslab.config import ConfigError
from fsslab.errors import CheckpointError, DatasetError, FsslabError, TargetExistsError

# the shipped baseline on the VOC-layout fixture (it has meta.json, so it reads as the synthetic benchmark),
# without its pretraining prerequisite: the cheapest real model and data the CLI can run
BASELINE = ["synthetic/baseline_tiny", "model.init_checkpoint=null", "model.prerequisite=null", "data.synthetic=null",
            "data.workers=0", "eval.episodes=4", "eval.seeds=[0]", "data.val_size=64", "train.device=cpu"]


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note: ", "warning: "))]
    assert "Traceback" not in err and len(lines) == 2 and lines[0].startswith("fsslab "), err
    err = lines[0]
    for word in words:
        assert word in err, (word, err)
    return err


def test_error_types_keep_their_builtin_bases():
    assert issubclass(ConfigError, FsslabError) and issubclass(ConfigError, ValueError)
    assert issubclass(DatasetError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(TargetExistsError, FileExistsError) and issubclass(cli.CliError, FsslabError)


@pytest.mark.parametrize("override", ["data.size=-5", "data.val_size=-5"])
def test_negative_sizes(override, capsys):
    assert main(["config", "synthetic/ipmt_tiny", override]) == 2
    _one_line_error(capsys, override.split("=")[0], "-5")


def test_yaml_whose_top_level_is_a_list(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- data\n- model\n")
    assert main(["config", str(tmp_path / "list.yaml")]) == 2
    _one_line_error(capsys, "list.yaml", "mapping", "list")


def test_unknown_data_params_key(tmp_path, voc_root, capsys):
    assert main(["eval", *BASELINE, f"data.root={voc_root}", "data.params.bogus=1"]) == 2
    _one_line_error(capsys, "unknown data.params key(s) ['bogus']", "on_small_class")
    assert main(["train", *BASELINE, f"data.root={voc_root}", "data.params.augmentation={crop: 1}",
                 f"train.out_dir={tmp_path / 'run'}"]) == 2
    _one_line_error(capsys, "unknown augmentation option(s) ['crop']", "final")


def test_checkpoint_of_another_model_or_width(tmp_path, voc_root, capsys):
    other = tmp_path / "toy.pt"
    torch.save({"model": ToyNet().state_dict(), "config": {"model": {"name": "toy", "params": {}}}}, other)
    assert main(["eval", *BASELINE, f"data.root={voc_root}", "--checkpoint", str(other)]) == 2
    err = _one_line_error(capsys, "toy.pt does not match the model", "missing /", "unexpected", "model.name=toy")
    assert len(err) < 1500  # torch's own message listed every key (37 KB)
    model = models.build_model({"name": "baseline", "backbone": "resnet_tiny", "learn_threshold": True})
    state = model.state_dict()
    key = next(k for k, v in state.items() if v.dim() == 4)
    state[key] = torch.zeros(state[key].shape[0] * 2, *state[key].shape[1:])  # a wider layer
    torch.save({"model": state}, tmp_path / "wide.pt")
    assert main(["eval", *BASELINE, f"data.root={voc_root}", "--checkpoint", str(tmp_path / "wide.pt")]) == 2
    _one_line_error(capsys, "0 missing / 0 unexpected / 1 shape-mismatched keys", key)


def test_cuda_without_cuda(voc_root, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["eval", *BASELINE, f"data.root={voc_root}", "train.device=cuda"]) == 2
    _one_line_error(capsys, "train.device=cuda", "no CUDA device")


def test_synth_bad_knob_and_bad_targets(tmp_path, capsys):
    assert main(["data", "synth", "--root", str(tmp_path / "s"), "diversity=abc"]) == 2
    _one_line_error(capsys, "diversity must be a number, got 'abc'")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    assert main(["data", "synth", "--root", str(tmp_path / "notes"), "--n-train", "2", "--n-val", "2"]) == 2
    _one_line_error(capsys, "notes is not empty")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    (tmp_path / "file.txt").write_text("x")
    assert main(["data", "synth", "--root", str(tmp_path / "file.txt"), "--n-train", "2", "--n-val", "2"]) == 2
    _one_line_error(capsys, "file.txt exists and is not a directory")


def test_notebook_config_of_an_unknown_name_generates_nothing(tmp_path, monkeypatch):
    from fsslab import lab

    monkeypatch.setenv("FSSLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(lab, "repo_root", lambda start=None: tmp_path)
    with pytest.raises(ConfigError, match="'synthetic/bogus_tiny' not found"):
        lab.notebook_config("bogus_tiny", quick=True)
    assert not (tmp_path / "data").exists()


def test_only_fsslab_errors_become_one_line(monkeypatch, capsys):
    def buggy(args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(cli, "_cmd_config", buggy)
    with pytest.raises(KeyError, match="a bug"):  # the traceback is kept
        main(["config", "--list"])

    def user_error(args):
        raise DatasetError("lists/train.txt: something the user can fix")

    monkeypatch.setattr(cli, "_cmd_config", user_error)
    assert main(["config", "--list"]) == 2
    _one_line_error(capsys, "lists/train.txt: something the user can fix")


def test_run_summaries_print_the_data_fallbacks(tmp_path, voc_root, capsys, monkeypatch):
    monkeypatch.setitem(models.MODEL_REGISTRY, "toy", "fixtures.toys:ToyNet")
    config = tmp_path / "toy.yaml"
    config.write_text(f"""
data: {{dataset: synthetic, root: "{voc_root}", batch_size: 2, workers: 0, size: 24, val_size: 64}}
model: {{name: toy}}
train: {{iterations: 2, log_every: 1, tensorboard: false, progress: false, device: cpu, validate: false,
        out_dir: "{tmp_path}/run"}}
eval: {{episodes: 4, seeds: [0]}}
""")
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("training data: "))
    # at least the 2 x 2 episodes trained on (test_data_episodes checks the counts of DataLoader workers)
    queries = int(line.split(" of ")[1].split()[0])
    assert queries >= 4 and "support crops fell back to the whole image" in line
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["data_stats"]["queries"] == queries
    assert main(["eval", str(config), "model.name=oracle", "data.workers=0"]) == 0
    out = capsys.readouterr().out
    assert "data: 0 of 4 queries without target pixels" in out
