"""Repair a Windows wheel with delvewheel, bundling MSVC's LLVM OpenMP runtime.

    python tools/windows_repair.py DEST_DIR WHEEL

CMake 3.30+ builds tinyconv with ``/openmp:llvm`` (CMakeLists.txt), whose runtime,
``libomp140.x86_64.dll``, is redistributable but not on a user's PATH: delvewheel bundles it
from the Visual Studio installation that built the wheel (found with vswhere). A build that
fell back to ``/openmp`` links ``vcomp140.dll`` instead, which delvewheel finds by itself.
Run by cibuildwheel (pyproject.toml, [tool.cibuildwheel.windows]).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

RUNTIME = "libomp140.x86_64.dll"


def visual_studio_roots() -> list[Path]:
    program_files = os.environ.get("PROGRAMFILES(X86)", r"C:\Program Files (x86)")
    vswhere = Path(program_files) / "Microsoft Visual Studio" / "Installer" / "vswhere.exe"
    if not vswhere.exists():
        return []
    found = subprocess.run(
        [str(vswhere), "-all", "-products", "*", "-property", "installationPath"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [Path(line.strip()) for line in found.splitlines() if line.strip()]


def runtime_dirs() -> list[str]:
    """Folders holding the redistributable (not the debug) LLVM OpenMP runtime, newest first."""
    dirs = []
    for root in visual_studio_roots():
        pattern = str(root / "VC" / "Redist" / "MSVC" / "*" / "x64" / "*OpenMP.LLVM" / RUNTIME)
        dirs += [str(Path(hit).parent) for hit in glob.glob(pattern)]
    return sorted(set(dirs), reverse=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest_dir, wheel = argv
    command = [sys.executable, "-m", "delvewheel", "repair", "-v", "-w", dest_dir]
    dirs = runtime_dirs()
    if dirs:
        command += ["--add-path", os.pathsep.join(dirs)]
    else:
        print(
            f"windows_repair.py: no {RUNTIME} under any Visual Studio installation; "
            "delvewheel must find the wheel's OpenMP runtime itself",
            file=sys.stderr,
        )
    return subprocess.run([*command, wheel]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
