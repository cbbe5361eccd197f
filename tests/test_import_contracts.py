"""The import rules of lib/ (`.importlinter`, run by `make test` as `lint-imports`) hold, and
each kind of wrong import breaks the contract that forbids it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / ".importlinter")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in ("lib", "api"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tree / ".importlinter")
    return tree


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint(_copy_of_the_tree(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


# A module, the wrong import added to it, and the contract that must then be broken.
WRONG_IMPORTS = [
    ("lib/upstream/client.py", "from lib.access import Caller", "Layers"),
    ("lib/access/caller.py", "from lib.upstream import UpstreamClient", "Layers"),
    ("lib/http/access_log.py", "from lib.schemas import Health", "Layers"),
    (
        "lib/inference/chat.py",
        "from lib.upstream.client import UpstreamClient",
        "lib.upstream only",
    ),
    ("lib/routes/chat.py", "from lib.access.limits import Limiter", "lib.access only"),
    ("lib/app.py", "from lib.routes.gate import GatedRoute", "lib.routes only through its face"),
    ("lib/app.py", "from lib.standin import StandinState", "make dev and the tests only"),
    ("lib/standin/app.py", "from lib.errors import ProxyError", "imports nothing else"),
    ("lib/keys.py", "from lib.routes import Services", "Nothing imports the routes"),
]


@pytest.mark.parametrize(("module", "line", "contract"), WRONG_IMPORTS)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _copy_of_the_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = _lint(tree)
    assert done.returncode != 0, done.stdout[-3000:]
    broken = [row for row in done.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(contract in row for row in broken), done.stdout[-3000:]
