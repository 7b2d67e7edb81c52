"""dbtflow.cloud._client against the fake dbt Cloud API on loopback: paging, retries, errors, secrecy, updates."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dbtflow.cloud._client import (
    ApiToken,
    DbtCloudClient,
    DbtCloudError,
    DbtCloudUnavailable,
    JobChanged,
    RunStatus,
    normalize_base_url,
    resolve_token,
)
from dbtflow.errors import UserError
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, JOB_UPDATE, READ_TOKEN, FakeDbtCloud

Client = Callable[..., DbtCloudClient]


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


# -- hosts and tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("us", "https://cloud.getdbt.com"),
        ("EMEA", "https://emea.dbt.com"),
        ("au", "https://au.dbt.com"),
        ("cloud.getdbt.com", "https://cloud.getdbt.com"),
        ("emea.dbt.com", "https://emea.dbt.com"),
        ("https://au.dbt.com/", "https://au.dbt.com"),
        ("ab123.us1.dbt.com", "https://ab123.us1.dbt.com"),
        ("https://ab123.us1.dbt.com/api/v2/", "https://ab123.us1.dbt.com"),
        ("https://cloud.getdbt.com/api/v3", "https://cloud.getdbt.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ],
)
def test_base_url_accepts_regions_hosts_and_urls(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "not a host!", "http://cloud.getdbt.com", "https://cloud.getdbt.com/deploy/1", "ftp://emea.dbt.com"]
)
def test_base_url_refuses_junk_in_one_line(bad: str) -> None:
    with pytest.raises(UserError) as exc:
        normalize_base_url(bad)
    assert one_line(str(exc.value))


def test_token_from_env_and_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_CLOUD_API_TOKEN", ADMIN_TOKEN)
    token = resolve_token()
    assert token.reveal() == ADMIN_TOKEN
    assert ADMIN_TOKEN not in repr(token) and ADMIN_TOKEN not in str(token)
    monkeypatch.delenv("DBT_CLOUD_API_TOKEN")
    with pytest.raises(UserError, match="set DBT_CLOUD_API_TOKEN or pass --token-block") as exc:
        resolve_token()
    assert one_line(str(exc.value))


# -- paging, filters, ordering -------------------------------------------------------------------


def test_jobs_page_past_100(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    jobs = cloud_client().list_jobs(project_id=20)
    assert [j.id for j in jobs] == list(range(2000, 2120))
    pages = dbt_cloud.requests_to("GET", r"/jobs/$")
    assert [(p.query["limit"], p.query["offset"]) for p in pages] == [(["100"], ["0"]), (["100"], ["100"])]
    assert all(j.project_id == 20 for j in jobs)


def test_runs_page_past_100_ascending_by_default_and_newest_first_on_request(cloud_client: Client) -> None:
    client = cloud_client()
    runs = client.list_runs(1001)
    assert len(runs) == 153 and [r.id for r in runs] == sorted(r.id for r in runs)
    newest = client.list_runs(1001, order_by="-id")
    assert [r.id for r in newest] == sorted((r.id for r in runs), reverse=True)
    assert newest[0].id == 60202 and newest[0].status == RunStatus.RUNNING
    assert [r.id for r in client.list_runs(1001, order_by="-id", max_items=3)] == [60202, 60201, 60200]


def test_run_status_filters(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    client = cloud_client()
    runs = client.list_runs(1001)
    succeeded = client.list_runs(1001, status=RunStatus.SUCCESS)
    failed = client.list_runs(1001, status=[RunStatus.ERROR, RunStatus.CANCELLED])
    assert {r.id for r in succeeded} == {r.id for r in runs if r.status == 10}
    assert {r.id for r in failed} == {r.id for r in runs if r.status in (20, 30)}
    assert dbt_cloud.requests_to("GET", r"/runs/$")[-1].query["status__in"] == ["[20,30]"]
    assert client.list_runs(1002) == []


def test_last_successful_run_has_its_steps(cloud_client: Client) -> None:
    run = cloud_client().last_successful_run(1001)
    assert run is not None and run.id == 60200 and run.is_success
    assert [(s.index, s.dbt_command) for s in run.run_steps] == [
        (1, None),
        (2, None),
        (3, "deps"),
        (4, "source freshness"),
        (5, "seed"),
        (6, "build --select tag:daily"),
        (7, "docs generate"),
    ]
    assert cloud_client().last_successful_run(1002) is None


def test_docs_generate_last_step_artifacts_by_step(
    dbt_cloud: FakeDbtCloud, cloud_client: Client, tmp_path: Path
) -> None:
    """The default artifact is the last step's (docs generate: all success); ?step= gets the build's."""
    client = cloud_client()
    run = client.get_run(60200)
    assert run.run_steps[-1].dbt_command == "docs generate"
    last = json.loads(client.download_artifact(60200, "run_results.json"))
    assert last["args"]["which"] == "generate" and {r["status"] for r in last["results"]} == {"success"}
    build_step = next(s.index for s in run.run_steps if (s.dbt_command or "").startswith("build"))
    built = json.loads(client.download_artifact(60200, "run_results.json", step=build_step))
    assert built["args"]["which"] == "build" and "warn" in {r["status"] for r in built["results"]}
    assert dbt_cloud.requests[-1].query == {"step": [str(build_step)]}
    manifest = json.loads(client.download_artifact(60200, "manifest.json", step=build_step))
    assert manifest["metadata"]["dbt_schema_version"].endswith("manifest/v12.json")
    with pytest.raises(DbtCloudError) as exc:
        client.download_artifact(60200, "run_results.json", step=3)  # dbt deps leaves none
    assert exc.value.status_code == 404 and one_line(str(exc.value))


# -- retries -------------------------------------------------------------------------------------


def test_429_then_success_honours_retry_after(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    dbt_cloud.rate_limit(times=2, retry_after=1, method="GET", path=r"/jobs/$")
    started = time.monotonic()
    jobs = cloud_client(backoff=0.01).list_jobs(project_id=10)
    elapsed = time.monotonic() - started
    assert len(jobs) == 16
    calls = dbt_cloud.requests_to("GET", r"/jobs/$")
    assert [c.status for c in calls] == [429, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.95 for gap in gaps), gaps  # Retry-After: 1, not the 0.01 s backoff
    assert 1.9 <= elapsed < 6, elapsed


def test_retry_after_beyond_the_bound_gives_up_at_once(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    dbt_cloud.rate_limit(times=1, retry_after=3600)
    with pytest.raises(DbtCloudUnavailable, match="rate-limited") as exc:
        cloud_client(max_retry_after=60).list_jobs()
    assert one_line(str(exc.value)) and len(dbt_cloud.requests) == 1


def test_500_storm_gives_up_within_the_retry_bound(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    dbt_cloud.fail(500, times=None, path=r"/jobs/")
    started = time.monotonic()
    with pytest.raises(DbtCloudUnavailable) as exc:
        cloud_client(max_attempts=4, backoff=0.1).list_jobs()
    elapsed = time.monotonic() - started
    message = str(exc.value)
    assert one_line(message) and "failed 4 times" in message and "500" in message and "retry later" in message
    assert len(dbt_cloud.requests) == 4
    assert elapsed < (0.1 + 0.2 + 0.4) * 1.1 + 2, elapsed  # backoff 0.1, 0.2, 0.4 (+10% jitter) plus I/O


def test_5xx_then_success(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    dbt_cloud.fail(503, times=2, path=r"/jobs/1001/")
    assert cloud_client().get_job(1001).name == "Prod daily build"
    assert [r.status for r in dbt_cloud.requests] == [503, 503, 200]


def test_a_hang_times_out_and_is_retried(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    dbt_cloud.hang(30, times=1, path=r"/jobs/1001/")
    started = time.monotonic()
    assert cloud_client(timeout=0.5).get_job(1001).id == 1001
    assert time.monotonic() - started < 5
    dbt_cloud.hang(30, times=None, path=r"/jobs/1001/")
    with pytest.raises(DbtCloudUnavailable, match="timed out") as exc:
        cloud_client(timeout=0.3, max_attempts=2).get_job(1001)
    assert one_line(str(exc.value))


def test_nothing_listening_is_unavailable_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = DbtCloudClient(f"http://127.0.0.1:{port}", ApiToken("x" * 20, "test"), 1, backoff=0.01, max_attempts=2)
    with client, pytest.raises(DbtCloudUnavailable, match="could not connect") as exc:
        client.list_jobs()
    assert one_line(str(exc.value))


# -- refusals: one line, what was wrong and how to fix it ----------------------------------------


def test_401_names_the_token_source_not_the_token(cloud_client: Client) -> None:
    with pytest.raises(DbtCloudError) as exc:
        cloud_client(token="dbtc_wrong_token_0000").list_jobs()
    message = str(exc.value)
    assert exc.value.status_code == 401 and one_line(message)
    assert "rejected the API token from test token" in message and "dbtc_wrong_token_0000" not in message


def test_403_for_another_account_and_for_writes_with_a_read_token(cloud_client: Client) -> None:
    with pytest.raises(DbtCloudError) as exc:
        cloud_client(account_id=2).list_jobs()
    assert exc.value.status_code == 403 and one_line(str(exc.value)) and "permission" in str(exc.value)
    reader = cloud_client(token=READ_TOKEN)
    assert reader.get_job(1001).id == 1001
    with pytest.raises(DbtCloudError) as exc:
        reader.update_job(1001, {"triggers.schedule": False})
    assert exc.value.status_code == 403 and "Job Admin" in str(exc.value) and one_line(str(exc.value))


def test_404_says_what_and_where(cloud_client: Client) -> None:
    with pytest.raises(DbtCloudError) as exc:
        cloud_client().get_job(999999)
    message = str(exc.value)
    assert exc.value.status_code == 404 and one_line(message)
    assert "read job 999999" in message and "region" in message
    with pytest.raises(DbtCloudError, match="404"):
        cloud_client(account_id=99).list_jobs()


def test_the_token_never_appears_in_logs_or_errors(
    dbt_cloud: FakeDbtCloud, cloud_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    client = cloud_client(max_attempts=2)
    texts += [repr(client), str(client.token), repr(client.token)]
    client.list_jobs(project_id=10)
    client.update_job(1001, {"triggers.schedule": False})
    dbt_cloud.rate_limit(times=1, retry_after=0)
    client.get_job(1001)
    for action in (
        lambda: cloud_client(token=READ_TOKEN).update_job(1001, {"name": "x"}),
        lambda: client.get_job(424242),
        lambda: cloud_client(account_id=2).list_jobs(),
    ):
        with pytest.raises(DbtCloudError) as exc:
            action()
        texts += [str(exc.value), repr(exc.value), str(exc.value.__cause__), str(exc.value.__context__)]
    dbt_cloud.fail(500, times=None)
    with pytest.raises(DbtCloudUnavailable) as unavailable:
        client.list_runs()
    texts.append(str(unavailable.value))
    assert caplog.records, "the client logs its requests at DEBUG and its retries at WARNING"
    everything = "\n".join([*texts, caplog.text, *(str(r.args) for r in caplog.records)])
    for secret in (ADMIN_TOKEN, READ_TOKEN):
        assert secret not in everything
    assert all(r.auth_scheme == "Token" for r in dbt_cloud.requests)


# -- update_job: the read-modify-write the API requires ------------------------------------------


def _without_volatile(snapshot: bytes) -> dict[str, object]:
    return dict(json.loads(snapshot))


def test_update_job_changes_only_the_field_and_posts_the_whole_job(
    dbt_cloud: FakeDbtCloud, cloud_client: Client
) -> None:
    client = cloud_client()
    original = dbt_cloud.job_snapshot(1001)
    update = client.update_job(1001, {"triggers.schedule": False})
    assert update.changed and update.before["triggers"]["schedule"] is True
    assert update.after["triggers"]["schedule"] is False
    before, after = _without_volatile(original), _without_volatile(dbt_cloud.job_snapshot(1001))
    assert {k for k in before if before[k] != after[k]} == {"triggers"}
    assert {k: v for k, v in after["triggers"].items() if before["triggers"][k] != v} == {"schedule": False}
    (post,) = dbt_cloud.requests_to("POST", JOB_UPDATE)
    expected_body = {**update.before, "triggers": {**update.before["triggers"], "schedule": False}}
    assert post.body == expected_body  # the whole object from the GET, one field changed

    restore = client.update_job(1001, {"triggers": update.before["triggers"]})
    assert restore.changed and dbt_cloud.job_snapshot(1001) == original  # byte for byte


def test_update_job_twice_writes_once_and_expect_guards_concurrent_edits(
    dbt_cloud: FakeDbtCloud, cloud_client: Client
) -> None:
    client = cloud_client()
    assert client.update_job(1002, {"triggers.schedule": False}, expect={"triggers.schedule": True}).changed
    again = client.update_job(1002, {"triggers.schedule": False})
    assert not again.changed and len(dbt_cloud.requests_to("POST", JOB_UPDATE)) == 1
    with pytest.raises(JobChanged) as exc:
        client.update_job(1002, {"triggers.schedule": True}, expect={"triggers.schedule": True})
    assert one_line(str(exc.value)) and len(dbt_cloud.requests_to("POST", JOB_UPDATE)) == 1


def test_500_on_the_second_job_update_leaves_the_second_job_untouched(
    dbt_cloud: FakeDbtCloud, cloud_client: Client
) -> None:
    """The fault issue 7's cutover test injects: the first update lands, the second keeps failing."""
    dbt_cloud.fail(500, method="POST", path=JOB_UPDATE, after=1, times=None)
    client = cloud_client(max_attempts=3)
    before_second = dbt_cloud.job_snapshot(1002)
    assert client.update_job(1001, {"triggers.schedule": False}).changed
    with pytest.raises(DbtCloudUnavailable, match="update job 1002"):
        client.update_job(1002, {"triggers.schedule": False})
    assert dbt_cloud.job_snapshot(1002) == before_second
    assert json.loads(dbt_cloud.job_snapshot(1001))["triggers"]["schedule"] is False


def test_a_lost_response_is_safe_to_retry(dbt_cloud: FakeDbtCloud, cloud_client: Client) -> None:
    """The update is applied but its answer is a 502: the retried full-object POST is idempotent."""
    dbt_cloud.inject(status=502, method="POST", path=JOB_UPDATE, apply=True, times=1)
    update = cloud_client().update_job(1003, {"generate_docs": True})
    assert update.after["generate_docs"] is True
    assert [r.status for r in dbt_cloud.requests_to("POST", JOB_UPDATE)] == [502, 200]


# -- the fake refuses what the real API refuses --------------------------------------------------


def _post(fake: FakeDbtCloud, job_id: int, body: object) -> httpx.Response:
    return httpx.post(
        f"{fake.url}/api/v2/accounts/1/jobs/{job_id}/", json=body, headers={"Authorization": f"Token {ADMIN_TOKEN}"}
    )


def test_fake_rejects_job_bodies_missing_required_fields(dbt_cloud: FakeDbtCloud) -> None:
    required = dbt_cloud.spec.schema("HumanReadableJobDefinitionRequest")["required"]
    assert set(required) >= {"account_id", "environment_id", "name", "project_id", "settings", "triggers", "execution"}
    original = dbt_cloud.job_snapshot(1001)
    response = _post(dbt_cloud, 1001, {"name": "renamed", "triggers": {"github_webhook": False, "schedule": False}})
    assert response.status_code == 400
    body = response.json()
    assert body["status"]["is_success"] is False and body["status"]["code"] == 400
    assert set(body["data"]) == set(required) - {"name", "triggers"}
    assert dbt_cloud.job_snapshot(1001) == original

    full = dbt_cloud.render_job(dbt_cloud.jobs[1001])
    for broken, field in (
        ({**full, "settings": {"target_name": "prod"}}, "settings.threads"),
        ({**full, "triggers": {"schedule": False}}, "triggers.github_webhook"),
        ({**full, "execution": {}}, "execution.timeout_seconds"),
        ({**full, "generate_docs": "yes"}, "generate_docs"),
        ({**full, "state": None}, "state"),
    ):
        response = _post(dbt_cloud, 1001, broken)
        assert response.status_code == 400 and field in response.json()["data"], (field, response.json())
    assert dbt_cloud.job_snapshot(1001) == original


def test_fake_resets_left_out_optional_fields_like_the_real_api(dbt_cloud: FakeDbtCloud) -> None:
    """Why clients must read-modify-write: a body without `description` resets it to the default ''."""
    full = dbt_cloud.render_job(dbt_cloud.jobs[1001])
    assert full["description"] == "The nightly production build"
    response = _post(dbt_cloud, 1001, {k: v for k, v in full.items() if k != "description"})
    assert response.status_code == 200 and response.json()["data"]["description"] == ""


def test_fake_serves_the_spec_envelope(dbt_cloud: FakeDbtCloud) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # Bearer is accepted as well as Token
    base = f"{dbt_cloud.url}/api/v2/accounts/1"
    spec = dbt_cloud.spec
    for path, schema in (
        ("/jobs/?project_id=10", "HumanReadableJobDefinitionListEnveloped"),
        ("/jobs/1001/", "HumanReadableJobDefinitionEnveloped"),
        ("/runs/?job_definition_id=1001&limit=5", "RunResponseListEnveloped"),
        ("/runs/60200/?include_related=run_steps", "RunResponseEnveloped"),
        ("/environments/", "EnvironmentV2ListEnveloped"),
        ("/projects/", "ProjectListEnveloped"),
        ("/runs/60200/artifacts/", "ListOfStringsEnveloped"),
    ):
        response = httpx.get(base + path, headers=headers)
        assert response.status_code == 200, path
        assert spec.errors(schema, response.json()) == [], path
    runs = httpx.get(base + "/runs/?job_definition_id=1001&limit=5&offset=100", headers=headers).json()
    assert runs["extra"]["pagination"] == {"count": 5, "total_count": 153}
    assert runs["extra"]["order_by"] == "id" and runs["extra"]["filters"]["job_definition_id"] == 1001
    assert [r["id"] for r in runs["data"]] == [60101, 60102, 60103, 60104, 60105]
    assert runs["data"][0]["run_steps"] == []  # steps only with include_related
    failed = sum(1 for r in dbt_cloud.runs.values() if r["job_definition_id"] == 1001 and r["status"] in (20, 30))
    for forms in ("status__in=[20,30]", "status__in=20,30", "status__in=20&status__in=30"):
        got = httpx.get(f"{base}/runs/?job_definition_id=1001&{forms}", headers=headers).json()
        assert got["extra"]["pagination"]["total_count"] == failed, forms
    assert httpx.get(base + "/jobs/?limit=101", headers=headers).status_code == 400
    unauthorized = httpx.get(base + "/jobs/")
    assert unauthorized.status_code == 401 and unauthorized.json()["status"]["is_success"] is False


def test_fake_persists_a_trigger_update_and_refuses_a_non_boolean_trigger(
    dbt_cloud: FakeDbtCloud, cloud_client: Client
) -> None:
    """What cutover writes for a CI job: its webhooks off, the rest of the job as it was."""
    client = cloud_client()
    before = client.get_job_raw(1008)
    off = {**before["triggers"], "github_webhook": False, "git_provider_webhook": False}
    assert client.update_job(1008, {"triggers": off}).after["triggers"] == off
    assert client.get_job_raw(1008)["triggers"] == off  # persisted, not only echoed
    stored = dbt_cloud.job_snapshot(1008)
    response = _post(dbt_cloud, 1008, {**before, "triggers": {**off, "on_merge": "no"}})
    assert response.status_code == 400 and "triggers.on_merge" in response.json()["data"]
    assert dbt_cloud.job_snapshot(1008) == stored
