"""What CPU this process runs on: the record every benchmark carries and the key of the CPU
tuning cache.

CPU figures do not travel between machines (an AMD EPYC and an Intel Xeon with the same core
count ranked linscan's methods differently), so a figure or a tuning is only meaningful with
the CPU's model, the cores the process may use and the widest vector instructions it has.
On Linux these come from ``/proc/cpuinfo``; elsewhere from :mod:`platform`, with what is not
known said so.
"""

from __future__ import annotations

import functools
import os
import platform

#: Vector extensions, widest first: the first one the CPU lists names its level.
_VECTOR_FLAGS = (
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
    ("avx", "AVX"),
    ("sse2", "SSE2"),
    ("sve", "SVE"),
    ("asimd", "NEON"),
)


def parse_cpuinfo(text: str) -> dict:
    """The fields of the first processor in ``/proc/cpuinfo``'s ``text`` (``model name``,
    ``cpu family``, ``model``, ``flags``; on ARM ``CPU implementer``, ``CPU part`` and
    ``Features``), as a dict of stripped strings."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def vector_level(flags) -> str:
    """The widest vector extension among ``flags`` (an iterable of ``/proc/cpuinfo`` flag
    names), e.g. ``"AVX2"``; ``"unknown"`` if none is recognised."""
    flags = set(flags)
    return next((name for flag, name in _VECTOR_FLAGS if flag in flags), "unknown")


def describe(fields: dict, machine: str, processor: str, cpus: int, usable: int) -> dict:
    """The CPU record from parsed ``/proc/cpuinfo`` ``fields`` (empty where there is none)
    and what :mod:`platform` and :mod:`os` say."""
    model = fields.get("model name") or processor or machine or "unknown"
    if "cpu family" in fields:  # x86: family and model tell generations apart
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    elif "CPU part" in fields:  # ARM
        model += f" (implementer {fields.get('CPU implementer', '?')}, part {fields['CPU part']})"
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {
        "cpu": model,
        "cpus": cpus,
        "usable_cpus": usable,
        "vector": vector_level(flags),
        "machine": machine,
    }


@functools.lru_cache(maxsize=1)
def cpu() -> dict:
    """This machine's CPU record: ``cpu`` (model, with family and model numbers on x86),
    ``cpus`` (logical CPUs), ``usable_cpus`` (those this process may run on), ``vector``
    (widest vector extension: ``AVX-512``, ``AVX2``, ...) and ``machine`` (``x86_64``...)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = parse_cpuinfo(f.read())
    except OSError:
        fields = {}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return describe(fields, platform.machine(), platform.processor(), os.cpu_count() or 1, usable)


def summary(record: dict | None = None) -> str:
    """One line: ``AMD EPYC (family 25, model 1), 2 CPUs (2 usable), AVX2, x86_64``."""
    r = record or cpu()
    usable = f"{r['cpus']} CPUs ({r['usable_cpus']} usable)"
    return f"{r['cpu']}, {usable}, {r['vector']}, {r['machine']}"
