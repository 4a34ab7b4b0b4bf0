"""GPU kernels for δ-mem (Triton). Each module ships a plain-PyTorch reference next to its kernel."""
