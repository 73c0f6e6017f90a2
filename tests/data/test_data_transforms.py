"""Joint transforms keep image and label aligned, pad with 255 / the mean; eval resize; weak labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsslab.data import TrainAugment, denormalize, eval_resize, mask_to_boxes, mask_to_scribbles, normalize
from fsslab.data.eval_protocols import long_side_size
from fsslab.data.transforms import MEAN_255, random_crop

RED = np.array([230.0, 20.0, 20.0], np.float32)
GREY = np.array([100.0, 100.0, 100.0], np.float32)


def _square_scene(height=90, width=120, box=(30, 40, 70, 90)):
    image = np.empty((height, width, 3), np.float32)
    image[:] = GREY
    label = np.zeros((height, width), np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = RED
    label[y0:y1, x0:x1] = 1
    return image, label


@pytest.mark.parametrize("seed", range(6))
def test_train_augment_keeps_square_on_its_label(seed):
    image, label = _square_scene()
    augment = TrainAugment(size=100, scale=(0.9, 1.1), rotate_p=1.0, blur_p=0.0, flip_p=0.5)
    out, (mask,), padding, _ = augment(image, [label], np.random.default_rng(seed))
    assert out.shape == (100, 100, 3) and mask.shape == (100, 100) and padding.dtype == bool
    redness = out[..., 0] - out[..., 1]
    # away from the (interpolated) edge, red pixels are exactly the label-1 pixels
    inside = (mask == 1) & (np.abs(np.gradient(mask.astype(float))[0]) == 0)
    assert inside.sum() > 500 and (redness[inside] > 150).mean() > 0.97
    assert (redness[mask == 0] < 60).mean() > 0.97
    # padded pixels: label 255, image filled with the ImageNet mean
    assert padding.any()  # 120 px wide scene cannot fill the 100x100 crop after rotation everywhere
    assert np.all(mask[padding] == 255)
    # (rotation blends the image linearly at the border, so a thin rim of padded pixels is mixed)
    assert np.isclose(out[padding], MEAN_255, atol=1.0).all(axis=1).mean() > 0.8


def test_crop_pads_small_image_with_255_and_mean():
    image, label = _square_scene(40, 50, (5, 5, 20, 20))
    padding = np.zeros(label.shape, np.uint8)
    out, (mask,), pad, result = random_crop(image, [label], padding, np.random.default_rng(0), 64)
    assert out.shape == (64, 64, 3) and pad.sum() == 64 * 64 - 40 * 50
    assert np.all(mask[pad.astype(bool)] == 255) and np.all(mask[~pad.astype(bool)] != 255)
    assert np.allclose(out[pad.astype(bool)], MEAN_255)
    assert (mask == 1).sum() == 15 * 15 and result.retries == 0


def test_crop_redraws_then_falls_back_to_resize_for_empty_support():
    image, label = _square_scene(200, 200, (97, 97, 103, 103))
    padding = np.zeros(label.shape, np.uint8)
    fallbacks = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out, (mask,), _, result = random_crop(image, [label], padding, rng, 40, max_retries=0,
                                                require_foreground=True)  # fmt: skip
        assert (mask == 1).any() or not result.fallback
        fallbacks += result.fallback
        assert out.shape == (40, 40, 3)
    assert fallbacks >= 3  # a 6x6 object is rarely inside a random 40x40 window of 200x200
    # with retries the window keeps >= 85% of the target, as in PFENet
    _, (mask,), _, result = random_crop(image, [label], padding, np.random.default_rng(1), 40, max_retries=10_000)
    assert (mask == 1).sum() >= 0.85 * 36 and not result.fallback


def test_long_side_size_matches_pfenet_test_resize():
    assert long_side_size(375, 500, 473) == (352, 472)  # floor to multiples of 8
    assert long_side_size(500, 333, 473) == (472, 312)
    assert long_side_size(100, 150, 473) == (100, 150)  # never upscaled
    assert long_side_size(100, 150, 300, upscale=True) == (200, 296)


@pytest.mark.parametrize("pad_image", ["zero", "mean"])
def test_eval_resize_pads_bottom_right(pad_image):
    image, label = _square_scene(160, 80, (10, 10, 50, 40))
    out, (mask,), padding = eval_resize(image, [label], 64, pad_image=pad_image)
    assert out.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert padding[:, 32:].all() and not padding[:, :32].any()  # 160x80 -> 64x32, padded on the right
    assert np.all(mask[padding] == 255)
    fill = 0.0 if pad_image == "zero" else np.asarray(MEAN_255)
    assert np.allclose(out[padding], fill)
    assert np.all(mask[4:20, 4:16] == 1)  # the square keeps its place at half scale


def test_normalize_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (8, 9, 3)).astype(np.float32)
    tensor = normalize(image)
    assert tensor.shape == (3, 8, 9) and tensor.dtype == torch.float32
    assert abs(float(normalize(np.asarray(MEAN_255, np.float32)[None, None]).abs().max())) < 1e-5
    assert np.array_equal(denormalize(tensor), image.astype(np.uint8))


def _two_blobs():
    mask = np.zeros((60, 80), np.uint8)
    mask[5:25, 5:12] = 1  # an L shape
    mask[18:25, 5:30] = 1
    mask[40:55, 50:75] = 1
    mask[45:50, 60:65] = 0  # a hole
    mask[0, :] = 255
    mask[20:22, 20:40] = 255  # ignore band crossing the L's box
    return mask


def test_boxes_fill_each_component():
    mask = _two_blobs()
    boxes = mask_to_boxes(mask)
    assert set(np.unique(boxes).tolist()) <= {0, 1, 255}
    assert np.all(boxes[5:25, 5:30][mask[5:25, 5:30] != 255] == 1)  # the L's bounding box, filled
    assert np.all(boxes[40:55, 50:75] == 1)  # hole filled
    assert np.all(boxes[mask == 255] == 255)  # ignore survives inside boxes
    assert boxes[30:38].max() == 0 and boxes[:, 76:][boxes[:, 76:] != 255].max() == 0
    wider = mask_to_boxes(mask, reference_extent=True)  # cv2.rectangle's inclusive corner
    assert np.all(wider[40:56, 50:76] == 1) and (wider == 1).sum() > (boxes == 1).sum()


def test_scribbles_are_inside_the_mask_and_seeded():
    mask = _two_blobs()
    a = mask_to_scribbles(mask, seed=3)
    assert set(np.unique(a).tolist()) <= {0, 1, 255}
    assert np.all(mask[a == 1] == 1)  # scribble ⊂ mask
    assert 0 < (a == 1).sum() < 0.6 * (mask == 1).sum()
    assert (a[40:55, 50:75] == 1).any() and (a[5:25, 5:30] == 1).any()  # one stroke per component
    assert np.array_equal(a, mask_to_scribbles(mask, seed=3))
    assert not np.array_equal(a, mask_to_scribbles(mask, seed=4))
    b = mask_to_scribbles(mask, seed=3, unlabeled="ignore")
    assert (b == 255).sum() > (mask == 255).sum() and (b == 0).any()
    assert np.all(mask[b == 0] == 0) and np.all(mask[b == 1] == 1)
