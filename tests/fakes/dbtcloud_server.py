"""A fake dbt Cloud Administrative API v2: a real HTTP server on loopback, for tests.

Contract
- `FakeDbtCloud()` loads the hand-written fixtures (`dbtcloud_fixtures.yaml` + the generated bulk
  below) and, on `start()` (or `with`), serves on `http://127.0.0.1:<free port>`; `stop()` ends it.
- Faithful to the spec in `../shared/reference/dbt-cloud-openapi-v2.yaml` (read at start-up, never
  copied): the envelope `{status: {code, is_success, user_message, developer_message}, data, extra:
  {filters, order_by, pagination: {count, total_count}}}`, limit (<= 100, else 400) / offset,
  filters, `order_by` (`-` for descending; runs ascend by id by default), `include_related`
  (run_steps only when asked), `Authorization: Token|Bearer <t>` (401 otherwise; 403 for an
  account the token may not see or a write by a read-only token; 404 for unknown objects).
- Job updates (`POST .../jobs/{id}/`) are checked against the request schema
  `HumanReadableJobDefinitionRequest`: a missing required field (nested ones too) or a wrong type
  is a 400 with DRF-style field errors and nothing changes. Like the real API, an accepted body
  replaces every writable field: an optional field left out falls back to its spec default, so a
  partial body silently resets fields (which is why clients must read-modify-write).
- Artifacts are per run step: `GET .../runs/{id}/artifacts/{path}?step=N` (N = the step's index;
  without it, the last step's), 404 when that step has no such file.
- Environment variables (`CustomEnvironmentVariable`: name, `type` project / environment / job /
  user, `display_value`): an environment's `custom_environment_variables` are its project's
  defaults and its own values; a job's overrides come with `include_related=custom_environment_variables`
  (on GET and list of jobs) only. Like dbt Cloud, a `DBT_ENV_SECRET*` value is never served:
  `display_value` is masked. Deleted ones (`state` 2) and personal (`user`) ones are not served.
  `add_env_var(**fields)` adds one at run time.
- `add_job(**fields)` and `add_run(job_id, [FakeStep("dbt build --select x", artifacts_from_dir(target))])`
  add objects at run time (clone and profile steps come first, as in dbt Cloud, so dbt steps start at 3).
- Fault injection (`inject`, `rate_limit`, `fail`, `hang`), a request log (`requests`, no
  Authorization values) and `job_snapshot`/`snapshot_jobs` (canonical JSON bytes of the stored job
  objects, `updated_at` left out unless asked) for byte-for-byte comparisons before and after.

Pitfalls
- The spec marks `description` with minLength 1, yet the API returns "" and accepts it back;
  minLength is not enforced here. Fields the spec marks readOnly are ignored in a body.
- `status__in` / `include_related` are accepted as `[a,b]`, `a,b` or repeated keys.
- A hang waits on the server's stop event, so `stop()` never blocks on a hanging request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_SPEC = Path("shared") / "reference" / "dbt-cloud-openapi-v2.yaml"
# beside the repository (/work/main -> /work/shared), also from a worktree further down (/work/wt/<name>)
SPEC_PATH = next((p / _SPEC for p in REPO.parents if (p / _SPEC).is_file()), REPO.parent / _SPEC)
FIXTURES = HERE / "dbtcloud_fixtures.yaml"
ARTIFACTS = HERE / "dbtcloud_artifacts"

ADMIN_TOKEN = "dbtc_fake_admin_7Qp2xK9vR4mZ1sT8"  # pragma: allowlist secret (a fake token for the fake API)
READ_TOKEN = "dbtc_fake_reader_3Hn6wB0yL5cJ2uF9"  # pragma: allowlist secret
JOB_UPDATE = r"^/api/v2/accounts/\d+/jobs/\d+/$"  # for fault paths (method POST)
STATUS_NAMES = {1: "Queued", 2: "Starting", 3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}
VOLATILE = ("updated_at",)


# -- the spec ------------------------------------------------------------------------------------


class Spec:
    """The OpenAPI document, with a small validator: required keys and primitive types."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        self.doc = yaml.load(path.read_text(), Loader=loader)
        self.schemas: dict[str, Any] = self.doc["components"]["schemas"]

    def resolve(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return self.resolve(self.schemas[schema["$ref"].rsplit("/", 1)[-1]])
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part))
            merged.update({k: v for k, v in schema.items() if k != "allOf"})
            return merged
        return dict(schema)

    def schema(self, name: str) -> dict[str, Any]:
        return self.resolve(self.schemas[name])

    def errors(self, schema: str | Mapping[str, Any], value: Any, path: str = "", request: bool = False) -> list[str]:
        """Problems of `value` against a schema; `request` skips readOnly fields and refuses null required ones."""
        s = self.schema(schema) if isinstance(schema, str) else self.resolve(schema)
        if value is None:
            return []
        kind = s.get("type") or ("object" if "properties" in s else None)
        checks = {"integer": int, "boolean": bool, "string": str, "number": (int, float), "array": list, "object": dict}
        if kind in checks and (
            not isinstance(value, checks[kind]) or (kind in ("integer", "number") and isinstance(value, bool))
        ):
            return [f"{path or 'body'}: expected {kind}, got {type(value).__name__}"]
        if "enum" in s and value not in s["enum"]:
            return [f"{path}: {value!r} is not a valid choice"]
        problems: list[str] = []
        if kind == "array" and "items" in s:
            for i, item in enumerate(value):
                problems += self.errors(s["items"], item, f"{path}[{i}]", request)
        if kind == "object":
            props = s.get("properties", {})
            for key in s.get("required", []):
                name = f"{path}.{key}" if path else key
                if request and self.resolve(props.get(key, {})).get("readOnly"):
                    continue
                if key not in value:
                    problems.append(f"{name}: This field is required.")
                elif request and value[key] is None:
                    problems.append(f"{name}: This field may not be null.")
            for key, sub in props.items():
                if key in value and not (request and self.resolve(sub).get("readOnly")):
                    problems += self.errors(sub, value[key], f"{path}.{key}" if path else key, request)
        return problems

    def writable(self, name: str) -> dict[str, dict[str, Any]]:
        props = self.schema(name).get("properties", {})
        return {k: self.resolve(v) for k, v in props.items() if not self.resolve(v).get("readOnly")}


@lru_cache(maxsize=1)
def load_spec(path: Path = SPEC_PATH) -> Spec:
    return Spec(path)


# -- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Answer `status` to matching requests: skip the first `after`, then hit `times` (None: forever)."""

    status: int = 500
    method: str | None = None
    path: str | None = None  # a regex searched in the URL path
    after: int = 0
    times: int | None = 1
    retry_after: str | None = None
    delay: float = 0.0  # seconds to wait before answering (a hang when longer than the client's timeout)
    apply: bool = False  # for writes: apply the change, then answer the fault (a lost response)
    seen: int = 0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(re.search(self.path, path))
        )

    def take(self) -> bool:
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.hits >= self.times):
            return False
        self.hits += 1
        return True


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int
    at: float  # time.monotonic() when the request arrived
    auth_scheme: str | None


@dataclass
class Grant:
    accounts: frozenset[int]
    write: bool = True


@dataclass
class FakeStep:
    """A dbt step of a run: its command (`dbt build --select x`) and its artifact files."""

    command: str
    artifacts: Mapping[str, bytes | str | Path | Mapping[str, Any]] = field(default_factory=dict)
    status: int = 10


# -- the server ----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


def _as_bytes(value: bytes | str | Path | Mapping[str, Any]) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, Path):
        return value.read_bytes()
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, indent=2).encode()


def artifacts_from_dir(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (e.g. a dbt target/ dir) as {relative path: bytes}."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeDbtCloud:
    """The fake API's state, its fault plan and its HTTP server."""

    def __init__(
        self,
        fixtures: Path | None = FIXTURES,
        spec: Spec | None = None,
        tokens: Mapping[str, Grant] | None = None,
        bulk: bool = True,
    ) -> None:
        self.spec = spec or load_spec()
        self.tokens = dict(tokens or {ADMIN_TOKEN: Grant(frozenset({1})), READ_TOKEN: Grant(frozenset({1}), False)})
        self.accounts: dict[int, dict[str, Any]] = {}
        self.projects: dict[int, dict[str, Any]] = {}
        self.environments: dict[int, dict[str, Any]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.runs: dict[int, dict[str, Any]] = {}
        self.env_vars: dict[int, dict[str, Any]] = {}
        self.steps: dict[int, list[dict[str, Any]]] = {}
        self.artifacts: dict[tuple[int, int], dict[str, bytes]] = {}
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = iter(range(900_000, 10**9))
        if fixtures is not None:
            self.load(fixtures)
        if bulk:
            self._bulk()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeDbtCloud:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-dbt-cloud", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeDbtCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fixtures --------------------------------------------------------------------------------

    def load(self, path: Path) -> None:
        doc = yaml.safe_load(path.read_text())
        for kind in ("accounts", "projects", "environments"):
            for item in doc.get(kind, []):
                getattr(self, kind)[item["id"]] = item
        for var in doc.get("environment_variables", []):
            self.add_env_var(**var)
        defaults = doc.get("job_defaults", {})
        for job in doc.get("jobs", []):
            self.add_job(**_merge(defaults, job))
        for run in doc.get("runs", []):
            steps = [
                FakeStep(
                    s["command"], {p: ARTIFACTS / f for p, f in (s.get("artifacts") or {}).items()}, s.get("status", 10)
                )
                for s in run.pop("steps")
            ]
            self.add_run(run.pop("job_definition_id"), steps, **run)

    def _bulk(self) -> None:
        """Enough jobs and runs to page past 100: 120 jobs in project 20, 150 runs of job 1001."""
        forms = [
            {"date": {"type": "every_day"}, "time": {"type": "at_exact_hours", "hours": [3]}},
            {"date": {"type": "days_of_week", "days": [1, 3, 5]}, "time": {"type": "every_hour", "interval": 2}},
            {"date": {"type": "custom_cron", "cron": "45 23 * * 0"}, "time": {"type": "every_hour", "interval": 1}},
        ]
        for i in range(120):
            self.add_job(
                id=2000 + i,
                account_id=1,
                project_id=20,
                environment_id=200,
                name=f"Bulk job {i:03d}",
                execute_steps=[f"dbt build --select tag:bulk_{i:03d}"],
                settings={"threads": 4, "target_name": "prod"},
                triggers={"github_webhook": False, "schedule": True, "git_provider_webhook": False, "on_merge": False},
                schedule=forms[i % 3],
            )
        start = datetime(2026, 10, 1, 6, tzinfo=UTC)
        for i in range(150):
            status = 20 if i % 7 == 3 else 30 if i % 11 == 5 else 10
            self.add_run(
                1001,
                [FakeStep("dbt seed"), FakeStep("dbt build --select tag:daily", status=status)],
                id=60001 + i,
                status=status,
                created_at=start + timedelta(hours=6 * i),
            )

    def add_job(self, **fields: Any) -> dict[str, Any]:
        """Store a job (response shape); missing fields get the response schema's defaults."""
        now = _ts(_now())
        job: dict[str, Any] = {"id": fields.pop("id", None) or next(self._ids)}
        for key, prop in self.spec.schema("HumanReadableJobDefinitionResponse")["properties"].items():
            if key not in ("account", "project", "environment", "id"):
                job[key] = deepcopy(self.spec.resolve(prop).get("default"))
        job.update(
            execute_steps=["dbt build"],
            run_generate_sources=False,
            errors_on_lint_failure=True,
            triggers={"github_webhook": False, "schedule": False, "git_provider_webhook": False, "on_merge": False},
            created_at=now,
            updated_at=now,
            lifecycle_webhooks_url=f"/api/v2/accounts/{fields.get('account_id', 1)}/jobs/{job['id']}/webhooks/",
            job_type="scheduled",
            cost_optimization_features=[],
        )
        job.update(deepcopy(fields))
        job["raw_dbt_version"] = job.get("dbt_version") or self.environments.get(job["environment_id"], {}).get(
            "dbt_version", "latest"
        )
        job["is_deferrable"] = bool(job.get("deferring_environment_id") or job.get("deferring_job_definition_id"))
        with self.lock:
            self.jobs[job["id"]] = job
        return job

    def add_env_var(self, **fields: Any) -> dict[str, Any]:
        """Store an environment variable value at one level (`type`: project, environment, job or user)."""
        var = {"id": fields.pop("id", None) or next(self._ids), "account_id": 1, "state": 1, **fields}
        for key in ("user_id", "environment_id", "job_definition_id"):
            var.setdefault(key, None)
        with self.lock:
            self.env_vars[var["id"]] = var
        return var

    def render_env_vars(self, keep: Any) -> list[dict[str, Any]]:
        """The active, non-personal values `keep(var)` selects, as the API serves them (secrets masked)."""
        out = []
        for var in sorted(self.env_vars.values(), key=lambda v: v["id"]):
            if var["state"] != 1 or var["type"] == "user" or not keep(var):
                continue
            shown = {k: v for k, v in var.items() if k != "id"}
            if str(var["name"]).startswith("DBT_ENV_SECRET"):
                shown["display_value"] = "*****"
            out.append(shown)
        return out

    def add_run(
        self,
        job_id: int,
        steps: Sequence[FakeStep],
        *,
        id: int | None = None,
        status: int = 10,
        created_at: datetime | None = None,
        setup_steps: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Store a run of `job_id` whose dbt steps are `steps` (after clone/profile steps unless told)."""
        job = self.jobs[job_id]
        run_id = id or next(self._ids)
        created = created_at or _now()
        finished = created + timedelta(minutes=12) if status >= 10 else None
        run: dict[str, Any] = {
            "id": run_id,
            "trigger_id": run_id + 10**6,
            "account_id": job["account_id"],
            "environment_id": job["environment_id"],
            "project_id": job["project_id"],
            "job_definition_id": job_id,
            "status": status,
            "dbt_version": job["raw_dbt_version"],
            "git_branch": "main",
            "git_sha": f"{run_id:040x}",
            "status_message": None if status != 20 else "dbt build failed",
            "deferring_run_id": None,
            "artifacts_saved": any(s.artifacts for s in steps),
            "artifact_s3_path": f"prod-us-c1/runs/{run_id}/artifacts/target",
            "has_docs_generated": any(s.command.startswith("dbt docs generate") for s in steps),
            "has_sources_generated": any(s.command.startswith("dbt source freshness") for s in steps),
            "notifications_sent": status >= 10,
            "blocked_by": [],
            "created_at": _ts(created),
            "updated_at": _ts(finished or created),
            "dequeued_at": _ts(created + timedelta(seconds=2)),
            "started_at": _ts(created + timedelta(seconds=5)),
            "finished_at": _ts(finished) if finished else None,
            "should_start_at": _ts(created),
            "trigger": {"cause": "Triggered by schedule", "job_definition_id": job_id, "git_branch": "main"},
        }
        run.update(fields)
        names = ["Clone git repository", "Create profile from connection Snowflake"] if setup_steps else []
        rows, moment = [], created + timedelta(seconds=5)
        all_steps = [(n, 10, {}) for n in names] + [
            (f"Invoke dbt with `{s.command}`", s.status, s.artifacts) for s in steps
        ]
        for index, (name, step_status, files) in enumerate(all_steps, start=1):
            rows.append(
                {
                    "id": run_id * 100 + index,
                    "run_id": run_id,
                    "account_id": job["account_id"],
                    "index": index,
                    "status": step_status,
                    "name": name,
                    "logs": f"{name}\n",
                    "debug_logs": "",
                    "log_path": None,
                    "debug_log_path": None,
                    "started_at": _ts(moment),
                    "finished_at": _ts(moment + timedelta(seconds=30)),
                }
            )
            moment += timedelta(seconds=30)
            if files:
                self.artifacts[(run_id, index)] = {p: _as_bytes(v) for p, v in files.items()}
        with self.lock:
            self.runs[run_id] = run
            self.steps[run_id] = rows
        return run

    # -- test hooks ------------------------------------------------------------------------------

    def inject(self, **fault: Any) -> Fault:
        f = Fault(**fault)
        with self.lock:
            self.faults.append(f)
        return f

    def rate_limit(self, times: int = 1, retry_after: int | str = 1, **match: Any) -> Fault:
        """429 with Retry-After for the next `times` matching requests."""
        return self.inject(status=429, times=times, retry_after=str(retry_after), **match)

    def fail(self, status: int = 500, times: int | None = 1, after: int = 0, **match: Any) -> Fault:
        """`status` for matching requests after the first `after` of them (e.g. 500 on the 2nd job update)."""
        return self.inject(status=status, times=times, after=after, **match)

    def hang(self, seconds: float, times: int | None = 1, **match: Any) -> Fault:
        """Wait `seconds` before answering normally (status 0 = no fault status)."""
        return self.inject(status=0, delay=seconds, times=times, **match)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def job_snapshot(self, job_id: int, volatile: Iterable[str] = VOLATILE) -> bytes:
        """The stored job object as canonical JSON bytes (sorted keys), without `volatile` fields."""
        with self.lock:
            job = {k: v for k, v in self.jobs[job_id].items() if k not in set(volatile)}
        return json.dumps(job, sort_keys=True, separators=(",", ":")).encode()

    def snapshot_jobs(self, volatile: Iterable[str] = VOLATILE) -> dict[int, bytes]:
        with self.lock:
            ids = sorted(self.jobs)
        return {i: self.job_snapshot(i, tuple(volatile)) for i in ids}

    def requests_to(self, method: str, pattern: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- rendering -------------------------------------------------------------------------------

    def render_job(self, job: Mapping[str, Any], related: Iterable[str] = ()) -> dict[str, Any]:
        out = deepcopy(dict(job))
        if "custom_environment_variables" in set(related):
            out["custom_environment_variables"] = self.render_env_vars(
                lambda v: v["type"] == "job" and v["job_definition_id"] == job["id"]
            )
        account = self.accounts.get(job["account_id"], {})
        project = self.projects.get(job["project_id"], {})
        env = self.environments.get(job["environment_id"], {})
        out["account"] = {k: account.get(k) for k in ("name", "state", "docs_job_id", "freshness_job_id")}
        out["project"] = {k: v for k, v in project.items() if k != "id"}
        out["environment"] = {k: v for k, v in env.items() if k != "id"}
        return out

    def render_run(self, run: Mapping[str, Any], related: set[str]) -> dict[str, Any]:
        out = deepcopy(dict(run))
        status = run["status"]
        out.update(
            status_humanized=STATUS_NAMES.get(status, str(status)),
            in_progress=status in (1, 2, 3),
            is_complete=status >= 10,
            is_success=status == 10,
            is_error=status == 20,
            is_cancelled=status == 30,
            is_running=status == 3,
            job_id=run["job_definition_id"],
            href=f"https://cloud.getdbt.com/deploy/{run['account_id']}/projects/{run['project_id']}/runs/{run['id']}/",
            run_steps=deepcopy(self.steps.get(run["id"], [])) if "run_steps" in related else [],
            job=self.render_job(self.jobs[run["job_definition_id"]]) if "job" in related else None,
            environment=self.environments.get(run["environment_id"]) if "environment" in related else None,
        )
        if "trigger" not in related:
            out["trigger"] = None
        return out

    def render_project(self, project: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(project)
        for key in ("connection", "repository", "docs_job", "freshness_job", "fusion_readiness"):
            out.setdefault(key, None)
        out.setdefault("default_version", "latest")
        out.setdefault("group_permissions", [])
        out.setdefault("environments", [e for e in self.environments.values() if e["project_id"] == project["id"]])
        out.setdefault("created_at", "2024-01-01 00:00:00.000000+00:00")
        out.setdefault("updated_at", "2024-01-01 00:00:00.000000+00:00")
        return out

    def render_environment(self, env: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(env)
        out.setdefault("raw_dbt_version", env.get("dbt_version"))
        for key in ("connection", "repository"):
            out.setdefault(key, None)
        out["custom_environment_variables"] = self.render_env_vars(
            lambda v: (
                (v["type"] == "project" and v["project_id"] == env["project_id"])
                or (v["type"] == "environment" and v["environment_id"] == env["id"])
            )
        )
        out.setdefault("jobs", [])
        out.setdefault("created_at", "2024-01-01 00:00:00.000000+00:00")
        out.setdefault("updated_at", "2024-01-01 00:00:00.000000+00:00")
        return out

    # -- job updates -----------------------------------------------------------------------------

    def apply_job_update(self, job_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """The accepted body's writable fields replace the stored ones; left-out fields get their defaults."""
        stored = self.jobs[job_id]
        updated = deepcopy(stored)
        for key, prop in self.spec.writable("HumanReadableJobDefinitionRequest").items():
            if key in body:
                updated[key] = deepcopy(body[key])
            elif "default" in prop:
                updated[key] = deepcopy(prop["default"])
        updated["updated_at"] = _ts(_now())
        self.jobs[job_id] = updated
        return updated


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = deepcopy(dict(base))
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def _list_values(query: Mapping[str, list[str]], key: str) -> list[str] | None:
    """`[a,b]`, `a,b` or repeated keys -> [a, b]; None when absent."""
    if key not in query:
        return None
    out: list[str] = []
    for raw in query[key]:
        text = raw.strip().removeprefix("[").removesuffix("]")
        out += [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
    return out


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDbtCloud
    protocol_version = "HTTP/1.1"
    server_version = "fake-dbt-cloud/2"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing --------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        arrived = time.monotonic()
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        auth = self.headers.get("Authorization") or ""
        fake = self.fake
        fault = None
        with fake.lock:
            for candidate in fake.faults:
                if candidate.matches(method, path) and candidate.take():
                    fault = candidate
                    break
        if fault is not None and fault.delay:
            fake._stopping.wait(fault.delay)
        status, payload, headers = 500, None, {}
        try:
            if fault is not None and fault.status and not fault.apply:
                status, payload = fault.status, self._envelope(fault.status, None, "Injected fault")
                if fault.retry_after is not None:
                    headers["Retry-After"] = fault.retry_after
            else:
                status, payload, headers = self._route(method, path, query, body, auth)
                if fault is not None and fault.status:  # applied, then the answer is lost
                    status, payload = fault.status, self._envelope(fault.status, None, "Injected fault")
        except Exception as exc:  # a bug in the fake: answer 500 and say so
            status, payload = 500, self._envelope(500, None, f"fake server error: {type(exc).__name__}: {exc}")
        with fake.lock:
            scheme = auth.split(" ", 1)[0] if auth else None
            fake.requests.append(Recorded(method, path, query, body, status, arrived, scheme))
        self._write(status, payload, headers)

    def _write(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, headers.get("Content-Type", "application/octet-stream")
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        try:
            self.send_response(status, REASONS.get(status))
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                if key != "Content-Type":
                    self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout during a hang)

    @staticmethod
    def _envelope(code: int, data: Any, message: str = "Success!", extra: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": {"code": code, "is_success": code < 400, "user_message": message, "developer_message": ""},
            "data": data,
        }
        if extra is not None:
            out["extra"] = extra
        return out

    def _error(self, code: int, message: str, data: Any = None) -> tuple[int, Any, dict[str, str]]:
        return code, self._envelope(code, data, message), {}

    # -- routes ----------------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, auth: str
    ) -> tuple[int, Any, dict[str, str]]:
        fake = self.fake
        scheme, _, token = auth.partition(" ")
        grant = fake.tokens.get(token.strip()) if scheme in ("Token", "Bearer") else None
        if grant is None:
            return self._error(401, "Invalid token.")
        match = re.fullmatch(r"/api/v2/accounts/(\d+)/(.*)", path)
        if not match:
            return self._error(404, "The requested resource could not be found.")
        account_id, rest = int(match.group(1)), match.group(2)
        if account_id not in fake.accounts:
            return self._error(404, "The requested resource could not be found.")
        if account_id not in grant.accounts or (method != "GET" and not grant.write):
            return self._error(403, "You do not have permission to perform this action.")
        if rest and not rest.endswith("/") and not rest.startswith("runs/"):
            return self._error(404, "The requested resource could not be found.")
        with fake.lock:
            return self._dispatch(method, account_id, rest, query, body)

    def _dispatch(
        self, method: str, account_id: int, rest: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        fake = self.fake
        related = set(_list_values(query, "include_related") or [])
        if method == "GET" and rest == "":
            return 200, self._envelope(200, {"id": account_id, **fake.accounts[account_id]}), {}
        listing = {
            "projects/": fake.projects,
            "environments/": fake.environments,
            "jobs/": fake.jobs,
            "runs/": fake.runs,
        }
        if method == "GET" and rest in listing:
            return self._list(rest, account_id, listing[rest], query, related)
        m = re.fullmatch(r"(projects|environments|jobs|runs)/(\d+)/", rest)
        if m:
            table = listing[m.group(1) + "/"]
            obj = table.get(int(m.group(2)))
            if obj is None or obj.get("account_id") != account_id:
                return self._error(404, "The requested resource could not be found.")
            if method == "POST" and m.group(1) == "jobs":
                return self._update_job(account_id, obj["id"], body)
            if method != "GET":
                return self._error(405, f"Method {method} not allowed.")
            return 200, self._envelope(200, self._render(m.group(1), obj, related)), {}
        m = re.fullmatch(r"runs/(\d+)/artifacts/(.*)", rest)
        if m and method == "GET":
            return self._artifact(account_id, int(m.group(1)), m.group(2), query)
        return self._error(404, "The requested resource could not be found.")

    def _render(self, kind: str, obj: Mapping[str, Any], related: set[str]) -> dict[str, Any]:
        fake = self.fake
        if kind == "jobs":
            return fake.render_job(obj, related)
        if kind == "runs":
            return fake.render_run(obj, related)
        if kind == "environments":
            return fake.render_environment(obj)
        if kind == "projects":
            return fake.render_project(obj)
        return dict(obj)

    def _list(
        self,
        kind: str,
        account_id: int,
        table: Mapping[int, dict[str, Any]],
        query: dict[str, list[str]],
        related: set[str],
    ) -> tuple[int, Any, dict[str, str]]:
        def one(key: str) -> str | None:
            return query[key][-1] if key in query else None

        try:
            limit = int(one("limit") or 100)
            offset = int(one("offset") or 0)
        except ValueError:
            return self._error(400, "limit and offset must be integers.")
        if not 1 <= limit <= 100 or offset < 0:
            return self._error(400, "The request was invalid.", {"limit": ["Ensure this value is between 1 and 100."]})
        items = [o for o in table.values() if o.get("account_id", account_id) == account_id]
        filters: dict[str, Any] = {"account_id": account_id, "limit": limit, "offset": offset}
        state = one("state") or ("all" if kind == "runs/" else "active")
        if state != "all" and kind != "runs/":
            wanted = 1 if state in ("active", "1") else 2
            items = [o for o in items if o.get("state", 1) == wanted]
        filters["state"] = state
        for key, field_name in (
            ("project_id", "project_id"),
            ("environment_id", "environment_id"),
            ("job_definition_id", "job_definition_id"),
            ("status", "status"),
            ("pk", "id"),
        ):
            value = one(key)
            if value is not None and value != "":
                items = [o for o in items if str(o.get(field_name)) == value]
                filters[key] = int(value)
        for key, field_name in (("project_id__in", "project_id"), ("status__in", "status"), ("pk__in", "id")):
            values = _list_values(query, key)
            if values is not None:
                items = [o for o in items if str(o.get(field_name)) in values]
                filters[key] = [int(v) for v in values]
        if one("id__gt"):
            items = [o for o in items if o["id"] > int(one("id__gt") or 0)]
            filters["id__gt"] = int(one("id__gt") or 0)
        if one("triggers_schedule") is not None:
            wanted_schedule = one("triggers_schedule") in ("true", "True", "1")
            items = [o for o in items if bool((o.get("triggers") or {}).get("schedule")) == wanted_schedule]
            filters["triggers_schedule"] = wanted_schedule
        if one("name__icontains"):
            needle = (one("name__icontains") or "").lower()
            items = [o for o in items if needle in str(o.get("name", "")).lower()]
            filters["name__icontains"] = needle
        order_by = one("order_by") or "id"
        key_name = order_by.lstrip("-")
        items.sort(
            key=lambda o: (o.get(key_name) is None, o.get(key_name) or 0, o["id"]), reverse=order_by.startswith("-")
        )
        page = items[offset : offset + limit]
        kind_name = kind.rstrip("/")
        data = [self._render(kind_name, o, related) for o in page]
        extra = {
            "filters": filters,
            "order_by": order_by,
            "pagination": {"count": len(data), "total_count": len(items)},
        }
        return 200, self._envelope(200, data, extra=extra), {}

    def _update_job(self, account_id: int, job_id: int, body: Any) -> tuple[int, Any, dict[str, str]]:
        fake = self.fake
        if not isinstance(body, dict):
            return self._error(400, "The request was invalid.", {"non_field_errors": ["Expected a JSON object."]})
        problems = fake.spec.errors("HumanReadableJobDefinitionRequest", body, request=True)
        if body.get("account_id") not in (None, account_id):
            problems.append("account_id: does not match the account in the URL.")
        if problems:
            fields: dict[str, list[str]] = {}
            for p in problems:
                name, _, text = p.partition(": ")
                fields.setdefault(name, []).append(text)
            return self._error(
                400, "The request was invalid. Please double check the provided data and try again.", fields
            )
        updated = fake.apply_job_update(job_id, body)
        return 200, self._envelope(200, fake.render_job(updated)), {}

    def _artifact(
        self, account_id: int, run_id: int, name: str, query: dict[str, list[str]]
    ) -> tuple[int, Any, dict[str, str]]:
        fake = self.fake
        run = fake.runs.get(run_id)
        if run is None or run["account_id"] != account_id:
            return self._error(404, "The requested resource could not be found.")
        steps = fake.steps.get(run_id, [])
        if name == "":
            paths = sorted({p for (r, _), files in fake.artifacts.items() if r == run_id for p in files})
            return 200, self._envelope(200, paths), {}
        raw_step = (query.get("step") or [None])[-1]
        try:
            index = int(raw_step) if raw_step else (steps[-1]["index"] if steps else 0)
        except ValueError:
            return self._error(400, "step must be an integer.")
        files = fake.artifacts.get((run_id, index))
        if files is None or name not in files:
            return self._error(404, f"No artifact {name} for step {index} of run {run_id}.")
        ctype = "application/json" if name.endswith(".json") else "application/octet-stream"
        return 200, files[name], {"Content-Type": ctype}
