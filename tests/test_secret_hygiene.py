"""scripts/check_secrets.py: this repository passes, a committed secret or `.env` fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib.standin import STANDIN_TOKEN
from scripts.check_secrets import is_allowed, scan_text
from tests.conftest import CANARY_KEY, CANARY_TOKEN

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_secrets.py"

# Secret-shaped values are assembled at run time so that this file holds none of them.
LETTERS = "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"  # 34 letters, like a real token's body
FAKE_HF_TOKEN = "hf" + "_" + LETTERS
FAKE_VERCEL_TOKEN = "vc" + "p_" + LETTERS
FAKE_LEGACY_VERCEL_TOKEN = LETTERS[:24]
FAKE_CLIENT_KEY = "pg" + "_" + LETTERS + "AbCdEfGhI"  # 43 letters, as lib.keys makes them
PRIVATE_KEY_BLOCK = "-----" + "BEGIN OPENSSH PRIVATE" + " KEY-----\nb3BlbnNzaC1rZXktdjE=\n"


def _run(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(repo)], capture_output=True, text=True, timeout=60
    )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.test", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Path:
    """An empty git repository with one harmless committed file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    (repo / "README.md").write_text("A project.\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "--quiet", "-m", "start")
    return repo


def _commit(repo: Path, name: str, content: str) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    _git(repo, "add", "--force", name)  # --force: a .gitignore must not hide the mistake
    _git(repo, "commit", "--quiet", "-m", f"add {name}")


def test_this_repository_holds_no_secret() -> None:
    result = _run(REPO)
    assert result.returncode == 0, result.stderr
    assert "no secrets found" in result.stdout


def test_clean_scratch_repo_passes(scratch_repo: Path) -> None:
    result = _run(scratch_repo)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("app/config.py", f'HF_TOKEN = "{FAKE_HF_TOKEN}"\n', "Hugging Face token"),
        ("notes.md", f"export VERCEL_TOKEN={FAKE_VERCEL_TOKEN}\n", "Vercel token"),
        ("ci.yml", f"VERCEL_TOKEN: '{FAKE_LEGACY_VERCEL_TOKEN}'\n", "Vercel token (assigned)"),
        ("deploy/id_ed25519", PRIVATE_KEY_BLOCK, "private key"),
        ("app/client.py", f"API_KEY = '{FAKE_CLIENT_KEY}'\n", "promptgate client key"),
    ],
)
def test_committed_secret_fails(scratch_repo: Path, name: str, content: str, kind: str) -> None:
    _commit(scratch_repo, name, "first line\n" + content)
    result = _run(scratch_repo)
    assert result.returncode == 1
    assert f"{name}:2: {kind}:" in result.stderr
    # The report points at the value without repeating it.
    assert LETTERS not in result.stderr and LETTERS[:24] not in result.stderr


def test_staged_but_uncommitted_secret_fails(scratch_repo: Path) -> None:
    (scratch_repo / "settings.toml").write_text(f"token = '{FAKE_HF_TOKEN}'\n")
    _git(scratch_repo, "add", "settings.toml")
    assert _run(scratch_repo).returncode == 1


def test_untracked_file_is_not_scanned(scratch_repo: Path) -> None:
    (scratch_repo / "scratch.txt").write_text(f"{FAKE_HF_TOKEN}\n")
    assert _run(scratch_repo).returncode == 0


@pytest.mark.parametrize("name", [".env", ".env.production", "deploy/.env", ".env.local"])
def test_tracked_env_file_fails_even_when_empty_of_secrets(scratch_repo: Path, name: str) -> None:
    _commit(scratch_repo, name, "LOG_LEVEL=INFO\n")
    result = _run(scratch_repo)
    assert result.returncode == 1
    assert f"{name}: settings file tracked" in result.stderr


def test_env_example_may_be_tracked(scratch_repo: Path) -> None:
    _commit(scratch_repo, ".env.example", (REPO / ".env.example").read_text())
    assert _run(scratch_repo).returncode == 0


def test_the_suites_canaries_pass(scratch_repo: Path) -> None:
    canaries = [
        CANARY_TOKEN,
        CANARY_KEY,
        STANDIN_TOKEN,
        "hf_testcanary" + LETTERS,
        "vcp_testcanary" + LETTERS,
        "hf_" + "x" * 34,
    ]
    _commit(scratch_repo, "tests/canaries.py", "".join(f'X = "{c}"\n' for c in canaries))
    result = _run(scratch_repo)
    assert result.returncode == 0, result.stderr


def test_keys_made_by_the_key_command_are_findings() -> None:
    from lib.access.keys import new_key

    assert scan_text("notes.md", f"key: {new_key()}\n")[0].kind == "promptgate client key"


def test_allowlist_is_narrow() -> None:
    # A prefix counts only at the start, and near-misses of the placeholder are findings.
    assert is_allowed("hf_testcanary" + LETTERS)
    assert not is_allowed(FAKE_HF_TOKEN)
    assert not is_allowed("hf_" + LETTERS[:10] + "testcanary" + LETTERS[:20])
    assert not is_allowed("hf_" + "x" * 33 + "y")
    assert not is_allowed("hf_test_canary" + LETTERS)
    assert scan_text("a.txt", f"key={FAKE_HF_TOKEN}x") != []


def test_binary_files_are_scanned_too(scratch_repo: Path) -> None:
    (scratch_repo / "blob.bin").write_bytes(b"\0\x01\xff" + FAKE_HF_TOKEN.encode() + b"\0")
    _git(scratch_repo, "add", "blob.bin")
    result = _run(scratch_repo)
    assert result.returncode == 1
    assert "blob.bin:1: Hugging Face token:" in result.stderr


def test_outside_a_repository_is_an_error(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == 2
    assert "not inside a git repository" in result.stderr
