"""How an optimised image is parameterised: plain pixels, or Lucid's decorrelated Fourier space.

FourierImage (Olah et al. 2017, "Feature Visualization"): the image is the sigmoid of a
colour-decorrelated inverse FFT of a spectrum whose frequencies are scaled by 1 / f^decay.
Gradient steps on that spectrum move low frequencies most, so images come out smooth
without blur; the sigmoid keeps every pixel inside [0, 1] without clipping.
"""

from __future__ import annotations

import torch

# Lucid's square root of the ImageNet colour covariance (its SVD), columns scaled to max norm 1.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOUR_SQRT = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()
PIXEL_EPS = 1e-3  # images are kept in [eps, 1 - eps] when mapped to the spectrum (logit is finite)


class FourierImage:
    """Maps spectra (N, 3, H, W // 2 + 1, 2) (real, imaginary) to images (N, 3, H, W) and back.

    preprocess: the model's Preprocess (images are in its normalised input space).
    decay_power: frequency f is scaled by 1 / max(f, 1 / max(H, W))^decay_power (normalised so
    the scales' root mean square is 1, which keeps learning rates comparable with pixels).
    """

    def __init__(self, preprocess, height: int, width: int, *, decay_power: float = 1.0):
        if not isinstance(decay_power, (int, float)) or isinstance(decay_power, bool) or decay_power < 0:
            raise ValueError(f"decay_power must be a number >= 0, got {decay_power!r}")
        self.preprocess, self.height, self.width = preprocess, height, width
        freqs = torch.sqrt(torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2)
        scale = freqs.clamp_min(1.0 / max(height, width)).pow(-float(decay_power))
        self.scale = scale / scale.pow(2).mean().sqrt()  # (H, W // 2 + 1)

    def image(self, spectrum: torch.Tensor) -> torch.Tensor:
        """spectrum (N, 3, H, W // 2 + 1, 2) float32 -> image (N, 3, H, W) in model input space."""
        scaled = torch.view_as_complex(spectrum) * self.scale.to(spectrum.device)
        decorrelated = torch.fft.irfft2(scaled, s=(self.height, self.width), norm="ortho")
        rgb = torch.einsum("ij,njhw->nihw", _COLOUR_SQRT.to(spectrum.device), decorrelated)
        return self.preprocess.normalize(torch.sigmoid(rgb))

    def spectrum(self, image: torch.Tensor) -> torch.Tensor:
        """The spectrum whose image is `image` (N, 3, H, W) clamped to [eps, 1 - eps] pixels."""
        if image.dim() != 4 or image.shape[1] != 3 or tuple(image.shape[2:]) != (self.height, self.width):
            raise ValueError(f"image must have shape (N, 3, {self.height}, {self.width}), got {tuple(image.shape)}")
        pixels = self.preprocess.denormalize(image.detach().float()).clamp(PIXEL_EPS, 1 - PIXEL_EPS)
        rgb = torch.logit(pixels)
        decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_COLOUR_SQRT).to(image.device), rgb)
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale.to(image.device)
        return torch.view_as_real(spectrum).contiguous()
