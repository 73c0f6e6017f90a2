"""COCO preparation on malformed input: bad polygons are dropped and reported (never a crash or an OOM),
malformed records stop the run with one line naming the file and the record."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.prep import coco_image, polygon_annotation, write_coco, write_jpeg

from fsslab.cli import main as cli_main
from fsslab.data.classes import COCO_ID_TO_INDEX
from fsslab.data.prep import PrepError, coco_semantic_label, prepare_coco
from fsslab.data.prep.coco_checks import clean_polygons, clip_polygon

pytest.importorskip("pycocotools")

H, W = 40, 48
PERSON, BOTTLE = COCO_ID_TO_INDEX[1], COCO_ID_TO_INDEX[44]
TESTS = Path(__file__).resolve().parents[1]


def _polygon(ann_id: int, image_id: int, *polygons: list) -> dict:
    return {**polygon_annotation(ann_id, image_id, 1, (0, 0, 1, 1)), "segmentation": list(polygons)}


def _label(out: Path, image_id: int) -> np.ndarray:
    return cv2.imread(str(out / "SegmentationClass" / "train2014" / f"COCO_train2014_{image_id:012d}.png"),
                      cv2.IMREAD_UNCHANGED)


def _dropped(summary: dict) -> list[str]:
    return [name for reason, names in summary["skipped"].items() if "dropped" in reason for name in names]


def test_nan_and_huge_polygons_are_dropped_not_rasterised(tmp_path):
    """The polygons that segfaulted pycocotools (NaN) or made it allocate 18.8 GB (1e9..1e12 coordinates) run in
    a child process under a 3 GB address-space limit: a regression fails this test instead of the suite."""
    good = [10, 10, 20, 10, 20, 20, 10, 20]
    anns = [
        _polygon(1, 1, [5, 5, float("nan"), 5, 15, 15]),
        _polygon(2, 2, [0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]),
        _polygon(3, 3, [0, 0, 1e12, 3, 5, 1e12]),
        _polygon(4, 4, [0, 0, float("inf"), 0, 5, 5]),
        _polygon(5, 5, [0, 0, 10, 0, 10, 10, 0, 10], [1, 2, "x", 4, 5, 6]),  # one good polygon, one not numeric
        _polygon(6, 6, good, [1e10, 1e10, 1e10 + 5, 1e10, 1e10, 1e10 + 5]),  # good + absurd: the good one stays
    ]
    images = [coco_image(i, "train2014", H, W) for i in range(1, 7)]
    write_coco(tmp_path / "coco", "train2014", images, anns)
    (tmp_path / "coco" / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]},
                   allow_nan=True))  # JSON with NaN/Infinity, as Python's json writes them
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from fsslab.data.prep import prepare_coco
        prepare_coco({str(tmp_path / 'coco')!r}, {str(tmp_path / 'out')!r}, splits=("train2014",),
                     progress=False, keep_empty=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "lists" / "prep_summary_coco.json").read_text())
    dropped = " | ".join(_dropped(summary))
    for ann_id, words in ((1, "NaN or infinite"), (2, "far outside"), (3, "far outside"), (4, "NaN or infinite"),
                          (5, "not a list of numbers"), (6, "far outside")):
        assert f"annotation {ann_id}: " in dropped and words in dropped.split(f"annotation {ann_id}: ")[1]
    assert not _label(tmp_path / "out", 1).any() and not _label(tmp_path / "out", 2).any()
    assert (_label(tmp_path / "out", 5)[:10, :10] == 1).all()  # the good polygon of a half-bad annotation
    assert (_label(tmp_path / "out", 6)[10:20, 10:20] == 1).all()


def test_polygons_moderately_outside_are_clipped_exactly():
    # a triangle whose tip is outside the image: clamping the tip would move both edges; clipping keeps them
    # (the image lies wholly inside it, so the clipped polygon is the image rectangle, not a smaller triangle)
    triangle = np.array([[0.0, 0.0], [2.0 * W, 0.0], [0.0, 2.0 * W]])
    clipped = clip_polygon(triangle, W, H)
    assert {tuple(v) for v in clipped.tolist()} == {(0.0, 0.0), (W, 0.0), (W, H), (0.0, H)}
    outside = [-10, 5, 20, 5, 20, 15, -10, 15]  # a box bleeding over the left border
    label, problems = coco_semantic_label([_polygon(1, 1, outside)], H, W, {1: PERSON})
    assert problems == []
    inside, _ = coco_semantic_label([_polygon(1, 1, [0, 5, 20, 5, 20, 15, 0, 15])], H, W, {1: PERSON})
    assert (label == inside).all() and label.any()
    polygons, problems = clean_polygons([[0, 0, 5, 5, 10, 10], [-30, -30, -20, -30, -20, -20]], H, W)
    assert polygons == [] and len(problems) == 2 and all("no area inside the image" in p for p in problems)


def test_bad_category_id_and_rle_are_dropped_per_annotation(tmp_path):
    box = [0, 0, 8, 0, 8, 8, 0, 8]
    anns = [
        {**_polygon(1, 1, box), "category_id": "x"},
        {**_polygon(2, 1, box), "category_id": 44},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": {"size": [H, W], "counts": "\x7f\x7f\x7f"}},  # pycocotools decoded this past its end
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": [-5, H * W + 5]}},
        {"id": 5, "image_id": "one", "category_id": 1, "segmentation": [box]},
    ]
    write_coco(tmp_path / "coco", "train2014", [coco_image(1, "train2014", H, W)], anns)
    summary = prepare_coco(tmp_path / "coco", tmp_path / "out", splits=("train2014",), progress=False)
    dropped = " | ".join(_dropped(summary.to_dict()))
    assert "annotation 1: category_id 'x' is not an integer" in dropped
    assert "annotation 3: bad segmentation (compressed RLE string has an invalid character" in dropped
    assert "annotation 4: bad segmentation (RLE has negative run lengths)" in dropped
    assert any("without an integer image_id" in reason for reason in summary.skipped)
    assert (_label(tmp_path / "out", 1)[:8, :8] == BOTTLE).all()  # the good annotation of the image is kept
    assert summary.n_dropped_parts == 3 and "3 annotation parts dropped" in str(summary)


def test_image_file_of_another_size_is_skipped(tmp_path):
    write_coco(tmp_path / "coco", "train2014", [coco_image(1, "train2014", H, W)],
               [polygon_annotation(1, 1, 1, (0, 0, 8, 8))])
    write_jpeg(tmp_path / "coco" / "train2014" / coco_image(1, "train2014", H, W)["file_name"], H // 2, W)
    summary = prepare_coco(tmp_path / "coco", tmp_path / "out", splits=("train2014",), progress=False)
    assert summary.written == 0 and any("differs from the JSON" in reason for reason in summary.skipped)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["categories"][3].pop("id"), r"instances_train2014\.json: categories\[3\] has no 'id'"),
        (lambda d: d["categories"][0].update(id="x"), r"categories\[0\] has 'id': 'x', not an integer"),
        (lambda d: d["images"][0].pop("height"), r"instances_train2014\.json: images\[0\] \(id 1\) has no 'height'"),
        (lambda d: d["images"][0].update(width=1e9), r"images\[0\] \(id 1\) \(.*\.jpg\) has an impossible size"),
    ],
    ids=["category without id", "category id 'x'", "image without height", "image 1e9 wide"],
)
def test_malformed_records_are_one_line_naming_file_and_record(tmp_path, capsys, edit, message):
    path = write_coco(tmp_path / "coco", "train2014", [coco_image(1, "train2014", H, W)],
                      [polygon_annotation(1, 1, 1, (0, 0, 8, 8))])
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PrepError, match=message):
        prepare_coco(tmp_path / "coco", tmp_path / "out", splits=("train2014",), progress=False)
    status = cli_main(["data", "coco", "--coco", str(tmp_path / "coco"), "--out", str(tmp_path / "o2"),
                       "--splits", "train2014", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "instances_train2014.json" in err
    assert len(err.strip().splitlines()) <= 2  # the error line (and the FSSLAB_DEBUG hint)
