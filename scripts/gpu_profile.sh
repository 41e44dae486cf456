#!/usr/bin/env bash
# Nsight Compute profiles of the kernels that miss their H200 targets (2026-12-01, bench/results/gpu-check-*):
# the grouped expert GEMMs (FFMA 42-50% of cuBLAS at the default config, TF32 tiles 8-17%: issue #8) and the
# attention kernels in decode (23-30% of the copy bandwidth for the absorbed form: issue #7). One command on the
# GPU machine, after or instead of gpu_check.sh, with the same carried folders:
#     scripts/gpu_profile.sh OUTDIR          run(command="scripts/gpu_profile.sh $OUT", carry=[".deps", ".gpu-build"])
# Uses .gpu-build/ (scripts/pack_gpu_build.sh) when carried, else build/ (configure and build first). Writes
#   OUTDIR/ncu_expert_ffma.csv   the first 6 grouped-GEMM launches of a default-config training step (fp32 FFMA)
#   OUTDIR/ncu_expert_tf32.csv   the same with --expert-math tf32 (the cp.async-fed tensor-core tiles since
#                                2026-12-01; the register-fed ones were the 8-17%)
#   OUTDIR/ncu_expert_3xtf32.csv the same with --expert-math 3xtf32 (fp32 accuracy: the candidate for fp32's default)
#   OUTDIR/ncu_attention.csv     the decode kernels of `dsk bench attention --config default` (the micro-benchmark's
#                                records: batch 64 and 16, 4,096 cached tokens; LaunchStats gives each grid)
#   OUTDIR/ncu_attention_bwd.csv the first 3xTF32 backward of the large config's explicit training shape
#                                (8 x 512 x 16, fwd+bwd 1.07 ms against PyTorch fp32's 0.79: issue #7's SDPA target):
#                                the dK/dV kernel with dQ fused and the sum of its dQ partials
#   OUTDIR/ncu_attention_bwd_separate.csv  the same backward with dQ in its own kernel (cuda::BackwardDq::kSeparate)
#   OUTDIR/profile_log.txt       ncu's and dsk's messages
# Sections: SpeedOfLight, MemoryWorkloadAnalysis, ComputeWorkloadAnalysis, Occupancy, WarpStateStats, LaunchStats,
# as CSV (--page details). Clocks are left alone (--clock-control none), so the times match the benchmarks'.
# ncu read the hardware counters on this project's Firecracker GPU machines, not on gVisor ones (device KINDS.md);
# a failing profile is recorded in the log and the next one still runs. About 5 minutes in all.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_profile.sh OUTDIR}
mkdir -p "$OUT"
LOG=$OUT/profile_log.txt
: >"$LOG"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
env_lines=$(scripts/deps_env.sh 2>>"$LOG") && eval "$env_lines"
BUILD=build
[ -x .gpu-build/dsk ] && BUILD=.gpu-build
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
[ -n "$ncu" ] || { echo "gpu_profile: ncu not found" | tee -a "$LOG" >&2; exit 1; }
[ -x "$BUILD/dsk" ] || { echo "gpu_profile: no $BUILD/dsk (build first, or carry .gpu-build)" | tee -a "$LOG" >&2; exit 1; }
# cuBLAS from the toolkit when the loader does not find it by itself (a carried build, say)
if ldd "$BUILD/dsk" | grep -q "libcublas.*not found" && [ -d /usr/local/cuda/lib64 ]; then
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
fi

sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis
          --section Occupancy --section WarpStateStats --section LaunchStats)
status=0
# profile NAME KERNEL_REGEX LAUNCH_COUNT DSK_ARGS...: the CSV goes to OUT/NAME.csv, everything else to the log.
# (extra ncu options may come first, ended by "--")
profile() {
  local name=$1 regex=$2 count=$3
  shift 3
  local extra=()
  if [[ " $* " == *" -- "* ]]; then
    while [ "$1" != "--" ]; do extra+=("$1"); shift; done
    shift
  fi
  echo "=== $name: ncu ${extra[*]} -k regex:$regex -c $count dsk $*" >>"$LOG"
  timeout --kill-after=10 150 "$ncu" "${sections[@]}" "${extra[@]}" --clock-control none --kernel-name "regex:$regex" \
    --launch-count "$count" --csv --page details --log-file "$OUT/$name.csv" "$BUILD/dsk" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc" >>"$LOG"
  ((rc == 0)) || status=1
}
train=(bench train --config default --device cuda --steps 1 --warmup 0 --profile-steps 0)
profile ncu_expert_ffma 'grouped_gemm_kernel|weight_grad_kernel' 6 "${train[@]}" --expert-math ffma
profile ncu_expert_tf32 'grouped_gemm_kernel|weight_grad_kernel' 6 "${train[@]}" --expert-math tf32
profile ncu_expert_3xtf32 'grouped_gemm_kernel|weight_grad_kernel' 6 "${train[@]}" --expert-math 3xtf32
# Decode instantiations only (ncu matches the demangled name with its template arguments): the key-split decode
# kernel (the default since 2026-12-01), the forward kernels' decode blocks it replaced (the FFMA kernel's 8- and
# 16-row blocks, the register tensor-core kernel's one-warp blocks; training uses 64 rows and 4 warps), and the
# split-K combine. `dsk bench attention` first runs a model decode sweep, kept to a few launches here, then the
# kernel micro-benchmark, whose decode records (batch 64, 4,096 cached tokens) are the ones to read.
decode_regex='attention_decode_kernel|attention_forward_kernel<8, [12], |attention_forward_mma_kernel<[12], (false|true), 1>|attention_combine_kernel'
profile ncu_attention "$decode_regex" 120 --kernel-name-base demangled -- bench attention --config default \
  --device cuda --contexts 2 --batches 1 --steps 1 --layers 1
# The backward kernels' 3xTF32 instantiations (kSplit = true): the default at width 64, dQ fused into dK/dV
# (<1, NMV, true, true>) and the sum of its partials; then the same record with dQ in its own kernel
# (dQ <NMQ, true>, dK/dV <NMQ, NMV, true, false>). The explicit records come first.
bwd_args=(--kernel-name-base demangled -- bench attention --config large --device cuda --contexts 2 --batches 1
          --steps 1 --layers 1)
profile ncu_attention_bwd 'attention_dkv_mma_kernel<1, [12], true, true>|attention_dq_sum_kernel' 2 "${bwd_args[@]}"
profile ncu_attention_bwd_separate 'attention_(dq_mma_kernel<[12], true>|dkv_mma_kernel<[12], [12], true, false>)' 2 \
  "${bwd_args[@]}"
tail -n 40 "$LOG"
exit $status
