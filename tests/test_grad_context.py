"""Every gradient technique takes its gradients itself: called inside torch.no_grad() or
torch.inference_mode() (on images made there), it returns what it returns outside."""

import pytest
import torch
from torch import nn

import pyfastviz
from pyfastviz.inspect import top_patches
from pyfastviz.models import Preprocess

PREPROCESS = Preprocess(32)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 5)).eval()


TECHNIQUES = {
    "class_visualization": lambda net, x: pyfastviz.class_visualization(
        net, 1, size=32, steps=2, preprocess=PREPROCESS, seed=0, progress=False).images,
    "invert_features": lambda net, x: pyfastviz.invert_features(
        net, x, "1", steps=2, preprocess=PREPROCESS, seed=0, progress=False).images,
    "fooling_images": lambda net, x: pyfastviz.fooling_images(
        net, x, 1, steps=2, preprocess=PREPROCESS, progress=False).images,
    "fgsm": lambda net, x: pyfastviz.fgsm(net, x, preprocess=PREPROCESS).images,
    "deepdream": lambda net, x: pyfastviz.deepdream(
        net, x, "3", octaves=1, steps_per_octave=2, preprocess=PREPROCESS, seed=0, progress=False).images,
    "top_patches": lambda net, x: top_patches(net, x, "3", channel=2, k=2, progress=False)[0].guided,
}


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_same_result_inside_no_grad_and_inference_mode(name, context):
    net = tiny_net()
    photo = PREPROCESS.normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    expected = TECHNIQUES[name](net, photo)
    with context():
        made_here = photo.clone()
        result = TECHNIQUES[name](net, made_here)
    torch.testing.assert_close(result, expected)
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
