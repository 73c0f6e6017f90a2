"""fsslab.viz explorers without a browser (changing a control updates the figure's data), and the figures on
the traces of the real IPMT and AMFormer models."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from fixtures.viz import LAYERS, H, W, assert_labelled, make_batch, make_ipmt_trace

from fsslab import viz
from fsslab.viz import amformer as amv

torch.set_num_threads(1)


# ---------------------------------------------------------------- widgets (no browser)

def test_episode_explorer_updates_figure_when_slider_moves():
    from fsslab.viz.widgets import episode_explorer
    batch = make_batch(1, batch=2)
    dataset = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    explorer = episode_explorer(dataset, weak_fn=lambda m, kind: (m == 1).long())
    first = explorer.figure.axes[0].images[0].get_array().copy()
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    explorer.controls["episode"].value = 1
    assert explorer.data["sample"] is dataset[1]
    assert not np.allclose(explorer.figure.axes[0].images[0].get_array(), first)
    rows_with_weak = len(explorer.figure.axes)
    explorer.controls["weak"].value = False
    assert len(explorer.figure.axes) < rows_with_weak and explorer.data["weak_masks"] is None


def test_ipmt_explorer_layer_and_shot_controls():
    from fsslab.viz.widgets import ipmt_explorer
    calls = []

    def run_fn(episode, shot):
        calls.append((episode, shot))
        trace = make_ipmt_trace(shot, batch=1)
        trace["query_layer_query_masks"] = trace["query_layer_query_masks"] + 10.0 * episode
        return make_batch(shot, batch=1, seed=episode), trace

    explorer = ipmt_explorer(run_fn, n_episodes=3, shots=(1, 5))
    assert explorer.data["layer"] == LAYERS - 1 and explorer.error is None
    act_ax = next(ax for ax in explorer.figure.axes if ax.get_title().startswith("query activation"))
    before = act_ax.images[1].get_array().copy()
    explorer.controls["layer"].value = 1
    act_ax = next(ax for ax in explorer.figure.axes if ax.get_title().startswith("query activation"))
    assert explorer.data["layer"] == 0 and not np.allclose(act_ax.images[1].get_array(), before)
    support = explorer.controls["support"]
    assert (support.max, support.disabled) == (1, True)  # one shot: nothing to choose
    pred_ax = next(ax for ax in explorer.figure.axes if ax.get_title().startswith("prediction (final) · IoU"))
    assert pred_ax.images  # the model's prediction beside the layer's activations
    explorer.controls["shot"].value = 5
    assert (support.max, support.disabled) == (5, False)  # the support slider follows the shot count
    support.value = 3
    assert explorer.data["batch"]["support_imgs"].shape[1] == 5 and explorer.data["support"] == 2
    assert "support 3 of 5" in explorer.figure.get_suptitle()
    explorer.controls["layer"].value = 2
    assert calls == [(0, 1), (0, 5)]  # moving the layer slider re-uses the cached run
    explorer.controls["shot"].value = 1  # back to one shot: the slider shrinks to support 1
    assert (support.value, support.max) == (1, 1)
    assert explorer.error is None and explorer.data["support"] == 0


def test_trace_runner_batches_one_episode_and_returns_the_trace():
    from fsslab.engine import trace_runner
    from fsslab.models.output import FSSOutput

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def forward(self, batch, trace=False):
            self.seen.append((batch["support_imgs"].shape, trace, self.training, torch.is_grad_enabled()))
            return FSSOutput(torch.zeros(1, 2, H, W), trace=make_ipmt_trace(batch["support_imgs"].shape[1], 1))

    batch5 = make_batch(5, batch=2)
    datasets = {5: [{k: v[i] for k, v in batch5.items()} for i in range(2)]}
    model = Recorder().train()
    batch, trace = trace_runner(model, datasets)(1, 5)
    assert batch["support_imgs"].shape == (1, 5, 3, H, W) and torch.equal(batch["query_img"][0], batch5["query_img"][1])
    assert model.seen == [((1, 5, 3, H, W), True, False, False)]
    assert "query_prototypes" in trace
    with pytest.raises(KeyError, match="available: \\[5\\]"):
        trace_runner(model, datasets)(0, 1)


def test_mask_perturbation_analyser_scores_follow_controls():
    from fsslab.viz.widgets import mask_perturbation_analyser
    batch = make_batch(1, batch=2)
    episodes = [{k: v[i] for k, v in batch.items()} for i in range(2)]

    def score_fn(sample, mask):  # a stand-in "discriminator": IoU with the ground truth
        return amv.mask_iou(mask, sample["query_mask"])

    explorer = mask_perturbation_analyser(score_fn, episodes, predict_fn=lambda s: (s["query_mask"] == 1).long())
    assert explorer.data["scores"]["ground truth"] == pytest.approx(1.0)
    assert explorer.data["scores"]["prediction"] == pytest.approx(1.0)
    explorer.controls["strength"].value = 0.0
    key = "erode 0.00"
    assert explorer.data["scores"][key] == pytest.approx(1.0)
    explorer.controls["kind"].value = "dilate"
    explorer.controls["strength"].value = 0.6
    assert explorer.data["scores"]["dilate 0.60"] < 0.9
    bars = explorer.figure.axes[-1].patches
    assert bars[-1].get_height() == pytest.approx(explorer.data["scores"]["dilate 0.60"])


# ---------------------------------------------------------------- the real models' traces

def _tiny_batch(shots: int) -> dict[str, torch.Tensor]:
    batch = make_batch(shots, batch=1)
    batch["query_padding"] = batch["query_mask"] == 255
    batch["support_padding"] = batch["support_masks"] == 255
    batch["query_base_mask"] = batch["query_mask"].clone()
    return batch


@pytest.mark.parametrize("shots", [1, 5])
def test_figures_read_the_real_ipmt_trace(shots):
    ipmt = pytest.importorskip("fsslab.models.ipmt.model")
    torch.manual_seed(0)
    model = ipmt.IPMT(backbone="resnet_tiny", hidden_dim=16, num_layers=2).eval()
    batch = _tiny_batch(shots)
    with torch.no_grad():
        trace = model(batch, trace=True).trace
    assert_labelled(viz.plot_ipmt_overview(trace, batch, layer=0, shot=shots - 1))
    assert_labelled(viz.plot_prototype_trajectory(trace, batch))
    assert_labelled(viz.plot_cross_attention(trace, batch, shot=shots - 1))


@pytest.mark.parametrize("shots", [1, 5])
def test_figures_read_the_real_amformer_trace(shots):
    amformer = pytest.importorskip("fsslab.models.amformer")
    torch.manual_seed(0)
    model = amformer.AMFormer(backbone="resnet_tiny", shot=shots, hidden_dim=16, transformer_dim=16, parts=4,
                              part_heads=2).train()  # D's part maps and scores are traced in training mode
    batch = _tiny_batch(shots)
    with torch.no_grad():
        trace = model(batch, trace=True).trace
    for fig in (viz.plot_mask_evolution(trace, batch), viz.plot_mining(trace, batch),
                viz.plot_part_attention(trace, batch), viz.plot_ensemble_effect(trace, batch)):
        assert_labelled(fig)
    assert set(viz.discriminator_scores(trace)) == {"ground truth", "G's mask"}
