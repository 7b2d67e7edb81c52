"""dbt Cloud Administrative API v2: a small, typed, retrying client (httpx).

Contract
- `DbtCloudClient(base_url, token, account_id)` talks to one account on one host. `base_url`
  may be a region (`us`, `emea`, `au`), a host (`cloud.getdbt.com`, `emea.dbt.com`,
  `au.dbt.com`, `ab123.us1.dbt.com`) or a URL (`https://ab123.us1.dbt.com/`); see `normalize_base_url`.
- The token is an `ApiToken` from `resolve_token()`: a Prefect Secret block (by name) or the
  environment variable `DBT_CLOUD_API_TOKEN`. It is sent as `Authorization: Token <t>` by an
  httpx auth hook and appears in no repr, log line or exception message.
- Lists follow `limit`(<=100)/`offset` until `extra.pagination.total_count`. Runs are listed
  ascending by id unless told otherwise: pass `order_by="-id"` for newest first.
- 429 (honouring Retry-After), 5xx and transport errors/timeouts are retried with exponential
  backoff, at most `max_attempts` tries; then `DbtCloudUnavailable` (one line). 401/403/404 and
  other 4xx raise `DbtCloudError` (a `UserError`, one line: what was wrong, how to fix it).
- `update_job(job_id, changes)` is the read-modify-write the API requires: GET the job, set only
  the given fields (dotted paths, e.g. `{"triggers.schedule": False}`), POST the whole object
  back. It returns the job before and after, skips the POST when nothing would change, and can
  refuse to write when the job no longer matches `expect` (someone edited it meanwhile).

Pitfalls
- POSTing a partial job is accepted by dbt Cloud and silently resets fields with defaults
  (description, triggers_on_draft_pr, ...). Never POST anything but a full object from a GET.
- Job updates are idempotent (a full object), so retrying one after a timeout is safe even if
  the first attempt was applied.
- Artifacts default to the *last* step of a run (often `docs generate`, whose run_results marks
  everything `success`); pass `step=` (the run step's `index`, counting clone/profile steps).
- `run_steps` come only with `get_run(..., include_related=["run_steps"])`; list endpoints omit them.
- A job's environment-variable overrides come only with `include_related=["custom_environment_variables"]`
  (`ENV_VARS`); an environment carries its own and the project's defaults. They are kept out of
  `Job.raw`, so a read-modify-write never POSTs them back.
- With `order_by=-id`, runs created while paging shift the offsets; items are de-duplicated by id.
- Plain `http://` is accepted only for loopback hosts (tests); anything else must be https.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from prefect.blocks.system import Secret
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dbtflow.errors import UserError

logger = logging.getLogger(__name__)

TOKEN_ENV = "DBT_CLOUD_API_TOKEN"
REGIONS = {"us": "https://cloud.getdbt.com", "emea": "https://emea.dbt.com", "au": "https://au.dbt.com"}
PAGE_SIZE = 100  # the API's maximum
ENV_VARS = "custom_environment_variables"  # an `include_related` value of jobs, and a field of environments
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class DbtCloudError(UserError):
    """dbt Cloud refused a request for a reason the user can fix (401/403/404/4xx); one line."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class DbtCloudUnavailable(RuntimeError):
    """dbt Cloud kept failing (429/5xx/timeouts) past the retry bound; one line."""


class DbtCloudMalformed(DbtCloudUnavailable):
    """dbt Cloud answered with data of a shape dbtflow cannot read (a wrong host, an API change); one line."""


class JobChanged(DbtCloudError):
    """`update_job(expect=...)` found the job edited since it was read; nothing was written."""


class RunStatus(IntEnum):
    QUEUED = 1
    STARTING = 2
    RUNNING = 3
    SUCCESS = 10
    ERROR = 20
    CANCELLED = 30


class ApiToken:
    """A dbt Cloud API token that never shows itself: repr/str name only where it came from."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        if not value or not value.strip():
            raise UserError(f"the dbt Cloud API token from {source} is empty: put a service token there")
        self._value = value.strip()
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"ApiToken(source={self.source!r})"

    __str__ = __repr__


def resolve_token(secret_block: str | None = None, env_var: str = TOKEN_ENV) -> ApiToken:
    """The token from the Prefect Secret block `secret_block` when given, else from `env_var`."""
    if secret_block:
        try:
            block: Any = Secret.load(secret_block)
            value = block.get()
        except Exception as exc:
            raise UserError(
                f"cannot read the Prefect Secret block {secret_block!r} ({type(exc).__name__}): create it with "
                f"the dbt Cloud token, or point PREFECT_API_URL at the server that has it"
            ) from None
        return ApiToken(str(value), f"Prefect Secret block {secret_block!r}")
    value = os.environ.get(env_var)
    if not value:
        raise UserError(f"no dbt Cloud API token: set {env_var} or pass --token-block <Prefect Secret block name>")
    return ApiToken(value, f"environment variable {env_var}")


def normalize_base_url(value: str) -> str:
    """`https://host` from a region name, a host, or a URL (an `/api/...` suffix is dropped)."""
    text = (value or "").strip()
    if text.lower() in REGIONS:
        return REGIONS[text.lower()]
    parts = urlsplit(text if "://" in text else f"https://{text}")
    host = parts.hostname or ""
    path = re.sub(r"/api(/v[23])?/?$", "", parts.path.rstrip("/"))
    if parts.scheme not in ("http", "https") or not (_HOST.match(host) or host == "::1") or path or parts.query:
        raise UserError(
            f"{value!r} is not a dbt Cloud host: pass e.g. cloud.getdbt.com, emea.dbt.com, au.dbt.com, "
            "<prefix>.us1.dbt.com or https://<host>"
        )
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise UserError(f"{value!r} uses http: dbt Cloud needs https (the token would travel in clear)")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}{f':{parts.port}' if parts.port else ''}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class JobSettings(_Model):
    threads: int | None = None
    target_name: str | None = None


class JobTriggers(_Model):
    github_webhook: bool | None = False
    schedule: bool | None = False
    git_provider_webhook: bool | None = None
    on_merge: bool | None = None


class ScheduleDate(_Model):
    type: str | None = None
    days: list[int] | None = None
    cron: str | None = None


class ScheduleTime(_Model):
    type: str | None = None
    hours: list[int] | None = None
    interval: int | None = None


class JobSchedule(_Model):
    date: ScheduleDate | None = None
    time: ScheduleTime | None = None
    cron: str | None = None


class JobExecution(_Model):
    timeout_seconds: int | None = 0


class EnvVar(_Model):
    """One dbt Cloud environment variable value (`CustomEnvironmentVariable`) at one level.

    `type` is the level: `project` (the default), `environment`, `job` (an override) or `user`
    (a developer's personal value, IDE only). A secret's `display_value` is masked by dbt Cloud.
    """

    name: str
    type: str
    project_id: int | None = None
    environment_id: int | None = None
    job_definition_id: int | None = None
    display_value: str | None = None
    state: int = 1


class Job(_Model):
    """A job as the API returns it; `raw` keeps the whole object for read-modify-write."""

    id: int
    account_id: int
    project_id: int
    environment_id: int
    name: str
    job_type: str | None = None
    state: int = 1
    execute_steps: list[str] = Field(default_factory=list)
    settings: JobSettings = Field(default_factory=JobSettings)
    execution: JobExecution = Field(default_factory=JobExecution)
    generate_docs: bool = False
    run_generate_sources: bool = False
    triggers: JobTriggers = Field(default_factory=JobTriggers)
    schedule: JobSchedule | None = None
    deferring_job_definition_id: int | None = None
    deferring_environment_id: int | None = None
    job_completion_trigger_condition: dict[str, Any] | None = None
    dbt_version: str | None = None
    run_failure_count: int | None = 0
    run_lint: bool | None = False
    run_compare_changes: bool | None = False
    lifecycle_webhooks: bool | None = False
    triggers_on_draft_pr: bool | None = False
    cost_optimization_features: list[str] | None = None
    custom_environment_variables: list[EnvVar] | None = None  # job overrides, with include_related only
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("execute_steps", "settings", "execution", "triggers", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any, info: ValidationInfo) -> Any:
        """The API may send `null` for an empty list or object (e.g. `execute_steps: null`)."""
        if value is None:
            return [] if info.field_name == "execute_steps" else {}
        return value

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Job:
        raw = {k: v for k, v in data.items() if k != ENV_VARS}  # included on request only: never POSTed back
        return cls.model_validate({**data, "raw": deepcopy(raw)})


class Environment(_Model):
    id: int
    project_id: int
    name: str
    type: str | None = None  # "deployment" or "development"
    deployment_type: str | None = None  # "production", "staging" or null
    dbt_version: str | None = None
    use_custom_branch: bool | None = False
    custom_branch: str | None = None
    state: int = 1  # 1 active, 2 deleted
    custom_environment_variables: list[EnvVar] | None = None  # the project's defaults and this environment's


_STEP_COMMAND = re.compile(r"`(?:dbt\s+)?([^`]+)`")


class RunStep(_Model):
    id: int | None = None
    index: int
    name: str
    status: int | None = None

    @property
    def dbt_command(self) -> str | None:
        """`build --select x` from a step named "Invoke dbt with `dbt build --select x`", else None."""
        match = _STEP_COMMAND.search(self.name) if "dbt" in self.name else None
        return match.group(1).strip() if match else None


class Run(_Model):
    id: int
    account_id: int | None = None
    project_id: int | None = None
    environment_id: int | None = None
    job_definition_id: int | None = None
    status: int
    status_humanized: str | None = None
    dbt_version: str | None = None
    git_sha: str | None = None
    git_branch: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    has_docs_generated: bool | None = None
    has_sources_generated: bool | None = None
    artifacts_saved: bool | None = None
    href: str | None = None
    trigger: dict[str, Any] | None = None
    run_steps: list[RunStep] = Field(default_factory=list)

    @property
    def is_success(self) -> bool:
        return self.status == RunStatus.SUCCESS


@dataclass(frozen=True)
class JobUpdate:
    """The outcome of `update_job`: the job before and after (raw API objects)."""

    job_id: int
    before: dict[str, Any]
    after: dict[str, Any]
    changed: bool


def get_path(obj: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path (`triggers.schedule`), or None when any part is missing."""
    current: Any = obj
    for part in dotted.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def set_path(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    current = obj
    for part in parents:
        child = current.get(part)
        if not isinstance(child, dict):
            child = current[part] = {}
        current = child
    current[last] = deepcopy(value)


class _TokenAuth(httpx.Auth):
    def __init__(self, token: ApiToken) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Token {self._token.reveal()}"
        yield request


def _list_param(values: Sequence[Any]) -> str:
    """A list query value as `[a,b]`, the form dbt Cloud documents for `status__in`/`include_related`."""
    return "[" + ",".join(json.dumps(v) if isinstance(v, str) else str(v) for v in values) + "]"


class DbtCloudClient:
    """One dbt Cloud account on one host. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        token: ApiToken,
        account_id: int,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.account_id = int(account_id)
        self.token = token
        self.max_attempts = max(1, max_attempts)
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self._sleep = sleep or time.sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=_TokenAuth(token),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Accept": "application/json", "User-Agent": "dbtflow"},
        )

    def __repr__(self) -> str:
        return f"DbtCloudClient({self.base_url!r}, account_id={self.account_id})"

    def __enter__(self) -> DbtCloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ---------------------------------------------------------------------------

    def _path(self, tail: str) -> str:
        return f"/api/v2/accounts/{self.account_id}/{tail}"

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One logical request with bounded retries; raises DbtCloudError / DbtCloudUnavailable."""
        started = time.monotonic()
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            t0 = time.monotonic()
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                response, last = None, f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                response, last = None, f"could not connect ({type(exc).__name__})"
            if response is not None:
                elapsed_ms = (time.monotonic() - t0) * 1000
                logger.debug("%s %s -> %s (%.0f ms)", method, response.request.url, response.status_code, elapsed_ms)
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES:
                    raise self._refusal(response, method, what)
                last = f"{response.status_code} {response.reason_phrase}"
            if attempt == self.max_attempts:
                break
            delay = self._delay(attempt, response, method, what)
            logger.warning(
                "dbt Cloud: %s %s: %s; retrying in %.1f s (attempt %d of %d)",
                method,
                path,
                last,
                delay,
                attempt + 1,
                self.max_attempts,
            )
            self._sleep(delay)
        raise DbtCloudUnavailable(
            f"dbt Cloud at {self.base_url} did not {what}: {method} {path} failed {self.max_attempts} times in "
            f"{time.monotonic() - started:.1f} s (last: {last}); dbt Cloud may be degraded "
            "(see status.getdbt.com): retry later"
        )

    def _delay(self, attempt: int, response: httpx.Response | None, method: str, what: str) -> float:
        if response is not None and response.status_code == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                if retry_after > self.max_retry_after:
                    raise DbtCloudUnavailable(
                        f"dbt Cloud at {self.base_url} rate-limited the request to {what} for {retry_after:.0f} s "
                        f"(more than {self.max_retry_after:.0f} s): retry later, or run fewer API clients at once"
                    )
                return retry_after
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return float(base) * (0.9 + 0.2 * random.random())

    def _refusal(self, response: httpx.Response, method: str, what: str) -> DbtCloudError:
        code = response.status_code
        where = f"{self.base_url} account {self.account_id}"
        detail = _status_message(response)
        if code == 401:
            message = (
                f"dbt Cloud at {self.base_url} rejected the API token from {self.token.source} (401 Unauthorized): "
                "put a valid service token or personal access token for this host there (tokens are per region/cell)"
            )
        elif code == 403:
            role = "Job Admin" if method != "GET" else "Job Viewer (or Account Viewer)"
            message = (
                f"the API token from {self.token.source} may not {what} in {where} (403 Forbidden{detail}): "
                f"give the service token the {role} permission on this account and project"
            )
        elif code == 404:
            message = (
                f"dbt Cloud could not {what} in {where} (404 Not Found: no such object there): check the id, the "
                "account and the host (an account lives in one region or cell, e.g. emea.dbt.com, <prefix>.us1.dbt.com)"
            )
        else:
            message = f"dbt Cloud refused to {what} in {where} ({code} {response.reason_phrase}{detail})"
        return DbtCloudError(message, code)

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, what, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise DbtCloudUnavailable(
                f"dbt Cloud at {self.base_url} answered {method} {path} with non-JSON "
                f"({response.headers.get('content-type', 'no content type')}): check the host"
            ) from None
        if not isinstance(body, dict) or "data" not in body:
            raise DbtCloudUnavailable(f"dbt Cloud at {self.base_url} answered {method} {path} without a data envelope")
        return body

    def _paginate(self, tail: str, what: str, params: Mapping[str, Any], max_items: int | None) -> Iterator[Any]:
        offset, seen = 0, set[Any]()
        query = {k: v for k, v in params.items() if v is not None}
        while max_items is None or len(seen) < max_items:
            limit = PAGE_SIZE if max_items is None else min(PAGE_SIZE, max_items - len(seen))
            body = self._json("GET", self._path(tail), what, params={**query, "limit": limit, "offset": offset})
            page = body["data"] or []
            if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
                raise self._malformed(what, "`data` is not a list of objects")
            total = int(((body.get("extra") or {}).get("pagination") or {}).get("total_count", 0))
            for item in page:
                key = item.get("id") if isinstance(item, dict) else None
                if key is not None and key in seen:
                    continue
                seen.add(key if key is not None else object())
                yield item
                if max_items is not None and len(seen) >= max_items:
                    return
            offset += len(page)
            if not page or offset >= total:
                return

    # -- API ---------------------------------------------------------------------------------

    def _malformed(self, what: str, problem: str) -> DbtCloudMalformed:
        return DbtCloudMalformed(
            f"dbt Cloud at {self.base_url} answered {what} with data dbtflow cannot read ({problem}): "
            "check --base-url is dbt Cloud's API; if it is, report this object to dbt Cloud support"
        )

    def _parse(self, what: str, parse: Callable[[Any], Any], item: Any) -> Any:
        """One API object into its model, or DbtCloudMalformed naming the object and the field."""
        try:
            return parse(item)
        except (ValidationError, TypeError) as exc:
            name = f"object id {item.get('id')!r}: " if isinstance(item, dict) else ""
            if isinstance(exc, ValidationError):
                error = exc.errors()[0]
                detail = f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            else:
                detail = f"not an object: {item!r}"[:120]
            raise self._malformed(what, name + detail) from None

    def list_environments(self, project_id: int | None = None) -> list[Environment]:
        items = self._paginate("environments/", "list environments", {"project_id": project_id}, None)
        return [self._parse("list environments", Environment.model_validate, e) for e in items]

    def list_jobs(
        self,
        project_id: int | None = None,
        environment_id: int | None = None,
        *,
        scheduled: bool | None = None,
        max_items: int | None = None,
        include_related: Sequence[str] = (),
    ) -> list[Job]:
        params = {"project_id": project_id, "environment_id": environment_id, "order_by": "id"}
        if include_related:
            params["include_related"] = _list_param(list(include_related))
        if scheduled is not None:
            params["triggers_schedule"] = str(scheduled).lower()
        items = self._paginate("jobs/", "list jobs", params, max_items)
        return [self._parse("list jobs", Job.from_api, j) for j in items]

    def get_job_raw(self, job_id: int, include_related: Sequence[str] = ()) -> dict[str, Any]:
        params = {"include_related": _list_param(list(include_related))} if include_related else {}
        path, what = self._path(f"jobs/{int(job_id)}/"), f"read job {job_id}"
        data: dict[str, Any] = self._json("GET", path, what, params=params)["data"]
        return data

    def get_job(self, job_id: int, include_related: Sequence[str] = ()) -> Job:
        raw = self.get_job_raw(job_id, include_related)
        return self._parse(f"read job {job_id}", Job.from_api, raw)  # type: ignore[no-any-return]

    def update_job(
        self,
        job_id: int,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> JobUpdate:
        """Read-modify-write: GET the job, set each dotted path in `changes`, POST the whole object.

        `expect` maps dotted paths to the values the job must still have; otherwise JobChanged.
        """
        if not changes:
            raise ValueError("update_job needs at least one change")
        before = self.get_job_raw(job_id)
        for path, wanted in (expect or {}).items():
            if get_path(before, path) != wanted:
                raise JobChanged(
                    f"job {job_id} changed in dbt Cloud since it was read ({path} is {get_path(before, path)!r}, "
                    f"expected {wanted!r}): nothing was written; review the job and run again",
                    409,
                )
        body = deepcopy(before)
        for path, value in changes.items():
            set_path(body, path, value)
        if body == before:
            return JobUpdate(int(job_id), before, before, changed=False)
        what = f"update job {job_id}"
        after: dict[str, Any] = self._json("POST", self._path(f"jobs/{int(job_id)}/"), what, json=body)["data"]
        return JobUpdate(int(job_id), before, after, changed=True)

    def list_runs(
        self,
        job_id: int | None = None,
        *,
        status: int | Sequence[int] | None = None,
        environment_id: int | None = None,
        project_id: int | None = None,
        order_by: str = "id",
        max_items: int | None = None,
    ) -> list[Run]:
        """Runs of the account (ascending id by default; `order_by="-id"` for newest first)."""
        params: dict[str, Any] = {
            "job_definition_id": job_id,
            "environment_id": environment_id,
            "project_id": project_id,
            "order_by": order_by,
        }
        if isinstance(status, int):
            params["status"] = int(status)
        elif status is not None:
            params["status__in"] = _list_param([int(s) for s in status])
        return [Run.model_validate(r) for r in self._paginate("runs/", "list runs", params, max_items)]

    def get_run(self, run_id: int, include_related: Sequence[str] = ("run_steps",)) -> Run:
        params = {"include_related": _list_param(list(include_related))} if include_related else {}
        body = self._json("GET", self._path(f"runs/{int(run_id)}/"), f"read run {run_id}", params=params)
        return Run.model_validate(body["data"])

    def last_successful_run(self, job_id: int) -> Run | None:
        """The newest successful run of a job, with its steps; None when it never succeeded."""
        runs = self.list_runs(job_id, status=RunStatus.SUCCESS, order_by="-id", max_items=1)
        return self.get_run(runs[0].id) if runs else None

    def download_artifact(self, run_id: int, path: str, step: int | None = None) -> bytes:
        """One artifact file (e.g. `run_results.json`) of a run; of step `step` (its index) if given."""
        what = f"download {path} of run {run_id}" + (f" step {step}" if step is not None else "")
        params = {"step": int(step)} if step is not None else {}
        url = self._path(f"runs/{int(run_id)}/artifacts/{path.lstrip('/')}")
        return self._send("GET", url, what, params=params, follow_redirects=True).content


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_message(response: httpx.Response) -> str:
    """`: <user_message>; <field>: <problem>` from an error envelope, kept to one short line."""
    try:
        body = response.json()
        status = body.get("status") or {}
    except (ValueError, AttributeError):
        return ""
    parts = [str(status.get("user_message") or "")]
    data = body.get("data")
    if isinstance(data, dict):  # field errors of a refused write: {"name": ["This field is required."]}
        parts += [f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in list(data.items())[:5]]
    text = " ".join("; ".join(p for p in parts if p).split())[:300]
    return f": {text}" if text else ""
