"""A static HTML gallery: titled sections of captioned figures, in rows, in one self-contained
`index.html` (inline CSS, no scripts, no external URLs), written atomically; a whole gallery
folder built aside and swapped into place (`staged_folder`)."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Sequence
from urllib.parse import quote, unquote


FIGURE_WIDTH = 224  # CSS px: the width a figure is shown at unless it asks for more


@dataclass
class Figure:
    """An image file, by its path relative to the page's folder, its caption, and the width it is
    shown at (CSS px; narrower on a narrow screen)."""

    path: str
    caption: str
    width: int = FIGURE_WIDTH


@dataclass
class Section:
    """A titled group of figures with a paragraph of explanation. Each row of figures starts on
    a new line (e.g. one photo and its maps), wrapping only on a narrow screen."""

    title: str
    text: str
    rows: list[list[Figure]] = field(default_factory=list)

    @property
    def figures(self) -> list[Figure]:
        """Every figure, row after row."""
        return [figure for row in self.rows for figure in row]


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em;
       color: #222; background: #fff; line-height: 1.4; }
nav a { margin-right: 1em; }
section { margin-top: 2.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; margin-bottom: 1em; }
figure { margin: 0; max-width: 100%; }
figure img { width: 100%; height: auto; image-rendering: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; }
"""


def _slug(title: str, index: int) -> str:
    return f"s{index}-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section")


def _render(title: str, sections: Sequence[Section], intro: str) -> str:
    esc = html.escape
    slugs = [_slug(s.title, i) for i, s in enumerate(sections)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{esc(intro)}</p>")
    links = "".join(f'<a href="#{slug}">{esc(s.title)}</a>' for s, slug in zip(sections, slugs))
    parts.append(f"<nav>{links}</nav>")
    for section, slug in zip(sections, slugs):
        parts += [f'<section id="{slug}">', f"<h2>{esc(section.title)}</h2>"]
        if section.text:
            parts.append(f"<p>{esc(section.text)}</p>")
        for row in section.rows:
            parts.append('<div class="figures">')
            for fig in row:
                src = esc(quote(Path(fig.path).as_posix()))
                parts.append(
                    f'<figure style="width: {int(fig.width)}px"><img src="{src}" alt="{esc(fig.caption)}">'
                    f"<figcaption>{esc(fig.caption)}</figcaption></figure>"
                )
            parts.append("</div>")
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_gallery(
    out_dir: str | os.PathLike, title: str, sections: Sequence[Section], intro: str = ""
) -> Path:
    """Write `out_dir/index.html` (folders created) showing `sections` in order; returns its path.
    Figure paths must be relative to `out_dir`. A temp file is renamed into place, so a reader
    never sees a half-written page."""
    for section in sections:
        if not all(isinstance(row, (list, tuple)) for row in section.rows):
            raise TypeError(f"section {section.title!r}: rows must be lists of Figures, one list a row")
        for fig in section.figures:
            if Path(fig.path).is_absolute():
                raise ValueError(f"figure path {fig.path!r} must be relative to the page folder")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    tmp = out_dir / f".index.html.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(_render(title, sections, intro))
        os.replace(tmp, index)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return index


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike):
    """Yields a new sibling folder to build a gallery in. When the block succeeds it replaces
    out_dir (an earlier gallery's files all go); when it fails it is deleted and out_dir is left
    as it was: never a page of one run over pictures of another. out_dir must be missing,
    empty, or a gallery (it holds index.html): a folder of other files is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"out={str(out_dir)!r} is a file: give a folder")
        if any(out_dir.iterdir()) and not (out_dir / "index.html").is_file():
            raise ValueError(f"out={str(out_dir)!r} holds files but no gallery (no index.html); choose a new or "
                             "empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()  # the umask's permissions, as out_dir would get
    try:
        yield staging
        old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.old") if out_dir.exists() else None
        if old is not None:
            os.replace(out_dir, old)
        try:
            os.replace(staging, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old, out_dir)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _ImgSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            src = dict(attrs).get("src")
            if src:
                self.sources.append(src)


def referenced_images(index_html: str | os.PathLike) -> list[Path]:
    """The files the page's `<img>` tags point at, in page order, resolved against its folder."""
    index_html = Path(index_html)
    parser = _ImgSources()
    parser.feed(index_html.read_text(encoding="utf-8"))
    parser.close()
    return [index_html.parent / unquote(src) for src in parser.sources]
