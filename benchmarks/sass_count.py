"""SASS instructions per element of the lean kernels' phases, read statically (no GPU).

    python benchmarks/sass_count.py [--arch sm_90] [--mode forward|backward] [--nvdisasm PATH]

Needs nvcc and nvdisasm (``pip install nvidia-cuda-nvdisasm`` provides it; found on PATH or
in that wheel). The kernels' source (``kernels_cu/rows.cuh``, ``channels.cuh``) is copied with
a ``pmevent`` marker after each phase comment, compiled with nvcc for ``--arch``, and
disassembled; the instructions between two markers are that phase's (NOPs left out). The
probe is specialized to one direction (``down = 0``) without resets (the other direction's and the
resets' code drop out). The per-element phases are unrolled, so a phase's count divided by
the elements a thread holds is its cost per element where a thread runs all of it.

Two readings. "Every path": phases with branches (``BRA``) also hold code that most threads
skip (row starts, the guarded loads, maps and walks beside the plain ones, the look-back, the
walk in turn), so their figures are upper bounds. "The hot path": the probe further fixed to
a thread in the middle of a long row holding all its steps (and channels), with no row start
and every map exact (``KERNELS``' ``hot`` lines, ``HOT``); code that only one warp runs (the
look-back; in chan_scan also the publishing) is still counted as if every thread ran it, and
the compiler may place an out-of-line block after a later marker. The memory and
floating-point columns count LDG/STG/LDS/STS and FFMA/FMUL/FADD/DFMA/DMUL/DADD per element.
The markers stop the compiler moving code across phases, so the totals are a little above
the unmarked kernel's. tile_scan (the general kernel) is reported whole: its per-step loops
are not unrolled, so a static count says nothing per element (the issue's reading: ~150).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from linscan.backends.cuda import plan, source

#: Per lean kernel: the comment lines after which a phase begins, with the phase's names; the
#: line the probe's specialization follows; the elements a thread holds, by arithmetic
#: itemsize.
KERNELS = {
    "row_scan": dict(
        phases=(
            ("    // The arrays loaded before", "load, hand over"),
            ("    // BACKWARD walks against", "backward: shift"),
            ("    // This thread's items:", "row starts (h0)"),
            ("    // The map of this thread's items", "thread map"),
            ("    // Block scan of the maps", "block scan"),
            ("    // Publish what the tile can", "publish + look-back"),
            ("    // The states entering this thread's items", "entering state"),
            ("    // Walk the items again", "walk + store"),
        ),
        first="    using T = typename Num<S>::T;\n    constexpr int ITEMS = ROW_ITEMS<T>;",
        elements=plan.ROW_ITEMS,
        hot=(
            ("        if (q == 0 || q + steps >= Tn) {", "        if (false) {"),
            ("    const bool plain = steps == ITEMS && cut == 0u &&",
             "    const bool plain = true ||"),
        ),
    ),
    "chan_scan": dict(
        phases=(
            ("    // This warp's steps:", "addresses"),
            ("    // Every step of every channel loaded", "load"),
            ("    // The row's first step:", "row start (h0)"),
            ("    // Each channel's map of this warp's steps", "maps + warp scan"),
            ("    // Warp 0 speaks for the tile", "publish"),
            ("    // Warp 0 looks back", "look-back"),
            ("    // The states entering this warp's steps", "entering state"),
            ("    // Walk the steps again", "walk + store"),
        ),
        first="    using T = typename Num<S>::T;\n    constexpr int ITEMS = CHAN_ITEMS<T>;",
        elements={size: 4 * items for size, items in plan.CHAN_ITEMS.items()},
        hot=(
            ("valid[c] = c0 + c * WARP < I;", "valid[c] = true;"),
            ("    const bool full = steps == ITEMS && valid[CHAN_LANE - 1] &&",
             "    const bool full = true ||"),
            ("    if (s0 == 0 && steps > 0) {", "    if (false) {"),
        ),
    ),
}
TYPES = {"float": 4, "double": 8}
FP = ("FFMA", "FMUL", "FADD", "DFMA", "DMUL", "DADD")


def nvdisasm_path(given=None) -> str:
    if given:
        return given
    found = shutil.which("nvdisasm")
    if found:
        return found
    for site in sys.path:
        hits = glob.glob(os.path.join(site, "nvidia", "cu*", "bin", "nvdisasm"))
        if hits:
            return hits[0]
    sys.exit("nvdisasm not found: pip install nvidia-cuda-nvdisasm, or pass --nvdisasm")


#: The probe's call: a forward walk (down = 0) without resets, so that the code of the other
#: direction and of resets drops out (both are runtime arguments of the real kernel).
SPECIALIZE = "    down = 0;\n    r = nullptr;\n"


#: The hot path's probe also never walks in turn (every map exact).
HOT = (("    if (__syncthreads_or(", "    if (false && __syncthreads_or("),)


def marked_source(hot: bool = False) -> str:
    """The kernels' source with the phase markers; ``hot``: specialized further to a thread
    in the middle of a long row, holding all its steps (and channels), no row start, every
    map exact, by the ``hot`` replacements of ``KERNELS`` and ``HOT`` (the look-back stays:
    the per-tile fixed cost, run by one warp)."""
    text = source.assemble()
    for kernel, spec in KERNELS.items():
        assert spec["first"] in text, f"{kernel}'s first lines changed: update KERNELS"
        head, _, body = text.partition(spec["first"])  # each marker after the kernel's start
        body = SPECIALIZE + body
        for line, fixed in (spec["hot"] + HOT) if hot else ():
            assert line in body, f"hot-path line {line!r} is gone from {kernel}: update KERNELS"
            body = body.replace(line, fixed, 1)
        for k, (line, _) in enumerate(spec["phases"], start=1):
            assert line in body, f"phase marker {line!r} is gone from {kernel}: update KERNELS"
            body = body.replace(line, f'    asm volatile("pmevent {k};");\n{line}', 1)
        text = head + spec["first"] + "\n" + body
    return text


def disassemble(text: str, kernels: list, arch: str, nvdisasm: str) -> str:
    probe = "\n".join(f"(void*)&{name}," for name in kernels)
    text += f"\nvoid* linscan_sass_probe[] = {{\n{probe}\n}};\n"
    with tempfile.TemporaryDirectory() as folder:
        cu, cubin = Path(folder) / "probe.cu", Path(folder) / "probe.cubin"
        cu.write_text(text)
        subprocess.run(["nvcc", "-std=c++17", f"-arch={arch}", "-cubin", "-o", str(cubin),
                        str(cu)], check=True, capture_output=True)  # fmt: skip
        return subprocess.run([nvdisasm, "-c", str(cubin)], check=True, capture_output=True,
                              text=True).stdout  # fmt: skip


def functions(sass: str) -> dict:
    """{mangled name: [instruction mnemonics]} of a disassembly (NOPs left out)."""
    found, current = {}, None
    for line in sass.splitlines():
        head = re.match(r"\.text\.(\w+):", line.strip())
        if head:
            current = found.setdefault(head.group(1), [])
            continue
        op = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if op and current is not None and op.group(1) != "NOP":
            current.append(op.group(1))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--mode", choices=("forward", "backward"), default="forward")
    parser.add_argument("--nvdisasm")
    args = parser.parse_args(argv)
    tool = nvdisasm_path(args.nvdisasm)
    mode = plan.BACKWARD if args.mode == "backward" else plan.FORWARD
    kernels = [f"linscan::{k}<{t}, {mode}>" for k in KERNELS for t in TYPES]
    kernels += [f"linscan::tile_scan<float, 1, {mode}>"]
    for hot in (False, True):
        found = functions(disassemble(marked_source(hot), kernels, args.arch, tool))
        what = "the hot path" if hot else "every path"
        print(f"SASS for {args.arch}, {args.mode}, static counts of {what} (see the docstring)\n")
        _report(found, args.mode.upper())
    for name, ops in sorted(found.items()):
        if "tile_scan" in name:
            print(f"tile_scan<float, 1, {args.mode.upper()}>: {len(ops)} instructions, per-step "
                  f"loops not unrolled (S = 32 steps a thread at large sizes)")  # fmt: skip
    return 0


def _report(found: dict, mode: str) -> None:
    for name, ops in sorted(found.items()):
        kernel = next((k for k in KERNELS if k in name), None)
        if kernel is None:
            continue
        ctype = "float" if f"{kernel}If" in name else "double"
        spec = KERNELS[kernel]
        items = spec["elements"][TYPES[ctype]]
        print(f"{kernel}<{ctype}, {mode}>: {len(ops)} instructions, {items} elements a thread")
        print(f"  {'phase':22s} {'instr':>6s} {'per elem':>9s} {'memory':>7s} {'fp':>5s}  branches")
        cuts = [k for k, op in enumerate(ops) if op == "PMTRIG"]
        bounds = [0] + cuts + [len(ops)]
        names = ["set-up"] + [phase for _, phase in spec["phases"]]
        body = 0
        for k, phase in enumerate(names):
            part = [op for op in ops[bounds[k] : bounds[k + 1]] if op != "PMTRIG"]
            branches = sum(op.startswith("BRA") for op in part)
            memory = sum(op.split(".")[0] in ("LDG", "STG", "LDS", "STS") for op in part)
            fp = sum(op.split(".")[0] in FP for op in part)
            print(f"  {phase:22s} {len(part):6d} {len(part) / items:9.1f} "
                  f"{memory / items:7.1f} {fp / items:5.1f}  {branches}")  # fmt: skip
            body += len(part)
        print(f"  {'all':22s} {body:6d} {body / items:9.1f}\n")


if __name__ == "__main__":
    sys.exit(main())
