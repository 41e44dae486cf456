#!/usr/bin/env bash
# Installs the Debian packages dsk builds with, if any is missing. Safe to run again.
set -euo pipefail
pkgs=(cmake ninja-build g++ nlohmann-json3-dev libfmt-dev catch2 libopenblas-dev libopenblas-openmp-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
