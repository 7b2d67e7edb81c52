"""Create, update or rotate the William Grant tenant's Snowflake blocks in Prefect.

A thin wrapper over `dbtflow blocks setup --project-dir tenants/dbt_williamgrant`; every
option and environment variable is that command's (`--help` lists them). Secrets come from
environment variables or a hidden prompt, never from the command line:

    export DBTFLOW_SNOWFLAKE_PRIVATE_KEY_FILE=~/.snowflake/dbt_wg_dev.p8   # or DBTFLOW_SNOWFLAKE_PRIVATE_KEY
    export DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE=...                    # only for an encrypted key
    python scripts/prefect/setup_dbt_blocks.py --target dev --account myorg-myacct --user DBT_WG_DEV \\
        --role DBT_WG_DEV --warehouse WG_DEV_WH --database WG_DEV --schema DBT
    python scripts/prefect/setup_dbt_blocks.py --target dev --rotate        # new key in the environment
"""

import sys
from pathlib import Path

from dbtflow.cli._blocks import app

TENANT = Path(__file__).resolve().parents[2] / "tenants" / "dbt_williamgrant"

if __name__ == "__main__":
    app(["setup", "--project-dir", str(TENANT), *sys.argv[1:]], prog_name="setup_dbt_blocks.py")
