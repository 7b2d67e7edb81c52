"""`dbtflow parity` as a user runs it: exit codes, outputs, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbtflow.cli import app
from tests.conftest import BIN
from tests.parity.builders import manifest, node, run_results, write_run, write_step
from tests.parity.test_differences import FLAKY, MYSTERY, cloud_docs, prefect_docs

NODES = [node("seed.wg.brands"), node("model.wg.stg", depends_on=("seed.wg.brands",))]
RESULTS = [("seed.wg.brands", "success"), ("model.wg.stg", "success")]


def invoke(*args: str):
    return CliRunner().invoke(app, ["parity", "--no-publish", *args])


def test_identical_runs_exit_0(tmp_path: Path):
    cloud = write_step(tmp_path / "cloud", manifest(NODES), run_results(RESULTS))
    runs = tmp_path / "runs"
    write_run(runs / "a1b2", None, [("build", manifest(NODES), run_results(RESULTS)), ("docs generate", None, None)])
    md, js = tmp_path / "report.md", tmp_path / "report.json"
    result = invoke(
        "--cloud-artifacts",
        str(cloud),
        "--prefect-run",
        "latest",
        "--runs-dir",
        str(runs),
        "--markdown-out",
        str(md),
        "--json-out",
        str(js),
    )
    assert result.exit_code == 0, result.output
    assert "# dbt parity: ✅ parity holds" in result.output and "parity: parity holds" in result.output
    assert md.read_text().startswith("# dbt parity: ✅ parity holds")
    data = json.loads(js.read_text())
    assert data["exit_code"] == 0 and data["counts"]["same"] == 2 and data["differences"] == []
    assert [s["folder"] for s in data["prefect"]["steps"] if s["used"]] == ["01-build"]


def test_the_json_report_says_when_it_was_made_and_for_which_target(tmp_path: Path):
    """`generated_at`: when the command ran (UTC); `target`: the Prefect run's (run.json, else dbt's args) or null."""
    cloud = write_step(tmp_path / "cloud", manifest(NODES), run_results(RESULTS))
    runs = tmp_path / "runs"
    write_run(runs / "a1b2", None, [("build", manifest(NODES), run_results(RESULTS))], target="prod")
    by_args = write_step(tmp_path / "target-dev", manifest(NODES), run_results(RESULTS, target="dev"))
    unnamed = write_step(tmp_path / "plain", manifest(NODES), run_results(RESULTS))
    sides = {
        "run": ["--prefect-run", "a1b2", "--runs-dir", str(runs)],
        "args": ["--prefect-artifacts", str(by_args)],
        "none": ["--prefect-artifacts", str(unnamed)],
    }
    started = datetime.now(UTC) - timedelta(seconds=1)  # generated_at is to the second
    found = {}
    for name, side in sides.items():
        out, md = tmp_path / f"{name}.json", tmp_path / f"{name}.md"
        result = invoke("--cloud-artifacts", str(cloud), *side, "--json-out", str(out), "--markdown-out", str(md))
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["generated_at"]), data["generated_at"]
        assert started <= datetime.fromisoformat(data["generated_at"]) <= datetime.now(UTC)
        found[name] = (data["target"], data["prefect"]["target"], data["cloud"]["target"])
        assert f"| target | - | {data['target'] or '-'} |" in md.read_text()
    assert found == {"run": ("prod", "prod", None), "args": ("dev", "dev", None), "none": (None, None, None)}
    printed = invoke("--cloud-artifacts", str(cloud), *sides["run"], "--json-out", "-")
    assert json.loads(printed.stdout)["target"] == "prod" and json.loads(printed.stdout)["generated_at"]


def test_unexplained_exits_1_and_an_accept_file_turns_it_into_0(tmp_path: Path):
    cloud = write_step(tmp_path / "cloud", *cloud_docs())
    prefect = write_step(tmp_path / "prefect", *prefect_docs())
    result = invoke("--cloud-artifacts", str(cloud), "--prefect-artifacts", str(prefect), "--json-out", "-")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    open_ = [d for d in data["differences"] if not d["explained"] and not d["accepted"]]
    accept = tmp_path / "reviewed.json"
    accept.write_text(
        json.dumps({"accept": [{"unique_id": d["unique_id"], "kind": d["kind"], "note": "ok"} for d in open_]})
    )
    result = invoke("--cloud-artifacts", str(cloud), "--prefect-artifacts", str(prefect), "--accept", str(accept))
    assert result.exit_code == 0, result.output
    assert {FLAKY, MYSTERY} == {d["unique_id"] for d in open_}
    assert "## Accepted (2)" in result.output


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "is not valid JSON"),
        (lambda p: p.write_text("this is not json"), "is not valid JSON"),
    ],
    ids=["truncated", "not-json"],
)
def test_bad_artifact_is_one_line_and_exit_2(tmp_path: Path, damage, message: str):
    cloud = write_step(tmp_path / "cloud", manifest(NODES), run_results(RESULTS))
    prefect = write_step(tmp_path / "prefect", manifest(NODES), run_results(RESULTS))
    damage(prefect / "manifest.json")
    result = invoke("--cloud-artifacts", str(cloud), "--prefect-artifacts", str(prefect))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Prefect: ") and message in lines[0]
    assert "manifest.json" in lines[0] and "Traceback" not in result.output


def test_truncated_artifact_through_the_real_command(tmp_path: Path):
    cloud = write_step(tmp_path / "cloud", manifest(NODES), run_results(RESULTS))
    prefect = write_step(tmp_path / "prefect", manifest(NODES), run_results(RESULTS))
    data = (cloud / "run_results.json").read_bytes()
    (cloud / "run_results.json").write_bytes(data[:-40])
    cmd = [str(BIN / "dbtflow"), "parity", "--cloud-artifacts", str(cloud), "--prefect-artifacts", str(prefect)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "run_results.json is not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize(
    "args,message",
    [
        ((), "give exactly one of --cloud-artifacts DIR, --cloud-run ID, --cloud-job ID"),
        (("--cloud-artifacts", "x", "--cloud-run", "5"), "give exactly one of --cloud-artifacts"),
        (("--cloud-artifacts", "x"), "give exactly one of --prefect-run ID|latest, --prefect-artifacts DIR"),
        (("--cloud-artifacts", "x", "--prefect-run", "latest", "--runs-dir", "/nonexistent"), "no stored runs"),
    ],
)
def test_bad_options_exit_2(args: tuple[str, ...], message: str):
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_bad_accept_file_exits_2(tmp_path: Path):
    cloud = write_step(tmp_path / "cloud", manifest(NODES), run_results(RESULTS))
    accept = tmp_path / "accept.yml"
    accept.write_text("- unique_id: model.wg.stg\n  kind: sometimes\n")
    result = invoke("--cloud-artifacts", str(cloud), "--prefect-artifacts", str(cloud), "--accept", str(accept))
    assert result.exit_code == 2 and "entry 1: needs unique_id and kind" in result.stderr


def test_cloud_job_goes_through_the_fetch_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from dbtflow.cli import _parity as cli_parity

    asked: list[cli_parity.CloudRunRef] = []

    def fetch(ref: cli_parity.CloudRunRef, dest: Path) -> Path:
        asked.append(ref)
        cli_parity.store_cloud_step(
            dest,
            1,
            cli_parity.step_command("Invoke dbt with `dbt build --select x`"),
            json.dumps(manifest(NODES)).encode(),
            json.dumps(run_results(RESULTS)).encode(),
        )
        return dest

    monkeypatch.setattr(cli_parity, "FETCH", fetch)
    prefect = write_step(tmp_path / "prefect", manifest(NODES), run_results(RESULTS))
    result = invoke(
        "--cloud-job",
        "42",
        "--cloud-host",
        "emea.dbt.com",
        "--cloud-account-id",
        "7",
        "--prefect-artifacts",
        str(prefect),
    )
    assert result.exit_code == 0, result.output
    assert asked == [cli_parity.CloudRunRef(job_id=42, host="emea.dbt.com", account_id=7)]
    assert "`01-build`" in result.output and "| artifacts | `dbt Cloud job 42's last run` |" in result.output
    assert cli_parity.step_command("Invoke dbt with `dbt docs generate`") == "docs generate"
    assert cli_parity.step_command("Invoke dbt with `dbt source freshness`") == "source freshness"
