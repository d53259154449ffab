"""The package works as a built wheel: properties/ ships inside it and is found there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_properties_and_finds_them(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("recbole_diffureason-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for yaml in (ROOT / "properties").rglob("*.yaml"):
        assert f"recbole_diffureason/properties/{yaml.relative_to(ROOT / 'properties').as_posix()}" in names
    assert any(n.startswith("recbole_diffureason/properties/hyper/") for n in names)

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = ("import recbole_diffureason.config as c; p = c.properties_dir(); "
             "print(p); assert (p / 'model' / 'DiffuReasonSASRec.yaml').is_file()")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=str(tmp_path))
    assert found.returncode == 0, found.stderr[-2000:]
    assert Path(found.stdout.strip()) == target / "recbole_diffureason" / "properties"
