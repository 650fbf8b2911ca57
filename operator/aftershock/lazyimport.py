"""Import kubernetes_asyncio's generated packages on first use of a name, not all at once.

``kubernetes_asyncio.client``'s ``__init__`` imports every API class and every model the
OpenAPI generator wrote: ~860 modules, ~32 MiB of an idle operator's ~92 MiB RSS after its
imports (measured: docs/performance.md). The operator uses a handful of API classes and reads
payloads as plain JSON (`aftershock.kube.client`), so almost none of that is ever used; kopf
imports the package too, to recognise two model classes.

`install` puts a finder in front of the import system for the package initialisers in
`LAZY`: the package is created with its real ``__path__`` (submodules import as usual), and
its ``__init__``'s own ``from M import N`` / ``import M as N`` lines become a table that a
module ``__getattr__`` (PEP 562) follows on first access of N. The table is read from the
installed ``__init__`` itself, so it is the library's own list, whatever its version.
Process-wide: only `aftershock run` installs it, before anything imports the library.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The package initialisers that import everything; their submodules load as they always do.
LAZY = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
)

_FROM = re.compile(r"^from\s+([\w.]+)\s+import\s+(\w+)(?:\s+as\s+(\w+))?\s*$", re.M)
_IMPORT_AS = re.compile(r"^import\s+([\w.]+)\s+as\s+(\w+)\s*$", re.M)
_DUNDER = re.compile(r"^(__\w+__)\s*=\s*(\"[^\"\n]*\"|'[^'\n]*')\s*$", re.M)


def exports(source: str) -> dict[str, tuple[str, str | None]]:
    """What a package ``__init__`` binds by import: name -> (module, attribute or None for the
    module itself). ``from __future__`` lines are not names."""
    names: dict[str, tuple[str, str | None]] = {}
    for m in _FROM.finditer(source):
        if m.group(1) != "__future__":
            names[m.group(3) or m.group(2)] = (m.group(1), m.group(2))
    for m in _IMPORT_AS.finditer(source):
        names[m.group(2)] = (m.group(1), None)
    return names


class _LazyInit(importlib.abc.Loader):
    def __init__(self, origin: str) -> None:
        self._origin = origin

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        source = Path(self._origin).read_text(encoding="utf-8")
        table = exports(source)
        for m in _DUNDER.finditer(source):  # __version__, __project__: plain string constants
            setattr(module, m.group(1), m.group(2)[1:-1])

        def __getattr__(name: str) -> Any:
            try:
                where, attribute = table[name]
            except KeyError:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None
            value: Any = importlib.import_module(where)
            if attribute is not None:
                value = getattr(value, attribute)
            setattr(module, name, value)  # the next access is a plain attribute
            return value

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        setattr(module, "__all__", list(table))  # noqa: B010  (a module's attribute mypy cannot see)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LAZY:
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None or real.origin is None or real.submodule_search_locations is None:
            return None  # not installed as a package: let the import fail as it would
        spec = importlib.machinery.ModuleSpec(
            fullname, _LazyInit(real.origin), origin=real.origin, is_package=True
        )
        spec.submodule_search_locations = list(real.submodule_search_locations)
        spec.has_location = True
        return spec


def install() -> bool:
    """Make `LAZY` lazy for this process; False (nothing done) if one was already imported."""
    if any(name in sys.modules for name in LAZY):
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    return True
