"""The Prefect UI on loopback, in headless Chromium: what an operator opens after deploying.

The deployment page must show both schedules of prefect.yaml (as the UI words their crons, with
their on/off switches), and a flow run's page its per-node dbt task runs. The screenshots go to a
temporary folder; `make screenshots` (DBTFLOW_UPDATE_SCREENSHOTS=1) also copies them to docs/img/,
which the README shows.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.chromium import Chromium
from tests.e2e.conftest import Stack
from tests.e2e.test_deployment import _declared, _task_runs, _wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCS_IMG = REPO / "docs" / "img"
WIDTH, HEIGHT = 1440, 1000
SMALL_RUN = {"target": "local", "select": "+stg_distributors", "command": "build --indirect-selection cautious"}
# How the UI words the crons of prefect.yaml; a new cron there needs its wording here.
CRON_WORDING = {"0 5 * * *": "At 05:00 AM", "0 6 * * 1-5": "At 06:00 AM, Monday through Friday"}
SWITCHES = """Object.fromEntries([...document.querySelectorAll('[role=switch][aria-label^="toggle "]')]
    .map(e => [e.getAttribute('aria-label').slice('toggle '.length), e.getAttribute('aria-checked') === 'true']))"""


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _ui(stack: Stack) -> str:
    """The React UI ("v2", Prefect's default) served by the stack's own server."""
    root = stack.api.removesuffix("/api")
    settings = httpx.get(f"{root}/ui-settings", timeout=30).raise_for_status().json()
    assert "v2" in settings["available_uis"], settings
    return root + settings["v2_base_url"].rstrip("/")


def test_the_ui_shows_the_deployment_with_both_schedules_and_a_run_with_its_dbt_nodes(
    stack: Stack, tmp_path: Path
) -> None:
    deployment = stack.deployment()
    created = stack.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": SMALL_RUN})
    run = _wait_final(stack, [created["id"]])[0]
    assert run["state"]["type"] == "COMPLETED", run["state"]
    nodes = sorted({t["name"] for t in _task_runs(stack, run["id"])})
    assert {"seed distributors", "model stg_distributors"} <= set(nodes), nodes

    declared = _declared()
    unknown = {s["cron"] for s in declared.values()} - set(CRON_WORDING)
    assert not unknown, f"add how the UI words {unknown} to CRON_WORDING"
    wording = {slug: CRON_WORDING[s["cron"]] for slug, s in declared.items()}
    ui = _ui(stack)
    deployment_png, run_png = tmp_path / "prefect-deployment.png", tmp_path / "prefect-flow-run.png"

    with Chromium(WIDTH, HEIGHT) as browser:
        browser.open(f"{ui}/deployments/deployment/{deployment['id']}")
        text = browser.wait_for_text(["dbt_wg", "Schedules", *wording.values(), run["name"]])
        assert "flows/dbt_wg_flow.py:run_dbt_wg" in text
        # each schedule's switch: dev on, prod paused until the cutover (as prefect.yaml declares)
        assert browser.evaluate(SWITCHES) == {wording[slug]: s["active"] for slug, s in declared.items()}
        browser.screenshot(deployment_png)

        browser.open(f"{ui}/runs/flow-run/{run['id']}?tab=TaskRuns")
        browser.wait_for_text([run["name"], "Completed", f"{len(nodes)} Task runs", *nodes])
        browser.screenshot(run_png)
        assert browser.pids(), "chromium is not running"
    assert not browser.pids(), "chromium processes outlived the browser"

    for png in (deployment_png, run_png):
        assert _png_size(png) == (WIDTH, HEIGHT)
        assert png.stat().st_size > 50_000, f"{png.name} is nearly blank ({png.stat().st_size} bytes)"
    if os.environ.get("DBTFLOW_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for png in (deployment_png, run_png):
            shutil.copyfile(png, DOCS_IMG / png.name)
