"""sweep() in-process on a tiny model: the files it writes, targets, bad input, crash mid-write."""

import json
import os
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

import pyfastviz
from pyfastviz.sweep import load_sweep, store, sweep
from pyfastviz.sweep.plan import list_images
from tiny_sweep import CLASSES, PREPROCESS, TinyNet, make_folder

N = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    bad = make_folder(root, N)
    return root, bad


def run(data, out, **kwargs):
    options = {"method": "occlusion", "model": TinyNet(), "preprocess": PREPROCESS, "classes": CLASSES,
               "shard_size": 4, "batch_size": 3, "workers": 0, "progress": False, **kwargs}
    if options["method"] == "occlusion":
        options = {"window": 8, "stride": 4, **options}
    return sweep(data, out, **options)


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def direct_maps(root, paths, method, target=None):
    net = TinyNet()
    x = torch.stack([PREPROCESS(pyfastviz.models.load_image(root / p)) for p in paths])
    if method == "occlusion":
        return pyfastviz.occlusion(net, x, target, window=8, stride=4, progress=False)
    if method == "gradient":
        return pyfastviz.saliency(net, x, target, progress=False)
    return pyfastviz.guided_backprop(net, x, target, reduce="abs_max")


@pytest.mark.parametrize("method", ["occlusion", "gradient", "guided"])
def test_index_maps_and_errors(data, tmp_path, method):
    root, bad = data
    summary = run(root, tmp_path / "out", method=method, workers=1)
    assert (summary.images, summary.mapped, summary.errors, summary.resumed) == (N + 3, N, 3, 0)
    result = load_sweep(tmp_path / "out")
    assert sorted(e["path"] for e in result.errors) == bad
    reasons = {e["path"]: e["error"] for e in result.errors}
    assert "0 bytes" in reasons["part2/empty.jpg"] and "truncated" in reasons["part1/truncated.jpg"]
    paths = [row["path"] for row in result.index]
    assert paths == sorted(paths) and len(paths) == N and not set(paths) & set(bad)
    # the files pandas.read_json(lines=True) reads hold the same rows
    assert store.read_jsonl(tmp_path / "out" / "index.jsonl") == result.index
    expected = direct_maps(root, paths, method)
    with torch.no_grad():
        probs = TinyNet()(torch.stack([PREPROCESS(pyfastviz.models.load_image(root / p)) for p in paths])).softmax(1)
    for i, row in enumerate(result.index):
        heat = result.map(row["path"])
        assert heat.dtype == np.float32 and heat.shape == (32, 32)
        torch.testing.assert_close(torch.from_numpy(heat).float(), expected[i], atol=1e-3 * expected.abs().max(),
                                   rtol=1e-2)
        assert row["predicted"] == row["target"] == int(probs[i].argmax())
        assert row["probability"] == pytest.approx(float(probs[i].max()), abs=1e-6)
        assert row["predicted_name"] == CLASSES[row["predicted"]]
        stored = heat  # the statistics describe the map as stored
        assert (row["map_min"], row["map_max"]) == (stored.min(), stored.max())
        assert row["map_mean"] == pytest.approx(float(stored.mean()), rel=1e-6)
        assert divmod(int(stored.argmax()), 32) == (row["peak_row"], row["peak_col"])
    np.testing.assert_array_equal(result.map(3), result.map(result.index[3]["path"]))


def test_tiny_maps_keep_their_precision(data, tmp_path):
    """Gradients of 1e-9 logits lie below float16's smallest value: each map is stored scaled."""
    root, _ = data
    net = TinyNet()
    with torch.no_grad():
        net.head.weight.mul_(1e-9)
    run(root, tmp_path / "out", method="gradient", model=net)
    result = load_sweep(tmp_path / "out")
    paths = [row["path"] for row in result.index]
    x = torch.stack([PREPROCESS(pyfastviz.models.load_image(root / p)) for p in paths])
    expected = pyfastviz.saliency(net, x, progress=False)
    assert 0 < expected.abs().max() < 1e-8
    for i, path in enumerate(paths):
        torch.testing.assert_close(torch.from_numpy(result.map(path)), expected[i], rtol=1e-3,
                                   atol=1e-3 * float(expected[i].abs().max()))
        assert result.index[i]["map_max"] == pytest.approx(float(expected[i].max()), rel=1e-3)


class NaNForBrightCorner(TinyNet):
    """TinyNet whose output is NaN, and so its gradient, for images whose top-left pixel is bright."""

    def forward(self, x):
        bright = x[:, 0, 0, 0] > 0
        return super().forward(x * torch.where(bright, float("nan"), 1.0)[:, None, None, None])


def test_maps_with_nan_go_to_the_errors(data, tmp_path):
    root, bad = data
    run(root, tmp_path / "out", method="gradient", model=NaNForBrightCorner())
    result = load_sweep(tmp_path / "out")
    images = sorted(p for p in list_images(root)[1] if p not in bad)
    bright = [p for p in images if PREPROCESS(pyfastviz.models.load_image(root / p))[0, 0, 0] > 0]
    assert 0 < len(bright) < len(images)
    assert sorted(e["path"] for e in result.errors if "not finite" in e["error"]) == bright
    assert [row["path"] for row in result.index] == [p for p in images if p not in bright]
    assert all(np.isfinite(result.map(row["path"])).all() for row in result.index)
    assert [row["offset"] for row in result.index if row["shard"] == 0] == list(range(
        sum(row["shard"] == 0 for row in result.index)))


def test_rerun_changes_nothing_and_other_options_are_refused(data, tmp_path):
    root, _ = data
    out = tmp_path / "out"
    run(root, out)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")}
    again = run(root, out)
    assert (again.resumed, again.mapped) == (N + 3, N)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")} == before
    with pytest.raises(ValueError, match=r"window=8 there, 12 now"):
        run(root, out, window=12)
    with pytest.raises(ValueError, match="classes differ"):
        run(root, out, classes=[name.upper() for name in CLASSES])
    with pytest.raises(ValueError, match="weights differ"):
        net = TinyNet()
        torch.nn.init.zeros_(net.head.bias)
        run(root, out, model=net)
    (root / "part0" / "new.png").write_bytes((root / "part0" / "img000.png").read_bytes())
    try:
        with pytest.raises(ValueError, match=r"images=13 there, 14 now.*images differ"):
            run(root, out)
    finally:
        (root / "part0" / "new.png").unlink()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no sweep"):
        run(root, tmp_path / "other")


def test_a_replaced_image_is_refused(data, tmp_path):
    root, _ = data
    run(root, tmp_path / "out")
    image = root / "part0" / "img000.png"
    original = image.read_bytes()
    try:
        pyfastviz.models.sample_image("coffee").resize((40, 40)).save(image)
        with pytest.raises(ValueError, match="images differ"):
            run(root, tmp_path / "out")
    finally:
        image.write_bytes(original)


@pytest.mark.parametrize("options", [{}, {"method": "gradient", "samples": 2}], ids=["occlusion", "smoothgrad"])
def test_batch_size_may_change_on_resume(data, tmp_path, options):
    root, _ = data
    run(root, tmp_path / "whole", **options)
    run(root, tmp_path / "out", **options, batch_size=4)
    for done_mark in sorted((tmp_path / "out" / "shards").glob("*.json"))[1:]:  # as after a crash in shard 1
        done_mark.unlink()
    assert run(root, tmp_path / "out", **options, batch_size=1).resumed == 4
    whole, resumed = load_sweep(tmp_path / "whole"), load_sweep(tmp_path / "out")
    for row in whole.index:
        np.testing.assert_allclose(resumed.map(row["path"]).astype(np.float32),
                                   whole.map(row["path"]).astype(np.float32), atol=1e-3)


def test_smoothgrad_noise_is_drawn_per_image(tmp_path):
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (tmp_path / "copies").mkdir()
    for i in range(6):
        picture.save(tmp_path / "copies" / f"c{i}.png")
    run(tmp_path / "copies", tmp_path / "out", method="gradient", samples=2, shard_size=6)
    maps = [load_sweep(tmp_path / "out").map(f"c{i}.png") for i in range(6)]
    assert not np.array_equal(maps[0], maps[3])  # the same place in two batches of 3: other noise
    assert not np.array_equal(maps[0], maps[1])


def test_an_older_smoothgrad_sweep_is_refused(data, tmp_path):
    root, _ = data
    smooth = {"method": "gradient", "samples": 2}
    run(root, tmp_path / "out", **smooth)
    path = tmp_path / "out" / "manifest.json"
    old = json.loads(path.read_text())
    del old["noise_draws"]
    path.write_text(json.dumps({**old, "batch_size": 3}))  # as pyfastviz wrote it with one noise draw per batch
    with pytest.raises(ValueError, match=r"batch_size=3 there, None now; noise_draws='per image.*' now, not "
                                         r"recorded there\)"):
        run(root, tmp_path / "out", **smooth)


def test_preprocess_settings_are_part_of_the_manifest(data, tmp_path):
    from torchvision import transforms

    def resized(size):
        return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])

    root, _ = data
    run(root, tmp_path / "out", preprocess=resized(32))
    assert run(root, tmp_path / "out", preprocess=resized(32)).resumed == N + 3
    with pytest.raises(ValueError, match=r"preprocess='Compose\( Resize\(size=32.* there, 'Compose\( Resize\(size=40"):
        run(root, tmp_path / "out", preprocess=resized(40))


def test_a_net_from_load_model_brings_its_preprocess(data, tmp_path):
    from pyfastviz.models.zoo import PREPROCESS_ATTRIBUTE

    root, _ = data
    net = TinyNet()
    setattr(net, PREPROCESS_ATTRIBUTE, PREPROCESS)  # as load_model does
    run(root, tmp_path / "out", model=net, preprocess=None)
    assert run(root, tmp_path / "out", preprocess=PREPROCESS).resumed == N + 3  # the same manifest


def test_options_may_change_until_a_shard_is_finished(data, tmp_path):
    root, _ = data
    with pytest.raises(ValueError, match="window must be a positive int"):
        run(root, tmp_path / "out", window=0)
    assert run(root, tmp_path / "out").mapped == N
    run(root, tmp_path / "whole")
    assert files(tmp_path / "out") == files(tmp_path / "whole")


def test_crash_while_writing_resumes_to_the_same_files(data, tmp_path, monkeypatch):
    root, _ = data
    run(root, tmp_path / "whole")
    writes = []
    real = store.atomic_write

    def failing(path, payload):
        if len(writes) == 5:  # the maps of a shard written to .tmp, the rename never happens
            path.with_name(path.name + ".tmp").write_bytes(payload[: len(payload) // 2])
            raise OSError("disk gone")
        writes.append(path)
        real(path, payload)

    monkeypatch.setattr(store, "atomic_write", failing)
    with pytest.raises(OSError, match="disk gone"):
        run(root, tmp_path / "out")
    monkeypatch.setattr(store, "atomic_write", real)
    assert list((tmp_path / "out" / "shards").glob("*.tmp")) and not (tmp_path / "out" / "index.jsonl").exists()
    with pytest.raises(ValueError, match="no finished sweep"):
        load_sweep(tmp_path / "out")
    summary = run(root, tmp_path / "out")
    assert summary.resumed == 8  # shards 0 and 1 were complete
    assert files(tmp_path / "out") == files(tmp_path / "whole")


def test_targets_class_and_label_file(data, tmp_path):
    root, _ = data
    run(root, tmp_path / "two", target="class2")
    index = load_sweep(tmp_path / "two").index
    assert {row["target"] for row in index} == {2} and {row["target_name"] for row in index} == {"class2"}
    paths = [row["path"] for row in index]
    torch.testing.assert_close(torch.stack([torch.from_numpy(load_sweep(tmp_path / "two").map(p)).float()
                                            for p in paths]), direct_maps(root, paths, "occlusion", 2),
                               atol=2e-5, rtol=1e-2)
    labels = tmp_path / "labels.tsv"
    labelled = paths[:-1]  # the last image has no label: an error
    labels.write_text("# path<TAB>class\n" + "".join(f"{p}\t{'class4' if i % 2 else i % 5}\n"
                                                      for i, p in enumerate(labelled)))
    with pytest.warns(UserWarning, match=r"no class for 4 of the 13 images \(first: 'part0/text.png'\)"):
        run(root, tmp_path / "labels", target=labels)
    result = load_sweep(tmp_path / "labels")
    assert [row["target"] for row in result.index] == [4 if i % 2 else i % 5 for i in range(len(labelled))]
    assert {"path": paths[-1], "error": "no class for it in the label file"}.items() <= \
        next(e for e in result.errors if e["path"] == paths[-1]).items()
    assert json.loads((tmp_path / "labels" / "manifest.json").read_text())["target"].startswith("label file sha256")


def test_progress_bar_can_be_silenced(data, tmp_path, capsys):
    root, _ = data
    run(root, tmp_path / "quiet")
    assert capsys.readouterr().err == ""
    run(root, tmp_path / "shown", progress=True)
    bar = capsys.readouterr().err
    assert "sweep occlusion x1" in bar and "13/13" in bar and "errors=3" in bar
    assert re.search(r"\dimg/s|\ds/img", bar)  # the rate (tqdm shows s/img below 1 img/s)


def test_list_file_and_model_left_as_found(data, tmp_path):
    root, _ = data
    listing = root / "list.txt"
    listing.write_text("part1/img001.jpg\npart0/img000.png\n\npart2/empty.jpg\n")
    net = TinyNet().train()
    net.head.weight.requires_grad_(False)
    try:
        summary = run(listing, tmp_path / "out", method="gradient", model=net)
    finally:
        listing.unlink()
    assert net.training and all(m.training for m in net.modules())
    assert not net.head.weight.requires_grad and net.head.bias.requires_grad
    result = load_sweep(tmp_path / "out")
    assert [row["path"] for row in result.index] == ["part0/img000.png", "part1/img001.jpg"]
    assert [e["path"] for e in result.errors] == ["part2/empty.jpg"] and summary.errors == 1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "lrp"}, ValueError, "method must be one of"),
    ({"samples": 4}, ValueError, "samples= applies to method='gradient'"),
    ({"method": "gradient", "window": 8, "stride": None}, ValueError, "window= applies to method='occlusion'"),
    ({"shard_size": 0}, ValueError, "shard_size must be an int >= 1"),
    ({"batch_size": 2.5}, ValueError, "batch_size must be an int >= 1"),
    ({"workers": -1}, ValueError, "workers must be an int >= 0"),
    ({"preprocess": None}, TypeError, "preprocess must be a callable"),
    ({"model": "resnet"}, ValueError, "unknown model name"),
    ({"weights": "w.pt"}, ValueError, "weights= applies to a model given by name"),
    ({"device": "meta"}, ValueError, "move the model there first"),
    ({"target": "dog"}, ValueError, "not one of the model's class names"),
    ({"target": 7}, ValueError, r"out of range \[0, 5\)"),
    ({"target": 1.5}, TypeError, "target must be None"),
    # options that fail on every image fail before the manifest would lock the folder to them
    ({"window": 64}, ValueError, r"window \(3, 64, 64\) is larger than the image \(3, 32, 32\)"),
    ({"score": "loss"}, ValueError, "score must be one of"),
    ({"method": "gradient", "noise": -1.0}, ValueError, "noise must be a finite"),
])
def test_bad_arguments(data, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        run(data[0], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_data(tmp_path):
    with pytest.raises(ValueError, match="neither a folder"):
        run(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        run(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "list.txt").write_text("a.png\nb.png\na.png\n")
    with pytest.raises(ValueError, match="lists 'a.png' more than once"):
        run(tmp_path / "list.txt", tmp_path / "out")


def test_bad_paths_and_integer_like_targets(data, tmp_path):
    root, _ = data
    with pytest.raises(TypeError, match="data must be a path"):
        run(None, tmp_path / "out")
    with pytest.raises(TypeError, match="out must be a path"):
        run(root, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out=.*file' is a file; give a folder"):
        run(root, tmp_path / "file")
    (tmp_path / "labels.tsv").write_text("part0/img000.png\t1\n")
    with pytest.raises(ValueError, match=r"not one of the model's class names; a label file is given as "
                                         r"pathlib.Path\('.*labels.tsv'\)"):
        run(root, tmp_path / "out", target=str(tmp_path / "labels.tsv"))
    with pytest.raises(ValueError, match=r"target class -1 is out of range"):
        run(root, tmp_path / "out", target="-1")
    run(root, tmp_path / "out", target=np.int64(2))
    assert run(root, tmp_path / "out", target=torch.tensor(2)).resumed == run(root, tmp_path / "out", target=2).resumed
    assert load_sweep(tmp_path / "out").manifest["target"] == "class 2"


def test_label_classes_are_checked_before_the_folder_is_locked(data, tmp_path):
    root, _ = data
    paths = list_images(root)[1]
    labels = tmp_path / "labels.tsv"
    labels.write_text("".join(f"{p}\t{9 if i == len(paths) - 1 else 1}\n" for i, p in enumerate(paths)))
    with pytest.raises(ValueError, match=rf"labels.tsv', line {len(paths)}: target class 9 is out of range \[0, 5\)"):
        run(root, tmp_path / "out", target=labels, classes=None)  # the class count comes from the model
    with pytest.raises(ValueError, match=r"target class 5 is out of range \[0, 5\)"):
        run(root, tmp_path / "out", target=5, classes=None)
    assert not (tmp_path / "out").exists()
    labels.write_text("".join(f"data/{p}\t1\n" for p in paths))  # written relative to the parent folder
    with pytest.raises(ValueError, match=r"names none of the 13 images \(e.g. 'part0/img000.png'\)"):
        run(root, tmp_path / "out", target=labels)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, numpy_like, python", [
    ("baseline", np.float32(0.5), 0.5),
    ("baseline", torch.tensor([-1.0, -0.5, 0.0]), [-1.0, -0.5, 0.0]),
    ("baseline", (-1.0, -0.5, 0.0), [-1.0, -0.5, 0.0]),
    ("window", np.int64(8), 8),
])
def test_numpy_and_tensor_options_are_recorded_as_numbers(data, tmp_path, name, numpy_like, python):
    root, _ = data
    run(root, tmp_path / "out", **{name: numpy_like})
    assert load_sweep(tmp_path / "out").manifest[name] == python
    assert run(root, tmp_path / "out", **{name: python}).resumed == N + 3


def test_an_image_sized_baseline_is_refused_by_name(data, tmp_path):
    with pytest.raises(TypeError, match=r"baseline= must be a number or one value per channel, got a Tensor of "
                                        r"shape \(3, 32, 32\)"):
        run(data[0], tmp_path / "out", baseline=torch.zeros(3, 32, 32))
    assert not (tmp_path / "out").exists()


def test_images_preprocess_gives_another_size_go_to_the_errors(data, tmp_path):
    from torchvision import transforms

    root, bad = data
    keep_aspect = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])  # no CenterCrop
    summary = run(root, tmp_path / "out", method="gradient", preprocess=keep_aspect)
    result = load_sweep(tmp_path / "out")
    first = result.index[0]["path"]
    shape = tuple(keep_aspect(pyfastviz.models.load_image(root / first)).shape)
    assert {result.map(row["path"]).shape for row in result.index} == {shape[1:]}
    resized = [e for e in result.errors if e["path"] not in bad]
    assert resized and summary.mapped + len(resized) == N
    assert all(re.fullmatch(rf"preprocess gave it size \(3, \d+, \d+\), not {re.escape(str(shape))} as for the "
                            r"first image: it must return one size \(e.g. add a CenterCrop\)", e["error"])
               for e in resized)


def test_byte_order_marks_and_undecodable_file_names(data, tmp_path):
    import shutil

    root, bad = data
    paths = [p for p in list_images(root)[1] if p not in bad]
    listing, labels = tmp_path / "list.txt", tmp_path / "labels.tsv"
    for path in paths:
        (tmp_path / path).parent.mkdir(exist_ok=True)
        shutil.copy(root / path, tmp_path / path)
    listing.write_text("\ufeff" + "\n".join(paths) + "\n", encoding="utf-8")  # as Notepad saves it
    labels.write_text("\ufeff" + "".join(f"{p}\t1\n" for p in paths), encoding="utf-8")
    summary = run(listing, tmp_path / "out", target=labels)
    assert (summary.mapped, summary.errors) == (N, 0)
    latin1 = root / "part0" / "img000.png"
    shutil.copy(latin1, os.path.join(os.fsencode(tmp_path / "part0"), b"caf\xe9.png"))
    run(tmp_path / "part0", tmp_path / "named")
    assert "caf\udce9.png" in [row["path"] for row in load_sweep(tmp_path / "named").index]
    np.testing.assert_array_equal(load_sweep(tmp_path / "named").map("caf\udce9.png"),
                                  load_sweep(tmp_path / "named").map("img000.png"))
    assert run(tmp_path / "part0", tmp_path / "named").resumed == len(list((tmp_path / "part0").iterdir()))


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        store.atomic_write(tmp_path / "index.jsonl", b"rows")
    assert list(tmp_path.iterdir()) == []


def test_summary_rate_and_occlusion_progress(data, tmp_path, capsys):
    from pyfastviz.sweep import SweepSummary

    slow = SweepSummary(tmp_path, 4, 4, 0, 0, 10.0, 9.0, 8.0, 0, 1)
    assert str(slow).endswith(", 2.5 s/image") and str(SweepSummary(tmp_path, 40, 40, 0, 0, 10.0, 9.0, 8.0, 0, 1)
                                                        ).endswith(", 4.0 images/s")
    run(data[0], tmp_path / "out", progress=True)
    assert re.search(r"(^|\r)occlusion: .*pos", capsys.readouterr().err)  # its own bar, under the sweep's


def test_hidden_folders_are_not_swept_and_linked_ones_are(tmp_path):
    data = tmp_path / "data"
    (data / ".thumbnails").mkdir(parents=True)
    (tmp_path / "more").mkdir()
    picture = pyfastviz.models.sample_image("coffee").resize((8, 8))
    for path in (data / "a.png", data / ".thumbnails" / "a.png", tmp_path / "more" / "b.png"):
        picture.save(path)
    (data / "more").symlink_to(tmp_path / "more", target_is_directory=True)
    assert list_images(data) == (data, ["a.png", "more/b.png"])


class StandardisePerImage:
    """PREPROCESS, then each channel divided by its own spread: 0/0 = NaN for a flat image."""

    def __call__(self, image):
        x = PREPROCESS(image)
        return (x - x.mean((1, 2), keepdim=True)) / x.std((1, 2), keepdim=True)


class RefuseWide:
    """PREPROCESS, but it raises on images wider than 50 px."""

    def __call__(self, image):
        if image.width > 50:
            raise RuntimeError("too wide for me")
        return PREPROCESS(image)


@pytest.mark.parametrize("preprocess, reason", [(StandardisePerImage(), "preprocess gave it NaN or inf values"),
                                                (RefuseWide(), "preprocess failed on it: RuntimeError: too wide"),
                                                (lambda image: image, "preprocess returned Image, not a")])
def test_images_preprocess_fails_on_go_to_the_errors(tmp_path, preprocess, reason):
    from PIL import Image

    data = tmp_path / "data"
    make_folder(data, 6)
    Image.new("RGB", (60, 40), (128, 128, 128)).save(data / "part0" / "flat.png")
    summary = run(data, tmp_path / "out", method="gradient", preprocess=preprocess)
    result = load_sweep(tmp_path / "out")
    failed = [e["path"] for e in result.errors if e["error"].startswith(reason)]
    assert failed and summary.mapped + summary.errors == summary.images == 10
    if isinstance(preprocess, StandardisePerImage):
        assert failed == ["part0/flat.png"]


class Overflowing(TinyNet):
    """TinyNet whose logits overflow float32 to inf (its softmax and gradients: NaN)."""

    def forward(self, x):
        return super().forward(x) * 1e38 * 1e38


def test_a_model_whose_output_overflows_sends_its_images_to_the_errors(data, tmp_path):
    root, bad = data
    summary = run(root, tmp_path / "out", method="gradient", model=Overflowing())
    result = load_sweep(tmp_path / "out")
    assert summary.mapped == 0 and sorted(e["path"] for e in result.errors if "not finite" in e["error"]) == \
        sorted(set(list_images(root)[1]) - set(bad))
    assert "NaN" not in (tmp_path / "out" / "index.jsonl").read_text()


def test_maps_whose_scale_lies_beyond_float32_are_kept(data, tmp_path):
    """Maps of about 2e38 < float32's largest 3.4e38 need the scale 2^128, which only float64 holds."""
    root, _ = data
    net = TinyNet().double()
    with torch.no_grad():
        net.head.weight.mul_(4e41)
        net.head.bias.zero_()
    run(root, tmp_path / "out", method="gradient", model=net, target=0)
    result = load_sweep(tmp_path / "out")
    assert len(result.index) == N and 2.0**128 in {row["map_scale"] for row in result.index}
    paths = [row["path"] for row in result.index]
    x = torch.stack([PREPROCESS(pyfastviz.models.load_image(root / p)) for p in paths]).double()
    expected = pyfastviz.saliency(net, x, 0, progress=False)
    for i, path in enumerate(paths):
        torch.testing.assert_close(torch.from_numpy(result.map(path)).double(), expected[i], rtol=1e-3,
                                   atol=1e-3 * float(expected[i].abs().max()))


def test_classes_that_do_not_fit_the_model_are_refused_before_anything_is_written(data, tmp_path):
    root, _ = data
    with pytest.raises(ValueError, match="classes has 2 names but the model gives 5 outputs"):
        run(root, tmp_path / "out", classes=["a", "b"])
    assert not (tmp_path / "out").exists()


def test_a_folder_of_unreadable_files_with_a_module_and_no_classes(tmp_path):
    (tmp_path / "bad").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "bad" / name).write_bytes(b"not an image")
    summary = run(tmp_path / "bad", tmp_path / "out", classes=None)
    assert (summary.mapped, summary.errors) == (0, 2)


class TanhNet(TinyNet):
    """TinyNet's weights, its ReLUs replaced by Tanh: the same state_dict, another model."""

    def __init__(self):
        super().__init__()
        self.features[1], self.features[3] = torch.nn.Tanh(), torch.nn.Tanh()


def test_another_model_structure_or_preprocess_behaviour_is_refused(data, tmp_path):
    root, _ = data
    run(root, tmp_path / "out")
    assert TanhNet().state_dict().keys() == TinyNet().state_dict().keys()
    with pytest.raises(ValueError, match="model_structure differ"):
        run(root, tmp_path / "out", model=TanhNet())
    factor = [1.0]
    run(root, tmp_path / "closure", preprocess=lambda image: PREPROCESS(image) * factor[0])
    factor[0] = 2.0  # the same function, another behaviour
    with pytest.raises(ValueError, match="preprocessed_first_image differ"):
        run(root, tmp_path / "closure", preprocess=lambda image: PREPROCESS(image) * factor[0])


def test_maps_of_a_sweep_from_before_map_scale_are_read_unscaled(data, tmp_path):
    root, _ = data
    run(root, tmp_path / "out")
    result = load_sweep(tmp_path / "out")
    row = dict(result.index[0])
    scale = row.pop("map_scale")
    stored = np.load(tmp_path / "out" / "shards" / "000000.npy")[row["offset"]]
    old = replace(result, index=[row])
    np.testing.assert_array_equal(old.map(0), stored.astype(np.float32))
    np.testing.assert_array_equal(result.map(0), stored.astype(np.float32) * np.float32(scale))


def test_a_label_file_giving_one_image_two_classes_is_refused(data, tmp_path):
    root, _ = data
    labels = tmp_path / "labels.tsv"
    labels.write_text("part0/img000.png\t1\npart0/img003.jpg\t2\npart0/img000.png\t1\npart0/img000.png\t4\n")
    with pytest.raises(ValueError, match=r"line 4: 'part0/img000.png' has class 1 on an earlier line, 4 here"):
        run(root, tmp_path / "out", target=labels)


def test_a_list_file_naming_one_image_two_ways_is_refused(data, tmp_path):
    root, _ = data
    listing = tmp_path / "list.txt"
    listing.write_text(f"{root / 'part0' / 'img000.png'}\n{os.path.relpath(root / 'part0' / 'img000.png', tmp_path)}\n")
    with pytest.raises(ValueError, match=r"lists '.*img000.png' \(also as '.*img000.png'\) more than once"):
        run(listing, tmp_path / "out")


def test_stray_files_in_the_shards_folder_are_left_alone(data, tmp_path):
    root, _ = data
    run(root, tmp_path / "whole")
    out = tmp_path / "out"
    run(root, out)
    shards = out / "shards"
    for stray in ("._000001.json", "000001 (copy).json", "notes.npy"):
        (shards / stray).write_bytes((shards / "000001.json").read_bytes())
    (shards / "000002.json").unlink()  # as after a crash
    (out / "index.jsonl").unlink()
    assert run(root, out).resumed == N + 3 - 4
    assert {name: data for name, data in files(out).items() if "copy" not in name and "._" not in name
            and "notes" not in name} == files(tmp_path / "whole")


def test_results_by_path_object_and_a_short_repr(data, tmp_path):
    from pathlib import PurePosixPath

    root, _ = data
    run(root, tmp_path / "out")
    result = load_sweep(tmp_path / "out")
    np.testing.assert_array_equal(result.map(PurePosixPath("part0/img000.png")), result.map("part0/img000.png"))
    assert repr(result) == f"Sweep({str(tmp_path / 'out')!r}: method='occlusion', {N} mapped, 3 errors)"


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"No space left on device \(writing .*shard.json\)"):
        store.atomic_write(tmp_path / "shard.json", b"{}")
    assert list(tmp_path.iterdir()) == []
