"""Backend choice shared by the Triton ops (gram, instance_norm): the kernel for CUDA tensors of
a kernel dtype, the reference elsewhere, and one warning per op when Triton did not import."""

import os
import warnings

import torch

from pyfastviz._transforms import kernel_allowed

BACKENDS = ("auto", "triton", "reference")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # read at import, as the kernel modules read it


class TritonBackend:
    """Whether op runs its Triton kernel. error: the ImportError of its kernel module, or None."""

    def __init__(self, op: str, error: ImportError | None):
        self.op, self.error, self.warned = op, error, False

    def available(self) -> bool:
        """True when Triton imported (the op's kernel module is usable)."""
        return self.error is None

    def use(self, x: torch.Tensor, backend: str, name: str, *others: torch.Tensor | None) -> bool:
        """backend "reference": no; "triton": yes (or raise; CPU x only under TRITON_INTERPRET=1);
        "auto": for CUDA fp32/fp16/bf16 x. No when x or the op's other tensors are traced by
        torch.func or forward AD (_transforms). name: x's argument name, for errors."""
        if backend == "reference" or not kernel_allowed(self.op, backend, x, *others):
            return False
        if backend == "triton":
            if not self.available():
                raise RuntimeError(f"backend='triton' but Triton did not import ({self.error})")
            if x.dtype not in KERNEL_DTYPES:
                raise TypeError(f"backend='triton' supports float32/float16/bfloat16 {name}, got {x.dtype}")
            if x.device.type != "cuda" and not INTERPRET:
                raise ValueError(f"backend='triton' needs {name} on a CUDA device (or TRITON_INTERPRET=1 set "
                                 f"before Triton is imported), got {name} on {x.device}")
            return True
        if x.device.type != "cuda" or x.dtype not in KERNEL_DTYPES:
            return False  # no CPU kernel; float64 is reference-only
        if not self.available():
            self.warn_fallback()
            return False
        return True

    def warn_fallback(self) -> None:
        """Warns once per process that the op runs on its pure-PyTorch reference."""
        if self.warned:
            return
        self.warned = True
        warnings.warn(f"Triton did not import ({self.error}); pyfastviz.ops.{self.op} uses the pure-PyTorch "
                      "reference, which is slower. Install it with `pip install triton`.", RuntimeWarning, stacklevel=4)
