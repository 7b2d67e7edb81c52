"""The runs folder (DBTFLOW_RUNS_DIR): checked before dbt starts, and a full disk said in one line.

Contract
- `check_runs_root(root)` makes the folder if needed and writes, syncs and removes a probe of
  PROBE_BYTES in it; a folder that is read-only, a regular file, not permitted or full raises
  `RunsDirError` (a `UserError`): one line naming DBTFLOW_RUNS_DIR, the path, the reason and the
  fix. The CLI calls it before Prefect starts, the flow before it takes the target's slot, so dbt
  never starts on a run whose record could not be kept.
- `storage_problem(folder, exc)` is the one line for an OSError met while keeping a run's
  artifacts or record after dbt ran (the disk filled during the run): what could not be saved,
  why, and what to do. The flow then ends with dbt's own outcome (see `dbtflow.run._flow`).
- `quiet_logging_errors()` is a context manager: while dbt runs, a log handler that cannot
  write (dbt's dbt.log on a full disk) no longer prints a `--- Logging error ---` traceback per
  log line (Python's `logging.raiseExceptions`); the record of the run says so instead.

Pitfalls
- root ignores permission bits: `chmod 555` does not stop it, a read-only mount does; the
  probe writes for real rather than trusting `os.access`.
- The probe passes on a disk that fills up later in the run; that is the flow's to handle.
- `logging.raiseExceptions` is process-wide; it is restored when the run ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from dbtflow.errors import UserError

PROBE_BYTES = 64 * 1024  # room for run.json and summary.md at least
_REASONS = {
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "is not writable by this user",
    errno.EPERM: "is not writable by this user",
    errno.ENOTDIR: "is (or is inside) a file, not a folder",
    errno.EEXIST: "is a file, not a folder",
    errno.ENOSPC: "is on a full disk (no space left on device)",
    errno.EDQUOT: "is on a disk whose quota is used up",
}
FIX = "free space there, or point DBTFLOW_RUNS_DIR at a writable folder"


class RunsDirError(UserError):
    """The runs folder cannot hold a run's record."""


def check_runs_root(root: Path) -> Path:
    """The runs folder, made and proven writable with a probe file; RunsDirError otherwise."""
    probe = root / f".dbtflow-probe-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as file:
            file.write(b"\0" * PROBE_BYTES)
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        raise RunsDirError(f"DBTFLOW_RUNS_DIR {root} {_reason(exc)}; {FIX} (dbt did not start)") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return root


def storage_problem(folder: Path, exc: OSError) -> str:
    return f"could not save the run's artifacts in {folder}: it {_reason(exc)}; {FIX}"


@contextlib.contextmanager
def quiet_logging_errors() -> Iterator[None]:
    before = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        yield
    finally:
        logging.raiseExceptions = before


def _reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0, f"cannot be written ({exc.strerror or exc})")
