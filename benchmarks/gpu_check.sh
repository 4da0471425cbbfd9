#!/usr/bin/env bash
# All of linscan's work for a lent GPU machine, in one call, from the source tree:
#   PYTHONPATH=. bash benchmarks/gpu_check.sh OUTDIR
# Needs CuPy, Numba, pytest and hypothesis installed there (compute-sanitizer for the sanitizer
# steps; JAX and PyTorch for the peers, if present); no network. Writes logs and tables into
# OUTDIR and prints a short summary last. Each step has its own time limit so that one slow
# step cannot eat the whole lease. STEPS selects steps (default: all, in this order):
#   info warm gpu_tests fast_tests fast_ab matrix_ab gpu_bench memcheck fast_memcheck
#   matrix_memcheck racecheck fast_racecheck synccheck fast_synccheck initcheck fast_initcheck
#   profile cpu_tests cpu_bench
# (warm compiles every kernel module at once, in parallel, into CuPy's disk cache). The fast_
# steps run the opt-in lean kernels (LINSCAN_FAST_KERNELS=1, issue 17): the GPU tests and the
# sanitizers with them, and benchmarks/gpu_ab.py, which checks them against the oracle and
# times them against the general kernel and a copy. Their default flips only after a run shows
# them correct (fast_tests, fast_* sanitizers clean) and faster (fast_ab). The matrix_ steps
# run linscan.matscan's opt-in GPU kernels (LINSCAN_GPU_MATRIX=1, issue 21; their tests,
# tests/cuda/test_gpu_matrix.py, are among gpu_tests): benchmarks/gpu_matrix.py checks them
# against the CPU and times them against a copy and the CPU, and again, small, under memcheck.
# Not in the default list, for a second call: suite_memcheck suite_racecheck suite_synccheck
# suite_initcheck run the GPU tests of linscan itself (tests/cuda/test_gpu.py and the tests
# both backends share, marked gpu on the GPU: test_properties, test_behaviour, test_hardening;
# not the slow tests; 10 hypothesis examples each) under each compute-sanitizer tool, with
# CuPy's memory pool on (the default steps' gpu_sanitize.py turns it off, so that an access
# out of bounds cannot land in a neighbouring array), e.g.
#   STEPS="warm suite_memcheck suite_synccheck suite_initcheck".
# The device machine has no Dask: for the Dask tests with CuPy chunks, install it here into a
# folder (`pip install --target .device-site "dask[array]"`, pure Python; .device-site is
# git-ignored), carry that folder, and run with PYTHONPATH=.:.device-site. Likewise for the
# CUB peer of fast_ab and gpu_bench (cuda.compute; skipped where missing): `pip install
# --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_26_x86_64
# --target .device-site cuda-cccl==1.1.1` (32 MB installed; it uses the machine's numba-cuda,
# cuda-bindings and cuda-core; cuda-cccl 1.2 wants numba-cuda-mlir, a 71 MB wheel).
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX (a peer) must leave the GPU to the others
py=${PYTHON:-python3}
all="info warm gpu_tests fast_tests fast_ab matrix_ab gpu_bench memcheck fast_memcheck
     matrix_memcheck racecheck fast_racecheck synccheck fast_synccheck initcheck fast_initcheck
     profile cpu_tests cpu_bench"
steps=" $(echo ${STEPS:-$all}) "
summary=()
step() {  # step NAME SECONDS COMMAND...: run, log to OUTDIR/NAME.log, remember the outcome
    local name=$1 limit=$2
    shift 2
    [[ $steps == *" $name "* ]] || return 0
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    summary+=("$(printf '%-12s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(grep -v '^\s*$' "$out/$name.log" | tail -n 1 | cut -c1-150)")")
}
sanitize=(compute-sanitizer --error-exitcode 9 --print-limit 20 --tool)  # + TOOL, the program

{ nvidia-smi; echo; lscpu | head -n 20; echo; git log -1 --format='commit %H %cd' 2>/dev/null; date -u; } \
    >"$out/device.txt" 2>&1
step info 60 "$py" -m linscan info
step warm 120 "$py" -c "
from linscan.backends.cuda import source
for name, mode, seconds in source.warm(): print(f'{name:11s} mode {mode}: {seconds:5.1f} s')
print('every kernel module compiled')"
# Every test marked gpu: tests/cuda/test_gpu.py, the shared tests' GPU cases (the device
# fixture), PyTorch and JAX on the GPU, Dask arrays of CuPy chunks (skipped where Dask is not
# installed).
step gpu_tests 300 "$py" -m pytest -q -p no:cacheprovider --maxfail=20 -m gpu tests
fast=(env LINSCAN_FAST_KERNELS=1)
step fast_tests 300 "${fast[@]}" "$py" -m pytest -q -p no:cacheprovider --maxfail=20 -m gpu tests
step fast_ab 150 "$py" benchmarks/gpu_ab.py --json "$out/fast_ab.json"
step matrix_ab 150 "$py" benchmarks/gpu_matrix.py --json "$out/matrix_ab.json"
step gpu_bench 200 "$py" -m linscan bench --gpu --json
[ -s "$out/gpu_bench.log" ] && "$py" - "$out" <<'PY' >"$out/gpu_bench.md" 2>&1
import json, sys
from linscan._bench import gpu
text = open(f"{sys.argv[1]}/gpu_bench.log").read()
start = text.rfind("\n{") + 1 if not text.startswith("{") else 0
print(gpu.markdown(json.loads(text[start:])))
PY
for tool in memcheck racecheck synccheck initcheck; do
    limit=$([ $tool = racecheck ] && echo 150 || echo 120)
    step $tool "$limit" "${sanitize[@]}" $tool "$py" benchmarks/gpu_sanitize.py
    step fast_$tool "$limit" "${fast[@]}" "${sanitize[@]}" $tool "$py" benchmarks/gpu_sanitize.py
    [ $tool = memcheck ] && step matrix_memcheck 120 "${sanitize[@]}" memcheck "$py" \
        benchmarks/gpu_matrix.py --quick
done
suite=(-m pytest -q -p no:cacheprovider -m "gpu and not slow" --hypothesis-profile=sanitize
       tests/cuda/test_gpu.py tests/api/test_properties.py tests/api/test_behaviour.py
       tests/integration/test_hardening.py)
step suite_memcheck 300 "${sanitize[@]}" memcheck "$py" "${suite[@]}"
step suite_racecheck 540 "${sanitize[@]}" racecheck "$py" "${suite[@]}"
step suite_synccheck 300 "${sanitize[@]}" synccheck "$py" "${suite[@]}"
step suite_initcheck 300 "${sanitize[@]}" initcheck "$py" "${suite[@]}"
step profile 60 "$py" -c "
import cProfile, pstats, cupy, linscan
a = cupy.random.random((1, 65536), dtype=cupy.float32); x = a.copy(); h = a.copy()
for _ in range(200): linscan.scan(a, x, out=h)
cProfile.run('for _ in range(2000): linscan.scan(a, x, out=h)', '/tmp/linscan.prof')
pstats.Stats('/tmp/linscan.prof').sort_stats('tottime').print_stats(18)
print('profile of 2000 small scans done')"
step cpu_tests 200 "$py" -m pytest -q -x -p no:cacheprovider -m "not gpu" -k "not compile"
step cpu_bench 300 "$py" -m linscan bench --json --quiet --repeat 5 --size "${BENCH_SIZE:-16777216}"

echo
if [ -s "$out/gpu_bench.md" ]; then
    echo "== GPU benchmark (of copy: D2D copy time of the same bytes / our time)"
    # bandwidth: | case | shape | op | bytes/elem | ms | of D2D copy |; dtypes: a dtype column more
    grep -E '^\| (one row|1024 rows|1024 channels) \|' "$out/gpu_bench.md" | awk -F'|' 'NF == 8 {printf "%-14s %-14s %-14s %7s ms %5s\n", $2, $3, $4, $6, $7}'
    grep -E '^\| (one row|1024 channels) \|[^|]*\| [a-z0-9+ ]+ \| scan \|' "$out/gpu_bench.md" | awk -F'|' 'NF == 9 {printf "%-14s %-17s %-14s %5s of copy\n", $2, $4, $5, $8}'
    grep -E '^\| 65536 \|' "$out/gpu_bench.md" | awk -F'|' '{printf "Table 1 T=65536 C=%-4s speedup %8s (paper %s)\n", $3, $7, $8}'
    grep -E '^\| 1 x 2\^16 \| scan out=' "$out/gpu_bench.md"
    grep -E '^\| (cupy|jax|torch)' "$out/gpu_bench.md" | cut -c1-160
fi
echo "== linscan GPU-machine check: $(grep -o 'NVIDIA [A-Z][A-Za-z0-9 ]*' "$out/device.txt" | head -n 1)"
printf '%s\n' "${summary[@]}"
