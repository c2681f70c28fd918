"""Accelerated operators: validation, autograd and device dispatch over csrc/ and kernels/.

Each op takes backend="auto" | "native" | "reference"; reference.py is the spec.
"""

from pyfastviz.ops import reference
from pyfastviz.ops.guided_relu import guided_relu

__all__ = ["guided_relu", "reference"]
