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
    assert "recbole_diffureason/py.typed" in names  # type checkers use the package's hints (PEP 561)

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = ("import recbole_diffureason.config as c; p = c.properties_dir(); "
             "print(p); assert (p / 'model' / 'DiffuReasonSASRec.yaml').is_file()")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=str(tmp_path))
    assert found.returncode == 0, found.stderr[-2000:]
    assert Path(found.stdout.strip()) == target / "recbole_diffureason" / "properties"


def test_version_is_recorded_in_the_changelog():
    import recbole_diffureason

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    version = recbole_diffureason.__version__
    assert version == "0.2.0" and (f"## {version} " in changelog or f"## {version}\n" in changelog)


def test_run_outputs_are_ignored_and_plotting_is_optional():
    import configparser

    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    for folder in ("hyper/", "ray_results/", "saved/", "log/"):
        assert folder in ignored, folder
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "matplotlib" not in cfg["options"]["install_requires"]  # never a core dependency
    extras = cfg["options.extras_require"]
    assert "matplotlib" in extras["plot"] and "matplotlib" in extras["test"]
    assert "recbole-dr = recbole_diffureason.cli:main" in cfg["options.entry_points"]["console_scripts"]
