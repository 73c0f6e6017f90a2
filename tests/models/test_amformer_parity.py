"""AMFormer eval logits equal the official code's (official_ref harness; skipped when it is absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from fsslab.models import load_official
from fsslab.models.official import export_official

HARNESS = Path(os.environ.get("OFFICIAL_REF_DIR", "/work/shared/tools/official_ref"))
OUTPUTS = Path(os.environ.get("OFFICIAL_REF_OUTPUTS", "/tmp/official_ref_outputs.pt"))
CKPT = Path(os.environ.get("OFFICIAL_REF_CKPT_DIR", "/tmp/official_ref_ckpts")) / "amformer_shot1_seed0_official.pth"

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(not (HARNESS / "official_ref.py").is_file() or not os.environ.get("OFFICIAL_AMNET_GIT"),
                       reason="official_ref harness / OFFICIAL_AMNET_GIT not available"),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, Path]:
    """(recorded official outputs, official-format checkpoint); generated with the harness if missing."""
    if OUTPUTS.is_file() and CKPT.is_file():
        rec = torch.load(OUTPUTS, map_location="cpu", weights_only=True)
        if "outputs" in rec.get("amformer", {}):
            return rec, CKPT
    sys.path.insert(0, str(HARNESS))
    import official_ref as R

    model = R.build_official_amformer(shot=1, seed=0)
    ckpt = tmp_path_factory.mktemp("amf") / "amformer_official.pth"
    R.save_official_checkpoint(model, ckpt)
    rec = {}
    for key, empty in (("inputs", False), ("inputs_empty_support", True)):
        d = R.make_inputs(shot=1, seed=0, empty_support=empty)
        final, meta, base = R.run_amformer(model, d["x"], d["s_x"], d["s_y"], d["y"], d["y"], d["cat_idx"])
        rec[key] = d
        rec.setdefault("amformer", {})["outputs" if not empty else "outputs_empty_support"] = {
            "final_out": final, "meta_out": meta, "base_out": base}
    return rec, ckpt


@pytest.fixture(scope="module")
def model(reference):
    return load_official("amformer", reference[1], reproduce_official=True)


@pytest.mark.parametrize("case", ["", "_empty_support"])
def test_eval_logits_match_official(reference, model, case: str) -> None:
    rec, _ = reference
    torch.set_num_threads(2)
    d = rec[f"inputs{case}"]
    with torch.no_grad():
        out = model({"query_img": d["x"], "support_imgs": d["s_x"], "support_masks": d["s_y"]})
    ref = rec["amformer"][f"outputs{case}"]
    torch.testing.assert_close(out.logits, ref["final_out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.aux["meta_logits"], ref["meta_out"], atol=1e-4, rtol=0)
    # base_out reaches |78| after 50 frozen fp32 layers: compare relative to its scale
    scale = ref["base_out"].abs().max()
    assert (out.aux["base_logits"] - ref["base_out"]).abs().max() <= 1e-5 * scale


def test_export_round_trip(reference, model, tmp_path) -> None:
    _, ckpt = reference
    export_official("amformer", model, tmp_path / "back.pth")
    again = torch.load(tmp_path / "back.pth", weights_only=True)["state_dict"]
    original = torch.load(ckpt, weights_only=True)["state_dict"]
    assert set(again) == set(original)
    dead = {"module.supp_merge.0.weight"}  # unused by the official forward, exported as zeros
    assert all(torch.equal(again[k], v) for k, v in original.items() if k not in dead)
