"""pyfastviz: visualizing and understanding CNNs in PyTorch, made fast."""

__version__ = "0.1.0"
