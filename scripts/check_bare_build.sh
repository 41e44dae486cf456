#!/usr/bin/env bash
# Rehearses scripts/gpu_check.sh HERE, on a development machine, as the bare GPU machine would see it:
#     scripts/check_bare_build.sh [OUTDIR]          (root; default OUTDIR /tmp/dsk-bare-check)
# Inside a private mount namespace, an overlay on /usr whites out every file of the Debian packages dsk's build
# takes from the system (fmt, nlohmann-json, Catch2, OpenBLAS, libgfortran), so the configure, build and link can
# only succeed from .deps/ (scripts/fetch_gpu_deps.sh). Then gpu_check.sh runs with 2 jobs and a long deadline
# into build-bare/. Without a GPU the [cuda] tests and GPU benchmarks fail (DSK_REQUIRE_GPU=1), which is expected;
# what this checks is that `configure`, `build` and `cpu_tests` pass and that the report is written.
# Nothing outside the namespace changes: /usr is untouched once the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/dsk-bare-check}
[ "$(id -u)" = 0 ] || { echo "check_bare_build: needs root (mount namespace + overlay)" >&2; exit 2; }
[ -d .deps/usr ] || { echo "check_bare_build: .deps is missing: run scripts/fetch_gpu_deps.sh first" >&2; exit 2; }

ov=$(mktemp -d)
trap 'rm -rf "$ov"' EXIT
mkdir -p "$ov/upper" "$ov/work"
# A character device 0/0 in the upper layer is overlayfs's "whiteout": the file is absent in the merged /usr.
whiteout() {
  local rel=${1#/usr/}
  mkdir -p "$ov/upper/$(dirname "$rel")"
  mknod "$ov/upper/$rel" c 0 0 2>/dev/null || true
}
pkgs=(catch2 libfmt-dev libfmt9 nlohmann-json3-dev libopenblas-dev libopenblas-openmp-dev libopenblas-pthread-dev
      libopenblas0 libopenblas0-openmp libopenblas0-pthread libgfortran5 libgfortran-12-dev gfortran-12)
for p in "${pkgs[@]}"; do
  dpkg -L "$p" 2>/dev/null | while read -r f; do
    case "$f" in /usr/*) ;; *) continue ;; esac
    if [ -d "$f" ] && [ ! -L "$f" ]; then continue; fi
    whiteout "$f"
  done
done
# The alternatives' links (cblas.h, libblas.so...) point into the hidden packages.
for f in /usr/include/x86_64-linux-gnu/cblas.h /usr/lib/x86_64-linux-gnu/lib{blas,lapack,openblas,cblas}.so*; do
  [ -e "$f" ] || [ -L "$f" ] && whiteout "$f"
done

export OUT OV=$ov
unshare -m bash -c '
  set -e
  mount -t overlay overlay -o lowerdir=/usr,upperdir="$OV/upper",workdir="$OV/work" /usr
  for h in /usr/include/fmt/format.h /usr/include/nlohmann/json.hpp /usr/include/catch2/catch.hpp; do
    [ ! -e "$h" ] || { echo "check_bare_build: $h is still visible" >&2; exit 3; }
  done
  rm -rf "$OUT"
  DSK_GPU_BUILD_DIR=build-bare DSK_GPU_JOBS=2 DSK_GPU_CHECK_SECONDS=3000 scripts/gpu_check.sh "$OUT" >/dev/null || true
'
grep -E '^\| (configure|build|cpu_tests) ' "$OUT/report.md"
grep -qE '^\| build \| ok ' "$OUT/report.md" && grep -qE '^\| cpu_tests \| ok ' "$OUT/report.md"
