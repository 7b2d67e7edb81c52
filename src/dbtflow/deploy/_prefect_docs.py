"""JSON documents kept in Prefect as keyed markdown artifacts (the cutover journal, deploy history).

Contract
- `save(client, key, doc, title, summary)` creates a new version of the artifact `key`: markdown
  that people read in the UI (Artifacts -> key: the title, the summary lines) followed by the whole
  document as a fenced JSON block. Every save is a new version; Prefect keeps the older ones, so
  the artifact's history is an audit trail of every write.
- `load(client, key)` returns the latest version's document, or None when there is none. A latest
  version whose JSON block is missing or broken is a `UserError` (someone edited it by hand).
- `artifact_key(*parts)` makes a valid key (lowercase letters, digits, dashes).

Pitfalls
- Why artifacts and not Variables: Prefect caps a Variable's value at 5,000 characters
  (`prefect.types.MAX_VARIABLE_VALUE_LENGTH`, enforced by the server); the flow's parameter schema
  alone is ~3,500, so one deployment snapshot barely fits and a history of them cannot, and a
  journal of a few dozen jobs would not either. Artifacts have no such cap.
- On Prefect Cloud, artifacts may be subject to the workspace's retention: the journal's file copy
  is the durable one; keep it.
- Saving is synchronous: when `save` returns, the server has the version (reads see it at once).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import ArtifactCreate

from dbtflow._text import slug
from dbtflow.errors import UserError

_FENCE = re.compile(r"```json\n(.*)\n```\s*$", re.S)


def artifact_key(*parts: str) -> str:
    return slug(*parts)


def render(doc: dict[str, Any], title: str, summary: list[str]) -> str:
    body = json.dumps(doc, indent=1, sort_keys=True)
    return "\n".join([f"# {title}", "", *summary, "", "```json", body, "```", ""])


def parse(markdown: str, key: str) -> dict[str, Any]:
    match = _FENCE.search(markdown or "")
    try:
        doc = json.loads(match.group(1)) if match else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise UserError(
            f"the Prefect artifact {key!r} holds no readable JSON document (edited by hand?): "
            "use the file copy, or restore the artifact from its previous version"
        )
    return doc


def save(client: SyncPrefectClient, key: str, doc: dict[str, Any], title: str, summary: list[str]) -> None:
    client.create_artifact(
        ArtifactCreate(key=key, type="markdown", data=render(doc, title, summary), description=title)
    )


def load(client: SyncPrefectClient, key: str) -> dict[str, Any] | None:
    try:
        response = client.request("GET", "/artifacts/{key}/latest", path_params={"key": key})
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    data = response.json().get("data")
    return parse(data if isinstance(data, str) else "", key)
