"""The parts of the benchmark scripts that need neither the official code nor a model run (fast).

The scripts themselves are smoke-tested by hand (benchmarks/README.md): with ResNet-50 models they take
minutes on a CPU, too long for the test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_bench
import parity_common
import quality_table


def test_whole_image_support_covers_all_but_a_frame():
    inputs = {"x": torch.ones(1, 3, 473, 473), "s_y": torch.zeros(1, 2, 473, 473, dtype=torch.long)}
    whole = parity_common.whole_image_support(inputs)
    border = parity_common.WHOLE_BORDER_PX
    inner = whole["s_y"][..., border:-border, border:-border]
    assert bool((inner == 1).all())
    assert int(whole["s_y"].sum()) == inner.numel()  # the frame is background
    assert whole["x"] is inputs["x"] and bool((inputs["s_y"] == 0).all())  # images kept, input untouched


def test_ratio_table_has_one_row_per_support_object():
    times = {}
    for support in parity_common.SUPPORT_OBJECTS:
        times[(support, "official")] = [2.0, 4.0, 3.0]
        times[(support, "mine")] = [1.0, 1.0, 3.0]
    columns = dict.fromkeys(parity_common.RATIO_COLUMNS, "mine")
    summary = parity_common.summarize(times, columns)
    ratio = summary["whole"]["ratio_to_official"]["bf16"]
    assert ratio == {"median": pytest.approx(1 / 3), "min": pytest.approx(0.25), "max": pytest.approx(1.0)}
    assert summary["small"]["seconds"]["official"] == {"median": 3.0, "min": 2.0, "max": 4.0}
    table = parity_common.format_ratio_table(summary, "title").splitlines()
    assert [line.split()[0] for line in table[3:]] == ["small", "whole"]
    assert parity_common.support_objects("both") == ("small", "whole")


def test_ratio_table_marks_a_variant_left_out_of_the_timing():
    """--no-bf16: the bf16 variant has no times; its column says so instead of failing or showing a ratio."""
    assert not parity_common.timed_variant("fsslab_bf16", no_bf16=True)
    assert parity_common.timed_variant("fsslab_bf16", no_bf16=False)
    assert parity_common.timed_variant("fsslab_channels_last", no_bf16=True)
    times = {("small", "official"): [2.0], ("small", "fp32"): [1.0]}
    summary = parity_common.summarize(times, {"fp32": "fp32", "bf16": "bf16"})
    assert set(summary["small"]["ratio_to_official"]) == {"fp32"}
    row = parity_common.format_ratio_table(summary, "title").splitlines()[-1]
    assert "0.50" in row and "not timed" in row


def test_gpu_bench_without_harness_writes_notes_and_json(tmp_path, capsys):
    """Official rows only, harness absent: every row says why, nothing is built, the JSON is written."""
    out = tmp_path / "bench.json"
    rows = gpu_bench.main(["--device", "cpu", "--size", "97", "--rounds", "1", "--implementations", "official",
                           "--harness", str(tmp_path / "no_harness"), "--json", str(out)])
    assert len(rows) == 2 * 2 * 2 * 2 * 2  # models x shots x layouts x modes x precisions
    assert all(row["note"].startswith("no official run") for row in rows)
    written = json.loads(out.read_text())
    assert written["meta"]["device"] == "cpu" and len(written["rows"]) == len(rows)
    assert "x off.fp32" in capsys.readouterr().out


def test_gpu_bench_ratios_and_official_limits():
    rows = [{"model": "ipmt", "shots": 1, "mode": "forward", "impl": impl, "precision": prec, "channels_last": cl,
             "median_s": t, "note": ""}
            for impl, prec, cl, t in (("official", "fp32", False, 2.0), ("official", "fp32", True, 1.0),
                                      ("fsslab", "bf16", True, 0.5))]
    gpu_bench.add_ratios(rows)
    assert [row["x_official_fp32"] for row in rows] == [1.0, 0.5, 0.25]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert gpu_bench.official_limit("ipmt", 1, 97, "forward", cuda)
    assert gpu_bench.official_limit("amformer", 5, 473, "forward", cuda)
    assert gpu_bench.official_limit("amformer", 1, 473, "train", cpu)
    assert gpu_bench.official_limit("amformer", 1, 473, "train", cuda) is None
    quick = gpu_bench.parse_args(["--device", "cpu", "--quick"])
    assert (quick.shots, quick.rounds, quick.precisions) == ([1], 2, ["fp32", "bf16"])


def test_quality_table_keeps_the_last_timing_of_a_rerun_step(tmp_path):
    """A step run again (its result deleted to retrain it) appends a row: the table shows the last one, in the
    order of first runs, and differences carry the typographic minus of the README."""
    timings = tmp_path / "timings.tsv"
    timings.write_text("train_a\t414\tfsslab train a\ntrain_b\t65\tfsslab train b\ntrain_a\t372\tfsslab train a\n")
    assert quality_table.timing_table(timings)[2:] == ["| train_a | 6 min 12 s |", "| train_b | 1 min 05 s |"]
    assert quality_table._signed(-1.29) == "−1.29" and quality_table._signed(2.0) == "+2.00"


def test_quality_table_base_analysis_reads_the_eval_files(tmp_path):
    (tmp_path / "ipmt_1shot.json").write_text(json.dumps(
        {"miou": 51.7, "miou_std": 0.9, "base_share": 19.84, "miou_without_base": 57.1}))
    (tmp_path / "baseline_1shot.json").write_text(json.dumps({"miou": 47.4, "miou_std": 1.1, "base_share": None}))
    rows = quality_table.base_table(tmp_path)[2:]
    assert rows == ["| prototype baseline | 47.40 ± 1.10 | – | – |", "| IPMT | 51.70 ± 0.90 | 19.8% | 57.10 (+5.40) |",
                    "| AMFormer | – | – | – |"]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (the fused convolution ops)")
def test_counted_gmac_counts_fused_onednn_convolutions_and_matrix_products():
    """The floor table's work count must include fsslab's fused convolutions (plain and with the residual sum)."""
    x, w, bias = torch.randn(1, 4, 6, 6), torch.randn(8, 4, 3, 3), torch.zeros(8)
    residual = torch.randn(1, 8, 6, 6)
    geometry = ([1, 1], [1, 1], [1, 1], 1)

    def run():
        with torch.no_grad():
            torch.ops.mkldnn._convolution_pointwise(x, w, bias, *geometry, "relu", [], "")
            torch.ops.mkldnn._convolution_pointwise.binary(x, residual, w, bias, *geometry, "add", None, None, [], "")
            torch.nn.functional.conv2d(x, w, padding=1)
            torch.randn(5, 4) @ torch.randn(4, 3)

    conv_macs = 6 * 6 * 8 * 4 * 9
    assert parity_common.counted_gmac(run) * 1e9 == pytest.approx(3 * conv_macs + 5 * 4 * 3)


def test_format_floor_divides_the_work_by_the_peak_and_the_official_time():
    text = parity_common.format_floor({"official": 300.0, "fsslab": 150.0}, {"official": 6.0, "fsslab": 3.0},
                                      peak=75.0, official_seconds=6.0, title="t")
    fsslab_row = next(line for line in text.splitlines() if line.strip().startswith("fsslab"))
    # 150 GMAC at 75 GMAC/s = 2 s, / 6 s official = 0.333; achieved 150 / 3 = 50 GMAC/s
    assert fsslab_row.split()[1:] == ["150.0", "3.000", "50.0", "2.000", "0.333"]
