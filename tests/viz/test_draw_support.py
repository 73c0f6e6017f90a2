"""Drawing a support by hand (notebook 05) without a browser: box drags and scribble strokes → labels
(fsslab.viz.draw), the ipycanvas widget driven by the mouse events its frontend sends (fsslab.viz.draw_widget),
and the live predictions and the mask/box/scribble comparison (fsslab.lab.support)."""

from __future__ import annotations

import numpy as np
import pytest

from fsslab.config import load_config
from fsslab.engine import mask_iou
from fsslab.lab.support import ClassImages, LiveSupport, compare_support_labels
from fsslab.predict import PredictModel
from fsslab.viz.draw import BOX_RGB, SCRIBBLE_RGB, SupportSketch, box_from_drag, rasterize_strokes
from fsslab.viz.draw_widget import DrawSupport
from fsslab.zoo import load_pretrained


def test_box_from_a_drag_in_any_direction_clipped_to_the_image():
    assert box_from_drag((2.5, 3.2), (6.9, 8.0), (20, 30)) == (2, 3, 7, 9)
    assert box_from_drag((6.9, 8.0), (2.5, 3.2), (20, 30)) == (2, 3, 7, 9)  # dragged up-left
    assert box_from_drag((-5, -5), (100, 4), (20, 30)) == (0, 0, 30, 5)  # past the edges
    assert box_from_drag((-9, 2), (-1, 8), (20, 30)) is None  # wholly outside


def test_a_box_drag_on_an_enlarged_canvas_gives_the_filled_box():
    sketch = SupportSketch((20, 30), mode="box", scale=3)
    assert sketch.empty and "nothing drawn" in sketch.describe()
    with pytest.raises(ValueError, match="nothing drawn yet"):
        sketch.label()
    assert sketch.drag([(6, 9), (15, 20), (21, 27)])  # canvas pixels: image (2, 3) .. (7, 9)
    label = sketch.label()
    expected = np.zeros((20, 30), np.uint8)
    expected[3:10, 2:8] = 1
    assert label.dtype == np.uint8 and np.array_equal(label, expected)
    assert sketch.describe() == "box (2, 3, 8, 10): 42 object pixels of 600 (7.0%)"
    assert not sketch.drag([(30, 30), (31, 31)])  # a click, not a drag: the box stays
    assert sketch.box == (2, 3, 8, 10)
    sketch.drag([(60, 30), (30, 3)])  # a new drag replaces the box
    assert sketch.box == (10, 1, 21, 11)
    sketch.move(1, 1)  # moves without a pressed button change nothing
    assert sketch.box == (10, 1, 21, 11) and not sketch.release()


def test_scribble_strokes_add_up_and_stay_inside_the_image():
    sketch = SupportSketch((20, 30), mode="scribble", width=3)
    sketch.drag([(2, 10), (12, 10)])
    sketch.drag([(25, 2), (25, 40)])  # runs off the bottom edge
    label = sketch.label()
    assert np.array_equal(label == 1, rasterize_strokes(sketch.strokes, (20, 30), 3))
    assert label[10, 2:13].all() and label[9:12, 7].all() and not label[5, 7]  # 3 px wide, horizontal
    assert label[2:20, 25].all() and set(np.unique(label)) == {0, 1}
    assert sketch.describe().startswith("2 stroke(s), 3 px wide:")
    dot = SupportSketch((9, 9), mode="scribble", width=3)
    dot.drag([(4, 4)])  # a click is a dot (OpenCV's disc of radius 1)
    assert dot.label()[4, 4] == 1 and (dot.label() == 1).sum() == 5
    ignore = SupportSketch((9, 9), mode="scribble", width=1, unlabeled="ignore")
    ignore.drag([(1, 1), (7, 1)])
    assert set(np.unique(ignore.label())) == {1, 255}  # off the strokes: unknown, not background
    strokes = [list(stroke) for stroke in sketch.strokes]
    sketch.set_mode("box")  # switching the tool keeps the strokes for later; the box tool has nothing yet
    assert sketch.empty and sketch.mode == "box" and sketch.kept() == ["scribble"]
    sketch.drag([(0, 0), (9, 9)])
    assert sketch.kept() == ["box", "scribble"] and sketch.label().sum() == 100
    assert sketch.render(np.zeros((20, 30, 3), np.uint8))[15, 25].tolist() != list(SCRIBBLE_RGB)  # box shown only
    sketch.set_mode("scribble")  # back: the strokes as they were, the box kept
    assert sketch.strokes == strokes and np.array_equal(sketch.label() == 1, rasterize_strokes(strokes, (20, 30), 3))
    sketch.clear()  # erases the current tool's drawing only
    assert sketch.empty and sketch.kept() == ["box"]
    sketch.clear("all")
    assert sketch.kept() == []
    with pytest.raises(ValueError, match="mode must be one of"):
        sketch.set_mode("lasso")


def test_render_shows_the_drawing_on_the_enlarged_image():
    image = np.full((10, 12, 3), 40, np.uint8)
    sketch = SupportSketch((10, 12), mode="box", scale=2)
    sketch.drag([(4, 4), (12, 10)])
    out = sketch.render(image)
    assert out.shape == (20, 24, 3) and tuple(out[4, 8]) == BOX_RGB and tuple(out[8, 8]) == (40, 40, 40)
    scribble = SupportSketch((10, 12), mode="scribble", width=1)
    scribble.drag([(2, 5), (9, 5)])
    assert tuple(scribble.render(image, scale=1)[5, 5]) == SCRIBBLE_RGB


def _event(drawer: DrawSupport, kind: str, x: float, y: float) -> None:
    """A mouse event as ipycanvas' frontend sends it (canvas pixels), through the canvas' own dispatch."""
    drawer.canvas[1]._handle_frontend_event(None, {"event": kind, "x": x, "y": y}, [])


def test_the_canvas_widget_turns_mouse_events_into_labels():
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    seen: list = []
    drawer = DrawSupport(image, mode="box", scale=3, on_change=seen.append)
    assert (drawer.canvas.width, drawer.canvas.height) == (90, 60)
    _event(drawer, "mouse_down", 6, 9)
    _event(drawer, "mouse_move", 15, 20)
    assert drawer.sketch.pending_box() == (2, 3, 6, 7) and not seen  # outline only, no label while dragging
    _event(drawer, "mouse_up", 21, 27)
    assert len(seen) == 1 and (seen[0] == 1).sum() == 42 and "42 object pixels" in drawer.info.value
    drawer.mode.value = "scribble"  # the toggle: no scribble yet, the models go back to the mask, the box is kept
    assert seen[-1] is None and drawer.sketch.empty and "your box is kept" in drawer.info.value
    _event(drawer, "mouse_down", 3, 30)
    for x in range(6, 60, 6):
        _event(drawer, "mouse_move", x, 30)
    _event(drawer, "mouse_out", 60, 30)  # leaving the canvas ends the stroke
    assert seen[-1] is not None and seen[-1][10, 1:20].all() and len(drawer.sketch.strokes) == 1
    drawer.mode.value = "box"  # back to the box: it is the label again
    assert (seen[-1] == 1).sum() == 42 and "your scribble is kept" in drawer.info.value
    drawer.mode.value = "scribble"
    assert seen[-1][10, 1:20].all()  # and the stroke again
    drawer.clear_button.click()
    assert seen[-1] is None and drawer.sketch.empty
    drawer.set_image(np.zeros((8, 8, 3), np.uint8))  # another size: a new canvas, still wired
    _event(drawer, "mouse_down", 0, 0)
    _event(drawer, "mouse_up", 23, 23)  # scribble mode: a diagonal stroke
    assert drawer.canvas.width == 24 and all(seen[-1][i, i] == 1 for i in range(8))


@pytest.fixture(scope="module")
def baseline() -> PredictModel:
    return PredictModel(load_pretrained("baseline_tiny_fold0_1shot"), size=96, protocol="fsslab")


def test_live_predictions_follow_the_drawing_and_the_pickers(voc_root, baseline):
    images = ClassImages.load(voc_root, fold=0)
    live = LiveSupport({"baseline": baseline, "again": baseline}, images, n_queries=2, scale=1, device="cpu")
    assert live.support.kind == "mask" and set(live.scores) == {"baseline", "again"}
    assert live.scores["baseline"] == live.scores["again"] and len(live.scores["baseline"]) == 2
    first_png = live.result.value
    # the support's object covers rows 8..56 (voc_objects): a box around it, then a stroke across it
    ys, xs = np.nonzero(live.support_mask == 1)
    _event(live.drawer, "mouse_down", xs.min(), ys.min())
    _event(live.drawer, "mouse_up", xs.max(), ys.max())
    assert live.support.kind == "box" and (live.support.label == 1).sum() >= (live.support_mask == 1).sum()
    assert live.result.value != first_png and "support label: <b>box</b>" in live.message.value
    live.drawer.mode.value = "scribble"
    assert live.support.kind == "mask" and "your box is kept" in live.message.value  # said, not silent
    cy, cx = int(np.median(ys)), int(np.median(xs))
    live.drawer.drag([(cx - 5, cy), (cx + 5, cy)])  # a replayed gesture: the same path as the mouse
    live.drawer.release()  # nothing pending: no second prediction
    assert live.support.kind == "scribble" and all(0 <= v <= 1 for v in live.scores["baseline"])
    live.drawer.mode.value = "box"  # the box drawn before is used again
    assert live.support.kind == "box" and "kept" not in live.message.value
    live.drawer.mode.value = "scribble"
    before = live.support_image.copy()
    live.support_picker.value = 1  # another support image of the class
    assert not np.array_equal(before, live.support_image) and live.support.kind == "mask"
    other = images.classes[1]
    live.class_picker.value = other
    assert live.class_id == other and live.support_picker.value == 0
    assert all(mask_iou(q, q) == 1.0 for _, q in live.queries)


def test_mask_box_and_scribble_supports_on_the_same_episodes(voc_root, baseline):
    cfg = load_config("synthetic/baseline_tiny", ["model.init_checkpoint=null", "model.prerequisite=null",
                                                 "data.synthetic=null", f"data.root={voc_root}", "data.workers=0",
                                                 "data.val_size=64", "eval.batch_size=2"])  # fmt: skip
    rows = compare_support_labels({"baseline": (cfg, baseline.module)}, episodes=3, seeds=[0])
    assert list(rows["baseline"]) == ["mask", "episodes", "box", "scribble"] and rows["baseline"]["episodes"] == 3
    assert all(0 <= rows["baseline"][k] <= 100 for k in ("mask", "box", "scribble"))
    with pytest.raises(ValueError, match="support label 'polygon'"):
        compare_support_labels({"baseline": (cfg, baseline.module)}, labels=("polygon",))
