"""Accelerated operators: validation, autograd and device dispatch over csrc/ and kernels/.

Each op takes backend="auto", "reference", or its kernel's name: "native" (pyfastviz._C, from
csrc/) or "triton" (pyfastviz.kernels); reference.py is the spec. Inputs traced by torch.func
transforms or forward-mode AD run the reference (pyfastviz/_transforms.py).
"""

from pyfastviz.ops import reference
from pyfastviz.ops.gram import gram, gram_style_loss
from pyfastviz.ops.guided_relu import guided_relu, guided_relu_
from pyfastviz.ops.instance_norm import instance_norm
from pyfastviz.ops.occlusion import occlusion_batch, occlusion_scatter

__all__ = ["gram", "gram_style_loss", "guided_relu", "guided_relu_", "instance_norm", "occlusion_batch", "occlusion_scatter", "reference"]
