"""Evaluating stored runs: accuracy, generators, post-training quantization, lm-eval."""
