"""Which kernel serves each of the network's jobs: chosen once, before the network is built
(`LlamaForCausalLM.build`), from the device, the dtype, the weights and what this machine
could build; the network never changes it afterwards.

On CPU, dense linears are prepacked for oneDNN where it serves the dtype; a layer's small
steps (the residual add with the RMS norm, SiLU(gate) * up, the rotary embedding with the
K/V write) are one C pass each (`model.kernels.layer_ops`) where that kernel builds: in
bfloat16, and in float32 only for 4-bit models — dense float32 keeps PyTorch's norm and
SiLU, so that its logits keep transformers' bits. With 4-bit weights the projections use
the GGUF's own 4-bit blocks, and the LM head its 8-bit embeddings where our 8-bit kernel
builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptcache.model.device import can_pack
from promptcache.model.kernels import layer_ops, q8_matmul
from promptcache.model.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class KernelSet:
    """The kernels a network is built with (every one off: PyTorch's ops throughout)."""

    prepack: bool = False  # dense linears prepacked for oneDNN (CPU)
    add_norm: bool = False  # the residual add and the RMS norm after it in one C pass
    silu_mul: bool = False  # SiLU(gate) * up in one C pass
    rope_kv: bool = False  # rotary of q and k with the K/V write in one C pass
    int4: bool = False  # projections from a GGUF's 4-bit blocks (`layers.int4_linear`)
    q8_head: bool = False  # the LM head from a GGUF's 8-bit embeddings (`layers.q8_head`)


PLAIN = KernelSet()


def choose_kernels(
    device: torch.device, dtype: torch.dtype, spec: ModelSpec, int4: bool = False
) -> KernelSet:
    """The fastest kernels for this device, dtype and model that keep its numerics (see
    the module docstring); `int4`: the 4-bit weights can be served (the loader checked)."""
    prepack = can_pack(device, dtype)
    if device.type != "cpu" or layer_ops.library() is None:
        return KernelSet(prepack=prepack, int4=int4, q8_head=int4 and _q8_builds())
    every = dtype == torch.bfloat16 or (dtype == torch.float32 and int4)
    rope = dtype in layer_ops.DTYPES and not spec.qk_norm
    q8 = int4 and _q8_builds()
    return KernelSet(prepack, every, every, rope, int4, q8)


def _q8_builds() -> bool:
    return q8_matmul.library() is not None
