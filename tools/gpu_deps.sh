#!/usr/bin/env bash
# Fetches, here, the Debian packages the GPU machine needs to build ppc with CMake and
# has no network to get: protobuf (library, headers, protoc), Abseil and GoogleTest.
# They land in third_party/gpu_deps/ (git-ignored), which the device call carries and
# tools/gpu_check.sh unpacks there with dpkg-deb -x (no root, no apt).
#   bash tools/gpu_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=third_party/gpu_deps
mkdir -p "$out"
pkgs=(libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler
      libabsl-dev libabsl20220623 libgtest-dev libgmock-dev googletest zlib1g-dev)
cd "$out"
rm -f ./*.deb
# apt-get download runs as the invoking user; as root it warns about the _apt sandbox.
apt-get download "${pkgs[@]}" 2>&1 | grep -v "unsandboxed as root" || true
for p in "${pkgs[@]}"; do
  ls "${p}"_*.deb >/dev/null 2>&1 || { echo "gpu_deps: could not download $p" >&2; exit 1; }
done
echo "gpu_deps: $(ls ./*.deb | wc -l) packages, $(du -sh . | cut -f1) in $out"
