#!/usr/bin/env bash
# The checks that need a GPU, in stages that each fit one call of a 10-minute limit, for a session
# that is lent one. Run from the repository root; logs and results go to $OUT (or ./gpu-results),
# flat, at most 8 files a stage:
#
#   bash tests/gpu_runbook.sh build tensor-cores      # ~4 min: do the new kernels compute right?
#   bash tests/gpu_runbook.sh build cuda-cores        # the tiled, direct and depthwise kernels
#   bash tests/gpu_runbook.sh build memcheck          # compute-sanitizer on small configurations
#   bash tests/gpu_runbook.sh build racecheck         # racecheck and synccheck, likewise
#   bash tests/gpu_runbook.sh build bench             # GPU suite, default kernels (tiled for dense layers)
#   bash tests/gpu_runbook.sh build bench-tc          # GPU suite with the tensor cores on
#   bash tests/gpu_runbook.sh build bench-tc-nchw-converted  # the same, every NCHW layer converted
#   bash tests/gpu_runbook.sh build bench-tc-nchw-native     # the same, every NCHW layer in place
#   bash tests/gpu_runbook.sh build bench-tc-rows128 bench-tc-rows64  # the same, one gather row tile forced
#   bash tests/gpu_runbook.sh build bench-direct      # GPU suite with the direct kernels
#   bash tests/gpu_runbook.sh build ncu e2e           # Nsight Compute evidence, end-to-end training
#   bash tests/gpu_runbook.sh build ncu-nchw          # Nsight Compute: NCHW, native and converted
# (The tensor-core and direct stages set SKELETON_CUDA_TENSOR_CORES=1 / SKELETON_CUDA_DIRECT_KERNELS=1
# themselves; do not export either for the whole script.)
#
# "build" is quick when the machine is still warm (the editable build is reused). A stage's
# failure is recorded in its log and in summary.txt, and the next stages still run.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
SUMMARY="$OUT/summary.txt"
PY="${PYTHON:-python3}"  # the device machine's python3 is the one with PyTorch

record() {  # record <stage> <exit status>
  echo "$1: $([ "$2" = 0 ] && echo ok || echo "FAILED (exit $2)")" | tee -a "$SUMMARY"
}

tensor_cores_on() { SKELETON_CUDA_TENSOR_CORES=1 "$@"; }

# compute-sanitizer sees out-of-bounds accesses only outside PyTorch's cached blocks: turn the
# caching allocator off so that every tensor is its own allocation.
sanitize() {  # sanitize <tool> <log> <pytest args...>
  local tool=$1 log=$2
  shift 2
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 290 compute-sanitizer --tool "$tool" --error-exitcode 97 \
    "$PY" -m pytest -q -x -p no:cacheprovider "$@" >"$OUT/$log" 2>&1
}

for stage in "$@"; do
  start=$(date +%s)
  case "$stage" in
    build)
      FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 &&
        "$PY" -c "import skeleton_cuda as s, sys; sys.exit(0 if s.has_cuda_kernels() else 1)"
      record build $?
      ;;
    tensor-cores)
      "$PY" -m pytest tests/test_cuda_tensor_cores.py -q -p no:cacheprovider >"$OUT/tensor-cores.log" 2>&1
      record tensor-cores $?
      ;;
    cuda-cores)
      "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider >"$OUT/cuda-cores.log" 2>&1
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
    bench)
      "$PY" benchmarks/run.py --output cuda.json >"$OUT/bench.log" 2>&1
      record bench $?
      cp benchmarks/results/cuda.json benchmarks/results/cuda.png "$OUT/" 2>/dev/null
      ;;
    bench-tc)
      tensor_cores_on "$PY" benchmarks/run.py --output cuda-tensor-cores.json >"$OUT/bench-tc.log" 2>&1
      record bench-tc $?
      cp benchmarks/results/cuda-tensor-cores.json benchmarks/results/cuda-tensor-cores.png "$OUT/" 2>/dev/null
      ;;
    bench-tc-nchw-converted)
      # Every NCHW layer converts to channels_last and back (by default fp32 runs the NCHW kernels):
      # the fp32-nchw rows against bench-tc's say what the NCHW kernels are worth for float32.
      SKELETON_CUDA_TENSOR_CORES_NCHW=0 tensor_cores_on "$PY" benchmarks/run.py \
        --output cuda-tensor-cores-nchw-converted.json >"$OUT/bench-tc-nchw-converted.log" 2>&1
      record bench-tc-nchw-converted $?
      cp benchmarks/results/cuda-tensor-cores-nchw-converted.json "$OUT/" 2>/dev/null
      ;;
    bench-tc-nchw-native)
      # Every NCHW layer runs the NCHW kernels (by default bf16 / fp16 convert): the bf16-nchw rows
      # against bench-tc's say whether the 16-bit NCHW kernels should become the default.
      SKELETON_CUDA_TENSOR_CORES_NCHW=1 tensor_cores_on "$PY" benchmarks/run.py \
        --output cuda-tensor-cores-nchw-native.json >"$OUT/bench-tc-nchw-native.log" 2>&1
      record bench-tc-nchw-native $?
      cp benchmarks/results/cuda-tensor-cores-nchw-native.json "$OUT/" 2>/dev/null
      ;;
    bench-tc-rows128 | bench-tc-rows64)
      # One gather-GEMM row tile for every layer (by default each layer gets 128 or 64 rows from its
      # block count, tensor_core_kernels.cu: gather_rows_for): per layer, the faster of the two
      # against bench-tc's choice says where the threshold (kBlocksPerSmFor128Rows) belongs.
      rows=${stage#bench-tc-rows}
      SKELETON_CUDA_GATHER_ROWS=$rows tensor_cores_on "$PY" benchmarks/run.py \
        --output "cuda-tensor-cores-rows$rows.json" >"$OUT/$stage.log" 2>&1
      record "$stage" $?
      cp "benchmarks/results/cuda-tensor-cores-rows$rows.json" "$OUT/" 2>/dev/null
      ;;
    bench-direct)
      SKELETON_CUDA_DIRECT_KERNELS=1 "$PY" benchmarks/run.py --output cuda-direct.json >"$OUT/bench-direct.log" 2>&1
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
          SKELETON_CUDA_TENSOR_CORES=$flag ncu --kernel-name regex:"$kernels" --launch-skip 4 --launch-count 4 \
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
          SKELETON_CUDA_TENSOR_CORES=1 SKELETON_CUDA_TENSOR_CORES_NCHW=$native ncu --launch-skip 8 \
            --launch-count 12 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --csv \
            "$PY" benchmarks/profile_layer.py $layer --dtype "$dtype" --nchw >"$OUT/$name.csv" 2>&1
          record "$name" $?
        done
      done
      ;;
    e2e)
      tensor_cores_on "$PY" benchmarks/end_to_end.py >"$OUT/e2e.log" 2>&1
      record e2e $?
      cp benchmarks/results/end-to-end-cuda*.json "$OUT/" 2>/dev/null
      ;;
    *)
      echo "unknown stage '$stage' (build, tensor-cores, cuda-cores, memcheck, racecheck, bench, bench-tc," \
        "bench-tc-nchw-converted, bench-tc-nchw-native, bench-tc-rows128, bench-tc-rows64, bench-direct, ncu, ncu-nchw, e2e)" >&2
      exit 2
      ;;
  esac
  echo "  ($stage took $(( $(date +%s) - start )) s)" | tee -a "$SUMMARY"
done
