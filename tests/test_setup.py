"""`.ci/setup` on a system python that refuses pip installs (PEP 668), as stock Debian 12 and Ubuntu 24.04 ship.

The test builds a python prefix of its own whose standard library holds an EXTERNALLY-MANAGED
marker (the real interpreter, the real standard library linked in, pip alongside), checks that
pip run with it really refuses to install, then runs `.ci/setup` with it: setup must succeed
because it installs into a virtual environment. To stay fast, pip installs facesift itself
without its dependencies (the heavy wheels are the same for every environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def externally_managed_python(root: Path) -> Path:
    """A python whose prefix is *root*: the real binary, the real stdlib linked, an EXTERNALLY-MANAGED marker."""
    base_stdlib = Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})["stdlib"])
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = root / "lib" / ver
    stdlib.mkdir(parents=True)
    for entry in base_stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (stdlib / entry.name).symlink_to(entry)
    for lib in Path(sys.base_prefix, "lib").glob("libpython*"):  # a shared-library build finds it next to its prefix
        (root / "lib" / lib.name).symlink_to(lib)
    (stdlib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=To install Python packages system-wide, try apt install python3-xyz.\n")
    site = stdlib / "site-packages"
    site.mkdir()
    import pip

    (site / "pip").symlink_to(Path(pip.__file__).parent)  # a system pip, as python3-pip gives one
    (root / "bin").mkdir()
    exe = root / "bin" / "python3"
    shutil.copy2(os.path.realpath(getattr(sys, "_base_executable", sys.executable)), exe)
    return exe


def setup(python: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": str(python), "FACESIFT_VENV": str(venv), "FACESIFT_PIP_SPEC": "--no-deps -e ."}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(["bash", str(ROOT / ".ci/setup")], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_setup_installs_into_a_venv_where_the_system_python_is_externally_managed(tmp_path: Path) -> None:
    python = externally_managed_python(tmp_path / "system")
    probe = subprocess.run([str(python), "-c", "import sys, sysconfig; print(sys.prefix); print(sysconfig.get_path('stdlib'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.split() == [str(tmp_path / "system"), str(tmp_path / "system/lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}")]
    refused = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(ROOT)], capture_output=True, text=True)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr  # the simulation is real

    venv = tmp_path / "venv"
    first = setup(python, venv)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = [ln for ln in first.stdout.splitlines() if ln.startswith("facesift setup: ")]
    steps = [ln.split(": ")[1] for ln in lines]
    assert steps[:3] == ["apt", "venv", "pip"] and steps[-1].startswith("done"), first.stdout
    assert f"created {venv}" in lines[1] and "source " + str(venv) + "/bin/activate" in lines[-1]
    assert (venv / "bin/python").exists()
    out = subprocess.run([str(venv / "bin/python"), "-c", "import sys, pipeline; print(sys.prefix); print(pipeline.__file__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(venv), str(ROOT / "pipeline/__init__.py")]
    assert [p.name for p in (tmp_path / "system/lib").glob("python*/site-packages/*")] == ["pip"]  # nothing went into the system python

    again = setup(python, venv)  # run twice: the venv is reused, nothing breaks
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"venv: reusing {venv}" in again.stdout


def test_readme_commands_and_ci_use_the_venv() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = [ln for ln in section.splitlines() if ln.startswith("bash .ci/setup")]
    assert len(commands) == 2 and all(" python3 " not in c and ".venv/bin/python -m" in c for c in commands)
    assert "source .venv/bin/activate" in section
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci/run").read_text()
    assert ".venv/" in (ROOT / ".gitignore").read_text().split()
