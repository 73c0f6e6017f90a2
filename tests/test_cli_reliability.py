"""Round three of bad input through the command line (issue #26, item 6): each case is one clear line and exit
status 2, and nothing is overwritten or lost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures.toys import ToyEpisodes, ToyNet, toy_config
from PIL import Image

from fsslab.cli import main
from fsslab.config import ConfigError
from fsslab.data.episodes.folder import read_binary_mask
from fsslab.data.prep.coco import load_instances
from fsslab.errors import DatasetError, PrepError


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note: ", "warning: "))]
    assert "Traceback" not in err and len(lines) == 2 and lines[0].startswith("fsslab "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_a_directory_as_config_is_named_as_such(tmp_path, capsys):
    assert main(["config", str(tmp_path)]) == 2
    _one_line(capsys, str(tmp_path), "is a directory, not a YAML file")


def test_a_yaml_bomb_inside_model_params_is_refused_at_once(tmp_path, capsys):
    levels = ["      a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"      {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    (tmp_path / "bomb.yaml").write_text("model:\n  name: baseline\n  params:\n    extra:\n" + "\n".join(levels) + "\n")
    assert main(["config", str(tmp_path / "bomb.yaml")]) == 2
    _one_line(capsys, "bomb.yaml", "expand to more than")


def test_eval_json_target_is_checked_before_the_evaluation(tmp_path, capsys, monkeypatch):
    from fsslab import cli

    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("the config was loaded before --json was checked"))
    assert main(["eval", "synthetic/baseline_tiny", "--json", str(tmp_path)]) == 2
    _one_line(capsys, "--json", "is a directory")
    (tmp_path / "file").write_text("x")
    assert main(["eval", "synthetic/baseline_tiny", "--json", str(tmp_path / "file" / "eval.json")]) == 2
    _one_line(capsys, "--json", "cannot be written")


def test_synth_over_a_benchmark_of_another_seed_is_refused(tmp_path, capsys):
    small = ["--n-train", "4", "--n-val", "4", "--n-pretrain", "0", "--workers", "0", "--no-progress"]
    assert main(["data", "synth", "--root", str(tmp_path), "--seed", "0", *small]) == 0
    capsys.readouterr()
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["data", "synth", "--root", str(tmp_path), "--seed", "5", *small]) == 2
    _one_line(capsys, "already holds a synthetic benchmark of another configuration", "seed 0 -> 5", "--overwrite")
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert main(["data", "synth", "--root", str(tmp_path), "--seed", "0", *small]) == 0  # the same: regenerated
    assert main(["data", "synth", "--root", str(tmp_path), "--seed", "5", "--overwrite", *small]) == 0
    assert json.loads((tmp_path / "meta.json").read_text())["seed"] == 5


def test_nothing_trainable_is_a_config_error(tmp_path):
    from fsslab.engine.train.trainer import Trainer

    frozen = ToyNet().requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing to train: every parameter of ToyNet"):
        Trainer.from_config(toy_config(tmp_path), frozen, ToyEpisodes(4))


def test_coco_json_whose_top_level_is_a_list(tmp_path):
    (tmp_path / "instances.json").write_text("[]")
    with pytest.raises(PrepError, match="instances.json: the top level is a JSON list"):
        load_instances(tmp_path / "instances.json")


def test_base_label_models_cannot_train_on_class_folders(tmp_path, capsys):
    assert main(["train", "synthetic/amformer_tiny", "data.dataset=folder", "data.params.classes={train: [a], test: [b]}",
                 f"data.root={tmp_path}", "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, "data.dataset=folder", "no base-class annotation", "amformer")
    assert not (tmp_path / "run").exists()


def test_class_folder_masks_follow_the_one_convention(tmp_path):
    """VOC style 0/1/255: 255 is an ignore band (not the object); 0/100 is the object (not empty);
    0/128/255 is refused with the mask_threshold hint."""
    voc = np.zeros((6, 6), np.uint8)
    voc[1:5, 1:5] = 255
    voc[2:4, 2:4] = 1
    Image.fromarray(voc).save(tmp_path / "voc.png")
    assert read_binary_mask(tmp_path / "voc.png", threshold=None).tolist() == voc.tolist()
    Image.fromarray((voc > 0).astype(np.uint8) * 100).save(tmp_path / "hundred.png")
    assert read_binary_mask(tmp_path / "hundred.png", threshold=None).sum() == 16
    soft = voc.copy()
    soft[0, 0] = 128
    Image.fromarray(soft).save(tmp_path / "soft.png")
    with pytest.raises(DatasetError, match="not binary: it holds the values 0, 1, 128, 255"):
        read_binary_mask(tmp_path / "soft.png", threshold=None)
    with pytest.raises(DatasetError, match="none reaches the object threshold 128"):
        read_binary_mask(tmp_path / "hundred.png")  # FSS-1000's rule would have read it as empty
