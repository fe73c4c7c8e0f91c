"""Build the wheel and check its layout: one import name, data and licences inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    build_dir = tmp_path_factory.mktemp("build")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--wheel-dir", str(out), str(ROOT)]
    env = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "TMPDIR": str(build_dir), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=build_dir,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("convexrecon-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        yield zf


def test_one_import_name(wheel):
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"convexrecon"}, top
    assert "cli" not in top and "problems" not in top
    for module in ("convexrecon/__init__.py", "convexrecon/problems/__init__.py",
                   "convexrecon/problems/registry.py", "convexrecon/problems/instances.py",
                   "convexrecon/cli/__init__.py", "convexrecon/io/__init__.py",
                   "convexrecon/io/fastmri.py", "convexrecon/coils.py",
                   "convexrecon/preprocess.py"):
        assert module in names, module
    # every source module of the checkout is shipped
    for src, dest in (("convexrecon", "convexrecon"), ("problems", "convexrecon/problems"),
                      ("cli", "convexrecon/cli")):
        for py in (ROOT / src).rglob("*.py"):
            rel = py.relative_to(ROOT / src).as_posix()
            if "__pycache__" in rel:
                continue
            assert f"{dest}/{rel}" in names, f"{src}/{rel} missing from the wheel"


def test_data_and_licences_inside(wheel):
    names = set(wheel.namelist())
    data = ROOT / "problems" / "data"
    for f in data.iterdir():
        if f.is_file():
            assert f"convexrecon/problems/data/{f.name}" in names, f.name
    for lic in ("LICENSE.dipy", "LICENSE.mni", "LICENSE.pulseq", "LICENSE.sigpy-mri-tutorial",
                "README.md", "SHA256SUMS"):
        assert f"convexrecon/problems/data/{lic}" in names
    assert not any(n.startswith("tests/") for n in names)
