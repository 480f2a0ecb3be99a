"""Quantization: number formats (reference quantizers and CuPy kernels), quantized layers, the
methods that place them in a model (weight-only, W8A8, Hadamard W4A4, ResQ, LLM-FP4) and the
size report."""
