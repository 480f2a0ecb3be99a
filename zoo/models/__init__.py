"""Model builders: timm-based image models and the composition of arch + act + init + quant."""
