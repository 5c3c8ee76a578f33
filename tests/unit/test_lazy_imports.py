"""Every import made inside a function of the package resolves.

Such imports run only when their function does (the CLI's commands, the lab, the
real environment), so a moved or renamed name would break them unseen by the other
tests; this reads each one from the source and imports it."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vigil"


def _lazy_imports() -> list[tuple[str, str, str | None]]:
    """(where, module, name) for each vigil import nested in a function (name None: the module)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)  # this module
        package = here.removesuffix(".__init__") if path.name == "__init__.py" else here.rpartition(".")[0]
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(fn):
                where = f"{path.relative_to(PACKAGE.parent)}:{getattr(n, 'lineno', 0)}"
                if isinstance(n, ast.ImportFrom):
                    base = n.module or ""
                    if n.level:  # relative: from the module's package, up n.level - 1
                        up = package.split(".")[:len(package.split(".")) - (n.level - 1)]
                        base = ".".join(up + ([base] if base else []))
                    if base.split(".")[0] == "vigil":
                        found += [(where, base, a.name) for a in n.names]
                elif isinstance(n, ast.Import):
                    found += [(where, a.name, None) for a in n.names if a.name.split(".")[0] == "vigil"]
    return sorted(set(found))


LAZY = _lazy_imports()


def test_the_package_has_lazy_imports_to_check() -> None:
    assert len(LAZY) > 10


@pytest.mark.parametrize("where,module,name", LAZY, ids=[f"{w}:{m}:{n}" for w, m, n in LAZY])
def test_a_lazy_import_resolves(where: str, module: str, name: str | None) -> None:
    mod = importlib.import_module(module)
    if name is not None and not hasattr(mod, name):
        importlib.import_module(f"{module}.{name}")  # a submodule, as ``from pkg import mod``
