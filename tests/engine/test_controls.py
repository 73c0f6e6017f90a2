"""The mismatched-support control: exact re-pairing, determinism, errors, and what it measures."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsslab.config import load_config
from fsslab.data import build_dataset
from fsslab.engine.controls import MismatchedSupports, with_supports
from fsslab.engine.runner import run_evaluation
from fsslab.models.output import FSSOutput

KNOBS = {"seed": 3, "n_train": 12, "n_val": 60, "min_size": 112, "max_size": 128, "max_objects": 4}  # = test_lab


@pytest.fixture(scope="module")
def root(synthetic_root_factory):
    return synthetic_root_factory(KNOBS)


def _episodes(root, shot=1, episodes=12, seed=0):
    # the tiny benchmark has 2-5 val images per class: K-shot leaves out the classes with fewer than K+1
    return build_dataset("synthetic", root, "val", 0, shot, episodes=episodes, seed=seed, size=96,
                         on_small_class="exclude")


@pytest.mark.parametrize("shot", [1, 3])
def test_queries_kept_supports_taken_from_another_class(root, shot):
    episodes = _episodes(root, shot)
    control = MismatchedSupports(episodes)
    assert len(control) == len(episodes)
    classes = [e.class_id for e in episodes.episodes]
    for i in range(len(control)):
        donor = control.donor[i]
        assert classes[donor] != classes[i]
        # the first later episode (cyclically) of another class
        assert all(classes[(i + k) % len(classes)] == classes[i] for k in range(1, (donor - i) % len(classes)))
        mixed, own, other = control[i], episodes[i], episodes[donor]
        assert mixed.keys() == own.keys()
        for key in own:
            expected = other[key] if key.startswith("support_") else own[key]
            assert torch.equal(torch.as_tensor(mixed[key]), torch.as_tensor(expected)), key
        assert mixed["support_imgs"].shape[0] == shot


def test_control_is_deterministic_and_matched_is_unchanged(root):
    first, second = MismatchedSupports(_episodes(root)), MismatchedSupports(_episodes(root))
    assert first.donor == second.donor
    assert torch.equal(first[3]["support_masks"], second[3]["support_masks"])
    plain = _episodes(root)
    assert with_supports(plain, "matched") is plain
    assert isinstance(with_supports(plain, "mismatched"), MismatchedSupports)
    assert first.benchmark is first.dataset.benchmark  # attributes of the wrapped episodes pass through


def test_errors_name_the_problem(root):
    with pytest.raises(ValueError, match="eval.supports must be one of"):
        with_supports(_episodes(root), "shuffled")
    one_class = _episodes(root)
    one_class.episodes = [e for e in one_class.episodes if e.class_id == one_class.episodes[0].class_id]
    with pytest.raises(ValueError, match="at least two classes"):
        MismatchedSupports(one_class)
    with pytest.raises(TypeError, match="no `episodes` list"):
        MismatchedSupports(list(range(3)))
    with pytest.raises(ValueError, match="eval.supports"):
        load_config("synthetic/baseline_tiny", ["eval.supports=random"])


class _Everything(torch.nn.Module):
    """Predicts foreground everywhere: never looks at its supports."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        b, _, h, w = batch["query_img"].shape
        return FSSOutput(logits=torch.stack([torch.zeros(b, h, w), torch.ones(b, h, w)], 1) + self.anchor)


class _CopySupport(_Everything):
    """Predicts the first support's mask: entirely support-driven."""

    def forward(self, batch):
        mask = (batch["support_masks"][:, 0] == 1).float()[:, None]  # [B,1,H,W]
        mask = F.interpolate(mask, size=batch["query_img"].shape[-2:], mode="nearest")[:, 0]
        return FSSOutput(logits=torch.stack([1 - mask, mask], 1) + self.anchor)


def _miou(model, root, supports):
    cfg = load_config(
        "synthetic/baseline_tiny",
        [f"data.root={root}", "data.size=96", "data.val_size=96", "data.workers=0", "eval.episodes=12",
         "eval.seeds=[0]", f"eval.supports={supports}"]
        + ["data.synthetic={" + ", ".join(f"{k}: {v}" for k, v in KNOBS.items()) + "}"],
    )
    result = run_evaluation(cfg, model, progress=False)
    assert result.settings["supports"] == supports
    return result.miou_mean, result


def test_control_separates_support_driven_from_support_blind_models(root):
    blind_matched, _ = _miou(_Everything(), root, "matched")
    blind_mismatched, result = _miou(_Everything(), root, "mismatched")
    assert blind_matched == blind_mismatched  # exactly: the query side is untouched
    assert "control: every query paired with supports of another class" in result.table()
    copy_matched, _ = _miou(_CopySupport(), root, "matched")
    copy_mismatched, _ = _miou(_CopySupport(), root, "mismatched")
    assert copy_mismatched != copy_matched


def test_backbone_pretrain_config_reads_the_procedural_pretrain_split_with_every_class(synthetic_root_factory):
    from fsslab.data.base_data import BaseClassDataset
    from fsslab.engine.build import build_train_set

    knobs = {**KNOBS, "n_pretrain": 30, "pretrain_classes": 40}
    root = synthetic_root_factory(knobs)
    cfg = load_config(
        "synthetic/backbone_pretrain_tiny",
        [f"data.root={root}", "data.size=64"]
        + ["data.synthetic={" + ", ".join(f"{k}: {v}" for k, v in knobs.items()) + "}"],
    )
    assert cfg.data.train_split == "pretrain" and cfg.model.params["n_classes"] == 101
    assert cfg.data.synthetic["pretrain_classes"] == 40
    corpus = build_train_set(cfg)
    assert isinstance(corpus, BaseClassDataset) and corpus.split == "pretrain" and corpus.n_label_classes == 40
    pretrain_names = {line.split()[0] for line in (root / "lists" / "pretrain.txt").read_text().splitlines()}
    assert {image for image, _ in corpus.items} == pretrain_names  # the whole list, no episode sampling
    torch.manual_seed(0)
    labels = torch.cat([corpus[i]["query_base_mask"].flatten() for i in range(len(corpus))])
    assert labels[labels != 255].max() <= 40 and labels[labels != 255].max() > 20  # the corpus's own ids


def test_base_class_analysis_through_the_evaluation_path(root):
    from fsslab.models.oracle import QueryLabelOracle

    _, everything = _miou(_Everything(), root, "matched")
    _, oracle = _miou(QueryLabelOracle(), root, "matched")
    assert oracle.miou_mean == pytest.approx(100.0)
    assert oracle.base_share_mean == 0.0 and oracle.miou_without_base_mean == pytest.approx(100.0)
    # foreground everywhere covers every base-class object of the queries: removing them can only help
    assert 0.0 < everything.base_share_mean < 100.0
    assert everything.miou_without_base_mean > everything.miou_mean
    assert "base-class objects:" in everything.table()
    assert everything.to_dict()["base_share"] == everything.base_share_mean
