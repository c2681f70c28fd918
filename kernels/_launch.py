"""Launch helpers shared by the Triton kernels: the device a launch runs on, the GPU's
multiprocessor count, split-K slices and the batch a grid axis other than axis 0 can hold."""

import functools

import torch
import triton


def on_input_device(launcher):
    """Run launcher(x, ...) with x's CUDA device current: Triton launches on the current device
    and its current stream, which need not be x's (tensors on cuda:1 while cuda:0 is current)."""
    @functools.wraps(launcher)
    def launch(x: torch.Tensor, *args, **kwargs):
        if x.device.type != "cuda":
            return launcher(x, *args, **kwargs)
        with torch.cuda.device(x.device):
            return launcher(x, *args, **kwargs)
    return launch


def num_sms(device: torch.device) -> int:
    """Multiprocessors of a CUDA device; 4 under the interpreter (a few programs, so the split
    paths run without slowing the tests much)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def slices(K: int, split: int, block_k: int) -> tuple[int, int]:
    """(k_per_split, split): about `split` slices of K of whole BLOCK_K steps, none of them empty."""
    k_per_split = triton.cdiv(triton.cdiv(K, split), block_k) * block_k
    return k_per_split, triton.cdiv(K, k_per_split)


MAX_GRID_YZ = 65535  # programs along CUDA grid axes 1 and 2


def batch_chunks(N: int) -> list[slice]:
    """Slices of a batch of N whose sizes fit a grid axis 1 or 2."""
    return [slice(start, start + MAX_GRID_YZ) for start in range(0, N, MAX_GRID_YZ)]
