"""Paged attention: the step's metadata, PyTorch's paths, the CPU C kernel and the Triton
kernel, and the selector that says which serves."""
