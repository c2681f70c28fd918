"""The `pyfastviz` command line, run in-process through main()."""

import os
import sys

import pytest
import torch
from PIL import Image, ImageOps

from helpers import cli_error_line
from pyfastviz.cli import main
from pyfastviz.models import sample_image


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
    assert "broken.png" in cli_error_line(capsys)
    assert main(["saliency", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.png" in cli_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unknown_class_is_a_one_line_error_with_close_names(cat, tmp_path, capsys):
    assert main(["saliency", str(cat), "--target", "Egyptian kat", "--out", str(tmp_path / "out")]) == 2
    err = cli_error_line(capsys)
    assert "--target='Egyptian kat'" in err and "'Egyptian cat'" in err
    for number in ("1000", "-1"):
        assert main(["saliency", str(cat), "--target", number, "--out", str(tmp_path / "out")]) == 2
        assert f"--target={number} is out of range [0, 1000)" in cli_error_line(capsys)


def test_unknown_model_is_a_one_line_error(cat, tmp_path, capsys):
    assert main(["saliency", str(cat), "--model", "nosuchnet", "--out", str(tmp_path / "out")]) == 2
    assert "nosuchnet" in cli_error_line(capsys)


def test_smoothgrad_needs_the_gradient_method(cat, tmp_path, capsys):
    assert main(["saliency", str(cat), "--method", "guided", "--smoothgrad", "4", "--out", str(tmp_path)]) == 2
    assert "--smoothgrad" in cli_error_line(capsys)


def test_help(capsys):
    assert main(["demo", "--help"]) == 0
    assert "--full" in capsys.readouterr().out
    assert main([]) == 2  # a command is required; argparse prints the usage
    assert "usage: pyfastviz" in capsys.readouterr().err


@pytest.fixture
def photo_folder(tmp_path):
    """Three sample photos (one in a subfolder) and a text file named .png."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name in ("coffee", "rocket"):
        sample_image(name).save(folder / f"{name}.jpg")
    sample_image("chelsea").save(folder / "more" / "chelsea.png")
    (folder / "broken.png").write_text("not an image")
    return folder


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.slow
def test_filters_and_activations_write_pngs(cat, tmp_path, capsys):
    assert main(["filters", "--out", str(tmp_path / "f.png")]) == 0
    assert _png_size(tmp_path / "f.png") == (6 * 26 + 2, 6 * 26 + 2)  # 32 filters of 3x3 at 8 px, 6 columns
    assert main(["activations", str(cat), "--layer", "_blocks.10", "--top", "4", "--out", str(tmp_path / "a.png")]) == 0
    assert _png_size(tmp_path / "a.png") == (2 * 66 + 2, 2 * 66 + 2)
    assert str(tmp_path / "a.png") in capsys.readouterr().out


@pytest.mark.slow
def test_activations_of_an_unknown_or_reused_layer_is_a_one_line_error(cat, tmp_path, capsys):
    assert main(["activations", str(cat), "--layer", "_blokcs.10", "--out", str(tmp_path / "a.png")]) == 2
    assert "'_blocks.10'" in cli_error_line(capsys)
    assert main(["activations", str(cat), "--layer", "_blocks.10._swish", "--out", str(tmp_path / "a.png")]) == 2
    assert "fired 2 times" in cli_error_line(capsys)
    assert not (tmp_path / "a.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_skips_and_reports_unreadable_files(photo_folder, tmp_path, capsys, method):
    out = tmp_path / "map.png"
    assert main(["embed", str(photo_folder), "--method", method, "--out", str(out)]) == 0
    assert _png_size(out) == (1024, 1024)
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err


@pytest.mark.slow
def test_neighbours_finds_the_original_of_a_mirrored_photo(photo_folder, tmp_path, capsys):
    query = tmp_path / "query.jpg"
    ImageOps.mirror(sample_image("chelsea")).save(query)
    out = tmp_path / "near.png"
    assert main(["neighbours", str(photo_folder), "--query", str(query), "--k", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(photo_folder / "more" / "chelsea.png"))
    assert len(lines) == 3 and lines[2] == str(out)
    assert _png_size(out)[0] > 3 * 128


@pytest.mark.slow
def test_neighbours_leaves_the_query_itself_out(photo_folder, tmp_path, capsys):
    query = photo_folder / "more" / ".." / "coffee.jpg"  # the folder's own coffee.jpg, spelt another way
    assert main(["neighbours", str(photo_folder), "--query", str(query), "--k", "2", "--quiet",
                 "--out", str(tmp_path / "near.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and not any("coffee" in line for line in lines[:2])
    assert main(["neighbours", "--help"]) == 0
    assert "left out" in capsys.readouterr().out


@pytest.mark.slow
def test_neighbours_needs_k_images(photo_folder, tmp_path, capsys):
    assert main(["neighbours", str(photo_folder), "--query", str(photo_folder / "coffee.jpg"), "--k", "3",
                 "--out", str(tmp_path / "near.png")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("pyfastviz: error: neighbours needs at least 3 readable images besides the query in "
                       f"{str(photo_folder)!r}, found 2")


@pytest.mark.slow
def test_embed_maps_thumbnails_and_quiet_hides_the_bars(photo_folder, tmp_path, capsys, monkeypatch):
    import pyfastviz.cli.inspect as inspect_cli

    mapped = []
    monkeypatch.setattr(inspect_cli, "embedding_image", lambda images, coords, thumb: mapped.append(
        (images, thumb)) or Image.new("RGB", (8, 8)))
    for quiet in ([], ["--quiet"]):
        assert main(["embed", str(photo_folder), "--method", "pca", *quiet, "--out", str(tmp_path / "m.png")]) == 0
        err = capsys.readouterr().err
        assert ("checking images" in err and "features" in err and "thumbnails" in err) == (not quiet)
    images, thumb = mapped[0]
    assert len(images) == 3 and all(max(image.size) <= thumb for image in images)  # not the full photos


@pytest.mark.parametrize("command, flag, value, wanted", [
    (["classvis", "goldfish"], "--steps", "0", "an int >= 1"),
    (["classvis", "goldfish"], "--size", "-2", "an int >= 1"),
    (["dream", "x.jpg"], "--octaves", "0", "an int >= 1"),
    (["dream", "x.jpg"], "--steps", "0", "an int >= 1"),
    (["invert", "x.jpg"], "--tv-weight", "nan", "a number >= 0"),
    (["activations", "x.jpg", "--layer", "_blocks.1"], "--top", "0", "an int >= 1"),
    (["neighbours", ".", "--query", "x.jpg"], "--k", "zero", "an int >= 1"),
    (["texture", "x.jpg"], "--steps", "-1", "an int >= 0"),
    (["train-style", "x.jpg"], "--batch-size", "0", "an int >= 1"),
    (["fool", "x.jpg", "--target", "1"], "--epsilon", "0", "a number > 0 and < 255"),
    (["fool", "x.jpg", "--target", "1"], "--epsilon", "255", "a number > 0 and < 255"),
    (["saliency", "x.jpg"], "--smoothgrad", "-1", "an int >= 0"),
    (["occlusion", "x.jpg"], "--window", "0", "an int >= 1"),
    (["occlusion", "x.jpg"], "--batch-size", "2.5", "an int >= 1"),
    (["occlusion", "x.jpg"], "--batch-size", "0", "an int >= 1"),
    (["sweep", "."], "--shard-size", "0", "an int >= 1"),
    (["sweep", "."], "--workers", "-1", "an int >= 0"),
])
def test_bad_numbers_are_refused_naming_their_flag(tmp_path, capsys, command, flag, value, wanted):
    assert main([*command, flag, value, "--out", str(tmp_path / "out.png")]) == 2
    assert f"argument {flag}: must be {wanted}, got {value!r}" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("module, function, command", [
    ("ascent", "class_visualization", ["classvis", "goldfish"]),
    ("ascent", "fooling_images", ["fool", "CAT", "--target", "goldfish"]),
    ("ascent", "invert_features", ["invert", "CAT"]),
    ("ascent", "deepdream", ["dream", "CAT"]),
    ("explain", "saliency", ["saliency", "CAT", "--smoothgrad", "2"]),
    ("explain", "occlusion", ["occlusion", "CAT"]),
    ("style", "texture_synthesis", ["texture", "CAT"]),
    ("style", "style_transfer", ["style", "CAT", "CAT"]),
    ("style", "train_style", ["train-style", "CAT"]),
])
def test_quiet_turns_the_progress_bars_off(cat, tmp_path, monkeypatch, module, function, command):
    import importlib

    class Stop(Exception):
        pass

    shown = []

    def record_progress(*args, progress, **kwargs):
        shown.append(progress)
        raise Stop

    monkeypatch.setattr(importlib.import_module(f"pyfastviz.cli.{module}"), function, record_progress)
    command = [str(cat) if word == "CAT" else word for word in command]
    out = tmp_path / {"texture": "out.png", "style": "out.png", "train-style": "out.safetensors"}.get(command[0], "out")
    for quiet in ([], ["--quiet"]):
        with pytest.raises(Stop):
            main([*command, *quiet, "--out", str(out)])
    assert shown == [True, False]


def test_inspect_commands_check_their_paths_first(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.png")]) == 2
    assert "nowhere" in cli_error_line(capsys)
    assert main(["neighbours", str(tmp_path), "--query", str(tmp_path / "missing.jpg"), "--out", "x.png"]) == 2
    assert "missing.jpg" in cli_error_line(capsys)
    assert main(["embed", str(tmp_path), "--method", "umap", "--out", "m.png"]) == 2  # argparse: invalid choice
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--compile"]])
def test_occlusion_writes_map_and_overlay(cat, tmp_path, capsys, extra):
    out = tmp_path / "out"
    assert main(["occlusion", str(cat), "--window", "56", "--stride", "56", "--target", "Egyptian cat", *extra,
                 "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "class 285 'Egyptian cat'" in stdout
    for name in ("cat_occlusion.png", "cat_occlusion_overlay.png"):
        assert str(out / name) in stdout
        with Image.open(out / name) as image:
            assert image.size == (224, 224)


def test_occlusion_window_larger_than_the_image_is_a_one_line_error(cat, tmp_path, capsys):
    assert main(["occlusion", str(cat), "--window", "300", "--out", str(tmp_path)]) == 2
    assert "--window (3, 300, 300) is larger than the image (3, 224, 224)" in cli_error_line(capsys)


@pytest.mark.slow
@pytest.mark.parametrize("args, size", [
    (["--layer", "_blocks.1._project_conv", "--channel", "5"], 5 * 10 + 2),  # 24 filters of 1x1: 5 columns
    (["--layer", "_blocks.0._depthwise_conv"], 6 * 26 + 2),  # 32 one-channel 3x3 filters, in grey
    (["--channel", "0"], 6 * 26 + 2),  # the first layer's red channel
])
def test_filters_of_a_named_layer_and_channel(tmp_path, capsys, args, size):
    out = tmp_path / "f.png"
    assert main(["filters", *args, "--out", str(out)]) == 0
    assert _png_size(out) == (size, size)
    assert capsys.readouterr().out.strip() == str(out)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--layer", "_blocks.1._projct_conv"], "--layer '_blocks.1._projct_conv' is not a module"),
    (["--layer", "_blocks.1"], "--layer '_blocks.1' is a MBConvBlock, not an nn.Conv2d"),
    (["--layer", "_blocks.1._project_conv"], "error: the filters have 96 input channels; pass --channel C"),
    (["--layer", "_blocks.1._project_conv", "--channel", "96"], "--channel 96 is not an input channel in [0, 96)"),
    (["--channel", "-1"], "--channel -1 is not an input channel in [0, 3)"),
])
def test_filters_bad_layer_or_channel_is_a_one_line_error(tmp_path, capsys, args, message):
    assert main(["filters", *args, "--out", str(tmp_path / "f.png")]) == 2
    assert message in cli_error_line(capsys)
    assert not (tmp_path / "f.png").exists()


def test_filters_channel_must_be_an_int(tmp_path, capsys):
    assert main(["filters", "--channel", "red", "--out", str(tmp_path / "f.png")]) == 2  # argparse
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.slow
def test_classvis_writes_an_image_per_class(tmp_path, capsys):
    assert main(["classvis", "goldfish", "327", "--size", "64", "--steps", "3", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "'goldfish': p = " in stdout and "'starfish': p = " in stdout
    for name in ("goldfish.png", "starfish.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (64, 64)


@pytest.mark.slow
def test_fool_writes_the_fooled_image_within_budget(cat, tmp_path, capsys):
    assert main(["fool", str(cat), "--target", "goldfish", "--epsilon", "8", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "cat.jpg: fooled, predicted 'goldfish'" in stdout
    for name in ("cat_fooled.png", "cat_perturbation.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (224, 224)


@pytest.mark.slow
def test_classvis_in_fourier_space(tmp_path, capsys):
    assert main(["classvis", "goldfish", "--fourier", "--size", "64", "--steps", "3", "--out", str(tmp_path)]) == 0
    assert "'goldfish': p = " in capsys.readouterr().out
    with Image.open(tmp_path / "goldfish.png") as image:
        assert image.size == (64, 64)


@pytest.mark.slow
def test_invert_and_dream_write_their_images(cat, tmp_path, capsys):
    assert main(["invert", str(cat), "--layer", "_blocks.1", "--steps", "3", "--out", str(tmp_path)]) == 0
    assert main(["dream", str(cat), "--octaves", "1", "--steps", "2", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "cat.jpg: relative feature error at _blocks.1 " in stdout
    assert "cat.jpg: mean square activation of _blocks.8 x" in stdout
    for name in ("cat_inverted.png", "cat_dream.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (224, 224)


@pytest.mark.parametrize("command", ["invert", "dream"])
def test_invert_and_dream_unknown_layer_is_a_one_line_error(cat, tmp_path, capsys, command):
    assert main([command, str(cat), "--layer", "_blocks.99", "--out", str(tmp_path)]) == 2
    assert "_blocks.99" in cli_error_line(capsys)


def test_classvis_unknown_class_is_a_one_line_error(tmp_path, capsys):
    assert main(["classvis", "goldfsh", "--out", str(tmp_path)]) == 2
    assert "goldfish" in cli_error_line(capsys)


def test_classvis_refuses_a_class_given_twice(tmp_path, capsys):
    assert main(["classvis", "goldfish", "1", "--steps", "1", "--out", str(tmp_path / "vis")]) == 2
    assert "CLASS 'goldfish' and '1' are the same class, 'goldfish'" in cli_error_line(capsys)
    assert not (tmp_path / "vis").exists()


@pytest.mark.slow
def test_texture_and_style_write_their_images(cat, tmp_path, capsys):
    flower = tmp_path / "flower.png"
    sample_image("flower").save(flower)
    assert main(["texture", str(flower), "--size", "48", "--steps", "3", "--device", "cpu",
                 "--out", str(tmp_path / "t.png")]) == 0
    assert main(["style", str(cat), str(flower), "--size", "48", "--steps", "2", "--scales", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    stdout = capsys.readouterr().out
    assert "Gram loss " in stdout and "style loss " in stdout
    for name, size in (("t.png", (48, 48)), ("s.png", (48, 32))):  # the cat (451 x 300): its aspect, not cropped
        with Image.open(tmp_path / name) as image:
            assert image.size == size


@pytest.mark.parametrize("command", ["texture", "style"])
def test_a_size_that_will_not_fit_is_a_one_line_error(cat, tmp_path, capsys, monkeypatch, command):
    import functools

    import pyfastviz.style.transfer as transfer

    monkeypatch.setattr(transfer, "check_memory", functools.partial(transfer.check_memory, available=2**20))
    images = [str(cat)] if command == "texture" else [str(cat), str(cat)]
    assert main([command, *images, "--size", "64", "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    error = cli_error_line(capsys)
    assert "MiB is available: no size fits" in error and error.rstrip().endswith("lower --size")


def test_demo_style_image_is_passed_on_and_read_before_any_work(cat, tmp_path, capsys, monkeypatch):
    import pyfastviz.cli as cli

    assert main(["demo", "--style-image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "demo")]) == 2
    assert "image file not found" in cli_error_line(capsys) and not (tmp_path / "demo").exists()
    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda out, **kwargs: calls.append(kwargs) or tmp_path / "index.html")
    assert main(["demo", "--style-image", str(cat), "--out", str(tmp_path / "demo")]) == 0
    assert calls[0]["style_image"] == str(cat) and calls[0]["progress"] and calls[0]["weights_path"] is None
    assert main(["demo", "--model", "resnet18", "--weights", "r18.pth", "--quiet"]) == 0
    assert calls[1]["model_name"] == "resnet18" and calls[1]["weights_path"] == "r18.pth" and not calls[1]["progress"]


def test_style_with_mismatched_weights_is_a_one_line_error(cat, tmp_path, capsys):
    assert main(["style", str(cat), str(cat), "--style-weights", "1", "2", "--size", "32", "--steps", "1",
                 "--out", str(tmp_path / "s.png")]) == 2
    assert "--style-weights must have one per style image (1), got 2" in cli_error_line(capsys)


@pytest.mark.slow
def test_train_style_then_stylize(cat, tmp_path, capsys):
    flower, brick = tmp_path / "flower.png", tmp_path / "brick.png"
    sample_image("flower").save(flower)
    sample_image("brick").save(brick)
    single, multi = tmp_path / "flower.pth", tmp_path / "two.safetensors"
    assert main(["train-style", str(flower), "--size", "32", "--steps", "2", "--batch-size", "1",
                 "--device", "cpu", "--out", str(single)]) == 0
    assert main(["train-style", str(flower), str(brick), "--size", "32", "--steps", "2", "--batch-size", "2",
                 "--device", "cpu", "--out", str(multi)]) == 0
    assert "perceptual loss " in capsys.readouterr().out
    assert "in1.weight" in torch.load(single, weights_only=True)  # a .pth name: pytorch/examples' state_dict
    assert main(["stylize", str(single), str(cat), "--out", str(tmp_path / "a")]) == 0
    assert main(["stylize", str(multi), str(cat), "--style", "0.5", "0.5", "--out", str(tmp_path / "b")]) == 0
    assert main(["stylize", str(multi), str(cat), "--style", "1", "--out", str(tmp_path / "c")]) == 0
    with Image.open(cat) as original:
        size = original.size
    for folder in "abc":
        with Image.open(tmp_path / folder / "cat_stylized.png") as image:
            assert image.size == size


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_style_and_stylize_default_to_cuda(cat, tmp_path, capsys):
    flower, network = tmp_path / "flower.png", tmp_path / "flower.safetensors"
    sample_image("flower").save(flower)
    assert main(["train-style", str(flower), "--size", "32", "--steps", "2", "--batch-size", "1",
                 "--out", str(network)]) == 0
    assert "perceptual loss " in capsys.readouterr().out
    assert main(["stylize", str(network), str(cat), "--out", str(tmp_path / "a")]) == 0
    with Image.open(cat) as original, Image.open(tmp_path / "a" / "cat_stylized.png") as image:
        assert image.size == original.size


@pytest.mark.parametrize("device", ["cpux", "cuda:99"])
def test_train_style_and_stylize_bad_device_is_a_one_line_error(cat, tmp_path, capsys, device):
    out = tmp_path / "net.safetensors"
    assert main(["train-style", str(cat), "--steps", "1", "--device", device, "--out", str(out)]) == 2
    assert f"--device {device!r}" in cli_error_line(capsys)
    assert main(["stylize", str(out), str(cat), "--device", device, "--out", str(tmp_path)]) == 2
    assert f"--device {device!r}" in cli_error_line(capsys)
    assert not out.exists()


def test_stylize_foreign_file_is_a_one_line_error(cat, tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a network")
    assert main(["stylize", str(junk), str(cat), "--out", str(tmp_path)]) == 2
    assert "junk.safetensors" in cli_error_line(capsys)


@pytest.mark.parametrize("command", [["fool", "--target", "goldfish"], ["invert"], ["dream"], ["saliency"]])
def test_inputs_sharing_a_stem_are_refused_before_any_work(cat, tmp_path, capsys, command):
    twin = tmp_path / "other" / "cat.png"
    twin.parent.mkdir()
    sample_image("coffee").save(twin)
    assert main([command[0], str(cat), str(twin), *command[1:], "--out", str(tmp_path / "out")]) == 2
    assert "share a file name stem" in cli_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_stylize_quiet_hides_the_progress_bar(tmp_path, capsys):
    from pyfastviz.fast_style import TransformerNet, save_style_network

    network = save_style_network(TransformerNet(), tmp_path / "net.safetensors")
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for photo in photos:
        sample_image("coffee").resize((16, 12)).save(photo)
    for quiet in ([], ["--quiet"]):
        assert main(["stylize", str(network), *map(str, photos), *quiet, "--out", str(tmp_path / "out")]) == 0
        assert ("stylize" in capsys.readouterr().err) == (not quiet)


def test_stylize_inputs_sharing_a_stem_are_refused(cat, tmp_path, capsys):
    assert main(["stylize", "net.safetensors", str(cat), str(cat), "--out", str(tmp_path / "out")]) == 2
    assert "share a file name stem" in cli_error_line(capsys)


@pytest.mark.parametrize("command", [["texture"], ["style", "STYLE"], ["filters"], ["train-style"]])
def test_out_is_checked_before_any_work(cat, tmp_path, capsys, command):
    arguments = [str(cat) if a == "STYLE" else a for a in command[1:]]
    inputs = [] if command[0] == "filters" else [str(cat)]
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert main([command[0], *inputs, *arguments, "--out", str(folder)]) == 2
    assert "is a folder: give a file name" in cli_error_line(capsys)
    if command[0] != "train-style":  # a network file may have any name
        assert main([command[0], *inputs, *arguments, "--out", str(tmp_path / "picture.jpg")]) == 2
        assert "must be a .png file name" in cli_error_line(capsys)


def test_an_out_folder_that_is_a_file_is_refused(cat, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    assert main(["invert", str(cat), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file: give a folder" in cli_error_line(capsys)


@pytest.mark.parametrize("command", [["invert"], ["classvis", "goldfish"], ["sweep"], ["demo"],
                                     ["stylize", "net.safetensors"]])
def test_an_out_folder_named_like_a_picture_or_empty_is_refused(cat, tmp_path, capsys, command):
    inputs = {"classvis": [], "demo": [], "sweep": [str(tmp_path)]}.get(command[0], [str(cat)])
    arguments = [*command, *inputs]
    assert main([*arguments, "--out", str(tmp_path / "result.PNG")]) == 2
    assert "names a file, but this command writes a folder of PNGs" in cli_error_line(capsys)
    assert main([*arguments, "--out", " "]) == 2
    assert "--out must not be empty" in cli_error_line(capsys)
    assert not (tmp_path / "result.PNG").exists()


def test_an_out_file_may_not_be_empty(cat, capsys):
    assert main(["texture", str(cat), "--out", ""]) == 2
    assert "--out must not be empty" in cli_error_line(capsys)


@pytest.mark.parametrize("name", ["cpu", "cpu:0", "cpu:1"])
def test_a_cpu_device_with_an_index_is_the_cpu(name):
    from pyfastviz.cli.common import device

    assert device(name) == torch.device("cpu")


def test_empty_image_folders_are_named_without_an_empty_bar(cat, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["embed", str(tmp_path / "empty"), "--out", str(tmp_path / "map.png")]) == 2
    assert "found 0" in cli_error_line(capsys)  # one line: no "checking images: 0it" bar before it
    assert main(["train-style", str(cat), "--content", str(tmp_path / "empty"), "--out", str(tmp_path / "n.pth")]) == 2
    assert f"--content {str(tmp_path / 'empty')!r} holds no readable image files" in cli_error_line(capsys)


def test_layers_lists_names_types_and_every_call_shape(capsys):
    assert main(["layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("efficientnet_lite0: layers and their output shapes")
    swish = next(line.split() for line in lines if line.startswith("_blocks.1._swish "))
    assert swish[1] == "ReLU6" and " ".join(swish[2:]) == "(96, 112, 112), (96, 56, 56)"  # the reused ReLU6


@pytest.mark.slow
def test_embed_and_neighbours_take_a_feature_layer(photo_folder, tmp_path, capsys):
    assert main(["embed", str(photo_folder), "--method", "pca", "--layer", "_blocks.15",
                 "--out", str(tmp_path / "map.png")]) == 0
    assert _png_size(tmp_path / "map.png") == (1024, 1024)
    capsys.readouterr()
    assert main(["neighbours", str(photo_folder), "--query", str(photo_folder / "coffee.jpg"), "--k", "1",
                 "--layer", "nosuchlayer", "--out", str(tmp_path / "n.png")]) == 2
    assert "--layer 'nosuchlayer' is not a module of EfficientNet; see `pyfastviz layers`" in cli_error_line(capsys)


def test_a_reader_that_stops_early_gets_no_traceback():
    import fcntl
    import subprocess

    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the listing: the CLI blocks, then hits EPIPE
    child = subprocess.Popen([sys.executable, "-m", "pyfastviz.cli", "layers"], stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    with os.fdopen(reader, "rb") as stdout:
        assert stdout.readline().startswith(b"efficientnet_lite0: layers")
    stderr = child.communicate(timeout=120)[1].decode()
    assert child.returncode == 1 and stderr == ""


def test_an_output_never_overwrites_an_input_image(cat, tmp_path, capsys):
    victim = tmp_path / "cat_gradient.png"  # where saliency would write cat.jpg's map
    Image.new("RGB", (8, 8), "red").save(victim)
    before = victim.read_bytes()
    assert main(["saliency", str(cat), str(victim), "--quiet", "--out", str(tmp_path)]) == 2
    assert "cat_gradient.png would overwrite an input image" in cli_error_line(capsys)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("command", [["texture", "PHOTO"], ["style", "CAT", "PHOTO"], ["style", "PHOTO", "CAT"],
                                     ["train-style", "PHOTO"]])
def test_a_one_file_output_never_overwrites_an_input(cat, tmp_path, capsys, command):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "red").save(photo)
    before = photo.read_bytes()
    arguments = [{"CAT": str(cat), "PHOTO": str(photo)}.get(word, word) for word in command]
    for out in (photo, tmp_path / "." / "photo.png"):  # the same file by another path too
        assert main([*arguments, "--out", str(out)]) == 2
        assert "is one of the command's input files" in cli_error_line(capsys)
    assert photo.read_bytes() == before
    if command[0] == "train-style":  # a network file is no picture
        assert main([*arguments, "--out", str(tmp_path / "network.png")]) == 2
        assert "names a picture: a network file ends in .safetensors" in cli_error_line(capsys)


def test_inspect_commands_never_overwrite_an_input(photo_folder, tmp_path, capsys):
    photo, query = tmp_path / "photo.png", photo_folder / "more" / "chelsea.png"
    sample_image("coffee").resize((32, 32)).save(photo)
    before = {path: path.read_bytes() for path in (photo, query)}
    for command, out, message in (
            (["activations", str(photo), "--layer", "_blocks.1"], photo, "is one of the command's input files"),
            (["neighbours", str(photo_folder), "--query", str(photo)], photo, "is one of the command's input files"),
            (["neighbours", str(photo_folder), "--query", str(photo)], query, "is a file of the image folder"),
            (["embed", str(photo_folder)], query, "is a file of the image folder")):
        assert main([*command, "--out", str(out)]) == 2
        assert message in cli_error_line(capsys)
    assert {path: path.read_bytes() for path in (photo, query)} == before


@pytest.mark.parametrize("module, command, out", [
    ("explain", ["saliency", "CAT"], "sub"),
    ("style", ["texture", "CAT"], "sub/texture.png"),
    ("style", ["train-style", "CAT"], "net.safetensors"),
])
def test_out_below_a_file_is_refused_before_any_work(cat, tmp_path, capsys, monkeypatch, module, command, out):
    import importlib

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(importlib.import_module(f"pyfastviz.cli.{module}"), "load_model", no_work)
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    command = [str(cat) if word == "CAT" else word for word in command]
    assert main([*command, "--out", str(afile / out)]) == 2
    assert f"{str(afile)!r} is a file, not a folder" in cli_error_line(capsys)


def test_ctrl_c_is_one_line_and_status_130(cat, tmp_path, capsys, monkeypatch):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("pyfastviz.cli.explain"), "load_model", interrupted)
    assert main(["saliency", str(cat), "--out", str(tmp_path / "maps")]) == 130
    assert capsys.readouterr().err == "pyfastviz: interrupted\n"


def test_warnings_are_one_line_each(cat, tmp_path, capsys, monkeypatch):
    import importlib
    import warnings

    explain = importlib.import_module("pyfastviz.cli.explain")

    def warning_then_stop(*args, **kwargs):
        warnings.warn("something to know", UserWarning)
        raise ValueError("stopped")

    monkeypatch.setattr(explain, "load_model", warning_then_stop)
    before = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        def printed(message, category, filename, lineno, file=None, line=None):  # as outside pytest's capture
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = printed
        assert main(["saliency", str(cat), "--out", str(tmp_path / "maps")]) == 2
    assert capsys.readouterr().err == "pyfastviz: warning: something to know\npyfastviz: error: stopped\n"
    assert warnings.formatwarning is before  # restored


@pytest.mark.parametrize("command, message, said", [
    ("stylize", "style must be None for a single-style network, got 0", "--style must be None for a single-style "
                                                                        "network, got 0"),
    ("train-style", "steps=100 is below the checkpoint's step 200", "--steps 100 is below the checkpoint's step 200"),
    ("dream", "octaves=12 makes the smallest octave 2 px", "--octaves 12 makes the smallest octave 2 px"),
    ("dream", "a single-style network has no style", "a single-style network has no style"),  # no keyword: as is
])
def test_the_librarys_keywords_become_the_commands_flags(command, message, said):
    from pyfastviz.cli import build_parser, in_flags

    assert in_flags(message, build_parser(), command) == said


def test_version(capsys):
    from pyfastviz import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pyfastviz {__version__}\n"
