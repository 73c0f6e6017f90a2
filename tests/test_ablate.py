"""``fsslab ablate``: --quick end to end on a toy table (train, controls, table, verdicts), resumable; the statistics
and the verdict rule against their definitions; the built-in tables' overrides build their models."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from fsslab import models
from fsslab.cli import main
from fsslab.config import load_config
from fsslab.lab import ablation
from fsslab.lab.ablation import TABLES, difference_interval, load_table, run_config, t_quantile, verdict


def _toy_table(tmp_path):
    (tmp_path / "toy.yaml").write_text(
        "name: toy\ndata: {dataset: synthetic, root: unused, batch_size: 2, workers: 0}\n"
        "model: {name: toy, params: {dropout: 0.2}}\n"
        "train: {iterations: 3, base_lr: 0.05, log_every: 1, tensorboard: false, progress: false, device: cpu}\n"
        "eval: {episodes: 6, seeds: [1, 2]}\n")
    (tmp_path / "table.yaml").write_text(
        f"name: toy table\nfull: full\nseeds: [0, 1]\nvariants:\n"
        f"  - {{name: full, config: '{tmp_path}/toy.yaml'}}\n"
        f"  - {{name: more dropout, config: '{tmp_path}/toy.yaml', overrides: [model.params.dropout=0.5],"
        f" paper: '1.0 (made up for the test)'}}\n")
    return tmp_path / "table.yaml"


def test_quick_ablation_end_to_end_and_resumable(tmp_path, toy_world, capsys):
    spec = _toy_table(tmp_path)
    root = tmp_path / "runs"
    args = ["ablate", str(spec), "--root", str(root), "--quick", "--start", "prerequisites"]
    assert main(args) == 0
    out = capsys.readouterr().out
    def started(text, what):
        return sum(line.startswith(what) for line in text.splitlines())

    assert started(out, "training ") == 4 and started(out, "evaluating ") == 4  # 2 variants x 2 seeds
    results = json.loads((root / "toy_table" / "results.json").read_text())
    table = (root / "toy_table" / "table.md").read_text()
    rows = {r["variant"]: r for r in results["rows"]}
    assert set(rows) == {"full", "more dropout"} and results["quick"] is True
    # the command that reproduces the table, rebuilt from the arguments (notebook 06 prints it)
    assert results["command"] == f"fsslab ablate {spec} --start prerequisites --root {root} --quick"
    for name in rows:
        for seed in (0, 1):
            run = root / "toy_table" / ablation._slug(name) / f"seed{seed}"
            assert (run / "latest.pt").is_file() and (run / ablation.EVAL_FILE).is_file()
            saved = load_config(str(run / "config.yaml")) if (run / "config.yaml").is_file() else None
            if saved is not None:
                assert saved.train.seed == seed and saved.train.iterations == ablation.QUICK_ITERATIONS
    # the row's numbers are the runs' numbers, and the verdict is the rule applied to them
    runs = results["runs"]
    full = [runs["full"][s]["miou"] for s in ("0", "1")]
    other = [runs["more dropout"][s]["miou"] for s in ("0", "1")]
    row = rows["more dropout"]
    assert row["n"] == 2 and math.isclose(row["miou_mean"], sum(other) / 2)
    interval = difference_interval(full, other)
    assert math.isclose(row["difference"], interval[0], abs_tol=1e-9)
    assert row["verdict"] == verdict(interval) and row["paper"] == "1.0 (made up for the test)"
    assert rows["full"]["paper"] == "not verified" and rows["full"]["verdict"] == "(reference)"
    assert row["mismatched_drop"] == pytest.approx(sum(runs["more dropout"][s]["drop"] for s in ("0", "1")) / 2)
    assert "| more dropout |" in table and "verdict rule" in table and row["verdict"] in out
    # the oracle control ran on the same episodes: the evaluation path is right
    assert all(runs[v][s]["oracle_miou"] == pytest.approx(100.0) for v in runs for s in runs[v])
    # resumable: a second call trains and evaluates nothing and gives the same table
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob(ablation.EVAL_FILE)}
    assert main(args) == 0
    again = capsys.readouterr().out
    assert started(again, "training ") == 0 and started(again, "evaluating ") == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob(ablation.EVAL_FILE)} == stamps
    assert (root / "toy_table" / "table.md").read_text() == table
    # the retrained variants load for pictures of the same episodes
    trained = ablation.trained_variants(str(spec), root=root, seed=1, quick=True)
    assert set(trained) == {"full", "more dropout"} and not any(m.training for m in trained.values())
    assert ablation.trained_variants(str(spec), root=tmp_path / "elsewhere") == {}


def test_t_quantile_and_interval_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 2.7, 4, 10, 60):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-6)
    a, b = [50.1, 51.3, 49.8], [47.0, 48.2, 46.1]
    d, lo, hi = difference_interval(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert (d, lo, hi) == pytest.approx((sum(a) / 3 - sum(b) / 3, ci.low, ci.high), rel=1e-6)


def test_verdict_rule():
    assert verdict((2.0, 0.5, 3.5)) == "holds"
    assert verdict((-2.0, -3.5, -0.5)) == "reversed"
    assert verdict((1.0, -0.5, 2.5)) == "not shown at this scale"
    assert verdict(None) == "no interval (n < 2)"
    assert verdict((1.0, 0.2, 1.8), "small_loss", margin=5) == "holds"
    assert verdict((9.0, 7.0, 11.0), "small_loss", margin=5) == "does not hold"
    assert verdict((4.0, 2.0, 6.0), "small_loss", margin=5) == "not shown at this scale"
    assert difference_interval([1.0], [2.0, 3.0]) is None


@pytest.mark.parametrize("table", sorted(TABLES))
def test_builtin_tables_build_their_variants(table):
    spec = load_table(table)
    assert spec.variant(spec.full).overrides == []
    for variant in spec.variants:
        cfg = run_config(spec, variant, 0, root="/tmp/unused")
        assert cfg.eval.controls and cfg.train.seed == 0
        models.build_model({"name": cfg.model.name, **{k: v for k, v in cfg.model.params.items()
                                                       if k != "pretrained"}})
        assert variant.paper is None  # nothing checked against the papers: shown as "not verified"


def test_unknown_variant_is_a_clear_error(capsys):
    assert main(["ablate", "amformer", "--variants", "w/o X", "--quick"]) == 2
    assert "no variant 'w/o X'" in capsys.readouterr().err


def test_merge_results_recomputes_one_table_from_two_sessions(tmp_path, capsys):
    # a shipped AMFormer table of the shipped recipe with full and w/o D over 3 seeds (notebook 06's data)
    shipped = sorted((Path(__file__).resolve().parents[1] / "notebooks" / "data" / "06_paper_claims").glob("*.json"))
    tables = [json.loads(p.read_text()) for p in shipped]
    whole = next(t for t in tables if t["table"]["name"] == "amformer" and not t["quick"] and not t["extra"]
                 and all(len(t["runs"].get(v, {})) == 3 for v in ("full", "w/o D")))
    whole = dict(whole, runs={v: whole["runs"][v] for v in ("full", "w/o D")},
                 rows=[r for r in whole["rows"] if r["variant"] in ("full", "w/o D")])
    files = []
    for part, variants in (("a", ["full"]), ("b", ["w/o D"])):
        piece = dict(whole, runs={v: whole["runs"][v] for v in variants}, command=f"session {part}")
        files.append(tmp_path / f"{part}.json")
        files[-1].write_text(json.dumps(piece))
    out = tmp_path / "merged.json"
    assert main(["ablate", "amformer", "--merge", *map(str, files), "--json", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["command"] == ["session a", "session b"] and merged["seeds"] == [0, 1, 2]
    assert [r["variant"] for r in merged["rows"]] == ["full", "w/o D"]
    for got, want in zip(merged["rows"], whole["rows"]):  # the same rows as the table made in one session
        assert got["verdict"] == want["verdict"] and got["miou_mean"] == pytest.approx(want["miou_mean"])
        assert got["interval"] == pytest.approx(want["interval"]) if want["interval"] else got["interval"] is None
    assert "| w/o D |" in capsys.readouterr().out
    # the same run twice, another recipe, or a missing --json: one clear line, exit 2
    assert main(["ablate", "amformer", "--merge", str(files[0]), str(files[0]), "--json", str(out)]) == 2
    assert "already in another file" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(json.loads(files[1].read_text()), start="prerequisites")))
    assert main(["ablate", "amformer", "--merge", str(files[0]), str(other), "--json", str(out)]) == 2
    assert "not the same recipe" in capsys.readouterr().err
    assert main(["ablate", "amformer", "--merge", str(files[0])]) == 2
    assert "--json" in capsys.readouterr().err


def test_merge_refuses_runs_started_from_another_zoo(tmp_path, capsys):
    # two sessions of one table whose `--start shipped` read different stage-1 files (the zoo was re-shipped between)
    base = {"table": {"name": "amformer"}, "quick": False, "start": "shipped", "extra": [], "runs": {}}
    first = dict(base, start_files={"amformer_tiny_fold0_1shot_base_learner.pt": "a" * 64})
    second = dict(base, start_files={"amformer_tiny_fold0_1shot_base_learner.pt": "b" * 64})
    files = [tmp_path / "first.json", tmp_path / "second.json"]
    for path, content in zip(files, (first, second)):
        path.write_text(json.dumps(content))
    assert main(["ablate", "amformer", "--merge", *map(str, files), "--json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "another zoo" in err and "amformer_tiny_fold0_1shot_base_learner.pt" in err


def test_start_fingerprints_name_the_files_a_table_started_from(tmp_path):
    from fsslab.lab.ablation import start_fingerprints

    start = tmp_path / "ipmt_tiny_fold0_1shot_backbone.pt"
    start.write_bytes(b"weights")
    prints = start_fingerprints({"model.prerequisite": "null", "model.init_checkpoint": str(start)})
    assert prints == {start.name: hashlib.sha256(b"weights").hexdigest()}
    assert start_fingerprints(None) == {}
