"""A non-editable install (a wheel, as the Docker image does it) carries what the server reads
at run time besides Python code: the admin UI's templates and every migration."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_install_finds_its_templates_and_migrations(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("authserver-*.whl"))
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies come from this interpreter's site-packages, appended after the new
    # environment's own, so that `authserver` is the installed wheel, not this checkout.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True, timeout=300)
    probe = subprocess.run([python, "-c", (
        "import authserver, pathlib; from authserver.web.assets import templates_dir; "
        "from authserver.storage.db import MIGRATIONS_DIR; "
        "print(authserver.__file__); print(templates_dir()); "
        "print(sorted(p.name for p in (MIGRATIONS_DIR / 'versions').glob('0*.py')))")],
        check=True, capture_output=True, text=True, cwd=tmp_path)
    module, templates, migrations = probe.stdout.splitlines()
    assert module.startswith(str(site)), module
    assert Path(templates) == env / "share" / "authserver" / "templates"
    shipped = {p.name for p in (Path(templates) / "admin").iterdir()}
    assert shipped == {p.name for p in (ROOT / "templates" / "admin").iterdir()}
    expected = sorted(p.name for p in (ROOT / "authserver/storage/migrations/versions")
                      .glob("0*.py"))
    assert migrations == str(expected)
