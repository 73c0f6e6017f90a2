"""PSPNet base learner and prototype baseline: shapes, losses, which parameters train, traces."""

from __future__ import annotations

import functools

import pytest
import torch
from fixtures.batches import episode_batch

from fsslab.models import build_model
from fsslab.models.baseline import TRACE_KEYS as BASELINE_TRACE_KEYS
from fsslab.models.pspnet import TRACE_KEYS as PSPNET_TRACE_KEYS

torch.set_num_threads(1)


# the shared episode batch at this module's default size; base classes 0..5 for the 6-class PSPNet
_batch = functools.partial(episode_batch, h=50, w=61, base_class=5)


@pytest.mark.parametrize("aux_weight", [0.0, 0.4])
def test_pspnet_stage1_training_step(aux_weight: float) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "pspnet", "backbone": "resnet_tiny", "n_classes": 6, "aux_weight": aux_weight})
    batch = _batch()
    model.train()
    out = model(batch)
    assert out.logits.shape == (2, 6, 50, 61)  # background + base classes, at the input size
    assert ("aux_logits" in out.aux) == (aux_weight > 0)
    losses = model.loss(out, batch)
    expected = torch.nn.functional.cross_entropy(out.logits, batch["query_base_mask"], ignore_index=255)
    torch.testing.assert_close(losses["main"], expected)
    if aux_weight:
        torch.testing.assert_close(losses["total"], losses["main"] + aux_weight * losses["aux"])
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    model.eval()
    out_eval = model(batch, trace=True)
    assert out_eval.aux == {} and set(out_eval.trace) == set(PSPNET_TRACE_KEYS)
    assert out_eval.trace["embedding"].shape == (2, 512, 7, 8)


def test_pspnet_layout_and_optimizer_groups() -> None:
    model = build_model({"name": "pspnet", "backbone": "resnet_tiny", "n_classes": 6})
    assert model.ppm.out_channels == 512  # 256 + 4 bins * 64
    keys = set(model.state_dict())
    assert {"ppm.branches.3.conv.weight", "ppm.branches.3.bn.running_var", "head.conv.weight",
            "head.bn.weight", "head.out.weight", "head.out.bias", "backbone.conv1.weight"} <= keys
    assert not any(k.startswith("aux_head") for k in keys)  # BAM's base learner has no aux head
    assert model.ppm.branches[2].bin_size == 3
    (spec,) = model.optimizer_specs(base_lr=2.5e-4, weight_decay=1e-4)
    assert spec.kind == "sgd" and spec.options == {"momentum": 0.9, "weight_decay": 1e-4}
    assert [g["lr"] for g in spec.param_groups] == [2.5e-4, 2.5e-3, 2.5e-3]
    n_grouped = sum(len(g["params"]) for g in spec.param_groups)
    assert n_grouped == len(list(model.parameters()))


def test_pspnet_adamw_backbone_lr_multiplier() -> None:
    # one AdamW group as the shipped stage 1 was trained; a multiplier slows the backbone only
    params = {"name": "pspnet", "backbone": "resnet_tiny", "n_classes": 6, "optimizer": "adamw"}
    (one,) = build_model(params).optimizer_specs(base_lr=1e-3, weight_decay=1e-4)
    assert one.kind == "adamw" and [g["lr"] for g in one.param_groups] == [1e-3]
    model = build_model({**params, "backbone_lr_multiplier": 0.1})
    (spec,) = model.optimizer_specs(base_lr=1e-3, weight_decay=1e-4)
    backbone, rest = spec.param_groups
    assert backbone["lr"] == pytest.approx(1e-4) and rest["lr"] == 1e-3
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
    assert len(backbone["params"]) + len(rest["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("shots", [1, 5])
def test_baseline_shapes_and_thresholded_prediction(shots: int) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "baseline", "backbone": "resnet_tiny", "threshold": 0.3}).eval()
    batch = _batch(k=shots, h=45, w=38)
    with torch.no_grad():
        out = model(batch, trace=True)
    assert out.logits.shape == (2, 2, 45, 38)
    assert set(out.trace) == set(BASELINE_TRACE_KEYS)
    assert out.trace["support_prototypes"].shape == (2, shots, 192)  # layer2 64 + layer3 128 channels
    torch.testing.assert_close(out.trace["prototype"], out.trace["support_prototypes"].mean(1))
    similarity = out.trace["similarity"]
    assert similarity.shape == (2, 1, 6, 5) and similarity.abs().max() <= 1 + 1e-5
    coarse = torch.nn.functional.interpolate(similarity - 0.3, (45, 38), mode="bilinear", align_corners=True)
    assert torch.equal(out.prediction(), (coarse[:, 0] > 0).long())


def test_baseline_training_free_and_learned_threshold() -> None:
    torch.manual_seed(0)
    frozen = build_model({"name": "baseline", "backbone": "resnet_tiny"})
    batch = _batch(k=2)
    assert frozen.optimizer_specs(0.01, 1e-4) == []
    with pytest.raises(RuntimeError, match="nothing to train"):
        frozen.loss(frozen(batch), batch)

    learned = build_model({"name": "baseline", "backbone": "resnet_tiny", "learn_threshold": True}).train()
    out = learned(batch)
    learned.loss(out, batch)["total"].backward()
    trained = {n for n, p in learned.named_parameters() if p.grad is not None}
    assert trained == {"threshold", "scale"}  # the frozen backbone gets nothing

    tuned = build_model({"name": "baseline", "backbone": "resnet_tiny", "freeze_backbone": False,
                         "norm": "batch", "feature_layers": ["layer4"], "dilation": "none"}).train()
    tuned.loss(tuned(batch), batch)["total"].backward()
    assert tuned.backbone.layer4[0].conv1.weight.grad is not None
    assert tuned.threshold.grad is None  # fixed threshold
    assert tuned.backbone.layer1[0].bn1.training  # an unfrozen BatchNorm backbone trains normally


def test_baseline_is_finite_for_empty_and_full_supports() -> None:
    model = build_model({"name": "baseline", "backbone": "resnet_tiny"}).eval()
    batch = _batch(k=2)
    for fill in (0, 1):
        batch["support_masks"] = torch.full_like(batch["support_masks"], fill)
        with torch.no_grad():
            assert torch.isfinite(model(batch).logits).all()


def test_baseline_rejects_unknown_feature_layers() -> None:
    with pytest.raises(ValueError, match="feature_layers"):
        build_model({"name": "baseline", "backbone": "resnet_tiny", "feature_layers": ["layer7"]})
