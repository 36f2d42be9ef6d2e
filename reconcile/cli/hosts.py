"""Many hosts in one run: every host the specs use is connected to, read and planned at
once; each is changed under its own lock with its own parallelism, so a slow host never
holds up another; and a host that cannot be reached, or is lost mid-run, fails only its
own part while every other host's work completes.

Locks are taken in one order on every run (the default connection first, then the named
hosts by name), so two runs over overlapping hosts never wait for each other in a circle.
A domain whose spec moved it to another host is destroyed on the old host before it is
created on the new one (cli/moves.py): an apply runs in two rounds, the removals of the
domains that leave a host first, on every host, then the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from ..apply.executor import execute
from ..apply.lock import RunLock, clear_stale
from ..errors import HostUnavailable, ReconcileError
from ..model import ActionResult, ApplyResult, Desired, Plan, ResourceKind, Status
from ..spec.formats import closest
from . import markdown, render
from .moves import find_moves, leaving_part, left_behind, look_around
from .output import Output, Progress
from .parser import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, default_uri
from .targets import Target, each


def many_hosts(desired: Desired, args: argparse.Namespace) -> bool:
    """Whether this run goes through the many-hosts path: the specs declare hosts, or the
    command line picks some."""
    return bool(desired.hosts) or bool(getattr(args, "host", None))


def targets_of(desired: Desired, args: argparse.Namespace, connect) -> list[Target]:
    """The hosts of this run, in lock order, each with its part of the specs; `--host`
    keeps some (unknown names are an error, with the closest one)."""
    declared = {h.name: h.uri for h in desired.hosts}
    default = default_uri(args.connect)
    for name, uri in declared.items():
        if uri == default and desired.on_host(None).domains:
            raise ReconcileError(f"host {name!r} is {uri}, which is also the default connection: one daemon under "
                                 "two names would show its domains twice; place those domains on "
                                 f"host {name!r}, or connect elsewhere by default (-c)")
    used = desired.hosts_used()
    wanted = getattr(args, "host", None) or []
    for name in wanted:
        if name != render.DEFAULT_HOST and name not in declared:
            close = closest(name, list(declared) + [render.DEFAULT_HOST])
            hint = f"; did you mean {close!r}?" if close else ""
            raise ReconcileError(f"--host {name}: no such host in the specs{hint} (hosts: "
                                 f"{', '.join([render.DEFAULT_HOST, *sorted(declared)])})")
    if wanted:
        used = [h for h in used if (h or render.DEFAULT_HOST) in wanted]
    out = []
    for name in used:
        uri = default if name is None else declared[name]
        out.append(Target(name, uri, desired.on_host(name), connect(uri)))
    return out


def run_many(args: argparse.Namespace, desired: Desired, console: Output, connect, observe_for, plan_from,
             reviewed=None) -> int:
    """plan, apply, destroy and rebuild over every host of the run; `reviewed`: the plan
    file `apply FILE` applies, which the hosts must still match (see `reviewed`)."""
    targets = targets_of(desired, args, connect)
    bystanders: list[Target] = []
    for t in targets:
        t.host.connect_early()
    acting = args.command == "destroy" or (args.command in ("apply", "rebuild") and not args.dry_run)
    try:
        def read(t: Target) -> None:
            removed = clear_stale_lock(t.host, desired.project)
            if removed:
                console.note(f"[{t.label}] {removed}")
            t.observed = observe_for(args, t.desired, t.host)

        each(targets, read)
        if args.command in ("plan", "apply"):
            bystanders += look_around(targets, desired, args, console, connect, observe_for)
            find_moves(targets, desired, bystanders)
        each(targets, lambda t: setattr(t, "plan", plan_from(args, t.desired, t.observed, t.moves)))
        if not acting:
            if reviewed is not None and _refused(reviewed, targets, console):  # apply FILE --dry-run
                return EXIT_ERROR
            show_plans(targets, console, desired)
            if getattr(args, "out", None):
                from . import reviewed as plan_file

                plan_file.write(args.out, args, desired, targets, many_json(targets, desired, results=False),
                                plans_text(targets, verbose=True))
                console.note(f"plan written to {args.out}: `reconcile apply {args.out}` applies exactly this plan")
            return _plan_exit(targets, args)
        if reviewed is not None and _refused(reviewed, targets, console):
            return EXIT_ERROR
        return _apply_many(targets, args, desired, console, observe_for, plan_from, reviewed, bystanders)
    finally:
        for t in [*targets, *bystanders]:
            t.host.close()


def _refused(reviewed, targets: list[Target], console: Output) -> bool:
    """Whether the hosts moved away from the reviewed plan (then said, and nothing is done)."""
    from . import reviewed as plan_file

    problems = plan_file.host_changes(reviewed, targets)
    if problems:
        message = plan_file.refusal(reviewed, problems)
        if console.json:
            console.out(render.dumps(render.error_json("apply", "stale plan", message)))
        console.err(message)
    return bool(problems)


def clear_stale_lock(host, project: str) -> str | None:
    """Remove the project's lock on the host if its holder is gone; what to say, if anything.
    A host that cannot be read is raised (the plan could not read it either: said once)."""
    try:
        return clear_stale(host, project)
    except HostUnavailable:
        raise
    except ReconcileError as exc:  # e.g. a read-only connection: the plan itself still works
        return f"a stale lock could not be removed: {exc}"


def _plan_exit(targets: list[Target], args: argparse.Namespace) -> int:
    plans = [t.plan for t in targets if t.plan is not None and not t.error]
    changes = any(not p.empty for p in plans)
    if any(p.refusals for p in plans):
        return EXIT_ERROR
    if getattr(args, "detailed_exitcode", False) and changes:
        return EXIT_CHANGES  # said even with a host unreadable: changes wait elsewhere
    return EXIT_ERROR if any(t.error for t in targets) else EXIT_OK


def show_plans(targets: list[Target], console: Output, desired: Desired, results: bool = False) -> None:
    """Each host's plan (or why it could not be read), one after another, in lock order."""
    if console.markdown:  # one document, at the end: the plans, or the plans and their results
        console.out(markdown.document(desired.project, targets, console.args.command if results else None))
        return
    if console.json:
        console.out(render.dumps(many_json(targets, desired, results)))
        return
    if results:
        return
    if console.args.quiet:
        for t in targets:
            console.out(f"Host {t.label} ({t.uri}) could not be read: {t.error}" if t.error
                        else f"{t.label}: {render.plan_summary(t.plan)}")
        return
    console.out(plans_text(targets, verbose=console.args.verbose))


def plans_text(targets: list[Target], verbose: bool) -> str:
    return "\n".join(f"Host {t.label} ({t.uri}) could not be read: {t.error}" if t.error
                     else render.plan_text(t.plan, verbose=verbose, host=t.label) for t in targets)


def many_json(targets: list[Target], desired: Desired, results: bool) -> dict[str, Any]:
    """One document for the whole run: every host's actions, notes and results, each with
    its host, and per host whether it could be read and its recap."""
    default = next((t.uri for t in targets if t.name is None), targets[0].uri if targets else "")
    doc: dict[str, Any] = {"format_version": render.FORMAT_VERSION, "kind": "apply" if results else "plan",
                           "project": desired.project, "uri": default, "changes_pending": False, "drift": False,
                           "actions": [], "notes": [], "pending": [], "hosts": []}
    if results:
        doc.update(results=[], wall_time=0.0, connection_lost=False)
    totals = {"applied": 0, "unchanged": 0, "failed": 0, "skipped": 0}
    for t in targets:
        entry: dict[str, Any] = {"name": t.label, "uri": t.uri, "available": not t.error and t.plan is not None}
        if t.error:
            entry["error"] = t.error
        if t.plan is not None:
            part = render.apply_json(t.result, t.label) if results and t.result is not None \
                else render.plan_json(t.plan, t.label)
            for key in ("actions", "notes", "pending"):
                doc[key] += part[key]
            doc["changes_pending"] |= part["changes_pending"]
            doc["drift"] |= part["drift"]
            entry["changes_pending"] = part["changes_pending"]
            if results and t.result is not None:
                doc["results"] += part["results"]
                doc["wall_time"] = max(doc["wall_time"], part["wall_time"])
                doc["connection_lost"] |= part["connection_lost"]
                entry["recap"] = part["recap"]
                entry["ok"] = part["ok"] and not t.error
                for k, n in part["recap"].items():
                    totals[k] += n
        if results and entry.get("ok") is None:
            entry["ok"] = False
        doc["hosts"].append(entry)
    if results:
        doc["recap"] = totals
        doc["ok"] = all(h["ok"] for h in doc["hosts"])
        ready = [(t.label, r) for t in targets for r in t.readiness]
        if ready:
            from .lab import readiness_json

            doc["readiness"] = [{**readiness_json(r), "host": label} for label, r in ready]
            doc["ok"] = doc["ok"] and all(r.ready for _, r in ready)
    return doc


def _apply_many(targets: list[Target], args: argparse.Namespace, desired: Desired, console: Output,
                observe_for, plan_from, reviewed=None, bystanders: list[Target] = ()) -> int:
    if not console.quiet_apply:
        show_plans(targets, console, desired)
    changing = [t for t in targets if not t.error and (args.command == "rebuild" or t.plan.actions or args.break_lock)]
    locks: dict[int, RunLock] = {}
    started = time.monotonic()
    try:
        for t in changing:  # in lock order: never two runs waiting on each other in a circle
            lock = RunLock(t.host, desired.project, command=f"reconcile {args.command}",
                           on_wait=lambda text, t=t: console.note(f"[{t.label}] {text}"))
            try:
                lock.acquire(timeout=args.lock_timeout, break_lock=args.break_lock)
            except ReconcileError as exc:
                t.error = str(exc)
                continue
            locks[id(t)] = lock
        held = [t for t in changing if id(t) in locks]

        # Planned again under the locks, so each plan sees what a run that held one left.
        def replan(t: Target) -> None:
            t.observed = observe_for(args, t.desired, t.host)

        each(held, replan)
        if args.command == "apply":
            find_moves(targets, desired, list(bystanders))
        each(held, lambda t: setattr(t, "plan", plan_from(args, t.desired, t.observed, t.moves)))
        if reviewed is not None and _refused(reviewed, targets, console):  # what counts: read under the locks
            return EXIT_ERROR
        if held and not console.quiet_apply:
            console.info(f"Applying on {len(held)} host{'s' if len(held) != 1 else ''} ({args.parallel} at a time "
                         "on each):")
        runs = {id(t): _HostRun(t, args, console) for t in held if not t.error}
        # Two rounds: first every host removes the domains that move away from it, then each
        # does the rest, creating the domains that arrive once their old host let them go.
        # So swapped domains (a to b, b to a) both move, and none ever runs twice.
        each(held, lambda t: runs[id(t)].run(leaving_part(t.plan, t.moves.moving_out)))

        def rest(t: Target) -> None:
            run = runs[id(t)]
            left = left_behind(t, targets, runs)
            run.run(_without(t.plan, set(run.results)), skip=left)
            run.end()
            lock = locks.pop(id(t), None)
            if lock is not None:  # waiting changes nothing: the lock goes first
                lock.release()
            run.wait()

        each(held, rest)
    finally:
        for lock in locks.values():
            lock.release()
    wall = time.monotonic() - started
    for t in targets:  # a host with nothing to do: its plan's notes are its recap
        if t.result is None and t.plan is not None and not t.error:
            t.result = ApplyResult(t.plan, ())
    return _report(targets, args, desired, console, wall)


class _HostRun:
    """One host's part of an apply, run in rounds (see `_apply_many`): its progress, its
    readiness wait and its results gathered into one result for the whole plan."""

    def __init__(self, t: Target, args: argparse.Namespace, console: Output):
        self.t, self.args = t, args
        self.results: dict[str, Any] = {}  # action id -> ActionResult
        self.lost = False
        self.progress = Progress(console, len(t.plan.actions), live=False, prefix=f"[{t.label}] ").__enter__()
        self.waiting = None
        if getattr(args, "wait", False):
            from .lab import ApplyWait

            self.waiting = ApplyWait(args, t.desired, t.plan, t.host, self.progress.line)

    def finished(self, result) -> None:
        self.progress.finished(result)
        if self.waiting is not None:
            self.waiting.finished(result)

    def run(self, plan: Plan, skip: dict[str, str] | None = None) -> None:
        """Execute `plan`, after the rounds before it (their results settled, see `execute`).
        The domains of `skip` (name -> why) are not attempted, nor what needs them."""
        now = time.time()
        for a in plan.actions:
            if a.resource is ResourceKind.DOMAIN and a.name in (skip or {}):
                self.results[a.id] = r = ActionResult(a, Status.SKIPPED, f"not attempted: {skip[a.name]}", now, now)
                self.finished(r)
        plan = dataclasses.replace(plan, actions=tuple(a for a in plan.actions if a.id not in self.results))
        if not plan.actions:
            return
        result = execute(plan, self.t.host, parallel=self.args.parallel, force=getattr(self.args, "force", False),
                         on_result=self.finished, on_start=self.progress.started, settled=self.results)
        self.lost |= result.connection_lost
        for r in result.results:
            self.results[r.action.id] = r

    def end(self) -> None:
        self.progress.__exit__(None, None, None)
        ordered = tuple(self.results[a.id] for a in self.t.plan.actions if a.id in self.results)
        self.t.result = ApplyResult(self.t.plan, ordered, wall_time=0.0, connection_lost=self.lost)
        if self.lost:
            self.t.error = f"lost the connection to libvirtd at {self.t.uri} during {self.args.command}"

    def wait(self) -> None:
        if self.waiting is not None:
            self.t.readiness = self.waiting.finish()


def _without(plan: Plan, ids: set[str]) -> Plan:
    """The plan without these actions (the round before ran them)."""
    return dataclasses.replace(plan, actions=tuple(a for a in plan.actions if a.id not in ids))


def _report(targets: list[Target], args: argparse.Namespace, desired: Desired, console: Output, wall: float) -> int:
    if console.document:
        show_plans(targets, console, desired, results=True)
    else:
        for t in targets:
            if t.result is not None:
                for note in t.plan.refusals:
                    console.err(f"refused: [{t.label}] {note.resource.value} {note.name}: {note.message}")
                console.out(f"Recap {t.label}: " + render.apply_recap(t.result).removeprefix("Recap: "))
            if t.error:
                console.err(f"error: host {t.label} ({t.uri}): {t.error}; its part of the run did not complete: "
                            "run the same command again once it answers")
        totals = {"applied": 0, "unchanged": 0, "failed": 0, "skipped": 0}
        for t in targets:
            if t.result is not None:
                for k, n in render.recap_counts(t.result).items():
                    totals[k] += n
        down = sum(1 for t in targets if t.error)
        console.out("Recap: " + ", ".join(f"{n} {k}" for k, n in totals.items()) + f" on {len(targets)} host"
                    f"{'s' if len(targets) != 1 else ''}" + (f" ({down} unavailable)" if down else "")
                    + f" in {wall:.1f}s")
    ready = [r for t in targets for r in t.readiness]
    if ready and not console.document:
        from .lab import readiness_recap

        console.out(readiness_recap(tuple(ready), args.wait_timeout))
    ok = all(not t.error and (t.result is None or t.result.ok) for t in targets) and all(r.ready for r in ready)
    return EXIT_OK if ok else EXIT_ERROR

