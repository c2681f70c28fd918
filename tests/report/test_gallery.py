"""The HTML gallery writer: escaping, atomic writes, and reading the image list back."""

import os

import pytest

from pyfastviz.report.gallery import Figure, Section, referenced_images, write_gallery


def test_text_is_escaped_and_images_have_alt_text(tmp_path):
    nasty = '<script>alert("x")</script> & co'
    sections = [Section(nasty, nasty, [Figure("a.png", nasty)])]
    page = write_gallery(tmp_path, nasty, sections, intro=nasty).read_text(encoding="utf-8")
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") == 8  # title, h1, intro, nav, h2, text, alt, figcaption
    assert 'alt="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"' in page
    assert "http://" not in page and "https://" not in page


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    out = tmp_path / "new" / "folder"
    index = write_gallery(out, "first", [Section("s", "", [Figure("x.png", "x")])])
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
    sections = [Section("one", "", [Figure(p, p) for p in paths[:2]]),
                Section("two", "t", [Figure(p, p) for p in paths[2:]])]
    index = write_gallery(tmp_path, "t", sections)
    assert referenced_images(index) == [tmp_path / p for p in paths]


def test_absolute_figure_paths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="relative"):
        write_gallery(tmp_path, "t", [Section("s", "", [Figure(str(tmp_path / "a.png"), "a")])])
