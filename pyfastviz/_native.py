"""Loads the compiled extension pyfastviz._C and tells which devices its kernels cover.

When the extension is missing, every op falls back to its pure-PyTorch reference and
one warning (per process) says why.
"""

import warnings

import torch

from pyfastviz._transforms import kernel_allowed

try:
    from pyfastviz import _C  # noqa: F401  (importing registers torch.ops.pyfastviz.*)

    LOAD_ERROR = None
except ImportError as error:  # not built, or built against another torch
    LOAD_ERROR = error


def _ops_with_kernels(dispatch_key: str) -> frozenset[str]:
    names = torch._C._dispatch_get_registrations_for_dispatch_key(dispatch_key)
    return frozenset(name.split("::", 1)[1] for name in names if name.startswith("pyfastviz::"))


# Read once at import: a plain lookup at dispatch time also traces under torch.compile.
KERNELS = {"cpu": _ops_with_kernels("CPU"), "cuda": _ops_with_kernels("CUDA")} if LOAD_ERROR is None else {}
_warned = False


def native_available() -> bool:
    """True when pyfastviz._C loaded."""
    return LOAD_ERROR is None


def has_kernel(op_name: str, device_type: str) -> bool:
    """True when pyfastviz::op_name has a compiled kernel for device_type ("cpu", "cuda")."""
    return native_available() and op_name in KERNELS.get(device_type, ())


def warn_fallback(op_name: str, device_type: str) -> None:
    """Warns once per process that an op runs on its pure-PyTorch reference."""
    global _warned
    if _warned:
        return
    _warned = True
    reason = f"pyfastviz._C did not load ({LOAD_ERROR})" if LOAD_ERROR else (
        f"pyfastviz._C has no {device_type} kernel for {op_name} (built without it)")
    warnings.warn(f"{reason}; using the pure-PyTorch reference ops, which are slower. "
                  "Rebuild with `pip install -e . --no-build-isolation`.", RuntimeWarning, stacklevel=3)


def use_native(op_name: str, backend: str, x: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether op_name runs its compiled kernel on x (and the op's other tensors): backend "auto"
    (when there is one for x's device, else the reference, with one warning), "native" (or
    raise) or "reference"; never for tensors traced by torch.func or forward AD (_transforms)."""
    if backend == "reference" or not kernel_allowed(op_name, backend, x, *others):
        return False
    device_type = x.device.type
    available = has_kernel(op_name, device_type)
    if backend == "native" and not available:
        raise RuntimeError(f"backend='native' but pyfastviz._C has no {device_type} kernel for {op_name} "
                           f"(load error: {LOAD_ERROR})")
    if not available:
        warn_fallback(op_name, device_type)
    return available
