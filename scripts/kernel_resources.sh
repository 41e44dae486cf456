#!/usr/bin/env bash
# What each CUDA kernel costs in registers, spills and static shared memory on sm_90, from ptxas itself: compiles
# every kernels/cuda/*.cu with the build's own nvcc flags plus -Xptxas=-v and prints a markdown table (needs nvcc,
# not a GPU). A kernel that spills, or whose registers x threads per block exceed the 64K-register file, shows here
# before any GPU time is spent; the [cuda] tests and gpu_check say whether it runs.
#
#   scripts/kernel_resources.sh [BUILD_DIR] > bench/results/kernel-resources-DATE.md
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
[ -f "$BUILD/compile_commands.json" ] || { echo "kernel_resources: no $BUILD/compile_commands.json (configure first)" >&2; exit 1; }
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "kernel_resources: nvcc not found" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The nvcc command of each kernel file, as CMake wrote it, with the output redirected and ptxas made verbose.
python3 - "$BUILD/compile_commands.json" "$TMP" <<'EOF'
import json, os, shlex, sys
cmds, tmp = json.load(open(sys.argv[1])), sys.argv[2]
for c in cmds:
    f = c["file"]
    if "/kernels/cuda/" in f and f.endswith(".cu"):
        args = shlex.split(c["command"])
        out = args.index("-o")
        args[out + 1] = os.path.join(tmp, os.path.basename(f) + ".o")
        args += ["-Xptxas=-v"]
        open(os.path.join(tmp, os.path.basename(f) + ".cmd"), "w").write(
            "cd " + shlex.quote(c["directory"]) + " && " + shlex.join(args) + "\n")
EOF
for cmd in "$TMP"/*.cmd; do
  bash "$cmd" >"${cmd%.cmd}.log" 2>&1 || { cat "${cmd%.cmd}.log" >&2; exit 1; }
done

NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
echo "# CUDA kernel resources (ptxas -v), $("$NVCC" --version | grep -o 'V[0-9][0-9.]*' | head -1), $(date -u +%Y-%m-%d)"
echo
echo "Made by scripts/kernel_resources.sh from the build's own nvcc flags (architectures as configured)."
echo
python3 - "$TMP" <<'EOF'
import glob, os, re, subprocess, sys
rows = []
for log in sorted(glob.glob(os.path.join(sys.argv[1], "*.log"))):
    text = open(log).read()
    parts = re.split(r"ptxas info\s*: Compiling entry function '([^']+)' for '(sm_\d+)'", text)
    for i in range(1, len(parts), 3):
        name, body = parts[i], parts[i + 2]
        num = lambda pat: int(m.group(1)) if (m := re.search(pat, body)) else 0
        demangled = subprocess.run(["c++filt"], input=name, capture_output=True, text=True).stdout.strip() or name
        demangled = re.sub(r"\(.*", "", demangled.replace("dsk::(anonymous namespace)::", ""))
        rows.append((os.path.basename(log)[:-7], demangled, num(r"Used (\d+) registers"),
                     num(r"(\d+) bytes spill stores"), num(r"(\d+) bytes smem"), num(r"(\d+) bytes stack frame")))
print("| file | kernel | registers | spill stores (bytes) | static smem (bytes) | stack (bytes) |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | `{r[1]}` | {r[2]} | {r[3]} | {r[4]} | {r[5]} |")
EOF
