"""The secret scan `make test` runs (scripts/check_secrets.py) fails when a credential lands in the tree."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.keys import new_key

SCAN = REPO / "scripts" / "check_secrets.py"


def scan(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCAN), str(root)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the project's reviewed baseline and an innocent file."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shutil.copy(REPO / ".secrets.baseline", root / ".secrets.baseline")
    (root / ".gitignore").write_text("ignored/\n")
    (root / "app.py").write_text('GREETING = "hello"\n')
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def test_a_clean_tree_passes(repo: Path):
    result = scan(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no new secrets" in result.stdout


def test_a_committed_private_key_fails_without_printing_it(repo: Path):
    key = new_key()
    (repo / "deploy").mkdir()
    (repo / "deploy" / "rsa_key.p8").write_text(key.private_pem)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)

    result = scan(repo)

    assert result.returncode == 1
    assert "deploy/rsa_key.p8:1: Private Key" in result.stdout
    assert not any(line in result.stdout + result.stderr for line in key.secret_lines())


def test_a_password_in_code_fails_even_before_git_add(repo: Path):
    value = "Pw" + secrets.token_hex(8)  # (detect-secrets' keyword rule misses values starting with "-")
    name = "snowflake_" + "password"  # built here, so this file holds no literal for the scan to flag
    (repo / "settings.py").write_text(f'{name} = "{value}"\n')  # untracked, not ignored

    result = scan(repo)

    assert result.returncode == 1
    assert "settings.py:1: Secret Keyword" in result.stdout and value not in result.stdout


def test_ignored_files_are_not_scanned(repo: Path):
    (repo / "ignored").mkdir()
    (repo / "ignored" / "local.pem").write_text(new_key().private_pem)
    assert scan(repo).returncode == 0
