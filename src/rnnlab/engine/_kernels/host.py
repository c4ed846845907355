"""The host CPU as the compiled kernels see it: its name, its vector features, the vector variant in use.

    variant()     "avx512" (512-bit vectors, 32 registers), "avx2" (256-bit, 16) or "sse" (128-bit, 16):
                  from the host's features (llvmlite reports what LLVM compiles for), or RNNLAB_SIMD
    describe()    one line for benchmarks and bug reports: CPU model, LLVM's CPU name, the CPUs (and the cgroup CPU
                  quota, where there is one), the variant, BLAS
"""
from __future__ import annotations

import functools
import os

from rnnlab.errors import ConfigError

VARIANTS = {"avx512": 512, "avx2": 256, "sse": 128}     # vector bits of each variant


def cpu_features() -> set:
    """LLVM's host features that are on, e.g. {'avx2', 'fma', 'avx512f', ...}; empty where LLVM cannot tell
    (then the 128-bit variant, which runs everywhere)."""
    from llvmlite import binding as llvm
    try:
        feats = llvm.get_host_cpu_features()
    except RuntimeError:                        # llvmlite: "failed to get host cpu features" on some hosts
        return set()
    return {k for k, v in feats.items() if v}


@functools.lru_cache(maxsize=1)
def host_variant() -> str:
    f = cpu_features()
    if {"avx512f", "avx512vl"} <= f:
        return "avx512"
    if {"avx2", "fma"} <= f:
        return "avx2"
    return "sse"


def variant() -> str:
    """The vector variant the kernels use: RNNLAB_SIMD if set (any variant runs everywhere: LLVM splits wider
    vectors on narrower hardware), else the host's."""
    env = os.environ.get("RNNLAB_SIMD")
    if env:
        if env not in VARIANTS:
            raise ConfigError(f"RNNLAB_SIMD: expected one of {sorted(VARIANTS)}, got {env!r}")
        return env
    return host_variant()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def blas_info() -> str:
    """NumPy's BLAS as threadpoolctl sees it (library, version, core type, threads) and the OPENBLAS_*
    variables that change its kernel choice."""
    from threadpoolctl import threadpool_info
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    parts = [f"{i.get('internal_api')} {i.get('version')} core {i.get('architecture')} threads {i.get('num_threads')}"
             for i in libs]
    env = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
    return "; ".join(parts) + (f"; {' '.join(f'{k}={v}' for k, v in sorted(env.items()))}" if env else "")


def describe() -> str:
    from llvmlite import binding as llvm
    from rnnlab.engine._kernels.threads import host_quota
    quota = host_quota()
    cpus = f"{os.cpu_count()} CPUs" + (f", CPU quota {quota:g}" if quota is not None else "")
    return (f"CPU {cpu_model()} (LLVM: {llvm.get_host_cpu_name()}, {cpus}), rnnlab vectors "
            f"{variant()} ({VARIANTS[variant()]}-bit), BLAS {blas_info()}")
