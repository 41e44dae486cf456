#!/usr/bin/env bash
# Prepares .deps/ (made by scripts/fetch_gpu_deps.sh) on the machine it was carried to, and prints the
# environment to use it:   eval "$(scripts/deps_env.sh)"
# sets DSK_DEPS_PREFIX (for -DCMAKE_PREFIX_PATH) and LD_LIBRARY_PATH (OpenBLAS; gfortran only if the system
# has none). Restores the xz-compressed OpenBLAS library once (python3's lzma, so no xz binary is needed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.deps
[ -d "$root/usr" ] || { echo "deps_env: $root is missing: run scripts/fetch_gpu_deps.sh on a development machine" >&2; exit 1; }
obl=$root/usr/lib/x86_64-linux-gnu/openblas-pthread
for z in "$obl"/*.so.xz; do
  [ -e "$z" ] || continue
  so=${z%.xz}
  [ -s "$so" ] || python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2] + ".tmp", "wb") as dst: shutil.copyfileobj(src, dst)' "$z" "$so"
  [ -s "$so" ] || mv "$so.tmp" "$so"
done
libs=$obl
if ! ldconfig -p 2>/dev/null | grep -q 'libgfortran.so.5 '; then libs=$libs:$root/usr/lib/x86_64-linux-gnu; fi
echo "export DSK_DEPS_PREFIX=$root/usr"
echo "export LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
