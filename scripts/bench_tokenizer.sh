#!/usr/bin/env bash
# Tokenizer speed: dsk (single-threaded and parallel) and tiktoken's npm build on the same corpus, written to
# bench/results/tokenizer-cpu-<date>.json. Needs build/dsk and tiktoken (TIKTOKEN=path/to/node_modules/tiktoken;
# see scripts/make_tokenizer_golden.mjs for how to get it without touching the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-data/tinyshakespeare.txt}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
build/dsk bench tokenizer --corpus "$corpus" > "$tmp"
out=bench/results/tokenizer-cpu-$(date -u +%Y-%m-%d).json
node scripts/bench_tiktoken.mjs "$corpus" "$tmp" > "$out"
echo "wrote $out"
