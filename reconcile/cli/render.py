"""Plans, results and diagnostics as text for people or JSON for pipelines. Pure.

The text form reads like a change a reviewer approves: one line per action with its glyph,
then the fields that change, `before -> after`. The JSON form is stable: keys are only
added, never renamed, and `format_version` says which shape a consumer is reading.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ..errors import Diagnostic, shown_path
from ..model import ActionKind, ApplyResult, Change, NoteKind, Plan, Reference, ResourceKind, Status
from ..model.units import format_size

FORMAT_VERSION = 1
DEFAULT_HOST = "default"  # the name, in output, of the default connection (-c, LIBVIRT_DEFAULT_URI, qemu:///system)
_KIB_FIELDS = {"memory", "current_memory"}
_BYTE_FIELDS = {"size"}


def _value(leaf: str, value: Any) -> str:
    """A value as shown, by the name of the field it is (sizes with units, booleans)."""
    if value is None:
        return "(none)"
    if leaf in _KIB_FIELDS and isinstance(value, int):
        return format_size(value * 1024)
    if leaf in _BYTE_FIELDS and isinstance(value, int):
        return format_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_value(leaf, v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(k, v)}" for k, v in value.items()) + "}"
    return str(value)


def change_line(change: Change) -> str:
    name, leaf = change.shown, str(change.path[-1])
    if change.before is None:
        return f"{name}: {_value(leaf, change.after)}"
    if change.after is None:
        return f"{name}: {_value(leaf, change.before)} -> (removed)"
    return f"{name}: {_value(leaf, change.before)} -> {_value(leaf, change.after)}"


def change_text(change: Change) -> str:
    """A change line with its class, and a drift mark when the host moved on its own."""
    line = change_line(change)
    if change.klass is not None and change.before is None and change.after is not None:
        line = f"{change.shown}: (none) -> {_value(str(change.path[-1]), change.after)}"  # something the host lacks
    if change.klass is not None:
        line += f"  [{change.klass.value}]"
    if change.drift:
        line += "  (drift: changed outside reconcile)"
    return line


def plan_text(plan: Plan, verbose: bool = False, host: str | None = None) -> str:
    """`host`: the host's name in a run of many (then named in the heading)."""
    where = f"host {host} ({plan.uri})" if host else plan.uri
    lines = [f"Plan for project '{plan.project}' on {where}:"]
    for action in plan.actions:
        lines.append(f"  {action.kind.glyph} {action.kind.value} {action.resource.value} {action.name}  ({action.reason})")
        if action.resource is ResourceKind.VOLUME and action.kind is ActionKind.CREATE:
            continue  # the reason already says size and format
        for change in action.changes:
            lines.append(f"      {change_text(change)}")
    for pending in plan.pending:
        lines.append(f"  * pending domain {pending.name}  ({pending.reason})")
        for change in pending.changes:
            lines.append(f"      {change_text(change)}")
    for note in plan.notes:
        if note.refused:
            lines.append(f"  ! refuse {note.resource.value} {note.name}: {note.message}")
        elif verbose or note.kind.always_shown:
            lines.append(f"  = {note.resource.value} {note.name}: {note.message}")
    lines.append(plan_summary(plan))
    return "\n".join(lines)


def plan_summary(plan: Plan) -> str:
    waiting = ""
    if plan.pending:
        n = len(plan.pending)
        waiting = f" {n} domain{'s' if n != 1 else ''} pending a restart."
    unmanaged = sum(1 for n in plan.notes if n.kind is NoteKind.UNMANAGED)
    if unmanaged:
        waiting += (f" {unmanaged} domain{'s' if unmanaged != 1 else ''} unmanaged, left alone "
                    "(--adopt takes them over).")
    if plan.empty and not plan.refusals:
        converged = sum(1 for n in plan.notes if n.kind.checked)
        return f"No changes. The host matches the specs ({converged} resource{'s' if converged != 1 else ''} checked).{waiting}"
    counts = Counter(a.kind for a in plan.actions)
    # reset is rebuild's own verb: shown only where a plan has one
    parts = [f"{counts.get(k, 0)} to {k.value}" for k in ActionKind if k is not ActionKind.RESET or counts.get(k)]
    text = "Plan: " + ", ".join(parts) + "."
    if plan.drift:
        text += " Drift: the host was changed outside reconcile."
    if plan.refusals:
        text += f" {len(plan.refusals)} refused."
    return text + waiting


def result_line(result) -> str:
    a = result.action
    detail = f" ({result.message})" if result.message else ""
    return f"  {a.kind.glyph} {a.kind.value} {a.resource.value} {a.name}: {result.status.value}{detail} [{result.duration:.1f}s]"


def recap_counts(result: ApplyResult) -> dict[str, int]:
    """Applied, unchanged (re-checked and already done, or matching from the start), failed
    (including what the plan refused), skipped."""
    return {
        "applied": result.count(Status.APPLIED),
        "unchanged": result.count(Status.UNCHANGED) + sum(1 for n in result.plan.notes
                                                          if n.kind not in (NoteKind.REFUSED, NoteKind.UNMODELED)),
        "failed": result.count(Status.FAILED) + len(result.plan.refusals),
        "skipped": result.count(Status.SKIPPED),
    }


def apply_recap(result: ApplyResult) -> str:
    counts = recap_counts(result)
    return "Recap: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f" in {result.wall_time:.1f}s"


def _change_json(change: Change) -> dict[str, Any]:
    return {"path": change.shown, "before": change.before, "after": change.after,
            "class": change.klass.value if change.klass else None, "drift": change.drift}


def plan_json(plan: Plan, host: str = DEFAULT_HOST) -> dict[str, Any]:
    """The plan as a document valid against schemas/plan.schema.json; every action, note
    and pending change says which host (by its name under `hosts`) it is on."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": "plan",
        "project": plan.project,
        "uri": plan.uri,
        "changes_pending": not plan.empty,
        "drift": plan.drift,
        "actions": [
            {
                "id": a.id,
                "action": a.kind.value,
                "resource": a.resource.value,
                "name": a.name,
                "reason": a.reason,
                "changes": [_change_json(c) for c in a.changes],
                "depends_on": list(a.depends_on),
                "host": host,
            }
            for a in plan.actions
        ],
        "notes": [
            {"resource": n.resource.value, "name": n.name, "message": n.message, "refused": n.refused,
             "kind": n.kind.value, "host": host, **({"devices": list(n.devices)} if n.devices else {})}
            for n in plan.notes
        ],
        "pending": [
            {"resource": "domain", "name": p.name, "reason": p.reason, "changes": [_change_json(c) for c in p.changes],
             "host": host}
            for p in plan.pending
        ],
    }


def apply_json(result: ApplyResult, host: str = DEFAULT_HOST) -> dict[str, Any]:
    doc = plan_json(result.plan, host)
    doc["kind"] = "apply"
    doc["results"] = [
        {
            "id": r.action.id,
            "action": r.action.kind.value,
            "resource": r.action.resource.value,
            "name": r.action.name,
            "status": r.status.value,
            "message": r.message,
            "started": r.started,
            "finished": r.finished,
            "duration": round(r.duration, 3),
            **({"outcome": r.outcome} if r.outcome else {}),
            **({"error": r.error} if r.error else {}),
            **({"attempts": r.attempts} if r.attempts > 1 else {}),
            "host": host,
        }
        for r in result.results
    ]
    doc["recap"] = recap_counts(result)
    doc["connection_lost"] = result.connection_lost
    doc["wall_time"] = round(result.wall_time, 3)
    doc["ok"] = result.ok
    return doc


def error_json(command: str, kind: str, message: str) -> dict[str, Any]:
    """A run that ended in an error before it had a plan or results to print; valid against
    schemas/error.schema.json."""
    return {"format_version": FORMAT_VERSION, "kind": "error", "command": command, "ok": False,
            "error": {"kind": kind, "message": message}}


def diagnostics_text(diagnostics: list[Diagnostic]) -> str:
    return "\n".join(str(d) for d in diagnostics)


def diagnostics_json(diagnostics: list[Diagnostic]) -> list[dict[str, Any]]:
    return [
        {"file": shown_path(d.file), "line": d.line, "column": d.column, "resource": d.resource, "field": d.field,
         "message": d.message}
        for d in diagnostics
    ]


def references_text(refs: tuple[Reference, ...]) -> str:
    lines = ["Not declared in the specs, so expected to exist on the host (plan refuses what is missing):"]
    for r in refs:
        hint = f"; {r.hint}" if r.hint else ""
        lines.append(f"  {r.kind} {r.name!r} (first used at {r.origin}){hint}")
    return "\n".join(lines)


def references_json(refs: tuple[Reference, ...]) -> list[dict[str, Any]]:
    return [{"kind": r.kind, "name": r.name, "file": r.origin.file, "line": r.origin.line,
             "column": r.origin.column, "hint": r.hint} for r in refs]


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, default=str)
