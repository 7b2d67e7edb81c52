"""The cutover journal: every change cutover and rollback make, kept in a file and in Prefect.

Contract
- A journal is one JSON document (`FORMAT`): the deployment, the dbt Cloud host and account, a
  `revision` counter, `entries` (append-only) and at most one `pending` change.
- Each change is written twice: `begin()` records the intended change as `pending` and the caller
  saves the journal; only then is the change made; `complete()` turns the pending change into an
  entry (`seq`, `op` cutover|rollback, `at`, `by` {user, host, command, invocation}, `object`,
  `field`, `before`, `after`, rollback entries `undoes` [seq...]) and the caller saves again. So
  both copies hold every completed change, and the one in flight, before the next change starts.
- `JournalStore.save` writes the file atomically (temp file + rename), then a new version of the
  Prefect artifact; if either fails it raises and the caller must stop. `load` reads both and
  reconciles: equal -> that; one missing -> the other; one a strict prefix of the other (a save
  that reached only the file) -> the newer; anything else -> `UserError` (two different histories).
- `open_changes()` groups the cutover entries no rollback has undone by object: restore to the
  first one's `before`, expecting the last one's `after` (so a job cut over twice is one change).

Pitfalls
- A `pending` change may or may not have happened (a crash, a lost response): the next cutover or
  rollback must look at the object (`resolve_pending` in `cutover`) before doing anything else.
- The journal never holds a secret: dbt Cloud's `triggers`, Prefect's `active` and `enabled`, ids and names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient

from dbtflow.deploy import _prefect_docs as prefect_docs
from dbtflow.deploy._history import Actor, now_iso
from dbtflow.errors import UserError

FORMAT = "dbtflow-cutover-journal/1"


class JournalWriteError(RuntimeError):
    """The journal could not be saved; nothing more may be changed."""


def object_key(obj: dict[str, Any]) -> str:
    if obj["kind"] == "dbt_cloud_job":
        return f"dbt Cloud job {obj['job_id']}"
    if obj["kind"] == "prefect_trigger":
        return f"Prefect trigger {obj['deployment']}:{obj['automation_id']}"
    return f"Prefect schedule {obj['deployment']}:{obj['slug']}"


class Journal:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    @classmethod
    def new(cls, deployment: str, dbt_cloud: dict[str, Any]) -> Journal:
        doc = {"format": FORMAT, "revision": 0, "deployment": deployment, "dbt_cloud": dbt_cloud}
        return cls({**doc, "created_at": now_iso(), "entries": [], "pending": None})

    @property
    def entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.doc["entries"]
        return entries

    @property
    def pending(self) -> dict[str, Any] | None:
        pending: dict[str, Any] | None = self.doc.get("pending")
        return pending

    def begin(
        self,
        op: str,
        obj: dict[str, Any],
        field: str,
        before: Any,
        intended: Any,
        actor: Actor,
        undoes: list[int] | None = None,
    ) -> None:
        if self.pending is not None:
            raise RuntimeError("a journal change is already pending")
        pending = {"op": op, "object": obj, "field": field, "before": before, "intended": intended}
        if undoes is not None:
            pending["undoes"] = undoes
        self.doc["pending"] = {**pending, "at": now_iso(), "by": actor.as_dict()}

    def complete(self, after: Any, note: str | None = None) -> dict[str, Any]:
        """The pending change happened: it becomes entry `seq` with `after` (what the object is now)."""
        pending = self.pending
        if pending is None:
            raise RuntimeError("no journal change is pending")
        entry = {"seq": len(self.entries) + 1, **{k: v for k, v in pending.items() if k != "intended"}}
        entry.update(started_at=pending["at"], at=now_iso(), after=after)
        if note:
            entry["note"] = note
        self.entries.append(entry)
        self.doc["pending"] = None
        return entry

    def drop_pending(self) -> None:
        self.doc["pending"] = None

    def open_changes(self) -> list[OpenChange]:
        """Cutover changes no rollback has undone, one per object, the most recently changed first."""
        undone = {seq for e in self.entries if e["op"] == "rollback" for seq in e.get("undoes", [])}
        grouped: dict[str, list[dict[str, Any]]] = {}
        for entry in self.entries:
            if entry["op"] == "cutover" and entry["seq"] not in undone:
                grouped.setdefault(object_key(entry["object"]), []).append(entry)
        changes = []
        for items in grouped.values():
            seqs = [e["seq"] for e in items]
            changes.append(
                OpenChange(items[-1]["object"], items[0]["field"], items[0]["before"], items[-1]["after"], seqs)
            )
        return sorted(changes, key=lambda c: -c.seqs[-1])

    def summary(self) -> list[str]:
        lines = [
            f"Deployment `{self.doc['deployment']}`; dbt Cloud {self.doc['dbt_cloud'].get('base_url')} "
            f"account {self.doc['dbt_cloud'].get('account_id')}; revision {self.doc['revision']}.",
            "",
            "| seq | at | op | object | field | before | after | by |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in self.entries:
            by = f"{e['by']['user']}@{e['by']['host']}"
            lines.append(
                f"| {e['seq']} | {e['at']} | {e['op']} | {object_key(e['object'])} | {e['field']} | "
                f"`{json.dumps(e['before'])}` | `{json.dumps(e['after'])}` | {by} |"
            )
        if self.pending:
            p = self.pending
            lines += ["", f"Pending (may or may not have happened): {p['op']} {object_key(p['object'])} {p['field']}."]
        return lines


@dataclass
class OpenChange:
    object: dict[str, Any]
    field: str
    before: Any
    after: Any
    seqs: list[int]


class JournalStore:
    """The journal's two copies: a JSON file and a keyed Prefect artifact."""

    def __init__(self, path: Path, key: str, client: SyncPrefectClient) -> None:
        self.path, self.key, self.client = path, key, client

    def where(self) -> str:
        return f"{self.path} and Prefect artifact {self.key!r}"

    def _read_file(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"cannot read the cutover journal {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise UserError(
                f"the cutover journal {self.path} is not JSON: move it away to use the Prefect artifact {self.key!r}"
            ) from None
        return _checked(doc, str(self.path))

    def load(self) -> Journal | None:
        on_disk = self._read_file()
        in_prefect = prefect_docs.load(self.client, self.key)
        if in_prefect is not None:
            in_prefect = _checked(in_prefect, f"Prefect artifact {self.key!r}")
        if on_disk is None or in_prefect is None:
            found = on_disk or in_prefect
            return Journal(found) if found is not None else None
        if on_disk == in_prefect:
            return Journal(on_disk)
        newer, older = sorted((on_disk, in_prefect), key=lambda d: -int(d["revision"]))
        if newer["revision"] == older["revision"] or newer["entries"][: len(older["entries"])] != older["entries"]:
            raise UserError(
                f"the cutover journal {self.path} (revision {on_disk['revision']}) and the Prefect artifact "
                f"{self.key!r} (revision {in_prefect['revision']}) disagree: keep the right one (delete the file, or "
                "point --journal at a copy of the artifact's JSON) and run again"
            )
        return Journal(newer)

    def save(self, journal: Journal) -> None:
        journal.doc["revision"] = int(journal.doc["revision"]) + 1
        journal.doc["updated_at"] = now_iso()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            with partial.open("w") as handle:
                json.dump(journal.doc, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(self.path)
        except OSError as exc:
            raise JournalWriteError(f"cannot write the cutover journal {self.path}: {exc.strerror}") from None
        title = f"dbtflow cutover journal: {journal.doc['deployment']}"
        try:
            prefect_docs.save(self.client, self.key, journal.doc, title, journal.summary())
        except Exception as exc:
            raise JournalWriteError(
                f"cannot write the cutover journal to Prefect (artifact {self.key!r}): {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None


def _checked(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), list):
        raise UserError(
            f"{where} is not a dbtflow cutover journal ({FORMAT}): pass the right --journal / --journal-key"
        )
    return doc
