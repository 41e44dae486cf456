#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, train the small model on the embedded
# Tiny Shakespeare (GPU when usable, else CPU; a few minutes on a 2-core CPU), and print a sample.
# Extra arguments go to `dsk train`, e.g. scripts/quickstart.sh --set max_steps=50
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/dsk train "$@"   # writes runs/<timestamp>/
