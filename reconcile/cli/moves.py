"""Domains whose spec moved them to another host: where each is, whether this run can move
it, and which of the first round's removals let a create go ahead (see `hosts._apply_many`).
A domain is never created on its new host before it is gone from its old one."""

from __future__ import annotations

import argparse
import dataclasses

from ..model import ActionKind, Desired, Plan, ResourceKind, State, Status
from . import render
from .output import Output
from .parser import default_uri
from .targets import Target, each


def _owned(t: Target, project: str) -> list[str]:
    if t.observed is None:
        return []
    return [name for name, dom in t.observed.domains.items()
            if dom.ownership is not None and dom.ownership.project == project]


def _placed(desired: Desired) -> dict[str, str]:
    """Where the specs place each domain that is to exist: its host's label."""
    return {d.name: d.host or render.DEFAULT_HOST for d in desired.domains if d.state is not State.ABSENT}


def find_moves(targets: list[Target], desired: Desired, bystanders: list[Target] = ()) -> None:
    """The domains of the project on another host than their spec names. The host they
    leave learns where they go (`moving_out`), or, when this run does not change that host,
    that they stay for now (`held`); the host they go to learns where they are (`elsewhere`),
    or that they sit on a host this run only read (`stuck`): a domain is never created
    before it is gone from where it was, so it never runs twice."""
    placed = _placed(desired)
    changed = {t.label: t for t in targets}
    where: dict[str, Target] = {}
    for t in [*targets, *bystanders]:
        for name in _owned(t, desired.project):
            where.setdefault(name, t)
    for t in targets:
        moving_out, held, elsewhere, stuck = {}, {}, {}, {}
        for name in _owned(t, desired.project):
            to = placed.get(name)
            if to is None or to == t.label:
                continue
            dest = changed.get(to)
            if dest is None:
                held[name] = f"host {to}, where its spec places it, is not changed by this run"
            elif dest.error or dest.observed is None:
                held[name] = f"host {to}, where its spec places it, could not be read"
            else:
                moving_out[name] = to
        for d in t.desired.domains:
            there = where.get(d.name)
            if there is None or there is t or d.state is State.ABSENT or \
                    (t.observed is not None and d.name in t.observed.domains):
                continue
            if changed.get(there.label) is there:
                elsewhere[d.name] = there.label
            else:
                stuck[d.name] = f"it is on host {there.label}, which this run does not change"
        t.moves = dataclasses.replace(t.moves, moving_out=moving_out, held=held, elsewhere=elsewhere, stuck=stuck)


def look_around(targets: list[Target], desired: Desired, args: argparse.Namespace, console: Output, connect,
                observe_for) -> list[Target]:
    """The hosts that may hold a domain this run would create although they are not among
    its hosts: the other declared hosts and the default connection (e.g. every domain of
    the default connection moved to a named host, or `--host` picked the new host only).
    Read only when something is to be created. One that holds a domain of the project
    which its spec places elsewhere joins the run (unless `--host` picked the hosts): the
    domain is destroyed there before it is created anew. The others are returned, read, so
    `find_moves` knows where things are. A declared host that cannot be read is said; the
    default connection is not (a machine that runs no libvirtd of its own is usual)."""
    creating = any(t.observed is not None and any(d.name not in t.observed.domains and d.state is not State.ABSENT
                                                  for d in t.desired.domains) for t in targets)
    if not creating:
        return []
    picked = bool(getattr(args, "host", None))
    present = {t.name for t in targets}
    candidates = ([None] if None not in present else []) + sorted(h.name for h in desired.hosts if h.name not in present)
    uris = {None: default_uri(args.connect), **{h.name: h.uri for h in desired.hosts}}
    taken = {t.uri for t in targets} | {uris[n] for n in candidates if n is not None}
    # the default connection under a declared host's URI is that host: never read twice
    candidates = [n for n in candidates if n is not None or uris[None] not in taken]
    others = [Target(name, uris[name], desired.on_host(name), connect(uris[name])) for name in candidates]

    def read(o: Target) -> None:
        o.observed = observe_for(args, o.desired, o.host)

    each(others, read)
    placed = _placed(desired)
    bystanders = []
    for o in others:
        if o.error:
            if o.name is not None:
                console.note(f"[{o.label}] could not be read to look for domains moved from it ({o.error}); "
                             "one moved from it would be created anew without being removed there")
            o.host.close()
            continue
        leaving = [n for n in _owned(o, desired.project) if n in placed and placed[n] != o.label]
        if leaving and not picked:
            targets.append(o)
        else:
            bystanders.append(o)
    targets.sort(key=lambda t: (t.name is not None, t.name or ""))  # lock order
    return bystanders


def leaving_part(plan: Plan, moving_out) -> Plan:
    """The actions that remove the domains moving away, and what follows from them."""
    ids = {a.id for a in plan.actions if a.resource is ResourceKind.DOMAIN and a.name in moving_out}
    for a in plan.actions:
        if ids.intersection(a.depends_on):
            ids.add(a.id)
    return dataclasses.replace(plan, actions=tuple(a for a in plan.actions if a.id in ids))


def left_behind(t: Target, targets: list[Target], runs: dict) -> dict[str, str]:
    """The domains moving here whose old host did not let them go in the first round (its
    removal failed, or the host could not be read or locked), with why: they are not
    created here, so no domain runs twice. `runs`: each changed host's run, by id()."""
    out = {}
    by_label = {x.label: x for x in targets}
    for name, there in t.moves.elsewhere.items():
        old = by_label.get(there)
        run = runs.get(id(old)) if old is not None else None
        if run is None:
            out[name] = f"it is still on host {there}, which this run could not change" + \
                (f" ({old.error})" if old is not None and old.error else "")
        elif not any(r.action.resource is ResourceKind.DOMAIN and r.action.name == name
                     and r.action.kind is ActionKind.DESTROY and r.status in (Status.APPLIED, Status.UNCHANGED)
                     for r in run.results.values()):
            out[name] = f"it is still on host {there}, where its removal did not succeed"
    return out
