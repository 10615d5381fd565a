#!/usr/bin/env bash
# The whole extension on an emulated ARM64 machine: Debian's arm64 CPython 3.11 (its .deb files,
# unpacked into a private root; the system's apt configuration is not touched), NumPy and the test
# tools as manylinux aarch64 wheels from PyPI, tinyconv._core cross-compiled through CMakeLists.txt
# with aarch64-linux-gnu-g++, and pytest run by that interpreter under qemu-aarch64. Arguments go
# to pytest (default: the kernel tests). Slow (everything is emulated) and needs the network
# (Debian's archive, PyPI), so it is a tool to run by hand, not part of the suite:
#   tools/arm64_python.sh tests/test_core_oracles.py tests/test_kernels.py
# Needs: g++-aarch64-linux-gnu qemu-user cmake, and a Python with pip and pybind11 (PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${ARM64_WORK:-${TMPDIR:-/tmp}/tinyconv-arm64}
python=${PYTHON:-python3}
root=$work/root
mkdir -p "$work"/{lists/partial,cache/archives/partial,debs,site} "$root"

echo "== Debian arm64 CPython 3.11 into $root"
apt_options=(-o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Dir::State::status=/dev/null
  -o APT::Architecture=arm64 -o APT::Architectures::=arm64)
apt-get "${apt_options[@]}" update >/dev/null
(cd "$work/debs" && apt-get "${apt_options[@]}" download python3.11-minimal libpython3.11-minimal \
  libpython3.11-stdlib libpython3.11-dev libpython3.11 libc6 libexpat1 zlib1g libffi8 libssl3 \
  libbz2-1.0 liblzma5 libgomp1 libstdc++6 libgcc-s1 libncursesw6 libtinfo6 libreadline8 \
  libsqlite3-0 libuuid1 libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 \
  libcom-err2 libkrb5support0 libkeyutils1 libdb5.3 >/dev/null)
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$root"; done
# The interpreter as a program a child process can run too (tests start child interpreters through
# sys.executable; without binfmt_misc, an aarch64 binary cannot be exec'd directly): a script
# that runs it under qemu, named as its argv[0] so that sys.executable is the script.
cat >"$work/python3" <<SCRIPT
#!/bin/sh
exec qemu-aarch64 -L "$root" -0 "$work/python3" "$root/usr/bin/python3.11" "\$@"
SCRIPT
chmod +x "$work/python3"
run_arm64() { PYTHONHOME="$root/usr" "$work/python3" "$@"; }

echo "== NumPy and the test tools (manylinux aarch64 wheels)"
"$python" -m pip install -q --upgrade --target "$work/site" --platform manylinux2014_aarch64 \
  --only-binary=:all: --python-version 3.11 --implementation cp numpy pytest hypothesis safetensors \
  platformdirs tqdm

echo "== tinyconv._core for aarch64 (CMakeLists.txt, aarch64-linux-gnu-g++)"
cmake -S . -B "$work/build" -G "Unix Makefiles" -DSKBUILD_PROJECT_NAME=tinyconv \
  -DSKBUILD_PROJECT_VERSION="$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"].get("version", "0.0.0"))' 2>/dev/null || echo 0.0.0)" \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$python")" \
  -DPython_INCLUDE_DIR="$root/usr/include/python3.11" -DCMAKE_CXX_FLAGS="-isystem $root/usr/include" \
  -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" >"$work/cmake.log"
cmake --build "$work/build" -j "$(nproc)" >"$work/build.log"
rm -rf "$work/pkg" && mkdir -p "$work/pkg"
cp -r python/tinyconv "$work/pkg/"
# The host interpreter named the file with its own ABI tag; the arm64 one looks for its own.
cp "$work"/build/_core.*.so "$work/pkg/tinyconv/_core.cpython-311-aarch64-linux-gnu.so"

echo "== pytest under qemu-aarch64"
export PYTHONPATH="$work/pkg:$work/site" PYTHONDONTWRITEBYTECODE=1
run_arm64 -c "import tinyconv; tinyconv.show_config()"
cd "$repo"
if [ $# -eq 0 ]; then set -- tests/test_core_oracles.py tests/test_kernels.py; fi
run_arm64 -m pytest -q -p no:cacheprovider "$@"
