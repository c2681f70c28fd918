"""Launch sizing shared by the Triton kernels: the GPU's multiprocessor count and split-K slices."""

import torch
import triton


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
