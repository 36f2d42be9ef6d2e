"""`export`: bringing an existing host into git (see "Adoption and export" in docs/specs.md).

`export` prints the spec of domains on the host (named, or `--all`, narrowed by `--match`).
The spec is read back by the spec reader itself before it is printed: whatever it would
refuse is reported as a problem of that domain and nothing is printed, so what is printed
always validates. Devices no spec field describes are printed as comments above their domain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from .. import spec as specs
from ..codec import export as exporter
from ..errors import Diagnostic, NotExpressible, ReconcileError, SpecError
from ..model import Observed, UnmodeledDevice
from . import render
from .output import Output
from .parser import EXIT_OK, default_uri

# How the comments above a domain begin: export's devices stay on the host as they are.
KEPT = "not managed"


def _observe(args: argparse.Namespace) -> Observed:
    from ..host import LibvirtHost  # imported late: a command line that does not parse needs no libvirt

    host = LibvirtHost(default_uri(args.connect))
    try:
        return host.observe(volumes=None, live=())  # every volume: which one each disk's file is
    finally:
        host.close()


def export(args: argparse.Namespace, console: Output) -> int:
    """The spec of domains on the host, as they are: planning it right away finds nothing to do."""
    observed = _observe(args)
    done = [exporter.export_domain(observed, name) for name in _chosen(args, observed, console)]
    problems = [Diagnostic(observed.uri, 0, 0, p.field, p.message, d.name) for d in done for p in d.problems]
    if problems:
        raise NotExpressible(problems, f"in the domains on {observed.uri}")
    doc = _document(args.project, [(d.data, d.unmodeled) for d in done], KEPT)
    _check(doc, args.project, lambda name: (observed.uri, 0, 0))
    _print(doc, console, {d.name: d.unmodeled for d in done}, "x-not-managed")
    return EXIT_OK


def _chosen(args: argparse.Namespace, observed: Observed, console: Output) -> list[str]:
    """The domains named; or with --all, every domain (whose name matches a --match pattern)
    but those another project manages, whose spec is that project's (left out, and said)."""
    if not args.all:
        missing = [n for n in args.names if n not in observed.domains]
        if missing:
            raise ReconcileError(f"no domain named {', '.join(missing)} on {observed.uri}")
        return list(dict.fromkeys(args.names))
    names = sorted(observed.domains)
    if args.match:
        unmatched = [p for p in args.match if not any(fnmatchcase(n, p) for n in names)]
        if unmatched:
            raise ReconcileError(f"no domain on {observed.uri} matches {', '.join(repr(p) for p in unmatched)}; "
                                 "expected a shell-style pattern that matches whole names, such as 'web*' or "
                                 "'lab-??' (case counts)")
        names = [n for n in names if any(fnmatchcase(n, p) for p in args.match)]
    theirs = {n: observed.domains[n].ownership.project for n in names
              if observed.domains[n].ownership is not None and observed.domains[n].ownership.project != args.project}
    if theirs:
        listed = ", ".join(f"{n} ({p})" for n, p in theirs.items())
        hint = "their specs are their projects'" if args.project else "--project NAME exports those of project NAME"
        console.note(f"left out, managed by a project{'' if args.project is None else ' other than ' + args.project}: "
                     f"{listed}; {hint}")
    names = [n for n in names if n not in theirs]
    if not names:
        console.note(f"no domain on {observed.uri} to export")
    return names


def _document(project: str | None, domains: list[tuple[dict[str, Any], tuple[UnmodeledDevice, ...]]],
              prefix: str) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if project:
        doc["project"] = project
    doc["domains"] = [specs.Commented(data, tuple(f"{prefix}: {u.xml}" for u in unmodeled))
                      for data, unmodeled in domains]
    return doc


def _check(doc: dict[str, Any], project: str | None, where: Callable[[str], tuple[str, int, int]]) -> None:
    """Read the spec back as `validate` would; what it refuses is what the domain has and the
    spec language cannot say (`where` places a domain's problems: its file, or the host)."""
    with tempfile.TemporaryDirectory(prefix="reconcile-export-") as tmp:
        path = os.path.join(tmp, "spec.yaml")
        with open(path, "w", encoding="utf-8") as fp:
            fp.write(specs.dump(doc))
        try:
            specs.load([path], project=project)
        except SpecError as exc:
            raise NotExpressible([Diagnostic(*where(d.resource), d.field, f"{d.message} (so the spec language cannot "
                                             "say what the domain has)", d.resource) for d in exc.diagnostics],
                                 "in what the domains have") from None


def _print(doc: dict[str, Any], console: Output, unmodeled: dict[str, tuple[UnmodeledDevice, ...]], key: str) -> None:
    if not console.json:
        console.out(specs.dump(doc).rstrip("\n"))
        return
    data = specs.plain(doc)
    listed = {name: [u.xml for u in found] for name, found in unmodeled.items() if found}
    if listed:
        data[key] = listed  # an x- key: free in a spec, so the JSON is a spec too
    console.out(render.dumps(data))
