#!/usr/bin/env bash
# Install LLVM's OpenMP runtime (libomp) for macOS wheel builds, for both architectures:
#   tools/macos_libomp.sh DEST   ->  DEST/x86_64 and DEST/arm64, each with include/omp.h,
#                                    lib/libomp.dylib and LICENSE.TXT
# The runtime is conda-forge's llvm-openmp, built for old deployment targets (macOS 10.13 on
# x86_64, 11.0 on arm64), so a wheel that bundles it (delocate) runs on every macOS the wheel's
# tag admits; Homebrew's bottle is built for the runner's own macOS and is not. Packages come
# through micromamba, which checks each download against the channel's recorded hashes.
# Run by cibuildwheel's before-all (pyproject.toml); each build then sets LIBOMP_PREFIX.
set -euo pipefail

dest="${1:?usage: macos_libomp.sh DEST}"
version="19.1.7"   # llvm-openmp on conda-forge

case "$(uname -m)" in
  arm64) host_platform="osx-arm64" ;;
  x86_64) host_platform="osx-64" ;;
  *) echo "macos_libomp.sh: unknown machine $(uname -m)" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
curl -fsSL --retry 3 "https://micro.mamba.pm/api/micromamba/${host_platform}/latest" | tar -xj -C "$work" bin/micromamba
export MAMBA_ROOT_PREFIX="$work/root"

for arch in x86_64 arm64; do
  case "$arch" in
    x86_64) platform="osx-64" ;;
    arm64) platform="osx-arm64" ;;
  esac
  prefix="$dest/$arch"
  rm -rf "$prefix"
  "$work/bin/micromamba" create --yes --quiet --prefix "$prefix" --platform "$platform" \
    --override-channels --channel conda-forge "llvm-openmp=${version}"
  licence="$(find "$MAMBA_ROOT_PREFIX/pkgs" -path "*llvm-openmp-${version}*/info/licenses/*" -name 'LICENSE*' -print -quit)"
  if [[ -z "$licence" ]]; then
    echo "macos_libomp.sh: llvm-openmp's licence file is missing from the package" >&2
    exit 1
  fi
  cp "$licence" "$prefix/LICENSE.TXT"
  # The library must hold the architecture it is installed for (lipo prints the ones it holds).
  lipo -archs "$prefix/lib/libomp.dylib" | grep -qw "$arch"
  test -f "$prefix/include/omp.h"
  echo "libomp ${version} for ${arch}: $prefix"
done
