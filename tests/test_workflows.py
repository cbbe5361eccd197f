"""The GitHub workflows and the devcontainer: linted, schema-checked, and saying what they must."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent
# Actions pinned by commit; the comment names the release, for humans and for Dependabot.
_PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():  # installed by requirements-dev.txt: a missing one is a broken setup
        pytest.fail(
            f"{name} is not installed in {BIN}; run `make test` to install requirements-dev.txt"
        )
    return str(path)


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    # zizmor would consult the GitHub API with a token; the audits here must stay offline.
    for name in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"):
        env.pop(name, None)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def _workflow_text(name: str) -> str:
    return (WORKFLOWS / name).read_text()


def _uses_lines(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^\s*-?\s*uses:\s*(.+)$", text, re.M)]


def _parse_workflow(name: str) -> dict[str, Any]:
    # check-jsonschema brings a YAML parser (ruamel.yaml); the runtime needs none.
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(_workflow_text(name))


def test_workflows_exist() -> None:
    assert {"ci.yml", "deploy.yml", "space.yml"} <= {p.name for p in WORKFLOWS.glob("*.yml")}


def test_zizmor_finds_nothing() -> None:
    result = _run(_tool("zizmor"), "--offline", "--no-progress", str(WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_zizmor_flags_an_unsafe_workflow(tmp_path: Path) -> None:
    # Proves the linter runs and audits: template injection and an unpinned action.
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request_target\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    result = _run(_tool("zizmor"), "--offline", "--no-progress", str(bad))
    assert result.returncode != 0
    for audit in ("template-injection", "unpinned-uses", "excessive-permissions"):
        assert audit in result.stdout


def test_workflows_match_githubs_schema() -> None:
    result = _run(
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *[str(p) for p in sorted(WORKFLOWS.glob("*.yml"))],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_schema_check_is_offline_and_rejects_a_broken_workflow(tmp_path: Path) -> None:
    # The schema ships inside check-jsonschema: no cache dir, no network, and it still judges.
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    env_cache = tmp_path / "empty-cache"
    result = subprocess.run(
        [
            _tool("check-jsonschema"),
            "--no-cache",
            "--builtin-schema",
            "vendor.github-workflows",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_CACHE_HOME": str(env_cache), "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Schema validation errors" in result.stdout


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml", "space.yml"])
def test_every_action_is_pinned_by_commit_with_its_version(name: str) -> None:
    uses = _uses_lines(_workflow_text(name))
    assert uses, "expected at least one action"
    for line in uses:
        assert _PINNED_USES.match(line), line


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml", "space.yml"])
def test_checkouts_keep_no_credentials(name: str) -> None:
    workflow = _parse_workflow(name)
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_ci_runs_make_test_on_python_312_with_pip_cache() -> None:
    workflow = _parse_workflow("ci.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["test"]["steps"]
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.12"
    assert python["with"]["cache"] == "pip"
    # .ci/run: the system packages some tests need, then `make test` with CI=true.
    assert [s["run"] for s in steps if "run" in s] == ["bash .ci/run"]
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()


def test_deploy_runs_after_tests_with_the_pinned_cli_and_secrets_from_env() -> None:
    workflow = _parse_workflow("deploy.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    assert workflow["permissions"] == {}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    # The test job is ci.yml's: same steps, so production gets only what CI passes.
    assert workflow["jobs"]["test"]["steps"] == _parse_workflow("ci.yml")["jobs"]["test"]["steps"]
    # Opt-in, so projects deployed by Vercel's Git integration get no failing runs;
    # the deploy job is skipped whenever the test job is.
    assert workflow["jobs"]["test"]["if"] == "vars.VERCEL_DEPLOY_WITH_ACTIONS == 'true'"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert "if" not in deploy
    assert deploy["permissions"] == {"contents": "read"}
    runs = [s.get("run", "") for s in deploy["steps"]]
    assert runs[-3:] == [
        "vercel pull --yes --environment=production",
        "vercel build --prod",
        "vercel deploy --prebuilt --prod",
    ]
    for step in deploy["steps"][-3:]:
        assert step["env"] == {"VERCEL_TOKEN": "${{ secrets.VERCEL_TOKEN }}"}
    assert deploy["env"]["VERCEL_ORG_ID"] == "${{ secrets.VERCEL_ORG_ID }}"
    assert deploy["env"]["VERCEL_PROJECT_ID"] == "${{ secrets.VERCEL_PROJECT_ID }}"
    # No expression is ever pasted into a shell script.
    assert all("${{" not in run for run in runs)


def test_space_push_runs_after_tests_only_when_configured_with_the_token_from_env() -> None:
    workflow = _parse_workflow("space.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    assert workflow["permissions"] == {}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    # The Space gets only what CI passes: the same test job, skipped (with the push after it)
    # when the repository variable HF_SPACE is unset.
    assert workflow["jobs"]["test"]["steps"] == _parse_workflow("ci.yml")["jobs"]["test"]["steps"]
    assert workflow["jobs"]["test"]["if"] == "vars.HF_SPACE != ''"
    push = workflow["jobs"]["push"]
    assert push["needs"] == "test"
    assert "if" not in push
    assert push["permissions"] == {"contents": "read"}
    runs = [s.get("run", "") for s in push["steps"]]
    assert runs[-1] == 'python3 scripts/push_space.py "https://huggingface.co/spaces/$HF_SPACE"'
    assert push["steps"][-1]["env"] == {
        "HF_SPACE": "${{ vars.HF_SPACE }}",
        "HF_SPACE_TOKEN": "${{ secrets.HF_SPACE_TOKEN }}",
    }
    # The token is used in that one step alone, and no expression is pasted into a script.
    text = _workflow_text("space.yml")
    assert text.count("secrets.") == 1
    assert all("${{" not in run for run in runs)


def test_vercel_cli_is_pinned_in_its_lockfile() -> None:
    folder = REPO / ".github" / "vercel-cli"
    package = json.loads((folder / "package.json").read_text())
    lock = json.loads((folder / "package-lock.json").read_text())
    assert package["devDependencies"] == {"vercel": "58.10.0"}
    assert lock["packages"][""]["devDependencies"] == {"vercel": "58.10.0"}
    assert lock["packages"]["node_modules/vercel"]["version"] == "58.10.0"
    assert lock["packages"]["node_modules/vercel"]["integrity"].startswith("sha512-")


def test_devcontainer_is_json_with_python_312_install_port_and_secrets() -> None:
    config = json.loads((REPO / ".devcontainer" / "devcontainer.json").read_text())
    assert re.search(r"python:\d+-3\.12\b", config["image"]), config["image"]
    assert ".venv/.installed-stamp" in config["postCreateCommand"]
    assert 8000 in config["forwardPorts"]
    secrets = config["secrets"]
    assert set(secrets) == {"HF_TOKEN", "PROXY_API_KEYS"}
    for declared in secrets.values():
        assert declared["description"].strip()
    # Secrets come from Codespaces settings, never from the file.
    assert "HF_TOKEN" not in json.dumps(config.get("containerEnv", {}))
    assert "HF_TOKEN" not in json.dumps(config.get("remoteEnv", {}))
