"""Our forward pass for Llama-family decoders (Llama, SmolLM, Mistral, Qwen2, Qwen3).

Input is a flat batch of tokens from many sequences with their absolute positions and the
paged-attention metadata; output is the final hidden state of every token. Logits are
computed only for the rows that are sampled. Knows nothing about tokenization or scheduling.

The network is built from a `KernelSet` chosen before it (`LlamaForCausalLM.build`): each
module is made with its kernel (fused norm, fused MLP step, fused rotary and K/V write,
prepacked, 4-bit or 8-bit linears) and nothing is swapped or switched afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from promptcache.model.attention.metadata import AttentionMetadata
from promptcache.model.attention.paged import attend, write_kv
from promptcache.model.errors import ModelLoadError
from promptcache.model.kernels import layer_ops
from promptcache.model.layers.int4_linear import Int4Linear
from promptcache.model.layers.kernel_set import PLAIN, KernelSet
from promptcache.model.layers.mlp import SwiGLU
from promptcache.model.layers.norm import RMSNorm
from promptcache.model.layers.packed_linear import PackedLinear, pack_linears
from promptcache.model.layers.q8_head import Q8Head
from promptcache.model.layers.rotary import RotaryEmbedding, rotate
from promptcache.model.quant import Q4Tensor, Q8Tensor
from promptcache.model.spec import ModelSpec


class Attention(nn.Module):
    """GQA self-attention with fused q/k/v projection, optional biases and q/k norms."""

    def __init__(self, spec: ModelSpec, kernels: KernelSet) -> None:
        super().__init__()
        self.num_heads, self.num_kv = spec.num_heads, spec.num_kv_heads
        self.head_dim = spec.head_dim
        q_size, kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        self.sizes = [q_size, kv_size, kv_size]
        self.qkv_proj = nn.Linear(spec.hidden_size, q_size + 2 * kv_size, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(q_size, spec.hidden_size, bias=spec.o_bias)
        self.q_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        # rotary + K/V write by layer_ops (no q/k norms, CPU)
        self.fused_rope = kernels.rope_kv and not spec.qk_norm

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        t, h, kv, hd = x.shape[0], self.num_heads, self.num_kv, self.head_dim
        qkv = self.qkv_proj(x)
        v = qkv[:, (h + kv) * hd :].view(t, kv, hd)  # (T, KV, hd)
        if self.fused_rope:  # q and k rotated in place, k and v written to the pool
            layer_ops.rope_kv(qkv, (h, kv, hd), cos_sin, *kv_cache, meta.slot_mapping)
            q, k = qkv[:, : h * hd].view(t, h, hd), qkv[:, h * hd : (h + kv) * hd].view(t, kv, hd)
            return self.o_proj(attend(q, k, v, *kv_cache, meta).reshape(t, -1))
        if self.q_norm is not None and self.k_norm is not None:
            q, k, _ = qkv.split(self.sizes, dim=-1)
            q = rotate(self.q_norm(q.view(t, h, hd)), cos_sin)  # (T, H, hd)
            k = rotate(self.k_norm(k.view(t, kv, hd)), cos_sin)  # (T, KV, hd)
        else:  # q and k side by side, rotated in one pass
            qk = rotate(qkv[:, : (h + kv) * hd].view(t, h + kv, hd), cos_sin)
            q, k = qk[:, :h], qk[:, h:]
        write_kv(k, v, *kv_cache, meta.slot_mapping)
        return self.o_proj(attend(q, k, v, *kv_cache, meta).reshape(t, -1))


class DecoderLayer(nn.Module):
    """Pre-norm attention block then pre-norm SwiGLU block, each with a residual.

    A layer takes the residual stream and the previous layer's output not yet added to it,
    and returns the same pair: the add happens with the norm after it (one pass where
    fused), as in vLLM."""

    def __init__(self, spec: ModelSpec, kernels: KernelSet) -> None:
        super().__init__()
        eps, fused = spec.rms_norm_eps, kernels.add_norm
        self.input_layernorm = RMSNorm(spec.hidden_size, eps, fused)
        self.self_attn = Attention(spec, kernels)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, eps, fused)
        self.mlp = SwiGLU(spec.hidden_size, spec.intermediate_size, spec.mlp_bias, kernels.silu_mul)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(stream, pending output) -> (stream + pending + attention, MLP output)."""
        x, normed = self.input_layernorm.add_norm(x, h)
        h = self.self_attn(normed, cos_sin, kv_cache, meta)
        x, normed = self.post_attention_layernorm.add_norm(x, h)
        return x, self.mlp(normed)


class TiedHead(nn.Module):
    """An LM head that multiplies by the embeddings it shares."""

    def __init__(self, embed: nn.Embedding) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embed.weight.t()


class LlamaForCausalLM(nn.Module):
    """The whole decoder: embeddings, layers, final norm and (possibly tied) LM head."""

    def __init__(self, spec: ModelSpec, rope: RotaryEmbedding, kernels: KernelSet = PLAIN) -> None:
        """The modules, with `kernels`' fused steps; `build()` fills the weights and makes
        the linears of the chosen kinds."""
        super().__init__()
        self.spec = spec
        self.kernels = kernels
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(spec, kernels) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, kernels.add_norm)
        self.lm_head: nn.Module | None = None
        if not spec.tie_word_embeddings:
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        self.rope = rope

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """input_ids/positions (T,) -> final hidden states (T, hidden)."""
        (x, cos_sin), h = self.embed(input_ids, positions), None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x, h = layer(x, h, cos_sin, kv_cache, meta)
        return self.norm.add_norm(x, h)[1]

    def embed(
        self, input_ids: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The tokens' embeddings (T, hidden) and their rotary cos/sin (see RotaryEmbedding)."""
        x = self.embed_tokens(input_ids)
        return x, self.rope.lookup(positions, x.dtype)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, hidden) -> (N, vocab) logits in float32."""
        if self.lm_head is not None:
            return self.lm_head(hidden).float()
        return (hidden @ self.embed_tokens.weight.t()).float()

    @classmethod
    def build(
        cls,
        spec: ModelSpec,
        rope: RotaryEmbedding,
        kernels: KernelSet,
        state: dict[str, torch.Tensor],
        device: torch.device,
        q4: dict[str, Q4Tensor] | None = None,
        q8: Q8Tensor | None = None,
    ) -> LlamaForCausalLM:
        """The network with these weights (`state`, by our module names) on `device`, built
        with `kernels`: dense linears prepacked, then the 4-bit projections `q4` (by module
        name; each keeps its dense module for many-row inputs) and the 8-bit LM head `q8`,
        where the kernel set has them. `ModelLoadError` where the weights do not fit; a
        4-bit weight is checked (`int4_misfit`) before anything is built."""
        assert (q4 is not None) == kernels.int4 and (q8 is not None) == kernels.q8_head
        with torch.device("meta"):
            module = cls(spec, rope, kernels)  # no memory is spent on random init
        if q4 is not None and (why := module.int4_misfit(q4)) is not None:
            raise ModelLoadError(why)
        module._load(state)
        module = module.to(device).eval()
        dtype = module.embed_tokens.weight.dtype
        if kernels.prepack:
            pack_linears(module)
            if module.lm_head is None:  # tied: a packed copy of the embeddings is the head
                module.lm_head = PackedLinear(module.embed_tokens.weight, None)
        if q4 is not None:
            module._fit_int4(q4, dtype)
        if q8 is not None:
            module._fit_q8_head(q8)
        return module

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        try:
            result = self.load_state_dict(state, strict=False, assign=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"weights do not fit its config: {exc}") from exc
        if result.missing_keys or result.unexpected_keys:
            raise ModelLoadError(
                f"weights do not match its config: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )

    def int4_misfit(self, weights: dict[str, Q4Tensor]) -> str | None:
        """Why these 4-bit weights (by module name) do not fit this network, or None."""
        for name, q in weights.items():
            try:
                old = self.get_submodule(name)
            except AttributeError:
                return f"{name}: no such module for a 4-bit weight"
            if (getattr(old, "out_features", None), getattr(old, "in_features", None)) != q.shape:
                return f"{name}: 4-bit weight {q.shape} does not fit the model"
        return None

    def _fit_int4(self, weights: dict[str, Q4Tensor], dtype: torch.dtype) -> None:
        """Serve these projections from their 4-bit codes, keeping the present (dense,
        dequantized) module for many-row inputs; see layers.int4_linear."""
        for name, q in weights.items():
            parent_name, _, attr = name.rpartition(".")
            parent, old = self.get_submodule(parent_name), self.get_submodule(name)
            setattr(parent, attr, Int4Linear(q, getattr(old, "bias", None), dtype, dense=old))

    def _fit_q8_head(self, q: Q8Tensor) -> None:
        """Serve the LM head's few-row products from its 8-bit codes (see layers.q8_head),
        keeping the present head (or the tied embeddings) for many rows."""
        if q.shape != (self.spec.vocab_size, self.spec.hidden_size):
            raise ModelLoadError(f"LM head: 8-bit weight {q.shape} does not fit the model")
        dense = self.lm_head if self.lm_head is not None else TiedHead(self.embed_tokens)
        self.lm_head = Q8Head(q, dense)
