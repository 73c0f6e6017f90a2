"""Notebook plumbing (fsslab.lab): mode-dependent configs, trained-or-fresh models, D probes, safe resets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fsslab.lab
import fsslab.zoo
import fsslab.zoo.pack
from fsslab.config import SHIPPED_CHECKPOINT_DIR, load_config
from fsslab.engine import predict_fn
from fsslab.engine.checkpoint import atomic_save
from fsslab.lab import (
    FULL_SYNTHETIC,
    QUICK_EPISODES,
    QUICK_ITERATIONS,
    ensure_prerequisites,
    notebook_config,
    repo_root,
    run_name,
    train_or_resume,
    trained_or_fresh,
)
from fsslab.models.amformer import add_discriminator_trace, discriminator_score_fn

KNOBS = {"seed": 3, "n_train": 12, "n_val": 60, "min_size": 112, "max_size": 128, "max_objects": 4}  # = test_zoo.TINY_KNOBS


@pytest.fixture(scope="module")
def root(synthetic_root_factory):
    return synthetic_root_factory(KNOBS)


def test_quick_and_full_configs(root):
    top = repo_root()
    quick = notebook_config("amformer_tiny", 5, quick=True, data_root=root)
    assert quick.data.root == str(root) and quick.data.shot == 5 and quick.model.prerequisite is None
    assert quick.train.iterations == QUICK_ITERATIONS and quick.eval.episodes == QUICK_EPISODES
    assert quick.eval.seeds == [0] and not quick.train.validate and quick.data.workers == 0
    assert quick.data.params["augmentation"] == {"final": "resize"}  # the shipped params survive the overrides
    assert Path(quick.train.out_dir) == top / "runs" / "notebooks_quick" / "amformer_tiny_fold0_5shot"
    assert quick.model.params["pretrained"] == str(top / "runs/notebooks_quick/pspnet_base_tiny_fold0/latest.pt")
    full = notebook_config("ipmt_tiny", 1, quick=False, data_root=root)
    assert full.train.iterations == 1500 and full.eval.episodes == 300 and full.eval.seeds == [0, 1, 2]
    assert Path(full.train.out_dir) == top / "runs" / "synthetic" / "ipmt_tiny_fold0_1shot"
    # the shipped backbone is read where it is, in both modes (downloaded-equivalent: nothing to train first)
    shipped = str(SHIPPED_CHECKPOINT_DIR / "shared" / "backbone_episodic.pt")
    assert full.model.init_checkpoint == shipped and Path(shipped).is_file()
    stage1 = notebook_config("pspnet_base_tiny", quick=True, data_root=root)
    assert stage1.model.init_checkpoint == shipped
    # stage 1 trains on BAM's BaseData, which has no episodes and refuses episode options; the others exclude
    # the quick benchmark's small classes from their episodes
    assert stage1.data.train_data == "base" and "on_small_class" not in stage1.data.params
    assert quick.data.params["on_small_class"] == "exclude"
    from fsslab.engine import build_train_set

    assert len(build_train_set(stage1)) > 0
    assert run_name("ipmt_tiny", 5) == "ipmt_tiny_fold0_5shot"


@pytest.mark.parametrize("name", ["backbone_pretrain_tiny", "backbone_pretrain_episodic", "pspnet_base_tiny",
                                  "baseline_tiny", "ipmt_tiny", "amformer_tiny"])
def test_shipped_synthetic_configs_use_the_notebooks_benchmark(name):
    cfg = load_config(f"synthetic/{name}")
    assert cfg.data.root == "data/synthetic" and cfg.data.synthetic == FULL_SYNTHETIC


def test_ensure_prerequisites_trains_the_chain_once_in_order(root, tmp_path, monkeypatch):
    monkeypatch.setattr(fsslab.lab, "repo_root", lambda start=None: tmp_path)
    trained = []

    def fake_train(cfg, fresh=None):
        trained.append(cfg.name)
        atomic_save({"format": 1, "iteration": 1}, Path(cfg.train.out_dir) / "latest.pt")

    monkeypatch.setattr(fsslab.lab, "train_or_resume", fake_train)
    runs = tmp_path / "runs" / "notebooks_quick"
    paths = ensure_prerequisites("amformer_tiny", quick=True, data_root=root)
    # the chain starts from the shipped backbone: only stage 1 is trained before AMFormer, nothing before IPMT
    assert trained == ["pspnet_base_tiny"]
    assert paths == [runs / "pspnet_base_tiny_fold0" / "latest.pt"]
    amformer = notebook_config("amformer_tiny", quick=True, data_root=root)
    assert amformer.model.params["pretrained"] == str(paths[0])  # what AMFormer reads is what was trained
    assert ensure_prerequisites("ipmt_tiny", quick=True, data_root=root) == []
    assert ensure_prerequisites("amformer_tiny", quick=True, data_root=root) == paths
    assert trained == ["pspnet_base_tiny"]  # nothing trained twice
    # the backbone's own recipe still names its prerequisite (the 100-class pretraining it fine-tunes)
    assert ensure_prerequisites("backbone_pretrain_episodic", quick=True, data_root=root) == \
        [runs / "backbone_pretrain_tiny_fold0" / "latest.pt"]


def test_trained_or_fresh_prefers_the_shipped_checkpoint(root, tmp_path, monkeypatch):
    monkeypatch.setattr(fsslab.zoo, "CHECKPOINT_DIR", tmp_path / "zoo")
    cfg = notebook_config("baseline_tiny", 1, quick=True, data_root=root)
    # no stage-1 run in a clean checkout: the run (and its packed copy) starts from scratch
    cfg.model.init_checkpoint, cfg.model.prerequisite = None, None
    model, source = trained_or_fresh("baseline_tiny", 1, cfg=cfg)
    assert source.startswith("untrained") and not model.training
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    run = tmp_path / "run"
    atomic_save({"format": 1, "iteration": 1, "model": model.state_dict(), "config": cfg.to_dict()}, run / "latest.pt")
    loaded, source = trained_or_fresh("baseline_tiny", 1, cfg=cfg, checkpoint=run / "latest.pt")
    assert source.startswith("checkpoint") and torch.equal(next(loaded.parameters()), next(model.parameters()))
    fsslab.zoo.pack.pack_checkpoint(run, "baseline_tiny_fold0_1shot", check={"seeds": [0], "episodes": 2})
    shipped, source = trained_or_fresh("baseline_tiny", 1, cfg=cfg)
    assert source == "shipped checkpoint baseline_tiny_fold0_1shot"
    # no 5-shot checkpoint shipped: the 1-shot one, said so (a run of the notebook's own would come first)
    five, source = trained_or_fresh("baseline_tiny", 5, cfg=cfg)
    assert source == "shipped checkpoint baseline_tiny_fold0_1shot (trained 1-shot, given 5 shots)"
    assert torch.equal(next(five.parameters()), next(shipped.parameters()))
    assert trained_or_fresh("baseline_tiny", 5, cfg=cfg, checkpoint=run / "latest.pt")[1].startswith("checkpoint")
    assert torch.allclose(next(shipped.parameters()), next(model.parameters()), atol=1e-2)


def test_train_or_resume_only_resets_quick_runs(root, tmp_path):
    cfg = notebook_config("baseline_tiny", 1, quick=True, data_root=root)
    cfg.train.out_dir = str(tmp_path / "precious_run")
    (tmp_path / "precious_run").mkdir()
    with pytest.raises(ValueError, match="refusing to delete"):
        train_or_resume(cfg, fresh=True)
    assert (tmp_path / "precious_run").is_dir()


def test_amformer_probes(root):
    torch.manual_seed(0)
    cfg = notebook_config("amformer_tiny", 1, quick=True, data_root=root, overrides=["data.val_size=64"])
    model, _ = trained_or_fresh("amformer_tiny", 1, cfg=cfg)
    from fsslab.engine.build import eval_dataset_factory

    sample = eval_dataset_factory(cfg)[0](0, 1)[0]
    prediction = predict_fn(model)(sample)
    assert prediction.shape == sample["query_mask"].shape and set(prediction.unique().tolist()) <= {0, 1}
    score = discriminator_score_fn(model)
    gt = (sample["query_mask"] == 1).long()
    value = score(sample, gt)
    assert 0.0 <= value <= 1.0 and score(sample, gt) == value  # cached features: the same answer
    assert score(sample, torch.zeros_like(gt)) != value
    batch = {k: v.unsqueeze(0) for k, v in sample.items()}
    with torch.no_grad():
        trace = model(batch, trace=True).trace
    judged = add_discriminator_trace(model, batch, trace)
    assert judged["part_maps_real"].shape == judged["part_maps_fake"].shape
    assert judged["part_maps_real"].shape[:2] == (1, 3) and judged["d_score_real"].shape == (1, 3)
    assert "part_maps_real" not in trace  # the model's own trace is left untouched


def test_synthetic_root_says_when_it_generates_and_shows_progress(tmp_path, monkeypatch, capsys):
    from fsslab.data import synthetic

    calls = []

    def fake_write(path, config, progress=False, workers=None):
        calls.append((Path(path), config.n_train, progress))
        (Path(path) / "meta.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(path) / "meta.json").write_text("{}")
        return {}

    monkeypatch.setattr(synthetic, "write_synthetic_if_missing", fake_write)
    monkeypatch.delenv("FSSLAB_DATA", raising=False)
    path = fsslab.lab.synthetic_root(quick=True, root=tmp_path / "bench")
    assert path == tmp_path / "bench" and calls == [(path, 300, True)]  # the generator's progress bars are on
    said = capsys.readouterr().out
    assert "generating the quick synthetic benchmark (300 train + 150 val + 150 pretrain images)" in said
    fsslab.lab.synthetic_root(quick=True, root=tmp_path / "bench")  # it exists now: nothing to say
    assert capsys.readouterr().out == "" and len(calls) == 2


def test_pretrain_coverage_warning_is_one_summary_line():
    from fsslab.data.synthetic.generate import _coverage_warnings

    counts = {"val": {"qualifying": [10] * 19 + [3]}, "pretrain": {"qualifying": [4] * 90 + [9] * 10}}
    val, pretrain = _coverage_warnings(counts)
    assert val.endswith("=3") and val.startswith("val: classes with < 6 images")
    assert pretrain.startswith("pretrain: 90 of 100 procedural classes have < 6 images") and "procedural1" not in pretrain
