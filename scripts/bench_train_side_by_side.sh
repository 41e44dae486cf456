#!/usr/bin/env bash
# dsk vs PyTorch eager training speed on this machine, interleaved so both see the same machine load:
# for each round, `dsk bench train` then scripts/bench_torch_train.py (torch's default threads, then 2 threads).
# Writes bench/results/train-side-by-side-<config>-<date>.json. Needs build/dsk and Debian's python3-torch.
#   scripts/bench_train_side_by_side.sh [CONFIG] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-small}
rounds=${2:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$rounds"); do
  build/dsk bench train --config "$config" --device cpu --steps 6 --warmup 2 > "$tmp/dsk_$r.json" 2>/dev/null
  /usr/bin/python3 scripts/bench_torch_train.py --config "$config" --steps 6 --warmup 2 > "$tmp/torch_$r.json"
  /usr/bin/python3 scripts/bench_torch_train.py --config "$config" --steps 6 --warmup 2 --threads "$(nproc)" \
    > "$tmp/torch2_$r.json"
done
out=bench/results/train-side-by-side-$config-$(date -u +%Y-%m-%dT%H%M).json
/usr/bin/python3 - "$tmp" "$rounds" "$out" <<'PY'
import json, sys, statistics
tmp, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda p: json.load(open(p))
runs = [{"dsk": load(f"{tmp}/dsk_{r}.json"), "torch_default_threads": load(f"{tmp}/torch_{r}.json"),
         "torch_all_threads": load(f"{tmp}/torch2_{r}.json")} for r in range(1, rounds + 1)]
tps = lambda key: [r[key]["result"]["tokens_per_s"] for r in runs]
summary = {k: {"tokens_per_s_median": statistics.median(tps(k)), "tokens_per_s": tps(k)}
           for k in ("dsk", "torch_default_threads", "torch_all_threads")}
summary["dsk_over_best_torch"] = summary["dsk"]["tokens_per_s_median"] / max(
    summary["torch_default_threads"]["tokens_per_s_median"], summary["torch_all_threads"]["tokens_per_s_median"])
json.dump({"machine": runs[0]["dsk"]["machine"], "summary": summary, "runs": runs}, open(out, "w"), indent=1)
print(json.dumps(summary, indent=1))
print("wrote", out)
PY
