#!/usr/bin/env bash
# Configures and builds dsk into build/ (Release). The CUDA target is built when nvcc is found.
# Extra arguments go to cmake's configure step, e.g. scripts/build.sh -DDSK_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d /usr/local/cuda/bin ] && ! command -v nvcc >/dev/null; then export PATH=/usr/local/cuda/bin:$PATH; fi
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
[ -f build/CMakeCache.txt ] && gen=()
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
