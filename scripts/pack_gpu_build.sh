#!/usr/bin/env bash
# Packs this machine's sm_90 Release binaries for scripts/gpu_check.sh to use on the GPU machine without
# building there (a build costs minutes of a lease of about 15):   scripts/pack_gpu_build.sh [BUILD_DIR]
# BUILD_DIR (default build/) must be a Release build with DSK_CUDA=ON and DSK_CUDA_ARCH=90, up to date with the
# checkout. Writes .gpu-build/ (git-ignored): dsk, dsk_tests, the source folder they were compiled in and the
# commit. gpu_check.sh links the source folder's path to its checkout and puts dsk where the tests look. Carry it:
#   run(command="scripts/gpu_check.sh $OUT", carry=[".deps", ".gpu-build"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cache=$build/CMakeCache.txt
[ -f "$cache" ] || { echo "pack_gpu_build: $cache is missing: configure and build first" >&2; exit 2; }
grep -q '^DSK_CUDA:BOOL=ON' "$cache" && grep -q '^DSK_CUDA_ARCH:STRING=90$' "$cache" &&
  grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$cache" ||
  { echo "pack_gpu_build: $build is not a Release build with DSK_CUDA=ON for sm_90" >&2; exit 2; }
cmake --build "$build" --target dsk dsk_tests -j "$(nproc)"
rm -rf .gpu-build.tmp
mkdir .gpu-build.tmp
# (stripped: the carried tree is limited to 64 MiB)
strip -o .gpu-build.tmp/dsk "$build/dsk"
strip -o .gpu-build.tmp/dsk_tests "$build/dsk_tests"
sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache" >.gpu-build.tmp/SOURCE_DIR
sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$cache" >.gpu-build.tmp/BINARY_DIR
commit=$(git rev-parse HEAD)
[ -z "$(git status --porcelain)" ] || commit="$commit (with uncommitted changes)"
echo "$commit" >.gpu-build.tmp/COMMIT
rm -rf .gpu-build
mv .gpu-build.tmp .gpu-build
du -sh .gpu-build
