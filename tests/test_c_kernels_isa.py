"""Our C kernels built for older CPUs than this one (`PROMPTCACHE_C_MARCH`): x86-64-v3
is what an AVX2-only CPU gets (the AVX2 paths, no AVX512 ones), x86-64-v2 has no AVX at
all (the compiler-vectorized loops everywhere). Each build, in a fresh process and cache
folder, must give the reference results: the decode attention against SDPA, the 4-bit
and 8-bit matmuls against the dequantized products, the layer steps against PyTorch's ops,
and the 4-bit decode step in one call against the module-by-module forward (same bits)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptcache.model.kernels.build import CSRC
from promptcache.model.paths import default_cache_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(os.environ.get("CC", "cc")) is None or os.uname().machine != "x86_64",
        reason="needs a C compiler on x86-64",
    ),
]

CHECK = r"""
import torch
import torch.nn.functional as F
from promptcache.model.kernels import decode_attention, layer_ops, q4_matmul, q8_matmul
from promptcache.model.layers.norm import RMSNorm
from promptcache.model.layers.rotary import rotate
from promptcache.model.quant import Q4Tensor, Q8Tensor

g = torch.Generator().manual_seed(0)
for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
    q4 = Q4Tensor(torch.randint(0, 16, (40, 96), generator=g, dtype=torch.uint8),
                  torch.rand(40, 3, generator=g) * 0.02, -torch.rand(40, 3, generator=g) * 0.1)
    x = torch.randn(11, 96, generator=g).to(dtype)
    exact = x.double() @ q4.dequantize().double().t()
    got = q4_matmul.matmul(x, q4_matmul.pack(q4)).double()
    assert ((got - exact).abs() <= exact.abs() * tol + 1e-4).all(), dtype
    q8 = Q8Tensor(torch.randint(-128, 128, (40, 96), generator=g, dtype=torch.int8),
              torch.rand(40, 3, generator=g) * 0.02)
    exact = x.double() @ q8.dequantize().double().t()
    got = q8_matmul.matmul(x, q8_matmul.pack(q8)).double()
    assert (got - exact).abs().max() <= 1e-4 * exact.abs().max(), dtype

    kv, blocks, bs, hd = 2, 12, 16, 64
    k = torch.randn(kv, blocks, bs, hd, generator=g).to(dtype)
    v = torch.randn(kv, blocks, bs, hd, generator=g).to(dtype)
    q = torch.randn(3, 6, hd, generator=g).to(dtype)
    tables = torch.randperm(blocks, generator=g)[:12].view(3, 4)
    lens = torch.tensor([1, 37, 64])
    out = decode_attention.decode_attention(q, k, v, tables, lens).float()
    for b in range(3):
        keys = k[:, tables[b]].reshape(kv, -1, hd)[:, : lens[b]].float().repeat_interleave(3, 0)
        vals = v[:, tables[b]].reshape(kv, -1, hd)[:, : lens[b]].float().repeat_interleave(3, 0)
        ref = F.scaled_dot_product_attention(q[b].float()[:, None], keys, vals)[:, 0]
        torch.testing.assert_close(out[b], ref, atol=tol, rtol=tol)

    qkv = torch.randn(5, 15 * 64, generator=g).to(dtype)
    pools = torch.zeros(2, 3, 4, 16, 64, dtype=dtype)
    cs = torch.randn(2, 5, 1, 64, generator=g).to(dtype)
    qk = rotate(qkv[:, : 12 * 64].view(5, 12, 64), (cs[0], cs[1])).reshape(5, -1)
    want = torch.cat([qk, qkv[:, 12 * 64 :]], 1)
    layer_ops.rope_kv(qkv, (9, 3, 64), (cs[0], cs[1]), pools[0], pools[1], torch.arange(5) * 7)
    assert torch.equal(qkv, want) and torch.equal(pools[1, 2, 1, 5], want[3, -64:]), dtype
if True:
    x, h = torch.randn(2, 8, 576, generator=g).bfloat16()
    norm = RMSNorm(576, 1e-5).bfloat16()
    with torch.no_grad():
        want = norm(x + h)
        got = layer_ops.add_rms_norm(x, h, norm.weight, 1e-5)
    assert (got.float() - want.float()).abs().max() <= want.float().abs().max() * 2**-7

from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import load_model

engine = LLMEngine(
    load_model(None, dtype=torch.float32, weights="q4"),
    EngineConfig(kv_cache_bytes=16 << 20, disk_cache_bytes=0),
)
runner, step = engine.runner, engine.runner.cpu_step
assert step is not None, "the one-call decode step did not build"
forward, same = runner.forward, []

def both_ways(inputs):
    if not step.serves(inputs):
        return forward(inputs)
    runner.cpu_step = None
    want = forward(inputs)
    runner.cpu_step = step
    got = forward(inputs)
    same.append(torch.equal(got, want))
    return got

runner.forward = both_ways
params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
engine.generate(["The capital of France is", "1, 2, 3,"], params)
assert len(same) == 3 and all(same), same
print("paths", q4_matmul.paths(), q8_matmul.paths())
"""


@pytest.mark.parametrize("march,q4_paths", [("x86-64-v3", "['avx2'] []"), ("x86-64-v2", "[] []")])
def test_kernels_built_for_an_older_cpu_give_the_reference_results(
    tmp_path: Path, march: str, q4_paths: str
) -> None:
    env = dict(os.environ, PROMPTCACHE_C_MARCH=march, PROMPTCACHE_CACHE_DIR=str(tmp_path))
    models = default_cache_dir() / "models"  # the bundled model, converted once
    models.mkdir(parents=True, exist_ok=True)
    (tmp_path / "models").symlink_to(models)
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"paths {q4_paths}"
    assert len(list((tmp_path / "kernels").glob("*.so"))) == len(list(CSRC.glob("*.c")))
