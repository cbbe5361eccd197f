"""Fail when a git-tracked file holds something shaped like a secret, or `.env` is tracked.

Usage: python scripts/check_secrets.py [REPO_DIR]   (default: the repository holding the cwd)
Exit status 0: clean; 1: findings, one line each on stderr (values redacted); 2: not a repo.
Stdlib only, so it runs before any dependency is installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# What a leaked credential looks like. Each pattern is built so that this file does not match it.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    # Hugging Face user access tokens: "hf_" and 34 letters today; 30+ leaves room.
    "Hugging Face token": re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}"),
    # Vercel's prefixed formats (personal, integration, app access, app refresh, API key).
    "Vercel token": re.compile(r"(?<![A-Za-z0-9])vc[pirak]_[A-Za-z0-9]{24,}"),
    # Older Vercel tokens carry no prefix: catch them where they are assigned by name.
    "Vercel token (assigned)": re.compile(
        r"VERCEL_TOKEN[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9]{24,}(?![A-Za-z0-9])"
    ),
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    # promptgate's own client keys, as `python -m lib.keys new` makes them: "pg_" and 43
    # letters and digits. (The suite's canaries hold underscores, so never match.)
    "promptgate client key": re.compile(r"(?<![A-Za-z0-9])pg_[A-Za-z0-9]{40,}(?![A-Za-z0-9])"),
}

# Canary and placeholder values that may appear in tracked files. Keep this list short and
# exact: an entry allows only a match that equals it or starts with it.
ALLOWED_PREFIXES: tuple[str, ...] = (
    # Token-shaped canaries for tests, e.g. "hf_testcanary" + 30 letters: never a real token.
    "hf_testcanary",
    "vcp_testcanary",
)
ALLOWED_VALUES: frozenset[str] = frozenset(
    {
        # The documentation's placeholder for a Hugging Face token.
        "hf_" + "x" * 34,
    }
)
# Settings files that hold real values; only the example may be tracked.
_ENV_FILE = re.compile(r"\.env(\..+)?")
_ALLOWED_ENV_FILES = frozenset({".env.example"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one tracked file; `line` is 0 for a problem with the file itself."""

    path: str
    line: int
    kind: str
    excerpt: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.kind}: {self.excerpt}"


def is_allowed(value: str) -> bool:
    """True when `value` is a known canary or placeholder rather than a possible secret."""
    return value in ALLOWED_VALUES or value.startswith(ALLOWED_PREFIXES)


def scan_text(path: str, text: str) -> list[Finding]:
    """The secret-shaped values in `text`, with their line numbers and redacted."""
    findings = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(line):
                if not is_allowed(match.group()):
                    findings.append(Finding(path, line_number, kind, _redact(match.group())))
    return findings


def scan_repository(repo: Path) -> list[Finding]:
    """Every finding in the files git tracks under `repo` (index and work tree alike)."""
    findings = []
    for path in tracked_files(repo):
        name = PurePosixPath(path).name
        if _ENV_FILE.fullmatch(name) and name not in _ALLOWED_ENV_FILES:
            findings.append(Finding(path, 0, "settings file tracked", "remove it: git rm --cached"))
        file = repo / path
        if not file.is_file():  # deleted in the work tree, or a submodule
            continue
        # Binary files too: a token pickled or zipped uncompressed is still a leak.
        findings.extend(scan_text(path, file.read_bytes().decode("utf-8", errors="replace")))
    return findings


def tracked_files(repo: Path) -> list[str]:
    """The paths git tracks under `repo`, relative to it."""
    result = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True
    )
    return [p for p in result.stdout.decode("utf-8", errors="surrogateescape").split("\0") if p]


def _redact(value: str) -> str:
    # Enough to find it, never enough to use it.
    return f"{value[:8]}… ({len(value)} characters)"


def main(argv: list[str] | None = None) -> int:
    """Scan the repository named on the command line (or the current one); return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    start = Path(args[0]) if args else Path.cwd()
    top = subprocess.run(
        ["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    if top.returncode != 0:
        print(f"check_secrets: {start} is not inside a git repository", file=sys.stderr)
        return 2
    repo = Path(top.stdout.strip())
    findings = scan_repository(repo)
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        print(
            f"check_secrets: {len(findings)} finding(s). Remove the value, revoke it if it was "
            "real, and keep secrets in the platform's settings.",
            file=sys.stderr,
        )
        return 1
    print(f"check_secrets: {len(tracked_files(repo))} tracked files, no secrets found.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
