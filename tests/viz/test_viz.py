"""fsslab.viz figures: every figure builds with labelled axes for 1 and 5 shots and shows the right data."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from fixtures.viz import LAYERS, H, W, assert_labelled, h, make_amformer_trace, make_batch, make_ipmt_trace, w

from fsslab import viz
from fsslab.viz import amformer as amv
from fsslab.viz import ipmt as ipv
from fsslab.viz.palette import FOREGROUND, IGNORE, denormalize, overlay_mask

torch.set_num_threads(1)


# ---------------------------------------------------------------- palette

def test_denormalize_inverts_imagenet_normalisation():
    rgb = torch.rand(3, 4, 5)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    out = denormalize((rgb - mean[:, None, None]) / std[:, None, None])
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, rgb.permute(1, 2, 0).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        denormalize(torch.rand(4, 5))


def test_overlay_draws_ignore_band_distinctly_from_object_and_background():
    img = np.zeros((2, 3, 3), np.float32)
    mask = torch.tensor([[0, 1, 255], [0, 1, 255]])
    out = overlay_mask(img, mask, FOREGROUND, alpha=0.5)
    np.testing.assert_allclose(out[0, 0], 0.0)  # background untouched
    np.testing.assert_allclose(out[0, 1], 0.5 * np.array(FOREGROUND), atol=1e-6)
    np.testing.assert_allclose(out[0, 2], 0.75 * np.array(IGNORE), atol=1e-6)
    assert not np.allclose(out[0, 1], out[0, 2])
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(img, torch.zeros(3, 3), FOREGROUND)


# ---------------------------------------------------------------- episodes

@pytest.mark.parametrize("shots", [1, 5])
def test_show_episode_batch_and_sample_with_weak_supports(shots):
    batch = make_batch(shots)
    weak = {"box": (batch["support_masks"] == 1).long(), "scribble": (batch["support_masks"] == 1).long()}
    fig = viz.show_episode(batch, index=1, class_names=[f"c{i}" for i in range(1, 21)], weak_masks=weak)
    assert_labelled(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert f"support {shots} · scribble" in titles and "query + target mask" in titles
    assert "c7" in fig._suptitle.get_text()
    # one dataset sample (no batch dimension) works too, and the ignore band is rendered white
    sample = {k: v[0] for k, v in batch.items()}
    fig = viz.show_episode(sample)
    query_ax = next(ax for ax in fig.axes if ax.get_title() == "query + target mask")
    shown = np.asarray(query_ax.images[0].get_array())
    band = (sample["query_mask"] == 255).numpy()
    assert shown[band].mean() > 0.7 > shown[~band].mean()  # the ignore band is drawn white-ish


def test_show_episode_rejects_weak_masks_of_wrong_shot_count():
    batch = make_batch(5)
    with pytest.raises(ValueError, match="K=5"):
        viz.show_episode(batch, weak_masks={"box": torch.zeros(2, 3, H, W)})


def test_class_statistics_grouped_by_protocol_and_fold():
    folds = {0: [1, 2], 1: [3, 4]}
    stats = {"PFENet": {1: 10, 2: 7, 3: 4, 4: 1}, "BAM": {1: 6, 2: 5, 3: 3, 4: 1}}
    fig = viz.show_class_statistics(stats, class_names=["a", "b", "c", "d"], folds=folds)
    assert_labelled(fig)
    main, per_fold = fig.axes
    assert [t.get_text() for t in main.get_xticklabels()] == ["a", "b", "c", "d"]
    heights = [p.get_height() for p in per_fold.patches]
    assert heights == [17, 5, 11, 4]  # PFENet fold 0/1, then BAM fold 0/1
    assert_labelled(viz.show_class_statistics({1: 3, 2: 4}))


def test_weak_supports_match_the_data_package_and_keep_the_ignore_band():
    weak_mod = pytest.importorskip("fsslab.data.weak")
    masks = make_batch(5)["support_masks"]  # [B,K,H,W]
    weak = viz.weak_supports(masks, seed=4)
    assert set(weak) == {"box", "scribble"} and weak["box"].shape == masks.shape
    first = weak_mod.weak_label(masks[0, 0].numpy().astype(np.uint8), "scribble", seed=4)
    np.testing.assert_array_equal(weak["scribble"][0, 0].numpy(), first)
    assert bool(((weak["scribble"] == 1) <= (masks == 1)).all())  # scribbles lie inside the object
    assert bool((weak["box"][masks == 255] == 255).all())


def test_protocol_comparison_bars_follow_the_summaries():
    from types import SimpleNamespace
    summaries = [SimpleNamespace(fold=f, protocol=p, n_kept=n, n_listed=300, n_dropped_with_novel=0)
                 for f, p, n in [(0, "pfenet", 230), (0, "bam", 129), (1, "pfenet", 240), (1, "bam", 120)]]
    fig = viz.show_protocol_comparison(summaries)
    assert_labelled(fig)
    assert [p.get_height() for p in fig.axes[0].patches] == [230, 240, 129, 120]


# ---------------------------------------------------------------- curves

def test_training_curves_from_jsonl_with_adversarial_panel(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"iteration": i, "loss": {"total": 1.0 / (i + 1), "loss_G": 0.5, "loss_D": 0.7}} for i in range(5)]
    records.append({"iteration": 5, "split": "val", "miou": 0.4})
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    fig = viz.plot_training_curves(log)
    assert_labelled(fig)
    assert [ax.get_title() for ax in fig.axes] == ["losses", "generator / discriminator losses",
                                                   "evaluation metrics"]
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [1.0 / (i + 1) for i in range(5)])
    fig = viz.plot_training_curves(records, keys=["loss/total"], smooth=2)
    assert len(fig.axes[0].lines[0].get_ydata()) == 4
    with pytest.raises(KeyError, match="loss/nope"):
        viz.plot_training_curves(records, keys=["loss/nope"])


def test_training_curves_read_the_trainers_log(tmp_path):
    runlog = pytest.importorskip("fsslab.engine.train.runlog")
    logger = runlog.RunLogger(tmp_path, tensorboard=False)
    for i in range(4):  # the records Trainer._log / Trainer._evaluate write for AMFormer
        logger.record({"iteration": i, "epoch": 0, "loss": {"total": 1.0 - 0.1 * i, "adversarial_g": 0.7,
                                                           "adversarial_d": 0.6, "diversity": 0.2},
                       "lr": {"generator": 0.01}, "episodes_per_s": 5.0})
    logger.record({"iteration": 4, "eval": {"miou": 40.0, "fbiou": 60.0}})
    fig = viz.plot_training_curves(tmp_path / "log.jsonl")
    panels = {ax.get_title(): [line.get_label() for line in ax.lines] for ax in fig.axes}
    assert panels == {"losses": ["loss/total"],
                      "generator / discriminator losses": ["loss/adversarial_d", "loss/adversarial_g",
                                                           "loss/diversity"],
                      "evaluation metrics": ["eval/fbiou", "eval/miou"]}


def test_bar_miou_reads_eval_results():
    evaluate = pytest.importorskip("fsslab.engine.evaluate")
    result = evaluate.EvalResult(seeds=[0], per_seed=[], miou_mean=50.0, miou_std=0.0, fbiou_mean=60.0,
                                 fbiou_std=0.0, class_iou_mean={1: 40.0, 2: 60.0}, episodes_per_seed=10)
    fig = viz.bar_miou({"IPMT": result}, class_names=["a", "b"])
    assert [p.get_height() for p in fig.axes[0].patches] == [40.0, 60.0, 50.0]


def test_training_log_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iteration": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        viz.plot_training_curves(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        viz.read_jsonl(tmp_path / "missing.jsonl")


def test_bar_miou_and_results_table():
    results = {"baseline": {"per_class_iou": {1: 30.0, 2: 40.0}, "miou": 35.0},
               "IPMT": {"per_class_iou": {1: 50.0, 2: 60.0}}}
    fig = viz.bar_miou(results, class_names=["a", "b"])
    assert_labelled(fig)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [30.0, 40.0, 35.0, 50.0, 60.0, 55.0]  # the IPMT mean is computed from its classes
    assert ax.get_ylabel() == "IoU (%)"
    table_fig = viz.plot_results_table({"baseline": {"mIoU": 35.0, "FB-IoU": 60.0}, "IPMT": {"mIoU": 55.0}})
    assert table_fig.axes[0].get_title() == "Results"
    cells = table_fig.axes[0].tables[0].get_celld()
    assert cells[(2, 0)].get_text().get_text() == "55.0" and cells[(2, 1)].get_text().get_text() == "–"
    assert cells[(2, 0)].get_text().get_fontweight() == "bold"
    lower = viz.plot_results_table({"a": {"share": 4.9}, "b": {"share": 17.9}}, lower_is_better=["share"])
    cells = lower.axes[0].tables[0].get_celld()
    assert cells[(1, 0)].get_text().get_fontweight() == "bold" and cells[(2, 0)].get_text().get_fontweight() != "bold"


# ---------------------------------------------------------------- IPMT

@pytest.mark.parametrize("shots", [1, 5])
def test_ipmt_figures(shots):
    batch, trace = make_batch(shots), make_ipmt_trace(shots)
    for fig in (viz.plot_prototype_activation(trace, batch, index=1, shot=shots - 1),
                viz.plot_prototype_trajectory(trace, batch, index=1),
                viz.plot_deformable_sampling(trace, batch, index=1, layer=1),
                viz.plot_cross_attention(trace, batch, index=1, shot=shots - 1),
                viz.plot_prior_mask(trace, batch, index=1),
                viz.plot_ipmt_overview(trace, batch, layer=0, index=1, shot=shots - 1)):
        assert_labelled(fig)
    with pytest.raises(IndexError, match="shot"):
        viz.prototype_activation(trace, 0, shot=shots)
    act = viz.prototype_activation(trace, 1, shot=shots - 1)
    assert set(act) == {"query", "query (mined)", "support"} and act["support"].shape == (LAYERS, h, w)
    torch.testing.assert_close(act["support"], trace["query_layer_support_masks"][:, 1, shots - 1].sigmoid())
    titles = [ax.get_title() for ax in viz.plot_prototype_activation(trace, batch, 1, shot=shots - 1).axes]
    assert titles[0] == "query · mining 1" and titles[-1] == f"support {shots} · layer {LAYERS}"


def test_prototype_trajectory_measures_motion_from_support_to_query():
    support, query = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    steps = torch.linspace(0, 1, LAYERS)[:, None]
    trace = {"query_prototypes": ((1 - steps) * support + steps * query)[:, None]}
    traj = viz.prototype_trajectory(trace, references={"support-only": support, "query-only": query})
    assert traj["labels"] == ["layer 1", "layer 2", "layer 3"]
    np.testing.assert_allclose(traj["cosine"]["support-only"], [1.0, 1 / np.sqrt(2), 0.0], atol=1e-6)
    np.testing.assert_allclose(traj["cosine"]["query-only"], [0.0, 1 / np.sqrt(2), 1.0], atol=1e-6)
    proj = traj["projection"]  # rows: support, query, layers; the layer path runs from one end to the other
    assert proj.shape == (LAYERS + 2, 2)
    np.testing.assert_allclose(proj[2], proj[0], atol=1e-5)
    np.testing.assert_allclose(proj[-1], proj[1], atol=1e-5)


def test_trajectory_uses_mining_layers_and_pooled_features():
    batch = make_batch(5)
    trace = make_ipmt_trace(5)
    traj = viz.prototype_trajectory(trace, batch, index=1)  # the model's own trace: mined prototype reference
    assert traj["labels"][:LAYERS] == [f"mine {i}" for i in range(1, LAYERS + 1)]
    assert list(traj["cosine"]) == ["support-only"]
    assert traj["cosine"]["support-only"][LAYERS - 1] == pytest.approx(1.0)  # the last mined one itself
    feat = torch.zeros(2, 6, h, w)
    feat[:, 0] = 1.0  # query features point along axis 0, supports along axis 1
    sfeat = torch.zeros(2, 5, 6, h, w)
    sfeat[:, :, 1] = 1.0
    trace.update(query_feat=feat, support_feat=sfeat)
    trace["query_prototypes"][-1, 0] = torch.tensor([0.0, 1, 0, 0, 0, 0])
    traj = viz.prototype_trajectory(trace, batch)
    assert traj["cosine"]["support-only"][-1] == pytest.approx(1.0)
    assert traj["cosine"]["query-only"][-1] == pytest.approx(0.0)
    del trace["support_prototypes"], trace["support_feat"]
    trace.pop("query_feat")
    with pytest.raises(KeyError, match="reference prototype"):
        viz.prototype_trajectory(trace, batch)


def test_pca_matches_the_exact_principal_subspace():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    proj = viz.pca_2d(x)
    centred = x - x.mean(dim=0)
    # the projection's column norms are the two largest singular values of the centred data (exact SVD;
    # torch.pca_lowrank is randomised and only approximates them)
    np.testing.assert_allclose(proj.norm(dim=0), torch.linalg.svdvals(centred)[:2], rtol=1e-4)
    # and the projection spans the top principal directions: reconstructing from it loses only the rest
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(proj.abs(), (centred @ vh[:2].T).abs(), atol=1e-5)


def test_deformable_samples_are_placed_in_image_pixels():
    trace = make_ipmt_trace(1)
    trace["sampling_locations"][0, 0, 3 * w + 2] = 0.5  # every point of token (row 3, col 2) at the centre
    (xy, wgt), = ipv.deformable_samples(trace, 0, 0, [(3, 2)], (H, W))
    np.testing.assert_allclose(xy, np.full((18, 2), W / 2 - 0.5))
    assert wgt.shape == (18,)  # 2 heads x 9 points
    points = ipv.default_query_points(make_batch(1)["query_mask"][0], (h, w))
    fg = torch.nn.functional.interpolate((make_batch(1)["query_mask"][:1] == 1).float()[None], size=(h, w))[0, 0]
    assert fg[points[0]] == 1 and fg[points[1]] == 0


def test_missing_trace_key_names_the_expected_entry():
    trace = make_ipmt_trace(1)
    del trace["query_attention"]
    with pytest.raises(KeyError, match=r"query_attention.*\[L,B,h,w\]"):
        viz.plot_cross_attention(trace, make_batch(1))
    assert_labelled(viz.plot_ipmt_overview(trace, make_batch(1)))  # the overview leaves that panel blank


# ---------------------------------------------------------------- AMFormer

@pytest.mark.parametrize("shots", [1, 5])
def test_amformer_figures(shots):
    batch, trace = make_batch(shots), make_amformer_trace()
    assert list(amv.mask_evolution(trace, 0)) == ["initial", "mined", "refined 1", "refined 2", "final"]
    assert float(amv.mask_evolution(trace, 0)["initial"].max()) <= 1.0
    scores = viz.discriminator_scores(trace, 1)
    assert set(scores) == {"ground truth", "G's mask"} and all(0 < v < 1 for v in scores.values())
    for fig in (viz.plot_mask_evolution(trace, batch, 1), viz.plot_mining(trace, batch, 1),
                viz.plot_part_attention(trace, batch, 1, kind="real"),
                viz.plot_part_attention(trace, batch, 1, kind="fake", max_parts=3),
                viz.plot_ensemble_effect(trace, batch, 1), viz.plot_discriminator_scores(scores)):
        assert_labelled(fig)


def test_part_diversity_is_one_for_identical_parts_and_zero_for_disjoint():
    same = torch.ones(3, 4, 4)
    assert viz.part_diversity(same) == pytest.approx(1.0)
    disjoint = torch.eye(4).reshape(4, 2, 2)
    assert viz.part_diversity(disjoint) == pytest.approx(0.0)


@pytest.mark.parametrize("kind", viz.PERTURBATIONS)
def test_perturb_mask_is_deterministic_and_changes_the_mask(kind):
    mask = torch.zeros(40, 40, dtype=torch.long)
    mask[10:30, 12:28] = 1
    mask[9, 12:28] = 255
    a = viz.perturb_mask(mask, kind, 0.4, seed=3)
    assert a.dtype == torch.long and set(a.unique().tolist()) <= {0, 1}
    assert torch.equal(a, viz.perturb_mask(mask, kind, 0.4, seed=3))
    assert amv.mask_iou(a, mask) < 0.9
    assert torch.equal(viz.perturb_mask(mask, kind, 0.0), (mask == 1).long())
    area, new_area = int((mask == 1).sum()), int(a.sum())
    if kind == "erode" or kind == "holes":
        assert new_area < area and not bool((a.bool() & (mask != 1)).any())  # only removes object pixels
    elif kind == "dilate":
        assert new_area > area and bool((a.bool() | (mask != 1)).all())  # keeps every object pixel
    else:
        assert new_area <= area


def test_perturb_mask_validates_arguments():
    with pytest.raises(ValueError, match="unknown perturbation"):
        viz.perturb_mask(torch.zeros(4, 4), "blur", 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.perturb_mask(torch.zeros(4, 4), "erode", 2.0)


def test_perturbation_scores_use_the_score_function():
    mask = torch.zeros(20, 20, dtype=torch.long)
    mask[5:15, 5:15] = 1
    scores = viz.perturbation_scores(lambda m: float(m.sum()), mask, kinds=("erode", "dilate"), strengths=(0.5,))
    assert scores["erode 0.5"] < 100 < scores["dilate 0.5"]


def test_results_table_formats_counts_and_bolds_each_column_in_its_direction():
    rows = {"oracle (control)": {"mIoU": 100.0, "mismatched": 100.0, "episodes": 8, "weights": "the query's own label"},
            "IPMT": {"mIoU": 49.1, "mismatched": 17.0, "episodes": 8, "weights": "shipped checkpoint ipmt_tiny_fold0_1shot"},
            "baseline": {"mIoU": 36.4, "mismatched": 2.5, "episodes": 8, "weights": "shipped checkpoint baseline"}}
    fig = viz.plot_results_table(rows, columns=["mIoU", "mismatched", "episodes", "weights"],
                                 lower_is_better=["mismatched"], reference_rows=["oracle (control)"])
    cells = fig.axes[0].tables[0].get_celld()
    text = {(i, j): cells[(i, j)].get_text() for i in range(1, 4) for j in range(4)}
    assert text[(1, 2)].get_text() == "8"  # an episode count, not "8.0"
    bold = {key for key, t in text.items() if t.get_fontweight() == "bold"}
    # mIoU: IPMT (the oracle is the control); mismatched: the *lowest* (baseline); counts and text never
    assert bold == {(2, 0), (3, 1)}
    weights = cells[(2, 3)]
    assert weights.get_width() > cells[(2, 2)].get_width()  # the long text gets the wide column
    with pytest.raises(KeyError, match="reference rows"):
        viz.plot_results_table(rows, reference_rows=["oracle"])


def test_support_conditions_one_row_per_condition_with_outlined_targets():
    batch = make_batch(1, batch=2)
    episodes = []
    for i in range(2):
        sample = {k: v[i] for k, v in batch.items()}
        target = (sample["query_mask"] == 1).long()
        episodes.append({"label": f"episode {i}", "conditions": [
            {"name": "own support", "sample": sample, "prediction": target, "iou": 100.0},
            {"name": "another class's support", "sample": sample, "prediction": 0 * target, "iou": 0.0,
             "support_class": 5}]})
    fig = viz.plot_support_conditions(episodes, class_names=[f"c{i}" for i in range(1, 21)], title="t")
    assert_labelled(fig)
    axes = fig.axes
    assert len(axes) == 2 * 2 * 3  # two episodes x two conditions x (support, query, prediction)
    titles = [ax.get_title() for ax in axes]
    assert titles[:3] == ["support: c3", "query: target c3", "prediction · IoU 100"]
    assert titles[3:6] == ["support: c5", "query: target c3", "prediction · IoU 0"]  # the row below: mismatched
    assert axes[0].get_ylabel() == "own support" and axes[3].get_ylabel() == "another class's support"
    query = axes[1]
    assert query.collections, "the target is outlined (a contour), not filled"
    assert np.allclose(query.images[0].get_array(), viz.denormalize(episodes[0]["conditions"][0]["sample"]["query_img"]))
    with pytest.raises(ValueError, match="conditions"):
        viz.plot_support_conditions([episodes[0], {"label": "x", "conditions": episodes[0]["conditions"][:1]}])


def test_mining_difference_is_drawn_on_its_own_symmetric_scale():
    trace, batch = make_amformer_trace(batch=1), make_batch(1, batch=1)
    fig = viz.plot_mining(trace, batch)
    diff_ax = next(ax for ax in fig.axes if ax.get_title().startswith("mined − activated"))
    diff = diff_ax.images[-1].get_array()
    low, high = diff_ax.images[-1].get_clim()
    assert low == -high and np.isclose(high, max(0.05, float(np.abs(diff).max())))  # its own range, not ±1
    assert diff_ax.collections  # the target outlined on it
