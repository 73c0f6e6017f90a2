"""Metrics: class-wise mIoU and FB-IoU against hand-computed values and an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsslab.engine.metrics import (
    BaseObjectCounter,
    IoUAccumulator,
    base_object_mask,
    logits_at_label_resolution,
    suppress_base_objects,
)


def _numpy_reference(preds, targets, classes):
    """Straightforward PROTOCOLS.md definition, written independently with numpy loops."""
    inter, union = {}, {}
    fb_inter, fb_union = np.zeros(2), np.zeros(2)
    for pred, target, c in zip(preds, targets, classes):
        valid = target != 255
        for k in (0, 1):
            i = np.logical_and(np.logical_and(pred == k, target == k), valid).sum()
            u = np.logical_and(np.logical_or(pred == k, target == k), valid).sum()
            fb_inter[k] += i
            fb_union[k] += u
            if k == 1:
                inter[c] = inter.get(c, 0) + i
                union[c] = union.get(c, 0) + u
    ious = {c: inter[c] / union[c] if union[c] else 0.0 for c in inter}
    return np.mean(list(ious.values())), np.mean(fb_inter / fb_union), ious


def _accumulate(preds, targets, classes, num_classes=4):
    acc = IoUAccumulator(num_classes)
    acc.update(torch.as_tensor(np.stack(preds)), torch.as_tensor(np.stack(targets)), torch.as_tensor(classes))
    return acc.summary()


def test_hand_computed_values_with_ignore_and_empty_prediction():
    # episode 1, class 1: pred fg 3 px, target fg 2 px, overlap 1, one ignored pixel where pred says fg
    pred1 = np.array([[1, 1, 0], [0, 1, 0]])
    tgt1 = np.array([[1, 0, 1], [0, 255, 0]])
    # episode 2, class 2: empty prediction, target fg 2 px
    pred2 = np.zeros((2, 3), int)
    tgt2 = np.array([[0, 1, 1], [0, 0, 255]])
    # episode 3, class 1 again: perfect on 1 fg px
    pred3 = np.array([[0, 0, 0], [0, 0, 1]])
    tgt3 = np.array([[0, 0, 0], [0, 0, 1]])
    s = _accumulate([pred1, pred2, pred3], [tgt1, tgt2, tgt3], [1, 2, 1])
    # class 1: I = 1 + 1 = 2, U = (fg pred∪tgt among valid: (0,0),(0,1),(0,2)) 3 + 1 = 4 → 0.5
    # class 2: I = 0, U = 2 → 0
    assert s["class_iou"] == {1: pytest.approx(0.5), 2: pytest.approx(0.0)}
    assert s["miou"] == pytest.approx(0.25)
    # background: ep1 valid bg pred {(0,2),(1,0),(1,2)} tgt {(0,1),(1,0),(1,2)}: I=2, U=4
    # ep2 valid px 5: pred bg all 5, tgt bg 3 → I=3, U=5; ep3: I=5, U=5 → bg 10/14
    # foreground: ep1 I=1 U=3, ep2 I=0 U=2, ep3 I=1 U=1 → fg 2/6
    assert s["iou_background"] == pytest.approx(10 / 14)
    assert s["iou_foreground"] == pytest.approx(2 / 6)
    assert s["fbiou"] == pytest.approx((10 / 14 + 2 / 6) / 2)
    assert s["class_episodes"] == {1: 2, 2: 1}


def test_matches_independent_numpy_computation_on_random_episodes():
    rng = np.random.default_rng(0)
    preds, targets, classes = [], [], []
    for e in range(40):
        target = (rng.random((9, 7)) < rng.random()).astype(int)
        target[rng.random((9, 7)) < 0.15] = 255
        pred = (rng.random((9, 7)) < 0.5).astype(int) if e % 5 else np.zeros((9, 7), int)  # some empty
        preds.append(pred), targets.append(target), classes.append(int(rng.integers(1, 5)))
    miou, fbiou, ious = _numpy_reference(preds, targets, classes)
    s = _accumulate(preds, targets, classes)
    assert s["miou"] == pytest.approx(miou, abs=1e-12)
    assert s["fbiou"] == pytest.approx(fbiou, abs=1e-12)
    assert s["class_iou"] == {c: pytest.approx(v, abs=1e-12) for c, v in ious.items()}


def test_class_wise_miou_is_not_the_mean_of_episode_ious():
    # class 1: a big object predicted perfectly and a tiny one missed; per-episode mean would be 0.5
    big_t = np.ones((4, 4), int)
    small_t = np.zeros((4, 4), int)
    small_t[0, 0] = 1
    s = _accumulate([big_t, np.zeros((4, 4), int)], [big_t, small_t], [1, 1])
    assert s["miou"] == pytest.approx(16 / 17)


def test_order_and_batching_do_not_change_the_sums():
    rng = np.random.default_rng(1)
    preds = [rng.integers(0, 2, (5, 5)) for _ in range(6)]
    targets = [rng.integers(0, 2, (5, 5)) for _ in range(6)]
    classes = [1, 2, 3, 1, 2, 3]
    one = _accumulate(preds, targets, classes)
    acc = IoUAccumulator(4)
    for i in reversed(range(6)):
        acc.update(
            torch.as_tensor(preds[i])[None], torch.as_tensor(targets[i])[None], torch.tensor([classes[i]])
        )
    assert acc.summary() == one


def test_summary_over_the_folds_classes_reports_missing_ones():
    acc = IoUAccumulator(4)
    acc.update(
        torch.ones(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long), torch.tensor([3])
    )
    summary = acc.summary([1, 3])
    assert summary["classes_without_episodes"] == [1] and summary["miou"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside 1..4"):
        acc.update(
            torch.ones(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long), torch.tensor([5])
        )


def test_original_resolution_scoring_inverts_the_input_transform():
    # 8x8 input whose top-left 4x6 holds the content (an original 2x3 label upscaled 2x, then padded)
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, :, :2] = 1.0  # foreground: the content's first two columns
    logits[0, 0, :, 2:] = 1.0
    logits[0, 1, 4:, :] = 5.0  # padding rows say foreground: they must not leak into the label
    canvas = torch.full((1, 5, 5), 255, dtype=torch.long)
    canvas[0, :2, :3] = torch.tensor([[1, 0, 0], [1, 0, 255]])
    batch = {"query_mask_ori": canvas, "query_ori_size": torch.tensor([[2, 3]]),
             "query_valid_size": torch.tensor([[4, 6]])}
    pred, target = logits_at_label_resolution(logits, batch)
    assert pred.shape == target.shape == (1, 5, 5)
    # the 4x6 region shrinks to 2x3 (align_corners=False): column 0 foreground, the rest background
    assert pred[0, :2, :3].tolist() == [[1, 0, 0], [1, 0, 0]]
    assert (target[0, 2:, :] == 255).all() and (target[0, :, 3:] == 255).all()
    assert torch.equal(target[0, :2, :3], canvas[0, :2, :3])


def test_batch_with_different_original_and_valid_sizes():
    logits = torch.randn(3, 2, 8, 8)
    canvas = torch.full((3, 9, 9), 255, dtype=torch.long)
    sizes = torch.tensor([[4, 9], [9, 3], [5, 5]])
    valid = torch.tensor([[4, 8], [8, 3], [8, 8]])
    for i, (h, w) in enumerate(sizes.tolist()):
        canvas[i, :h, :w] = torch.randint(0, 2, (h, w))
    batch = {"query_mask_ori": canvas, "query_ori_size": sizes, "query_valid_size": valid}
    pred, _ = logits_at_label_resolution(logits, batch)
    for i, ((h, w), (vh, vw)) in enumerate(zip(sizes.tolist(), valid.tolist())):
        single = torch.nn.functional.interpolate(
            logits[i : i + 1, :, :vh, :vw], size=(h, w), mode="bilinear", align_corners=False
        ).argmax(1)[0]
        assert torch.equal(pred[i, :h, :w], single)


def test_evaluation_batch_without_valid_size_is_refused():
    canvas = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(KeyError, match="query_valid_size"):
        logits_at_label_resolution(torch.zeros(1, 2, 4, 4), {"query_mask_ori": canvas, "query_ori_size": torch.tensor([[4, 4]])})


def _base_batch():
    # one 4x4 query: target (1) in the left column, a base-class object (3) in the right column, 255 at a corner
    query = torch.zeros(1, 4, 4, dtype=torch.long)
    query[0, :, 0] = 1
    query[0, 3, 3] = 255
    base = torch.zeros(1, 4, 4, dtype=torch.long)
    base[0, :, 3] = 3
    base[0, 3, 3] = 255
    return {"query_mask": query, "query_base_mask": base, "class_id": torch.tensor([1])}


def _logits_for(foreground):
    return torch.stack([(~foreground).float(), foreground.float()], 1)  # [B,2,H,W]


def test_base_object_share_counts_foreground_on_base_class_objects_only():
    batch = _base_batch()
    foreground = torch.zeros(1, 4, 4, dtype=torch.bool)
    foreground[0, :, 0] = True  # the target: 4 px
    foreground[0, :, 3] = True  # the base object: 3 valid px + the ignored corner
    counter = BaseObjectCounter()
    counter.update(_logits_for(foreground), batch)
    assert counter.share() == pytest.approx(3 / 7)


def test_suppressing_base_objects_leaves_the_rest_of_the_prediction():
    batch = _base_batch()
    foreground = torch.zeros(1, 4, 4, dtype=torch.bool)
    foreground[0, :, 0] = foreground[0, :, 3] = foreground[0, 0, 1] = True
    kept = suppress_base_objects(_logits_for(foreground), base_object_mask(batch)).argmax(1).bool()
    expected = foreground.clone()
    expected[0, :3, 3] = False  # the base object's pixels; 255 in the base mask is not an object
    assert torch.equal(kept, expected)


def test_base_analysis_is_absent_without_base_annotation():
    batch = _base_batch()
    batch["query_base_mask"] = torch.full_like(batch["query_base_mask"], 255)  # a folder dataset
    assert base_object_mask(batch) is None
    counter = BaseObjectCounter()
    counter.update(_logits_for(torch.ones(1, 4, 4, dtype=torch.bool)), batch)
    assert counter.share() is None
    assert base_object_mask({"query_mask": batch["query_mask"]}) is None
