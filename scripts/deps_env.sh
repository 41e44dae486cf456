#!/usr/bin/env bash
# Prepares .deps/ (made by scripts/fetch_gpu_deps.sh) on the machine it was carried to, and prints the
# environment to use it:   eval "$(scripts/deps_env.sh)"
# sets DSK_DEPS_PREFIX (for -DCMAKE_PREFIX_PATH) and LD_LIBRARY_PATH (OpenBLAS; gfortran only if the system
# has none).
# The OpenBLAS library travels xz-compressed (36 MB -> 4 MB). It is restored OUTSIDE the tree, into
# /tmp/dsk-deps (where .deps's libopenblas.so links point), so that .deps itself never grows and stays cheap to
# carry; python3's lzma does it, so no xz binary is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.deps
restore=/tmp/dsk-deps
[ -d "$root/usr" ] || { echo "deps_env: $root is missing: run scripts/fetch_gpu_deps.sh on a development machine" >&2; exit 1; }
obl=$root/usr/lib/x86_64-linux-gnu/openblas-pthread
mkdir -p "$restore"
for z in "$obl"/*.so.xz; do
  [ -e "$z" ] || continue
  so=$restore/$(basename "${z%.xz}")
  if [ ! -s "$so" ] || [ "$z" -nt "$so" ]; then
    # (xz as the fallback, for a python3 built without lzma)
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst: shutil.copyfileobj(src, dst)' "$z" "$so.tmp" ||
      xz -dc "$z" >"$so.tmp"
    mv "$so.tmp" "$so"
  fi
done
libs=$obl
# The system's libgfortran counts only if a file the loader cache names for it really exists (the cache can be
# stale). (ldconfig's output is captured first: `ldconfig -p | grep -q` under pipefail fails by SIGPIPE.)
known=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
have_gfortran=0
while read -r path; do
  [ -n "$path" ] && [ -e "$path" ] && have_gfortran=1
done < <(awk '/libgfortran\.so\.5 /{print $NF}' <<<"$known")
((have_gfortran)) || libs=$libs:$root/usr/lib/x86_64-linux-gnu
echo "export DSK_DEPS_PREFIX=$root/usr"
echo "export LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
