"""A tiny loss network and small images for fast-style tests, so that training runs in seconds."""

import torch
from torch import nn


class TinyLossNet(nn.Module):
    """A small random CNN standing in for the loss network (layers relu1..relu3, 1/1, 1/2, 1/4)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        self.conv3, self.relu3 = nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.relu3(self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


TINY_LAYERS = dict(content_layer="relu2", style_layers=["relu1", "relu2", "relu3"])


def pixels(*shape, seed=0):
    """Random RGB in [0, 1]."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_train(loss_model, styles=None, **kwargs):
    """train_style on the tiny loss network: 24 px, batch 2, 3 steps, no bar (overridable)."""
    from pyfastviz.fast_style import train_style

    options = dict(loss_model=loss_model, size=24, batch_size=2, steps=3, progress=False, **TINY_LAYERS)
    return train_style(pixels(3, 40, 36) if styles is None else styles, **{**options, **kwargs})
