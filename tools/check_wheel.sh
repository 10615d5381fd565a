#!/usr/bin/env bash
# Install a wheel into a fresh virtual environment and run the test suite against it the way a
# user's machine would: no compiler on PATH, the tests run from a folder outside the source tree
# (so `import tinyconv` can only find the installed wheel).
#
#   tools/check_wheel.sh dist/tinyconv-*.whl [pytest arguments...]
set -euo pipefail

wheel="$(realpath "${1:?usage: check_wheel.sh WHEEL [pytest args]}")"
shift
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
rm_bin="$(command -v rm)"
trap '"$rm_bin" -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "${wheel}[test]"

mkdir "$work/outside"
# What cibuildwheel's test-sources copies (pyproject.toml): the tests and the files they read.
cp -r "$repo/tests" "$repo/examples" "$repo/benchmarks" "$repo/pyproject.toml" "$repo/README.md" "$work/outside/"

# PATH: the venv and a folder with the few programs the tests spawn, but no compiler.
mkdir "$work/bin"
for tool in sh env touch; do ln -s "$(command -v "$tool")" "$work/bin/$tool"; done
export PATH="$work/venv/bin:$work/bin"
for compiler in cc gcc g++ c++ clang clang++ cl; do
  if command -v "$compiler" >/dev/null; then echo "check_wheel.sh: $compiler is on PATH" >&2; exit 1; fi
done

cd "$work/outside"
python - <<'PY'
import pathlib, tinyconv
location = pathlib.Path(tinyconv.__file__).resolve()
assert "site-packages" in location.parts, location
print("testing", location.parent)
tinyconv.show_config()
PY
HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}" python -m pytest -p no:cacheprovider -q "$@"
