"""torch.compile does not break the models (eager backend: graph capture only, no code generation)."""

import pytest
import torch

from fsslab.models import build_model

TINY = {
    "ipmt": {"backbone": "resnet_tiny", "hidden_dim": 16, "num_layers": 2, "num_heads": 1, "deform_points": 4},
    "amformer": {"backbone": "resnet_tiny", "hidden_dim": 16, "transformer_dim": 16, "base_head_channels": 32,
                 "n_base_classes": 15},
}


def _batch(b: int = 1, k: int = 1, h: int = 73, w: int = 81) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(b, k, h, w, dtype=torch.long)
    masks[..., 20:50, 25:60] = 1
    return {"query_img": torch.randn(b, 3, h, w, generator=g), "support_imgs": torch.randn(b, k, 3, h, w, generator=g),
            "support_masks": masks, "query_padding": torch.zeros(b, h, w, dtype=torch.bool),
            "support_padding": torch.zeros(b, k, h, w, dtype=torch.bool), "class_id": torch.ones(b, dtype=torch.long)}


@pytest.mark.parametrize("name", ["ipmt", "amformer"])
def test_compiled_eval_forward_matches_eager(name):
    torch.manual_seed(0)
    model = build_model({"name": name, **TINY[name]}).eval()
    batch = _batch()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        expected = model(batch).logits
        got = compiled(batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
