"""Warehouse credentials: Prefect blocks, profiles.yml's references to them, Snowflake keys.

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._blocks import Secrets as Secrets
    from ._blocks import Settings as Settings
    from ._blocks import block_names as block_names
    from ._blocks import read_secrets as read_secrets
    from ._blocks import setup_target as setup_target
    from ._keys import check_private_key as check_private_key
    from ._profiles import referenced_blocks as referenced_blocks
    from ._profiles import resolved_profiles as resolved_profiles

_EXPORTS = {
    "Secrets": "._blocks",
    "Settings": "._blocks",
    "block_names": "._blocks",
    "read_secrets": "._blocks",
    "setup_target": "._blocks",
    "referenced_blocks": "._profiles",
    "resolved_profiles": "._profiles",
    "check_private_key": "._keys",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
