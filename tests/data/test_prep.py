"""Real-dataset preparation on tiny VOC+SBD and COCO trees written in their real formats."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.prep import (
    box_label,
    coco_image,
    polygon_annotation,
    rle_annotation,
    write_coco,
    write_palette_png,
    write_sbd,
    write_sbd_mat,
    write_voc,
)

from fsslab.data.classes import COCO_ID_TO_INDEX, voc_palette
from fsslab.data.prep import (
    PrepError,
    coco_semantic_label,
    prepare_coco,
    prepare_pascal,
    read_sbd_label,
    read_voc_label,
)

REPO = Path(__file__).resolve().parents[2]
H, W = 40, 48


def _label(root: Path, rel: str) -> np.ndarray:
    return cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED)


def _list(root: Path, split: str) -> list[str]:
    return [
        line.split()[0].split("/")[-1][:-4]
        for line in (root / "lists" / f"{split}.txt").read_text().splitlines()
    ]


@pytest.fixture()
def voc_sbd(tmp_path):
    """VOC: a, b train; c, d val. SBD train: a (also VOC), c (VOC val), e (SBD only), f (in VOC main val),
    h (listed, no .mat); SBD val: g."""
    voc = write_voc(
        tmp_path,
        train={"a": box_label(H, W, 3, (5, 5, 30, 30)), "b": box_label(H, W, 15, (2, 2, 20, 40))},
        val={"c": box_label(H, W, 8, (10, 10, 35, 40)), "d": box_label(H, W, 20, (3, 3, 9, 9))},
        main_val=["c", "d", "f"],
        extra_images={"e": (H, W), "f": (H, W), "g": (H, W), "h": (H, W)},
    )
    sbd = write_sbd(
        tmp_path,
        train={
            "a": box_label(H, W, 7, (0, 0, 40, 48), band=False),
            "c": box_label(H, W, 7, (0, 0, 10, 10), band=False),
            "e": box_label(H, W, 12, (4, 4, 36, 44), band=False),
            "f": box_label(H, W, 2, (4, 4, 20, 20), band=False),
        },
        val={"g": box_label(H, W, 19, (1, 1, 39, 47), band=False)},
        without_mat=["h"],
    )
    return voc, sbd


def test_voc_sbd_merge_values_and_deduplicated_lists(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    out = tmp_path / "pascal"
    summary = prepare_pascal(voc.parent.parent, sbd.parent.parent, out, progress=False)
    # VOC wins where both exist: "a" keeps VOC's class 3 and its 255 rim, not SBD's class 7
    a = _label(out, "SegmentationClassAug/a.png")
    assert a.dtype == np.uint8 and a.shape == (H, W)
    assert set(np.unique(a).tolist()) == {0, 3, 255} and (a == 3).sum() == 25 * 25
    e = _label(out, "SegmentationClassAug/e.png")  # SBD only
    assert set(np.unique(e).tolist()) == {0, 12} and (e == 12).sum() == 32 * 40
    # PFENet list: VOC train + SBD train minus VOC val (c) and minus VOC main val (f); each image once
    assert _list(out, "train") == ["a", "b", "e"] and _list(out, "val") == ["c", "d"]
    lines = (out / "lists" / "train.txt").read_text().splitlines()
    assert lines[0] == "JPEGImages/a.jpg SegmentationClassAug/a.png"
    assert all((out / rel).is_file() for line in lines for rel in line.split())  # images linked in
    # the listed-but-unannotated SBD image is reported, not dropped silently
    assert summary.skipped["no label: neither VOC SegmentationClass PNG nor SBD cls .mat"] == ["h"]
    assert summary.written == 7 and "h" in str(summary)
    saved = json.loads((out / "lists" / "prep_summary_pascal.json").read_text())
    assert saved["lists"]["lists/train.txt"] == 3


def test_aug_train_list_and_resume(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    out = tmp_path / "pascal"
    first = prepare_pascal(voc, sbd, out, train_list="aug", progress=False)
    assert _list(out, "train") == ["a", "b", "e", "f", "g"]  # SBD val joins; VOC val (c) never does
    marker = out / "SegmentationClassAug" / "e.png"
    marker.write_bytes(cv2.imencode(".png", np.full((H, W), 1, np.uint8))[1].tobytes())
    second = prepare_pascal(voc, sbd, out, train_list="aug", progress=False)
    assert second.written == 0 and second.existing == first.written
    assert (_label(out, "SegmentationClassAug/e.png") == 1).all()  # kept: resume does not redo work
    prepare_pascal(voc, sbd, out, train_list="aug", overwrite=True, progress=False)
    assert (_label(out, "SegmentationClassAug/e.png") == 12).any()


def test_corrupt_mat_mismatched_size_and_strict_mode(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    (sbd / "cls" / "e.mat").write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" + bytes(100))
    write_sbd_mat(sbd / "cls" / "g.mat", np.zeros((H + 2, W), np.uint8))  # label larger than its image
    summary = prepare_pascal(voc, sbd, tmp_path / "out", train_list="aug", progress=False)
    reasons = " | ".join(summary.skipped)
    assert "e.mat" in reasons and "corrupt .mat" in reasons
    assert "does not match image 40x48" in reasons and ["g"] in summary.skipped.values()
    assert "e" not in _list(tmp_path / "out", "train") and "g" not in _list(tmp_path / "out", "train")
    with pytest.raises(PrepError, match="no label|corrupt|does not match"):
        prepare_pascal(voc, sbd, tmp_path / "strict", train_list="aug", progress=False, strict=True)


def test_label_readers(tmp_path):
    label = box_label(H, W, 20, (5, 5, 15, 15))
    write_palette_png(tmp_path / "p.png", label)
    assert np.array_equal(read_voc_label(tmp_path / "p.png"), label)
    # a colour-rendered VOC label is mapped back through the colour map (void colour -> 255)
    colours = np.array(voc_palette(256), np.uint8)
    colours[255] = (224, 224, 192)
    cv2.imwrite(str(tmp_path / "rgb.png"), colours[label][..., ::-1])
    assert np.array_equal(read_voc_label(tmp_path / "rgb.png"), label)
    write_palette_png(tmp_path / "bad.png", np.full((4, 4), 33, np.uint8))
    with pytest.raises(PrepError, match=r"bad.png.*values \[33\]"):
        read_voc_label(tmp_path / "bad.png")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "p.png").read_bytes()[:40])
    with pytest.raises(PrepError, match="trunc.png"):
        read_voc_label(tmp_path / "trunc.png")
    write_sbd_mat(tmp_path / "s.mat", label % 255)
    assert np.array_equal(read_sbd_label(tmp_path / "s.mat"), label % 255)
    import scipy.io

    scipy.io.savemat(str(tmp_path / "other.mat"), {"GTinst": {"Segmentation": label}})
    with pytest.raises(PrepError, match="other.mat: no GTcls.Segmentation"):
        read_sbd_label(tmp_path / "other.mat")


def test_missing_directories_are_named(tmp_path, voc_sbd):
    voc, _ = voc_sbd
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_pascal(tmp_path / "nowhere", None, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is not an SBD directory"):
        prepare_pascal(voc, tmp_path / "empty", tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="nococo"):
        prepare_coco(tmp_path / "nococo", progress=False)
    (tmp_path / "coco" / "train2014").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="instances_train2014.json"):
        prepare_coco(tmp_path / "coco", splits=("train2014",), progress=False)


def _coco_tree(root: Path) -> dict:
    big = np.zeros((H, W), bool)
    big[5:35, 5:45] = True
    crowd = np.zeros((H, W), bool)
    crowd[30:40, 0:20] = True
    images = [
        coco_image(1, "train2014", H, W),
        coco_image(2, "train2014", H, W),
        coco_image(3, "train2014", H, W),
        coco_image(4, "train2014", H, W),
    ]
    anns = [
        rle_annotation(10, 1, 90, big),  # toothbrush (id 90 -> 80), compressed RLE, large
        polygon_annotation(11, 1, 1, (10, 10, 20, 20)),  # person (1), small: painted on top
        rle_annotation(12, 1, 18, crowd, crowd=True, compressed=False),  # crowd of dogs -> 255
        polygon_annotation(13, 3, 44, (0, 0, 8, 8)),  # bottle (44)
        {**polygon_annotation(14, 3, 44, (0, 0, 8, 8)), "segmentation": [[1, 2, 3, 4]]},  # degenerate
        polygon_annotation(15, 4, 5, (0, 0, 8, 8)),  # image 4's file is missing
    ]
    write_coco(root, "train2014", images, anns, missing_files=(images[3]["file_name"],))
    write_coco(root, "val2014", [coco_image(7, "val2014", H, W)], [rle_annotation(20, 7, 62, big)])
    return {"big": big, "crowd": crowd}


def test_coco_polygons_rle_crowd_and_reports(tmp_path):
    masks = _coco_tree(tmp_path / "coco")
    out = tmp_path / "coco_out"
    summary = prepare_coco(tmp_path / "coco", out, progress=False)
    label = _label(out, "SegmentationClass/train2014/COCO_train2014_000000000001.png")
    person, toothbrush = COCO_ID_TO_INDEX[1], COCO_ID_TO_INDEX[90]
    assert (person, toothbrush) == (1, 80)
    assert (label[10:20, 10:20] == person).all()  # the small instance stays on top of the large one
    assert (label == toothbrush).sum() == masks["big"].sum() - 100  # instances win over the crowd region
    assert (label[masks["crowd"] & ~masks["big"]] == 255).all()  # crowd -> ignore, instances win over it
    assert (label[~masks["big"] & ~masks["crowd"]] == 0).all()
    val = _label(out, "SegmentationClass/val2014/COCO_val2014_000000000007.png")
    assert set(np.unique(val).tolist()) == {0, COCO_ID_TO_INDEX[62]}
    # lists: image 2 (no annotations) and image 4 (missing file) are left out and reported
    train_lines = (out / "lists" / "train.txt").read_text().splitlines()
    assert [line.split()[0] for line in train_lines] == [
        "train2014/COCO_train2014_000000000001.jpg",
        "train2014/COCO_train2014_000000000003.jpg",
    ]
    assert train_lines[0].split()[1] == "SegmentationClass/train2014/COCO_train2014_000000000001.png"
    assert all((out / rel).is_file() for line in train_lines for rel in line.split())
    skipped = {reason: names for reason, names in summary.skipped.items()}
    assert any(
        "without annotations" in r and n == ["COCO_train2014_000000000002"] for r, n in skipped.items()
    )
    assert any("image file missing" in r for r in skipped)
    dropped = [name for reason, names in skipped.items() if "dropped" in reason for name in names]
    assert dropped and "annotation 14" in dropped[0] and "polygon" in dropped[0]
    assert (out / "lists" / "val.txt").read_text().count("\n") == 1
    # degenerate annotation dropped but the image still has its good bottle
    label3 = _label(out, "SegmentationClass/train2014/COCO_train2014_000000000003.png")
    assert (label3[:8, :8] == COCO_ID_TO_INDEX[44]).all()
    with pytest.raises(PrepError):
        prepare_coco(tmp_path / "coco", tmp_path / "strict", progress=False, strict=True)


def test_coco_crowd_modes_and_keep_empty(tmp_path):
    masks = _coco_tree(tmp_path / "coco")
    out = tmp_path / "o"
    prepare_coco(
        tmp_path / "coco", out, splits=("train2014",), crowd="class", keep_empty=True, progress=False
    )
    label = _label(out, "SegmentationClass/train2014/COCO_train2014_000000000001.png")
    assert (label[masks["crowd"] & ~masks["big"]] == COCO_ID_TO_INDEX[18]).all()
    assert "COCO_train2014_000000000002" in (out / "lists" / "train.txt").read_text()
    empty = coco_semantic_label([], H, W, COCO_ID_TO_INDEX, crowd="background")[0]
    assert empty.shape == (H, W) and not empty.any()


def test_corrupt_coco_json(tmp_path):
    _coco_tree(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "instances_val2014.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(PrepError, match="instances_val2014.json: not valid JSON"):
        prepare_coco(tmp_path / "coco", tmp_path / "o", splits=("val2014",), progress=False)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(PrepError, match=r"missing or malformed key\(s\) \['annotations', 'categories'\]"):
        prepare_coco(tmp_path / "coco", tmp_path / "o", splits=("val2014",), progress=False)


def _cli(script: str):
    """Import a data_prep script as a module (in-process: no interpreter start-up per call)."""
    spec = importlib.util.spec_from_file_location(f"cli_{script[:-3]}", REPO / "data_prep" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_prep_clis(voc_sbd, tmp_path, capsys):
    voc, sbd = voc_sbd
    for script in ("prepare_pascal.py", "prepare_coco.py", "build_fold_lists.py"):
        with pytest.raises(SystemExit) as exit_info:
            _cli(script).main(["--help"])
        assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out.lower()
    pascal = _cli("prepare_pascal.py")
    assert (
        pascal.main(["--voc", str(voc), "--sbd", str(sbd), "--out", str(tmp_path / "cli"), "--no-progress"])
        == 0
    )
    assert "skipped 1: no label" in capsys.readouterr().out and _list(tmp_path / "cli", "train") == [
        "a",
        "b",
        "e",
    ]
    assert pascal.main(["--voc", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "missing" in capsys.readouterr().err
    folds = _cli("build_fold_lists.py")
    assert (
        folds.main(["--dataset", "pascal", "--root", str(tmp_path / "cli"), "--folds", "0", "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    assert "train fold 0 (pfenet protocol" in out and "train fold 0 (bam protocol" in out
    assert (
        folds.main(["--dataset", "pascal", "--root", str(tmp_path / "cli"), "--folds", "0", "--no-progress"])
        == 0
    )
    assert capsys.readouterr().out.count("[cached]") == 3


def test_fsslab_data_exports_prep_lazily_and_keeps_its_import_errors(monkeypatch):
    import sys

    import fsslab.data
    import fsslab.data.prep

    assert fsslab.data._PREP_NAMES == set(fsslab.data.prep.__all__)
    assert fsslab.data.prepare_pascal is fsslab.data.prep.prepare_pascal
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fsslab.data.nope  # noqa: B018
    # a module that fails to import (a missing dependency) says so, instead of "no attribute"
    monkeypatch.setitem(sys.modules, "fsslab.data.prep", None)
    with pytest.raises(ModuleNotFoundError):
        fsslab.data.prepare_pascal  # noqa: B018


def test_sbd_labels_without_scipy_name_the_extra(tmp_path, monkeypatch):
    import sys

    from fsslab.data.prep import read_sbd_label

    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    with pytest.raises(PrepError, match=r"needs scipy: pip install 'fsslab\[prep\]'"):
        read_sbd_label(tmp_path / "2008_000001.mat")
