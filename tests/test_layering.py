"""The layering the design depends on, checked rather than hoped for.

The folder tree is the architecture: each stage is a subpackage, and imports point one way,
from the command line down to the model:

    cli -> apply, host, plan, spec -> codec -> model -> errors

(`apply`, `host`, `plan` and `spec` never import each other.) Only `host` imports libvirt,
only `spec` imports yaml and jsonschema, and nothing in `spec`, `plan`, `codec` or `model`
does I/O beyond reading the spec files themselves.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import reconcile

from .conftest import REPO

PACKAGE = Path(reconcile.__file__).parent
MODULES = sorted(
    ".".join(("reconcile",) + p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts and p.name != "__main__.py")

# What each stage may import of the others (itself always).
ALLOWED = {
    "errors": set(),
    "model": {"errors"},
    "codec": {"model", "errors"},
    "spec": {"codec", "model", "errors"},
    "plan": {"codec", "model", "errors"},
    "host": {"codec", "model", "errors"},
    "apply": {"codec", "model", "errors"},
    "cli": {"apply", "host", "plan", "spec", "codec", "model", "errors"},
    "": {"cli"},  # the package itself and __main__
}
PURE = {"spec", "plan", "codec", "model"}
IO_MODULES = {"libvirt", "subprocess", "socket", "threading", "concurrent", "urllib.request", "http", "shutil",
              "tempfile"}


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def path_of(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    return PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else PACKAGE / rel.with_suffix(".py")


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(stages of reconcile this module imports, other top-level modules it imports)."""
    tree = ast.parse(path_of(module).read_text())
    package = module if path_of(module).name == "__init__.py" else module.rsplit(".", 1)[0]
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("reconcile.") else theirs).add(
                    stage_of(alias.name) if alias.name.startswith("reconcile.") else alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None and target == "reconcile":  # from .. import x
                    ours.update(stage_of(f"reconcile.{a.name}") for a in node.names)
                else:
                    ours.add(stage_of(target))
            elif node.module and node.module.startswith("reconcile"):
                ours.add(stage_of(node.module))
            elif node.module:
                theirs.add(node.module)
    return ours, theirs


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_one_way(module):
    stage = stage_of(module)
    ours, _ = imports_of(module)
    assert ours - {stage} <= ALLOWED[stage], f"{module} imports {sorted(ours - {stage} - ALLOWED[stage])}"


def test_only_the_host_package_imports_libvirt():
    importers = [m for m in MODULES if any(t.split(".")[0] == "libvirt" for t in imports_of(m)[1])]
    assert importers and all(stage_of(m) == "host" for m in importers), importers


def test_only_the_spec_package_reads_yaml_and_json_schema():
    importers = [m for m in MODULES if {t.split(".")[0] for t in imports_of(m)[1]} & {"yaml", "jsonschema"}]
    assert importers and all(stage_of(m) == "spec" for m in importers), importers


@pytest.mark.parametrize("module", [m for m in MODULES if stage_of(m) in PURE])
def test_the_pure_stages_do_no_io(module):
    _, theirs = imports_of(module)
    assert not {t for t in theirs if t in IO_MODULES or t.split(".")[0] in IO_MODULES}, theirs
    calls = {node.func.id for node in ast.walk(ast.parse(path_of(module).read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    if stage_of(module) != "spec":  # the spec package reads the spec files, and nothing else
        assert "open" not in calls, module


def test_validate_never_imports_libvirt():
    code = ("import sys; from reconcile.cli import main; rc = main(['validate', 'specs']); "
            "assert 'libvirt' not in sys.modules, 'libvirt imported'; sys.exit(rc)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


def test_every_stage_says_what_it_holds_and_may_import():
    for stage in ALLOWED:
        if not stage or stage == "errors":
            continue
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"reconcile/{stage}/__init__.py does not say what it may import"


def test_units_stay_small_enough_to_change_safely():
    """No module over 500 lines, no function over 80, no class over 300."""
    too_big = []
    for module in MODULES:
        source = path_of(module).read_text()
        if source.count("\n") > 500:
            too_big.append(f"{module}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                limit = 300 if isinstance(node, ast.ClassDef) else 80
                if length > limit:
                    too_big.append(f"{module}.{node.name}: {length} lines")
    assert not too_big, too_big
