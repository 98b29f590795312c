"""House rules a script can check: ruff is clean, and the library never imports Prefect."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "pkg", "tests", "tasks", "flows"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_library_never_imports_prefect():
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "pkg").rglob("*.py")
                 if any(line.lstrip().startswith(("import prefect", "from prefect"))
                        for line in path.read_text().splitlines())]
    assert offenders == []
