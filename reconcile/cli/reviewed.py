"""Reviewed plans: `plan --out FILE` writes the plan a reviewer approves, and `apply FILE`
applies exactly that plan or refuses it.

The file holds, beside the plan itself (its actions, notes and text, for `reconcile show`),
what the plan was made from: the project, reconcile's version, the planning options, each
spec file's SHA-256, and for each host its URI and a fingerprint of every resource the plan
read (see `plan.fingerprint`). `apply FILE` loads the same spec files, reads each host again
under its lock, and refuses the whole plan, naming what moved, if any spec file, any
fingerprint or the plan made now differs from the file; it never re-plans silently. Since
the planner is a pure function of the specs and the host, the same inputs give the same
plan, and the actions it runs are the reviewed ones. The file holds no secret: plans show
seeds and cloud-init data only as hashes, and so does the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from ..errors import ReconcileError
from ..plan.fingerprint import Seen, changes_since, fingerprints
from . import render
from .parser import version

KIND = "reconcile-plan"
FORMAT_VERSION = 1
OPTIONS = ("prune", "prune_all", "restart", "adopt", "allow_recreate")  # what shapes an apply's plan
# and --project, when given (None: the specs' own), so `apply FILE` needs no option again


@dataclasses.dataclass(frozen=True)
class HostPart:
    """One host's part of a reviewed plan."""

    name: str
    uri: str
    seen: dict[str, Seen]
    actions: list[dict[str, Any]]  # as in the plan's JSON document


@dataclasses.dataclass(frozen=True)
class PlanFile:
    path: str
    version: str
    project: str
    paths: tuple[str, ...]
    specs: dict[str, str]  # absolute path -> sha256 of its content
    options: dict[str, Any]  # the planning options, and --project (None: the specs')
    hosts: tuple[HostPart, ...]
    document: dict[str, Any]  # the plan as `plan -o json` prints it
    text: str


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def is_plan_file(path: str) -> bool:
    """Whether `path` is a file `plan --out` wrote (its first bytes say so)."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return b'"kind": "reconcile-plan"' in head


def write(path: str, args, desired, targets, document: dict[str, Any], text: str) -> None:
    """Write the reviewed plan of `targets` (each observed and planned)."""
    doc = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "reconcile_version": version(),
        "project": desired.project,
        "paths": list(desired.roots),
        "specs": {os.path.abspath(f): file_digest(f) for f in desired.files},
        "options": {**{k: bool(getattr(args, k, False)) for k in OPTIONS}, "project": args.project},
        "hosts": [{"name": t.label, "uri": t.uri,
                   "seen": {k: dataclasses.asdict(s) for k, s in fingerprints(t.desired, t.observed).items()},
                   "actions": render.plan_json(t.plan, t.label)["actions"]}
                  for t in targets if t.plan is not None and not t.error],
        "plan": document,
        "text": text,
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read(path: str) -> PlanFile:
    """The plan file at `path`; one of another format version is refused."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise ReconcileError(f"{path}: not a readable plan file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ReconcileError(f"{path}: not a plan file written by `reconcile plan --out`")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ReconcileError(f"{path}: a plan file of format version {doc.get('format_version')}, this reconcile "
                             f"reads version {FORMAT_VERSION}; plan again with this reconcile")
    try:
        hosts = tuple(HostPart(h["name"], h["uri"], {k: Seen(**v) for k, v in h["seen"].items()}, h["actions"])
                      for h in doc["hosts"])
        return PlanFile(path, doc["reconcile_version"], doc["project"], tuple(doc["paths"]), dict(doc["specs"]),
                        dict(doc["options"]), hosts, doc["plan"], doc.get("text", ""))
    except (KeyError, TypeError) as exc:
        raise ReconcileError(f"{path}: a damaged plan file (missing {exc}); plan again") from exc


def spec_changes(reviewed: PlanFile, desired) -> list[str]:
    """How the specs differ from those the plan was made from."""
    out = []
    if version() != reviewed.version:
        out.append(f"the plan was made by reconcile {reviewed.version}, this is {version()}")
    if desired.project != reviewed.project:
        out.append(f"the plan is of project {reviewed.project!r}, the specs say {desired.project!r}")
    now = {os.path.abspath(f): f for f in desired.files}
    for path in sorted(set(reviewed.specs) | set(now)):
        if path not in now:
            out.append(f"spec file {path}: gone since the plan was made")
        elif path not in reviewed.specs:
            out.append(f"spec file {path}: new since the plan was made")
        elif file_digest(now[path]) != reviewed.specs[path]:
            out.append(f"spec file {path}: changed since the plan was made")
    return out


def host_changes(reviewed: PlanFile, targets) -> list[str]:
    """How the hosts moved since the plan was made, and where the plan made now differs."""
    out = []
    parts = {h.name: h for h in reviewed.hosts}
    labels = {t.label for t in targets}
    for name in sorted(set(parts) - labels):
        out.append(f"host {name}: in the plan, but not among this run's hosts")
    for t in targets:
        part = parts.get(t.label)
        if part is None:
            out.append(f"host {t.label} ({t.uri}): not in the plan")
            continue
        if part.uri != t.uri:
            out.append(f"host {t.label}: the plan was made against {part.uri}, this run connects to {t.uri}")
            continue
        if t.error:
            out.append(f"host {t.label} ({t.uri}) could not be read: {t.error}")
            continue
        moved = changes_since(part.seen, fingerprints(t.desired, t.observed))
        out += [f"[{t.label}] {line}" if len(targets) > 1 else line for line in moved]
        if not moved and render.plan_json(t.plan, t.label)["actions"] != part.actions:
            out.append(f"host {t.label}: the plan made now differs from the reviewed one")
    return out


def refusal(reviewed: PlanFile, problems: list[str]) -> str:
    listed = "\n".join(f"  {p}" for p in problems)
    return (f"refused: {reviewed.path} is not what the host and the specs are now; nothing was done. Plan again "
            f"and review the new plan.\n{listed}")
