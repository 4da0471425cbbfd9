#!/usr/bin/env bash
# All of linscan's work for a lent GPU machine, in one call, from the source tree:
#   PYTHONPATH=. bash benchmarks/gpu_check.sh OUTDIR
# Needs CuPy, Numba, pytest and hypothesis installed there; no network. Writes logs and
# tables into OUTDIR and prints a short summary last. Each step has its own time limit so
# that one slow step cannot eat the whole lease. BENCH_SIZE shrinks the CPU benchmark for a
# quick local trial of the script itself.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
summary=()
step() {  # step NAME SECONDS COMMAND...: run, log to OUTDIR/NAME.log, remember the outcome
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    summary+=("$(printf '%-12s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$out/$name.log")")")
}

{ nvidia-smi; echo; lscpu | head -n 20; echo; git log -1 --format='commit %H %cd' 2>/dev/null; date -u; } \
    >"$out/device.txt" 2>&1
step info 60 "$py" -m linscan info
step probe 120 "$py" benchmarks/gpu_probe.py "$out"
step tests 300 "$py" -m pytest -q -x -p no:cacheprovider
step cpu_bench 300 "$py" -m linscan bench --json --quiet --repeat 5 --size "${BENCH_SIZE:-16777216}"
[ -s "$out/cpu_bench.log" ] && "$py" - "$out" <<'PY' >"$out/cpu_bench.md" 2>&1
import json, sys
from linscan import _bench
out = sys.argv[1]
text = open(f"{out}/cpu_bench.log").read()
report = json.loads(text[text.index("{"):])
rows = [_bench.Row(**{**r, "shape": tuple(r["shape"])}) for r in report["rows"]]
print(json.dumps(report["environment"]))
print(_bench.table(rows))
PY

echo
echo "== CPU benchmark on this machine (auto method; x floor = time / np.add of the same arrays)"
grep -E '\| (scan|scan reverse|final_state|scan_backward) \| auto \|' "$out/cpu_bench.md" 2>/dev/null \
    | awk -F'|' '{printf "%-14s %-14s %6s ms %6sx floor %s\n", $2, $5, $7, $9, $10 $11}'
echo "== linscan GPU-machine check: $(grep -o 'NVIDIA [A-Z][A-Za-z0-9 ]*' "$out/device.txt" | head -n 1)"
printf '%s\n' "${summary[@]}"
