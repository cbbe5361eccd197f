"""The Vercel AI SDK for the tests: installed with `npm ci` from tests/js, run with Node.

The pinned packages (tests/js/package.json and its package-lock.json) are installed once
into a cache directory outside git and outside the Vercel bundle (`.cache/ai-sdk`, or
AI_SDK_DIR), and again only when the lockfile changes; an installed copy needs no network.
Without node or npm the tests skip, saying why (under CI=true, tests/conftest.py fails them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO / "tests" / "js"
_STAMP = ".lockfile-sha256"


def require_node() -> None:
    """Skip (fail under CI=true) unless node and npm are on PATH."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not on PATH: the Vercel AI SDK tests run it with Node 18+ "
        "(.ci/run installs nodejs and npm)."
    )
    pytest.skip(f"SKIPPED, NOT TESTED: {message}")  # under CI, conftest fails it instead


def installed_ai_sdk() -> Path:
    """The directory holding the pinned AI SDK's node_modules; installs it if needed."""
    require_node()
    target = Path(os.environ.get("AI_SDK_DIR") or REPO / ".cache" / "ai-sdk")
    target.mkdir(parents=True, exist_ok=True)
    lockfile = (PACKAGE_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lockfile).hexdigest()
    stamp = target / _STAMP
    if stamp.exists() and stamp.read_text() == digest and (target / "node_modules").is_dir():
        return target
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PACKAGE_DIR / name, target / name)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=target,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci of tests/js failed:\n{(done.stdout + done.stderr)[-3000:]}")
    stamp.write_text(digest)
    return target


def run_node_script(source: str, name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ESM `source` with Node beside the installed AI SDK (so its imports resolve)."""
    directory = installed_ai_sdk()
    script = directory / name
    script.write_text(source)
    return subprocess.run(
        ["node", str(script)],
        cwd=directory,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
