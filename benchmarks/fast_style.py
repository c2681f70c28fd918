"""Fast-style training step: pyfastviz's TransformerNet (pyfastviz.nn.InstanceNorm2d, ReLU fused)
against the same network built from torch.nn modules (torch.nn.InstanceNorm2d + a separate
ReLU), same weights, same device.

    python benchmarks/fast_style.py [--device cpu|cuda|auto] [--repeat N]

Rows per precision (fp32; on CUDA also bf16 autocast, as train_style uses there):
"network": transformer forward + backward + Adam step on mean(output^2); "full": the whole
pyfastviz.fast_style.train.train_step (transformer, perceptual loss on the default
EfficientNet-Lite0, backward, Adam). Batch 4 at 256 px on CUDA, batch 2 at 64 px on CPU.
Median ms over rounds that run both methods in turn; speedup = torch.nn / pyfastviz; on CUDA
also each method's peak allocated memory.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import markdown, medians, sample_times  # noqa: E402
from pyfastviz.fast_style import PerceptualLoss, TransformerNet  # noqa: E402
from pyfastviz.fast_style.train import train_step  # noqa: E402
from pyfastviz.models import load_model  # noqa: E402
from pyfastviz.nn import InstanceNorm2d  # noqa: E402
from pyfastviz.style import default_layers  # noqa: E402


def torch_nn_copy(network: TransformerNet) -> TransformerNet:
    """network with every pyfastviz InstanceNorm2d replaced by torch.nn.InstanceNorm2d (same
    affine weights), followed by a torch.nn.ReLU where the ReLU was fused."""
    plain = copy.deepcopy(network)
    for name, module in list(plain.named_modules()):
        if isinstance(module, InstanceNorm2d):
            norm = nn.InstanceNorm2d(module.num_features, eps=module.eps, affine=True).to(module.weight)
            norm.load_state_dict(module.state_dict())
            parent = plain.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], nn.Sequential(norm, nn.ReLU()) if module.relu else norm)
    return plain


def training_step_rows(device: str, *, batch: int | None = None, size: int | None = None, repeat: int = 10,
                       warmup: int = 3, full: bool = True) -> list[dict]:
    """Timing rows (dicts) of one training step, pyfastviz vs torch.nn; batch / size default to
    4 / 256 on CUDA and 2 / 64 on CPU. full=False leaves out the perceptual-loss rows."""
    cuda = device == "cuda"
    batch = batch or (4 if cuda else 2)
    size = size or (256 if cuda else 64)
    torch.manual_seed(0)
    ours = TransformerNet().to(device)
    networks = {"torch.nn": torch_nn_copy(ours), "pyfastviz": ours}
    content = torch.rand(batch, 3, size, size, device=device) * 255
    style_index = torch.zeros(batch, dtype=torch.long, device=device)
    loss = None
    if full:
        model = load_model(device=device).net
        layers = default_layers(model)
        loss = PerceptualLoss(model, [torch.rand(1, 3, size, size, device=device)], layers.content, layers.style)
    rows = []
    for amp in ([False, True] if cuda and torch.cuda.is_bf16_supported() else [False]):
        for kind in (["network", "full"] if full else ["network"]):
            steps = {name: training_step_fn(net, kind, loss, content, style_index, amp)
                     for name, net in networks.items()}
            times = medians(sample_times(steps, device, warmup, repeat))
            row = {"kind": "fast_style", "step": kind, "precision": "bf16 autocast" if amp else "fp32",
                   "device": device, "batch": batch, "size": size, "torch_nn_ms": times["torch.nn"],
                   "pyfastviz_ms": times["pyfastviz"], "speedup": times["torch.nn"] / times["pyfastviz"]}
            if cuda:
                row.update({f"{name}_peak_MiB": _peak(fn) / 2**20 for name, fn in steps.items()})
            rows.append(row)
    return rows


def training_step_fn(network: TransformerNet, kind: str, loss, content, style_index, amp: bool):
    """A no-argument callable running one step of `kind` ("network" or "full", see the module doc)."""
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    weights = {"content": 1.0, "style": 10.0, "tv": 1e-4}

    def network_step():
        with torch.autocast(content.device.type, dtype=torch.bfloat16, enabled=amp):
            output = network(content)
        optimizer.zero_grad(set_to_none=True)
        output.float().pow(2).mean().backward()
        optimizer.step()

    return network_step if kind == "network" else (
        lambda: train_step(network, optimizer, loss, content, style_index, weights, amp))


def _peak(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def training_step_table(rows: list[dict]) -> str:
    """Markdown table of training_step_rows."""
    cuda = any("pyfastviz_peak_MiB" in row for row in rows)
    head = ["step", "precision", "device", "batch x size", "torch.nn ms", "pyfastviz ms", "speedup"]
    head += ["torch.nn peak MiB", "pyfastviz peak MiB"] if cuda else []
    body = []
    for row in rows:
        cells = [row["step"], row["precision"], row["device"], f"{row['batch']} x {row['size']}px",
                 f"{row['torch_nn_ms']:.1f}", f"{row['pyfastviz_ms']:.1f}", f"{row['speedup']:.2f}x"]
        cells += [f"{row['torch.nn_peak_MiB']:.0f}", f"{row['pyfastviz_peak_MiB']:.0f}"] if cuda else []
        body.append(cells)
    return markdown(head, body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(training_step_table(training_step_rows(device, repeat=args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
