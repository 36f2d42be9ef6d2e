"""Plans and results as one Markdown document, to post as a pull- or merge-request comment.
Pure: typed values in, a string out.

Everything that comes from the specs or a host (names, reasons, messages, URIs, values) is
escaped for the place it lands, so that it reads as written and can never break the layout
or become HTML: in a table cell, a heading or a list item, Markdown's inline punctuation is
backslash-escaped, `<`, `>` and `&` become entities and a line break becomes `<br>`; in a
`<summary>` (raw HTML, which Markdown does not read) it is HTML-escaped and kept on one
line, since a blank line would end the HTML block; in a code block the fence is longer
than any run of backticks inside. The field changes are the plan's own lines
(`render.change_text`), so a secret shows only as the hash the plan already holds.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..model import ActionKind, ActionResult, ApplyResult, Change, NoteKind, Plan, Readiness, Status
from . import render

_INLINE = re.compile(r"[\\`*_\[\]|~#]")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BREAK = re.compile(r"\r\n|\r|\n")
_RECAP = ("applied", "unchanged", "failed", "skipped")


class HostPart(Protocol):
    """One host's part of a run, as the document shows it (`targets.Target` is one)."""

    label: str  # the host's name in a run of many; its URI on a single-host run
    uri: str
    plan: Plan | None  # None: the host could not be read
    result: ApplyResult | None
    error: str
    readiness: tuple


@dataclass(frozen=True)
class Part:
    """A `HostPart` for a run on one host, labelled by its URI."""

    label: str
    uri: str
    plan: Plan | None = None
    result: ApplyResult | None = None
    error: str = ""
    readiness: tuple[Readiness, ...] = ()


def text(value: object) -> str:
    """Spec or host text for a table cell, a heading or a list item: shown as written."""
    out = _INLINE.sub(lambda m: "\\" + m.group(0), str(value))
    out = "".join(_ENTITIES.get(ch, ch) for ch in out)
    return _BREAK.sub("<br>", out)


def summary_text(value: object) -> str:
    """Text for inside raw HTML (a `<summary>`): escaped, and on one line."""
    return html.escape(_BREAK.sub(" ", str(value)), quote=True)


def code_block(lines: Sequence[str]) -> list[str]:
    body = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, body, fence]


def plan_document(plan: Plan) -> str:
    """A single-host plan, headed by its URI."""
    return document(plan.project, [Part(plan.uri, plan.uri, plan)])


def apply_document(result: ApplyResult, command: str = "apply", readiness: tuple[Readiness, ...] = ()) -> str:
    """A single-host apply or rebuild: its plan and what became of each action."""
    plan = result.plan
    return document(plan.project, [Part(plan.uri, plan.uri, plan, result, readiness=tuple(readiness))], command)


def document(project: str, parts: Sequence[HostPart], command: str | None = None) -> str:
    """The whole run: a title, a summary line, then each host. `command` (apply, rebuild):
    the parts carry results, shown beside each action; None: a plan."""
    title = f"Results of `reconcile {command}`" if command else "Plan"
    lines = [f"## {title} for project {text(project)}", "", _summary(parts, command is not None), ""]
    for part in parts:
        lines += _host(part, many=len(parts) > 1, results=command is not None)
    return "\n".join(lines).rstrip("\n")


def _summary(parts: Sequence[HostPart], results: bool) -> str:
    plans = [p.plan for p in parts if p.plan is not None]
    counts = Counter(a.kind for plan in plans for a in plan.actions)
    refused = sum(len(plan.refusals) for plan in plans)
    pending = sum(len(plan.pending) for plan in plans)
    if counts or refused:  # as the text summary: a refusal is not "no changes"
        shown = [k for k in ActionKind if k is not ActionKind.RESET or counts.get(k)]
        out = ["**Plan:** " + ", ".join(f"{counts.get(k, 0)} to {k.value}" for k in shown) + "."]
    else:
        out = ["**No changes.**"]
    out.append(f"**Refused:** {refused}." if refused else "")
    out.append("**Drift:** the host was changed outside reconcile." if any(p.drift for p in plans) else "")
    out.append(f"**Pending a restart:** {pending} domain{'s' if pending != 1 else ''}." if pending else "")
    down = sum(1 for p in parts if p.error)
    if len(parts) > 1 or down:
        out.append(f"{len(parts)} host{'s' if len(parts) != 1 else ''}"
                   + (f", {down} unavailable." if down else "."))
    if results:
        done = [p.result for p in parts if p.result is not None]
        totals = {k: sum(render.recap_counts(r)[k] for r in done) for k in _RECAP}
        recap = "**Recap:** " + ", ".join(f"{n} {k}" for k, n in totals.items())
        if len(done) == 1 and len(parts) == 1:
            recap += f" in {done[0].wall_time:.1f}s"
        ok = not down and all(r.ok for r in done) and len(done) == len(parts) and \
            all(r.ready for p in parts for r in p.readiness)
        out.append(recap + (". **OK.**" if ok else ". **Failed.**"))
    return " ".join(s for s in out if s)


def _host(part: HostPart, many: bool, results: bool) -> list[str]:
    where = text(part.uri) if part.label == part.uri else f"{text(part.label)} ({text(part.uri)})"
    lines = [f"### {'Host ' if many else ''}{where}", ""]
    if part.plan is None:
        return lines + [f"**Could not be read:** {text(part.error)}", ""]
    if part.error:
        lines += [f"**Error:** {text(part.error)}; its part of the run did not complete.", ""]
    plan = part.result.plan if results and part.result is not None else part.plan
    if many:
        lines += [text(render.plan_summary(plan)), ""]
    if many and results and part.result is not None:
        lines += [text(render.apply_recap(part.result)), ""]
    if plan.actions:
        lines += _table(plan, part.result if results else None, results) + [""]
        for action in plan.actions:
            if action.changes:
                what = f"{action.kind.glyph} {action.kind.value} {action.resource.value} {action.name}"
                lines += _details(what, action.changes)
    lines += _drift(plan) + _pending(plan) + _refused(plan) + _notes(plan) + _readiness(part.readiness)
    return lines


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(plan: Plan, result: ApplyResult | None, results: bool) -> list[str]:
    head = ["", "action", "resource", "name", "reason"] + (["result"] if results else [])
    by_id = {r.action.id: r for r in result.results} if result is not None else {}
    rows = [_row(head), _row(["---"] * len(head))]
    for a in plan.actions:
        cells = [f"`{a.kind.glyph}`", a.kind.value, a.resource.value, text(a.name), text(a.reason)]
        if results:
            cells.append(_outcome(by_id.get(a.id)))
        rows.append(_row(cells))
    return rows


def _outcome(r: ActionResult | None) -> str:
    if r is None:
        return "not run"
    detail = f" ({r.message})" if r.message else ""
    mark = f"**{r.status.value}**" if r.status in (Status.FAILED, Status.SKIPPED) else r.status.value
    return f"{mark}{text(detail)} \\[{r.duration:.1f}s\\]"


def _details(what: str, changes: Sequence[Change]) -> list[str]:
    n = len(changes)
    # The blank line after <summary> ends the HTML block, so the code block below is Markdown.
    return (["<details>", f"<summary>{summary_text(what)}: {n} change{'s' if n != 1 else ''}</summary>", ""]
            + code_block([render.change_text(c) for c in changes]) + ["", "</details>", ""])


def _line(glyph: str, kind: str, resource: str, name: str, rest: str) -> str:
    return f"- `{glyph}` {kind} {resource} {text(name)}: {text(rest)}"


def _drift(plan: Plan) -> list[str]:
    drifted = [(a, c) for a in plan.actions for c in a.changes if c.drift]
    if not drifted:
        return []
    lines = ["#### Drift", "", "Changed on the host outside reconcile since it last applied:", ""]
    lines += [_line(a.kind.glyph, a.kind.value, a.resource.value, a.name, render.change_line(c))
              for a, c in drifted]
    return lines + [""]


def _pending(plan: Plan) -> list[str]:
    if not plan.pending:
        return []
    lines = ["#### Pending a restart", ""]
    lines += [_line("*", "pending", "domain", p.name, p.reason) for p in plan.pending] + [""]
    for p in plan.pending:
        if p.changes:
            lines += _details(f"* pending domain {p.name}", p.changes)
    return lines


def _refused(plan: Plan) -> list[str]:
    if not plan.refusals:
        return []
    lines = ["#### Refused", ""]
    lines += [_line("!", "refuse", n.resource.value, n.name, n.message) for n in plan.refusals]
    return lines + [""]


def _notes(plan: Plan) -> list[str]:
    shown = [n for n in plan.notes if not n.refused and n.kind is not NoteKind.CONVERGED]
    if not shown:
        return []
    lines = ["#### Notes", ""]
    lines += [_line("=", n.kind.value, n.resource.value, n.name, n.message) for n in shown]
    return lines + [""]


def _readiness(verdicts: Sequence[Readiness]) -> list[str]:
    if not verdicts:
        return []
    lines = ["#### Readiness", ""]
    for r in verdicts:
        if r.ready:
            lines.append(f"- ready {text(r.domain)} \\[{r.waited:.1f}s\\]")
        elif r.skipped:
            lines.append(f"- not waited for {text(r.domain)}: {text(r.skipped)}")
        else:
            failed = r.failed
            what = f"{failed.condition}: {failed.seen}" if failed else "no verdict"
            lines.append(f"- **not ready** {text(r.domain)}: {text(what)} \\[{r.waited:.1f}s\\]")
    return lines + [""]
