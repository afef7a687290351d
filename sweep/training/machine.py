"""What machine a run's numbers came from: CPU model, the instruction set oneDNN may use, library versions.

Two runs of one setting and seed give the same digits only when their matrix products sum in the same order,
and oneDNN picks its kernels from the CPU's instruction sets (AMX on recent Intel Xeons, AVX-512 BF16 on AMD
Zen 4/5, ...), capped by ONEDNN_MAX_CPU_ISA. So every run records these as tags, and a verdict can be checked
against another kernel path (docs: "Answers that hold on another CPU").

The ISA is derived from the CPU's flags and the cap, the way oneDNN's dispatcher orders them; it names the best
family oneDNN may use, not the kernel each product ran (ONEDNN_VERBOSE=1 prints that). Leaf module: torch only.
"""

from __future__ import annotations

import functools
import os
import platform
import re

_CORE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
# oneDNN's ISA names, weakest first, with every CPU flag (Linux /proc/cpuinfo) each one needs
ISAS = (
    ("SSE41", frozenset({"sse4_1"})),
    ("AVX", frozenset({"avx"})),
    ("AVX2", frozenset({"avx2"})),
    ("AVX2_VNNI", frozenset({"avx2", "avx_vnni"})),
    ("AVX512_CORE", _CORE),
    ("AVX512_CORE_VNNI", _CORE | {"avx512_vnni"}),
    ("AVX512_CORE_BF16", _CORE | {"avx512_vnni", "avx512_bf16"}),
    ("AVX512_CORE_FP16", _CORE | {"avx512_vnni", "avx512_bf16", "avx512_fp16"}),
    ("AVX512_CORE_AMX", _CORE | {"avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}),
)
ALIASES = {
    "AVX10_1_512": "AVX512_CORE_FP16",
    "AVX10_1_512_AMX": "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16": "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16": "AVX512_CORE_AMX",
    "ALL": None,
}
CAP_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return (
        model.group(1).strip() if model else platform.machine(),
        frozenset(flags.group(1).split()) if flags else frozenset(),
    )


def cpu_model() -> str:
    """lscpu's "Model name" (from /proc/cpuinfo), e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8480+"."""
    return _cpuinfo()[0]


def isa_cap() -> str | None:
    """ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA), upper-cased; None when unset."""
    for name in CAP_ENV:
        value = os.environ.get(name)
        if value:
            return value.strip().upper()
    return None


def onednn_isa(flags: frozenset[str] | None = None, cap: str | None = None) -> str:
    """The best oneDNN ISA family this CPU has, at most the cap: e.g. AVX512_CORE_AMX on a Sapphire Rapids Xeon,
    AVX512_CORE_BF16 on an AMD Zen 5 or under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16."""
    flags = _cpuinfo()[1] if flags is None else flags
    cap = isa_cap() if cap is None else cap
    cap = ALIASES.get(cap, cap) if cap else None
    names = [name for name, _ in ISAS]
    top = names.index(cap) if cap in names else len(names) - 1
    have = [name for name, needs in ISAS[: top + 1] if needs <= flags]
    return have[-1] if have else "none"


def onednn_version() -> str | None:
    """oneDNN's version as torch was built with it ("3.12.0"), or None without oneDNN."""
    import torch

    m = re.search(r"(?:oneDNN|MKL-DNN) v(\d+(?:\.\d+)+)", torch.__config__.show())
    return m.group(1) if m else None


@functools.cache
def tags() -> dict[str, str]:
    """The tags every run records: cpu_model, onednn_isa, onednn_max_cpu_isa (the cap, or "unset"), the versions
    of torch and oneDNN, and torch's own CPU capability (what its non-oneDNN kernels dispatch to)."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "onednn_isa": onednn_isa(),
        "onednn_max_cpu_isa": isa_cap() or "unset",
        "torch_version": torch.__version__,
        "onednn_version": onednn_version() or "none",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
