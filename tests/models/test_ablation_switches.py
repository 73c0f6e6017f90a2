"""The papers' ablation switches (IPMT: num_layers, no_query_mining, no_prior, no_deep_supervision; AMFormer:
no_discriminator, no_ensemble, mining_passes): each changes the forward as its docstring claims, and off (the
default) nothing changes -- the parity tests check the off state against the official code."""

from __future__ import annotations

import pytest
import torch
from fixtures.batches import episode_batch

from fsslab.errors import ConfigError
from fsslab.models import build_model
from fsslab.models.amformer import AMFormer
from fsslab.models.ipmt import IPMT

IPMT_TINY = {"backbone": "resnet_tiny", "hidden_dim": 16, "num_layers": 3, "num_heads": 1, "deform_points": 4}
AMF_TINY = {"backbone": "resnet_tiny", "n_base_classes": 15, "hidden_dim": 16, "transformer_dim": 16,
            "transformer_heads": (1, 2, 2), "mining_heads": 2, "parts": 6, "part_heads": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


def ipmt(**kw) -> IPMT:
    torch.manual_seed(0)
    return IPMT(**{**IPMT_TINY, **kw})


def amformer(**kw) -> AMFormer:
    torch.manual_seed(0)
    return AMFormer(**{**AMF_TINY, **kw})


def batch(**kw):
    return episode_batch(**{"b": 2, "k": 1, "h": 57, "w": 57, **kw})


# ------------------------------------------------------------------------------------------------ IPMT
def test_ipmt_switches_default_off_and_same_parameters():
    full = ipmt()
    assert (full.no_query_mining, full.no_prior, full.no_deep_supervision) == (False, False, False)
    assert full.transformer.query_mining
    for switch in ("no_query_mining", "no_prior", "no_deep_supervision"):
        # the switches change the computation, not the parameters: a full checkpoint loads into each variant
        variant = ipmt(**{switch: True})
        assert variant.state_dict().keys() == full.state_dict().keys()
        variant.load_state_dict(full.state_dict())


def test_ipmt_switches_off_give_the_same_forward():
    b = batch()
    full, explicit = ipmt().eval(), ipmt(no_query_mining=False, no_prior=False, no_deep_supervision=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(full(b).logits, explicit(b).logits, rtol=0, atol=0)


@pytest.mark.parametrize("layers", [1, 2, 5])
def test_ipmt_num_layers_gives_that_many_prototypes(layers):
    model = ipmt(num_layers=layers).eval()
    with torch.no_grad():
        trace = model(batch(), trace=True).trace
    for key in ("support_prototypes", "query_prototypes", "support_attention", "query_attention"):
        assert trace[key].shape[0] == layers, key
    assert len(model.transformer.query_updates) == layers - 1
    with pytest.raises(ValueError, match="num_layers"):
        ipmt(num_layers=0)


def test_ipmt_no_query_mining_keeps_the_support_prototype():
    full, ablated = ipmt().eval(), ipmt(no_query_mining=True).eval()
    ablated.load_state_dict(full.state_dict())
    b = batch()
    with torch.no_grad():
        t_full, t_abl = full(b, trace=True).trace, ablated(b, trace=True).trace
    # without query mining the prototype of each query layer is the support-mined one, and nothing attends
    torch.testing.assert_close(t_abl["query_prototypes"], t_abl["support_prototypes"], rtol=0, atol=0)
    assert t_abl["query_attention"].abs().max() == 0
    # the full model's intermediate prototype moves away from the support prototype
    assert (t_full["query_prototypes"] - t_full["support_prototypes"]).abs().max() > 1e-4
    # the support side is untouched by the switch
    torch.testing.assert_close(t_abl["support_prototypes"], t_full["support_prototypes"])
    assert not torch.allclose(full(b).logits, ablated(b).logits)


def test_ipmt_no_prior_zeroes_the_prior_channel():
    full, ablated = ipmt().eval(), ipmt(no_prior=True).eval()
    ablated.load_state_dict(full.state_dict())
    b = batch()
    with torch.no_grad():
        assert full(b, trace=True).trace["prior"].abs().max() > 0
        assert ablated(b, trace=True).trace["prior"].abs().max() == 0
        # the same as the full model with the prior channel's merge weight zeroed
        zeroed = ipmt().eval()
        zeroed.load_state_dict(full.state_dict())
        zeroed.query_merge[0].weight[:, -1].zero_()
        torch.testing.assert_close(ablated(b).logits, zeroed(b).logits)


def test_ipmt_no_deep_supervision_drops_the_layer_losses():
    b = batch()
    full, ablated = ipmt().train(), ipmt(no_deep_supervision=True).train()
    out_full, out_abl = full(b), ablated(b)
    assert "query_masks" in out_full.aux and "query_masks" not in out_abl.aux
    losses_full, losses_abl = full.loss(out_full, b), ablated.loss(out_abl, b)
    assert {"bce_query", "bce_support", "aux"} <= set(losses_full)
    assert not {"bce_query", "bce_support", "aux"} & set(losses_abl)
    torch.testing.assert_close(losses_abl["total"], losses_abl["main"])
    losses_abl["total"].backward()
    # no gradient reaches the mask head from the loss (it only produced the layer masks)
    assert all(p.grad is None for p in ablated.transformer.mask_head.parameters())
    # the trace still shows the layer masks
    with torch.no_grad():
        assert "query_layer_query_masks" in ablated.eval()(b, trace=True).trace


def test_ipmt_switches_through_build_model():
    model = build_model({"name": "ipmt", **IPMT_TINY, "no_prior": True, "no_query_mining": True})
    assert model.no_prior and model.no_query_mining


# ------------------------------------------------------------------------------------------------ AMFormer
def test_amformer_switches_default_off():
    full = amformer()
    assert (full.no_discriminator, full.no_ensemble, full.mining_passes) == (False, False, 2)
    assert full.generator.refinements == 2 and len(full.discriminator.classifiers) == 3


def test_amformer_no_discriminator_has_no_d():
    full, ablated = amformer(), amformer(no_discriminator=True)
    assert ablated.discriminator is None and list(ablated.discriminator_parameters()) == []
    assert not any(n.startswith("discriminator.") for n in ablated.state_dict())
    assert [s.objective for s in ablated.optimizer_specs(1e-3, 0.01)] == ["generator"]
    # the G side keeps every parameter of the full model: a full checkpoint minus D loads
    g_state = {k: v for k, v in full.state_dict().items() if not k.startswith("discriminator.")}
    ablated.load_state_dict(g_state)
    b = batch()
    ablated.train()
    out = ablated(b)
    losses = ablated.loss(out, b)
    assert not {"adversarial_g", "adversarial_d", "diversity"} & set(losses)
    # G keeps its schedule: even iterations step G, odd ones nothing (as many G steps as the full model)
    assert set(ablated.step_objectives(losses, 0)) == {"generator"}
    assert ablated.step_objectives(losses, 1) == {}
    assert set(ablated.step_objectives(losses, 4)) == {"generator"}
    # eval: the same G gives the same output as the full model (D never runs in eval)
    full.eval(), ablated.eval()
    with torch.no_grad():
        torch.testing.assert_close(full(b).logits, ablated(b).logits, rtol=0, atol=0)
        assert "d_score_fake" not in ablated.train()(b, trace=True).trace
    with pytest.raises(ValueError, match="no discriminator"):
        ablated.discriminator_scores(b, b["query_mask"].float())


def test_amformer_no_ensemble_outputs_gs_probability():
    full, ablated = amformer().eval(), amformer(no_ensemble=True).eval()
    assert ablated.gram_fusion is None and ablated.learner_fusion is None
    state = {k: v for k, v in full.state_dict().items() if not k.startswith(("gram_fusion", "learner_fusion"))}
    ablated.load_state_dict(state)
    b = batch()
    with torch.no_grad():
        full.learner_fusion.weight.copy_(torch.tensor([0.5, 0.5]).view(1, 2, 1, 1))  # a trained-looking ensemble
        full.gram_fusion.weight.copy_(torch.tensor([1.0, -0.3]).view(1, 2, 1, 1))
        t = ablated(b, trace=True).trace
        # every stage's output is the softmax of G's logits: the base learner's map never reaches it
        torch.testing.assert_close(t["ensemble_logits"], t["meta_logits"].softmax(2))
        out = ablated(b).logits
        assert not torch.allclose(out, full(b).logits)
        # changing the base learner's map changes nothing
        b2 = dict(b, query_base_mask=torch.zeros_like(b["query_base_mask"]))
        torch.testing.assert_close(ablated(b2).logits, out)
    names = {n for s in ablated.optimizer_specs(1e-3, 0.01) for g in s.param_groups for n in [id(p) for p in g["params"]]}
    assert names == {id(p) for p in ablated.parameters() if p.requires_grad}


@pytest.mark.parametrize("passes", [0, 1, 2])
def test_amformer_mining_passes_sets_gs_stages_and_ds_levels(passes):
    model = amformer(mining_passes=passes)
    assert model.generator.refinements == passes and len(model.discriminator.classifiers) == 1 + passes
    b = batch()
    model.train()
    out = model(b, trace=True)
    assert len(out.aux["stage_logits"]) == 1 + passes
    assert out.trace["meta_logits"].shape[1] == 1 + passes
    assert out.trace["refine_masks"].shape[1] == passes
    assert out.trace["d_score_fake"].shape[1] == 1 + passes
    losses = model.loss(out, b)
    assert torch.isfinite(losses["total"]) and torch.isfinite(losses["adversarial_d"])
    with torch.no_grad():
        assert model.eval()(b).logits.shape == (2, 2, 57, 57)
    with pytest.raises(ConfigError, match="mining_passes"):
        amformer(mining_passes=3)


def test_amformer_switches_through_build_model():
    model = build_model({"name": "amformer", **AMF_TINY, "no_discriminator": True, "mining_passes": 1})
    assert model.discriminator is None and model.generator.refinements == 1
