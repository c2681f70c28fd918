"""The image-folder reader: recursive, sorted, bad files reported and skipped."""

import warnings

import pytest
import torch
from PIL import Image

from pyfastviz.data import ImageFolder, find_image_files, image_loader
from pyfastviz.models import sample_image
from pyfastviz.models.zoo import Preprocess


@pytest.fixture
def folder(tmp_path):
    """Four good images in nested folders (JPEG, PNG, grayscale BMP, RGBA PNG) and three bad files."""
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    cat = sample_image("chelsea").resize((64, 48))
    cat.save(tmp_path / "b" / "cat.jpg")
    cat.save(tmp_path / "a.png")
    cat.convert("L").save(tmp_path / "b" / "deeper" / "grey.bmp")
    cat.convert("RGBA").save(tmp_path / "c.PNG")
    cat.save(tmp_path / "full.jpg")
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "full.jpg").unlink()
    (tmp_path / "b" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image suffix: ignored")
    return tmp_path


def test_recursive_sorted_and_bad_files_reported(folder):
    with pytest.warns(RuntimeWarning, match="skipped 3 unreadable"):
        dataset = ImageFolder(folder)
    assert [p.relative_to(folder).as_posix() for p in dataset.paths] == [
        "a.png", "b/cat.jpg", "b/deeper/grey.bmp", "c.PNG"]
    skipped = {p.relative_to(folder).as_posix(): reason for p, reason in dataset.skipped}
    assert sorted(skipped) == ["b/truncated.jpg", "empty.jpg", "text.png"]
    assert "0 bytes" in skipped["empty.jpg"]
    assert "truncated" in skipped["b/truncated.jpg"]
    image, index = dataset[2]
    assert index == 2 and image.mode == "RGB" and image.size == (64, 48)


def test_extensions_filter(folder):
    with pytest.warns(RuntimeWarning, match="text.png"):
        dataset = ImageFolder(folder, extensions=["png"])
    assert [p.name for p in dataset.paths] == ["a.png", "c.PNG"]
    assert [p.name for p, _ in dataset.skipped] == ["text.png"]
    with pytest.raises(TypeError, match="extensions"):
        ImageFolder(folder, extensions=".png")


def test_preprocessed_items_and_loader(folder):
    with pytest.warns(RuntimeWarning):
        dataset = ImageFolder(folder, preprocess=Preprocess(32))
    x, index = dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and index == 0
    batches = list(image_loader(dataset, batch_size=3))
    assert [tuple(b.shape) for b, _ in batches] == [(3, 3, 32, 32), (1, 3, 32, 32)]
    assert torch.cat([i for _, i in batches]).tolist() == [0, 1, 2, 3]
    assert torch.equal(batches[0][0][0], x)


def test_bad_arguments_name_themselves(folder, tmp_path):
    with pytest.raises(ValueError, match="root="):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(TypeError, match="preprocess must be callable"):
        ImageFolder(folder, preprocess=5)
    with pytest.warns(RuntimeWarning):
        raw = ImageFolder(folder)
    with pytest.raises(ValueError, match="preprocess="):
        image_loader(raw)
    with pytest.warns(RuntimeWarning):
        dataset = ImageFolder(folder, preprocess=Preprocess(32))
    with pytest.raises(ValueError, match="batch_size"):
        image_loader(dataset, batch_size=0)


def test_empty_folder_is_an_empty_dataset(tmp_path):
    dataset = ImageFolder(tmp_path)
    assert len(dataset) == 0 and dataset.skipped == []
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    assert len(ImageFolder(tmp_path)) == 1


def test_formats_pil_can_only_save_are_not_scanned(tmp_path):
    picture = Image.new("RGB", (8, 8), "red")
    picture.save(tmp_path / "doc.pdf")  # PIL writes PDF and Palm files but cannot read them
    picture.convert("1").save(tmp_path / "icon.palm")
    picture.save(tmp_path / "stereo.mpo", save_all=True, append_images=[picture])  # read by PIL's JPEG opener
    picture.save(tmp_path / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = ImageFolder(tmp_path)
    assert [p.name for p in dataset.paths] == ["stereo.mpo", "x.png"] and dataset.skipped == []


def test_checking_shows_a_progress_bar_unless_silenced(folder, capsys):
    with pytest.warns(RuntimeWarning):
        ImageFolder(folder)
    assert "checking images" in capsys.readouterr().err
    with pytest.warns(RuntimeWarning):
        ImageFolder(folder, progress=False)
    assert capsys.readouterr().err == ""


def test_hidden_entries_are_left_out_and_folder_links_followed_once(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    for folder in (data / "a", data / ".ipynb_checkpoints", elsewhere):
        folder.mkdir(parents=True)
    picture = sample_image("coffee").resize((8, 8))
    for path in (data / "a" / "x.png", data / ".ipynb_checkpoints" / "x.png", data / "a" / "._x.png",
                 elsewhere / "y.png"):
        picture.save(path, format="PNG")
    (data / "linked").symlink_to(elsewhere, target_is_directory=True)
    (data / "zlinked").symlink_to(elsewhere, target_is_directory=True)  # a second way to the same folder
    (data / "a" / "loop").symlink_to(data, target_is_directory=True)  # a link back up the tree
    found = [p.relative_to(data).as_posix() for p in find_image_files(data)]
    assert found == ["a/x.png", "linked/y.png"]
    assert [p.relative_to(data).as_posix() for p in ImageFolder(data, progress=False).paths] == found


def test_a_linked_folder_keeps_its_real_path_and_is_listed_once(tmp_path):
    picture = sample_image("coffee").resize((8, 8))
    for folder in (tmp_path / "data" / "sub" / "deeper", tmp_path / "outside" / "inner"):
        folder.mkdir(parents=True)
    picture.save(tmp_path / "data" / "sub" / "deeper" / "a.png")
    picture.save(tmp_path / "outside" / "inner" / "b.png")
    (tmp_path / "data" / "alink").symlink_to(tmp_path / "data" / "sub")  # sorts before its real folder
    (tmp_path / "data" / "inner_link").symlink_to(tmp_path / "outside" / "inner")  # listed by the next link too
    (tmp_path / "data" / "outer_link").symlink_to(tmp_path / "outside")
    found = [p.relative_to(tmp_path / "data").as_posix() for p in find_image_files(tmp_path / "data")]
    assert found == ["inner_link/b.png", "sub/deeper/a.png"]


def test_an_unreadable_folder_is_warned_about(tmp_path, monkeypatch):
    import os

    for name in ("open", "locked"):
        (tmp_path / name).mkdir()
        sample_image("coffee").resize((8, 8)).save(tmp_path / name / "a.png")
    scandir = os.scandir

    def refuse_locked(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    with pytest.warns(RuntimeWarning, match=r"cannot read folder '.*locked' \(Permission denied\)"):
        found = find_image_files(tmp_path)
    assert found == [tmp_path / "open" / "a.png"]
