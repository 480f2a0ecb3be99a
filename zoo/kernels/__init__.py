"""CuPy raw kernels (fused forward and backward) for the registered variants, each checked
against its PyTorch reference, which stays the specification and the CPU path.

    formula.py, torch_code.py   an activation's formula -> its PyTorch reference and derivatives
    cuda_codegen.py, runtime.py the formula -> CUDA source, compiled and launched through CuPy
    autograd.py                 the fused kernels as a torch.autograd.Function
    rational.py, rational_cuda.py, fewbit.py   learnable rationals (KAT), few-bit backward
"""
