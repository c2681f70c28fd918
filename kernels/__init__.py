"""Triton kernels, installed as pyfastviz.kernels; each has its op in pyfastviz/ops/ and its
reference in pyfastviz/ops/reference.py. Tests run them on the CPU under TRITON_INTERPRET=1
(pytest -m triton). The Gram-matrix and instance-norm kernels land here with their issues."""
