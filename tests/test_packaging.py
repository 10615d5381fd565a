"""Packaging promises a distributor relies on: licence files and metadata in what was installed,
one version source, classifiers that match requires-python and the wheel builds, and the warning
policy (third-party deprecations never turn the suite red; tinyconv's own always do).

The pyproject checks read pyproject.toml beside the tests (the source tree, or the copy that
cibuildwheel's test-sources puts there) and skip without it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import tinyconv

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
NEWEST_PYTHON = (3, 14)


def pyproject() -> dict:
    if not PYPROJECT.exists():
        pytest.skip("no pyproject.toml beside the tests")
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip(
            "tomli", reason="reading pyproject.toml needs tomli before Python 3.11"
        )
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def test_installed_distribution_carries_its_licences():
    dist = importlib.metadata.distribution("tinyconv")
    assert dist.metadata["License-Expression"] == "MIT"
    declared = set(dist.metadata.get_all("License-File") or [])
    assert "LICENSE" in declared, declared
    assert any(name.startswith("LICENSES/") for name in declared), declared
    shipped = {str(path).replace("\\", "/") for path in (dist.files or [])}
    for name in declared:
        assert any(path.endswith(f"licenses/{name}") for path in shipped), (
            f"{name} is not in the installed files"
        )
    licence = next(
        path for path in dist.files if str(path).replace("\\", "/").endswith("licenses/LICENSE")
    )
    assert "MIT License" in licence.read_text()


def test_one_version_source():
    assert tinyconv.__version__ == importlib.metadata.version("tinyconv")
    assert pyproject()["project"]["version"] == tinyconv.__version__


def test_classifiers_match_requires_python_and_the_wheel_builds():
    project = pyproject()
    floor = re.fullmatch(r">=\s*3\.(\d+)", project["project"]["requires-python"])
    assert floor, project["project"]["requires-python"]
    minors = range(int(floor.group(1)), NEWEST_PYTHON[1] + 1)
    classified = {
        c.rsplit(" ", 1)[1]
        for c in project["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert classified == {f"3.{m}" for m in minors}
    built = set(project["tool"]["cibuildwheel"]["build"].split())
    assert built == {f"cp3{m}-*" for m in minors}


def test_musllinux_wheels_test_with_the_test_extra_less_onnx():
    project = pyproject()
    test_extra = project["project"]["optional-dependencies"]["test"]
    musl = [
        o
        for o in project["tool"]["cibuildwheel"]["overrides"]
        if "*-musllinux*" in o["select"].split()
    ]
    assert len(musl) == 1
    assert musl[0]["test-extras"] == []
    assert musl[0]["test-requires"] == [
        r for r in test_extra if not r.startswith(("onnx>", "onnxruntime>"))
    ]


def test_wheel_builds_require_openmp():
    settings = pyproject()["tool"]["cibuildwheel"]["config-settings"]
    assert settings["cmake.define.TINYCONV_REQUIRE_OPENMP"] == "ON"


def _configure(tmp_path: Path, *defines: str) -> subprocess.CompletedProcess[str]:
    """CMake's configure step of the kernel-check build (no Python or pybind11 needed)."""
    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("no CMakeLists.txt beside the tests (they run against an installed wheel)")
    if tinyconv.config()["sanitizers"]:
        # The preloaded AddressSanitizer would reach CMake's make, whose own reads it reports.
        pytest.skip(
            "CMake's configure step does not depend on the installed module; "
            "not repeated under the sanitizers"
        )
    if shutil.which("cmake") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("cmake is missing, and CI=true: .ci/run installs it")
        pytest.skip("cmake is not on PATH")
    command = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(tmp_path / "build"),
        "-DTINYCONV_KERNEL_CHECK=ON",
    ]
    command += ["-DSKBUILD_PROJECT_NAME=tinyconv", "-DSKBUILD_PROJECT_VERSION=0.0.0", *defines]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_build_that_requires_openmp_and_finds_none_fails_at_configure(tmp_path):
    result = _configure(
        tmp_path, "-DTINYCONV_REQUIRE_OPENMP=ON", "-DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON"
    )
    assert result.returncode != 0, result.stdout
    message = " ".join(result.stderr.split())  # CMake wraps its messages
    assert "TINYCONV_REQUIRE_OPENMP is ON but the compiler has no usable OpenMP" in message
    assert "TINYCONV_LIBOMP_PREFIX" in message  # and says what to do on macOS


def test_a_build_that_requires_openmp_configures_where_there_is_one(tmp_path):
    if not tinyconv.config()["openmp"]:
        pytest.skip("this module was built without OpenMP, so the compiler may have none")
    result = _configure(tmp_path, "-DTINYCONV_REQUIRE_OPENMP=ON")
    assert result.returncode == 0, result.stderr
    cache = (tmp_path / "build" / "CMakeCache.txt").read_text()
    assert re.search(r"^OpenMP_CXX_FLAGS:STRING=.*openmp", cache, re.MULTILINE), cache


def test_without_the_requirement_a_build_without_openmp_still_configures(tmp_path):
    # Source builds (pip install from the sdist) stay possible on a compiler without OpenMP: the
    # kernels then run on one thread, and show_config() says so.
    result = _configure(tmp_path, "-DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning])
def test_third_party_deprecations_do_not_fail_the_suite(category):
    with warnings.catch_warnings(record=True) as caught:
        # The filters pytest installed from pyproject.toml stay in force inside catch_warnings.
        warnings.warn_explicit("old API", category, "somelib/core.py", 1, module="somelib.core")
    assert [w.category for w in caught] == [category]


@pytest.mark.parametrize("module", ["tinyconv.nets", "test_packaging"])
def test_deprecations_from_our_own_code_still_fail(module):
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module=module)
