"""Protocol fidelity options: BAM's stage-1 data, COCO's backbone lr, G/D on the index within the epoch, paper
evaluation settings in the generated configs, retired config keys, and `eval.controls`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.toys import ToyEpisodes, ToyGD, ToyNet, toy_config

from fsslab.config import config_from_dict, load_config, replace_section
from fsslab.configs.generate import AMNET_TEST_SEEDS
from fsslab.data import PASCAL, read_label
from fsslab.data.base_data import BaseClassDataset
from fsslab.data.lists import read_list
from fsslab.engine.train.trainer import Trainer, seed_everything
from fsslab.models.pspnet import PSPNet


def test_base_data_keeps_every_image_and_relabels_novel_as_background(voc_root):
    ds = BaseClassDataset(voc_root, PASCAL, "train", fold=0, size=64, augmentation={"rotate_p": 0.0})
    assert len(ds) == len(read_list(voc_root / "lists" / "train.txt", voc_root))  # no image filtered out
    torch.manual_seed(0)
    sample = ds[3]
    assert sample["query_img"].shape == (3, 64, 64) and sample["query_base_mask"].shape == (64, 64)
    values = set(sample["query_base_mask"].unique().tolist())
    assert values <= set(range(16)) | {255}
    # novel classes 1..5 of fold 0 never appear: the table maps them to 0, base class 6 to 1
    label = read_label(voc_root / ds.items[3][1])
    table = ds.base_table
    assert table[[1, 2, 3, 4, 5]].tolist() == [0] * 5 and table[6] == 1 and table[255] == 255
    assert set(np.unique(table[label]).tolist()) <= set(range(16)) | {255}


def test_pspnet_backbone_lr_multiplier():
    model = PSPNet("resnet_tiny", n_classes=4, head_channels=16, backbone_lr_multiplier=10.0)
    groups = model.optimizer_specs(0.001, 0.0)[0].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.01])  # BAM COCO: index_split -1
    default = PSPNet("resnet_tiny", n_classes=4, head_channels=16).optimizer_specs(0.001, 0.0)[0].param_groups
    assert [g["lr"] for g in default] == pytest.approx([0.001, 0.01, 0.01])


@pytest.mark.parametrize("index, expected", [("global", [0, 1, 2, 3, 4, 5, 6]), ("epoch", [0, 1, 2, 0, 1, 2, 0])])
def test_objective_index(tmp_path, index, expected):
    seen = []

    class Recording(ToyGD):
        def step_objectives(self, losses, iteration):
            seen.append(iteration)
            return super().step_objectives(losses, iteration)

    cfg = toy_config(tmp_path, iterations=7, objective_index=index, validate=False)  # 6 episodes, batch 2: 3/epoch
    seed_everything(cfg.train.seed)
    Trainer.from_config(cfg, Recording(), ToyEpisodes(6)).fit()
    assert seen == expected


def test_paper_configs_evaluate_as_their_papers():
    ipmt = load_config("pascal/ipmt_r50_fold0_1shot")
    assert (ipmt.eval.protocol, ipmt.eval.seeds, ipmt.eval.episodes) == ("ipmt", [123], 1000)
    amformer = load_config("pascal/amformer_r50_fold0_1shot")
    assert amformer.eval.protocol == "amformer" and amformer.eval.seeds == AMNET_TEST_SEEDS
    assert amformer.train.objective_index == "epoch" and amformer.data.batch_size == 32  # 8 per GPU x 4
    assert load_config("coco/amformer_r50_fold0_1shot").eval.episodes == 10000
    stage1 = load_config("coco/pspnet_base_r50_fold0")
    assert stage1.data.train_data == "base" and stage1.model.params["backbone_lr_multiplier"] == 10.0
    assert load_config("synthetic/ipmt_tiny").eval.protocol == "fsslab"


def test_retired_ori_canvas_is_dropped():
    cfg = config_from_dict({"data": {"params": {"ori_canvas": 160, "eval_pad": "mean"}}})
    assert cfg.data.params == {"eval_pad": "mean"}


def test_controls_of_a_support_blind_model(monkeypatch):
    from fsslab.engine import runner
    from fsslab.engine.controls import with_supports

    class SupportBlind(ToyNet):
        def forward(self, batch, trace=False):
            return super().forward(dict(batch, support_imgs=torch.zeros_like(batch["support_imgs"])), trace)

    def factory(cfg, shot=None, support_label=None):
        def episodes(seed, n):
            return with_supports(ToyEpisodes(6, shot=shot or 1, evaluation=True, seed=seed), cfg.eval.supports)

        return episodes, _Bench()

    monkeypatch.setattr(runner, "eval_dataset_factory", factory)
    torch.manual_seed(0)
    cfg = toy_config("unused", validate=False)
    cfg.eval.seeds = [1]
    report = runner.run_controls(cfg, SupportBlind().eval(), progress=False)
    assert report.oracle.miou_mean == pytest.approx(100.0)
    assert report.drop == pytest.approx(0.0)  # the supports do not matter to it
    assert "oracle (control)" in report.table() and set(report.to_dict()) >= {"drop", "shot_gain"}
    # the all-foreground reference runs on the same episodes and is labelled a control, never a result
    ref = report.all_foreground
    assert ref.settings["control"] == "all_foreground" and ref.settings["model"] == "all_foreground"
    assert 0 < ref.miou_mean < 100 and report.margin == pytest.approx(report.result.miou_mean - ref.miou_mean)
    assert "all-foreground (control)" in report.table() and "CONTROL, not a result" in ref.table()
    assert report.to_dict()["all_foreground"]["miou"] == pytest.approx(ref.miou_mean)


def test_all_foreground_is_a_model_name_for_fsslab_eval():
    from fsslab.engine.build import build_run_model

    model = build_run_model(replace_section(toy_config("unused", validate=False), "model", name="all_foreground"))
    out = model({"query_img": torch.zeros(2, 3, 8, 8)})
    assert out.logits.shape == (2, 2, 8, 8) and bool((out.logits.argmax(1) == 1).all())
    with pytest.raises(RuntimeError, match="nothing to train"):
        model.loss(out, {})


class _Bench:
    n_classes = 3

    def novel_classes(self, fold):
        return [1, 2, 3]

    def class_name(self, c):
        return f"c{c}"


def test_base_data_refuses_episode_options():
    from fsslab.config import ConfigError
    from fsslab.engine.build import build_train_set

    cfg = load_config("pascal/pspnet_base_r50_fold0", ["data.params.on_small_class=exclude"])
    with pytest.raises(ConfigError, match=r"\['on_small_class'\] do not apply to data.train_data=base"):
        build_train_set(cfg)


def test_build_train_set_gives_base_data(voc_root):
    from fsslab.engine.build import build_train_set

    cfg = load_config("synthetic/pspnet_base_tiny", [f"data.root={voc_root}", "data.synthetic=null",
                                                     "data.train_data=base", "data.size=64"])  # fmt: skip
    dataset = build_train_set(cfg)
    assert isinstance(dataset, BaseClassDataset) and len(dataset) == len(dataset.items)
    torch.manual_seed(0)
    assert dataset[0]["query_base_mask"].shape == (64, 64)


@pytest.mark.parametrize("name, missing", [("synthetic/ipmt_tiny", "model.init_checkpoint=/nonexistent/latest.pt"),
                                           ("synthetic/amformer_tiny", "model.params.pretrained=/nonexistent/s1.pt")])
def test_a_full_checkpoint_needs_no_starting_point(name, missing, tmp_path):
    """`fsslab eval --checkpoint` loads every weight: the runs the model started from need not exist."""
    from fsslab.engine.build import build_run_model, load_model_weights
    from fsslab.errors import FsslabError

    cfg = load_config(name, [missing, "model.prerequisite=null"])
    with pytest.raises((FsslabError, FileNotFoundError), match="nonexistent"):
        build_run_model(cfg)  # training from it still needs the starting point
    model = build_run_model(cfg, full_checkpoint=True)
    saved = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    loaded = load_model_weights(build_run_model(cfg, full_checkpoint=True), {"model": saved}, tmp_path / "x.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
