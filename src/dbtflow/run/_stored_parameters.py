"""Stored parameters: the flow run's parameters kept by Prefect, their secret-looking vars masked.

Contract
- `mask_stored(flow_run_id, parameters)`: when the run's `vars` hold a secret-looking value
  (`dbtflow.secrets._masking`), the flow run's parameters stored by Prefect (what its UI and API
  show, and what a run started from them gets) are replaced by `masked_parameters` of what
  Prefect holds: one read and one PATCH of the flow run. Without such a var: no API call.
- Returns None when done or nothing to do, else a warning line for the caller to log: a failure
  to mask never fails the run (observability never breaks the job), but it is said.

Pitfalls
- Prefect stores the parameters when the flow run is created (`dbtflow run`, a deployment run,
  a schedule): until the flow starts and calls this, the API and UI show the real values (and
  Prefect keeps no history of the update). A secret belongs in a Secret block, not in vars.
- The run itself keeps the real values in memory: Prefect's in-process flow retries call the
  flow again with them. A run started from the stored parameters gets `*****`, which
  `RunParameters` refuses in one line (`masked_vars`) rather than hand dbt the mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import get_client

from dbtflow.secrets._masking import masked_parameters


def mask_stored(flow_run_id: Any, parameters: Mapping[str, Any]) -> str | None:
    """Mask the secret-looking vars in the flow run's parameters stored by Prefect.

    Args:
        flow_run_id: the flow run (None: not a Prefect flow run, nothing to do).
        parameters: the parameters the flow was called with.

    Returns:
        None when masked or nothing needed masking; else a warning line saying why it could not.
    """
    if flow_run_id is None or masked_parameters(parameters) == dict(parameters):
        return None
    try:
        with get_client(sync_client=True) as client:
            stored = dict(client.read_flow_run(flow_run_id).parameters)
            masked = masked_parameters(stored)
            if masked != stored:
                client.update_flow_run(flow_run_id, parameters=masked)
    except Exception as exc:  # the API is down or refuses: say so, never fail the run for it
        return f"could not mask the secret-looking vars in this flow run's parameters stored by Prefect: {exc}"
    return None
