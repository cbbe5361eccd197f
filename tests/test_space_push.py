"""scripts/push_space.py against a local bare repository standing in for the Space's git remote.

The source is a scratch repository holding this checkout's tracked files, with a `.env`, caches
and an untracked file beside them, as on a developer's machine: none of them may reach the Space.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CANARY_KEY, CANARY_TOKEN

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "push_space.py"
SPACE_TOKEN = "hf_test_canary_space_write_token_91c3e2"
APP_PREFIXES = ("api/", "lib/")
APP_FILES = {"Dockerfile", ".dockerignore", "requirements.txt"}


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _commit(repo: Path, message: str, *paths: str) -> None:
    _git(repo, "add", "--force", *(paths or ("--all",)))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", message)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A repository with this checkout's tracked files, and a developer's secrets and litter."""
    repo = tmp_path / "source"
    for path in _git(REPO, "ls-files", "-z").split("\0"):
        if path and (REPO / path).is_file():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / path, repo / path)
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, "source")
    (repo / ".env").write_text(f"HF_TOKEN={CANARY_TOKEN}\nPROXY_API_KEYS={CANARY_KEY}\n")
    (repo / "lib" / ".env.local").write_text(f"HF_TOKEN={CANARY_TOKEN}\n")
    (repo / "lib" / "__pycache__").mkdir(exist_ok=True)
    (repo / "lib" / "__pycache__" / "app.cpython-312.pyc").write_bytes(b"\0cache")
    (repo / "lib" / "scratch_notes.py").write_text(f"TOKEN = {CANARY_TOKEN!r}\n")
    return repo


@pytest.fixture
def space(tmp_path: Path) -> Path:
    """A bare repository holding what a new Docker Space starts with: README.md, .gitattributes."""
    bare = tmp_path / "space.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    _git(tmp_path, "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("---\ntitle: x\nsdk: docker\n---\n")
    (seed / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    _commit(seed, "initial commit")
    _git(seed, "push", "-q", "origin", "main")
    return bare


def _push(source: Path, remote: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(source.parent),  # no developer git config or credential helper
        "HF_TOKEN": CANARY_TOKEN,
        "PROXY_API_KEYS": CANARY_KEY,
        **env,
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), remote],
        cwd=source / "lib",  # any directory inside the repository
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _space_files(bare: Path) -> set[str]:
    return set(_git(bare, "ls-tree", "-r", "--name-only", "main").split())


def _front_matter(readme: str) -> dict[str, str]:
    match = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    assert match, readme
    return dict(line.split(": ", 1) for line in match.group(1).splitlines())


def test_the_space_gets_only_the_app_files_and_its_front_matter(source: Path, space: Path) -> None:
    result = _push(source, str(space), HF_SPACE_TOKEN=SPACE_TOKEN)
    assert result.returncode == 0, result.stderr
    assert "pushed promptgate" in result.stdout

    files = _space_files(space)
    tracked = set(_git(source, "ls-files").split())
    expected = {f for f in tracked if f in APP_FILES or f.startswith(APP_PREFIXES)}
    assert files == expected | {"README.md"}
    assert "lib/app.py" in files and "api/index.py" in files
    assert not [f for f in files if f.startswith(("tests/", ".github/", "scripts/", "docs/"))]
    assert not [f for f in files if ".env" in f or "__pycache__" in f or "scratch" in f]
    # The Space's template files are replaced, not kept beside the app.
    assert ".gitattributes" not in files

    readme = _git(space, "show", "main:README.md")
    front = _front_matter(readme)
    assert front["sdk"] == "docker"
    exposed = re.search(r"^EXPOSE (\d+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert exposed and front["app_port"] == exposed.group(1) == "7860"
    head = _git(source, "rev-parse", "HEAD").strip()
    assert _git(space, "log", "-1", "--format=%s", "main").strip() == f"Deploy promptgate {head}"
    assert _git(space, "show", "main:lib/app.py") == (REPO / "lib" / "app.py").read_text()
    # The Space's history is kept: one commit on top of the one it started with.
    assert len(_git(space, "log", "--format=%H", "main").split()) == 2


def test_no_secret_reaches_the_space_or_the_output(source: Path, space: Path) -> None:
    result = _push(source, str(space), HF_SPACE_TOKEN=SPACE_TOKEN)
    assert result.returncode == 0, result.stderr
    every_object = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=space,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    stored = b"".join(p.read_bytes() for p in space.rglob("*") if p.is_file())
    for secret in (CANARY_TOKEN, CANARY_KEY, SPACE_TOKEN):
        assert secret.encode() not in every_object
        assert secret.encode() not in stored  # config, refs, logs, hooks
        assert secret not in result.stdout + result.stderr


def test_an_unchanged_app_is_not_pushed_again(source: Path, space: Path) -> None:
    assert _push(source, str(space)).returncode == 0
    before = _git(space, "rev-parse", "main")
    (source / "tests" / "test_new.py").write_text("def test_x() -> None: ...\n")
    _commit(source, "a change the Space does not receive", "tests/test_new.py")
    result = _push(source, str(space))
    assert result.returncode == 0, result.stderr
    assert "nothing pushed" in result.stdout
    assert _git(space, "rev-parse", "main") == before


def test_the_first_push_to_an_empty_space_works(source: Path, tmp_path: Path) -> None:
    bare = tmp_path / "empty.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    result = _push(source, str(bare))
    assert result.returncode == 0, result.stderr
    assert {"README.md", "Dockerfile", "lib/app.py"} <= _space_files(bare)


def test_a_tracked_settings_file_stops_the_deploy(source: Path, space: Path) -> None:
    before = _git(space, "rev-parse", "main")
    _commit(source, "oops", "lib/.env.local")
    result = _push(source, str(space), HF_SPACE_TOKEN=SPACE_TOKEN)
    assert result.returncode == 1
    assert "lib/.env.local is a settings file" in result.stderr
    assert CANARY_TOKEN not in result.stdout + result.stderr
    assert _git(space, "rev-parse", "main") == before


def test_an_https_space_without_a_token_is_refused_before_any_network(source: Path) -> None:
    result = _push(source, "https://huggingface.co/spaces/someone/promptgate")
    assert result.returncode == 1
    assert "HF_SPACE_TOKEN is not set" in result.stderr


def test_git_reads_the_token_from_the_environment_never_from_arguments(tmp_path: Path) -> None:
    # The script's own credential options, asked the way git asks them before an https push.
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import push_space
    finally:
        sys.path.remove(str(SCRIPT.parent))
    options = push_space.credential_args()
    assert SPACE_TOKEN not in " ".join(options)
    result = subprocess.run(
        ["git", *options, "credential", "fill"],
        input="protocol=https\nhost=huggingface.co\npath=spaces/someone/promptgate\n\n",
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "GIT_TERMINAL_PROMPT": "0",
            "HF_SPACE_TOKEN": SPACE_TOKEN,
            "PROMPTGATE_SPACE_USER": "someone",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"password={SPACE_TOKEN}" in result.stdout.splitlines()
    assert "username=someone" in result.stdout.splitlines()


def test_a_malformed_space_url_is_refused(source: Path) -> None:
    # What the workflow builds when HF_SPACE holds no `owner/name`.
    result = _push(source, "https://huggingface.co/spaces/", HF_SPACE_TOKEN=SPACE_TOKEN)
    assert result.returncode == 1
    assert "https://huggingface.co/spaces/OWNER/NAME" in result.stderr


def test_a_binary_app_file_stops_the_deploy(source: Path, space: Path) -> None:
    # Spaces refuse binary files pushed without Xet: better a clear message before pushing.
    before = _git(space, "rev-parse", "main")
    (source / "lib" / "static" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    _commit(source, "a binary asset", "lib/static/logo.png")
    result = _push(source, str(space))
    assert result.returncode == 1
    assert "lib/static/logo.png is binary" in result.stderr
    assert _git(space, "rev-parse", "main") == before
