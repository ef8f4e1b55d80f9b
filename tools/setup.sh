#!/usr/bin/env bash
# Installs everything ppc needs from Debian's packages. Idempotent: safe to run again.
# libopenblas0-pthread replaces the reference BLAS that LibTorch would otherwise use
# (update-alternatives picks it for libblas.so.3): about 2x on AlexNet.
set -euo pipefail
PKGS=(bazel-bootstrap bazel-rules-java bazel-platforms libtorch-dev libgloo-dev
      libprotobuf-dev protobuf-compiler libabsl-dev libgtest-dev libgmock-dev
      nlohmann-json3-dev libopenblas0-pthread zlib1g-dev python3-torch python3-torchvision
      cmake ninja-build)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: all packages present" >&2
