"""The HTML gallery writer: escaping, atomic writes, and reading the image list back."""

import os
import re

import pytest

from pyfastviz.report.gallery import Figure, Section, referenced_images, staged_folder, write_gallery


def test_text_is_escaped_and_images_have_alt_text(tmp_path):
    nasty = '<script>alert("x")</script> & co'
    sections = [Section(nasty, nasty, [[Figure("a.png", nasty)]])]
    page = write_gallery(tmp_path, nasty, sections, intro=nasty).read_text(encoding="utf-8")
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") == 8  # title, h1, intro, nav, h2, text, alt, figcaption
    assert 'alt="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"' in page
    assert "http://" not in page and "https://" not in page


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    out = tmp_path / "new" / "folder"
    index = write_gallery(out, "first", [Section("s", "", [[Figure("x.png", "x")]])])
    assert index == out / "index.html"
    before = index.read_text(encoding="utf-8")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_gallery(out, "second", [])
    assert index.read_text(encoding="utf-8") == before  # the old page is intact
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # the temp file was removed


def test_referenced_images_round_trip(tmp_path):
    paths = ["a.png", "sub/b c.png", "sub/d&e#1.png", "ünï.png"]
    sections = [Section("one", "", [[Figure(p, p) for p in paths[:2]]]),
                Section("two", "t", [[Figure(p, p) for p in paths[2:3]], [Figure(paths[3], paths[3])]])]
    index = write_gallery(tmp_path, "t", sections)
    assert referenced_images(index) == [tmp_path / p for p in paths]


def test_absolute_figure_paths_and_flat_rows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="relative"):
        write_gallery(tmp_path, "t", [Section("s", "", [[Figure(str(tmp_path / "a.png"), "a")]])])
    with pytest.raises(TypeError, match="rows must be lists of Figures"):
        write_gallery(tmp_path, "t", [Section("s", "", [Figure("a.png", "a")])])
    assert not (tmp_path / "index.html").exists()


def test_a_staged_gallery_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    out = tmp_path / "gallery"
    with staged_folder(out) as staging:
        (staging / "old.png").write_bytes(b"old")
        write_gallery(staging, "first", [])
    with pytest.raises(RuntimeError, match="section failed"):
        with staged_folder(out) as staging:
            (staging / "new.png").write_bytes(b"new")
            raise RuntimeError("section failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]  # no staging folder left
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "old.png"] and "first" in (out / "index.html").read_text()
    with staged_folder(out) as staging:
        write_gallery(staging, "second", [])
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # the first run's picture went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]


def test_a_folder_of_other_files_is_not_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds files but no gallery"):
        with staged_folder(tmp_path / "mine"):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        with staged_folder(tmp_path / "file"):
            pass
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_failed_demo_run_leaves_the_last_gallery(tmp_path, monkeypatch):
    from PIL import Image

    from pyfastviz.report import demo

    def pictures(ctx):
        return Section("Pictures", "", [[ctx.save(Image.new("RGB", (4, 4), "red"), "photos/red.png", "red")]])

    def broken(ctx):
        raise RuntimeError("section failed")

    monkeypatch.setattr(demo, "SECTIONS", [pictures])
    index = demo.run_demo(tmp_path / "out", progress=False)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert referenced_images(index) == [tmp_path / "out" / "photos" / "red.png"]
    monkeypatch.setattr(demo, "SECTIONS", [pictures, broken])
    with pytest.raises(RuntimeError, match="section failed"):
        demo.run_demo(tmp_path / "out", progress=False)
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_every_section_runs_on_the_demo_device(tmp_path, monkeypatch):
    from pyfastviz.report import demo

    seen = []

    def where(ctx):
        seen.append((next(ctx.model.net.parameters()).device, ctx.inputs.device))
        return Section("Devices", "", [])

    monkeypatch.setattr(demo, "SECTIONS", [where])
    demo.run_demo(tmp_path / "out", progress=False, device="cpu")
    monkeypatch.setattr(demo.torch.cuda, "is_available", lambda: False)
    demo.run_demo(tmp_path / "out", progress=False)  # default: CUDA when there is one
    demo.run_demo(tmp_path / "out", progress=False, device="meta")  # a device given is used
    assert seen == [(demo.torch.device("cpu"),) * 2] * 2 + [(demo.torch.device("meta"),) * 2]


def test_each_row_is_its_own_line_and_figures_keep_their_width(tmp_path):
    rows = [[Figure("a.png", "a"), Figure("b.png", "b")], [Figure("wide.png", "wide", width=704)]]
    page = write_gallery(tmp_path, "t", [Section("s", "", rows)]).read_text(encoding="utf-8")
    lines = re.findall(r'<div class="figures">(.*?)</div>', page, re.S)
    assert [re.findall(r'src="([^"]+)"', line) for line in lines] == [["a.png", "b.png"], ["wide.png"]]
    assert re.findall(r'<figure style="width: (\d+)px">', page) == ["224", "224", "704"]
    assert Section("s", "", rows).figures == rows[0] + rows[1]
