"""`fsslab predict` and fsslab.predict: your own images, with mask / box / scribble supports and shipped models.

The images are rendered by the synthetic benchmark the shipped checkpoints were trained on (fold 0, whose
novel classes 1..5 the models never saw in training), written as plain PNG files: what a user would hand in.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import fsslab
import fsslab.predict
from fsslab.cli import main
from fsslab.predict import PredictError, Support, load_model, predict

# val images of the synthetic benchmark (the shipped checkpoints' data seed): index -> the class used here
# an image whose one novel-class object (class 1, beside a base-class one) the shipped AMFormer segments well from
# its own mask (IoU 0.94), so that the resize, box and K-shot checks below measure the pipeline, not the model's
# base-class bias; how well the models do over images is the median test below
SINGLE = (19, 1)
PAIR = (6, 1, 5)  # two objects side by side: classes 1 and 5
# the first 8 val images holding exactly one novel-class object of fold 0 (and base-class ones): index, class
SELF_SUPPORT = [(2, 5), (4, 2), (5, 5), (10, 2), (11, 1), (12, 1), (19, 1), (20, 2)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """PNG files: images/img{i}.png, the object of class c as masks/img{i}_c{c}.png (0/255), + labels."""
    from fsslab.data.synthetic import SyntheticConfig, render_sample
    from fsslab.zoo import pretrained_config

    config = SyntheticConfig.from_dict(pretrained_config("ipmt_tiny_fold0_1shot").data.synthetic)
    root = tmp_path_factory.mktemp("predict_images")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    labels = {}
    (root / "self").mkdir()  # SELF_SUPPORT's images: out of images/, which the CLI test predicts as a folder
    for index, *classes in (SINGLE, PAIR, *SELF_SUPPORT):
        image, label = render_sample(config, "val", index)
        if index in (SINGLE[0], PAIR[0]):
            Image.fromarray(image).save(root / "images" / f"img{index}.png")
        Image.fromarray(image).save(root / "self" / f"img{index}.png")
        for c in classes:
            Image.fromarray(((label == c) * 255).astype(np.uint8)).save(root / "masks" / f"img{index}_c{c}.png")
        labels[index] = label
    return {"images": root / "images", "self": root / "self", "masks": root / "masks", "labels": labels}


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: load_model(pretrained=f"{name}_tiny_fold0_1shot") for name in ("baseline", "ipmt", "amformer")}


def iou(pred: np.ndarray, label: np.ndarray, class_id: int) -> float:
    """IoU of a 0/1 (or 0/255) prediction with one class of a label, its 255 pixels ignored."""
    valid = label != 255
    p, t = pred.astype(bool) & valid, (label == class_id) & valid
    return float((p & t).sum() / max((p | t).sum(), 1))


# ------------------------------------------------------------------------------------------- python API
@pytest.mark.parametrize(("name", "bound"), [("baseline", 0.6), ("ipmt", 0.5), ("amformer", 0.6)])
def test_the_support_itself_as_query_is_segmented(images, models, name, bound):
    """The median IoU over SELF_SUPPORT when each query is its own support (measured with the zoo of 2026-12-08:
    baseline 0.73, IPMT 0.63, AMFormer 0.75; predicting every pixel scores 0.16. The meta-learners' ranges reach
    0.0-0.1 on an image or two: they put 16-32% of their foreground on base-class objects, docs/quality.md)."""
    ious = []
    for index, c in SELF_SUPPORT:
        path = images["self"] / f"img{index}.png"
        support = Support.from_files(path, mask=images["masks"] / f"img{index}_c{c}.png")
        (result,) = predict(models[name], [support], path, device="cpu")
        assert result.mask.shape == images["labels"][index].shape
        ious.append(iou(result.mask, images["labels"][index], c))
    assert np.median(ious) > bound, ious
    summary = result.summary()
    assert 0.05 < summary["foreground_fraction"] < 0.6 and 0.5 <= summary["mean_confidence"] <= 1.0


def test_the_prediction_follows_the_support(images, models):
    """Same query, the mask of one or the other object as support (baseline: 0.78 vs 0.26 IoU on class 1)."""
    index, first, second = PAIR
    image = images["images"] / f"img{index}.png"
    label = images["labels"][index]
    results = {c: predict(models["baseline"], [Support.from_files(image, mask=images["masks"] / f"img{index}_c{c}.png")],
                          image)[0] for c in (first, second)}  # fmt: skip
    assert iou(results[first].mask, label, first) > 0.6
    assert iou(results[first].mask, label, first) - iou(results[second].mask, label, first) > 0.3


def test_queries_of_any_size_get_masks_of_their_size(images, models):
    """The protocol's resize (long side 112 here) and its exact inverse: a 2x query scores like the original."""
    index, c = SINGLE
    image = np.array(Image.open(images["images"] / f"img{index}.png"))
    label = images["labels"][index]
    support = Support(image, (label == c).astype(np.uint8))
    big = cv2.resize(image, (301, 287), interpolation=cv2.INTER_LINEAR)
    big_label = cv2.resize(label, (301, 287), interpolation=cv2.INTER_NEAREST)
    small = image[:37, :53]
    results = predict(models["amformer"], [support], [big, small, image], device="cpu")
    assert [r.mask.shape for r in results] == [(287, 301), (37, 53), image.shape[:2]]
    assert [r.source for r in results] == ["query_0", "query_1", "query_2"]
    assert iou(results[0].mask, big_label, c) > 0.65
    for protocol in ("ipmt", "amformer"):  # the other protocols' transforms also come back to the query's size
        (r,) = predict(models["baseline"], [support], [big], protocol=protocol)
        assert r.mask.shape == (287, 301) and iou(r.mask, big_label, c) > 0.5


def test_box_scribble_and_k_shots(images, models, tmp_path):
    index, c = SINGLE
    path = images["images"] / f"img{index}.png"
    label = images["labels"][index]
    ys, xs = np.nonzero(label == c)
    box = Support.from_files(path, box=f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}")
    assert box.kind == "box" and box.label.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    strokes = np.zeros((*label.shape, 4), np.uint8)  # a red stroke on a transparent canvas
    cv2.line(strokes, (int(xs.mean()) - 8, int(ys.mean())), (int(xs.mean()) + 8, int(ys.mean())), (255, 0, 0, 255), 3)
    Image.fromarray(strokes).save(tmp_path / "strokes.png")
    scribble = Support.from_files(path, scribble=tmp_path / "strokes.png")
    assert scribble.kind == "scribble" and 0 < scribble.label.sum() < 100 and set(np.unique(scribble.label)) == {0, 1}
    mask = Support.from_files(path, mask=images["masks"] / f"img{index}_c{c}.png")
    results = predict(models["amformer"], [mask, box, scribble], [path])
    assert iou(results[0].mask, label, c) > 0.7  # mask + box + scribble (K=3)
    (from_box,) = predict(models["amformer"], [box], [path])
    assert iou(from_box.mask, label, c) > 0.7


def test_write_predictions_and_the_callable_module(images, models, tmp_path):
    index, c = SINGLE
    path = images["images"] / f"img{index}.png"
    support = Support.from_files(path, mask=images["masks"] / f"img{index}_c{c}.png")
    other = tmp_path / "other"
    other.mkdir()
    Image.open(path).save(other / f"img{index}.png")  # the same stem twice: numbered outputs
    assert fsslab.Support is Support and fsslab.load_model is load_model  # exported from the package
    results = fsslab.predict(models["baseline"], [support], [path, other])  # the module is callable
    records = fsslab.predict.write_predictions(results, tmp_path / "out")
    assert [r["mask"] for r in records] == [f"img{index}_mask.png", f"img{index}_2_mask.png"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert lines == records
    mask = np.array(Image.open(tmp_path / "out" / records[0]["mask"]))
    assert mask.shape == results[0].mask.shape and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, results[0].mask > 0)
    assert np.array(Image.open(tmp_path / "out" / records[0]["overlay"])).shape == (*mask.shape, 3)


# ------------------------------------------------------------------------------------------- command line
def test_cli_predict_with_a_folder_and_each_model_source(images, tmp_path, capsys):
    index, c = SINGLE
    root = images["images"]
    support = f"{root / f'img{index}.png'}:{images['masks'] / f'img{index}_c{c}.png'}"
    assert main(["predict", "--pretrained", "baseline_tiny_fold0_1shot", "--support", support, str(root),
                 "--out", str(tmp_path / "pre"), "--device", "cpu", "--amp", "bf16"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["queries"] == 2 and summary["size"] == 112 and summary["amp"] == "bf16"
    records = [json.loads(x) for x in (tmp_path / "pre" / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["query"]).name for r in records] == sorted([f"img{PAIR[0]}.png", f"img{index}.png"])
    for record in records:  # each mask has its query's size
        query = np.array(Image.open(record["query"]))
        assert np.array(Image.open(tmp_path / "pre" / record["mask"])).shape == query.shape[:2]
    model = load_model(pretrained="baseline_tiny_fold0_1shot")
    query = str(root / f"img{index}.png")
    (fp32,) = predict(model, [Support.from_files(*support.rsplit(":", 1))], query)
    bf16 = np.array(Image.open(tmp_path / "pre" / f"img{index}_mask.png")) > 0
    assert (bf16 == fp32.mask.astype(bool)).mean() > 0.97  # bf16 autocast: nearly the same mask
    # the same weights as an fsslab run checkpoint, with the config saved in it or given: the same masks
    from fsslab.zoo import pretrained_config

    cfg = pretrained_config("baseline_tiny_fold0_1shot")
    torch.save({"model": model.module.state_dict(), "config": cfg.to_dict()}, tmp_path / "latest.pt")
    for extra in ([], ["--config", "synthetic/baseline_tiny"]):
        out = tmp_path / f"run{len(extra)}"
        assert main(["predict", "--checkpoint", str(tmp_path / "latest.pt"), *extra, "--support", support, query,
                     "--out", str(out), "--device", "cpu"]) == 0
        assert np.array_equal(np.array(Image.open(out / f"img{index}_mask.png")) > 0, fp32.mask > 0)


@pytest.mark.slow
def test_cli_predict_with_an_official_checkpoint(images, tmp_path, capsys):
    """An official-format file (a reference IPMT ResNet-50, random weights, written by export_official)."""
    from fsslab.models.ipmt.official import build_reference_model
    from fsslab.models.official import export_official

    export_official("ipmt", build_reference_model(shot=1, layers=50), tmp_path / "ipmt.pth")
    index, c = SINGLE
    root = images["images"]
    args = ["predict", "--checkpoint", str(tmp_path / "ipmt.pth"), "--official", "--support",
            f"{root / f'img{index}.png'}:{images['masks'] / f'img{index}_c{c}.png'}", str(root / f"img{index}.png"),
            "--out", str(tmp_path / "out"), "--size", "64", "--device", "cpu"]
    assert main(args) == 2  # --official without --config
    assert "--official needs --config" in capsys.readouterr().err
    assert main([*args, "--config", "pascal/ipmt_r50_fold0_1shot"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["protocol"] == "ipmt"
    mask = np.array(Image.open(tmp_path / "out" / f"img{index}_mask.png"))
    assert mask.shape == images["labels"][index].shape
    (tmp_path / "ipmt.pth").unlink()  # 266 MB


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, images) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    index, c = SINGLE
    mask = np.array(Image.open(images["masks"] / f"img{index}_c{c}.png"))
    files = {"image": images["images"] / f"img{index}.png", "mask": images["masks"] / f"img{index}_c{c}.png"}
    Image.fromarray(mask[:-3]).save(root / "short_mask.png")
    Image.fromarray(np.zeros_like(mask)).save(root / "empty_mask.png")
    three = mask.copy()
    three[:5] = 128
    Image.fromarray(three).save(root / "three_values.png")
    cv2.imwrite(str(root / "lossy_mask.jpg"), cv2.GaussianBlur(mask, (5, 5), 2))
    colour = np.zeros((*mask.shape, 3), np.uint8)
    colour[mask > 0] = (255, 0, 0)
    Image.fromarray(colour).save(root / "colour_mask.png")
    (root / "truncated.png").write_bytes(files["image"].read_bytes()[:200])
    (root / "text.jpg").write_text("not an image")
    Image.fromarray(np.zeros((*mask.shape, 4), np.uint8)).save(root / "blank_scribble.png")
    (root / "empty_folder").mkdir()
    files.update({p.stem: p for p in root.iterdir()})
    return files


def _error_cases(f: dict[str, Path]) -> list[tuple[list[str], list[str]]]:
    """(support/query arguments, fragments the error line must hold)."""
    img, mask = str(f["image"]), str(f["mask"])
    h, w = np.array(Image.open(mask)).shape
    return [
        (["--support", f"{img}:{f['short_mask']}", img], [str(f["short_mask"]), f"is {h - 3}x{w}", "same size"]),
        (["--support", img, "--box", f"10,10,{w + 1},20", img], [img, "does not fit", f"x1 <= {w}"]),
        (["--support", img, "--box", "10,30,40,20", img], ["does not fit", "y0 < y1"]),
        (["--support", img, "--box", "10,10,40", img], ["box '10,10,40'", "four integers"]),
        (["--support", f"{img}:{f['empty_mask']}", img], [str(f["empty_mask"]), "is empty"]),
        (["--support", f"{img}:{f['three_values']}", img], [str(f["three_values"]), "not binary", "0, 128, 255"]),
        (["--support", f"{img}:{f['lossy_mask']}", img], [str(f["lossy_mask"]), "not binary", "JPEG"]),
        (["--support", f"{img}:{f['colour_mask']}", img], [str(f["colour_mask"]), "colour image"]),
        (["--support", f"{f['truncated']}:{mask}", img], [f"support image {f['truncated']} is unreadable: truncated PNG"]),
        (["--support", f"{f['text']}:{mask}", img], [f"support image {f['text']} is unreadable", "decode"]),
        (["--support", f"{img}:{f['text']}", img], [f"mask {f['text']} is unreadable: not an image file"]),
        (["--support", f"{img}:{mask}", str(f["text"])], [f"query image {f['text']} is unreadable: not an image"]),
        (["--support", f"{img}:{mask}", str(f["image"].parent / "missing.png")], ["query not found", "missing.png"]),
        (["--support", f"{img}:{f['image'].parent / 'nope.png'}", img], ["mask not found", "nope.png"]),
        (["--support", img, "--scribble", str(f["blank_scribble"]), img], [str(f["blank_scribble"]), "no drawn pixel"]),
        (["--support", img, img], [f"--support {img}: give its mask"]),
        ([img], ["at least one --support"]),
        (["--support", f"{img}:{mask}", str(f["empty_folder"])], [str(f["empty_folder"]), "holds no image"]),
    ]


def test_every_bad_input_is_one_clear_line(bad_files, tmp_path, capsys):
    for arguments, fragments in _error_cases(bad_files):
        status = main(["predict", "--pretrained", "baseline_tiny_fold0_1shot", *arguments,
                       "--out", str(tmp_path / "out"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert status == 2, (arguments, err)
        message = err.splitlines()[0]
        assert message.startswith("fsslab predict: error: ") and "Traceback" not in err, err
        for fragment in fragments:
            assert fragment in message, (fragment, message)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


def test_bad_model_and_device_choices(bad_files, tmp_path, capsys):
    base = ["predict", "--support", f"{bad_files['image']}:{bad_files['mask']}", str(bad_files["image"]),
            "--out", str(tmp_path / "out")]
    cases = [
        (["--pretrained", "no_such_model"], ["--pretrained no_such_model", "ipmt_tiny_fold0_1shot"]),
        ([], ["choose a model"]),
        (["--checkpoint", str(tmp_path / "none.pt")], ["none.pt", "does not exist"]),
        (["--device", "tpu"], ["'tpu' is not a device"]),
    ]
    if not torch.cuda.is_available():
        cases.append((["--pretrained", "baseline_tiny_fold0_1shot", "--device", "cuda"], ["CUDA is not available"]))
        cases.append((["--pretrained", "baseline_tiny_fold0_1shot", "--amp", "fp16", "--device", "cpu"],
                      ["fp16 needs a CUDA device"]))
    for extra, fragments in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(f in err for f in fragments), (extra, err)
    # a run checkpoint whose weights do not fit the config given with it
    cfg_model = load_model(pretrained="baseline_tiny_fold0_1shot")
    torch.save({"model": cfg_model.module.state_dict()}, tmp_path / "weights.pt")
    assert main([*base, "--checkpoint", str(tmp_path / "weights.pt")]) == 2
    assert "holds no config; pass --config" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path / "weights.pt"), "--config", "synthetic/ipmt_tiny"]) == 2
    assert "does not fit the model of config" in capsys.readouterr().err


def test_box_or_scribble_needs_a_support_before_it(bad_files, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--box", "1,1,5,5", "--support", str(bad_files["image"]), str(bad_files["image"]),
              "--out", "x"])
    assert info.value.code == 2 and "put it after the --support IMG" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--support", str(bad_files["image"]), "--box", "1,1,5,5", "--scribble", "s.png",
              str(bad_files["image"]), "--out", "x"])
    assert "already has a box or a scribble" in capsys.readouterr().err


def test_support_labels_from_arrays_are_checked():
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(PredictError, match="differ in size"):
        Support(image, np.ones((20, 29), np.uint8))
    with pytest.raises(PredictError, match="no object pixel"):
        Support(image, np.zeros((20, 30), np.uint8))
    three = np.zeros((20, 30), np.uint8)
    three[:5], three[5:10] = 7, 9
    with pytest.raises(PredictError, match="not binary: it holds the values 0, 7, 9"):
        Support(image, three)
    tiny = np.zeros((400, 400), np.uint8)
    tiny[1, 1] = 1  # one pixel: nearest-neighbour resizing to 160 loses it
    with pytest.raises(PredictError, match="vanishes"):
        predict(torch.nn.Identity(), [Support(np.zeros((400, 400, 3), np.uint8), tiny)], [image], size=160)
