"""IPMT: shapes, frozen/trainable parts, edge-case supports, trace, label independence, official key mapping."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
from fixtures.batches import episode_batch

from fsslab.models import build_model, load_official
from fsslab.models.ipmt import IPMT, TRACE_KEYS
from fsslab.models.ipmt.official import build_reference_model, fsslab_to_official, official_to_fsslab
from fsslab.models.official import export_official

KEYS_FILE = Path("/work/shared/tools/official_ref/keys_ipmt.txt")
TINY = {"backbone": "resnet_tiny", "hidden_dim": 16, "num_layers": 3, "num_heads": 1, "deform_points": 4}



pytestmark = pytest.mark.usefixtures("one_thread")

# the shared episode batch at this module's default size
make_batch = functools.partial(episode_batch, h=97, w=97)


@pytest.fixture(scope="module")
def model() -> IPMT:
    torch.manual_seed(0)
    return build_model({"name": "ipmt", **TINY}).eval()


@pytest.mark.parametrize("k,h,w", [(1, 97, 97), (5, 113, 81), (1, 120, 160), (2, 64, 50)])
def test_logit_shapes_any_size_and_shots(model, k, h, w):
    batch = make_batch(b=2, k=k, h=h, w=w)
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (2, 2, h, w)
    assert torch.isfinite(out.logits).all()
    assert out.aux == {} and out.trace is None  # nothing training-only in eval


def test_identical_shots_equal_one_shot(model):
    """K copies of one support give the 1-shot prediction (mean prototype, K*h*w tokens, mean prior)."""
    one = make_batch(k=1, seed=3)
    many = dict(one, support_imgs=one["support_imgs"].repeat(1, 3, 1, 1, 1),
                support_masks=one["support_masks"].repeat(1, 3, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(model(many).logits, model(one).logits, rtol=1e-4, atol=1e-5)


def test_gradients_reach_exactly_the_trainable_parameters():
    torch.manual_seed(0)
    net = IPMT(**TINY).train()
    with torch.no_grad():  # the reference init zeroes these, making sampling query-independent (and
        for layer in net.transformer.query_layers:  # level_embed gradient-free) until the first step
            layer.self_attention.sampling_offsets.weight.normal_(0, 0.02)
            layer.self_attention.attention_weights.weight.normal_(0, 0.02)
    batch = make_batch(k=2, h=81, w=73)
    out = net(batch)
    losses = net.loss(out, batch)
    losses["total"].backward()
    for name, p in net.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
    expected = (0.7 * losses["dice_final"] + 0.3 * losses["dice_initial"]
                + 0.3 * losses["bce_query"] + 0.7 * losses["bce_support"])
    torch.testing.assert_close(losses["total"], expected)
    assert out.aux["query_masks"].shape == (2 * 3, 2, 11, 10) and out.aux["support_masks"].shape == (3, 2, 2, 11, 10)


@pytest.mark.parametrize("case", ["empty_support", "full_support", "ignore_query"])
@pytest.mark.parametrize("official", [False, True])
def test_finite_for_degenerate_masks(case, official):
    torch.manual_seed(0)
    net = IPMT(**TINY, reproduce_official=official)
    batch = make_batch(k=2, h=65, w=65)
    if case == "empty_support":
        batch["support_masks"].zero_()
    elif case == "full_support":
        batch["support_masks"].fill_(1)
    else:
        batch["query_mask"].fill_(255)
        batch["query_padding"].fill_(True)
    with torch.no_grad():
        out = net.eval()(batch, trace=True)
    assert torch.isfinite(out.logits).all()
    fg = out.trace["support_fg"].flatten(2)
    assert fg.any(-1).all() and (~fg).any(-1).all()  # guards: both sides always present
    net.train()
    losses = net.loss(net(batch), batch)
    assert all(torch.isfinite(v) for v in losses.values())


def test_eval_is_deterministic(model):
    batch = make_batch(k=2)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)


def _expected_shape(doc: str, dims: dict[str, int]) -> tuple[int, ...]:
    spec = re.match(r"\[([^\]]+)\]", doc).group(1)
    return tuple(eval(part, {}, dict(dims)) for part in spec.split(","))  # test-only: dims like h*w


def test_trace_has_every_documented_key_with_its_shape(model):
    b, k, h, w = 2, 3, 89, 71
    with torch.no_grad():
        out = model(make_batch(b=b, k=k, h=h, w=w), trace=True)
    assert set(out.trace) == set(TRACE_KEYS)
    dims = {"B": b, "K": k, "h": 12, "w": 9, "L": 3, "C": 16, "M": 1, "P": 4}
    for name, doc in TRACE_KEYS.items():
        assert tuple(out.trace[name].shape) == _expected_shape(doc, dims), name
        assert not out.trace[name].requires_grad
    assert torch.isfinite(out.trace["sampling_locations"]).all()
    torch.testing.assert_close(out.trace["support_attention"].flatten(2).sum(-1), torch.ones(3, b))
    torch.testing.assert_close(out.trace["sampling_weights"].sum(-1), torch.ones(3, b, 12 * 9, 1, 1))
    prior = out.trace["prior"]
    assert prior.min() >= 0 and prior.max() <= 1


def test_default_mode_never_reads_the_query_label(model):
    batch = make_batch(k=1)
    with torch.no_grad():
        reference = model(batch).logits
        changed = dict(batch, query_mask=torch.full_like(batch["query_mask"], 255))
        assert torch.equal(model(changed).logits, reference)
        without = {k: v for k, v in batch.items() if k != "query_mask"}
        assert torch.equal(model(without).logits, reference)
    # the official mode does read it (its 255 cells), so the check above can fail
    official = IPMT(**TINY, reproduce_official=True).eval()
    official.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(official(changed).logits, official(batch).logits)
        # ... and on this batch the label's 255 band equals the padding band: both modes agree
        torch.testing.assert_close(official(batch).logits, reference)


def test_bf16_autocast_and_channels_last(model):
    batch = make_batch(k=2, h=73, w=97)
    with torch.no_grad():
        reference = model(batch).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch).logits
        assert torch.isfinite(low).all() and low.shape == reference.shape
        assert (low.float() - reference).abs().max() < 0.25 * reference.abs().max() + 0.05
        model.channels_last = False
        try:
            torch.testing.assert_close(model(batch).logits, reference, rtol=1e-4, atol=1e-4)
        finally:
            model.channels_last = True
        cl_model = IPMT(**TINY).eval()
        cl_model.load_state_dict(model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last)
        cl_batch = dict(batch, query_img=batch["query_img"].contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(cl_model(cl_batch).logits, reference, rtol=1e-4, atol=1e-4)


def test_optimizer_specs_follow_train_py(model):
    specs = {s.name: s for s in model.optimizer_specs(base_lr=0.0025, weight_decay=1e-4)}
    sgd, adamw = specs["main"], specs["transformer"]
    assert sgd.kind == "sgd" and sgd.options == {"momentum": 0.9, "weight_decay": 1e-4}
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.0025 * 15)
    decayed, biases = adamw.param_groups
    assert adamw.kind == "adamw" and decayed["lr"] == biases["lr"] == 1e-4
    assert decayed["weight_decay"] == 1e-2 and biases["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].startswith("transformer.") for p in sgd.param_groups[0]["params"])
    assert all("bias" in names[id(p)] for p in biases["params"])
    assert all(names[id(p)].startswith("transformer.") and "bias" not in names[id(p)] for p in decayed["params"])
    grouped = [id(p) for spec in specs.values() for g in spec.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_reference_model(shot=1).state_dict()


def test_official_key_mapping_round_trip(reference_state, tmp_path):
    official = fsslab_to_official(reference_state)
    assert len(official) == 478  # the official IPMTnetwork state_dict (README of the harness)
    assert len(official) - len(reference_state) == 30  # its never-used layer_norms.20-29 and ffns.10-14
    if KEYS_FILE.is_file():  # the harness's generated listing, when present (not in CI)
        listing = {}
        for line in KEYS_FILE.read_text().splitlines():
            if line and not line.startswith("#"):
                key, shape = line.split(" ", 1)
                listing[key] = [int(v) for v in re.findall(r"\d+", shape.rsplit(" ", 1)[0])]
        assert set(official) == set(listing)
        assert all(list(official[k].shape) == listing[k] for k in listing)
    back = official_to_fsslab(official)
    assert back.keys() == reference_state.keys()
    assert all(torch.equal(back[k], reference_state[k]) for k in back)

    # official checkpoint format ({'state_dict': {'module.' + key}}) loads strictly through load_official
    small = IPMT(**TINY)
    export_official("ipmt", small, tmp_path / "ipmt.pth")
    raw = torch.load(tmp_path / "ipmt.pth", weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in raw)
    with pytest.raises(ValueError, match="does not match"):  # reference hyper-parameters != tiny model
        load_official("ipmt", tmp_path / "ipmt.pth")
    loaded = load_official("ipmt", tmp_path / "ipmt.pth", **TINY)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), small.state_dict().values()))
    with pytest.raises(ValueError, match="not part of the official IPMT layout"):
        official_to_fsslab({"transformer.bogus.weight": torch.zeros(1), **official})


def test_support_layer4_window_is_exact_and_smaller(model, monkeypatch):
    # small support objects: layer4 of the supports runs on the foreground box + receptive-field margin only
    batch = make_batch(b=2, k=2, h=161, w=177, seed=3)
    batch["support_masks"].zero_()
    batch["support_masks"][0, 0, 20:50, 30:60] = 1
    batch["support_masks"][1, 1, 60:80, 40:70] = 1
    window = model._layer4_window((batch["support_masks"] == 1).flatten(0, 1), (21, 23))
    assert window is not None
    rows, cols = window
    assert (rows.stop - rows.start) * (cols.stop - cols.start) < 21 * 23
    with torch.no_grad():
        windowed = model(batch).logits
        monkeypatch.setattr(model, "_layer4_window", lambda fg, size: None)
        full = model(batch).logits
    torch.testing.assert_close(windowed, full, rtol=0, atol=1e-5)
