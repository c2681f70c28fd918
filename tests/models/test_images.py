import numpy as np
import pytest
import torch
from PIL import Image

from pyfastviz.models import (
    SAMPLE_IMAGES,
    Preprocess,
    gradient_to_pil,
    heatmap_overlay,
    image_grid,
    load_batch,
    load_image,
    map_to_pil,
    normalize_map,
    saliency_overlay,
    sample_image,
    save_png,
    tensor_to_pils,
    to_pil,
)


def pixel(image, xy=(0, 0)):
    return image.getpixel(xy)


def test_load_rgba_composites_on_white(tmp_path):
    rgba = Image.new("RGBA", (5, 3), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    rgba.save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (5, 3)
    assert pixel(image) == (255, 255, 255)
    assert pixel(image, (1, 1)) == (0, 0, 255)


def test_load_rgb_with_a_transparent_colour_composites_on_white(tmp_path):
    image = Image.new("RGB", (2, 1), (10, 20, 30))
    image.putpixel((1, 0), (0, 0, 0))
    image.save(tmp_path / "trns.png", transparency=(0, 0, 0))
    loaded = load_image(tmp_path / "trns.png")
    assert pixel(loaded, (0, 0)) == (10, 20, 30) and pixel(loaded, (1, 0)) == (255, 255, 255)


def test_load_grayscale_and_palette(tmp_path):
    Image.new("L", (4, 6), 77).save(tmp_path / "l.png")
    assert pixel(load_image(tmp_path / "l.png")) == (77, 77, 77)
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "p.gif")
    image = load_image(tmp_path / "p.gif")
    assert image.mode == "RGB" and pixel(image) == (10, 200, 30)


def test_load_16_bit_keeps_full_range(tmp_path):
    array = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = load_image(tmp_path / "deep.png")
    assert [pixel(image, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_load_32_bit_integers_beyond_16_bits_use_their_own_range(tmp_path):
    array = np.array([[-70000, 30000, 130000]], dtype=np.int32)
    Image.fromarray(array, mode="I").save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == "I"
    image = load_image(tmp_path / "wide.tif")
    assert [pixel(image, (x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("array, mode, expected", [
    (np.array([[0, 100, 200]], dtype=np.int32), "I", [0, 100, 200]),  # 8-bit values in a 32-bit file
    (np.array([[0.0, 100.0, 200.0]], dtype=np.float32), "F", [0, 100, 200]),  # and in a float one
    (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F", [0, 128, 255]),  # floats of [0, 1]
    (np.array([[0, 100, 200]], dtype=np.uint16), None, [0, 0, 1]),  # a dark 16-bit file stays dark
])
def test_load_wide_grayscale_by_the_range_its_values_fit(tmp_path, array, mode, expected):
    Image.fromarray(array, mode=mode).save(tmp_path / "wide.tif")
    image = load_image(tmp_path / "wide.tif")
    assert [pixel(image, (x, 0))[0] for x in range(3)] == expected


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"hello")
    with pytest.raises(ValueError, match="junk.png.*not a readable image"):
        load_image(tmp_path / "junk.png")


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_sample_images_are_rgb(name):
    image = sample_image(name)
    assert image.mode == "RGB" and min(image.size) >= 256


def test_unknown_sample_image():
    with pytest.raises(ValueError, match="'cat'.*chelsea"):
        sample_image("cat")


def test_load_batch_mixes_paths_and_images(tmp_path):
    Image.new("RGB", (40, 30), (255, 255, 255)).save(tmp_path / "w.png")
    x = load_batch([tmp_path / "w.png", str(tmp_path / "w.png"), sample_image("coffee")], Preprocess(16))
    assert x.shape == (3, 3, 16, 16)
    torch.testing.assert_close(Preprocess(16).denormalize(x[0]), torch.ones(3, 16, 16))


def test_to_pil_round_trip_and_clamp():
    x = torch.rand(3, 4, 7)
    image = to_pil(x)
    assert image.size == (7, 4)
    back = torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255
    torch.testing.assert_close(back, x, atol=1 / 255, rtol=0)
    assert pixel(to_pil(torch.full((3, 2, 2), 9.0))) == (255, 255, 255)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_pil(torch.zeros(1, 3, 4, 4))
    assert len(tensor_to_pils(torch.zeros(5, 3, 2, 2))) == 5


def test_image_grid_sizes():
    small, big = Image.new("RGB", (10, 4), (0, 0, 0)), Image.new("RGB", (6, 8), (0, 0, 0))
    grid = image_grid([small, big, small], pad=2)  # ncols = ceil(sqrt(3)) = 2 -> 2 x 2 cells of 10 x 8
    assert grid.size == (2 * 12 + 2, 2 * 10 + 2)
    assert pixel(grid) == (255, 255, 255) and pixel(grid, (2, 4)) == (0, 0, 0)
    assert image_grid([small] * 3, ncols=3, pad=0).size == (30, 4)
    assert image_grid([small] * 2, ncols=5, pad=1).size == (23, 6)
    with pytest.raises(ValueError, match="at least one"):
        image_grid([])


def test_normalize_map():
    torch.testing.assert_close(normalize_map(torch.tensor([[2.0, 4.0], [3.0, 6.0]])),
                               torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    torch.testing.assert_close(normalize_map(torch.full((3, 3), 7.0)), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        normalize_map(torch.zeros(1, 3, 3))


def test_map_to_pil_with_and_without_matplotlib(monkeypatch):
    m = torch.arange(12.0).view(3, 4)
    with_mpl = map_to_pil(m, "gray")
    assert with_mpl.size == (4, 3)
    assert pixel(with_mpl) == (0, 0, 0) and pixel(with_mpl, (3, 2)) == (255, 255, 255)
    hot = map_to_pil(m)  # inferno: dark low end, bright yellow high end
    assert sum(pixel(hot)) < 30 and pixel(hot, (3, 2))[0] > 240
    with pytest.raises(ValueError, match="colormap 'nope'"):
        map_to_pil(m, "nope")
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import now fails
    fallback = map_to_pil(m)
    assert sum(pixel(fallback)) < 30 and pixel(fallback, (3, 2))[0] > 240
    with pytest.raises(ValueError, match="needs matplotlib"):
        map_to_pil(m, "viridis")


def test_gradient_to_pil():
    g = torch.zeros(3, 10, 10)
    g[0, 0, :] = torch.linspace(-1, 1, 10)
    image = np.asarray(gradient_to_pil(g, percentile=100))
    assert tuple(image[5, 5]) == (128, 128, 128)  # zero gradient -> grey
    assert image[0, 0, 0] == 0 and image[0, 9, 0] == 255
    g[0, 0, 0] = -1000.0  # one outlier above the 99th percentile is clamped, the rest keeps contrast
    image = np.asarray(gradient_to_pil(g))
    assert image[0, 0, 0] == 0 and image[0, 9, 0] == 255
    assert image[0, 5, 0] > 140  # 0.11 / 0.78 above grey; scaling by the max would give ~128
    assert tuple(np.asarray(gradient_to_pil(torch.zeros(3, 4, 4)))[0, 0]) == (128, 128, 128)


def test_heatmap_overlay_size_and_blend():
    image = Image.new("RGB", (50, 30), (0, 0, 0))
    heat = torch.zeros(6, 10)
    heat[3, 5] = 1.0
    overlay = heatmap_overlay(image, heat, alpha=0.5)
    assert overlay.size == image.size and overlay.mode == "RGB"
    assert heatmap_overlay(image, heat, alpha=0.0).tobytes() == image.tobytes()
    assert pixel(overlay, (25, 15))[0] > pixel(overlay, (0, 0))[0]  # jet: hot centre is red
    with pytest.raises(ValueError, match="alpha"):
        heatmap_overlay(image, heat, alpha=2)
    with pytest.warns(RuntimeWarning, match="the 7x7 map is stretched over a 30x50 image"):
        heatmap_overlay(image, torch.rand(7, 7))  # a centre crop's map over the whole photo


@pytest.mark.parametrize("side", [1, 2, 9])
def test_saliency_overlay_of_tiny_maps(side):
    heat = torch.rand(side, side)
    assert saliency_overlay(Image.new("RGB", (20, 20)), heat).size == (20, 20)


def test_saliency_overlay_sigma_zero_is_unblurred_and_bad_sigmas_are_named():
    photo, heat = Image.new("RGB", (16, 16)), torch.rand(16, 16)
    assert saliency_overlay(photo, heat, sigma=0).tobytes() == heatmap_overlay(photo, _capped(heat)).tobytes()
    for bad in (-1, float("nan"), float("inf"), "3", True):
        with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
            saliency_overlay(photo, heat, sigma=bad)


def _capped(heat, percentile=99.0):
    return heat.clamp(max=torch.quantile(heat.flatten(), percentile / 100))


def test_save_png_creates_folders_atomically(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    assert save_png(Image.new("RGB", (3, 2), (1, 2, 3)), target) == target
    assert pixel(Image.open(target)) == (1, 2, 3)
    save_png(Image.new("RGB", (4, 4)), target)  # overwrite in place
    assert Image.open(target).size == (4, 4)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_save_png_takes_any_file_name_keeps_permissions_and_writes_through_links(tmp_path):
    import os
    import stat

    long_name = tmp_path / ("x" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".png")  # the longest allowed
    save_png(Image.new("RGB", (2, 2)), long_name)
    assert Image.open(long_name).size == (2, 2)
    private = tmp_path / "private.png"
    save_png(Image.new("RGB", (2, 2)), private)
    private.chmod(0o600)
    save_png(Image.new("RGB", (3, 3)), private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and Image.open(private).size == (3, 3)
    link = tmp_path / "link.png"
    link.symlink_to(private)
    save_png(Image.new("RGB", (5, 5)), link)
    assert link.is_symlink() and Image.open(private).size == (5, 5)


def test_save_png_failure_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        save_png(Image.new("CMYK", (3, 3)), tmp_path / "bad.png")  # PNG cannot store CMYK
    assert list(tmp_path.iterdir()) == []


def test_saliency_to_pil_caps_outliers_so_the_map_stays_visible():
    from pyfastviz.models import saliency_overlay, saliency_to_pil

    heat = torch.rand(32, 32) * 0.1
    heat[0, 0] = 1000.0  # one extreme pixel would turn a min-max map black
    grey = np.asarray(saliency_to_pil(heat, percentile=99.0))
    assert grey.shape == (32, 32, 3) and np.median(grey) > 60
    assert np.median(np.asarray(map_to_pil(heat, cmap="gray"))) < 5
    assert saliency_overlay(Image.new("RGB", (48, 48)), heat).size == (48, 48)


def test_premultiplied_la_images_are_read():
    image = Image.new("LA", (2, 2), (100, 255)).convert("La")  # PIL converts La to nothing but LA
    x = Preprocess(2, mean=(0, 0, 0), std=(1, 1, 1))(image)
    torch.testing.assert_close(x, torch.full((3, 2, 2), 100 / 255))


def test_one_nan_or_inf_is_refused_rather_than_blanking_the_picture():
    from pyfastviz.models import saliency_to_pil

    heat = torch.rand(7, 7)
    for bad in (float("nan"), float("inf")):
        broken = heat.clone()
        broken[3, 3] = bad
        for draw in (normalize_map, map_to_pil, saliency_to_pil, lambda m: heatmap_overlay(sample_image("coffee"), m),
                     lambda m: saliency_overlay(sample_image("coffee"), m)):
            with pytest.raises(ValueError, match=r"map has 1 NaN or inf value\(s\) of 49"):
                draw(broken)
        with pytest.raises(ValueError, match="gradient has 3 NaN or inf"):
            gradient_to_pil(broken.expand(3, 7, 7))
        with pytest.raises(ValueError, match="image has 3 NaN or inf"):
            to_pil(broken.expand(3, 7, 7))


def test_integer_pixels_are_refused_with_the_fix():
    pixels = torch.full((3, 4, 4), 21, dtype=torch.uint8)  # e.g. torchvision.io.read_image
    with pytest.raises(TypeError, match="got torch.uint8 .0-255 pixels: divide by 255"):
        to_pil(pixels)
    with pytest.raises(TypeError, match="got torch.uint8 .0-255 pixels: divide by 255"):
        Preprocess(4).normalize(pixels)


def test_load_batch_wants_a_list(tmp_path):
    with pytest.raises(TypeError, match="a list of files or PIL images, got one str; wrap it in a list"):
        load_batch(str(tmp_path / "a.png"), Preprocess(8))


def test_image_grid_checks_its_arguments_and_composites_on_its_background():
    tile = Image.new("RGB", (4, 4), (255, 0, 0))
    with pytest.raises(ValueError, match="ncols >= 1"):
        image_grid([tile], ncols=0)
    with pytest.raises(TypeError, match="takes PIL images"):
        image_grid(torch.zeros(2, 3, 4, 4))
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    grid = image_grid(tile for tile in [tile, clear])  # a generator is fine
    assert pixel(grid, (2 + 4 + 2 + 1, 3)) == (255, 255, 255)
    grid = image_grid([tile, clear], background=(0, 0, 0))
    assert pixel(grid, (2 + 4 + 2 + 1, 3)) == (0, 0, 0)  # the transparent cell shows the grid's black


def test_maps_may_be_numpy_and_bad_maps_or_percentiles_are_named():
    from pyfastviz.models import saliency_to_pil

    heat = np.random.default_rng(0).random((6, 6)).astype(np.float32)
    assert map_to_pil(heat).tobytes() == map_to_pil(torch.from_numpy(heat)).tobytes()
    with pytest.raises(ValueError, match=r"percentile must be a number in \[0, 100\], got 150"):
        saliency_to_pil(torch.from_numpy(heat), percentile=150)
    with pytest.raises(ValueError, match=r"non-empty \(H, W\) map, got shape \(0, 0\)"):
        heatmap_overlay(Image.new("RGB", (4, 4)), torch.zeros(0, 0))
    with pytest.raises(TypeError, match="a map must be an .* got list"):
        map_to_pil([[0.0, 1.0]])


def test_paths_may_be_bytes_and_grid_arguments_are_named(tmp_path):
    import os

    target = os.fsencode(tmp_path / "grid.png")
    save_png(Image.new("RGB", (4, 4), (9, 9, 9)), target)
    assert pixel(load_image(target)) == (9, 9, 9)
    for bad in (dict(pad=1.5), dict(pad=-1), dict(background=128), dict(background=(0, 0, 300))):
        with pytest.raises(ValueError, match="image_grid needs (pad|background)"):
            image_grid([Image.new("RGB", (2, 2))], **bad)
