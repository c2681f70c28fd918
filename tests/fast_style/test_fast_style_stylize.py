"""stylize on every input kind and size, styles and blends; save/load of style networks;
damaged files; the content sampler's determinism."""

import os
import re
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from pyfastviz.fast_style import ContentSampler, TransformerNet, load_style_network, save_style_network, stylize
from pyfastviz._files import write_atomic
from pyfastviz.fast_style.files import write_tensors
from pyfastviz.fast_style.images import pil_to_tensor
from tests.fast_style.tiny import pixels


def random_net(num_styles=None, seed=0):
    """A TransformerNet whose norm affines are random, so styles give different outputs."""
    torch.manual_seed(seed)
    net = TransformerNet(num_styles)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if re.search(r"in\d+\.", name):
                parameter.uniform_(0.5, 1.5) if name.endswith("weight") else parameter.uniform_(-0.5, 0.5)
            elif name == "deconv3.conv2d.bias":
                parameter.fill_(128)  # mid-grey output, inside [0, 255]
    return net.eval()


def pil(width=37, height=29, seed=0):
    return Image.fromarray((pixels(height, width, 3, seed=seed) * 255).round().byte().numpy())


def test_pil_path_folder_and_list_inputs(tmp_path):
    net = random_net()
    image = pil()
    out = stylize(net, image)
    assert isinstance(out, Image.Image) and out.size == image.size and out.mode == "RGB"
    image.save(tmp_path / "a.png")
    pil(20, 24, seed=1).save(tmp_path / "b.png")
    assert stylize(net, tmp_path / "a.png").tobytes() == out.tobytes()
    from_folder = stylize(net, tmp_path)
    assert [o.size for o in from_folder] == [(37, 29), (20, 24)]
    from_list = stylize(net, [image, str(tmp_path / "b.png")])
    assert [o.tobytes() for o in from_list] == [o.tobytes() for o in from_folder]


def test_folders_and_lists_show_progress_unless_told_not_to(tmp_path, capsys):
    net = random_net()
    for seed in range(2):
        pil(seed=seed).save(tmp_path / f"{seed}.png")
    stylize(net, tmp_path)
    err = capsys.readouterr().err
    assert "checking images" in err and "stylize" in err
    stylize(net, tmp_path, progress=False)
    stylize(net, pil())  # one image: no bar
    assert capsys.readouterr().err == ""


def test_content_sampler_shows_progress_while_checking_a_folder(tmp_path, capsys):
    pil().save(tmp_path / "a.png")
    ContentSampler(tmp_path, 16, 0, progress=True)
    assert "checking images" in capsys.readouterr().err
    ContentSampler(tmp_path, 16, 0)
    ContentSampler(None, 16, 0, progress=True)  # the sample photos: no files to check, no bar
    ContentSampler([pil()], 16, 0, progress=True)
    assert capsys.readouterr().err == ""


def test_tensor_inputs_keep_their_shape_and_range():
    net = random_net()
    batch = pixels(5, 3, 22, 27)
    out = stylize(net, batch, batch_size=2)
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(stylize(net, batch[3]), out[3])  # batching changes nothing (per-image norms)
    with torch.no_grad():
        torch.testing.assert_close(out, (net(batch * 255) / 255).clamp(0, 1))
    assert stylize(net, pixels(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    # float64 pixels run through the fp32 network: fp32 tolerances (a batch of 1 may take other conv kernels)
    torch.testing.assert_close(stylize(net, batch[:1].double(), device="cpu"), out[:1].double(), rtol=1.3e-6,
                               atol=1e-5)


def test_multi_style_index_and_blend_weights():
    net = random_net(num_styles=2)
    batch = pixels(2, 3, 16, 16)
    first, second = stylize(net, batch, style=0), stylize(net, batch, style=1)
    torch.testing.assert_close(stylize(net, batch, style=[1.0, 0.0]), first)
    torch.testing.assert_close(stylize(net, batch, style=torch.tensor([0.0, 1.0])), second)
    half = stylize(net, batch, style=[0.5, 0.5])
    assert not torch.allclose(half, first, atol=1e-3) and not torch.allclose(half, second, atol=1e-3)
    torch.testing.assert_close(stylize(net, batch, style=[3, 3]), half)  # a convex blend: divided by the sum
    torch.testing.assert_close(stylize(net, batch, style=(2.0, 0.0)), first)


def test_numpy_ints_are_style_indices_and_bools_are_not():
    net, batch = random_net(2), pixels(1, 3, 16, 16)
    torch.testing.assert_close(stylize(net, batch, style=np.int64(1)), stylize(net, batch, style=1))
    with torch.no_grad():
        torch.testing.assert_close(net(batch * 255, np.int32(1)), net(batch * 255, 1))
    with pytest.raises(TypeError, match="style must be an int, got True"):
        stylize(net, batch, style=True)
    with pytest.raises(TypeError, match="styles must be an int, got True"):
        net(batch * 255, True)


def test_pil_modes_become_rgb_as_elsewhere_in_the_library():
    ramp = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))  # a 16-bit file's I;16
    assert ramp.mode == "I;16" and pil_to_tensor(ramp).float().mean() / 255 == pytest.approx(0.5, abs=0.01)
    transparent = Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA")
    assert (pil_to_tensor(transparent) == 255).all()  # composited on white, not black


@pytest.mark.parametrize("num_styles, kwargs, error, match", [
    (None, dict(style=0), ValueError, "picks a style, but this network has only one"),
    (2, dict(), ValueError, "style is required"),
    (2, dict(style=2), ValueError, r"style must be in \[0, 2\)"),
    (2, dict(style=[1.0, 0.0, 0.0]), ValueError, r"style must have one blend weight per style \(2\), got 3"),
    (2, dict(style=[[1.0, 0.0]]), ValueError, r"style must be an int or 2 blend weights, got shape \(1, 2\)"),
    (2, dict(style=0.5), ValueError, r"style must be an int or 2 blend weights, got shape \(\)"),
    (2, dict(style=[float("nan"), 1.0]), ValueError, "style must be finite and >= 0"),
    (2, dict(style=[-1.0, 2.0]), ValueError, "style must be finite and >= 0, not all 0"),
    (2, dict(style=[0, 0]), ValueError, "style must be finite and >= 0, not all 0"),
    (2, dict(style="a"), TypeError, "style must be an int"),
    (None, dict(batch_size=0), ValueError, "batch_size"),
    (None, dict(device="gpu9"), ValueError, "device"),
    (None, dict(images=pixels(2, 1, 8, 8)), ValueError, "images"),
    (None, dict(images=torch.zeros(1, 3, 8, 8, dtype=torch.uint8)), ValueError, "images"),
    (None, dict(images=torch.full((1, 3, 8, 8), float("nan"))), ValueError, "NaN"),
    (None, dict(images=torch.full((3, 8, 8), 255.0)), ValueError, r"pixels in \[0, 1\].*divide \[0, 255\]"),
    (None, dict(images=3), TypeError, "images"),
    (None, dict(images=[3]), TypeError, "images"),
    (None, dict(images="/nonexistent.png"), FileNotFoundError, "nonexistent"),
])
def test_stylize_argument_errors(num_styles, kwargs, error, match):
    net = TransformerNet(num_styles)
    images = kwargs.pop("images", pixels(1, 3, 8, 8))
    with pytest.raises(error, match=match):
        stylize(net, images, **kwargs)


def test_stylize_needs_a_transformer_net():
    with pytest.raises(TypeError, match="network must be"):
        stylize(torch.nn.Conv2d(3, 3, 1), pixels(1, 3, 8, 8))


@pytest.mark.parametrize("num_styles", [None, 3])
@pytest.mark.parametrize("format", ["pyfastviz", "state_dict"])
def test_save_and_load_round_trip(tmp_path, num_styles, format):
    net = random_net(num_styles)
    path = save_style_network(net, tmp_path / "net.bin", format=format)
    loaded = load_style_network(path)
    assert loaded.num_styles == num_styles and not loaded.training
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert [p.name for p in tmp_path.iterdir()] == ["net.bin"]


@pytest.mark.parametrize("content, match", [
    (b"", r"not a fast-style network file of pyfastviz or pytorch/examples \(torch.load: EOFError\)"),
    (b"\x00" * 64, "not a fast-style network file of pyfastviz or pytorch/examples"),
    ("list", "not a fast-style network file: it holds a list"),
    ("checkpoint", "is a fast-style checkpoint file"),
    ("wrong-keys", "does not fit the style network"),
    ("no-in1", "no 1-D or 2-D 'in1.weight'"),
])
def test_load_damaged_or_foreign_files(tmp_path, content, match):
    path = tmp_path / "net.pth"
    if content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "checkpoint":
        write_tensors(path, {"x": torch.zeros(1)}, {"kind": "checkpoint"})
    elif content == "wrong-keys":
        torch.save({**TransformerNet().state_dict(), "extra.weight": torch.zeros(1)}, path)
    elif content == "no-in1":
        torch.save({"conv1.conv2d.weight": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_style_network(path)
    with pytest.raises(FileNotFoundError, match="style network file not found"):
        load_style_network(tmp_path / "missing.pth")


@pytest.mark.parametrize("kind", ["text", "png"])
def test_a_foreign_file_is_named_in_a_short_error(tmp_path, kind):
    path = tmp_path / f"foreign.{kind}"
    if kind == "text":
        path.write_text("hello, not a network\n")
    else:
        pil().save(path)
    with pytest.raises(ValueError) as error:
        load_style_network(path)
    message = str(error.value)
    assert message.startswith(f"{str(path)!r} is not a fast-style network file of pyfastviz or pytorch/examples")
    assert re.search(r"\(torch.load: (KeyError|UnpicklingError): .+\)$", message)
    assert len(message) < 200 + len(str(path)) and "weights_only" not in message


@pytest.mark.parametrize("format", ["pyfastviz", "state_dict"])
def test_save_creates_folders_and_gives_the_umasks_permissions(tmp_path, format):
    old = os.umask(0o027)
    try:
        path = save_style_network(random_net(), tmp_path / "new" / "deeper" / "net.bin", format=format)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~umask, not safetensors' owner-only 0o600
    assert [p.name for p in path.parent.iterdir()] == ["net.bin"]
    assert torch.equal(load_style_network(path).conv1.conv2d.weight, random_net().conv1.conv2d.weight)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "net.bin"
    path.write_bytes(b"old")

    def fails_half_way(file):
        file.write(b"half a network")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fails_half_way)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["net.bin"]


def test_a_write_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda *a: calls.append("replace") or replace(*a))
    write_atomic(tmp_path / "net.bin", lambda file: file.write(b"weights"))
    assert calls == ["fsync", "replace"] and (tmp_path / "net.bin").read_bytes() == b"weights"


def test_save_arguments():
    with pytest.raises(TypeError, match="network must be"):
        save_style_network(torch.nn.Linear(1, 1), "x.pth")
    with pytest.raises(ValueError, match="format must be one of"):
        save_style_network(TransformerNet(), "x.pth", format="onnx")


def test_content_sampler_is_a_function_of_seed_and_step(tmp_path):
    pil(50, 40).save(tmp_path / "a.png")
    pil(30, 60, seed=1).save(tmp_path / "b.png")
    sampler = ContentSampler(tmp_path, 24, seed=0)
    batch = sampler.batch(5, 3)
    assert batch.shape == (3, 3, 24, 24) and batch.min() >= 0 and batch.max() <= 255 and batch.max() > 1
    assert torch.equal(ContentSampler(tmp_path, 24, seed=0).batch(5, 3), batch)
    assert not torch.equal(sampler.batch(6, 3), batch)
    assert not torch.equal(ContentSampler(tmp_path, 24, seed=1).batch(5, 3), batch)
    samples = ContentSampler(None, 24, seed=0)
    assert len(samples) == 6 and samples.batch(0, 2).shape == (2, 3, 24, 24)


@pytest.mark.parametrize("damage, match", [("missing", "image file not found"), ("corrupt", "not a readable image")])
def test_content_sampler_opens_listed_paths_when_built(tmp_path, damage, match):
    pil().save(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    if damage == "corrupt":
        bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="content_images: ") as error:
        ContentSampler([tmp_path / "good.png", pil(), str(bad)], 24, seed=0)
    assert match in str(error.value) and "bad.png" in str(error.value)
