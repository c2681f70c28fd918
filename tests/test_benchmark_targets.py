"""benchmarks/targets.py checks the issues' targets against run.py's rows; run.py --report prints
the tables and targets of saved runs. Synthetic rows in run.py's formats, nothing timed."""

import json

import pytest

from benchmarks import run
from benchmarks.targets import TARGETS, check, targets_table

M = 2**20


def passing_rows() -> list[dict]:
    """One row per kind of target row, each value on the right side of its target."""
    rows = [
        {"section": "ops", "kind": "op", "name": "guided_relu backward", "shape": [32, 64, 128, 128], "dtype": "float32",
         "speedup": 2.5, "peak_bandwidth_fraction": 0.85},
        {"section": "techniques", "kind": "technique", "name": "guided_backprop vgg16", "shape": [16, 3, 224, 224],
         "dtype": "float32", "pyfastviz_ms": 40.0, "vanilla_ms": 41.0},
        {"section": "style", "kind": "style", "name": "gatys iteration", "size": 512, "speedup": 1.4},
        {"section": "style", "kind": "style", "name": "style_transfer large", "size": 2048, "peak_GiB": 60.0},
        {"section": "fast_style", "kind": "fast_style", "step": "full", "precision": "fp32", "batch": 4, "size": 256,
         "speedup": 1.1},
    ]
    for model in ("resnet50", "vgg16"):
        rows.append({"section": "occlusion", "kind": "occlusion", "name": f"occlusion {model}", "shape": [1, 3, 224, 224],
                     "window": 16, "stride": 8, "kernels_share": 0.01, "kernels_fast_share": 0.03,
                     "speedup_vs_best_captum": {"pyfastviz": 1.3, "pyfastviz fast": 3.0, "pyfastviz compiled": 4.5}})
    for c, side in ((64, 512), (128, 256), (256, 128)):
        for precision, speedup in (("fp32", 6.0), ("tf32", 2.5)):
            rows.append({"section": "gram", "kind": "op", "name": "gram forward", "shape": [4, c, side, side],
                         "dtype": precision, "speedup": speedup})
    for shape in ((4, 64, 128, 128), (8, 64, 256, 256)):
        rows.append({"section": "instance_norm", "kind": "op", "name": "instance_norm forward+backward",
                     "shape": list(shape), "dtype": "bfloat16", "speedup": 4.0, "peak_bandwidth_fraction": 0.7})
    return rows


def results(rows):
    return {target.text: check(target, rows) for target in TARGETS}


def test_every_target_has_rows_and_is_met_by_passing_rows():
    for text, result in results(passing_rows()).items():
        assert result["rows"] > 0 and result["met"] is True, (text, result)


def test_no_rows_is_neither_met_nor_failed():
    for result in results([]).values():
        assert result == {**result, "rows": 0, "met": None}
    assert targets_table([]).count("no rows") == len(TARGETS)


@pytest.mark.parametrize("change, target_text, worst", [
    (lambda rows: rows[0].update(speedup=1.9), "guided_relu backward >= 2x", "guided_relu backward 32x64x128x128"),
    (lambda rows: rows[1].update(pyfastviz_ms=42.0), "guided backprop of VGG16", "guided_backprop vgg16"),
    (lambda rows: rows[3].update(peak_GiB=75.0), "2048 px", "style_transfer large 2048 px"),
    (lambda rows: rows[6]["speedup_vs_best_captum"].update({"pyfastviz compiled": 3.5}), "fast path >= 4x",
     "occlusion vgg16"),
    (lambda rows: rows[6].update(kernels_fast_share=0.06), "kernels < 5%", "occlusion vgg16"),
    (lambda rows: rows[-1].update(peak_bandwidth_fraction=0.5), "60% of HBM", "8x64x256x256 bfloat16"),
])
def test_the_worst_row_decides(change, target_text, worst):
    rows = passing_rows()
    change(rows)
    failed = {text: r for text, r in results(rows).items() if r["met"] is False}
    assert len(failed) == 1, failed
    (text, result), = failed.items()
    assert target_text in text and worst in result["worst_row"]


def test_rows_outside_a_target_do_not_count():
    """Sizes below the targets' (--quick, the CPU) and skipped rows leave the targets without rows."""
    rows = [{"section": "ops", "kind": "op", "name": "guided_relu backward", "shape": [8, 64, 128, 128],
             "dtype": "float32", "speedup": 0.5, "peak_bandwidth_fraction": None},
            {"section": "gram", "kind": "op", "name": "gram forward", "shape": [4, 256, 128, 128], "dtype": "fp32",
             "skipped": "no cpu kernel"}]
    assert all(r["met"] is None for r in results(rows).values())


def test_occlusion_rows_without_captum_only_count_for_the_kernels_share():
    rows = [row | {"speedup_vs_best_captum": None} for row in passing_rows() if row["kind"] == "occlusion"]
    met = {text: r["met"] for text, r in results(rows).items() if "occlusion" in text}
    assert met == {TARGETS[3].text: True, TARGETS[4].text: None, TARGETS[5].text: None}


def test_report_prints_the_tables_and_targets_of_saved_runs(tmp_path, capsys):
    meta = {"device": "cuda", "device_name": "NVIDIA H200", "peak_bandwidth_GBps": 4800.0, "copy_MiB": 256.0,
            "copy_GBps": 4000.0, "torch": "2.11", "loadavg_before": None, "commit": "abc1234", "dirty": False,
            "date": "2026-12-02", "quick": False, "repeat": {"op": 20, "technique": 5, "inspect": 3}}
    style_rows = [{"section": "style", "kind": "style", "name": "gatys iteration", "model": "vgg19", "size": 512,
                   "device": "cuda", "reference_ms": 30.0, "pyfastviz_ms": 20.0, "speedup": 1.5},
                  {"section": "gram", "kind": "error", "error": "RuntimeError('boom')"}]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"meta": meta, "rows": style_rows}))
    assert run.main(["--report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "| gatys iteration" in out and "gram: FAILED RuntimeError('boom')" in out
    assert "1.50x (gatys iteration 512 px) | 1 | met |" in out

    path.write_text(json.dumps({"meta": meta, "rows": [{k: v for k, v in style_rows[0].items() if k != "section"}]}))
    with pytest.raises(SystemExit, match="rows without their section"):
        run.main(["--report", str(path)])
