"""Lazy public names for dbtflow's packages (PEP 562 module `__getattr__`).

Contract
- `exports(package, names)` returns the `__getattr__` a package's `__init__` installs: the first
  use of a public name imports the module that defines it (relative to `package`), and only that.
  So `import dbtflow` and `dbtflow --help` import neither Prefect nor dbt.
- An unknown name raises `AttributeError` as Python would.

Pitfalls
- The package's `__init__` repeats its names under `if TYPE_CHECKING:` so type checkers see the
  real types; `tests/unit/test_import_graph.py` checks the two lists agree and resolves these names
  when it looks for import cycles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` that imports a public name's module on first use.

    Args:
        package: the package's `__name__`.
        names: public name -> the module defining it, relative to the package (e.g. `._flow`).

    Returns:
        A `__getattr__(name)` for the package's module namespace.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(names[name], package), name)

    return __getattr__
