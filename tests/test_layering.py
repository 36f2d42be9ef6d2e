"""The layering the design depends on, checked rather than hoped for."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import reconcile

PACKAGE = Path(reconcile.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.name != "__main__")
PURE = {"model", "planner", "domxml", "netxml", "export", "diff", "render", "units", "errors", "formats", "expand",
        "reference", "seed"}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("." + (node.module or "").split(".")[0])
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    subprocess.run([sys.executable, "-c", f"import reconcile.{module}"], check=True)


def test_only_the_adapter_imports_libvirt():
    assert [m for m in MODULES if "libvirt" in imports_of(m)] == ["libvirt_host"]


@pytest.mark.parametrize("module", sorted(PURE & set(MODULES)))
def test_pure_modules_do_no_io(module):
    forbidden = {"libvirt", "subprocess", "socket", "yaml", "jsonschema", ".libvirt_host", ".executor", ".cli", ".specs"}
    assert not (imports_of(module) & forbidden), imports_of(module) & forbidden
