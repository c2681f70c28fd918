"""Small models and checks shared by the technique tests."""

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch import nn
from torch.overrides import _get_current_function_mode_stack
from torch.utils._python_dispatch import TorchDispatchMode


class FunctionalReLUNet(nn.Module):
    """A small CNN whose activations are functional calls, not modules, of every ReLU form."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 8, 3), nn.Conv2d(8, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x)).clone()
        x = self.bn(x).relu_()
        x = F.relu6(self.conv3(x), inplace=True)
        return self.fc(x.mean((2, 3)))


class ModuleReLUNet(nn.Module):
    """FunctionalReLUNet's twin with nn.ReLU/nn.ReLU6 modules (what module hooks can see)."""

    def __init__(self, functional: FunctionalReLUNet):
        super().__init__()
        self.body = nn.Sequential(functional.conv1, nn.ReLU(), functional.conv2, nn.ReLU(inplace=True),
                                  functional.bn, nn.ReLU(inplace=True), functional.conv3, nn.ReLU6())
        self.fc = functional.fc

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


class FailsLater(FunctionalReLUNet):
    """Raises in its forward pass from the `fail_at`-th call on (inside an optimisation loop)."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return super().forward(x)


def model_state(model: nn.Module):
    """Everything a technique must leave as it found: modes, flags, hooks, grads, buffers."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     + len(m._backward_pre_hooks) for m in model.modules()),
        "full_backward_hook_flags": [m._is_full_backward_hook for m in model.modules()],
        "modules": [type(m) for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "buffers": [b.clone() for b in model.buffers()],
        "function_modes": len(_get_current_function_mode_stack()),
    }


def assert_same_state(before, after):
    buffers_before, buffers_after = before.pop("buffers"), after.pop("buffers")
    assert before == after
    assert all(torch.equal(a, b) for a, b in zip(buffers_before, buffers_after))


def quadrant_shares(heat):
    """Fractions of a non-negative (H, W) map's mass in its 4 quadrants, reading order."""
    half_h, half_w = heat.shape[0] // 2, heat.shape[1] // 2
    total = heat.sum()
    return [float(heat[r * half_h:(r + 1) * half_h, c * half_w:(c + 1) * half_w].sum() / total)
            for r in range(2) for c in range(2)]


def cli_error_line(capsys) -> str:
    """The CLI's stderr after a refused command: one `pyfastviz: error: ...` line, no traceback."""
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pyfastviz: error: ")
    return err


class RecordOps(TorchDispatchMode):
    """Records the names of the ops dispatched while active (which kernel a call reached)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))

    def pyfastviz_ops(self) -> set[str]:
        return {name for name in self.names if name.startswith("pyfastviz::")}


def weighted_sum(y: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient is not constant (sum() of a normalised output has gradient 0)."""
    return (y * torch.linspace(-1.0, 2.0, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)).sum()


def jvp(f, x: torch.Tensor) -> torch.Tensor:
    """torch.func.jvp's tangent of f at x along x.cos() (not constant: normalisation maps a
    constant tangent to zero)."""
    return torch.func.jvp(f, (x,), (x.cos(),))[1]


def forward_ad_tangent(f, x: torch.Tensor) -> torch.Tensor | None:
    """The same tangent through torch.autograd.forward_ad (None when f dropped it)."""
    with forward_ad.dual_level():
        return forward_ad.unpack_dual(f(forward_ad.make_dual(x, x.cos()))).tangent
