"""``fsslab doctor``: a deliberately incomplete PASCAL layout (tests/fixtures/voc.py), each missing piece found
with the command that fixes it, in under 10 seconds; a complete one passes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from fixtures.voc import draw_sample, write_list, write_pair, write_voc_dataset

from fsslab.cli import main
from fsslab.config import load_config
from fsslab.data import build_fold_index
from fsslab.data.classes import get_benchmark
from fsslab.engine.prerequisites import preflight
from fsslab.models.backbones.networks import build_backbone, check_backbone_file


def _incomplete_pascal(root: Path) -> Path:
    """lists/train.txt whose labels hold only fold 0's novel classes (1..5) and one of whose files is gone; no
    lists/val.txt; no fold index."""
    pairs = []
    for i in range(6):
        image, label = draw_sample(96, 128, [(i % 5 + 1, "rect", (8, 8, 80, 100))], seed=i)
        pair = (f"JPEGImages/t{i}.jpg", f"SegmentationClassAug/t{i}.png")
        write_pair(root, *pair, image, label)
        pairs.append(pair)
    write_list(root, "train", pairs)
    (root / pairs[2][1]).unlink()
    return root


def _run(config: str, changes: dict, capsys) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = main(["doctor", config, *(f"{k}={v}" for k, v in changes.items())])
    return code, capsys.readouterr().out, time.perf_counter() - start


def test_doctor_finds_every_missing_piece_of_an_incomplete_pascal_layout(tmp_path, capsys):
    root = _incomplete_pascal(tmp_path / "pascal")
    initmodel = tmp_path / "initmodel"
    initmodel.mkdir()
    torch.save(build_backbone("resnet_tiny").state_dict(), initmodel / "resnet50_v2.pth")  # not ResNet-50's layout
    code, out, seconds = _run("pascal/pspnet_base_r50_fold0", {
        "data.root": root, "model.params.pretrained": initmodel / "resnet50_v2.pth", "train.device": "cuda",
        "train.keep_checkpoints": 10**9, "train.out_dir": tmp_path / "run"}, capsys)  # fmt: skip
    assert code == 1 and seconds < 10, (seconds, out)
    expected = [
        "1 file(s) listed in",  # a listed label that is gone
        "SegmentationClassAug/t2.png",
        "lists/val.txt does not exist",  # the eval list
        "fix: fsslab data pascal --voc",  # the command that writes both
        "no base class of fold 0",  # labels without the base classes the base learner learns
        "is not the expected resnet50 ImageNet file",  # key names / shapes of the ImageNet file
        "GiB free at",  # the checkpoints do not fit
    ]
    if not torch.cuda.is_available():
        expected.append("train.device=cuda but no CUDA device")
    for text in expected:
        assert text in out, (text, out)


def test_doctor_finds_a_missing_stage_1_and_unbuilt_fold_indices(tmp_path, capsys):
    # a layout of its own: the session's shared voc_root gets its fold indices built by other tests
    voc_root = write_voc_dataset(tmp_path / "voc", n_train=12, n_val=12)
    code, out, seconds = _run("pascal/amformer_r50_fold0_1shot", {
        "data.root": voc_root, "train.device": "cpu", "train.out_dir": tmp_path / "run"}, capsys)  # fmt: skip
    assert code == 1 and seconds < 10, (seconds, out)
    assert "pspnet_base_r50_fold0/best.pt, the run of its prerequisite pascal/pspnet_base_r50_fold0" in out
    assert "fix: fsslab train pascal/pspnet_base_r50_fold0 data.fold=0" in out
    for split in ("train", "val"):
        assert f"fold index of {split} fold 0" in out and "fix: fsslab data lists --dataset pascal" in out


def test_a_complete_layout_is_ready(tmp_path, capsys):
    root = write_voc_dataset(tmp_path / "voc", n_train=12, n_val=12)
    benchmark = get_benchmark("pascal", root)
    build_fold_index(benchmark, root, "train", 0, protocol="pfenet")
    build_fold_index(benchmark, root, "val", 0)
    cfg = load_config("synthetic/baseline_tiny", changes={
        "data.dataset": "pascal", "data.root": str(root), "data.synthetic": None, "data.protocol": "pfenet",
        "model.init_checkpoint": None, "model.prerequisite": None, "train.device": "cpu",
        "train.out_dir": str(tmp_path / "run")})  # fmt: skip
    assert preflight(cfg) == []
    code, out, _ = _run("synthetic/baseline_tiny", {
        "data.dataset": "pascal", "data.root": root, "data.synthetic": "null", "data.protocol": "pfenet",
        "model.init_checkpoint": "null", "model.prerequisite": "null", "train.device": "cpu",
        "train.out_dir": tmp_path / "run"}, capsys)  # fmt: skip
    assert code == 0 and "ready" in out, out


def test_weight_file_check_accepts_the_right_layout_and_names_the_wrong_one(tmp_path):
    good = tmp_path / "tiny.pth"
    torch.save({"state_dict": build_backbone("resnet_tiny").state_dict()}, good)
    assert check_backbone_file(good, "resnet_tiny").loaded > 0
    with pytest.raises(ValueError, match="sha256"):
        check_backbone_file(good, "resnet_tiny", expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="does not match backbone"):
        check_backbone_file(good, "resnet50")
