"""`pyfastviz sweep`, run in-process through main()."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import cli_error_line
from pyfastviz.cli import main
from pyfastviz.sweep import load_sweep


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png"):
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(tmp_path / "photos" / name)
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")
    return tmp_path / "photos"


def test_sweep_writes_resumes_and_refuses_other_options(photos, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["sweep", str(photos), "--method", "gradient", "--out", str(out), "--quiet", "--workers", "0",
              "--device", "cpu:0"]  # the CPU, as the model reports it: cpu
    args = [*common, "--target", "7"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "3 images, 2 mapped, 1 errors, 0 done by an earlier run" in stdout and str(out / "index.jsonl") in stdout
    result = load_sweep(out)
    assert [row["path"] for row in result.index] == ["a.jpg", "sub/b.png"]
    assert {row["target"] for row in result.index} == {7} and result.map("a.jpg").shape == (224, 224)
    assert [e["path"] for e in result.errors] == ["empty.jpg"]
    assert json.loads((out / "manifest.json").read_text())["model"] == "EfficientNet"
    assert main(args) == 0
    assert "3 done by an earlier run" in capsys.readouterr().out
    assert main([*common, "--target", "predicted"]) == 2
    assert "--target 'class 7' there, 'predicted' now" in cli_error_line(capsys)


@pytest.mark.parametrize("extra, message", [
    (["--smoothgrad", "4"], "--smoothgrad applies to --method 'gradient', not --method 'occlusion'"),
    (["--target", "no such class"], "not one of the model's class names"),
    (["--target", "-1"], "target class -1 is out of range [0, 1000)"),
    (["--device", "bogus"], "--device 'bogus' is not a torch device"),
    pytest.param(["--device", "cuda"], "--device cuda needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU")),
])
def test_sweep_usage_errors(photos, tmp_path, capsys, extra, message):
    assert main(["sweep", str(photos), "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in cli_error_line(capsys)


def test_a_sweep_that_maps_nothing_fails_and_an_image_is_no_list_file(photos, tmp_path, capsys):
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "x.jpg").write_bytes(b"")
    assert main(["sweep", str(unreadable), "--method", "gradient", "--out", str(tmp_path / "maps"), "--quiet",
                 "--workers", "0"]) == 2
    assert f"no image could be mapped: see {tmp_path / 'maps' / 'errors.jsonl'}" in cli_error_line(capsys)
    assert main(["sweep", str(photos / "a.jpg"), "--out", str(tmp_path / "other")]) == 2
    assert "is not a folder, nor a list file of image paths" in cli_error_line(capsys)


def test_sweep_missing_or_empty_data_is_named_as_on_the_command_line(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    assert f"error: DATA {str(tmp_path / 'nothing')!r} is neither a folder of images nor a list file" in \
        cli_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["sweep", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert f"error: DATA {str(tmp_path / 'empty')!r} holds no image files" in cli_error_line(capsys)


def test_target_reads_a_label_file_only_when_it_is_one(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "predicted").write_text("not a label file")  # the default's name, taken by a file
    out = ["--method", "gradient", "--quiet", "--workers", "0", "--out"]
    assert main(["sweep", str(photos), *out, str(tmp_path / "maps")]) == 0
    assert load_sweep(tmp_path / "maps").manifest["target"] == "predicted"
    capsys.readouterr()
    assert main(["sweep", str(photos), "--target", "lables.tsv", *out, str(tmp_path / "other")]) == 2
    assert "--target 'lables.tsv': no such label file" in cli_error_line(capsys)
