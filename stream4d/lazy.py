"""Package namespaces that load their modules on first use (PEP 562).

A stage package names its public objects in its ``__init__``; importing one light module of it
(a config dataclass, say) must not load the numerical libraries the rest of it needs, or every
command, even ``stream4d --help``, pays seconds for torch and rerun.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path) the
    first time ``name`` is asked for."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
