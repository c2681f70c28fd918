"""`pyfastviz occlusion --device/--batch-size`, run in-process through main()."""

import importlib

import pytest
import torch

from helpers import cli_error_line
from pyfastviz.cli import main


@pytest.mark.slow
def test_device_and_batch_size_reach_occlusion(cat, tmp_path, monkeypatch):
    cli = importlib.import_module("pyfastviz.cli.explain")
    real, seen = cli.occlusion, []

    def recording(model, images, target, **kwargs):
        seen.append((images.device, next(model.parameters()).device, kwargs["batch_size"]))
        return real(model, images, target, **kwargs)

    monkeypatch.setattr(cli, "occlusion", recording)
    assert main(["occlusion", str(cat), "--window", "112", "--stride", "112", "--device", "cpu", "--batch-size", "3",
                 "--out", str(tmp_path / "out")]) == 0
    assert seen == [(torch.device("cpu"), torch.device("cpu"), 3)]
    assert (tmp_path / "out" / "cat_occlusion.png").exists()


# A bad --batch-size is refused while parsing (tests/test_cli.py: test_bad_numbers_are_refused_naming_their_flag).
@pytest.mark.parametrize("args, message", [
    pytest.param(["--device", "cuda"], "--device cuda needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU")),
    (["--device", "tpu"], "--device 'tpu' is not a torch device"),
    (["--device", "mps"], "--device 'mps': pyfastviz runs on cpu or cuda[:N]"),
    (["--device", "meta"], "--device 'meta': pyfastviz runs on cpu or cuda[:N]"),
])
def test_bad_device_is_a_one_line_error(cat, tmp_path, capsys, args, message):
    assert main(["occlusion", str(cat), *args, "--out", str(tmp_path)]) == 2
    assert f"pyfastviz: error: {message}" in cli_error_line(capsys)
