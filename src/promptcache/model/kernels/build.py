"""Build one of the C kernels under `csrc/` at first use and load it with ctypes.

A kernel is compiled once per source (and the csrc/ headers), compiler flags and CPU with
the system's C compiler (`$CC`, else `cc`) into `kernels/` under the cache folder, for
this CPU (`-march=native`) unless `PROMPTCACHE_C_MARCH` names another target
(`x86-64-v3`: what an AVX2-only CPU gets, to measure that path on a newer one). Sources
are compiled with -ffast-math (vectorized expf through libmvec, reassociated sums) but
linked without it: linking with it adds crtfastmath.o, whose constructor turns on
flush-to-zero and denormals-are-zero for the whole process when the library loads.
OpenMP comes from the libgomp PyTorch already loaded; callers pass PyTorch's thread count.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from promptcache.model.device import cpu_identity
from promptcache.model.paths import default_cache_dir

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
FLAGS = ("-O3", "-ffast-math", "-fopenmp", "-fPIC")
LINK = ("-shared", "-fopenmp")
LIBS = ("-lmvec", "-lm")


# A C function's argument types and return type, for ctypes; each binding's SIGNATURES
# are checked against csrc/kernels.h by the tests.
Signature = tuple[list[Any], Any]
P, I32, I64, F32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
REQUIRE_ENV = "PROMPTCACHE_REQUIRE_KERNELS"  # "1": a kernel that cannot be built is an error


def library(
    name: str, signatures: dict[str, Signature], flags: tuple[str, ...] = ()
) -> ctypes.CDLL | None:
    """The kernel `csrc/<name>.c`, built if needed (with `flags` after the usual ones),
    its functions typed as `signatures` say; None (and a warning saying why) where it
    cannot be built or loaded, or a RuntimeError where `PROMPTCACHE_REQUIRE_KERNELS=1` (CI
    sets it, so that a kernel that stops building fails the run instead of falling back)."""
    try:
        lib = ctypes.CDLL(str(build(name, flags)))
    except (OSError, subprocess.SubprocessError) as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            raise RuntimeError(f"C kernel {name} is required ({REQUIRE_ENV}=1): {exc}") from exc
        log.warning("C kernel %s unavailable (%s); PyTorch's paths serve", name, exc)
        return None
    for symbol, (argtypes, restype) in signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def build(name: str, extra: tuple[str, ...] = ()) -> Path:
    """Compile `csrc/<name>.c` unless this source, these flags and this CPU already have it."""
    source = CSRC / f"{name}.c"
    headers = [h.read_bytes() for h in sorted(CSRC.glob("*.h"))]  # included by the sources
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler ({compiler!r} not found; set CC)")
    cflags = (*FLAGS, f"-march={os.environ.get('PROMPTCACHE_C_MARCH') or 'native'}", *extra)
    flags = " ".join(cflags + LINK + LIBS).encode()
    facts = [source.read_bytes(), *headers, flags, cpu_identity().encode(), compiler.encode()]
    key = hashlib.sha256(b"\0".join(facts)).hexdigest()[:16]
    target = default_cache_dir() / "kernels" / f"{name}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, built = Path(tmp) / f"{name}.o", Path(tmp) / target.name
        _run([compiler, *cflags, "-c", str(source), "-o", str(obj)])
        _run([compiler, *LINK, str(obj), "-o", str(built), *LIBS])
        built.replace(target)
    log.info("built the C kernel %s into %s", name, target)
    return target


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
