"""Occlusion with a torch.compile'd or CUDA-graphed chunk forward: the maps of the eager path,
one compile or capture per shape, reused by the next call; the model left as found.

torch.compile takes seconds per graph on a small CPU: each test here compiles at most once.
"""

import gc
import importlib
import weakref

import pytest
import torch
from torch._dynamo.utils import counters

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.occlusion import _GRAPHS, clear_cache, occlusion

# 12 or 13 px images, window 4, stride 3: 4 x 4 = 16 positions; batch_size 6 for 2 images is 3
# positions per chunk, so the 6th chunk holds 1 position and 2 padding rows.
GEOMETRY = dict(window=4, stride=3, batch_size=6, progress=False)


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FunctionalReLUNet().eval()


def test_compiled_equals_eager_in_one_compile_with_a_padded_last_chunk(net):
    images = torch.randn(2, 3, 13, 12)  # a shape no other test compiles
    targets = [[0, 3], [1, 2]]
    before = compiled_graphs()
    heat, grid = occlusion(net, images, targets, compile=True, return_grid=True, **GEOMETRY)
    assert compiled_graphs() - before == 1  # first pass, full chunks and the padded last chunk share one shape
    eager_heat, eager_grid = occlusion(net, images, targets, return_grid=True, **GEOMETRY)
    torch.testing.assert_close(grid, eager_grid, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(heat, eager_heat, atol=1e-6, rtol=1e-5)


def test_the_next_call_with_the_same_shapes_does_not_recompile(net):
    occlusion(net, torch.randn(2, 3, 12, 12), 1, compile=True, **GEOMETRY)
    before = compiled_graphs()
    images = torch.randn(2, 3, 12, 12)  # new images, predicted classes, logits: same shapes
    heat = occlusion(net, images, compile=True, score="logit", **GEOMETRY)
    assert compiled_graphs() == before
    torch.testing.assert_close(heat, occlusion(net, images, score="logit", **GEOMETRY), atol=1e-6, rtol=1e-5)


def test_groups_of_images_share_one_compile(net):
    images = torch.randn(3, 3, 13, 13)  # batch_size 2: groups of 2 and 1 images, 1 position per chunk
    before = compiled_graphs()
    heat = occlusion(net, images, [0, 1, 2], compile=True, window=4, stride=3, batch_size=2, progress=False)
    assert compiled_graphs() - before == 1  # the last group's chunks are padded to the first's
    torch.testing.assert_close(heat, occlusion(net, images, [0, 1, 2], window=4, stride=3, progress=False),
                               atol=1e-6, rtol=1e-5)


def test_default_batch_size_keeps_one_compile_when_free_memory_changes(net, monkeypatch):
    fitting = iter([8, 4])
    monkeypatch.setattr(importlib.import_module("pyfastviz.occlusion"), "_fitting_batch",
                        lambda forward, probe: next(fitting))
    images = torch.randn(2, 3, 14, 14)  # a shape no other test compiles
    before = compiled_graphs()
    for _ in range(2):
        occlusion(net, images, 1, compile=True, window=4, stride=3, progress=False)
    assert compiled_graphs() - before == 1


def test_compiled_fast_path_stays_close_to_fp32(net):
    images = torch.randn(2, 3, 12, 12)
    exact = occlusion(net, images, 1, score="logit", **GEOMETRY)
    fast = occlusion(net, images, 1, score="logit", dtype=torch.bfloat16, channels_last=True, compile=True,
                     **GEOMETRY)
    # as for the eager fast path: each drop within a few bf16 steps (2**-8) of the score
    with torch.no_grad():
        score_scale = net(images)[:, 1].abs().max()
    assert (fast - exact).abs().max() <= 2**-6 * score_scale


def test_model_left_as_found_and_not_kept_alive_by_the_cache():
    torch.manual_seed(1)
    model = FunctionalReLUNet().train()
    before = model_state(model)
    occlusion(model, torch.randn(2, 3, 12, 12), 1, compile=True, **GEOMETRY)
    assert_same_state(before, model_state(model))
    assert model.training
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_equals_eager(compile):
    torch.manual_seed(0)
    model = FunctionalReLUNet().cuda().train()
    before = model_state(model)
    images = torch.randn(2, 3, 12, 12, device="cuda")
    heat = occlusion(model, images, [[0, 3], [1, 2]], cuda_graph=True, compile=compile, **GEOMETRY)
    [graph] = _GRAPHS[model].values()
    torch.testing.assert_close(heat, occlusion(model, images, [[0, 3], [1, 2]], **GEOMETRY), atol=1e-5, rtol=1e-4)
    assert_same_state(before, model_state(model))
    # the next images of the same shapes replay the same capture
    images = torch.randn(2, 3, 12, 12, device="cuda")
    again = occlusion(model, images, 1, cuda_graph=True, compile=compile, score="logit", **GEOMETRY)
    assert list(_GRAPHS[model].values()) == [graph]
    torch.testing.assert_close(again, occlusion(model, images, 1, score="logit", **GEOMETRY), atol=1e-5, rtol=1e-4)
    clear_cache()
    assert model not in _GRAPHS


@pytest.mark.cuda
@cuda
def test_cuda_graph_fast_path_stays_close_to_fp32():
    torch.manual_seed(0)
    model = FunctionalReLUNet().cuda().eval()
    images = torch.randn(3, 3, 16, 16, device="cuda")
    exact = occlusion(model, images, 1, window=4, stride=4, score="logit", progress=False)
    fast = occlusion(model, images, 1, window=4, stride=4, score="logit", dtype=torch.bfloat16, channels_last=True,
                     cuda_graph=True, batch_size=15, progress=False)
    with torch.no_grad():
        score_scale = model(images)[:, 1].abs().max()
    assert (fast - exact).abs().max() <= 2**-6 * score_scale
