"""fsslab.lab.claims: knock-outs keep the trained weights, the discriminator study and its rules, the findings."""

from __future__ import annotations

import pytest
import torch
from fixtures.batches import episode_batch

from fsslab.lab.claims import (
    SCALED,
    ablation_findings,
    discriminator_conclusion,
    discriminator_findings,
    discriminator_study,
    knockout,
    summarise_discriminator_study,
)
from fsslab.models import build_model

AMF = {"name": "amformer", "backbone": "resnet_tiny", "n_base_classes": 15, "hidden_dim": 16, "transformer_dim": 16,
       "transformer_heads": (1, 2, 2), "mining_heads": 2, "parts": 6, "part_heads": 2}
IPMT = {"name": "ipmt", "backbone": "resnet_tiny", "hidden_dim": 16, "num_layers": 3, "deform_points": 4}

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(spec):
    torch.manual_seed(1)
    model = build_model(spec).eval()
    with torch.no_grad():  # weights unlike any fresh initialisation
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_knockout_keeps_the_trained_weights():
    full = _trained(AMF)
    batch = episode_batch(b=1, h=57, w=57)
    same = knockout(full, AMF)
    with torch.no_grad():
        torch.testing.assert_close(same(batch).logits, full(batch).logits, rtol=0, atol=0)
        no_ens = knockout(full, AMF, no_ensemble=True)
        state = no_ens.state_dict()
        assert all(torch.equal(v, full.state_dict()[k]) for k, v in state.items())
        t = no_ens(batch, trace=True).trace
        torch.testing.assert_close(t["ensemble_logits"], t["meta_logits"].softmax(2))
        one_pass = knockout(full, AMF, mining_passes=1)
        assert one_pass.generator.refinements == 1
        assert not torch.allclose(one_pass(batch).logits, full(batch).logits)
    ipmt = _trained(IPMT)
    short = knockout(ipmt, IPMT, num_layers=2)
    assert len(short.transformer.support_layers) == 2
    with pytest.raises(ValueError, match="lacks"):
        knockout(short, {**IPMT, "num_layers": 2}, num_layers=3)


def _episodes(n):
    batch = episode_batch(b=n, h=57, w=57)
    return [{k: v[i] for k, v in batch.items()} | {"episode_index": torch.tensor(i)} for i in range(n)]


def test_discriminator_study_scores_every_mask_per_episode():
    model = _trained(AMF)
    study = discriminator_study(model, _episodes(2))
    assert study["episodes"] == 2
    names = set(study["scores"])
    assert {"ground truth", "G soft", "G binarised", SCALED, "erode 0.5", "holes 0.25"} <= names
    assert all(len(v) == 2 and all(0 <= x <= 1 for x in v) for v in study["scores"].values())
    assert study["iou"]["ground truth"] == [1.0, 1.0]
    summary = summarise_discriminator_study(study)
    assert summary["corruptions"] == 8 and 0 <= summary["gt_above_soft"] <= 1
    lines = discriminator_findings(summary)
    assert lines[0].startswith("Over 2 episodes") and all(isinstance(line, str) for line in lines)


def _summary(gap_soft, gap_binarised, gap_haze_only, gap_object_only):
    return {"gap_soft": gap_soft, "gap_binarised": gap_binarised, "gap_haze_only": gap_haze_only,
            "gap_object_only": gap_object_only}


def test_discriminator_conclusion_rules():
    assert "haze" in discriminator_conclusion(_summary(0.1, 0.0, 0.1, 0.0))
    assert "soft from hard" in discriminator_conclusion(_summary(0.1, 0.01, 0.05, 0.05))
    assert "judges shapes" in discriminator_conclusion(_summary(0.1, 0.08, 0.1, 0.08))
    assert "does not score" in discriminator_conclusion(_summary(-0.01, 0.0, 0.0, 0.0))
    assert "do not separate" in discriminator_conclusion(_summary(0.1, 0.04, 0.1, 0.04))


def test_ablation_findings_report_the_computed_verdicts():
    rows = [{"variant": "full", "verdict": "(reference)"},
            {"variant": "w/o D", "difference": 1.5, "interval": [0.5, 2.5], "n": 3, "verdict": "holds",
             "paper": "not verified"},
            {"variant": "G: 0 passes", "difference": -0.5, "interval": None, "n": 1,
             "verdict": "no interval (n < 2)", "paper": "not verified"}]
    lines = ablation_findings(rows)
    assert lines[0] == ("w/o D: full − variant = +1.50 mIoU [+0.50, +2.50] over 3 seed(s): holds; "
                        "paper: not verified.")
    assert "(no interval: 1 seed)" in lines[1]
