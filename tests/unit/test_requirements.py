"""requirements-prefect.txt is exactly what uv.lock pins for runtime (no dev tools), so the
Prefect Cloud managed pool installs what the tests ran against."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import BIN, REPO

DEV_ONLY = {
    "pytest",
    "pytest-timeout",
    "ruff",
    "mypy",
    "fakesnow",
    "detect-secrets",
    "uv",
    "types-pyyaml",
    "prefect-cloud",
}


def exported() -> str:
    makefile = (REPO / "Makefile").read_text()
    flags = re.search(r"^EXPORT_FLAGS := (.+)$", makefile, re.M)
    assert flags, "Makefile has no EXPORT_FLAGS"
    return subprocess.run(
        [str(BIN / "uv"), "export", *flags.group(1).split()], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def test_requirements_match_the_lock():
    committed = (REPO / "requirements-prefect.txt").read_text()
    assert committed == exported(), "requirements-prefect.txt drifted from uv.lock: run `make requirements`"


def test_requirements_are_exact_pins_without_dev_tools():
    names = set()
    for line in (REPO / "requirements-prefect.txt").read_text().splitlines():
        if not line.strip() or line.startswith(("#", "-e ")):
            continue
        spec = line.split(";")[0].strip()
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+!\-]+", spec), line
        names.add(spec.split("==")[0].split("[")[0].lower())
    assert not names & DEV_ONLY
    assert {"prefect", "prefect-dbt", "dbt-core", "dbt-duckdb", "dbt-snowflake", "prefect-snowflake"} <= names
