"""`export` and `import`: bringing an existing host into git (see "Adoption and export" in
docs/specs.md).

`export` prints the spec of domains on the host (named, or `--all`, narrowed by `--match`),
`import` that of domain XML files not defined anywhere yet. Either way the spec is read back
by the spec reader itself before it is printed: whatever it would refuse is reported as a
problem of that domain and nothing is printed, so what is printed always validates. Devices
no spec field describes are printed as comments above their domain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from .. import spec as specs
from ..codec import domainfile
from ..codec import export as exporter
from ..errors import Diagnostic, NotExpressible, ReconcileError, SpecError, shown_path
from ..model import Observed, UnmodeledDevice
from . import render
from .output import Output
from .parser import EXIT_OK, default_uri

# How the comments above a domain begin: export's devices stay on the host as they are;
# import's are left out of the domain that the spec defines.
KEPT, LEFT_OUT = "not managed", "not carried over"


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


def import_files(args: argparse.Namespace, console: Output) -> int:
    """The spec of domains that domain XML files describe, to define them stopped."""
    problems: list[Diagnostic] = []
    parsed: list[domainfile.DomainFile] = []
    for path in args.files:
        data = _read(path, problems)
        if data is not None:
            doc = domainfile.parse(shown_path(path), data)
            (problems if isinstance(doc, Diagnostic) else parsed).append(doc)
    imported = []
    if parsed:
        observed = _observe(args)
        imported = [domainfile.import_domain(d, observed) for d in parsed]
        problems.extend(p for i in imported for p in i.problems)
        problems.extend(_named_twice(parsed, imported))
    if problems:
        raise NotExpressible(problems, "in the domain XML files")
    doc = _document(args.project, [(i.exported.data, i.not_carried) for i in imported], LEFT_OUT)
    roots = {i.exported.name: (f.path, *f.at(f.root)) for f, i in zip(parsed, imported)}
    _check(doc, args.project, lambda name: roots.get(name, (parsed[0].path, 1, 1)))
    for f, i in zip(parsed, imported):
        if i.not_carried:
            count = len(i.not_carried)
            console.note(f"{f.path}: {count} element{'s' if count != 1 else ''} not carried over (see the comments "
                         f"above {i.exported.name}): the domain the spec defines has libvirt's defaults there")
    _print(doc, console, {i.exported.name: i.not_carried for i in imported}, "x-not-carried-over")
    return EXIT_OK


def _read(path: str, problems: list[Diagnostic]) -> bytes | None:
    try:
        with open(path, "rb") as fp:  # only as far as the limit: a pipe or a device never ends
            return fp.read(domainfile.MAX_XML_BYTES + 1)
    except OSError as exc:
        problems.append(Diagnostic(shown_path(path), 0, 0, "", f"cannot read file: {exc.strerror or exc}"))
        return None


def _named_twice(parsed: list[domainfile.DomainFile], imported: list[domainfile.Imported]) -> list[Diagnostic]:
    first: dict[str, str] = {}
    out = []
    for f, i in zip(parsed, imported):
        name = i.exported.name
        if name and name in first:
            out.append(f.diag(f.root.find("name"), "name", f"domain {name} is in {first[name]} too; expected each "
                                                           "domain in one file", name))
        first.setdefault(name, f.path)
    return out


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
