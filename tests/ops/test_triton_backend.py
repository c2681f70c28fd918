"""The fallback shared by the Triton ops (pyfastviz/ops/_triton.py), through each of them: float64
refused by backend="triton", the reference with one warning when Triton did not import, and
the package importing and running without Triton at all."""

import importlib
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from pyfastviz.ops import reference

# (module, call on (1, 3, 4, 4) features, the same call on the reference)
OPS = {
    "gram": (importlib.import_module("pyfastviz.ops.gram"), lambda m, x, **k: m.gram(x, **k), reference.gram),
    "instance_norm": (importlib.import_module("pyfastviz.ops.instance_norm"),
                      lambda m, x, **k: m.instance_norm(x, **k), F.instance_norm),
}


@pytest.fixture(params=list(OPS))
def op(request):
    return OPS[request.param]


def test_triton_backend_rejects_float64(op):
    module, call, _ = op
    if not module.triton_available():
        pytest.skip("Triton not installed")
    with pytest.raises(TypeError, match="backend='triton' supports float32/float16/bfloat16"):
        call(module, torch.ones(1, 3, 4, 4, dtype=torch.float64), backend="triton")


def test_missing_triton_falls_back_with_one_warning(op, monkeypatch):
    module, call, expected = op
    monkeypatch.setattr(module.TRITON, "error", ImportError("simulated"))
    monkeypatch.setattr(module.TRITON, "warned", False)
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("cuda")), raising=False)
    x = torch.randn(1, 3, 4, 4)
    with pytest.warns(RuntimeWarning, match="simulated"):
        result = call(module, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(module, x)  # the second call is silent
    monkeypatch.undo()
    torch.testing.assert_close(result, expected(x))
    monkeypatch.setattr(module.TRITON, "error", ImportError("simulated"))
    with pytest.raises(RuntimeError, match="backend='triton' but Triton did not import"):
        call(module, x, backend="triton")


def test_package_imports_and_the_ops_run_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, pyfastviz\n"
        "from pyfastviz.ops import gram, instance_norm\n"
        "import importlib; m = importlib.import_module('pyfastviz.ops.gram')\n"
        "g = gram(torch.randn(2, 3, 4, 4))\n"
        "y = instance_norm(torch.randn(2, 3, 4, 4), torch.ones(3), relu=True)\n"
        "print(tuple(g.shape), tuple(y.shape), bool((y >= 0).all()), m.triton_available())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["(2,", "3,", "3)", "(2,", "3,", "4,", "4)", "True", "False"]
