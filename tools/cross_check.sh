#!/usr/bin/env bash
# Builds the C++ kernels for the architectures and compilers this machine cannot run natively, and
# runs what it can:
#   1. AArch64: CMakeLists.txt with TINYCONV_KERNEL_CHECK=ON (tools/kernel_check.cpp and every
#      csrc/ file but module.cpp, which needs Python's headers) configured for Linux/aarch64 with
#      aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu): the NEON level must be in the build
#      and no x86 flag anywhere; kernel_check then runs under qemu-aarch64 (Debian qemu-user): the
#      NEON and generic levels against the reference loops (see kernel_check.cpp for what is
#      bitwise and what within a bound).
#      The same with clang for AArch64 (Apple silicon's compiler family; its contraction rules
#      differ from GCC's), without OpenMP (no arm64 libomp here).
#   2. Windows x86-64: the same for Windows/AMD64 with x86_64-w64-mingw32-g++ (Debian
#      g++-mingw-w64-x86-64; OpenMP found, -fopenmp): compiled and linked into kernel_check.exe
#      (not run: no Windows here), the AVX files with their flags, no NEON file.
#   3. OpenMP 2.0 (MSVC's /openmp, which rejects anything newer, e.g. collapse and simd): every
#      csrc/ file but module.cpp preprocessed in MSVC's dialect (clang-cl /E with _MSC_VER defined
#      and __clang__ undefined, so the MSVC branches are taken) must contain no directive or
#      clause newer than 2.0. clang-cl itself accepts OpenMP 5 in MSVC mode, so compiling with it
#      would prove nothing about these limits; it does not parse the sources here at all (no MSVC
#      STL or CRT headers on this machine), so the MSVC-only code (CPUID dispatch in gemm.cpp) is
#      not compiled by this script.
# Exit status non-zero on the first failure. Needs cmake, python3 and the Debian packages
# g++-aarch64-linux-gnu qemu-user g++-mingw-w64-x86-64 clang. About 2 minutes of CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${CROSS_CHECK_JOBS:-$(nproc 2>/dev/null || echo 2)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

sources=()
for f in csrc/*.cpp; do
  [ "$f" = csrc/module.cpp ] || sources+=("$f")
done

# cross_build NAME SYSTEM PROCESSOR CXX [CMAKE ARGS...]: CMakeLists.txt with TINYCONV_KERNEL_CHECK=ON (every source
# but module.cpp, with tools/kernel_check.cpp, the real per-architecture and per-file flags) for
# another target, warnings as errors; leaves $out/NAME/compile_commands.json for the checks below.
cross_build() {
  local name=$1 system=$2 processor=$3 cxx=$4
  shift 4
  cmake -S . -B "$out/$name" -G "Unix Makefiles" -DTINYCONV_KERNEL_CHECK=ON "$@" \
    -DSKBUILD_PROJECT_NAME=tinyconv -DSKBUILD_PROJECT_VERSION=0.0.0 \
    -DCMAKE_SYSTEM_NAME="$system" -DCMAKE_SYSTEM_PROCESSOR="$processor" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_CXX_FLAGS=-Werror -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$out/$name.log" 2>&1 \
    || { cat "$out/$name.log"; echo "FAIL: CMake could not configure the $name build"; exit 1; }
  if [ "$name" != aarch64-clang ]; then
    grep -q "^OpenMP_CXX_FLAGS:STRING=-fopenmp" "$out/$name/CMakeCache.txt" \
      || { echo "FAIL: the $name build found no OpenMP"; exit 1; }
  fi
  cmake --build "$out/$name" -j "$jobs" >"$out/$name-build.log" 2>&1 \
    || { cat "$out/$name-build.log"; echo "FAIL: the $name build failed"; exit 1; }
}

# compile_command NAME FILE: the command CMake compiles FILE with in build NAME.
compile_command() {
  python3 -c 'import json, sys
for entry in json.load(open(sys.argv[1])):
    if entry["file"].endswith(sys.argv[2]):
        print(entry["command"])' "$out/$1/compile_commands.json" "$2"
}

echo "== AArch64: cross-compile (aarch64-linux-gnu-g++), run under qemu-aarch64"
start=$SECONDS
cross_build aarch64 Linux aarch64 aarch64-linux-gnu-g++
# The architecture's levels and no other's flags: the NEON file in the build, no -m flag of x86.
compile_command aarch64 csrc/gemm_neon.cpp | grep -q . || { echo "FAIL: gemm_neon.cpp is not in the AArch64 build"; exit 1; }
if grep -qE -- '-m(avx|fma|prefer-vector)' "$out/aarch64/compile_commands.json"; then
  echo "FAIL: x86 flags in the AArch64 build"; exit 1
fi
echo "   built in $((SECONDS - start)) s; fmla-by-element instructions in the NEON level:" \
  "$(aarch64-linux-gnu-objdump -d "$(find "$out/aarch64" -name 'gemm_neon.cpp.o')" | grep -cE 'fmla\s+v[0-9]+\.(4s|2d), v[0-9]+\.(4s|2d), v[0-9]+\.[sd]\[')"
start=$SECONDS
OMP_NUM_THREADS=3 qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/aarch64/kernel_check"
echo "   ran in $((SECONDS - start)) s"
# The run must have offered the NEON level (a build that silently left it out would pass).
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/aarch64/kernel_check" --levels | grep -qx "neon,generic" \
  || { echo "FAIL: the AArch64 build does not offer the levels neon,generic"; exit 1; }

echo "== AArch64 with clang (the compiler of macOS arm64 builds; no arm64 OpenMP runtime here: one thread)"
start=$SECONDS
cross_build aarch64-clang Linux aarch64 clang++ -DCMAKE_CXX_COMPILER_TARGET=aarch64-linux-gnu
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/aarch64-clang/kernel_check"
echo "   built and ran in $((SECONDS - start)) s"

echo "== Windows x86-64: compile and link (x86_64-w64-mingw32-g++ -fopenmp)"
start=$SECONDS
cross_build mingw Windows AMD64 x86_64-w64-mingw32-g++
compile_command mingw csrc/gemm_avx2.cpp | grep -q -- "-mavx2 -mfma" \
  || { echo "FAIL: gemm_avx2.cpp is not built with -mavx2 -mfma for Windows x86-64"; exit 1; }
compile_command mingw csrc/gemm_avx512.cpp | grep -q -- "-mavx512f" \
  || { echo "FAIL: gemm_avx512.cpp is not built with -mavx512f for Windows x86-64"; exit 1; }
if [ -n "$(compile_command mingw csrc/gemm_neon.cpp)" ]; then echo "FAIL: gemm_neon.cpp in the x86-64 build"; exit 1; fi
[ -f "$out/mingw/kernel_check.exe" ] || { echo "FAIL: no kernel_check.exe"; exit 1; }
echo "   built kernel_check.exe in $((SECONDS - start)) s"

# clang-cl as the preprocessor of MSVC's dialect: _MSC_VER defined and __clang__ undefined, so the
# sources take their MSVC branches. (Only preprocessed: parsing would need MSVC's own STL and CRT
# headers, which this machine does not have; MinGW's do not parse in MSVC mode.)
cxx_include=$(echo /usr/lib/gcc/x86_64-w64-mingw32/*-win32/include/c++ | awk '{print $1}')
msvc_preprocess=(clang --driver-mode=cl --target=x86_64-pc-windows-msvc /std:c++17 /openmp /E /U__clang__
  -fms-compatibility-version=19.29 -Wno-unused-command-line-argument -Wno-builtin-macro-redefined
  /imsvc "$cxx_include" /imsvc "$cxx_include/x86_64-w64-mingw32" /imsvc /usr/share/mingw-w64/include
  /Icsrc /DTINYCONV_HAVE_AVX2 /DTINYCONV_HAVE_AVX512)
echo "== OpenMP 2.0 (MSVC /openmp): no newer construct in the sources as MSVC preprocesses them (clang-cl /E)"
newer='\b(simd|collapse|task|taskloop|taskwait|taskgroup|depend|declare|target|teams|distribute|proc_bind|untied|mergeable|final|cancel|linear|aligned|safelen|simdlen|ordered\s*\()|reduction\s*\(\s*(min|max)\b'
# The OpenMP directives of tinyconv's own files (csrc/) in the preprocessed text of one source
# (compiler headers have their own, e.g. clang's OpenMP math wrappers, which MSVC never sees).
tinyconv_pragmas() {
  "${msvc_preprocess[@]}" "$1" 2>/dev/null |
    awk '$1 == "#" && $2 ~ /^[0-9]+$/ { file = $3; next }
         file ~ /^"csrc\// && /^[ \t]*#[ \t]*pragma[ \t]+omp/ { print }'
}
bad=0
for f in "${sources[@]}"; do
  pragmas=$(tinyconv_pragmas "$f")
  if echo "$pragmas" | grep -qE "$newer"; then
    echo "FAIL: $f has OpenMP newer than 2.0 under MSVC:"
    echo "$pragmas" | grep -E "$newer"
    bad=1
  fi
done
# The preprocessed text must have OpenMP directives at all (a /E that lost them would pass).
tinyconv_pragmas csrc/gemm_generic.cpp | grep -qE '#\s*pragma\s+omp\s+parallel' \
  || { echo "FAIL: no '#pragma omp parallel' in the preprocessed gemm_generic.cpp: the check sees nothing"; exit 1; }
[ "$bad" = 0 ]
echo "cross_check: all passed"
