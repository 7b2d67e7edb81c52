"""Failure alerts: one Prefect Automation that notifies through a Prefect notification block.

Contract
- `setup(...)` makes sure that exactly one Automation named `automation_name(deployment)` exists,
  enabled, whose trigger is a flow run of the deployment ending `Failed`, `Crashed` or `TimedOut`
  (the events `prefect.flow-run.<state name>`) and, with `on_warning`, a run of it completing with
  warnings (the event `dbtflow.run.warned` that `dbtflow.run._flow` emits, see WARNED_EVENT). Its one
  action is Prefect's `SendNotification` through a notification block (Slack, Microsoft Teams,
  email, a custom webhook: any block with the `notify` capability).
- Idempotent by name: created when missing, updated in place when it differs, left alone when it
  matches (`Result.automation == "unchanged"`); duplicates of the name are deleted.
- The block is an existing one (`block_ref`: `name` or `<block-type-slug>/<name>`), or one this
  module saves from a URL (`channel` slack / teams / webhook, `url`): the URL is stored as a
  secret field (Slack and Teams blocks' `url` is a SecretStr; the custom webhook block keeps it in
  `secrets` and its `url` is the placeholder `{{url}}`). Without a URL an existing block of that
  name is reused, so a second `setup` needs no secret.
- The message (rendered by the Prefect server with its Jinja sandbox, see `templates`) names the
  deployment, the target (the run's `target` parameter), the final state, the state message
  (for dbtflow runs it names the failing nodes and their errors) and a link to the run.

Pitfalls
- The automation matches the deployment by id: re-creating the deployment (delete + deploy)
  orphans it; run `setup` again. `prefect deploy` over an existing deployment keeps its id.
- Automations are evaluated by the server's `triggers` and `actions` services (on by default in
  `prefect server start`, always on in Prefect Cloud). Nothing fires on Prefect's ephemeral API.
- A server does not always know its own UI address (`{{ flow_run|ui_url }}` renders `None`
  when the server process has no PREFECT_UI_URL/PREFECT_API_URL): the link falls back to the UI
  address known where `setup` runs (`ui_url`).
- A webhook URL is a secret: never take it on the command line, never print or log it.
- TimedOut is a Failed state with the name `TimedOut`: its event is `prefect.flow-run.TimedOut`,
  not `prefect.flow-run.Failed`, hence the three event names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock, MicrosoftTeamsWebhook, SlackWebhook
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.types import SecretDict
from pydantic import SecretStr

from dbtflow.deploy._schedules import find_deployment
from dbtflow.errors import UserError
from dbtflow.settings import DEPLOYMENT

DEFAULT_DEPLOYMENT = DEPLOYMENT
DEFAULT_BLOCK_NAME = "dbtflow-alerts"
FAILED_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut")
WARNED_EVENT = "dbtflow.run.warned"  # emitted by dbtflow.run._flow when a run completes with warnings
CHANNELS = ("slack", "teams", "webhook")

# Rendered by the Prefect server (prefect.server.utilities.user_templates): `flow_run`, `deployment`
# and `flow` are read from the API for the triggering event; `event` is the event itself.
_TARGET = "{% set target = event.payload.target or flow_run.parameters.target or 'dev' %}"
_LINK = "{% set link = flow_run|ui_url or ('__UI__/runs/flow-run/' ~ flow_run.id) %}"
SUBJECT = (
    _TARGET + "{% if event.event == '" + WARNED_EVENT + "' %}dbt {{ target }}: completed with warnings"
    "{% else %}dbt {{ target }}: {{ flow_run.state.name }}{% endif %}"
    " ({{ flow.name }}/{{ deployment.name }}, {{ flow_run.name }})"
)
BODY = (
    _TARGET + _LINK + "{% if event.event == '" + WARNED_EVENT + "' %}"
    "dbt run {{ flow_run.name }} of {{ flow.name }}/{{ deployment.name }} on target {{ target }}"
    " completed with warnings.\n{{ event.payload.message }}\n"
    "{% else %}"
    "dbt run {{ flow_run.name }} of {{ flow.name }}/{{ deployment.name }} on target {{ target }}"
    " ended {{ flow_run.state.name }}.\n{{ flow_run.state.message }}\n"
    "{% endif %}"
    "Run: {{ link }}"
)
_WEBHOOK_JSON = {"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"}


@dataclass
class Result:
    name: str
    automation: str  # created | updated | unchanged
    automation_id: UUID
    block: str  # <block-type-slug>/<name>
    block_action: str  # saved | reused
    events: list[str] = field(default_factory=list)
    removed_duplicates: int = 0


def automation_name(deployment: str) -> str:
    return f"dbtflow alerts: {deployment}"


def templates(ui_url: str | None) -> tuple[str, str]:
    """The notification's subject and body templates, the run link falling back to `ui_url`."""
    base = (ui_url or "").rstrip("/") or "(no Prefect UI URL known)"
    return SUBJECT, BODY.replace("__UI__", base.replace("'", "%27"))


def build_automation(
    name: str, deployment_id: UUID, deployment: str, block_document_id: UUID, on_warning: bool, ui_url: str | None
) -> Any:
    """The AutomationCore `setup` makes (pure: no API calls)."""

    events = [*FAILED_EVENTS, *([WARNED_EVENT] if on_warning else [])]
    subject, body = templates(ui_url)
    what = "fails, crashes or times out" + (", or completes with warnings" if on_warning else "")
    return AutomationCore(
        name=name,
        description=f"Made by `dbtflow notify setup`: a notification when a run of {deployment} {what}.",
        enabled=True,
        trigger=EventTrigger(
            expect=set(events),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{deployment_id}",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=subject, body=body)],
    )


def setup(
    *,
    deployment: str = DEFAULT_DEPLOYMENT,
    name: str | None = None,
    block_ref: str | None = None,
    channel: str | None = None,
    url: str | None = None,
    ask_url: Callable[[], str | None] | None = None,
    on_warning: bool = False,
    ui_url: str | None = None,
) -> Result:
    """Create or update the alert automation; see the module docstring. Raises UserError on bad input."""

    name = name or automation_name(deployment)
    flow_name, _, deployment_name = deployment.partition("/")
    if not flow_name or not deployment_name or "/" in deployment_name:
        raise UserError(f"deployment {deployment!r} is not <flow>/<deployment>, e.g. {DEFAULT_DEPLOYMENT}")
    with get_client(sync_client=True) as client:
        found = find_deployment(client, deployment)
        block_id, block, block_action = _block(client, block_ref, channel, url, ask_url)
        wanted = build_automation(name, found.id, deployment, block_id, on_warning, ui_url)
        existing = client.read_automations_by_name(name)
        for duplicate in existing[1:]:
            client.delete_automation(duplicate.id)
        if not existing:
            action, automation_id = "created", client.create_automation(wanted)
        elif _comparable(existing[0]) == _comparable(wanted):
            action, automation_id = "unchanged", existing[0].id
        else:
            client.update_automation(existing[0].id, wanted)
            action, automation_id = "updated", existing[0].id
    return Result(name, action, automation_id, block, block_action, sorted(wanted.trigger.expect), len(existing[1:]))


def _block(
    client: Any, block_ref: str | None, channel: str | None, url: str | None, ask_url: Callable[[], str | None] | None
) -> tuple[UUID, str, str]:
    if channel is not None:
        if channel not in CHANNELS:
            raise UserError(f"channel {channel!r} is unknown; use one of: {', '.join(CHANNELS)}")
        if block_ref is not None and "/" in block_ref:
            raise UserError("with --channel, --block is the new block's name only (no <type>/ prefix)")
        return _channel_block(client, channel, block_ref or DEFAULT_BLOCK_NAME, url, ask_url)
    if url is not None:
        raise UserError("a webhook URL needs --channel slack|teams|webhook to say which block to make")
    if block_ref is None:
        raise UserError(
            "say where alerts go: --block <name> (an existing notification block, e.g. slack-webhook/alerts) "
            "or --channel slack|teams|webhook with the URL in the environment"
        )
    return _existing_block(client, block_ref)


def _channel_block(
    client: Any, channel: str, name: str, url: str | None, ask_url: Callable[[], str | None] | None
) -> tuple[UUID, str, str]:

    kinds: dict[str, Any] = {
        "slack": SlackWebhook,
        "teams": MicrosoftTeamsWebhook,
        "webhook": CustomWebhookNotificationBlock,
    }
    kind = kinds[channel]
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise UserError(f"block name {name!r} must be lowercase letters, digits and dashes, e.g. {DEFAULT_BLOCK_NAME}")
    slug = f"{kind.get_block_type_slug()}/{name}"
    if url is None:
        try:
            return client.read_block_document_by_name(name, kind.get_block_type_slug()).id, slug, "reused"
        except ObjectNotFound:
            url = ask_url() if ask_url else None
        if not url:
            raise UserError(f"block {slug} does not exist yet and no webhook URL was given")
    if not re.match(r"https?://[^\s/]+", url):
        raise UserError(f"the {channel} webhook URL must start with https:// (or http://); check the value you set")
    if channel == "webhook":
        block = kind(name=name, url="{{url}}", json_data=_WEBHOOK_JSON, secrets=SecretDict({"url": url}))
    else:
        block = kind(url=SecretStr(url))
    try:
        block_id = block.save(name, overwrite=True)
    except Exception as exc:  # the server refused it; never echo the URL
        raise UserError(f"could not save block {slug}: {type(exc).__name__}") from None
    return UUID(str(block_id)), slug, "saved"


def _existing_block(client: Any, ref: str) -> tuple[UUID, str, str]:
    slug, _, name = ref.rpartition("/")
    body: dict[str, Any] = {
        "block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
        "block_schemas": {"block_capabilities": {"all_": ["notify"]}},
        "include_secrets": False,
    }
    if slug:
        body["block_types"] = {"slug": {"any_": [slug]}}
    response = client.request("POST", "/block_documents/filter", json=body)
    response.raise_for_status()
    found = response.json()
    if not found:
        raise UserError(
            f"no notification block named {ref!r} on {client.api_url}: create it in the UI (Blocks) or pass "
            "--channel slack|teams|webhook to make one from a URL"
        )
    if len(found) > 1:
        kinds = ", ".join(sorted(f"{d['block_type']['slug']}/{d['name']}" for d in found))
        raise UserError(f"several notification blocks are named {name!r} ({kinds}): pass --block <type>/{name}")
    return UUID(found[0]["id"]), f"{found[0]['block_type']['slug']}/{found[0]['name']}", "reused"


def _comparable(automation: Any) -> Any:
    """What `setup` controls of an automation, without ids the server assigns."""
    data = automation.model_dump(mode="json", include={"name", "description", "enabled", "trigger", "actions"})
    return _without_ids(json.loads(json.dumps(data, sort_keys=True)))


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        items = [_without_ids(v) for v in value]
        return sorted(items, key=json.dumps) if all(isinstance(v, str) for v in items) else items
    return value
