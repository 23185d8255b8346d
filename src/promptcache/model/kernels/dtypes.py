"""The dtype codes our C kernels take for their activations (`csrc/kernels.h`): one table
for every kernel and its bindings."""

from __future__ import annotations

import torch

# x's dtype -> the code the kernels read (PC_F32, PC_BF16 in csrc/kernels.h)
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}
