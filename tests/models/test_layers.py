"""Shared layers against hand-computed values and naive loop implementations."""

from __future__ import annotations

import math

import pytest
import torch

from fsslab.models import layers
from fsslab.models.layers import (
    FFN,
    SinePositionalEncoding,
    foreground_window,
    masked_average_pool,
    prior_mask,
    weighted_dice_loss,
)

torch.set_num_threads(1)


def test_masked_average_pool_hand_values() -> None:
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 0.0], [0.0, -10.0]]]])  # [1,2,2,2]
    mask = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    out = masked_average_pool(feat, mask)
    assert out.shape == (1, 2, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([(1 + 1.0) / 1.5005, 10 / 1.5005]))
    empty = masked_average_pool(feat, torch.zeros_like(mask))
    assert torch.equal(empty, torch.zeros_like(empty))  # area eps: zero prototype, not NaN


def _naive_channel_pool(vec: torch.Tensor, bins: int) -> torch.Tensor:
    c = vec.numel()
    return torch.stack([vec[(i * c) // bins: -((-(i + 1) * c) // bins)].mean() for i in range(bins)])


def _naive_prior(query, supports, masks, normalize, eps, pool):
    b, k = supports.shape[:2]
    h, w = query.shape[-2:]
    out = torch.zeros(b, 1, h, w, dtype=torch.float64)
    for i in range(b):
        for s in range(k):
            feats = (supports[i, s] * masks[i, s]).flatten(1).T.double()  # [hs*ws, C]
            q = query[i].flatten(1).T.double()  # [h*w, C]
            if pool:
                feats = torch.stack([_naive_channel_pool(v, pool) for v in feats])
                q = torch.stack([_naive_channel_pool(v, pool) for v in q])
            best = torch.full((h * w,), -math.inf, dtype=torch.float64)
            for qi in range(h * w):
                for si in range(feats.shape[0]):
                    cos = (feats[si] @ q[qi]) / (feats[si].norm() * q[qi].norm() + eps)
                    best[qi] = max(best[qi], cos)
            if normalize:
                best = (best - best.min()) / (best.max() - best.min() + eps)
            out[i, 0] += best.reshape(h, w) / k
    return out


@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize(("normalize", "pool"), [(True, 4), (False, None)])
def test_prior_mask_matches_naive_loops(shots: int, normalize: bool, pool: int | None, monkeypatch) -> None:
    gen = torch.Generator().manual_seed(shots)
    query = torch.randn(2, 10, 3, 4, generator=gen)
    supports = torch.randn(2, shots, 10, 4, 3, generator=gen)
    masks = (torch.rand(2, shots, 1, 4, 3, generator=gen) > 0.4).float() * 0.75
    masks[0, 0] = 0  # an empty support shot: every cosine is 0
    expected = _naive_prior(query, supports, masks, normalize, 1e-7, pool).float()
    got = prior_mask(query, supports, masks, normalize=normalize, channel_pool=pool)
    assert got.shape == (2, 1, 3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(layers, "_PRIOR_BLOCK_ELEMENTS", 7)  # several blocks of support positions
    torch.testing.assert_close(prior_mask(query, supports, masks, normalize=normalize, channel_pool=pool),
                               expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coverage", ["full", "empty", "opposite_with_background", "opposite_full"])
def test_prior_mask_edge_coverages(coverage: str) -> None:
    """Only foreground support positions enter the products; the background counts as one exact 0 -- which
    must win over negative cosines when some background exists, and must not appear when none does."""
    gen = torch.Generator().manual_seed(3)
    query = torch.rand(2, 6, 3, 3, generator=gen) + 0.1  # positive features
    supports = torch.rand(2, 2, 6, 3, 3, generator=gen) + 0.1
    masks = torch.ones(2, 2, 1, 3, 3)
    if coverage == "empty":
        masks.zero_()
    if coverage.startswith("opposite"):
        supports = -supports  # every foreground cosine is negative
    if coverage == "opposite_with_background":
        masks[:, :, :, 0, 0] = 0
    expected = _naive_prior(query, supports, masks, False, 1e-7, None).float()
    got = prior_mask(query, supports, masks, normalize=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if coverage == "opposite_with_background":
        assert torch.equal(got, torch.zeros_like(got))
    if coverage == "opposite_full":
        assert (got < 0).all()


def test_positional_encoding_hand_values() -> None:
    pe = SinePositionalEncoding(num_feats=4, temperature=100)
    out = pe(torch.zeros(1, 2, 3, dtype=torch.bool))
    assert out.shape == (1, 8, 2, 3)
    two_pi = 2 * math.pi
    y = torch.tensor([1.0, 2.0]) / (2 + 1e-6) * two_pi  # rows: cumulative count / total * 2pi
    x = torch.tensor([1.0, 2.0, 3.0]) / (3 + 1e-6) * two_pi
    wavelengths = [1.0, 1.0, 10.0, 10.0]  # 100 ** (2 * (i // 2) / 4)
    for c in range(4):
        fn = torch.sin if c % 2 == 0 else torch.cos
        torch.testing.assert_close(out[0, c, :, 0], fn(y / wavelengths[c]))  # y half first
        torch.testing.assert_close(out[0, 4 + c, 0, :], fn(x / wavelengths[c]))


def test_positional_encoding_skips_masked_cells() -> None:
    mask = torch.tensor([[[False, True, False, False]]])  # one row; the second cell is excluded
    out = SinePositionalEncoding(num_feats=2, normalize=False)(mask)
    # x positions count valid cells only: 1, 1, 2, 3
    torch.testing.assert_close(out[0, 2, 0], torch.sin(torch.tensor([1.0, 1.0, 2.0, 3.0])))
    torch.testing.assert_close(out[0, 3, 0], torch.cos(torch.tensor([1.0, 1.0, 2.0, 3.0])))


def test_ffn_residual_and_bias() -> None:
    ffn = FFN(4, 8).eval()
    assert ffn.fc1.bias is None and ffn.fc2.bias is None
    x = torch.randn(3, 5, 4)
    branch = ffn.fc2(torch.relu(ffn.fc1(x)))
    torch.testing.assert_close(ffn(x), x + branch)
    identity = torch.randn(3, 5, 4)
    torch.testing.assert_close(ffn(x, identity), identity + branch)
    torch.testing.assert_close(FFN(4, 8, add_identity=False).eval()(x).shape, x.shape)


def test_weighted_dice_loss_hand_computed_with_ignore() -> None:
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # [1,2,1,2]: p = .5,.5 / .5,.75
    target = torch.tensor([[[1, 255]]])  # pixel 0 foreground, pixel 1 ignored
    # bg channel: t = (0, 0): 1 - 0 / (.25 + .25) = 1
    # fg channel: t = (1, 0): 1 - 2 * .5 / (.25 + .5625 + 1) = 1 - 1 / 1.8125
    expected = 1.0 + (1 - 1 / 1.8125)
    torch.testing.assert_close(weighted_dice_loss(logits, target), torch.tensor(expected))
    none = weighted_dice_loss(logits, target, weight=2.0, reduction="none")
    torch.testing.assert_close(none, torch.tensor([[2.0, 2 * (1 - 1 / 1.8125)]]))
    with pytest.raises(ValueError, match="reduction"):
        weighted_dice_loss(logits, target, reduction="max")


def test_foreground_window_bounds() -> None:
    fg = torch.zeros(2, 10, 12, dtype=torch.bool)
    assert foreground_window(fg) is None  # empty: nothing to save
    fg[0, 3:5, 4:6] = True
    fg[1, 6, 0] = True
    assert foreground_window(fg) == (slice(3, 7), slice(0, 6))  # the union's bounding box
    assert foreground_window(fg, halo=1) == (slice(2, 8), slice(0, 7))  # widened, clipped at the border
    assert foreground_window(torch.ones(1, 10, 12, dtype=torch.bool)) is None  # the whole map
