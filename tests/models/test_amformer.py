"""AMFormer: shapes, G/D gradient separation, schedule, eval behaviour, trace, weak supports, key mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.batches import episode_batch

from fsslab.models import build_model
from fsslab.models.amformer import TRACE_KEYS, AMFormer
from fsslab.models.amformer.discriminator import PartDiscriminator, adversarial_branch
from fsslab.models.amformer.official import build_reference_model, fsslab_to_official, official_to_fsslab

KEYS_FILE = Path("/work/shared/tools/official_ref/keys_amformer.txt")
TINY = {"backbone": "resnet_tiny", "n_base_classes": 15, "hidden_dim": 16, "transformer_dim": 16,
        "transformer_heads": (1, 2, 2), "mining_heads": 2, "parts": 6, "part_heads": 2}
TRAINING_ONLY = {"part_maps_fake", "part_maps_real", "d_score_fake", "d_score_real"}


def tiny(shot: int = 1, **kw) -> AMFormer:
    torch.manual_seed(0)
    return AMFormer(shot=shot, **{**TINY, **kw})


episode = episode_batch  # the shared episode batch (its default size, 50 x 70, is this module's)


@pytest.fixture(scope="module")
def model() -> AMFormer:
    torch.set_num_threads(1)
    return tiny().eval()


@pytest.mark.parametrize("shot,size", [(1, (50, 70)), (1, (41, 33)), (5, (58, 46))])
def test_eval_shapes(shot: int, size: tuple[int, int]) -> None:
    m = tiny(shot).eval()
    batch = episode(2, shot, *size)
    with torch.no_grad():
        out = m(batch)
    assert out.logits.shape == (2, 2, *size)
    assert out.aux["meta_logits"].shape == (2, 2, *size)
    assert out.aux["base_logits"].shape == (2, 16, *size)
    assert torch.isfinite(out.logits).all()


def _grads(m: AMFormer, objective: torch.Tensor) -> set[str]:
    m.zero_grad(set_to_none=True)
    objective.backward()
    return {n for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("shot", [1, 2])
def test_generator_and_discriminator_objectives_reach_only_their_parameters(shot: int) -> None:
    m = tiny(shot).train()
    batch = episode(2, shot)
    g_names = {n for n, p in m.named_parameters() if any(p is q for q in m.generator_parameters())}
    d_names = {n for n, p in m.named_parameters() if any(p is q for q in m.discriminator_parameters())}
    assert g_names and d_names and not g_names & d_names
    assert not any(n.startswith("base_learner.") for n in g_names | d_names)  # frozen base learner
    for iteration, objective, expected in ((4, "generator", g_names), (1, "discriminator", d_names)):
        losses = m.loss(m(batch), batch)
        objectives = m.step_objectives(losses, iteration)
        assert set(objectives) == {objective}
        assert _grads(m, objectives[objective]) == expected


def test_generator_gradient_through_discriminator_equals_single_pass() -> None:
    """The split G/D computation gives G the same gradient as one shared pass (same dropout masks)."""
    torch.manual_seed(1)
    disc = PartDiscriminator(16, levels=2, parts=6, heads=2).train()
    fused = [torch.randn(2, 16, 5, 6, requires_grad=True) for _ in range(2)]
    fake = torch.rand(2, 1, 5, 6, requires_grad=True)
    real = (torch.rand(2, 1, 5, 6) > 0.5).float()
    draws = [(torch.tensor([0, 2, 4, 5]), torch.tensor([1, 3, 0, 2]))] * 2
    torch.manual_seed(7)
    split = adversarial_branch(disc, fused, fake, real, draws)
    grads_split = torch.autograd.grad(split["adversarial_g"], [*fused, fake])
    torch.manual_seed(7)  # naive single pass, same RNG consumption (fake then real, per level)
    naive = 0.0
    for level, feat in enumerate(fused):
        fake_parts, _ = disc.parts(level, feat, fake)
        real_parts, _ = disc.parts(level, feat, real)
        index = torch.nn.functional.cosine_similarity(fake_parts, real_parts, dim=2, eps=1e-6).argmin(1)
        prob = disc.score(level, fake_parts[torch.arange(2), index])
        naive = naive + torch.nn.functional.binary_cross_entropy_with_logits(prob, torch.ones_like(prob))
    grads_naive = torch.autograd.grad(naive / 2, [*fused, fake])
    for a, b in zip(grads_split, grads_naive):
        torch.testing.assert_close(a, b)
    assert torch.allclose(split["adversarial_g"], naive / 2)


def test_step_objectives_schedule(model: AMFormer) -> None:
    one = torch.tensor(1.0)
    losses = {"total": one, "adversarial_g": torch.tensor(0.5), "adversarial_d": torch.tensor(2.0),
              "diversity": torch.tensor(3.0)}
    assert torch.isclose(model.step_objectives(losses, 0)["generator"], torch.tensor(1.0 + 0.5e-9))
    assert torch.isclose(model.step_objectives(losses, 4)["generator"], torch.tensor(1.05))
    assert torch.isclose(model.step_objectives(losses, 3)["discriminator"], torch.tensor(2.03))
    assert model.step_objectives({**losses, "adversarial_g": torch.tensor(12.0)}, 14) == {}


def test_optimizer_specs_cover_generator_and_discriminator(model: AMFormer) -> None:
    g, d = model.optimizer_specs(1e-4, 0.01)
    assert (g.kind, g.objective, d.kind, d.objective) == ("adamw", "generator", "adam", "discriminator")
    g_params = [p for group in g.param_groups for p in group["params"]]
    d_params = [p for group in d.param_groups for p in group["params"]]
    assert {id(p) for p in g_params} == {id(p) for p in model.generator_parameters()}
    assert {id(p) for p in d_params} == {id(p) for p in model.discriminator_parameters()}
    assert [grp["lr"] for grp in g.param_groups] == [1e-4] + [1e-3] * (len(g.param_groups) - 1)
    assert [grp["lr"] for grp in d.param_groups] == [1e-4, 1e-3, 1e-3, 1e-3]


@pytest.mark.parametrize("case", ["empty_support", "full_support", "ignore_query"])
def test_degenerate_masks_give_finite_outputs_and_losses(case: str) -> None:
    m = tiny().train()
    batch = episode()
    if case == "empty_support":
        batch["support_masks"].zero_()
    elif case == "full_support":
        batch["support_masks"].fill_(1)
    else:
        batch["query_mask"].fill_(255)
        batch["query_base_mask"].fill_(255)
    out = m(batch)
    losses = m.loss(out, batch)
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(v).all() for v in losses.values()), losses


class _Watched(dict):
    def __getitem__(self, key):
        if key == "query_mask":
            raise AssertionError("eval forward read query_mask")
        return super().__getitem__(key)

    def __contains__(self, key):
        return key != "query_mask" and super().__contains__(key)


def test_eval_is_deterministic_and_label_free(model: AMFormer) -> None:
    batch = episode()
    with torch.no_grad():
        a = model(batch).logits
        b = model(_Watched(batch)).logits
        batch["query_mask"] = 1 - batch["query_mask"].clamp(max=1)
        c = model(batch).logits
    assert torch.equal(a, b) and torch.equal(a, c)


def test_trace_contents(model: AMFormer) -> None:
    with torch.no_grad():
        trace = model(episode(), trace=True).trace
    assert set(trace) == set(TRACE_KEYS) - TRAINING_ONLY
    assert trace["meta_logits"].shape == (2, 3, 2, 7, 9) and trace["refine_masks"].shape == (2, 2, 7, 9)
    assert set(trace["refine_masks"].unique().tolist()) <= {0.0, 1.0}
    assert not any(t.requires_grad for t in trace.values())
    train_model = tiny().train()
    trace = train_model(episode(), trace=True).trace
    assert set(trace) == set(TRACE_KEYS)
    assert trace["part_maps_real"].shape == (2, 3, 6, 7, 9) and trace["d_score_fake"].shape == (2, 3)


def test_weak_box_support_runs(model: AMFormer) -> None:
    batch = episode()
    box = torch.zeros_like(batch["support_masks"])
    box[..., 10:40, 15:55] = 1
    box[..., 9, 15:55] = 255
    batch["support_masks"] = box
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.logits).all()
    assert not torch.equal(out.logits, model(episode()).logits)


def test_discriminator_scores_is_eval_safe() -> None:
    m = tiny().train()
    batch = episode()
    masks = torch.stack([batch["query_mask"].clamp(max=1).float(), torch.zeros(2, 50, 70)], 1)
    res = m.discriminator_scores(batch, masks)
    assert m.training and res["score"].shape == (2, 2, 3) and res["part_maps"].shape == (2, 2, 3, 6, 7, 9)
    assert not res["score"].requires_grad and ((res["score"] > 0) & (res["score"] < 1)).all()
    again = m.discriminator_scores(batch, masks)
    assert torch.equal(res["score"], again["score"])


def test_bf16_autocast_and_channels_last(model: AMFormer) -> None:
    m = tiny().eval().to(memory_format=torch.channels_last)
    batch = episode()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(batch)
    assert out.logits.shape == (2, 2, 50, 70) and torch.isfinite(out.logits.float()).all()
    with torch.no_grad():
        ref = model(batch).logits
        cl = m(batch).logits
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)


def test_build_model_registry() -> None:
    m = build_model({"name": "amformer", **TINY})
    assert isinstance(m, AMFormer)


def test_official_key_mapping_round_trip() -> None:
    own = tiny(2).state_dict()  # values: tiny model (K=2 has the K-shot reweighting keys too)
    back = official_to_fsslab(fsslab_to_official(own))
    assert set(back) == set(own) and all(torch.equal(back[k], v) for k, v in own.items())
    with torch.device("meta"):  # names and shapes of the reference model, without materialising 53 M weights
        official = fsslab_to_official(build_reference_model(shot=1).state_dict())
    assert "supp_merge.0.weight" in official and "kshot_rw.0.weight" not in official
    if KEYS_FILE.is_file():  # the harness listing of the official state_dict (absent in CI)
        listed = {}
        for line in KEYS_FILE.read_text().splitlines():
            if line and not line.startswith("#"):
                name, rest = line.split(" ", 1)
                listed[name] = rest.rsplit(" ", 1)[0].replace(" ", "")
        ours = {k: str(list(v.shape)).replace(" ", "") for k, v in official.items()}
        assert ours == listed
    with pytest.raises(ValueError, match="no counterpart"):
        official_to_fsslab({"unknown.weight": torch.zeros(1)})


@pytest.mark.parametrize("layout", ["fsslab", "official"])
def test_pretrained_pspnet_checkpoint_loads(tmp_path, layout: str) -> None:
    from fsslab.models.official import rename_by_prefix
    from fsslab.models.pspnet import PSPNet, bam_pspnet_rules

    torch.manual_seed(3)
    psp = PSPNet("resnet_tiny", n_classes=16)
    state = psp.state_dict()
    if layout == "official":  # BAM model/PSPNet.py names, DataParallel prefix
        rules = [(b, a) for a, b in bam_pspnet_rules("cls.4", "")]
        state = {"module." + rename_by_prefix(k, rules, "test"): v for k, v in state.items()}
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "psp.pth")
    m = tiny(pretrained=str(tmp_path / "psp.pth"))
    for k, v in psp.state_dict().items():
        assert torch.equal(m.base_learner.state_dict()[k], v), k
    torch.save({"state_dict": {"bogus.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        tiny(pretrained=str(tmp_path / "bad.pth"))


def test_reproduce_official_eval_runs_adversarial_branch_without_changing_logits() -> None:
    m = tiny(reproduce_official=True).eval()
    batch = episode()
    with torch.no_grad():
        with_label = m(batch)
        without = m({k: v for k, v in batch.items() if k != "query_mask"})
    assert "adversarial_d" in with_label.aux and "adversarial_d" not in without.aux
    assert torch.equal(with_label.logits, without.logits)


def test_inputs_below_the_minimum_size_name_it(model: AMFormer) -> None:
    from fsslab.errors import ConfigError

    assert model.generator.min_feature_size() == 4  # the first pyramid stage reduces keys/values 4x
    expected = r"at least 32x32 pixels .* got 16x16; raise data.size / data.val_size"
    with pytest.raises(ConfigError, match=expected), torch.no_grad():
        model(episode(1, 1, 16, 16))
    with torch.no_grad():
        assert model(episode(1, 1, 32, 32)).logits.shape == (1, 2, 32, 32)  # the minimum itself runs


@pytest.mark.parametrize("window", [(slice(2, 5), slice(0, 3)), (slice(0, 8), slice(3, 9)), (slice(6, 8), slice(8, 9))])
def test_windowed_pyramid_embedding_equals_dense_on_the_window(window: tuple[slice, slice]) -> None:
    from fsslab.models.amformer.fast_head import pyramid_embedding
    from fsslab.models.pspnet import PSPNet

    torch.manual_seed(0)
    psp = PSPNet("resnet_tiny", n_classes=3, norm="batch").eval()
    for bn in psp.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):  # non-trivial running statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, psp.backbone.out_channels["layer4"], 8, 9)
    with torch.no_grad():
        dense = pyramid_embedding(psp.ppm, psp.head, x)
        torch.testing.assert_close(dense, psp.head.embed(psp.ppm(x)), rtol=1e-5, atol=1e-5)
        windowed = pyramid_embedding(psp.ppm, psp.head, x, window)
    rows, cols = window
    torch.testing.assert_close(windowed[:, :, rows, cols], dense[:, :, rows, cols], rtol=1e-5, atol=1e-5)
    outside = torch.ones(8, 9, dtype=torch.bool)
    outside[rows, cols] = False
    assert windowed[:, :, outside].abs().max() == 0


def test_support_embedding_window_keeps_the_forward(model: AMFormer, monkeypatch) -> None:
    """The support embedding computed around the support foreground only gives the dense forward's outputs."""
    import sys

    amformer_module = sys.modules[type(model).__module__]
    batch = episode_batch(b=2, k=1, h=64, w=64, seed=4)
    batch["support_masks"].zero_()
    batch["support_masks"][:, :, 20:36, 24:40] = 1
    model.eval()
    with torch.no_grad():
        windowed = model(batch, trace=True)
        monkeypatch.setattr(amformer_module, "foreground_window", lambda fg: None)
        dense = model(batch, trace=True)
    torch.testing.assert_close(windowed.logits, dense.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(windowed.trace["similarity"], dense.trace["similarity"], rtol=1e-5, atol=1e-5)


def _dense_mining_attention(q, k, v, key_mask, temperature=0.1):
    """The reference's form: full [L,L] scores, softmax over queries, then removed keys' columns zeroed."""
    qn, kn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    attn = (qn @ kn.transpose(-2, -1) / temperature).softmax(dim=-2)  # [B,h,Lq,Lk], over queries
    attn = attn * (key_mask != 0)[:, None, None, :].to(attn.dtype)
    return attn @ v


@pytest.mark.parametrize("case", ["mixed", "all_kept", "none_kept"])
def test_masked_mining_attention_equals_dense_reference(case: str) -> None:
    from fsslab.models.amformer.transformer import masked_mining_attention

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, 12, 4, generator=gen) for _ in range(3))
    key_mask = torch.rand(2, 12, generator=gen)
    if case == "mixed":
        key_mask[0, ::3] = 0  # different kept counts per episode
        key_mask[1, :9] = 0
    elif case == "none_kept":
        key_mask.zero_()
    out, weight = masked_mining_attention(q, k, v, key_mask)
    torch.testing.assert_close(out, _dense_mining_attention(q, k, v, key_mask), rtol=1e-5, atol=1e-6)
    assert weight.shape == (2, 12)
