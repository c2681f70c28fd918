"""The quick demo gallery, built once: every image it shows exists and decodes, it has a
section per technique, and headless Chromium loads every image without a console error, each
row of figures on one line and no picture shown smaller than it is."""

import html
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from pyfastviz.report import referenced_images, run_demo

pytestmark = pytest.mark.slow

SECTION_TITLES = ["Saliency by backprop (vanilla gradient)", "Guided backprop", "Saliency by occlusion",
                  "Images by gradient ascent", "Feature inversion and DeepDream", "Texture synthesis and style transfer",
                  "Fast neural style", "Looking inside the model"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo") / "out", progress=False)


def test_every_referenced_image_exists_decodes_and_is_not_blank(index):
    images = referenced_images(index)
    assert len(images) > 20
    for path in images:
        assert path.is_file(), f"{path} is referenced but missing"
        with Image.open(path) as image:
            image.load()
            assert image.width > 0 and image.height > 0
            assert len(set(image.convert("L").getextrema())) == 2, f"{path.name} is a constant image"
    assert set(index.parent.rglob("*.png")) == set(images), "every written image is shown, once each"


def test_page_has_a_section_per_technique(index):
    page = index.read_text(encoding="utf-8")
    titles = [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", page)]
    assert titles == SECTION_TITLES


# Injected into a copy of the page only: records console.error calls, uncaught errors and failed
# resource loads, then on window load writes what it found into <pre id="check">, with the rows of
# figures that wrapped onto a second line and the images shown narrower than their own width.
_CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push("error: " + (e.message || (e.target && e.target.src) || "unknown"));
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                     .map(function (i) { return i.getAttribute("src"); });
  var wrapped = Array.prototype.slice.call(document.querySelectorAll(".figures")).filter(function (row) {
    return Array.prototype.some.call(row.children, function (f) { return f.offsetTop !== row.children[0].offsetTop; });
  }).map(function (row) { return row.querySelector("img").getAttribute("src"); });
  var shrunk = images.filter(function (i) { return i.clientWidth < i.naturalWidth; })
                     .map(function (i) { return i.getAttribute("src"); });
  var pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify({images: images.length, broken: broken, errors: window.__errors,
                                    wrapped: wrapped, shrunk: shrunk});
  document.body.appendChild(pre);
});
</script>"""


CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_loads_every_image_without_console_errors(index, tmp_path):
    page = tmp_path / "page"
    shutil.copytree(index.parent, page)
    checked = page / "index.html"
    checked.write_text(checked.read_text(encoding="utf-8").replace("<head>", "<head>" + _CHECK_SCRIPT, 1),
                       encoding="utf-8")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'<pre id="check">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the page did not finish loading (chromium exit {result.returncode}):\n{result.stderr[-2000:]}"
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] == len(referenced_images(index))
    assert check["broken"] == []
    assert check["errors"] == []
    assert check["wrapped"] == [], "rows of figures that do not fit on one line of a 1400 px window"
    assert check["shrunk"] == [], "pictures shown narrower than their own width"
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], "\n".join(console)
