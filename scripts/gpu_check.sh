#!/usr/bin/env bash
# The GPU runner's whole job in one command:   scripts/gpu_check.sh OUTDIR
#
# On a bare GPU machine (nvcc 13, cmake, ninja, python3; no network, no Debian dev packages) with .deps/ carried
# along (scripts/fetch_gpu_deps.sh made it on a development machine): configures and builds dsk for sm_90
# (Release, ninja, -j16), records the GPU and driver, runs every [cuda] test and then the CPU suite, runs the
# kernel micro-benchmarks (which measure the GPU's copy bandwidth and GEMM peaks first), the training step with
# TF32 on both sides, and, in the time left, the kernel tests under compute-sanitizer memcheck; it writes
#   OUTDIR/report.md, OUTDIR/report.json   the summary: GPU, driver, each test's result, each benchmark
#   OUTDIR/cuda_tests.xml, cpu_tests.xml   JUnit results      OUTDIR/bench_kernels.json   raw benchmark JSON
#   OUTDIR/bench_moe.json                  MoE layer benchmark (grouped vs expert loop, grouped vs dense GEMM)
#   OUTDIR/nvidia_smi.txt                  GPU description    OUTDIR/log.txt              every stage's log
# The attention benchmarks (dsk bench attention, scripts/bench_torch_attention.py) are embedded in report.json.
# (8 files: the device tool returns at most 8.) A failing stage is recorded and the next one still runs; the
# report is always written. Stages share a deadline so the whole run stays under 8 minutes.
#
# With the device tool:  run(command="scripts/gpu_check.sh $OUT", carry=[".deps"], timeout_s=540)
# To save the build's two minutes there (then every stage fits the deadline), carry sm_90 binaries built here
# (scripts/pack_gpu_build.sh): carry=[".deps", ".gpu-build"]. DSK_GPU_CHECK_SECONDS sets the deadline (default 450); DSK_GPU_CHECK_SKIP="stage
#   ..." leaves stages out (a second run in the same lease: memcheck bench_attention, say). DSK_PG_CSV=FILE adds a
#   2000-step default-config run on the Paul Graham essays (copy the CSV into a git-ignored folder and carry it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
DEADLINE=$((START + ${DSK_GPU_CHECK_SECONDS:-450}))
WORK=$(mktemp -d)
STAGES=$WORK/stages.tsv
LOG=$OUT/log.txt
: >"$STAGES"
: >"$LOG"
BUILD=${DSK_GPU_BUILD_DIR:-build}

# stage NAME LIMIT_SECONDS COMMAND...: runs with a timeout (capped by the deadline), logs, records rc and time.
stage() {
  local name=$1 limit=$2
  shift 2
  local now left t0 rc
  # DSK_GPU_CHECK_SKIP="stage ..." leaves stages out (a rerun within the same lease, say)
  if [[ " ${DSK_GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
    echo "=== $name: skipped (DSK_GPU_CHECK_SKIP)" >>"$LOG"
    return 1
  fi
  now=$(date +%s)
  left=$((DEADLINE - now))
  if ((left < 10)); then
    printf '%s\t%s\t%s\n' "$name" "skipped" 0 >>"$STAGES"
    echo "=== $name: skipped (deadline)" >>"$LOG"
    return 1
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s): $*" >>"$LOG"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  # Long logs (the build) keep their head and tail only.
  if (($(wc -l <"$WORK/$name.log") > 400)); then
    head -n 100 "$WORK/$name.log" >>"$LOG"
    echo "... ($(wc -l <"$WORK/$name.log") lines, middle cut) ..." >>"$LOG"
    tail -n 250 "$WORK/$name.log" >>"$LOG"
  else
    cat "$WORK/$name.log" >>"$LOG"
  fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STAGES"
  echo "=== $name: rc=$rc in $(($(date +%s) - t0))s" >>"$LOG"
  return $rc
}

# ---- environment ------------------------------------------------------------------------------------------
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
deps_ok=1
if env_lines=$(scripts/deps_env.sh 2>>"$LOG"); then
  eval "$env_lines"
else
  deps_ok=0
  DSK_DEPS_PREFIX=""
fi

describe_gpu() {
  nvidia-smi
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,pcie.link.gen.max \
    --format=csv
  echo
  echo "nvcc: $(nvcc --version | tail -n 2 | tr '\n' ' ')"
  echo "cmake: $(cmake --version | head -n 1)"
  echo "g++: $(g++ --version | head -n 1)"
  echo "ninja: $(ninja --version 2>/dev/null)"
  echo "deps: $( [ "$deps_ok" = 1 ] && tr '\n' ' ' <.deps/PACKAGES || echo missing)"
}
export deps_ok BUILD DSK_DEPS_PREFIX
stage gpu_info 30 bash -c "$(declare -f describe_gpu); describe_gpu"
cp "$WORK/gpu_info.log" "$OUT/nvidia_smi.txt"

# ---- configure and build ------------------------------------------------------------------------------------
configure() {
  # (no CPU emulator build here: the real GPU runs the [cuda] tests)
  local args=(-S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSK_CUDA_ARCH=90 -DDSK_CUDA_EMULATOR=OFF
              -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
  [ -n "${DSK_DEPS_PREFIX:-}" ] && args+=(-DCMAKE_PREFIX_PATH="$DSK_DEPS_PREFIX")
  cmake "${args[@]}"
}
# Device time is scarce (about 15 minutes a session), so binaries built for sm_90 on a development machine can
# travel along (scripts/pack_gpu_build.sh -> .gpu-build/, carried): when they load and run here, the configure and
# build stages are skipped. They were compiled with that machine's source folder baked in (DSK_SOURCE_DIR and
# DSK_TEST_DIR: the data and the test fixtures), so that path is made to point at this checkout. Anything amiss
# (a library that does not load, a path that is taken) falls back to building here.
use_prebuilt() {
  local dir=$1 src
  src=$(cat "$dir/SOURCE_DIR")
  if [ "$(cd "$src" 2>/dev/null && pwd -P)" != "$(pwd -P)" ]; then
    # (-L too: a dangling link is not -e, and ln would fail on it)
    { [ -e "$src" ] || [ -L "$src" ]; } && { echo "prebuilt: $src exists and is another folder"; return 1; }
    mkdir -p "$(dirname "$src")" && ln -s "$(pwd -P)" "$src" || return 1
  fi
  # cuBLAS: the toolkit's own, where the loader does not find it by itself (not exported wider: PyTorch brings its own).
  if ldd "$dir/dsk_tests" | grep -q "libcublas.*not found" && [ -d /usr/local/cuda/lib64 ]; then
    echo "prebuilt: cuBLAS from /usr/local/cuda/lib64"
    touch "$dir/NEEDS_CUDA_LIB64"
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
  fi
  # The tests run the dsk binary where the build left it: put it there.
  local bin_dir
  bin_dir=$(cat "$dir/BINARY_DIR")
  # (-sfn: a dsk left there by an earlier build in the same lease would not be the carried one)
  mkdir -p "$bin_dir" && ln -sfn "$(pwd -P)/$dir/dsk" "$bin_dir/dsk" || return 1
  echo "prebuilt from commit $(cat "$dir/COMMIT"), this checkout is at $(git rev-parse HEAD 2>/dev/null || echo '?')"
  local names
  # (Catch2 v2 exits with the number of tests listed, so the output is what tells the binary loaded and ran)
  names=$("$dir/dsk_tests" "[cuda]" --list-test-names-only)
  [ -n "$names" ] || { echo "prebuilt: dsk_tests did not run"; return 1; }
  echo "$(wc -l <<<"$names") [cuda] tests listed"
  "$dir/dsk" --version
}
built=0
PREBUILT=.gpu-build
if [ -x "$PREBUILT/dsk_tests" ] && [ -x "$PREBUILT/dsk" ] &&
   stage prebuilt 30 bash -c "$(declare -f use_prebuilt); use_prebuilt $PREBUILT"; then
  BUILD=$PREBUILT
  built=1
  [ -e "$PREBUILT/NEEDS_CUDA_LIB64" ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
elif stage configure 120 bash -c "$(declare -f configure); configure"; then
  stage build 330 cmake --build "$BUILD" -j "${DSK_GPU_JOBS:-16}" && built=1
fi

# ---- tests: every [cuda] test, then the CPU suite -----------------------------------------------------------
# On the GPU machine a [cuda] test that finds no usable GPU fails instead of skipping (tests/cuda/cuda_testing.h).
export DSK_REQUIRE_GPU=1
if ((built)); then
  stage cuda_tests 150 "$BUILD/dsk_tests" "[cuda]" -r junit -o "$OUT/cuda_tests.xml"
  # The JUnit reporter writes its file only at the end: none means dsk_tests died (a crash, a hang). Then each
  # [cuda] test runs alone, so the culprit has a name and the others still get a result: "rc<TAB>name" lines in
  # $WORK/cuda_one_by_one.tsv, shown in the report. (Catch reads ',' in a test spec as "or": escaped.)
  if [ ! -s "$OUT/cuda_tests.xml" ]; then
    one_by_one() {
      "$BUILD/dsk_tests" "[cuda]" --list-test-names-only | while IFS= read -r name; do
        [ -n "$name" ] || continue
        timeout --kill-after=5 60 "$BUILD/dsk_tests" "${name//,/\\,}" -w NoTests >"$1/one.log" 2>&1
        rc=$?
        printf '%s\t%s\n' "$rc" "$name" | tee -a "$1/cuda_one_by_one.tsv"
        ((rc == 0)) || tail -n 30 "$1/one.log"
      done
    }
    stage cuda_tests_one_by_one 150 bash -c "$(declare -f one_by_one); one_by_one $WORK"
  fi
  # ---- whole-model training speed, dsk and PyTorch eager side by side (default config, batch 8) -------------
  # Kept in $WORK and embedded in report.json (OUT is limited to 8 files).
  stage bench_train 90 "$BUILD/dsk" bench train --config default --device cuda --steps 10 --warmup 2 \
    --json "$WORK/bench_train.json"
fi
stage bench_torch_train 120 python3 scripts/bench_torch_train.py --config default --device cuda --steps 10 \
  --warmup 2 --json "$WORK/bench_torch_train.json"
if ((built)); then
  # ---- kernel micro-benchmarks (the GPU's peaks are measured first, inside) ---------------------------------
  stage bench_kernels 180 "$BUILD/dsk" bench kernels --device cuda --json "$OUT/bench_kernels.json"
  # Attention: decode sweep of the models and the kernels (training TFLOP/s, decode GB/s); embedded in report.json.
  stage bench_attention 120 "$BUILD/dsk" bench attention --device cuda --json "$WORK/bench_attention.json"
fi
# PyTorch's scaled_dot_product_attention on the same explicit shapes, for the side-by-side table. Needs no build;
# a failure (no torch, no GPU for torch) is recorded and the report still gets written.
stage bench_torch_attention 90 python3 scripts/bench_torch_attention.py --device cuda \
  --json "$WORK/bench_torch_attention.json"
if ((built)); then
  # ---- MoE layer: grouped path vs a loop over experts, grouped GEMMs vs dense cuBLAS ------------------------
  stage bench_moe 120 "$BUILD/dsk" bench moe --device cuda --json "$OUT/bench_moe.json"
  # ---- the training step again with TF32 tensor cores on both sides (dsk: cuBLAS TF32 + the grouped TF32 tile) --
  stage bench_train_tf32 60 "$BUILD/dsk" bench train --config default --device cuda --steps 10 --warmup 2 --tf32 \
    --json "$WORK/bench_train_tf32.json"
  # ---- fp32 again, dsk's own tiles (expert GEMMs, attention) in 3xTF32: near-fp32 accuracy on the tensor cores --
  stage bench_train_3xtf32 60 "$BUILD/dsk" bench train --config default --device cuda --steps 10 --warmup 2 \
    --expert-math 3xtf32 --attention-math 3xtf32 --json "$WORK/bench_train_3xtf32.json"
fi
stage bench_torch_train_tf32 90 python3 scripts/bench_torch_train.py --config default --device cuda --steps 10 \
  --warmup 2 --tf32 --json "$WORK/bench_torch_train_tf32.json"
if ((built)); then
  # ---- dsk train --device cuda end to end, each shipped config, on the embedded Tiny Shakespeare: a few hundred
  # steps with evaluations, a checkpoint and the closing sample (their logs land in log.txt) ----------------------
  train_configs() {
    local cfg steps
    for cfg in small default large; do
      # (large: 0.5 s a step in fp32, and about a minute of start-up on the H200 machine before the weights were
      # initialised on every core)
      steps=300
      [ "$cfg" = large ] && steps=60
      "$BUILD/dsk" train --config "$cfg" --device cuda --set max_steps=$steps --out "$WORK/train-$cfg" \
        --sample-tokens 40 || return 1
    done
  }
  stage train_configs 120 bash -c "$(declare -f train_configs); BUILD=$BUILD WORK=$WORK train_configs"
  # ---- the original project's corpus, when given (DSK_PG_CSV: paul_graham_essays.csv, which is not in the
  # repository): the default config for 2000 steps, the start of the original's headline run ---------------------
  if [ -n "${DSK_PG_CSV:-}" ]; then
    train_pg() {
      "$BUILD/dsk" prepare --input "$DSK_PG_CSV" --out "$WORK/pg-data" &&
        "$BUILD/dsk" train --config default --data "$WORK/pg-data" --device cuda --set max_steps=2000 \
          --set eval_every=500 --set log_every=100 --out "$WORK/pg-run" --sample-tokens 60
    }
    stage train_pg 150 bash -c "$(declare -f train_pg); BUILD=$BUILD WORK=$WORK DSK_PG_CSV=$DSK_PG_CSV train_pg"
  fi
  # The CPU suite last: CI runs it too; here it only shows the GPU build's CPU side is sound.
  stage cpu_tests 120 "$BUILD/dsk_tests" "~[cuda]" -r junit -o "$OUT/cpu_tests.xml"
  # ---- with whatever time is left: the kernel tests under compute-sanitizer memcheck (out-of-bounds and
  # misaligned accesses that a right answer can hide). Its "ERROR SUMMARY" and first reports land in log.txt.
  # (It worked on this project's Firecracker GPU machines, not on gVisor ones: a failure here may be the tool's.)
  # Test by test (memcheck slows kernels 10-100x), as many as fit: a test it reports on fails the stage; running
  # out of time does not (the log says how far it got).
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ -x "$sanitizer" ]; then
    memcheck_tests() {
      local sanitizer=$1 stop=$(($(date +%s) + $2)) checked=0 bad=0
      while IFS= read -r name; do
        [ -n "$name" ] || continue
        (($(date +%s) + 20 > stop)) && { echo "memcheck: out of time after $checked tests"; break; }
        timeout $((stop - $(date +%s))) "$sanitizer" --tool memcheck --error-exitcode 86 --print-limit 10 \
          "$BUILD/dsk_tests" "${name//,/\\,}" >"$WORK/memcheck_one.log" 2>&1
        rc=$?
        if ((rc != 0)); then
          ((rc == 124)) && { echo "memcheck: out of time in: $name"; break; }
          bad=$((bad + 1))
          echo "memcheck FAILED (rc $rc): $name"
          grep -E "ERROR SUMMARY|Invalid|Address|at 0x|by thread" "$WORK/memcheck_one.log" | head -n 12
        fi
        checked=$((checked + 1))
      done < <("$BUILD/dsk_tests" "[cuda]~[model]~[bench]" --list-test-names-only)
      echo "memcheck: $checked tests checked, $bad with errors"
      ((bad == 0))
    }
    stage memcheck 150 bash -c "$(declare -f memcheck_tests); BUILD=$BUILD WORK=$WORK memcheck_tests $sanitizer 140"
  fi
fi

# ---- report (always) ----------------------------------------------------------------------------------------
echo "=== total $(($(date +%s) - START))s" >>"$LOG"
python3 scripts/gpu_report.py "$OUT" "$STAGES" "$(($(date +%s) - START))" "$WORK" >>"$LOG" 2>&1 || {
  echo "gpu_report.py failed; raw stages:" >>"$LOG"
  cat "$STAGES" >>"$LOG"
  { echo "# gpu_check (report generator failed)"; echo; echo '```'; cat "$STAGES"; echo '```'; } >"$OUT/report.md"
}
# Exit status: 0 only when every stage passed.
status=0
while IFS=$'\t' read -r _name rc _secs; do [ "$rc" = 0 ] || status=1; done <"$STAGES"
rm -rf "$WORK"
cat "$OUT/report.md"
exit $status
