"""The runner's CPU step executor: a decode step's layers in one C call
(`model/kernels/csrc/decode_step.c`) for 4-bit models on CPU (float32 or bfloat16 rows).

With `--weights q4` every kernel of a decode layer is ours (4-bit matmuls, decode
attention, the layer steps of `model.kernels.layer_ops`), so Python only orders ~9 calls a
layer, at ~2-3 us of Python and ctypes each. `DecodeStep` makes that order one C call: the
same kernels (their function pointers, from the libraries already loaded), the same order, the same
buffers' layouts, so the same bits as the module-by-module forward (tested), ~2.5 ms less
per step of the bundled model at 8 rows. It serves decode-only steps of fewer rows than the
4-bit layers hand to their dense copies; anything else keeps the modules.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from promptcache.model.attention.backend import StepTensors
from promptcache.model.attention.metadata import KernelDecode, TorchMetadata
from promptcache.model.kernels import decode_attention, layer_ops, q4_matmul
from promptcache.model.kernels.decode_step import (
    BUFFERS,
    Buffers,
    Dims,
    Kernels,
    Layer,
    Q4Weight,
    address,
    library,
)
from promptcache.model.kernels.dtypes import DTYPE_CODES
from promptcache.model.layers.int4_linear import Int4Linear, dense_from_rows
from promptcache.model.llama import LlamaForCausalLM


def _q4(linear: Any) -> Q4Weight:
    w = linear.packed
    return Q4Weight(
        w.codes.data_ptr(), w.scale.data_ptr(), w.low.data_ptr(), w.out_features, w.in_features
    )


KVPair = tuple[torch.Tensor, torch.Tensor]  # a layer's K and V pools


class DecodeStep:
    """A 4-bit model's decode layers in one C call (see the module's docstring)."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        spec = model.spec
        self.model = model
        self.dtype = dtype = model.embed_tokens.weight.dtype
        self.max_rows = dense_from_rows(dtype) - 1  # all projections 4-bit
        self.kernels = Kernels(
            address(q4_matmul.library(), "pc_q4_matmul"),
            address(layer_ops.library(), layer_ops.symbol("norm", dtype)),
            address(layer_ops.library(), layer_ops.symbol("silu", dtype)),
            address(layer_ops.library(), layer_ops.symbol("rope", dtype)),
            address(decode_attention.library(), decode_attention.symbol(dtype)),
        )
        self.widths = {  # the step's scratch buffers, elements a row
            "h": spec.hidden_size,
            "normed": spec.hidden_size,
            "qkv": (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim,
            "att": spec.num_heads * spec.head_dim,
            "gate_up": 2 * spec.intermediate_size,
            "act": spec.intermediate_size,
            "out": spec.hidden_size,
        }
        self.layers: Any = None
        self.pools: list[tuple[int, int]] = []
        self.dims = Dims(
            spec.hidden_size,
            spec.num_heads,
            spec.num_kv_heads,
            spec.head_dim,
            spec.intermediate_size,
            0,
            DTYPE_CODES[dtype],
            0,
            0,
            0,
            spec.rms_norm_eps,
            spec.head_dim**-0.5,
        )

    @staticmethod
    def fits(model: LlamaForCausalLM) -> bool:
        """Whether every kernel of a decode layer is ours and built, for this model."""
        spec, dtype, k = model.spec, model.embed_tokens.weight.dtype, model.kernels
        if not (k.int4 and k.add_norm and k.silu_mul and k.rope_kv and not spec.qk_norm):
            return False  # the kernel set first: a dense model never builds the step
        if not all(_layer_fits(layer) for layer in model.layers):
            return False
        if dtype not in DTYPE_CODES or library() is None:
            return False
        return decode_attention.supports(dtype, spec.num_heads, spec.num_kv_heads, spec.head_dim)

    @classmethod
    def build(cls, model: LlamaForCausalLM) -> DecodeStep | None:
        """The executor for this model, or None where it does not fit (see `fits`)."""
        return cls(model) if cls.fits(model) else None

    def serves(self, step: StepTensors) -> bool:
        """Whether this step is one it runs: decode rows only, by the C decode kernel."""
        rows, meta = step.input_ids.shape[0], step.meta
        return (
            0 < rows <= self.max_rows
            and isinstance(meta, TorchMetadata)
            and isinstance(meta.decode, KernelDecode)
            and meta.num_decodes == rows
            and not meta.prefills
            and meta.sliding_window is None
        )

    def run(self, step: StepTensors, kv_caches: list[KVPair]) -> torch.Tensor:
        """The final norm's output (B, hidden) for the step's tokens, as the model's
        forward gives it; writes the rows' K/V into the pools."""
        meta = step.meta
        x, cos_sin = self.model.embed(step.input_ids, step.positions)
        lib = library()
        assert lib is not None and x.is_contiguous() and x.dtype == self.dtype
        assert isinstance(meta, TorchMetadata) and isinstance(meta.decode, KernelDecode)
        tables, ctx = meta.decode.block_tables, meta.decode.context_lens
        assert tables.stride(1) == 1
        cos, sin = cos_sin
        assert cos.is_contiguous() and sin.is_contiguous()
        slots = meta.slot_mapping
        assert slots.dtype == ctx.dtype == tables.dtype == torch.int64 and slots.is_contiguous()
        self._bind(kv_caches)
        rows = x.shape[0]
        held = {name: torch.empty((rows, w), dtype=x.dtype) for name, w in self.widths.items()}
        held["x"] = x
        buffers = Buffers(*(held[name].data_ptr() for name in BUFFERS))
        err = lib.pc_decode_layers(
            ctypes.byref(self.kernels),
            self.layers,
            len(self.pools),
            ctypes.byref(self.dims),
            ctypes.byref(buffers),
            rows,
            self.model.norm.weight.data_ptr(),
            cos.data_ptr(),
            sin.data_ptr(),
            slots.data_ptr(),
            tables.data_ptr(),
            tables.stride(0),
            ctx.data_ptr(),
            torch.get_num_threads(),
        )
        if err:
            raise RuntimeError(f"decode step kernel failed ({err})")
        return held["out"]

    def _bind(self, kv_caches: list[KVPair]) -> None:
        """The layers' array for these pools (built again only when the pools change)."""
        pools = [(k.data_ptr(), v.data_ptr()) for k, v in kv_caches]
        if pools == self.pools:
            return
        k0 = kv_caches[0][0]
        nb, bs, hd = k0.shape[1:]
        for k, v in kv_caches:  # each head's slots contiguous, every pool alike
            same = k.shape == v.shape == k0.shape and k.stride() == v.stride() == k0.stride()
            if not same or k.dtype != self.dtype or k.stride()[1:] != (bs * hd, hd, 1):
                raise ValueError("decode step: the KV pools are not laid out as it reads them")
        self.dims.block_size, self.dims.pool_slots = bs, nb * bs
        self.dims.pool_head_stride, self.dims.pool_block_stride = k0.stride(0), k0.stride(1)
        layers = [
            _layer(layer, k, v) for layer, (k, v) in zip(self.model.layers, kv_caches, strict=True)
        ]
        self.layers = (Layer * len(layers))(*layers)
        self.pools = pools


def _layer(layer: Any, k: torch.Tensor, v: torch.Tensor) -> Layer:
    """A DecoderLayer's weights and pools as the C step reads them."""
    attn, mlp = layer.self_attn, layer.mlp
    return Layer(
        layer.input_layernorm.weight.data_ptr(),
        layer.post_attention_layernorm.weight.data_ptr(),
        _q4(attn.qkv_proj),
        _q4(attn.o_proj),
        _q4(mlp.gate_up_proj),
        _q4(mlp.down_proj),
        k.data_ptr(),
        v.data_ptr(),
    )


def _layer_fits(layer: Any) -> bool:
    """Whether every projection of `layer` is 4-bit by our kernel, without a bias."""
    attn, mlp = layer.self_attn, layer.mlp
    projections = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
    return all(isinstance(p, Int4Linear) and p.ours and p.bias is None for p in projections)
