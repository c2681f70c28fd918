"""The `pyfastviz` command line, run in-process through main()."""

import pytest
from PIL import Image

from pyfastviz.cli import main
from pyfastviz.models import sample_image


@pytest.fixture
def cat(tmp_path):
    path = tmp_path / "cat.jpg"
    sample_image("chelsea").save(path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pyfastviz: error: ")
    return err


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("gradient", []), ("guided", []), ("gradient", ["--smoothgrad", "2"])])
def test_saliency_writes_map_and_overlay(cat, tmp_path, capsys, method, extra):
    out = tmp_path / "out"
    assert main(["saliency", str(cat), "--method", method, *extra, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "cat.jpg: class " in stdout
    for name in (f"cat_{method}.png", f"cat_{method}_overlay.png"):
        assert str(out / name) in stdout
        with Image.open(out / name) as image:
            assert image.size == (224, 224)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["Egyptian cat", "egyptian cat", "285"])
def test_target_by_name_or_index(cat, tmp_path, capsys, target):
    assert main(["saliency", str(cat), "--target", target, "--out", str(tmp_path / "out")]) == 0
    assert "class 285 'Egyptian cat'" in capsys.readouterr().out


def test_unreadable_image_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert main(["saliency", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "broken.png" in _error_line(capsys)
    assert main(["saliency", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.png" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unknown_class_is_a_one_line_error_with_close_names(cat, tmp_path, capsys):
    assert main(["saliency", str(cat), "--target", "Egyptian kat", "--out", str(tmp_path / "out")]) == 2
    err = _error_line(capsys)
    assert "'Egyptian kat'" in err and "'Egyptian cat'" in err


def test_unknown_model_is_a_one_line_error(cat, tmp_path, capsys):
    assert main(["saliency", str(cat), "--model", "nosuchnet", "--out", str(tmp_path / "out")]) == 2
    assert "nosuchnet" in _error_line(capsys)


def test_smoothgrad_needs_the_gradient_method(cat, tmp_path, capsys):
    assert main(["saliency", str(cat), "--method", "guided", "--smoothgrad", "4", "--out", str(tmp_path)]) == 2
    assert "--smoothgrad" in _error_line(capsys)


def test_help(capsys):
    assert main(["demo", "--help"]) == 0
    assert "--full" in capsys.readouterr().out
    assert main([]) == 2  # a command is required; argparse prints the usage
    assert "usage: pyfastviz" in capsys.readouterr().err
