"""Planning one domain, in steps that each return what they found.

1. admission: is the domain ours to act on (unmanaged, another project's, absent), and
   does everything it uses exist, or is declared, and not refused;
2. its disks: what is refused because it would lose data, and what is replaced;
3. its definition: create, or an update classified change by change, with the stop a
   restart or a recreate needs, or the changes left pending a restart;
4. its volumes and seed, after the definition that records them as its own;
5. its state: start or stop.

Pure: no libvirt, no files, no clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..model import (Action, ActionKind, Change, ChangeClass, Disk, DomainSpec, Note, NoteKind, ObservedDomain,
                     Ownership, Pending, ResourceKind, State)
from ..model.steps import StartDomain, StopDomain
from . import diff
from .classes import canonical, classified, live_ops
from .context import Context, Planned, noted
from .rebuild import plan_reset
from .record import define_payload, owner_of
from .disks import Base, base_of, disk_actions, overlay_faults, seed_action, stale_seeds, volume_refusals
from .removal import plan_removal


@dataclass(frozen=True)
class _Definition:
    """What step 3 decided: its findings, and what the later steps depend on."""

    planned: Planned
    define_id: tuple[str, ...]  # what the domain's volumes and start wait for
    stop_id: tuple[str, ...] = ()  # the stop before a restart or a recreate
    restarting: bool = False
    blocked: bool = False  # refused: nothing more is planned for the domain
    defined: bool = False  # an action (re)defines the domain


def plan_domain(spec: DomainSpec, ctx: Context) -> Planned:
    out = _plan_domain(spec, ctx)
    have = ctx.observed.domains.get(spec.name)
    if have is not None and have.unmodeled and spec.state is not State.ABSENT \
            and not any(n.refused for n in out.notes):
        out += noted(unmodeled_note(have))
    return out


# How much of each device a note's message shows (the note's `devices` has all of it).
_SHOWN = 160


def unmodeled_note(have: ObservedDomain) -> Note:
    """The devices of an existing domain that its spec cannot describe: not managed, and
    kept as they are by every update, so adopting the domain loses none of them."""
    shown = ", ".join(d.xml if len(d.xml) <= _SHOWN else d.xml[:_SHOWN - 3] + "..." for d in have.unmodeled)
    return Note(ResourceKind.DOMAIN, have.name, f"not managed, kept as {'they are' if len(have.unmodeled) > 1 else 'it is'}"
                f" (the spec language does not describe {'them' if len(have.unmodeled) > 1 else 'it'}): {shown}",
                NoteKind.UNMODELED, devices=tuple(d.xml for d in have.unmodeled))


def _plan_domain(spec: DomainSpec, ctx: Context) -> Planned:
    moved = _moved_here(spec, ctx)
    if moved is not None:
        return moved
    admitted = _admit(spec, ctx)
    if isinstance(admitted, Planned):
        return admitted
    have, adopting = admitted
    mark = have.ownership.reset if have is not None else None
    if mark is not None and mark.generation > have.ownership.rebuilds:  # a rebuild cut short: finished first
        return plan_reset(spec, ctx, have, have.ownership.reset.generation, spec.state is State.RUNNING,
                          "finishing a rebuild that was cut short")
    if have is not None and spec.seed is not None and have.ownership.rebuilds:
        spec = dataclasses.replace(spec, seed=spec.seed.at_generation(have.ownership.rebuilds))
    previously_owned = {(v.pool, v.name) for v in have.ownership.volumes} if have else set()
    bases = {d.target: base_of(d, ctx) for d in spec.disks}
    refusals, replaced = volume_refusals(spec, ctx.observed, bases, previously_owned, ctx.options.allow_recreate)
    if refusals:
        return noted(*(Note(ResourceKind.DOMAIN, spec.name, m, kind=NoteKind.REFUSED) for m in refusals))
    want = canonical(spec, ctx.observed, have.essence if have else {})
    owner = owner_of(spec, ctx, want, previously_owned, have.ownership.rebuilds if have else 0)
    definition = _define(spec, ctx, have, adopting, owner, want, bases, replaced)
    if definition.blocked:
        return definition.planned
    running = have.running if have else False
    live = running and not definition.stop_id
    volumes = disk_actions(spec, ctx, bases, replaced, definition.define_id, live)
    volume_ids = tuple(a.id for a in volumes if a.kind is not ActionKind.DESTROY)
    out = definition.planned + Planned(volumes)
    if spec.seed:
        found = seed_action(spec, ctx.observed, have, previously_owned, live,
                            ctx.waits.on(ResourceKind.POOL, spec.seed.pool) + definition.define_id)
        if isinstance(found, Note):
            out += noted(found)
        elif found is not None:
            out += Planned((found,))
            volume_ids += (found.id,)
    out += Planned(stale_seeds(spec, previously_owned, definition.define_id))
    out += _state(spec, ctx, have, definition, volume_ids)
    if have is not None and not definition.defined and not volume_ids and not definition.restarting:
        out += noted(Note(ResourceKind.DOMAIN, spec.name, f"{'running' if running else 'stopped'} and matches its spec"))
    return out


def _moved_here(spec: DomainSpec, ctx: Context) -> Planned | None:
    """A domain whose spec names this host while it is on another: refused unless
    --allow-recreate, since it is destroyed there and created here, empty (None: not moved)."""
    if spec.name in ctx.observed.domains or spec.state is State.ABSENT:
        return None
    if spec.name in ctx.options.stuck:
        return noted(Note(ResourceKind.DOMAIN, spec.name, f"not created here: {ctx.options.stuck[spec.name]}, "
                          "and a domain is never on two hosts at once", NoteKind.REFUSED))
    there = ctx.options.elsewhere.get(spec.name)
    if there is None:
        return None
    kept = [f"{d.pool}/{d.volume}" for d in spec.disks if d.keep]
    stays = (f"; its keep: true disks ({', '.join(kept)}) do not move: they stay on {there}, and new ones are "
             "created here") if kept else ""
    if not ctx.options.allow_recreate:
        return noted(Note(ResourceKind.DOMAIN, spec.name, f"its spec places it on this host, but it is on host "
                          f"{there}: moving it destroys it there (its disks too) and creates it here anew{stays}; "
                          "pass --allow-recreate to move it, or set host back", NoteKind.REFUSED))
    return None


def _admit(spec: DomainSpec, ctx: Context) -> tuple[ObservedDomain | None, bool] | Planned:
    """The domain as observed and whether it is being adopted; or, when the domain is not
    to be planned any further, what was found instead."""
    desired, observed, options = ctx.desired, ctx.observed, ctx.options
    have = observed.domains.get(spec.name)
    adopting = False
    if have is not None and have.ownership is None:
        if not options.adopt:
            return noted(Note(ResourceKind.DOMAIN, spec.name,
                              "unmanaged (exists): it was not created by reconcile, so it is left alone; "
                              "`apply --adopt` takes it over, showing what would change first", NoteKind.UNMANAGED))
        adopting = True
        have = dataclasses.replace(have, ownership=Ownership(project=desired.project))
    if have is not None and have.ownership.project != desired.project:
        return noted(Note(ResourceKind.DOMAIN, spec.name, f"is managed by project {have.ownership.project!r}, "
                          f"not {desired.project!r}; left alone", kind=NoteKind.REFUSED))
    if spec.state is State.ABSENT:
        if have is None:
            return noted(Note(ResourceKind.DOMAIN, spec.name, "absent, as the spec says"))
        why = "removed by `reconcile destroy`" if options.destroying else "the spec says absent"
        return plan_removal(have, why, spec.stop_timeout, observed)
    missing = _missing(spec, ctx)
    return missing if missing is not None else (have, adopting)


def _missing(spec: DomainSpec, ctx: Context) -> Planned | None:
    """Every pool a disk uses and every network an interface uses must exist or be declared."""
    desired, observed, waits = ctx.desired, ctx.observed, ctx.waits
    used_pools = {d.pool for d in spec.disks} | ({spec.seed.pool} if spec.seed else set())
    used_networks = {i.network for i in spec.interfaces or ()}
    refused = sorted(f"pool {p!r}" for p in used_pools if waits.is_refused(ResourceKind.POOL, p))
    refused += sorted(f"network {n!r}" for n in used_networks if waits.is_refused(ResourceKind.NETWORK, n))
    if refused:
        return noted(Note(ResourceKind.DOMAIN, spec.name, f"uses {', '.join(refused)}, which is refused (see there)",
                          NoteKind.REFUSED))
    for noun, used, have, declared in (("pool", used_pools, observed.pools, desired.pools),
                                       ("network", used_networks, observed.networks, desired.networks)):
        names = {d.name for d in declared}
        missing = sorted(x for x in used if x not in have and x not in names)
        if missing:
            return noted(Note(ResourceKind.DOMAIN, spec.name,
                              f"uses {noun} {', '.join(repr(x) for x in missing)}, which neither exists on the host "
                              f"nor is declared in the specs; declare it under '{noun}s'", kind=NoteKind.REFUSED))
    return None


def _define(spec: DomainSpec, ctx: Context, have: ObservedDomain | None, adopting: bool, owner: Ownership,
            want: dict, bases: dict[str, Base | None], replaced: list[Disk]) -> _Definition:
    if have is None:
        changes = tuple(Change((k,), None, v) for k, v in sorted(spec.essence().items()) if v not in ({}, [], None))
        action = Action(ActionKind.CREATE, ResourceKind.DOMAIN, spec.name, "not on the host", changes=changes,
                        payload=define_payload(spec, owner, None, None, ctx, (), State.STOPPED))
        return _Definition(Planned((action,)), (action.id,), defined=True)
    changes, mine = _changes(spec, ctx, have, adopting, owner, want, bases, replaced)
    recreate = [c for c in changes if c.klass is ChangeClass.RECREATE]
    # A disk replaced under its own allow_replace needs no --allow-recreate.
    allowed = {("disks", d.target, f) for d in replaced for f in ("format", "backing", "backing_format")}
    blocked = [c for c in recreate if c.path not in allowed]
    if blocked and not ctx.options.allow_recreate:
        what = ", ".join(f"{c.shown}: {c.before} -> {c.after}" for c in blocked)
        note = Note(ResourceKind.DOMAIN, spec.name, f"{what} needs the domain recreated"
                    + (" and its disk replaced, which loses the disk's data" if replaced else "")
                    + "; refused (apply --allow-recreate does it)", kind=NoteKind.REFUSED)
        return _Definition(Planned(notes=(note,), pending=tuple(mine)), (), blocked=True)
    stop, pending = _restart(spec, ctx, have, changes, mine, bool(recreate))
    stop_id = (stop.id,) if stop else ()
    out = Planned((stop,) if stop else (), pending=pending)
    if not changes:
        return _Definition(out, stop_id, stop_id, restarting=bool(stop) and spec.state is State.RUNNING)
    running = have.running and not stop_id
    reason = f"{len(changes)} field{'s differ' if len(changes) != 1 else ' differs'}"
    if adopting:
        reason = "adopt: add reconcile's ownership record; " + reason
    if any(c.drift for c in changes):
        reason += "; changed outside reconcile (drift)"
    deferred = [c.shown for c in changes if c.klass in (ChangeClass.RESTART, ChangeClass.NEXT_BOOT)] if running else []
    if deferred:
        reason += f"; the domain is running: {', '.join(deferred)} take{'s' if len(deferred) == 1 else ''} " \
                  "effect at its next restart (on_change: defer)"
    action = Action(ActionKind.UPDATE, ResourceKind.DOMAIN, spec.name, reason, changes=tuple(changes),
                    depends_on=stop_id,
                    payload=define_payload(spec, owner, have.uuid, have.xml, ctx, live_ops(changes) if running else (),
                                           State.RUNNING if running else State.STOPPED))
    return _Definition(out + Planned((action,)), (action.id,), stop_id,
                       restarting=bool(stop) and spec.state is State.RUNNING, defined=True)


def _changes(spec: DomainSpec, ctx: Context, have: ObservedDomain, adopting: bool, owner: Ownership, want: dict,
             bases: dict[str, Base | None], replaced: list[Disk]) -> tuple[list[Change], list[Pending]]:
    """The classified changes of the domain's config (and the live-class ones of the running
    domain), and what its config already holds that waits for a restart."""
    recorded = have.ownership.applied
    changes = classified(diff.changes(want, have.essence, recorded), want, have.essence)
    for d in replaced:  # the domain XML may already say the new format; the volume does not
        known = {c.path for c in changes}
        changes.extend(c for c in overlay_faults(d, ctx.observed.volumes[(d.pool, d.volume)], bases[d.target])
                       if c.path not in known)
    changes.extend(_ownership_changes(have.ownership, owner))
    if adopting:
        changes.append(Change(("owner",), None, ctx.desired.project, ChangeClass.LIVE))
    live_only: list[Change] = []
    mine: list[Pending] = []  # this domain's, kept apart: scanning all of them per domain was quadratic
    if have.running and have.live_essence is not None:
        # What the running domain has, against what the spec wants: live-class fields are
        # corrected at once; other differences already in the config wait for a restart.
        config_paths = {c.path for c in changes}
        # The running memory is what the guest's balloon driver reached, not what was asked
        # for: a guest without the driver never gets there, so it cannot be compared.
        live = dict(have.live_essence, current_memory=have.essence.get("current_memory"))
        for c in classified(diff.changes(want, live, recorded), want, live):
            if c.path in config_paths:
                continue
            if c.klass is ChangeClass.LIVE:
                live_only.append(c)
            else:
                # The config already says what the spec says: waiting, not drifting.
                mine.append(Pending(spec.name, "", (dataclasses.replace(c, drift=False),)))
    return sorted(changes + live_only, key=lambda c: c.shown), mine


def _restart(spec: DomainSpec, ctx: Context, have: ObservedDomain, changes: list[Change], mine: list[Pending],
             recreate: bool) -> tuple[Action | None, tuple[Pending, ...]]:
    """The stop a running domain's changes need (by the restart policy, or for a recreate),
    or the changes left pending its restart."""
    options = ctx.options
    needs_restart = any(c.klass in (ChangeClass.RESTART, ChangeClass.RECREATE) for c in changes) or any(
        c.klass is ChangeClass.RESTART for p in mine for c in p.changes)
    stop_first = have.running and (needs_restart and (spec.on_change == "restart" or options.restart) or recreate)
    if stop_first:
        why = "recreate" if recreate else ("apply --restart" if options.restart else "on_change: restart")
        fields = sorted({c.shown for c in changes if c.klass is not ChangeClass.LIVE}
                        | {c.shown for p in mine for c in p.changes})
        what = "restart to apply" if spec.state is State.RUNNING else "the spec says stopped; stop first to apply"
        return Action(ActionKind.STOP, ResourceKind.DOMAIN, spec.name, f"{what} {', '.join(fields)} ({why})",
                      changes=(Change(("state",), "running", "stopped", ChangeClass.LIVE),),
                      payload=StopDomain(spec.stop_timeout)), ()
    if mine:
        merged = tuple(c for p in mine for c in p.changes)
        return None, (Pending(spec.name, "in the config, waiting for the running domain to restart "
                              "(on_change: defer; apply --restart restarts it)", merged),)
    return None, ()


def _state(spec: DomainSpec, ctx: Context, have: ObservedDomain | None, definition: _Definition,
           volume_ids: tuple[str, ...]) -> Planned:
    """Start what the spec says runs (after its definition, volumes, pools and networks),
    stop what it says is stopped."""
    running = have.running if have else False
    recorded_state = have.ownership.applied.get("state") if have and have.ownership.applied else None
    if spec.state is State.RUNNING and (not running or definition.restarting):
        if definition.restarting:
            reason, change = "start again after the restart", Change(("state",), "stopped", "running", ChangeClass.LIVE)
        else:
            reason = "the spec says running; " + ("it is created stopped" if have is None else "it is shut off")
            change = Change(("state",), "stopped" if have else None, "running", ChangeClass.LIVE if have else None,
                            drift=recorded_state == "running")
        waits = (ctx.waits.on(ResourceKind.POOL, *sorted({d.pool for d in spec.disks}))
                 + ctx.waits.on(ResourceKind.NETWORK, *sorted({i.network for i in spec.interfaces or ()})))
        return Planned((Action(ActionKind.START, ResourceKind.DOMAIN, spec.name, reason, changes=(change,),
                               depends_on=definition.define_id + volume_ids + waits, payload=StartDomain()),))
    if spec.state is State.STOPPED and running and not definition.stop_id:
        return Planned((Action(ActionKind.STOP, ResourceKind.DOMAIN, spec.name, "the spec says stopped; it is running",
                               changes=(Change(("state",), "running", "stopped", ChangeClass.LIVE,
                                               drift=recorded_state == "stopped"),),
                               payload=StopDomain(spec.stop_timeout)),))
    return Planned()


def _ownership_changes(before: Ownership | None, after: Ownership) -> list[Change]:
    if before is None:
        return []
    was = {(v.pool, v.name): v.keep for v in before.volumes}
    now = {(v.pool, v.name): v.keep for v in after.volumes}
    out = [Change(("volumes", f"{pool}/{name}", "keep"), was[(pool, name)], keep, ChangeClass.LIVE)
           for (pool, name), keep in sorted(now.items()) if (pool, name) in was and was[(pool, name)] != keep]
    # Recorded for a prune, which has no spec to read it from; a record from before there
    # was one is brought up to date with the next change, not on its own.
    if before.stop_timeout is not None and before.stop_timeout != after.stop_timeout:
        out.append(Change(("stop_timeout",), before.stop_timeout, after.stop_timeout, ChangeClass.LIVE))
    return out
