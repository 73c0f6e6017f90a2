"""Shipped checkpoints: pack/load round trip, sharing with the stage-1 base, integrity, CLI, manifest metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fsslab.cli import main as cli_main
from fsslab.config import load_config
from fsslab.engine import architecture
from fsslab.engine.build import init_from_checkpoint
from fsslab.engine.checkpoint import atomic_save, load_checkpoint
from fsslab.files import sha256_file
from fsslab.zoo import (
    BUDGET_BYTES,
    CHECKPOINT_DIR,
    ZooError,
    list_pretrained,
    load_pretrained,
    pretrained_config,
    pretrained_info,
    read_manifest,
    total_size,
    verify_pretrained,
    verify_weights,
)
from fsslab.zoo.pack import pack_checkpoint, pack_weights, prune_shared

TINY_KNOBS = {"seed": 3, "n_train": 12, "n_val": 60, "min_size": 112, "max_size": 128,
              "max_objects": 4}  # up to 4 objects: every fold-0 class gets enough images in a tiny set
CHECK = {"seeds": [0], "episodes": 4}


def _tiny_overrides(root: Path) -> list[str]:
    knobs = ", ".join(f"{k}: {v}" for k, v in TINY_KNOBS.items())
    return [f"data.root={root}", f"data.synthetic={{{knobs}}}", "data.val_size=128",
            "eval.batch_size=2", "data.workers=0"]


def _fake_run(path: Path, cfg, state: dict[str, torch.Tensor]) -> Path:
    """A checkpoint as `fsslab train` writes it (only the entries pack_checkpoint reads)."""
    atomic_save({"format": 1, "fsslab_version": "0.1.0", "iteration": 7, "model": state, "config": cfg.to_dict()},
                path / "latest.pt")
    return path


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, synthetic_root_factory):
    """A stage-1 PSPNet 'run' and an IPMT 'run' whose backbone is the stage-1 one (as training leaves it)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = synthetic_root_factory(TINY_KNOBS)
    base_cfg = load_config("synthetic/pspnet_base_tiny", _tiny_overrides(root))
    base_state = architecture(base_cfg).state_dict()
    base_dir = _fake_run(tmp_path_factory.mktemp("pspnet_base_tiny_fold0"), base_cfg, base_state)
    cfg = load_config("synthetic/ipmt_tiny", _tiny_overrides(root))
    model = architecture(cfg)
    shared = {k: v for k, v in base_state.items() if k.startswith("backbone.") and k in model.state_dict()}
    model.load_state_dict(shared, strict=False)
    run_dir = _fake_run(tmp_path_factory.mktemp("ipmt_run"), cfg, model.state_dict())
    return {"root": root, "base": base_dir, "run": run_dir, "model": model.eval(), "cfg": cfg,
            "n_shared": len(shared)}


@pytest.fixture(scope="module")
def packed(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    entry = pack_checkpoint(tiny_runs["run"], "ipmt_test", out_dir=out, base=tiny_runs["base"], check=CHECK)
    return out, entry


def test_pack_writes_compact_file_and_complete_manifest(tiny_runs, packed):
    out, entry = packed
    manifest = read_manifest(out)
    assert list_pretrained(out) == ["ipmt_test"]
    assert manifest["entries"]["ipmt_test"] == entry
    assert entry["sha256"] == sha256_file(out / "ipmt_test.pt")
    assert entry["size"] == (out / "ipmt_test.pt").stat().st_size
    # every frozen backbone tensor is stored once, in the shared file, not in the model's file
    # (fresh layers may also equal some base tensor by value, e.g. all-ones norms: shared too, losslessly)
    assert entry["shared_tensors"] >= tiny_runs["n_shared"] >= 100
    stored = torch.load(out / entry["file"], weights_only=True)
    assert not [k for k in stored["tensors"] if k.startswith("backbone.")]
    assert entry["shared_file"].startswith("shared/") and (out / entry["shared_file"]).is_file()
    fp32_bytes = sum(v.numel() * 4 for k, v in tiny_runs["model"].state_dict().items() if not k.startswith("backbone."))
    assert entry["size"] < 0.6 * fp32_bytes  # fp16 storage of the model's own tensors
    assert entry["command"].startswith("fsslab train synthetic/ipmt_tiny ")
    assert load_config(entry["config"], entry["overrides"]).to_dict() == tiny_runs["cfg"].to_dict()
    assert entry["data"]["synthetic"] == TINY_KNOBS and entry["data"]["shot"] == 1
    assert entry["check"]["episodes"] == 4 and 0.0 <= entry["check"]["miou"] <= 100.0
    assert entry["iteration"] == 7 and entry["fsslab_version"]


def test_load_pretrained_restores_weights_and_outputs(tiny_runs, packed):
    out, _ = packed
    model = load_pretrained("ipmt_test", out)
    assert not model.training
    original = tiny_runs["model"].state_dict()
    for key, value in model.state_dict().items():
        assert value.dtype == original[key].dtype, key
        if value.is_floating_point():  # fp16 storage: relative error of half precision, restored to fp32
            torch.testing.assert_close(value, original[key].half().float(), rtol=0, atol=0, msg=key)
        else:
            assert torch.equal(value, original[key]), key
    cfg = pretrained_config("ipmt_test", out, data_root=tiny_runs["root"])
    from fsslab.engine.build import eval_dataset_factory

    factory, _ = eval_dataset_factory(cfg)
    sample = factory(0, 2)[0]
    batch = {k: v.unsqueeze(0) for k, v in sample.items()}
    with torch.no_grad():
        ours, theirs = model(batch).logits, tiny_runs["model"](batch).logits
    assert (ours.argmax(1) == theirs.argmax(1)).float().mean() > 0.99


def test_verify_repeats_the_recorded_check(packed):
    out, entry = packed
    report = verify_pretrained("ipmt_test", checkpoint_dir=out)
    assert report["ok"], report
    assert report["measured"]["miou"] == pytest.approx(entry["check"]["miou"], abs=1e-6)


def test_corrupt_or_missing_files_are_refused(tiny_runs, tmp_path):
    out = tmp_path / "zoo"
    pack_checkpoint(tiny_runs["run"], "m", out_dir=out, base=tiny_runs["base"], check=CHECK)
    data = bytearray((out / "m.pt").read_bytes())
    data[-100] ^= 0xFF
    (out / "m.pt").write_bytes(bytes(data))
    with pytest.raises(ZooError, match="sha256"):
        load_pretrained("m", out)
    (out / "m.pt").unlink()
    with pytest.raises(ZooError, match="missing"):
        load_pretrained("m", out)
    with pytest.raises(KeyError, match="no shipped checkpoint 'nope'"):
        load_pretrained("nope", out)
    with pytest.raises(ValueError, match="storage"):
        pack_checkpoint(tiny_runs["run"], "x", out_dir=out, storage="fp8")


def test_second_entry_reuses_the_shared_base_and_int8_shrinks(tiny_runs, tmp_path, packed):
    out = tmp_path / "zoo"
    first = pack_checkpoint(tiny_runs["run"], "a", out_dir=out, base=tiny_runs["base"], check=CHECK, storage="int8")
    shared_size = read_manifest(out)["shared"][first["shared_file"]]["size"]
    second = pack_checkpoint(tiny_runs["run"], "b", out_dir=out, base=tiny_runs["base"], check=CHECK, storage="int8")
    assert read_manifest(out)["shared"][second["shared_file"]]["size"] == shared_size  # nothing new to share
    assert second["size"] < 0.7 * packed[1]["size"]  # int8 vs fp16
    model = load_pretrained("b", out)
    for key, value in model.state_dict().items():
        ref = tiny_runs["model"].state_dict()[key]
        if value.is_floating_point() and ref.numel():
            assert (value - ref).abs().max() <= ref.abs().max() / 127 + 1e-3, key  # within one quantisation step
    with pytest.raises(ZooError, match="storage"):
        pack_checkpoint(tiny_runs["run"], "c", out_dir=out, base=tiny_runs["base"], check=CHECK, storage="fp16")


def test_a_retrained_base_never_leaves_stale_shared_tensors(tiny_runs, tmp_path):
    """A stage 1 retrained into the same run name: packing against it must not keep the old shared values."""
    out = tmp_path / "zoo"
    pack_checkpoint(tiny_runs["run"], "old", out_dir=out, base=tiny_runs["base"], check=CHECK, storage="int8")
    base_ckpt = torch.load(Path(tiny_runs["base"]) / "latest.pt", weights_only=True)
    cfg = tiny_runs["cfg"]
    new_base_state = {k: v * 1.05 if v.dim() >= 2 and k.startswith("backbone.") else v  # convolutions, slightly
                      for k, v in base_ckpt["model"].items()}
    new_base = _fake_run(tmp_path / "retrained_base", load_config("synthetic/pspnet_base_tiny",
                                                                  _tiny_overrides(tiny_runs["root"])), new_base_state)
    model = architecture(cfg)
    model.load_state_dict({k: v for k, v in new_base_state.items() if k in model.state_dict()}, strict=False)
    (tmp_path / "new_run").mkdir()
    new_run = _fake_run(tmp_path / "new_run", cfg, model.state_dict())
    with pytest.raises(ZooError, match=r"differ from .*--replace-shared.*\['old'\]"):
        pack_checkpoint(new_run, "new", out_dir=out, base=new_base, check=CHECK, storage="int8")
    pack_checkpoint(new_run, "new", out_dir=out, base=new_base, check=CHECK, storage="int8", replace_shared=True)
    loaded = load_pretrained("new", out).state_dict()
    key = next(k for k in loaded if k.startswith("backbone.") and loaded[k].dim() >= 2)
    ref = model.state_dict()[key]
    assert (loaded[key] - ref).abs().max() <= ref.abs().max() / 127 + 1e-4  # the new base's values, not 1/1.05 of them


def test_packing_refuses_a_model_that_no_longer_scores_like_its_run(tiny_runs, tmp_path, monkeypatch):
    from fsslab.zoo import pack as zoo_pack

    scores = iter([50.0, 40.0])  # the packed model, then the run's own weights, on the same check episodes
    monkeypatch.setattr(zoo_pack, "check_eval", lambda *a, **k: {"miou": next(scores), "fbiou": 0.0, "per_seed": []})
    out = tmp_path / "zoo"
    with pytest.raises(ZooError, match="packed model scores 50.00 .* 40.00: packing changed the model"):
        pack_checkpoint(tiny_runs["run"], "moved", out_dir=out, base=tiny_runs["base"], check=CHECK)
    assert not (out / "moved.pt").exists() and "moved" not in read_manifest(out)["entries"]


def test_cli_pack_list_verify(tiny_runs, tmp_path, capsys):
    out = tmp_path / "zoo"
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps({"miou": 12.5, "miou_std": 1.0, "fbiou": 40.0, "fbiou_std": 0.5, "seeds": [0],
                                     "episodes_per_seed": 4, "per_seed": [{"seed": 0, "miou": 12.5, "fbiou": 40.0}],
                                     "settings": {"shot": 1}}))
    argv = ["zoo", "pack", str(tiny_runs["run"]), "--name", "cli_model", "--dir", str(out), "--eval-json",
            str(eval_json), "--check-episodes", "4", "--command", "fsslab train synthetic/ipmt_tiny data.root=x"]
    assert cli_main(argv) == 0
    entry = pretrained_info("cli_model", out)
    assert entry["metrics"]["miou"] == 12.5 and entry["metrics"]["per_seed"][0]["fbiou"] == 40.0
    assert entry["command"] == "fsslab train synthetic/ipmt_tiny data.root=x" and entry["shared_file"] is None
    capsys.readouterr()
    assert cli_main(["zoo", "list", "--dir", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "cli_model" in listing and "12.50" in listing and "budget" in listing
    assert cli_main(["zoo", "verify", "--dir", str(out)]) == 0
    assert "ok" in capsys.readouterr().out
    assert cli_main(["zoo", "pack", str(tmp_path / "nothing"), "--name", "x", "--dir", str(out)]) == 2
    assert "no such run directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the shipped checkpoints
SHIPPED = list_pretrained()


def test_shipped_checkpoints_fit_the_budget():
    assert total_size(CHECKPOINT_DIR) <= BUDGET_BYTES


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED or [pytest.param("none", marks=pytest.mark.skip(
    reason="no shipped checkpoint in fsslab/checkpoints/synthetic/manifest.json yet (fsslab zoo pack adds them)"))])
def test_shipped_checkpoint_matches_its_manifest(name, synthetic_root_factory):
    entry = pretrained_info(name)
    assert entry["data"]["dataset"] == "synthetic"
    root = synthetic_root_factory(dict(entry["data"]["synthetic"]))
    report = verify_pretrained(name, data_root=root)
    assert report["ok"], (f"{name}: re-evaluation differs from the manifest by {report['max_abs_diff']:.3g} "
                          f"(expected {report['expected']}, measured {report['measured']})")
    metrics = entry.get("metrics")
    assert metrics is not None, f"{name}: the manifest has no `fsslab eval` metrics"
    # the packed (fp16) model on the check subset lands near the full evaluation of the trained run
    assert abs(metrics["miou"] - report["measured"]["miou"]) < 15.0


def test_load_pretrained_applies_inference_switches(packed):
    out, _ = packed
    assert not load_pretrained("ipmt_test", out).reproduce_official
    assert load_pretrained("ipmt_test", out, model_params={"reproduce_official": True}).reproduce_official


def test_recheck_records_the_new_check_and_the_eval_json(packed, tmp_path):
    import shutil

    from fsslab.zoo import recheck_pretrained

    out, entry = packed
    copy = Path(shutil.copytree(out, tmp_path / "zoo"))
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps({"miou": 12.5, "fbiou": 40.0, "per_seed": [{"seed": 0, "miou": 12.5, "fbiou": 40.0}],
                                     "settings": {"eval_protocol": "fsslab"}, "checkpoint": "pretrained:ipmt_test"}))
    rechecked = recheck_pretrained("ipmt_test", eval_json=eval_json, checkpoint_dir=copy)
    assert rechecked["check"]["miou"] == pytest.approx(entry["check"]["miou"])  # same weights, same evaluation
    assert rechecked["metrics"]["miou"] == 12.5 and read_manifest(copy)["entries"]["ipmt_test"] == rechecked
    assert verify_pretrained("ipmt_test", checkpoint_dir=copy)["ok"]


def test_shipped_weights_start_a_run_and_are_shared_by_its_models(tiny_runs, tmp_path, capsys):
    """`fsslab zoo pack-weights` ships a backbone; a config starts from it through "{zoo}/shared/..."; a model
    trained from it is packed with --base that file and stores none of the tensors it kept."""
    out = tmp_path / "zoo"
    assert cli_main(["zoo", "pack-weights", str(tiny_runs["base"]), "--name", "backbone_test", "--dir", str(out),
                     "--command", "fsslab train synthetic/pspnet_base_tiny"]) == 0
    record = read_manifest(out)["shared"]["shared/backbone_test.pt"]
    assert record["command"] == "fsslab train synthetic/pspnet_base_tiny" and record["iteration"] == 7
    assert record["sha256"] == sha256_file(out / "shared" / "backbone_test.pt")
    # a second pack does not replace the shipped file silently
    with pytest.raises(ZooError, match="exists"):
        pack_weights(tiny_runs["base"], "backbone_test", "x", out_dir=out)

    # a run starts from it: load_checkpoint decodes the packed file into a float32 state dict
    model = architecture(tiny_runs["cfg"])
    assert init_from_checkpoint(model, out / "shared" / "backbone_test.pt") == tiny_runs["n_shared"]
    decoded = load_checkpoint(out / "shared" / "backbone_test.pt")["model"]
    base = torch.load(tiny_runs["base"] / "latest.pt", weights_only=True)["model"]
    key = next(k for k in decoded if k.endswith("conv1.weight"))
    assert decoded[key].dtype == torch.float32 and torch.allclose(decoded[key], base[key], atol=base[key].abs().max() / 100)

    # the model trained from it (here: unchanged backbone) shares every backbone tensor with the file
    run = _fake_run(tmp_path / "from_shipped", tiny_runs["cfg"], model.state_dict())
    entry = pack_checkpoint(run, "ipmt_from_shipped", out_dir=out, base=out / "shared" / "backbone_test.pt",
                            check=CHECK)
    # (equal values are shared whatever their name: freshly initialised norms and biases too)
    assert entry["shared_file"] == "shared/backbone_test.pt" and entry["shared_tensors"] >= tiny_runs["n_shared"]
    restored = load_pretrained("ipmt_from_shipped", out)
    # the backbone read from the shipped file is bit for bit the one the run trained with (the rest is fp16)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in model.state_dict().items() if k in decoded)
    # verify checks the shared weights first, then the models
    assert cli_main(["zoo", "verify", "--dir", str(out)]) == 0
    assert "shared/backbone_test.pt: sha256 matches" in capsys.readouterr().out
    # prune keeps the shipped weights (runs start from them) and drops a shared file no entry reads
    manifest = read_manifest(out)
    manifest["shared"]["shared/orphan.pt"] = dict(manifest["shared"]["shared/backbone_test.pt"], kind=None)
    (out / "shared" / "orphan.pt").write_bytes((out / "shared" / "backbone_test.pt").read_bytes())
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert prune_shared(out) == ["shared/orphan.pt"] and not (out / "shared" / "orphan.pt").exists()
    assert "shared/backbone_test.pt" in read_manifest(out)["shared"]
    (out / "shared" / "backbone_test.pt").write_bytes(b"corrupt")
    with pytest.raises(ZooError, match="backbone_test.pt"):
        verify_weights(out)


def test_the_zoo_placeholder_names_the_shipped_directory():
    cfg = load_config("synthetic/ipmt_tiny", ["model.init_checkpoint={zoo}/shared/x.pt"])
    assert cfg.model.init_checkpoint == str(CHECKPOINT_DIR / "shared" / "x.pt")
