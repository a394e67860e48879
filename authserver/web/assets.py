"""Where the HTML templates are: `templates/` of a source checkout (an editable install, the
README's commands), else the copy a wheel installs under `<prefix>/share/authserver/templates`
(pyproject's `data-files`; a Docker image or `pip install .`)."""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
INSTALLED_TEMPLATES = Path(sys.prefix) / "share" / "authserver" / "templates"


def templates_dir() -> Path:
    for candidate in (SOURCE_TEMPLATES, INSTALLED_TEMPLATES):
        if (candidate / "admin" / "base.html").is_file():
            return candidate
    raise RuntimeError(f"no templates in {SOURCE_TEMPLATES} or {INSTALLED_TEMPLATES}: "
                       "install authserver from its source tree or a wheel")
