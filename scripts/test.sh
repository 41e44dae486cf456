#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test (CUDA tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
# ctest runs one test process per core; each on one OpenMP thread, so that they do not oversubscribe the cores
# (a test that needs more threads sets them itself). The core count is read first: nproc honours OMP_NUM_THREADS.
jobs=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ctest --test-dir build -j "$jobs" --output-on-failure "$@"
