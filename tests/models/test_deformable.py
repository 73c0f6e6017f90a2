"""Multi-scale deformable attention against a naive per-point bilinear computation."""

from __future__ import annotations

import math

import pytest
import torch

from fsslab.models.deformable import MultiScaleDeformableAttention, ms_deform_attn, reference_grid

SHAPES = [(5, 6), (3, 4)]



pytestmark = pytest.mark.usefixtures("one_thread")

def naive_bilinear(plane: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """plane [D,H,W]; (x, y) in pixel coordinates (cell centres at integers); zeros outside."""
    _, h, w = plane.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(plane.shape[0], dtype=plane.dtype)
    for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= xi < w and 0 <= yi < h:
                out += wx * wy * plane[:, yi, xi]
    return out


def naive_ms_deform_attn(value, shapes, locations, weights):
    """Loops over batch, query, head, level and point (the definition, slow on purpose)."""
    n, _, heads, dims = value.shape
    num_queries, points = locations.shape[1], locations.shape[4]
    out = torch.zeros(n, num_queries, heads, dims, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(num_queries):
            for m in range(heads):
                for lv, (h, w) in enumerate(shapes):
                    plane = value[b, starts[lv]:starts[lv + 1], m].T.reshape(dims, h, w)
                    for p in range(points):
                        lx, ly = locations[b, q, m, lv, p].tolist()
                        sample = naive_bilinear(plane, lx * w - 0.5, ly * h - 0.5)
                        out[b, q, m] += weights[b, q, m, lv, p] * sample
    return out.reshape(n, num_queries, heads * dims)


def _inputs(seed: int = 0, n: int = 2, heads: int = 2, dims: int = 3, queries: int = 6, points: int = 4):
    g = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(n, tokens, heads, dims, generator=g, dtype=torch.float64)
    # include points outside the map and exactly on borders / cell centres
    locations = torch.rand(n, queries, heads, len(SHAPES), points, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    locations[0, 0, 0, 0, 0] = torch.tensor([0.5 / 6, 0.5 / 5], dtype=torch.float64)  # a cell centre
    locations[0, 0, 0, 0, 1] = torch.tensor([0.0, 1.0], dtype=torch.float64)  # image border
    weights = torch.rand(n, queries, heads, len(SHAPES), points, generator=g, dtype=torch.float64)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    return value, locations, weights


@pytest.mark.parametrize("method", ["gather", "grid_sample"])
def test_matches_naive_bilinear(method):
    value, locations, weights = _inputs()
    expected = naive_ms_deform_attn(value, SHAPES, locations, weights)
    got = ms_deform_attn(value, torch.tensor(SHAPES), locations, weights, method=method)
    assert got.shape == (2, 6, 2 * 3)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_methods_agree_in_float32_and_bad_shapes_raise():
    value, locations, weights = (t.float() for t in _inputs(seed=3))
    a = ms_deform_attn(value, SHAPES, locations, weights, method="gather")
    b = ms_deform_attn(value, SHAPES, locations, weights, method="grid_sample")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tokens"):
        ms_deform_attn(value[:, 1:], SHAPES, locations, weights)
    with pytest.raises(ValueError, match="method"):
        ms_deform_attn(value, SHAPES, locations, weights, method="cuda")


def test_gradients_flow_to_values_locations_and_weights():
    value, locations, weights = (t.clone().requires_grad_() for t in _inputs(seed=1))
    out = ms_deform_attn(value, SHAPES, locations, weights)
    out.square().sum().backward()
    for t in (value, locations, weights):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # same gradients as the grid_sample formulation
    grads = [t.grad.clone() for t in (value, locations, weights)]
    for t in (value, locations, weights):
        t.grad = None
    ms_deform_attn(value, SHAPES, locations, weights, method="grid_sample").square().sum().backward()
    # the two hand-placed points sit on kinks of the piecewise-bilinear map: one-sided derivatives differ
    grads[1][0, 0, 0, 0, :2] = locations.grad[0, 0, 0, 0, :2]
    for g, t in zip(grads, (value, locations, weights)):
        torch.testing.assert_close(g, t.grad, rtol=1e-8, atol=1e-8)


def test_module_reference_shapes_and_padding_mask():
    torch.manual_seed(0)
    embed, heads, levels, points = 8, 2, 2, 3
    attn = MultiScaleDeformableAttention(embed, num_levels=levels, num_heads=heads, num_points=points).double()
    # reference MSDeformAttn parameter shapes (keys map one to one)
    assert attn.sampling_offsets.weight.shape == (heads * levels * points * 2, embed)
    assert attn.attention_weights.weight.shape == (heads * levels * points, embed)
    assert attn.value_proj.weight.shape == attn.output_proj.weight.shape == (embed, embed)
    with torch.no_grad():  # query-dependent sampling, not just the init's fixed star
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    tokens = sum(h * w for h, w in SHAPES)
    value_input = torch.randn(2, tokens, embed, dtype=torch.float64)
    query = torch.randn(2, tokens, embed, dtype=torch.float64)
    reference = reference_grid(SHAPES, dtype=torch.float64)
    padding = torch.rand(2, tokens) < 0.3
    out, locations, weights = attn(query, reference, value_input, SHAPES, padding, return_sampling=True)

    value = attn.value_proj(value_input).masked_fill(padding[..., None], 0.0).view(2, tokens, heads, -1)
    expected = attn.output_proj(naive_ms_deform_attn(value, SHAPES, locations, weights))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones_like(weights.sum((-1, -2))))
    # padded values really are ignored: changing them does not change the output
    value_input2 = value_input.clone()
    value_input2[padding] += 100.0
    torch.testing.assert_close(attn(query, reference, value_input2, SHAPES, padding), out)
    assert not torch.allclose(attn(query, reference, value_input2, SHAPES), out)


def test_reference_grid_is_cell_centres():
    ref = reference_grid([(2, 4)])
    assert ref.shape == (1, 8, 1, 2)
    torch.testing.assert_close(ref[0, :4, 0, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(ref[0, ::4, 0, 1], torch.tensor([0.25, 0.75]))
