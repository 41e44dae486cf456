#!/usr/bin/env bash
# Downloads, on a development machine, the Debian 12 packages that dsk's build needs and a bare GPU machine lacks,
# and unpacks them into .deps/ (git-ignored) as a prefix: .deps/usr/include, .deps/usr/lib/x86_64-linux-gnu, ...
#
# Run it here (Debian 12, network to Debian's mirrors; no root needed, nothing is installed):
#     scripts/fetch_gpu_deps.sh
# Then, on the GPU machine (device tool), carry .deps with the working tree and run the check:
#     run(command="scripts/gpu_check.sh $OUT", carry=[".deps"], timeout_s=540)
# scripts/gpu_check.sh uses .deps by itself; by hand it is
#     eval "$(scripts/deps_env.sh)"            # restores OpenBLAS into /tmp/dsk-deps, sets LD_LIBRARY_PATH
#     cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH=$PWD/.deps/usr -DDSK_CUDA_ARCH=90 ...
#     build/dsk_tests "[cuda]"
# (LD_LIBRARY_PATH: .deps/usr/lib/x86_64-linux-gnu/openblas-pthread, and .deps/usr/lib/x86_64-linux-gnu only
# where the machine has no libgfortran.so.5 of its own).
#
# What comes: nlohmann-json3-dev, libfmt-dev + libfmt9 (its CMake config names the shared library), catch2,
# libopenblas-dev + libopenblas-pthread-dev + libopenblas0-pthread + libopenblas0 (cblas.h and libopenblas.so),
# libgfortran5 + libquadmath0 (what libopenblas.so.0 links against besides libc). Everything else they depend on
# (libc6, libgcc-s1, libstdc++6) is on any machine with a compiler. To stay small (~10 MB), static archives,
# LAPACK/BLAS shims and docs are dropped, and the 36 MB OpenBLAS library is stored xz-compressed
# (libopenblasp-r0.3.21.so.xz), restored by scripts/deps_env.sh on first use into /tmp/dsk-deps (outside the
# tree; .deps's libopenblas.so links point there).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(nlohmann-json3-dev libfmt-dev libfmt9 catch2 libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread
      libopenblas0 libgfortran5 libquadmath0)

dl=$(mktemp -d)
chmod 755 "$dl"  # apt-get download hands the files to the _apt user
trap 'rm -rf "$dl"' EXIT
(cd "$dl" && apt-get -o APT::Sandbox::User=root download "${pkgs[@]}" >/dev/null)

rm -rf .deps
mkdir -p .deps
for f in "$dl"/*.deb; do dpkg -x "$f" .deps; done

# Drop what the build and the tests never use.
rm -rf .deps/usr/share/doc .deps/usr/share/lintian .deps/usr/share/man .deps/usr/share/gcc .deps/usr/share/gdb
find .deps/usr/lib/x86_64-linux-gnu/openblas-pthread -name '*.a' -delete  # Catch2's libCatch2WithMain.a stays: its CMake config checks it exists
obl=.deps/usr/lib/x86_64-linux-gnu/openblas-pthread
rm -f "$obl"/libblas.so* "$obl"/liblapack.so*
# The library is stored xz-compressed and restored by scripts/deps_env.sh into /tmp/dsk-deps, outside the tree
# (so .deps stays small however often it is used); the links CMake and the loader follow point there.
real=$(cd "$obl" && ls libopenblasp-r*.so)
xz -T0 -6 -f "$obl/$real"  # -> $real.xz
ln -sfn "/tmp/dsk-deps/$real" "$obl/libopenblas.so"
ln -sfn "/tmp/dsk-deps/$real" "$obl/libopenblas.so.0"


# A record of what is in there.
for f in "$dl"/*.deb; do basename "$f"; done >.deps/PACKAGES
echo "fetch_gpu_deps: .deps holds $(du -sh .deps | cut -f1): $(tr '\n' ' ' <.deps/PACKAGES)"
