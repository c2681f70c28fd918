"""An occlusion sweep with the pretrained default model over real photos."""

import pytest
import torch

import pyfastviz
from pyfastviz.models import load_image, to_pil
from pyfastviz.sweep import load_sweep


@pytest.mark.slow
def test_occlusion_sweep_lies_on_the_cat(default_model, cat_quadrant_canvases, tmp_path):
    """The cat of skimage's chelsea pasted in quadrant 0 and 3 of a canvas: the map of the cat class
    keeps at least half its mass in the cat's quadrant, peak included (as tests/test_occlusion.py)."""
    canvases = [cat_quadrant_canvases[0], cat_quadrant_canvases[3]]
    for quadrant, x in canvases:
        to_pil(default_model.preprocess.denormalize(x[0])).save(tmp_path / f"cat{quadrant}.png")
    summary = pyfastviz.sweep(tmp_path, tmp_path / "out", model=default_model, target="Egyptian cat", window=96,
                              stride=32, score="logit", shard_size=1, batch_size=1, workers=0, progress=False)
    assert (summary.mapped, summary.errors) == (2, 0)
    result = load_sweep(tmp_path / "out")
    x = default_model.preprocess.batch([load_image(tmp_path / f"cat{q}.png") for q, _ in canvases])
    with torch.no_grad():
        probs = default_model.net(x).softmax(1)
    assert [row["predicted"] for row in result.index] == probs.argmax(1).tolist()
    assert [row["probability"] for row in result.index] == pytest.approx(probs.amax(1).tolist(), abs=1e-5)
    for (quadrant, _), row in zip(canvases, result.index):
        assert row["path"] == f"cat{quadrant}.png" and row["target_name"] == "Egyptian cat"
        heat = torch.from_numpy(result.map(row["path"])).float().clamp(min=0)
        share = heat[112:] if quadrant == 3 else heat[:112]
        share = (share[:, 112:] if quadrant == 3 else share[:, :112]).sum() / heat.sum()
        assert share >= 0.5, (quadrant, share)
        assert (row["peak_row"] >= 112) * 2 + (row["peak_col"] >= 112) == quadrant, row
