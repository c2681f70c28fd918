"""What the Triton kernel test modules share: their marks, and the device their tensors live on
(the GPU when there is one and the interpreter is off, else the CPU under TRITON_INTERPRET=1)."""

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
TRITON_MARKS = [
    pytest.mark.triton,
    pytest.mark.skipif(not INTERPRET and not torch.cuda.is_available(),
                       reason="needs TRITON_INTERPRET=1 (set before triton is imported) or a CUDA GPU"),
]
DEVICE = "cuda" if not INTERPRET and torch.cuda.is_available() else "cpu"
