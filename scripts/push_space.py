"""Build a Hugging Face Space's tree from promptgate's tracked app files and push it.

Usage: python3 scripts/push_space.py REMOTE_URL
  REMOTE_URL  the Space's git URL, https://huggingface.co/spaces/OWNER/NAME (any git URL works:
              the tests push to a local bare repository)
Environment:
  HF_SPACE_TOKEN  a Hugging Face token with write access to the Space; required for an https
                  remote. Git reads it through a credential helper at push time: it is never
                  put in a URL, an argument, the git config or any file of the Space.

The Space receives only what its Docker build needs, read from the files git tracks in the
repository holding the current directory: the Dockerfile, .dockerignore, requirements.txt,
api/ and lib/, plus a README.md whose front matter tells Spaces to build the Dockerfile
(`sdk: docker`) and which port the app listens on (`app_port`, the Dockerfile's EXPOSE).
Nothing else: no tests, no workflows, no `.env`, no untracked or ignored file.
The Space's history is kept: the script clones it, replaces its files and pushes one commit
on top (nothing, if the tree is unchanged), so a concurrent push makes it fail, never clobber.
Exit status 0: pushed or already up to date; 1: refused or failed, with the reason on stderr.
Stdlib only, so it runs on a bare runner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

# What the image's build reads (Dockerfile's COPY lines and its context filter).
APP_PATHS = ("Dockerfile", ".dockerignore", "requirements.txt", "api", "lib")
TOKEN_VARIABLE = "HF_SPACE_TOKEN"
SPACE_BRANCH = "main"
_ENV_FILE = re.compile(r"\.env(\..+)?")
_SPACE_URL = re.compile(r"^https://huggingface\.co/spaces/([\w.-]+)/[\w.-]+/?$")
# Reads the token from the environment when git asks for it; the token itself never appears
# in git's arguments (visible in /proc) or in any config file.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'echo "username=${PROMPTGATE_SPACE_USER:-hf}"; '
    f'echo "password=${{{TOKEN_VARIABLE}}}"; }}; f'
)
_IDENTITY = ("-c", "user.name=promptgate deploy", "-c", "user.email=deploy@promptgate.invalid")


class DeployError(Exception):
    """The tree cannot be built or pushed; the message says why, never holding a secret."""


def app_files(repo: Path) -> list[str]:
    """The tracked files the Space needs, relative to `repo`; refuses settings and binaries."""
    listed = _git(repo, "ls-files", "-z", "--", *APP_PATHS).stdout
    files = sorted(p for p in listed.split("\0") if p)
    if "Dockerfile" not in files:
        raise DeployError("the repository tracks no Dockerfile: nothing for a Space to build")
    for path in files:
        if _ENV_FILE.fullmatch(PurePosixPath(path).name):
            raise DeployError(f"{path} is a settings file: it must never reach the Space")
        # Spaces refuse binary files pushed without Xet/LFS; the app has none, keep it so.
        if b"\0" in (repo / path).read_bytes():
            raise DeployError(f"{path} is binary: Spaces take binary files only through Xet")
    return files


def app_port(repo: Path) -> int:
    """The port the image serves on: the Dockerfile's EXPOSE (7860, what Spaces expect)."""
    exposed = re.findall(r"^EXPOSE\s+(\d+)", (repo / "Dockerfile").read_text(), re.M)
    if len(exposed) != 1:
        raise DeployError("the Dockerfile must EXPOSE exactly one port")
    return int(exposed[0])


def space_readme(port: int) -> str:
    """The Space's README.md: front matter for the Spaces builder, then one line for people."""
    return (
        "---\n"
        "title: promptgate\n"
        "emoji: 🚪\n"
        "colorFrom: gray\n"
        "colorTo: blue\n"
        "sdk: docker\n"
        f"app_port: {port}\n"
        "pinned: false\n"
        "---\n"
        "A proxy to a small model on Hugging Face's inference router. "
        "Health: /api/health, docs: /docs.\n\n"
        "Deployed from promptgate's repository (each commit names its source commit); "
        "edits made here are replaced by the next deploy.\n"
    )


def build_tree(repo: Path, destination: Path) -> list[str]:
    """Write the Space's files into `destination` (which must exist); return their paths."""
    files = app_files(repo)
    for path in files:
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / path, target)
    (destination / "README.md").write_text(space_readme(app_port(repo)))
    return [*files, "README.md"]


def credential_args() -> list[str]:
    """Git options that answer the remote's credential request from `HF_SPACE_TOKEN`."""
    return ["-c", "credential.helper=", "-c", f"credential.helper={_CREDENTIAL_HELPER}"]


def push_space(repo: Path, remote_url: str, env: dict[str, str]) -> str:
    """Push the app's tree from `repo` to the Space at `remote_url`; return what happened."""
    https = remote_url.startswith("https://")
    if https and not env.get(TOKEN_VARIABLE):
        raise DeployError(f"{TOKEN_VARIABLE} is not set: the Space needs a write token")
    owner = _SPACE_URL.match(remote_url)
    if remote_url.startswith("https://huggingface.co/") and not owner:
        raise DeployError("a Space's URL is https://huggingface.co/spaces/OWNER/NAME (HF_SPACE)")
    git_env = {
        **env,
        "GIT_TERMINAL_PROMPT": "0",  # fail instead of waiting for a password nobody types
        "GIT_LFS_SKIP_SMUDGE": "1",  # the Space's old files are replaced, never read
        "PROMPTGATE_SPACE_USER": owner.group(1) if owner else "hf",
    }
    auth = credential_args() if https else []
    commit = _git(repo, "rev-parse", "HEAD").stdout.strip()
    with tempfile.TemporaryDirectory(prefix="promptgate-space-") as scratch:
        work = Path(scratch) / "space"
        clone = ("clone", "--quiet", "--depth", "1", remote_url, "space")
        _git(Path(scratch), *auth, *clone, env=git_env)
        _git(work, "checkout", "--quiet", "-B", SPACE_BRANCH)
        for entry in work.iterdir():  # the Space holds exactly the new tree, nothing stale
            if entry.is_dir() and entry.name != ".git":
                shutil.rmtree(entry)
            elif not entry.is_dir():
                entry.unlink()
        files = build_tree(repo, work)
        _git(work, "add", "--all")
        if _git(work, "status", "--porcelain").stdout == "":
            return f"the Space already holds commit {commit}'s app files; nothing pushed"
        _git(work, *_IDENTITY, "commit", "--quiet", "-m", f"Deploy promptgate {commit}")
        _git(work, *auth, "push", "--quiet", "origin", f"HEAD:{SPACE_BRANCH}", env=git_env)
    return f"pushed promptgate {commit} to the Space: {len(files)} files"


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )
    if result.returncode != 0:
        # git's own message; it never holds the token, which only the credential helper reads.
        action = next((a for a in args if not a.startswith("-") and "=" not in a), "git")
        raise DeployError(f"git {action} failed: {result.stderr.strip()}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Push to the Space named on the command line; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 1
    try:
        top = _git(Path.cwd(), "rev-parse", "--show-toplevel").stdout.strip()
        print(f"push_space: {push_space(Path(top), args[0], dict(os.environ))}")
    except DeployError as exc:
        print(f"push_space: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
