"""Every C signature is written once, in `csrc/kernels.h`: the sources are compiled against
it, and here every ctypes binding is checked against it, argument by argument, and the
decode step's Structures field by field; the dtype codes too."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import torch

from promptcache.model.kernels import (
    build,
    decode_attention,
    decode_step,
    layer_ops,
    q4_matmul,
    q8_matmul,
)
from promptcache.model.kernels.build import CSRC
from promptcache.model.kernels.dtypes import DTYPE_CODES

HEADER = CSRC / "kernels.h"
BINDINGS = (decode_attention, layer_ops, q4_matmul, q8_matmul, decode_step)
SCALARS = {
    "int": ctypes.c_int,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
}

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None, reason="needs a C compiler"
)


def _expanded() -> str:
    """kernels.h with its macros expanded (without the system headers' own lines)."""
    cc = os.environ.get("CC", "cc")
    text = subprocess.run(
        [cc, "-E", "-P", "-x", "c", str(HEADER)], capture_output=True, text=True, check=True
    ).stdout
    return " ".join(text.split())


def _ctype(decl: str, structs: dict[str, Any] | None = None) -> Any:
    """The ctypes type of one C declaration ("const float *scale", "Q4Weight qkv")."""
    if "*" in decl or re.match(r"pc_\w+_fn\b", decl):
        return ctypes.c_void_p
    words = decl.replace("const ", "").split()
    base = words[0]
    if structs is not None and base in structs:
        return structs[base]
    return SCALARS[base]


def _functions(text: str) -> dict[str, tuple[list[Any], Any]]:
    found = {}
    for ret, name, params in re.findall(r"\b(int|void) (pc_\w+)\(([^()]*)\);", text):
        args = [] if params.strip() == "void" else [_ctype(p) for p in params.split(",")]
        found[name] = (args, SCALARS[ret])
    return found


def _structs(text: str) -> dict[str, list[tuple[str, str]]]:
    found = {}
    for body, name in re.findall(r"typedef struct \{([^{}]*)\} (\w+);", text):
        fields = []
        for decl in body.split(";"):
            if decl.strip():
                fields.append((re.findall(r"\w+", decl)[-1], decl.strip()))
        found[name] = fields
    return found


def test_every_binding_matches_the_header() -> None:
    declared = _functions(_expanded())
    bound: dict[str, Any] = {}
    for module in BINDINGS:
        bound.update(module.SIGNATURES)
    assert sorted(bound) == sorted(declared)  # each exported function bound, and no other
    for name, (args, ret) in declared.items():
        got_args, got_ret = bound[name]
        assert [a.__name__ for a in got_args] == [a.__name__ for a in args], name
        assert got_ret is ret, name


def test_decode_step_structs_match_the_header() -> None:
    declared = _structs(_expanded())
    ours = {s.__name__: s for s in decode_step.STRUCTS}
    assert set(ours) <= set(declared)
    for name, struct in ours.items():
        fields = [(f[0], f[1]) for f in struct._fields_]  # type: ignore[misc]
        assert [f for f, _ in fields] == [f for f, _ in declared[name]], name
        for (field, got), (_, decl) in zip(fields, declared[name], strict=True):
            assert got is _ctype(decl, ours), f"{name}.{field}"


def test_dtype_codes_are_the_headers() -> None:
    defines = dict(re.findall(r"#define (PC_\w+) (\d+)", HEADER.read_text()))
    header = {torch.float32: int(defines["PC_F32"]), torch.bfloat16: int(defines["PC_BF16"])}
    assert header == DTYPE_CODES


def test_every_source_includes_the_header() -> None:
    for source in sorted(CSRC.glob("*.c")):
        assert '#include "kernels.h"' in source.read_text(), source.name


@pytest.mark.parametrize("required", [False, True])
def test_a_kernel_that_cannot_build_falls_back_or_fails_loudly(
    required: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `PROMPTCACHE_REQUIRE_KERNELS` a kernel that does not build leaves PyTorch's
    paths serving (None); with it (as in CI) it is an error naming the kernel."""
    monkeypatch.setenv("PROMPTCACHE_CACHE_DIR", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(build.REQUIRE_ENV, "1" if required else "0")
    if not required:
        assert build.library("layer_ops", layer_ops.SIGNATURES) is None
        return
    with pytest.raises(RuntimeError, match="C kernel layer_ops is required"):
        build.library("layer_ops", layer_ops.SIGNATURES)
