#!/usr/bin/env bash
# The checks that need a GPU, as stages, for a session that is lent one. Run from the repository
# root; logs and results go to $OUT (or ./gpu-results), flat (the device tool brings back at most
# 8 files a call).
#
# A lease is 15 device-minutes in all (the machine's start included) and one call at most 10, so
# the first call should be one prepared command that stops on its own in time:
#
#   bash tests/gpu_runbook.sh --budget 530 first-contact   # call with timeout_s=580
#
# first-contact = build, tensor-cores, cuda-cores, bench-quick, in that order: does everything
# compute right on hardware, and the first ratios against cuDNN (7 files). With --budget SECONDS
# every stage runs under a time limit that ends the whole run within SECONDS; a stage cut off is
# recorded as TIMED OUT in summary.txt and the stages after it as skipped. Each pytest log ends with
# its slowest tests (--durations), for sizing the next lease. A follow-up call, right away while the
# machine is warm (30 s), e.g. `--budget 200 build memcheck`, has what time is left.
#
# The stages (any order, any number; each for a later lease once first-contact is green):
#   build                    editable build (quick when the machine is warm and the build is there)
#   tensor-cores             tests/test_cuda_tensor_cores.py: the tensor-core kernels on hardware
#   cuda-cores               tests/test_cuda.py: the tiled, direct and depthwise kernels; and the
#                            CUDA cases of test_transforms.py and test_batching.py
#   bench-quick              GPU suite with the tensor cores on, 15 rounds: dense bf16 channels_last
#                            and fp32 NCHW (TF32), and the depthwise suite
#   memcheck                 compute-sanitizer on small configurations
#   racecheck                racecheck and synccheck, likewise
#   bench                    GPU suite, default kernels (tiled for dense layers)
#   bench-tc                 GPU suite with the tensor cores on
#   bench-tc-nchw-converted  the same, every NCHW layer converted
#   bench-tc-nchw-native     the same, every NCHW layer in place
#   bench-tc-rows128, bench-tc-rows64   the same, one gather row tile forced
#   bench-direct             GPU suite with the direct kernels
#   ncu                      Nsight Compute evidence for the three passes
#   ncu-nchw                 Nsight Compute: NCHW, native and converted
#   e2e                      end-to-end training benchmark
# (The tensor-core and direct stages set SKELETON_CUDA_TENSOR_CORES=1 / SKELETON_CUDA_DIRECT_KERNELS=1
# themselves; do not export either for the whole script.)
#
# A stage's failure is recorded in its log and in summary.txt, and the next stages still run.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
SUMMARY="$OUT/summary.txt"
PY="${PYTHON:-python3}"  # the device machine's python3 is the one with PyTorch

deadline=""
if [ "${1:-}" = --budget ]; then
  case "${2:-}" in
    '' | *[!0-9]*) echo "--budget takes a number of seconds, got '${2:-}'" >&2; exit 2 ;;
  esac
  deadline=$(( $(date +%s) + $2 ))
  shift 2
fi

# Seconds a command may still run: at most $1 (default 600, one device call), and within the budget
# less 10 s for writing the summary.
limit() {
  local cap=${1:-600}
  if [ -z "$deadline" ]; then echo "$cap"; return; fi
  local left=$(( deadline - $(date +%s) - 10 ))
  echo $(( left < cap ? (left > 0 ? left : 0) : cap ))
}

# Runs a command under limit(); exit 124 when it was cut off.
limited() {  # limited <cap seconds> <command...>
  local seconds
  seconds=$(limit "$1")
  shift
  [ "$seconds" -gt 0 ] || return 124
  timeout --kill-after=5 "$seconds" "$@"
}

record() {  # record <stage> <exit status>
  local verdict="FAILED (exit $2)"
  [ "$2" = 0 ] && verdict=ok
  [ "$2" = 124 ] || [ "$2" = 137 ] && verdict="TIMED OUT (budget or limit)"
  echo "$1: $verdict" | tee -a "$SUMMARY"
}

tensor_cores_on() { SKELETON_CUDA_TENSOR_CORES=1 "$@"; }

# One test file on the GPU, all of it (no -x: the first contact wants every failure), slowest last.
gpu_tests() {  # gpu_tests <log> <pytest args...>
  local log=$1
  shift
  limited 600 "$PY" -m pytest "$@" -q -rfE --durations=25 -p no:cacheprovider >"$OUT/$log" 2>&1
}

# compute-sanitizer sees out-of-bounds accesses only outside PyTorch's cached blocks: turn the
# caching allocator off so that every tensor is its own allocation.
sanitize() {  # sanitize <tool> <log> <pytest args...>
  local tool=$1 log=$2
  shift 2
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 limited 290 compute-sanitizer --tool "$tool" --error-exitcode 97 \
    "$PY" -m pytest -q -x -p no:cacheprovider "$@" >"$OUT/$log" 2>&1
}

KNOWN="build tensor-cores cuda-cores bench-quick memcheck racecheck bench bench-tc bench-tc-nchw-converted
  bench-tc-nchw-native bench-tc-rows128 bench-tc-rows64 bench-direct ncu ncu-nchw e2e"
stages=()
for stage in "$@"; do
  if [ "$stage" = first-contact ]; then stages+=(build tensor-cores cuda-cores bench-quick); else stages+=("$stage"); fi
done
for stage in "${stages[@]}"; do  # a typo must not cost a build on the device
  case " $(echo $KNOWN) " in
    *" $stage "*) ;;
    *) echo "unknown stage '$stage' (first-contact, $(echo $KNOWN | sed 's/ /, /g'))" >&2; exit 2 ;;
  esac
done
[ ${#stages[@]} -gt 0 ] || { echo "no stage named (e.g. first-contact)" >&2; exit 2; }

{
  echo "runbook $(date -u +%FT%TZ): ${stages[*]}${deadline:+ (budget ends $(date -u -d @"$deadline" +%T) UTC)}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | head -n 2
  "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())" 2>&1
  nvcc --version 2>&1 | tail -n 1
} >>"$SUMMARY"

for stage in "${stages[@]}"; do
  start=$(date +%s)
  if [ "$(limit)" -lt 20 ]; then
    echo "$stage: skipped (budget spent)" | tee -a "$SUMMARY"
    continue
  fi
  case "$stage" in
    build)
      FORCE_CUDA=1 limited 600 "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 &&
        "$PY" -c "import skeleton_cuda as s, sys; sys.exit(0 if s.has_cuda_kernels() else 1)"
      record build $?
      ;;
    tensor-cores)
      gpu_tests tensor-cores.log tests/test_cuda_tensor_cores.py
      record tensor-cores $?
      ;;
    cuda-cores)
      # and forward AD, torch.func and vmap (transforms.py, batching.py) on CUDA tensors: their
      # "cuda" cases ("cuda" also names every test of test_cuda.py)
      gpu_tests cuda-cores.log tests/test_cuda.py tests/test_transforms.py tests/test_batching.py -k "cuda"
      record cuda-cores $?
      ;;
    memcheck)
      # Small configurations, every kernel family: tiled, direct and depthwise (float32, bf16), then
      # the tensor cores (bf16, float32). (-k matches substrings: "float16" is in "bfloat16".)
      sanitize memcheck memcheck-cuda-cores.log tests/test_cuda.py \
        -k "matches_float64_oracle and (float32 or bfloat16) or test_output_mask or test_empty_batch"
      record memcheck-cuda-cores $?
      tensor_cores_on sanitize memcheck memcheck-tensor-cores.log tests/test_cuda_tensor_cores.py \
        -k "test_matches_float64_oracle and (bfloat16 or float32) or test_float32_channels or test_empty_batch or (nchw_runs and bfloat16 and not c64x64 and not c256x256)"
      record memcheck-tensor-cores $?
      ;;
    racecheck)
      for tool in racecheck synccheck; do
        tensor_cores_on sanitize "$tool" "$tool-tensor-cores.log" tests/test_cuda_tensor_cores.py \
          -k "test_matches_float64_oracle and (bfloat16 or float32) and g1"
        record "$tool-tensor-cores" $?
        sanitize "$tool" "$tool-cuda-cores.log" tests/test_cuda.py -k "matches_float64_oracle and float32"
        record "$tool-cuda-cores" $?
      done
      ;;
    bench-quick)
      # The first ratios against cuDNN (24 layers, not yet timed on a GPU): the tensor cores on the
      # two precisions of issue 4's goals, and the depthwise kernels of issue 3 (bf16 channels_last,
      # fp32 NCHW). Each row is in the log as it finishes; the JSON comes at the end.
      tensor_cores_on limited 600 "$PY" benchmarks/run.py --device cuda --rounds 15 --precision bf16-nhwc --precision fp32-nchw \
        --output cuda-quick.json >"$OUT/bench-quick.log" 2>&1
      record bench-quick $?
      cp benchmarks/results/cuda-quick.json benchmarks/results/cuda-quick.png "$OUT/" 2>/dev/null
      ;;
    bench)
      limited 600 "$PY" benchmarks/run.py --device cuda --output cuda.json >"$OUT/bench.log" 2>&1
      record bench $?
      cp benchmarks/results/cuda.json benchmarks/results/cuda.png "$OUT/" 2>/dev/null
      ;;
    bench-tc)
      tensor_cores_on limited 600 "$PY" benchmarks/run.py --device cuda --output cuda-tensor-cores.json >"$OUT/bench-tc.log" 2>&1
      record bench-tc $?
      cp benchmarks/results/cuda-tensor-cores.json benchmarks/results/cuda-tensor-cores.png "$OUT/" 2>/dev/null
      ;;
    bench-tc-nchw-converted)
      # Every NCHW layer converts to channels_last and back (by default fp32 runs the NCHW kernels):
      # the fp32-nchw rows against bench-tc's say what the NCHW kernels are worth for float32.
      SKELETON_CUDA_TENSOR_CORES_NCHW=0 tensor_cores_on limited 600 "$PY" benchmarks/run.py --device cuda \
        --output cuda-tensor-cores-nchw-converted.json >"$OUT/bench-tc-nchw-converted.log" 2>&1
      record bench-tc-nchw-converted $?
      cp benchmarks/results/cuda-tensor-cores-nchw-converted.json "$OUT/" 2>/dev/null
      ;;
    bench-tc-nchw-native)
      # Every NCHW layer runs the NCHW kernels (by default bf16 / fp16 convert): the bf16-nchw rows
      # against bench-tc's say whether the 16-bit NCHW kernels should become the default.
      SKELETON_CUDA_TENSOR_CORES_NCHW=1 tensor_cores_on limited 600 "$PY" benchmarks/run.py --device cuda \
        --output cuda-tensor-cores-nchw-native.json >"$OUT/bench-tc-nchw-native.log" 2>&1
      record bench-tc-nchw-native $?
      cp benchmarks/results/cuda-tensor-cores-nchw-native.json "$OUT/" 2>/dev/null
      ;;
    bench-tc-rows128 | bench-tc-rows64)
      # One gather-GEMM row tile for every layer (by default each layer gets 128 or 64 rows from its
      # block count, tensor_core_kernels.cu: gather_rows_for): per layer, the faster of the two
      # against bench-tc's choice says where the threshold (kBlocksPerSmFor128Rows) belongs.
      rows=${stage#bench-tc-rows}
      SKELETON_CUDA_GATHER_ROWS=$rows tensor_cores_on limited 600 "$PY" benchmarks/run.py --device cuda \
        --output "cuda-tensor-cores-rows$rows.json" >"$OUT/$stage.log" 2>&1
      record "$stage" $?
      cp "benchmarks/results/cuda-tensor-cores-rows$rows.json" "$OUT/" 2>/dev/null
      ;;
    bench-direct)
      SKELETON_CUDA_DIRECT_KERNELS=1 limited 600 "$PY" benchmarks/run.py --device cuda --output cuda-direct.json >"$OUT/bench-direct.log" 2>&1
      record bench-direct $?
      cp benchmarks/results/cuda-direct.json benchmarks/results/cuda-direct.png "$OUT/" 2>/dev/null
      ;;
    ncu)
      # Tensor-core utilisation, compute and memory throughput of the three passes on two dense
      # layers: the tensor cores (bf16, TF32) and the tiled CUDA-core kernels (fp32).
      for layer in "--channels 256 --size 14" "--channels 64 --size 56"; do
        for run in tc-bf16 tc-fp32 tiled-fp32; do
          name="ncu-$run-$(echo "$layer" | tr -c 'a-z0-9\n' '-' | tr -s '-')"
          if [ "${run%%-*}" = tc ]; then kernels='tc_|sum_partials'; flag=1; else kernels='tiled_|sum_partials'; flag=0; fi
          SKELETON_CUDA_TENSOR_CORES=$flag limited 600 ncu --kernel-name regex:"$kernels" --launch-skip 4 --launch-count 4 \
            --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
            --section Occupancy --csv "$PY" benchmarks/profile_layer.py $layer --dtype "${run#*-}" \
            >"$OUT/$name.csv" 2>&1
          record "$name" $?
        done
      done
      ;;
    ncu-nchw)
      # NCHW on the tensor cores: the NCHW kernels, and the conversion path (its transposes are
      # PyTorch's copy kernels, so every kernel is profiled); fp32 on two layers, bf16 on one.
      for run in "fp32 --channels 256 --size 14" "fp32 --channels 64 --size 56" "bf16 --channels 64 --size 56"; do
        dtype=${run%% *}
        layer=${run#* }
        for native in 1 0; do
          name="ncu-tc-$dtype-nchw-native$native-$(echo "$layer" | tr -c 'a-z0-9\n' '-' | tr -s '-')"
          SKELETON_CUDA_TENSOR_CORES=1 SKELETON_CUDA_TENSOR_CORES_NCHW=$native limited 600 ncu --launch-skip 8 \
            --launch-count 12 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --csv \
            "$PY" benchmarks/profile_layer.py $layer --dtype "$dtype" --nchw >"$OUT/$name.csv" 2>&1
          record "$name" $?
        done
      done
      ;;
    e2e)
      tensor_cores_on limited 600 "$PY" benchmarks/end_to_end.py >"$OUT/e2e.log" 2>&1
      record e2e $?
      cp benchmarks/results/end-to-end-cuda*.json "$OUT/" 2>/dev/null
      ;;
  esac
  echo "  ($stage took $(( $(date +%s) - start )) s)" | tee -a "$SUMMARY"
done
